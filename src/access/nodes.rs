//! Site nodes a hub accepts transfers from (SPEC §8): node key, owning center, a slow
//! hash of the node secret (the secret itself is shown once and never stored), and
//! optionally the pinned fingerprint of the node's client certificate.

use pbkdf2::pbkdf2_hmac;
use rand::RngCore;

use crate::crypto::signing::Signed;
use sha2::Sha256;

use crate::access::tokens::{center_id, AuthError};

/// PBKDF2-HMAC-SHA256 rounds: slow enough that a stolen table is expensive to attack,
/// fast enough (~0.1 s) for the few requests a transfer makes.
const ROUNDS: u32 = 210_000;

/// A node as the receiver knows it once its key and secret checked out.
#[derive(Debug, Clone)]
pub struct Node {
    pub key: String,
    pub center_id: i64,
    pub center_key: String,
    pub cert_fingerprint: Option<String>,
}

fn derive(secret: &str, salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt, rounds, &mut out);
    out
}

/// The salt is the node's own (`lxgate-node:<key>`), not random, so a site can derive
/// the same value from its secret and sign with it (see `signing`). Node keys are unique
/// per hub, so no two nodes share a salt.
fn signing_salt(node_key: &str) -> Vec<u8> {
    format!("lxgate-node:{node_key}").into_bytes()
}

/// The HMAC key a site signs its requests with; equal to the hash the hub stores.
pub fn signing_key(node_key: &str, secret: &str) -> [u8; 32] {
    derive(secret, &signing_salt(node_key), ROUNDS)
}

/// `pbkdf2-sha256$ROUNDS$SALT$HASH` (hex).
pub fn hash_secret(node_key: &str, secret: &str) -> String {
    format!(
        "pbkdf2-sha256${ROUNDS}${}${}",
        hex::encode(signing_salt(node_key)),
        hex::encode(signing_key(node_key, secret))
    )
}

/// The stored hash as a signing key, when it was made with the node's signing salt.
fn stored_signing_key(node_key: &str, stored: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, rounds, salt, hash] = parts[..] else {
        return None;
    };
    (scheme == "pbkdf2-sha256"
        && rounds == ROUNDS.to_string()
        && hex::decode(salt).ok()? == signing_salt(node_key))
    .then(|| hex::decode(hash).ok())
    .flatten()
    .filter(|h| h.len() == 32)
}

