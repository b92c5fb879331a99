//! The hub-transfer receiver over real HTTP into real PostgreSQL and storage, speaking
//! payload schema 7.0 and hub_media_envelope_v1 (src/hub): the gates in the reference's
//! order, 201/200/409 registration, the envelope opened into the ingest core, and the
//! reference's refusal bodies and rejection codes.
#[path = "../common/mod.rs"]
mod common;
mod gates;
mod media;
mod reference;

use std::io::{Read, Write};

use common::hub_body::{sha, transfer, transfer_from};
use common::*;
use lxgate::hub::envelope::{self, Envelope, Identity};
use lxgate::hub::keys::RecipientKey;
use serde_json::json;

struct Hub {
    site: Site,
    srv: Server,
    secret: String,
    key: RecipientKey,
}

/// The hub's recipient key file, as `lxgate keys hub-recipient` writes it.
fn recipient_key(site: &Site) -> (std::path::PathBuf, RecipientKey) {
    let path = site.dir.path().join("hub-recipient.pem");
    let public = site.ok(&["keys", "hub-recipient", "--out", path.to_str().unwrap()]);
    let key = RecipientKey::from_pem(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        lxgate::hub::keys::Recipient::from_pem(&public)
            .unwrap()
            .id(),
        key.public().id()
    );
    (path, key)
}

fn hub_with(settings: &str) -> Hub {
    let mut site = Site::new("central_hub");
    let (key_file, key) = recipient_key(&site);
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(&cfg, settings).unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.set(
        "ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES",
        key_file.to_str().unwrap(),
    );
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    site.ok(&["center", "add", "B", "--name", "B"]);
    let secret = site.add_node("site-a", "A", None);
    let srv = Server::start(&site);
    Hub {
        site,
        srv,
        secret,
        key,
    }
}

fn hub() -> Hub {
    hub_with("[hub]\ntransfer_api = true\n")
}

/// Headers nginx and a well-configured site send; tests drop or change some.
fn headers(h: &Hub) -> Vec<(String, String)> {
    [
        ("X-Forwarded-Proto", "https"),
        ("X-Client-Cert-Verified", "SUCCESS"),
        ("X-Network-Node-Key", "site-a"),
        ("X-Network-Node-Secret", h.secret.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn without(mut hs: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    hs.retain(|(k, _)| k != name);
    hs
}

fn with(mut hs: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    hs.retain(|(k, _)| k != name);
    hs.push((name.into(), value.into()));
    hs
}

fn send(
    h: &Hub,
    method: &str,
    path: &str,
    hs: &[(String, String)],
    body: Option<(&str, Vec<u8>)>,
) -> (u16, serde_json::Value) {
    let mut r = http().request(method, &h.srv.url(path));
    for (k, v) in hs {
        r = r.set(k, v);
    }
    call(match body {
        Some((ct, b)) => r.set("Content-Type", ct).send_bytes(&b),
        None => r.call(),
    })
}

fn register(h: &Hub, hs: &[(String, String)], body: serde_json::Value) -> (u16, serde_json::Value) {
    send(
        h,
        "POST",
        "/api/media/hub/transfers/",
        hs,
        Some(("application/json", body.to_string().into_bytes())),
    )
}

/// The envelope and ciphertext of `media` for the transfer `body` registers.
fn seal_for(h: &Hub, body: &serde_json::Value, media: &[u8]) -> (Envelope, Vec<u8>) {
    let id = Identity {
        transfer_key: body["transfer_key"].as_str().unwrap().into(),
        source_node_key: "site-a".into(),
        source_center_key: "A".into(),
        target_node_key: "hub".into(),
        resource_kind: "video".into(),
        resource_hash: body["resource_hash"].as_str().unwrap().into(),
        processed_media_hash: sha(media),
    };
    let mut ct = Vec::new();
    let s = envelope::seal(
        &mut &media[..],
        media.len() as u64,
        &mut ct,
        &id,
        &h.key.public(),
    )
    .unwrap();
    (s.envelope, ct)
}

fn post_media(
    h: &Hub,
    key: &str,
    envelope_header: &str,
    ct: &[u8],
    hs: Vec<(String, String)>,
) -> (u16, serde_json::Value) {
    let hs = with(
        with(hs, "X-Hub-Media-Role", "processed"),
        "X-Hub-Media-Envelope",
        envelope_header,
    );
    send(
        h,
        "POST",
        &format!("/api/media/hub/transfers/{key}/media/"),
        &hs,
        Some(("application/octet-stream", ct.to_vec())),
    )
}

fn upload_media(h: &Hub, body: &serde_json::Value, media: &[u8]) -> (u16, serde_json::Value) {
    let (e, ct) = seal_for(h, body, media);
    post_media(
        h,
        body["transfer_key"].as_str().unwrap(),
        &e.to_header(),
        &ct,
        headers(h),
    )
}
