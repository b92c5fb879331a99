//! `lxgate smoke` (SPEC §12): the acceptance check a host runs after a deploy, as the
//! service user. Everything `doctor` checks, then two things only a live host can show:
//! an artifact sealed with age to the master identity survives a round trip through
//! managed storage with no plaintext ever written, and nginx serves a static file over
//! TLS that a client trusting the given CA accepts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use crate::config::{Config, Env, FileConfig};
use crate::crypto::age;
use crate::ops::doctor::Check;

pub struct Options {
    /// CA bundle that must verify nginx's certificate (default: the system's).
    pub ca: Option<PathBuf>,
    /// Port nginx listens on for TLS on this host.
    pub port: u16,
}

pub async fn run(file: &FileConfig, env: &Env, root: &Path, opts: &Options) -> Vec<Check> {
    let mut checks = crate::ops::doctor::run(file, env, root).await;
    let config = match Config::from_parts(file.clone(), env) {
        Ok(c) => c,
        // doctor has already reported the configuration error.
        Err(_) => return checks,
    };
    checks.push(sealed_round_trip(
        &config.host.master_key,
        &config.paths.storage.join("tmp"),
    ));
    if config.host.nginx {
        checks.push(static_over_tls(
            &config.paths.state.join("staticfiles"),
            &config.host.server_name,
            opts,
        ));
    }
    checks
}

fn probe() -> String {
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("lxgate-smoke-{}", hex::encode(b))
}

/// Seal a random probe to the master identity's recipient into managed storage, read it
/// back, open it, and leave nothing behind. The probe exists in plaintext only in memory.
fn sealed_round_trip(key: &Path, tmp: &Path) -> Check {
    const NAME: &str = "encrypted storage round trip";
    let identity = match age::Identity::from_file(key) {
        Ok(i) => i,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("reading the master identity {}: {e}", key.display()),
                "run lxgate-keys.service (lxgate keys ensure) and make sure this user is in the keys group",
            )
        }
    };
    let plain = probe();
    let path = tmp.join(format!(".{}.age", &plain[..24]));
    let result = (|| -> Result<(), String> {
        let mut sealed = Vec::new();
        age::encrypt(&identity.recipient(), &mut plain.as_bytes(), &mut sealed)
            .map_err(|e| format!("sealing: {e}"))?;
        std::fs::write(&path, &sealed).map_err(|e| format!("writing {}: {e}", path.display()))?;
        let on_disk = std::fs::read(&path).map_err(|e| format!("reading back: {e}"))?;
        if on_disk.windows(plain.len()).any(|w| w == plain.as_bytes()) {
            return Err("the sealed file contains the plaintext".into());
        }
        let mut opened = Vec::new();
        age::decrypt(&identity, &mut on_disk.as_slice(), &mut opened)
            .map_err(|e| format!("opening: {e}"))?;
        if opened != plain.as_bytes() {
            return Err("opened bytes differ from the sealed probe".into());
        }
        Ok(())
    })();
    let removed = std::fs::remove_file(&path).is_ok() || !path.exists();
    match result {
        Ok(()) if removed => Check::pass(
            NAME,
            format!(
                "sealed to {} in {}, opened, removed",
                identity.recipient(),
                tmp.display()
            ),
        ),
        Ok(()) => Check::fail(
            NAME,
            format!("could not remove {}", path.display()),
            "check the permissions of managed storage's tmp/",
        ),
        Err(e) => Check::fail(
            NAME,
            e,
            "check that managed storage's tmp/ is writable by the service user and the master key is intact",
        ),
    }
}

/// Put a probe into staticfiles and fetch it through nginx over TLS.
fn static_over_tls(staticfiles: &Path, server_name: &str, opts: &Options) -> Check {
    const NAME: &str = "nginx serves /static/ over TLS";
    let content = probe();
    let name = format!("{}.txt", &content[..28]);
    let file = staticfiles.join(&name);
    if let Err(e) = std::fs::write(&file, &content) {
        return Check::fail(
            NAME,
            format!("writing the probe {}: {e}", file.display()),
            "staticfiles must be writable by the service user (see nix/contract.toml)",
        );
    }
    let fetched = fetch(server_name, opts, &format!("/static/{name}"));
    let _ = std::fs::remove_file(&file);
    match fetched {
        Ok(body) if body == content => Check::pass(
            NAME,
            format!("https://{server_name}:{}/static/ verified and served the probe", opts.port),
        ),
        Ok(body) => Check::fail(
            NAME,
            format!("got {} bytes that are not the probe", body.len()),
            "nginx's /static/ location must alias the state root's staticfiles/",
        ),
        Err(e) => Check::fail(
            NAME,
            e,
            "is nginx running with lxgate's server block, and does --ca name the CA that issued its certificate?",
        ),
    }
}

fn fetch(server_name: &str, opts: &Options, path: &str) -> Result<String, String> {
    let ca = opts
        .ca
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
    let roots = crate::crypto::tls::roots(&ca, "the CA bundle").map_err(|e| format!("{e:#}"))?;
    let tls = crate::crypto::tls::client(roots)
        .map_err(|e| format!("{e:#}"))?
        .with_no_client_auth();
    let port = opts.port;
    // Connect to this host whatever server_name resolves to; SNI and the certificate
    // check still use server_name.
    let agent = ureq::AgentBuilder::new()
        .tls_config(Arc::new(tls))
        .resolver(move |_: &str| Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))]))
        .redirects(0)
        .timeout(Duration::from_secs(15))
        .build();
    let url = format!("https://{server_name}:{port}{path}");
    let resp = agent
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut body = String::new();
    resp.into_reader()
        .take(1 << 20)
        .read_to_string(&mut body)
        .map_err(|e| format!("reading {url}: {e}"))?;
    Ok(body)
}
