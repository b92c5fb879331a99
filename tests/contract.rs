//! The contract rendered for Debian hosts, checked with the real tools
//! (systemd-tmpfiles, systemd-analyze, nginx, nix-instantiate) and by doctor.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn need(tool: &str, pkg: &str) {
    assert!(
        have(tool),
        "{tool} is missing: apt-get install {pkg} (.ci/run installs it)"
    );
}

fn render(args: &[&str], out: &Path) {
    let mut a = vec!["render"];
    a.extend_from_slice(args);
    a.extend(["--out", out.to_str().unwrap()]);
    let o = lxgate(&a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn write_accounts(t: &Path) {
    std::fs::create_dir_all(t.join("etc")).unwrap();
    std::fs::write(
        t.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nlxgate:x:990:990::/var/lib/lxgate:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(
        t.join("etc/group"),
        "root:x:0:\nlxgate:x:990:\nlxgate-keys:x:991:lxgate\n",
    )
    .unwrap();
}

fn doctor(t: &Path) -> (bool, String) {
    doctor_with(t, &[])
}

fn doctor_with(t: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let o = lxgate(&["doctor", "--root", t.to_str().unwrap()], env);
    (o.status.success(), stdout(&o))
}

/// `systemd-tmpfiles --create` of the rendered rules under the tree `t`.
fn tmpfiles_create(t: &Path) {
    run_ok(
        Command::new("systemd-tmpfiles")
            .args(["--create", &format!("--root={}", t.display())])
            .arg(t.join("etc/tmpfiles.d/lxgate.conf")),
        "systemd-tmpfiles",
    );
}

/// A tree as tmpfiles and lxgate-keys leave it; doctor passes on it.
fn fresh_tree(t: &Path) {
    write_accounts(t);
    render(&["tmpfiles"], &t.join("etc"));
    tmpfiles_create(t);
    let key = t.join("var/lib/lxgate/keys/master.age");
    std::fs::write(&key, "AGE-SECRET-KEY-1TEST\n").unwrap();
    std::os::unix::fs::chown(&key, Some(0), Some(991)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
}

#[test]
fn doctor_on_a_transfer_hub_checks_the_sites_ca() {
    need("systemd-tmpfiles", "systemd");
    let t = tempdir();
    let t = t.path();
    fresh_tree(t);
    let cfg = t.join("hub.toml");
    std::fs::write(
        &cfg,
        "role = \"central_hub\"\n[hub]\ntransfer_api = true\nclient_ca_file = \"/etc/lxgate/tls/sites-ca.crt\"\n",
    )
    .unwrap();
    let env = [("LXGATE_CONFIG", cfg.to_str().unwrap())];
    let only = || only_failure_with(t, &env);
    let fail = only();
    assert!(
        fail.contains("client CA /etc/lxgate/tls/sites-ca.crt: unreadable")
            && fail.contains("clientCaFile"),
        "{fail}"
    );
    let ca = t.join("etc/lxgate/tls/sites-ca.crt");
    std::fs::create_dir_all(ca.parent().unwrap()).unwrap();
    std::fs::write(&ca, "not a certificate\n").unwrap();
    assert!(only().contains("not a PEM certificate"));
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (ok, out) = doctor_with(t, &env);
    assert!(ok && out.contains("ok    client CA"), "{out}");
}

/// doctor must fail with exactly one failing check; that check's line.
fn only_failure(t: &Path) -> String {
    only_failure_with(t, &[])
}

fn only_failure_with(t: &Path, env: &[(&str, &str)]) -> String {
    let (ok, out) = doctor_with(t, env);
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        !ok && fails.len() == 1,
        "expected exactly one failure:\n{out}"
    );
    fails[0].to_string()
}

#[test]
fn tmpfiles_creates_the_tree_doctor_accepts_and_each_mutation_is_named() {
    need("systemd-tmpfiles", "systemd");
    let t = tempdir();
    let t = t.path();
    fresh_tree(t);
    let tmpfiles = || tmpfiles_create(t);
    for d in &lxgate::contract::CONTRACT.directory {
        let base = if d.root == lxgate::contract::DirRoot::State {
            "var/lib/lxgate"
        } else {
            "var/lib/lxgate/data"
        };
        let p = t.join(base).join(&d.path);
        let m = std::fs::metadata(&p).unwrap_or_else(|_| panic!("{} not created", p.display()));
        assert_eq!(
            m.permissions().mode() & 0o7777,
            d.mode_bits(),
            "{}",
            p.display()
        );
    }
    let key = t.join("var/lib/lxgate/keys/master.age");
    let (ok, out) = doctor(t);
    assert!(ok, "doctor on a fresh tree:\n{out}");

    let data = t.join("var/lib/lxgate/data");
    // Each mutation must fail naming exactly that path, then be repaired.
    std::fs::remove_dir(data.join("import/sap_import")).unwrap();
    let fail = only_failure(t);
    assert!(
        fail.contains("/var/lib/lxgate/data/import/sap_import: missing"),
        "{fail}"
    );
    tmpfiles();

    std::fs::set_permissions(data.join("import"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let fail = only_failure(t);
    assert!(
        fail.contains("dir /var/lib/lxgate/data/import: mode 0755, want 0770"),
        "{fail}"
    );
    tmpfiles();

    std::fs::set_permissions(data.join("storage"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let fail = only_failure(t);
    assert!(
        fail.contains("dir /var/lib/lxgate/data/storage: mode 0777, want 0750"),
        "{fail}"
    );
    tmpfiles();

    std::os::unix::fs::chown(&key, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    let fail = only_failure(t);
    assert!(
        fail.contains("key /var/lib/lxgate/keys/master.age")
            && fail.contains("0640")
            && fail.contains("root:lxgate-keys"),
        "{fail}"
    );

    let o = lxgate(&["doctor", "--json", "--root", t.to_str().unwrap()], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .count(),
        1
    );
}

#[test]
fn systemd_analyze_verifies_every_unit_and_long_running_units_score_at_most_2() {
    need("systemd-analyze", "systemd");
    let bin = std::fs::canonicalize(bin()).unwrap();
    // Every feature across the two: a standalone host with its one-shots, and a site
    // that exports to a hub.
    let mut dirs = Vec::new();
    for settings in [
        "[sap_import]\nenable = true\n[recovery]\nenable = true\n",
        &role_case("site_node-export"),
    ] {
        let t = tempdir();
        let cfg = t.path().join("c.toml");
        std::fs::write(&cfg, settings).unwrap();
        render(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "systemd",
                "--bin",
                bin.to_str().unwrap(),
            ],
            t.path(),
        );
        let dir = t.path().join("systemd");
        let units: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(units.len() >= 6, "{units:?}");
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .args(&units)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "systemd-analyze verify:\n{err}");
        dirs.push(t);
    }
    let dir = dirs[0].path().join("systemd");
    // A long-running unit is bounded in memory, descriptors and tasks.
    for u in lxgate::contract::CONTRACT
        .unit
        .iter()
        .filter(|u| u.long_running)
    {
        let text = std::fs::read_to_string(dir.join(&u.name)).unwrap();
        for key in ["MemoryMax=", "LimitNOFILE=", "TasksMax="] {
            assert!(
                text.lines().any(|l| l.starts_with(key)),
                "{} has no {key}",
                u.name
            );
        }
    }
    let mut scores = BTreeMap::new();
    for u in &lxgate::contract::CONTRACT.unit {
        if !u.long_running {
            continue;
        }
        let o = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.join(&u.name))
            .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let line = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no score for {}: {out}", u.name));
        let score: f64 = line
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        scores.insert(u.name.clone(), score);
    }
    println!("systemd-analyze security exposure: {scores:?}");
    for (u, s) in &scores {
        assert!(*s <= 2.0, "{u} scores {s} > 2.0");
    }
}

#[test]
fn nginx_accepts_the_rendered_server_block_for_every_role() {
    need("nginx", "nginx-light");
    need("openssl", "openssl");
    for (name, settings) in role_cases() {
        let t = tempdir();
        let d = t.path();
        let pki = common::edge::Pki::new(&d.join("pki"));
        let cfg = d.join("c.toml");
        let mut doc: toml::Table = toml::from_str(&settings).unwrap();
        if doc.get("host").and_then(|h| h.get("nginx")) == Some(&toml::Value::Boolean(false)) {
            continue;
        }
        let host = doc
            .entry("host")
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        host.insert(
            "tls_certificate".into(),
            pki.path("server.crt").display().to_string().into(),
        );
        host.insert(
            "tls_certificate_key".into(),
            pki.path("server.key").display().to_string().into(),
        );
        let hub = doc
            .entry("hub")
            .or_insert(toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
        hub.insert(
            "client_ca_file".into(),
            pki.path("client-ca.crt").display().to_string().into(),
        );
        std::fs::write(&cfg, toml::to_string(&doc).unwrap()).unwrap();
        render(&["--config", cfg.to_str().unwrap(), "nginx"], d);
        let main = d.join("nginx.conf");
        std::fs::write(
            &main,
            format!(
                "pid {0}/nginx.pid;\nerror_log {0}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n include {0}/nginx/lxgate.conf;\n}}\n",
                d.display()
            ),
        )
        .unwrap();
        run_ok(
            Command::new("nginx")
                .args(["-t", "-p"])
                .arg(d)
                .arg("-c")
                .arg(&main),
            &format!("{name}: nginx -t"),
        );
    }
}

#[test]
fn nix_render_equals_rust_render_byte_for_byte() {
    need("nix-instantiate", "nix-bin");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, settings) in role_cases() {
        let t = tempdir();
        let cfg = t.path().join("c.toml");
        std::fs::write(&cfg, settings).unwrap();
        let bin = "/nix/store/0000000000000000000000000000000-lxgate/bin/lxgate";
        render(
            &["--config", cfg.to_str().unwrap(), "all", "--bin", bin],
            &t.path().join("out"),
        );
        let rust: BTreeMap<String, String> = files_under(&t.path().join("out"))
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(t.path().join("out"))
                        .unwrap()
                        .display()
                        .to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        let expr = format!(
            "(import {}/nix/render.nix {{ settings = builtins.fromTOML (builtins.readFile {}); bin = \"{bin}\"; }}).files",
            repo.display(),
            cfg.display()
        );
        let o = Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E", &expr])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: nix-instantiate: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let nix: BTreeMap<String, String> = serde_json::from_slice(&o.stdout).unwrap();
        assert_same_entries(&format!("{name}, Nix vs Rust render"), &nix, &rust);
    }
}

#[test]
fn render_is_byte_identical_across_runs() {
    let a = tempdir();
    let b = tempdir();
    render(&["all"], a.path());
    render(&["all"], b.path());
    let fa = files_under(a.path());
    assert!(!fa.is_empty());
    for p in fa {
        let rel = p.strip_prefix(a.path()).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(b.path().join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
}

#[test]
fn the_readme_documents_every_env_name_of_the_contract() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let missing: Vec<&str> = lxgate::contract::CONTRACT
        .env
        .iter()
        .flat_map(|e| std::iter::once(&e.name).chain(&e.aliases))
        .map(String::as_str)
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md lacks these env names of nix/contract.toml: {missing:?}"
    );
}
