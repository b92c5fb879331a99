//! The OpenAPI description against the server it describes: what `lxgate serve` answers
//! at /api/openapi.json is what `lxgate openapi` prints, and schemathesis (pinned in
//! tests/openapi/requirements.txt) sends a bounded number of generated requests to a live
//! `lxgate dev` with a real token: every answer must match the description and none
//! may be a 5xx.
mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

fn dev() -> (tempfile::TempDir, Dev) {
    let t = tempdir();
    // As root the dev cluster runs as postgres, which must reach the state directory.
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dev = Dev::start(&t.path().join("dev"), &t.path().join("dev.out"));
    (t, dev)
}

#[test]
fn the_served_description_is_the_one_lxgate_openapi_prints() {
    let (_t, dev) = dev();
    let served = http()
        .get(&format!("{}/api/openapi.json", dev.base))
        .call()
        .unwrap();
    assert_eq!(served.content_type(), "application/json");
    let served_id = served.header("x-request-id").map(str::to_string);
    let served = served.into_string().unwrap();
    let printed = lxgate(&["openapi"], &[]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    assert_eq!(served, stdout(&printed));
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for p in [
        "/api/upload/",
        "/api/upload-jobs/",
        "/api/upload-jobs/{id}",
        "/api/upload/{id}/status/",
        "/api/media/{id}",
        "/api/media/hub/transfers/",
        "/api/media/hub/transfers/{key}/media/",
        "/api/media/hub/transfers/{key}/status/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/openapi.json",
    ] {
        assert!(paths.contains(&&p.to_string()), "{p} missing: {paths:?}");
    }
    // Every answer of every operation names the request id header the middleware sets,
    // and the live answer carries it.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, r) in op["responses"].as_object().unwrap() {
                assert!(
                    r["headers"].get("x-request-id").is_some(),
                    "{method} {path} {status} does not name x-request-id"
                );
            }
        }
    }
    assert!(served_id.as_deref().is_some_and(|id| !id.is_empty()));
    // Both upload shapes.
    let content = &doc["paths"]["/api/upload/"]["post"]["requestBody"]["content"];
    assert!(
        content.get("application/octet-stream").is_some()
            && content.get("multipart/form-data").is_some(),
        "{content}"
    );
}

/// schemathesis against the description `base` serves, with `headers` on every request
/// and the operations `filter` selects; panics with its report unless every check passes.
fn schemathesis(base: &str, headers: &[(&str, &str)], filter: &[&str]) {
    let bin = venv::bin_dir("openapi/requirements.txt");
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi");
    let report = tempdir();
    let mut c = std::process::Command::new(bin.join("schemathesis"));
    c.arg("--config-file")
        .arg(here.join("schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(format!("{base}/api/openapi.json"))
        // Every check (schemathesis' default), except where tests/openapi/schemathesis.toml
        // says otherwise and why.
        // Bounded: at most 30 generated requests per operation and phase, seeded.
        .args([
            "--max-examples",
            "30",
            "--seed",
            "20261126",
            "--workers",
            "1",
        ])
        .args(["--request-timeout", "30", "--rate-limit", "30/s"])
        .arg("--report-dir")
        .arg(report.path())
        .args(filter)
        // Its cache directory lands in the working directory: not in the repository.
        .current_dir(report.path());
    for (k, v) in headers {
        c.args(["--header", &format!("{k}: {v}")]);
    }
    let o = c.output().expect("run schemathesis");
    let out = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "schemathesis failed:\n{out}");
    // It really ran, and generated requests.
    assert!(
        out.contains("Test cases:") && out.contains("generated"),
        "{out}"
    );
}

#[test]
fn schemathesis_finds_every_answer_as_described_and_no_server_error() {
    let (_t, mut dev) = dev();
    let auth = format!("Bearer {}", dev.token);
    // The hub's endpoints answer 404 on a standalone node; they get their own run below.
    schemathesis(
        &dev.base,
        &[("Authorization", &auth)],
        &["--exclude-tag", "hub"],
    );
    assert!(dev.proc.alive(), "lxgate dev died under schemathesis");
}

#[test]
fn schemathesis_on_a_hub_finds_the_transfer_endpoints_as_described() {
    let mut site = Site::new("central_hub");
    let cfg = site.dir.path().join("lxgate.toml");
    // No rate limit on node authentication: the run authenticates hundreds of times.
    std::fs::write(&cfg, "[hub]\ntransfer_api = true\nauth_per_second = 0\n").unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    let secret = site.add_node("site-a", "A", None);
    let mut srv = Server::start(&site);
    // What nginx adds on the transfer path, and a registered site's credentials.
    schemathesis(
        &srv.base,
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Client-Cert-Verified", "SUCCESS"),
            ("X-Network-Node-Key", "site-a"),
            ("X-Network-Node-Secret", &secret),
        ],
        &["--include-tag", "hub"],
    );
    assert!(srv.proc.alive(), "lxgate serve died under schemathesis");
}
