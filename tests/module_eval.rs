//! The NixOS module evaluated with nixpkgs' lib against stub option declarations: every
//! role evaluates, every bad configuration fails with its message, and the evaluated
//! tmpfiles rules and units equal `lxgate render` for the same settings.
//!
//! Which nixpkgs lib: the flake's (`nix develop` exports LXGATE_FLAKE_NIXPKGS_LIB), else
//! LXGATE_NIXPKGS_LIB (CI sets it), else the tests say they were skipped and pass: a plain
//! clone has no nixpkgs to evaluate against.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The nixpkgs `lib/` to evaluate with, or None (after saying why) when there is none.
fn lib_path() -> Option<PathBuf> {
    for var in ["LXGATE_FLAKE_NIXPKGS_LIB", "LXGATE_NIXPKGS_LIB"] {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(
                p.join("default.nix").exists(),
                "{var}={} is not a nixpkgs lib/ directory (no default.nix there)",
                p.display()
            );
            return Some(p);
        }
    }
    // Straight to stderr, past the test harness's capture, so a passing run still shows it.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED module_eval: no nixpkgs lib to evaluate the module with. Run the tests inside \
         `nix develop` (it exports LXGATE_FLAKE_NIXPKGS_LIB) or set LXGATE_NIXPKGS_LIB to a \
         nixpkgs checkout's lib/ directory"
    );
    None
}