/// A Django `make_password` hash (`pbkdf2_sha256$ITER$SALT$B64`), as endoreg-db keeps a
/// node's secret: PBKDF2-HMAC-SHA256 over the salt's UTF-8 bytes, 32 bytes, standard
/// base64 (Django's `PBKDF2PasswordHasher`).
fn verify_django(secret: &str, stored: &str) -> Option<bool> {
    use base64::Engine;
    let rest = stored.strip_prefix("pbkdf2_sha256$")?;
    let mut parts = rest.splitn(3, '$');
    let (iterations, salt, hash) = (parts.next()?, parts.next()?, parts.next()?);
    let iterations: u32 = iterations.parse().ok().filter(|n| *n > 0)?;
    let expected = base64::engine::general_purpose::STANDARD
        .decode(hash)
        .ok()?;
    if expected.len() != 32 || salt.is_empty() {
        return None;
    }
    let got = derive(secret, salt.as_bytes(), iterations);
    Some(
        got.iter()
            .zip(&expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0,
    )
}

/// Whether `stored` is a hash this hub can verify (lxgate's own or Django's).
pub fn valid_stored_hash(stored: &str) -> bool {
    stored.starts_with("pbkdf2_sha256$") && verify_django("", stored).is_some()
        || stored.starts_with("pbkdf2-sha256$") && stored.split('$').count() == 4
}

pub fn verify_secret(secret: &str, stored: &str) -> bool {
    if let Some(ok) = verify_django(secret, stored) {
        return ok;
    }
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, rounds, salt, hash] = parts[..] else {
        return false;
    };
    let (Ok(rounds), Ok(salt), Ok(hash)) =
        (rounds.parse::<u32>(), hex::decode(salt), hex::decode(hash))
    else {
        return false;
    };
    if scheme != "pbkdf2-sha256" || hash.len() != 32 {
        return false;
    }
    let got = derive(secret, &salt, rounds);
    // Constant time: the comparison must not tell how many bytes matched.
    got.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// nginx's `$ssl_client_fingerprint` is lowercase hex SHA-1; operators often paste it
/// with colons from `openssl x509 -fingerprint`.
pub fn normalize_fingerprint(fp: &str) -> String {
    fp.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Node keys as the reference holds them: up to 253 characters (the envelope's limit)
/// of letters, digits and `. _ : -`, starting with a letter or digit.
pub fn valid_node_key(k: &str) -> bool {
    crate::hub::wire::valid_identifier(k, 253)
}

/// Register (or re-key) a site node; returns its new secret, shown once.
pub async fn add(
    c: &tokio_postgres::Client,
    key: &str,
    center: &str,
    fingerprint: Option<&str>,
) -> Result<String, AuthError> {
    if !valid_node_key(key) {
        return Err(AuthError::BadNodeKey(key.into()));
    }
    let cid = center_id(c, center)
        .await?
        .ok_or_else(|| AuthError::UnknownCenter(center.into()))?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = format!("lxn_{}", hex::encode(raw));
    let hash = tokio::task::spawn_blocking({
        let (s, k) = (secret.clone(), key.to_string());
        move || hash_secret(&k, &s)
    })
    .await
    .expect("hashing does not panic");
    let fp = fingerprint.map(normalize_fingerprint);
    upsert_site_node(c, key, cid, &hash, fp.as_deref()).await?;
    crate::audit::key_operation("node_keyed", key, Some(center));
    Ok(secret)
}

/// The one way a site node's row is written, by `add` and `import` alike.
async fn upsert_site_node(
    c: &tokio_postgres::Client,
    key: &str,
    cid: i64,
    secret_hash: &str,
    fingerprint: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "INSERT INTO nodes (node_key, role, center_id, secret_hash, cert_fingerprint)
         VALUES ($1, 'site_node', $2, $3, $4)
         ON CONFLICT (node_key) DO UPDATE SET center_id = EXCLUDED.center_id,
             secret_hash = EXCLUDED.secret_hash, cert_fingerprint = EXCLUDED.cert_fingerprint",
        &[&key, &cid, &secret_hash, &fingerprint],
    )
    .await?;
    Ok(())
}

/// Register (or update) a site node with a secret hash from an endoreg-db hub
/// (`NetworkNode.shared_secret_hash`, Django `pbkdf2_sha256$…`): the site keeps its
/// secret. Such a node authenticates with the secret header; signing needs a re-key.
pub async fn import(
    c: &tokio_postgres::Client,
    key: &str,
    center: &str,
    stored_hash: &str,
    fingerprint: Option<&str>,
) -> Result<(), AuthError> {
    if !valid_node_key(key) {
        return Err(AuthError::BadNodeKey(key.into()));
    }
    if !valid_stored_hash(stored_hash) {
        return Err(AuthError::BadSecretHash);
    }
    let cid = center_id(c, center)
        .await?
        .ok_or_else(|| AuthError::UnknownCenter(center.into()))?;
    let fp = fingerprint.map(normalize_fingerprint);
    upsert_site_node(c, key, cid, stored_hash, fp.as_deref()).await?;
    crate::audit::key_operation("node_imported", key, Some(center));
    Ok(())
}

pub async fn remove(c: &tokio_postgres::Client, key: &str) -> Result<bool, AuthError> {
    let removed = c
        .execute("DELETE FROM nodes WHERE node_key = $1", &[&key])
        .await?
        > 0;
    if removed {
        crate::audit::key_operation("node_removed", key, None);
    }
    Ok(removed)
}

async fn load(
    c: &tokio_postgres::Client,
    key: &str,
) -> Result<Option<(String, Node)>, crate::db::DbError> {
    let row = c
        .query_opt(
            "SELECT n.secret_hash, n.center_id, c.center_key, n.cert_fingerprint
             FROM nodes n JOIN centers c ON c.id = n.center_id
             WHERE n.node_key = $1 AND n.role = 'site_node'",
            &[&key],
        )
        .await?;
    Ok(row.map(|row| {
        (
            row.get(0),
            Node {
                key: key.to_string(),
                center_id: row.get(1),
                center_key: row.get(2),
                cert_fingerprint: row.get(3),
            },
        )
    }))
}

/// The node whose key and secret these are, if any.
pub async fn authenticate(
    c: &tokio_postgres::Client,
    key: &str,
    secret: &str,
) -> Result<Option<Node>, crate::db::DbError> {
    let Some((stored, node)) = load(c, key).await? else {
        return Ok(None);
    };
    let secret = secret.to_string();
    let ok = tokio::task::spawn_blocking(move || verify_secret(&secret, &stored))
        .await
        .unwrap_or(false);
    Ok(ok.then_some(node))
}

/// How a signed request's node check ended.
pub enum SignedAuth {
    /// The node, and the signature's bytes (for the replay check).
    Node(Node, Vec<u8>),
    /// Unknown node or a signature that does not verify.
    Refused,
    /// The node's stored hash predates signed requests (random salt): re-key it.
    NotSigningCapable,
}

/// The node that signed this request, if its signature verifies.
pub async fn authenticate_signed(
    c: &tokio_postgres::Client,
    key: &str,
    signed: &Signed<'_>,
    signature: &str,
) -> Result<SignedAuth, crate::db::DbError> {
    let Some((stored, node)) = load(c, key).await? else {
        return Ok(SignedAuth::Refused);
    };
    let Some(k) = stored_signing_key(key, &stored) else {
        return Ok(SignedAuth::NotSigningCapable);
    };
    Ok(match signed.verify(&k, signature) {
        Some(sig) => SignedAuth::Node(node, sig),
        None => SignedAuth::Refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_verifies_against_its_hash_only() {
        let h = hash_secret("site-a", "lxn_abc");
        assert!(h.starts_with("pbkdf2-sha256$210000$") && !h.contains("lxn_abc"));
        assert!(verify_secret("lxn_abc", &h));
        assert!(!verify_secret("lxn_abd", &h));
        assert!(!verify_secret("lxn_abc", "plain"));
        assert_ne!(h, hash_secret("site-b", "lxn_abc"), "salted per node");
    }

    #[test]
    fn the_stored_hash_is_the_key_the_site_signs_with() {
        let h = hash_secret("site-a", "lxn_abc");
        let k = stored_signing_key("site-a", &h).unwrap();
        assert_eq!(k, signing_key("site-a", "lxn_abc"));
        assert!(
            stored_signing_key("site-b", &h).is_none(),
            "another node's salt"
        );
        // A hash with a random salt (before signed requests) cannot verify signatures.
        let old = format!(
            "pbkdf2-sha256$210000${}${}",
            "00".repeat(16),
            "11".repeat(32)
        );
        assert!(stored_signing_key("site-a", &old).is_none());
    }

    /// Vectors made with PBKDF2-HMAC-SHA256 as Django's PBKDF2PasswordHasher encodes it.
    #[test]
    fn django_hashes_verify_as_django_verifies_them() {
        let h = "pbkdf2_sha256$1000$abc$y9cYSfExXat2TiVf3hAaltybBYumxabN/HkmyRAwijw=";
        assert!(valid_stored_hash(h));
        assert!(verify_secret("site-secret", h));
        assert!(!verify_secret("site-secreT", h));
        assert!(!verify_secret("site-secret", &h.replace("$abc$", "$abd$")));
        assert!(!verify_secret(
            "site-secret",
            &h.replace("$1000$", "$1001$")
        ));
        assert!(!valid_stored_hash("pbkdf2_sha256$1000$abc$short"));
        assert!(!valid_stored_hash("argon2$x"));
        assert!(valid_node_key(&"a".repeat(253)) && !valid_node_key(&"a".repeat(254)));
        assert!(valid_node_key("site-a.klinik:1") && !valid_node_key("-a"));
    }

    #[test]
    fn fingerprints_compare_however_they_were_pasted() {
        assert_eq!(normalize_fingerprint("AB:cd:01"), "abcd01");
    }
}
