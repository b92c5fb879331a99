//! `lxgate smoke` (SPEC §12): the acceptance check a host runs after a deploy, as the
//! service user. Everything `doctor` checks, then two things only a live host can show:
//! an artifact staged sealed by the ingest core's own writer survives a round trip
//! through managed storage with no plaintext ever written, and nginx serves a static file over
//! TLS that a client trusting the given CA accepts.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;

use crate::config::{Config, Env, FileConfig};
use crate::ingest::at_rest::{AtRest, Object};
use crate::ingest::Storage;
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
    checks.push(sealed_round_trip(&config));
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

/// Stage a random probe the way a sealed kind is stored (the ingest core's staging
/// writer: hashed and sealed in one pass into managed storage's tmp/), check the file
/// holds no plaintext, open it the way a sealed object is served, and leave nothing
/// behind. The probe exists in plaintext only in memory.
fn sealed_round_trip(config: &Config) -> Check {
    const NAME: &str = "encrypted storage round trip";
    let storage = Storage::from_config(config).staging_as(AtRest::Sealed);
    let tmp = storage.tmp_dir();
    let plain = probe();
    let result = (|| -> Result<String, String> {
        let mut w = storage.writer().map_err(|e| format!("staging: {e}"))?;
        w.write(plain.as_bytes())
            .map_err(|e| format!("staging: {e}"))?;
        let staged = w.finish().map_err(|e| format!("staging: {e}"))?;
        let on_disk = std::fs::read(&staged.path)
            .map_err(|e| format!("reading back {}: {e}", staged.path.display()))?;
        if on_disk.windows(plain.len()).any(|w| w == plain.as_bytes()) {
            return Err("the sealed file contains the plaintext".into());
        }
        let to = staged
            .sealed_to
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let mut opened = Vec::new();
        Object::open(&staged.path, AtRest::Sealed, storage.keys())
            .map_err(|e| format!("opening: {e}"))?
            .read_to_end(&mut opened)
            .map_err(|e| format!("opening: {e}"))?;
        if opened != plain.as_bytes() {
            return Err("opened bytes differ from the sealed probe".into());
        }
        // Dropping the staged file deletes it, as a refused upload's is.
        let path = staged.path.clone();
        drop(staged);
        if path.exists() {
            return Err(format!("could not remove {}", path.display()));
        }
        Ok(to)
    })();
    match result {
        Ok(to) => Check::pass(
            NAME,
            format!("staged sealed to {to} in {}, opened, removed", tmp.display()),
        ),
        Err(e) if e.starts_with("staging") && e.contains("master identity") => Check::fail(
            NAME,
            e,
            "run lxgate-keys.service (lxgate keys ensure) and make sure this user is in the keys group",
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
