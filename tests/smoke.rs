//! `lxgate smoke` on real parts: the master key made by `lxgate keys ensure`, managed
//! storage, and nginx serving the rendered server block over TLS. The whole command
//! passing on a real host is the single-node twin's job; here each smoke-only check is
//! shown to pass and to fail for the right reason.
mod common;
use common::edge::{Nginx, Pki};
use common::*;
use std::path::PathBuf;

struct Host {
    site: Site,
    _nginx: Nginx,
    pki: Pki,
    port: u16,
    key: PathBuf,
    state: PathBuf,
}

fn host() -> Host {
    let mut site = Site::new("standalone");
    let pki = Pki::new(&site.dir.path().join("pki"));
    let state = site.dir.path().join("state");
    std::fs::create_dir_all(state.join("staticfiles")).unwrap();
    std::fs::create_dir_all(site.data().join("storage/tmp")).unwrap();
    let key = state.join("keys/master.age");
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\nstate = \"{}\"\n[host]\nmaster_key = \"{}\"\nserver_name = \"localhost\"\ntls_certificate = \"{}\"\ntls_certificate_key = \"{}\"\n",
            state.display(),
            key.display(),
            pki.path("server.crt").display(),
            pki.path("server.key").display()
        ),
    )
    .unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.set("LXGATE_MASTER_KEY", key.to_str().unwrap());
    site.migrate();
    site.ensure_master_key(&key);
    let block = site
        .ok(&["render", "nginx"])
        .replace("listen 443 ssl;", "listen 127.0.0.1:{port} ssl;");
    let nginx = Nginx::start(&site.dir.path().join("nginx"), &block);
    let port = nginx.port;
    Host {
        site,
        _nginx: nginx,
        pki,
        port,
        key,
        state,
    }
}

/// The smoke checks by name → (ok, detail).
fn smoke(h: &Host, ca: &str) -> std::collections::BTreeMap<String, (bool, String)> {
    let o = h.site.run(&[
        "smoke",
        "--json",
        "--ca",
        h.pki.path(ca).to_str().unwrap(),
        "--port",
        &h.port.to_string(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("smoke --json: {e}: {}", stderr(&o)));
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                (
                    c["ok"].as_bool().unwrap(),
                    format!("{} {}", c["detail"], c["fix"]),
                ),
            )
        })
        .collect()
}

const SEALED: &str = "encrypted storage round trip";
const TLS: &str = "nginx serves /static/ over TLS";

#[test]
fn the_sealed_round_trip_and_the_tls_fetch_pass_and_leave_nothing_behind() {
    let h = host();
    let c = smoke(&h, "hub-ca.crt");
    assert!(c[SEALED].0, "{:?}", c[SEALED]);
    assert!(c[TLS].0, "{:?}", c[TLS]);
    assert!(c.len() > 2, "doctor's checks come first: {c:?}");
    assert_eq!(
        files_under(&h.site.data().join("storage/tmp")),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_under(&h.state.join("staticfiles")),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn an_untrusted_certificate_and_a_broken_key_fail_with_their_cause() {
    let h = host();
    let c = smoke(&h, "rogue-ca.crt");
    assert!(!c[TLS].0);
    assert!(c[TLS].1.contains("--ca"), "{:?}", c[TLS]);
    assert_eq!(
        files_under(&h.state.join("staticfiles")),
        Vec::<PathBuf>::new(),
        "probe removed after a failure too"
    );

    std::fs::write(&h.key, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let c = smoke(&h, "hub-ca.crt");
    assert!(!c[SEALED].0);
    assert!(
        c[SEALED].1.contains(h.key.to_str().unwrap()),
        "{:?}",
        c[SEALED]
    );
}
