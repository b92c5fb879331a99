//! TLS client settings shared by every outbound connection (hub export, smoke): rustls
//! with ring, the safe protocol versions, and trust anchors read from a PEM file.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::WantsClientCert;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The trust anchors in a PEM file. `what` names the file for the operator ("the hub
/// CA", "the CA bundle"). A certificate that cannot be an anchor is skipped (system
/// bundles hold a few); a file without any usable one is an error.
pub fn roots(file: &Path, what: &str) -> Result<RootCertStore> {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(file)
        .with_context(|| format!("reading {what} {}", file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {what} {}", file.display()))?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        bail!("{what} {} holds no usable CA certificate", file.display());
    }
    Ok(roots)
}

/// A client configuration trusting `roots`, up to the client-authentication choice.
pub fn client(roots: RootCertStore) -> Result<ConfigBuilder<ClientConfig, WantsClientCert>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots))
}