fn eval(lib: &Path, case: &str) -> serde_json::Value {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nix/module-eval.nix");
    let o = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(&file)
        .args([
            "--arg",
            "lib",
            &format!("import {}", lib.display()),
            "--argstr",
            "case",
            case,
        ])
        .output()
        .expect("nix-instantiate (apt-get install nix-bin)");
    assert!(
        o.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The module's nginx virtual host: its extraConfig lines and its locations' bodies;
/// and the upstreams it declares (services.nginx.upstreams).
#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Vhost {
    upstreams: BTreeMap<String, Upstream>,
    extra_config: Vec<String>,
    locations: BTreeMap<String, String>,
}

#[derive(Debug, Default, PartialEq, serde::Deserialize)]
struct Upstream {
    servers: Vec<String>,
    lines: Vec<String>,
}

/// The same from `lxgate render nginx`: the server lines after the contract's TLS lines
/// (the module sets those through virtualHosts options), and each location's body.
fn rust_vhost(text: &str) -> Vhost {
    let tls = lxgate::contract::CONTRACT.nginx.tls.len();
    let mut extra_config = Vec::new();
    let mut locations = BTreeMap::new();
    let mut upstreams = BTreeMap::new();
    let mut open: Option<(String, Vec<&str>)> = None;
    let mut upstream: Option<(String, Upstream)> = None;
    for l in text.lines() {
        if let Some(name) = l
            .strip_prefix("upstream ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            upstream = Some((name.to_string(), Upstream::default()));
        } else if let Some((_, u)) = upstream.as_mut().filter(|_| l != "}") {
            let line = l
                .strip_prefix("    ")
                .expect("an upstream line is indented");
            match line
                .strip_prefix("server ")
                .and_then(|a| a.strip_suffix(';'))
            {
                Some(addr) => u.servers.push(addr.to_string()),
                None => u.lines.push(line.to_string()),
            }
        } else if l == "}" && upstream.is_some() {
            let (name, u) = upstream.take().unwrap();
            upstreams.insert(name, u);
        } else if let Some(path) = l
            .strip_prefix("    location ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            open = Some((path.to_string(), Vec::new()));
        } else if let Some(line) = l.strip_prefix("        ") {
            open.as_mut()
                .expect("a line inside a location")
                .1
                .push(line);
        } else if l == "    }" {
            let (path, body) = open.take().unwrap();
            locations.insert(path, body.join("\n"));
        } else if let Some(line) = l.strip_prefix("    ") {
            extra_config.push(line.to_string());
        }
    }
    Vhost {
        upstreams,
        extra_config: extra_config.split_off(tls),
        locations,
    }
}

type Rendered = (Vec<String>, BTreeMap<String, Vec<String>>, Vhost);

fn rust_units(case: &str) -> Rendered {
    let t = tempdir();
    let cfg = t.path().join("c.toml");
    std::fs::write(&cfg, role_case(case)).unwrap();
    let out = t.path().join("out");
    let o = lxgate(
        &[
            "render",
            "--config",
            cfg.to_str().unwrap(),
            "all",
            "--bin",
            "/nix/store/0000000000000000000000000000000-lxgate/bin/lxgate",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let tmp = std::fs::read_to_string(out.join("tmpfiles.d/lxgate.conf")).unwrap();
    let mut tmpfiles: Vec<String> = tmp
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    tmpfiles.sort();
    let mut units = BTreeMap::new();
    for p in files_under(&out.join("systemd")) {
        let text = std::fs::read_to_string(&p).unwrap();
        let mut section = String::new();
        let mut lines = Vec::new();
        for l in text.lines() {
            if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
                section = s.to_string();
            } else if let Some((k, v)) = l.split_once('=') {
                lines.push(format!("{section}|{k}|{v}"));
            }
        }
        lines.sort();
        units.insert(p.file_name().unwrap().to_string_lossy().into_owned(), lines);
    }
    let nginx = std::fs::read_to_string(out.join("nginx/lxgate.conf")).unwrap();
    (tmpfiles, units, rust_vhost(&nginx))
}

#[test]
fn every_role_evaluates_and_matches_lxgate_render() {
    let Some(lib) = lib_path() else { return };
    for case in [
        "standalone",
        "standalone-everything",
        "site_node",
        "site_node-export",
        "central_hub",
    ] {
        let v = eval(&lib, case);
        assert_eq!(
            v["failed"],
            serde_json::json!([]),
            "{case}: assertions failed"
        );
        let mut tmpfiles: Vec<String> = serde_json::from_value(v["tmpfiles"].clone()).unwrap();
        tmpfiles.sort();
        let nix_units: BTreeMap<String, Vec<String>> =
            serde_json::from_value(v["units"].clone()).unwrap();
        let (rust_tmp, rust_units, rust_nginx) = rust_units(case);
        let nginx: Vhost = serde_json::from_value(v["nginx"].clone()).unwrap();
        assert_eq!(nginx, rust_nginx, "{case}: module nginx vs lxgate render");
        assert_eq!(tmpfiles, rust_tmp, "{case}: tmpfiles rules differ");
        assert_same_entries(
            &format!("{case}, module vs lxgate render"),
            &nix_units,
            &rust_units,
        );
        let locs: Vec<String> = serde_json::from_value(v["nginxLocations"].clone()).unwrap();
        assert!(
            locs.contains(&"/protected_media/".to_string()),
            "{case}: {locs:?}"
        );
        assert_eq!(
            locs.contains(&"/api/media/hub/transfers/".to_string()),
            case == "central_hub",
            "{case}"
        );
    }
}

#[test]
fn each_bad_configuration_fails_with_its_fix() {
    let Some(lib) = lib_path() else { return };
    for (case, needle) in [
        (
            "bad-transfer-without-mtls",
            "requires mTLS: set services.lxgate.hub.transferApi.clientCaFile",
        ),
        ("bad-hub-without-database", "needs a database"),
        (
            "bad-key-0400-root",
            "must be 0640 root:lxgate-keys (it is 0400 root:root)",
        ),
        ("bad-nginx-without-tls", "services.lxgate.nginx needs TLS"),
        (
            "bad-unknown-env",
            "WATCHER_STABLE_AFTER is not a variable lxgate reads; the names it reads are LX_ANNOTATE_ENCRYPTED_DATA_DIR",
        ),
        ("bad-export-over-http", "url must start with https://"),
        (
            "bad-node-key-not-a-hub",
            "services.lxgate.hub.transferApi (enable, nodeKey) only makes sense on a hub",
        ),
        (
            "bad-export-not-a-site",
            "set services.lxgate.role = \"site_node\"",
        ),
        (
            "bad-backup-without-password",
            "services.lxgate.backup needs a repository and a passwordFile",
        ),
        (
            "bad-backup-password-in-store",
            "must not be in the Nix store",
        ),
    ] {
        let v = eval(&lib, case);
        let failed: Vec<String> = serde_json::from_value(v["failed"].clone()).unwrap();
        assert_eq!(failed.len(), 1, "{case}: {failed:?}");
        assert!(failed[0].contains(needle), "{case}: {failed:?}");
    }
}

/// services.lxgate.backup configures nixpkgs' restic module: credentials, the prepare
/// step, and the same paths and excludes `lxgate backup run` passes to restic.
#[test]
fn backup_configures_services_restic_with_lxgates_paths() {
    let Some(lib) = lib_path() else { return };
    let v = eval(&lib, "standalone-backup");
    assert_eq!(v["failed"], serde_json::json!([]));
    let r = &v["restic"]["lxgate"];
    assert_eq!(
        r["repository"],
        "sftp:backup@backup.example.org:/srv/restic/site-a"
    );
    assert_eq!(r["user"], "lxgate");
    assert_eq!(
        r["passwordFile"],
        "/run/credentials/restic-backups-lxgate.service/restic-password"
    );
    assert_eq!(
        v["resticUnit"]["serviceConfig"]["LoadCredential"],
        serde_json::json!(["restic-password:/etc/lxgate/credentials/restic-password"])
    );
    assert_eq!(r["environmentFile"], "/etc/lxgate/credentials/restic-env");
    assert!(r["backupPrepareCommand"]
        .as_str()
        .unwrap()
        .ends_with("/bin/lxgate --config /etc/lxgate/config.toml backup prepare"));
    assert_eq!(r["extraBackupArgs"], serde_json::json!(["--tag lxgate"]));
    assert_eq!(
        r["pruneOpts"],
        serde_json::json!(["--tag lxgate", "--keep-daily 7", "--keep-weekly 5"])
    );
    assert_eq!(r["timerConfig"]["OnCalendar"], "daily");
    // The same lists the binary passes (src/ops/backup/mod.rs).
    let mut file = lxgate::config::FileConfig::default();
    file.paths.data = Some("/mnt/crypt/lx".into());
    let cfg = lxgate::config::Config::from_parts(file, &Default::default()).unwrap();
    let paths: Vec<String> = lxgate::ops::backup::paths(&cfg)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(r["paths"], serde_json::json!(paths));
    assert_eq!(
        r["exclude"],
        serde_json::json!(lxgate::ops::backup::excludes(&cfg))
    );
    let units: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(v["units"].clone()).unwrap();
    assert!(
        !units.keys().any(|u| u.starts_with("lxgate-backup")),
        "restic runs the backup on NixOS, not the rendered units: {:?}",
        units.keys()
    );
    // Without backup, no restic.
    assert_eq!(eval(&lib, "standalone")["restic"], serde_json::json!({}));
}

/// The hub's own node key and the sender's timeout and retry budget go from module
/// options into the settings file, and lxgate reads them from there as those settings
/// (`lxgate config check` on the file the module writes).
#[test]
fn hub_node_key_and_the_senders_budget_reach_the_settings_lxgate_reads() {
    let Some(lib) = lib_path() else { return };
    let t = tempdir();
    let checked = |case: &str| -> serde_json::Value {
        let v = eval(&lib, case);
        assert_eq!(v["failed"], serde_json::json!([]), "{case}");
        let toml = toml::to_string(&v["settings"]).unwrap();
        let file = t.path().join(format!("{case}.toml"));
        std::fs::write(&file, toml).unwrap();
        let o = lxgate(
            &["--config", file.to_str().unwrap(), "config", "check"],
            &[],
        );
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let hub = checked("central_hub");
    assert_eq!(hub["hub_receiver"]["node_key"], "hub-berlin", "{hub}");
    let site = checked("site_node-export");
    let export = &site["hub_export"];
    assert_eq!(export["target_node_key"], "hub-berlin", "{site}");
    assert_eq!(export["request_timeout_seconds"], 600);
    assert_eq!(export["max_retries"], 3);
    // Unset, lxgate's defaults (lx-annotate's): the module writes nothing for them.
    let hub = checked("standalone");
    assert_eq!(hub["hub_receiver"]["node_key"], "hub");
}
