//! The hub-transfer receiver (SPEC §8), wire-compatible with lx-annotate/endoreg-db:
//! `POST /api/media/hub/transfers/` registers, `POST …/{key}/media/` delivers the
//! processed media into the one ingest core, `GET …/{key}/status/` reports.
//!
//! Gates, in order: transfers enabled (else 404), `X-Forwarded-Proto: https`, the
//! proxy's mTLS attestation header, node key + secret, the pinned client certificate.
//! The app trusts the proxy headers only because it listens where nothing but nginx
//! reaches it and nginx overwrites any client-supplied copy (nix/contract.toml).
//! Retries are safe: a known transfer key answers 409 with its status, and a media
//! upload after `applied` answers 409 — never a second transfer or job.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::bounds::{self, shown};
use super::error::ApiError;
use super::{AppState, Source};
use crate::access::nodes::{self, Node};
use crate::crypto::signing;
use crate::ingest::{self, Boundary, Kind, NewJob};

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// What the node check needs to know about a request: what a signature covers, and the
/// body's real hash when the handler already has the whole body.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    transfer_key: &'a str,
    body_sha256: Option<String>,
}

/// A node that passed every gate, and the body hash its signature covers (if signed),
/// which a streamed body must still match.
struct Authenticated {
    node: Node,
    signed_body_sha256: Option<String>,
}

/// Every gate before a handler runs; the authenticated node. Refusals past the
/// "transfers enabled" gate go to the audit log.
async fn gate(
    state: &AppState,
    h: &HeaderMap,
    source: Source,
    r: Req<'_>,
) -> Result<Authenticated, ApiError> {
    let result = gate_checks(state, h, source, r).await;
    if let Err(e) = &result {
        if e.status != StatusCode::NOT_FOUND && !e.status.is_server_error() {
            // A claimed key is client text: bounded here, escaped by the log format.
            let claimed: Option<String> =
                header(h, "x-network-node-key").map(|k| k.chars().take(64).collect());
            crate::audit::Event {
                event: "auth_failed",
                outcome: if e.status == StatusCode::TOO_MANY_REQUESTS {
                    "rate_limited"
                } else {
                    "refused"
                },
                principal: claimed.as_deref(),
                source: Some(&source.label()),
                reason: Some(e.code),
                ..Default::default()
            }
            .emit();
        }
    }
    result
}

async fn gate_checks(
    state: &AppState,
    h: &HeaderMap,
    source: Source,
    r: Req<'_>,
) -> Result<Authenticated, ApiError> {
    let t = &state.config.hub_receiver;
    if !t.enabled {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            "hub transfers are not enabled on this node",
        ));
    }
    if t.require_secure_transport && header(h, "x-forwarded-proto") != Some("https") {
        return Err(ApiError::forbidden(
            "transfers must arrive over https through the hub's nginx (X-Forwarded-Proto: https)",
        ));
    }
    if t.require_mtls && header(h, &t.mtls_meta_key) != Some(t.mtls_meta_value.as_str()) {
        return Err(ApiError::forbidden(
            "no verified client certificate: connect through the hub's nginx with the site's certificate",
        ));
    }
    let Some(key) = header(h, "x-network-node-key") else {
        return Err(unauthenticated());
    };
    // Before any hash: an unsigned request costs ~25 ms of PBKDF2.
    state.rate_limits.hub.check(source.0)?;
    let client = state.pool.get().await?;
    let (node, signed_body_sha256) = if let Some(signature) = header(h, signing::SIGNATURE) {
        let (node, declared) = check_signature(&client, h, key, signature, &r).await?;
        (node, Some(declared))
    } else if let Some(secret) = header(h, "x-network-node-secret") {
        if t.require_signed_requests {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unsigned",
                "this hub accepts only signed transfer requests (X-Lxgate-Signature): run lxgate hub-export with [hub] sign_requests = true",
            ));
        }
        let node = nodes::authenticate(&client, key, secret)
            .await?
            .ok_or_else(unauthenticated)?;
        (node, None)
    } else {
        return Err(unauthenticated());
    };
    if let Some(pinned) = &node.cert_fingerprint {
        let presented = header(h, "x-client-cert-fingerprint").map(nodes::normalize_fingerprint);
        if presented.as_deref() != Some(pinned.as_str()) {
            tracing::warn!(node = %node.key, "client certificate does not match the pinned fingerprint");
            return Err(ApiError::forbidden(
                "this node's client certificate is not the one pinned for it: use the node's own certificate, or re-pin with `lxgate node add`",
            ));
        }
    }
    Ok(Authenticated {
        node,
        signed_body_sha256,
    })
}

/// A signed request: fresh, its declared body hash true where the body is known, and
/// the signature made with the node's key. The node and the declared body hash.
async fn check_signature(
    client: &tokio_postgres::Client,
    h: &HeaderMap,
    key: &str,
    signature: &str,
    r: &Req<'_>,
) -> Result<(Node, String), ApiError> {
    let refuse = |msg: String| ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", msg);
    let timestamp = header(h, signing::TIMESTAMP)
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| refuse("a signed request needs X-Lxgate-Timestamp (unix seconds)".into()))?;
    let now = chrono::Utc::now().timestamp();
    if !signing::fresh(timestamp, now) {
        return Err(refuse(format!(
            "the request's timestamp is {} s away from the hub's clock (allowed: {} s); check the site's time (NTP)",
            signing::skew(timestamp, now),
            signing::WINDOW_SECS
        )));
    }
    let nonce = header(h, signing::NONCE);
    if nonce.is_some_and(|n| !signing::valid_nonce(n)) {
        return Err(refuse(
            "X-Lxgate-Nonce must be 16 to 64 hex digits, new for every request".into(),
        ));
    }
    let declared = header(h, signing::CONTENT_SHA256)
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| refuse("a signed request needs X-Lxgate-Content-Sha256".into()))?;
    if let Some(actual) = &r.body_sha256 {
        if *actual != declared {
            return Err(refuse(
                "the body does not hash to X-Lxgate-Content-Sha256: it changed after signing"
                    .into(),
            ));
        }
    }
    let signed = signing::Signed {
        method: r.method,
        path: r.path,
        timestamp,
        transfer_key: r.transfer_key,
        body_sha256: &declared,
        nonce,
    };
    match nodes::authenticate_signed(client, key, &signed, signature).await? {
        nodes::SignedAuth::Node(n, sig) => {
            if !crate::access::replay::first_use(client, &n.key, &sig, timestamp).await? {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "replayed",
                    "this signed request was already accepted once: sign every request anew, with a new X-Lxgate-Nonce (lxgate hub-export does)",
                ));
            }
            Ok((n, declared))
        }
        nodes::SignedAuth::Refused => Err(unauthenticated()),
        nodes::SignedAuth::NotSigningCapable => Err(refuse(format!(
            "node {key:?} was registered before signed requests: re-key it on the hub with `lxgate node add {key} --center …` and give the site the new secret"
        ))),
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "missing or unknown node credentials: send X-Network-Node-Key and X-Network-Node-Secret of a node registered with `lxgate node add`",
    )
}

fn valid_transfer_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c))
}

/// Where in `v` a NUL character is, if anywhere (PostgreSQL stores none, in text or jsonb).
fn nul_at(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(at.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let at = format!("{at}.{}", crate::ingest::name::escaped_prefix(k));
            if k.contains('\0') {
                Some(at)
            } else {
                nul_at(x, &at)
            }
        }),
        _ => None,
    }
}

fn text(v: &Value, field: &'static str) -> Result<String, ApiError> {
    match v.get(field) {
        Some(Value::String(s)) if s.chars().any(char::is_control) => Err(ApiError::bad_request(
            "bad_transfer",
            format!("field `{field}` contains a control character (such as NUL): send plain text"),
        )),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(ApiError::bad_request(
            "bad_transfer",
            format!("field `{field}` is missing or not a non-empty string"),
        )),
    }
}

struct Transfer {
    key: String,
    status: String,
    detail: Option<String>,
    job: Option<uuid::Uuid>,
    kind: String,
    resource_hash: String,
    target_node_key: String,
    schema: String,
}

impl Transfer {
    fn body(&self) -> Value {
        json!({
            "transfer_key": self.key,
            "transfer_status": self.status,
            "detail": self.detail.clone().unwrap_or_default(),
            "upload_job_id": self.job,
        })
    }
}

/// The transfer, if it exists and belongs to `node` (another node's looks absent).
async fn load(state: &AppState, node: &Node, key: &str) -> Result<Transfer, ApiError> {
    let client = state.pool.get().await?;
    let row = client
        .query_opt(
            "SELECT transfer_status, detail, upload_job_id, resource_kind, resource_hash,
                    target_node_key, payload_schema_version
             FROM transfers WHERE transfer_key = $1 AND source_node_key = $2",
            &[&key, &node.key],
        )
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Transfer {
        key: key.to_string(),
        status: row.get(0),
        detail: row.get(1),
        job: row.get(2),
        kind: row.get(3),
        resource_hash: row.get(4),
        target_node_key: row.get(5),
        schema: row.get(6),
    })
}

async fn set_status(
    state: &AppState,
    key: &str,
    status: &str,
    detail: &str,
    job: Option<uuid::Uuid>,
) -> Result<(), ApiError> {
    let client = state.pool.get().await?;
    client
        .execute(
            "UPDATE transfers SET transfer_status = $2, detail = $3,
                 upload_job_id = COALESCE($4, upload_job_id), updated_at = now()
             WHERE transfer_key = $1",
            &[&key, &status, &detail, &job],
        )
        .await?;
    Ok(())
}

pub async fn register(
    State(state): State<AppState>,
    source: Source,
    uri: Uri,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    // Parsed once; a body that is not JSON is refused below, after the gates. The
    // signature covers the transfer key it names.
    let parsed = serde_json::from_slice::<Value>(&body);
    let signed_key = parsed
        .as_ref()
        .ok()
        .and_then(|v| v.get("transfer_key")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let node = gate(
        &state,
        &headers,
        source,
        Req {
            method: "POST",
            path: uri.path(),
            transfer_key: &signed_key,
            body_sha256: Some(signing::sha256_hex(&body)),
        },
    )
    .await?
    .node;
    let v = parsed
        .map_err(|e| ApiError::bad_request("bad_transfer", format!("the body is not JSON: {e}")))?;
    if let Some(at) = nul_at(&v, "body") {
        return Err(ApiError::bad_request(
            "bad_transfer",
            format!("{at} contains a NUL character (\\u0000), which cannot be stored: remove it"),
        ));
    }
    let key = text(&v, "transfer_key")?;
    if !valid_transfer_key(&key) {
        return Err(ApiError::bad_request(
            "bad_transfer",
            "transfer_key must be 1-128 letters, digits or . _ : -",
        ));
    }
    let label = source.label();
    let audit = |event, outcome, reason| crate::audit::Event {
        event,
        outcome,
        principal: Some(&node.key),
        center: Some(&node.center_key),
        transfer: Some(&key),
        source: Some(&label),
        reason,
        ..Default::default()
    };
    let claimed = text(&v, "source_node_key")?;
    if claimed != node.key {
        audit(
            "cross_center",
            "refused",
            Some("source_node_key is another node"),
        )
        .emit();
        return Err(ApiError::forbidden(format!(
            "source_node_key {} is not the authenticated node {:?}",
            crate::ingest::name::escaped_prefix(&claimed),
            node.key
        )));
    }
    let center = text(&v, "source_center_key")?;
    if center != node.center_key {
        audit(
            "cross_center",
            "refused",
            Some("source_center_key is another center"),
        )
        .emit();
        return Err(ApiError::forbidden(format!(
            "source_center_key {} is not the center that owns node {:?}",
            crate::ingest::name::escaped_prefix(&center),
            node.key
        )));
    }
    let target = text(&v, "target_node_key")?;
    let kind = text(&v, "resource_kind")?;
    if Kind::parse(&kind).is_none() || kind == "preanonymized" {
        return Err(ApiError::bad_request(
            "bad_transfer",
            "resource_kind must be video or report",
        ));
    }
    let hash = text(&v, "resource_hash")?.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "bad_transfer",
            "resource_hash must be the sha256 of the media, 64 hex digits",
        ));
    }
    let schema = match v.get("payload_schema_version") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::bad_request(
                "bad_transfer",
                "field `payload_schema_version` is missing",
            ))
        }
    };
    let metadata = v.get("metadata").cloned().unwrap_or_else(|| json!([]));
    let client = state.pool.get().await?;
    let inserted = client
        .execute(
            "INSERT INTO transfers (transfer_key, source_node_key, target_node_key, source_center_key,
                 resource_kind, resource_hash, payload_schema_version, transfer_status, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'awaiting_media', $8)
             ON CONFLICT (transfer_key) DO NOTHING",
            &[&key, &node.key, &target, &center, &kind, &hash, &schema, &metadata],
        )
        .await?;
    drop(client);
    if inserted == 0 {
        // A retry, or another node's key: only the owner learns the status.
        return match load(&state, &node, &key).await {
            Ok(t) => Ok((StatusCode::CONFLICT, Json(t.body())).into_response()),
            Err(_) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "transfer_key_taken",
                "this transfer_key is registered by another node; choose a new key",
            )),
        };
    }
    audit("transfer_registered", "ok", None).emit();
    let t = load(&state, &node, &key).await?;
    Ok((StatusCode::CREATED, Json(t.body())).into_response())
}

pub async fn status(
    State(state): State<AppState>,
    source: Source,
    uri: Uri,
    headers: HeaderMap,
    key: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = key?;
    let node = gate(
        &state,
        &headers,
        source,
        Req {
            method: "GET",
            path: uri.path(),
            transfer_key: &key,
            body_sha256: Some(signing::sha256_hex(b"")),
        },
    )
    .await?
    .node;
    Ok(Json(load(&state, &node, &key).await?.body()).into_response())
}

/// The hub's age identity when the media says it is sealed (`media_encryption=age`);
/// plain media only where the hub allows it.
fn opener(
    state: &AppState,
    encryption: Option<&str>,
) -> Result<Option<std::sync::Arc<crate::crypto::age::Identity>>, ApiError> {
    match encryption {
        Some("age") => {
            crate::crypto::age::Identity::from_file(&state.config.host.master_key)
                .map(|id| Some(std::sync::Arc::new(id)))
                .map_err(|e| ApiError::internal("reading the hub's master identity", e))
        }
        Some(other) => Err(ApiError::bad_request(
            "bad_media_encryption",
            format!(
                "media_encryption {} is not supported; send age, or leave it out",
                shown(other)
            ),
        )),
        None if state.config.hub_receiver.require_sealed_media => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsealed",
            "this hub accepts only media sealed with age to its recipient (media_encryption=age): set [hub] hub_recipient on the site",
        )),
        None => Ok(None),
    }
}

pub async fn media(
    State(state): State<AppState>,
    source: Source,
    key: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(key) = key?;
    let path = req.uri().path().to_string();
    let Authenticated {
        node,
        signed_body_sha256,
    } = gate(
        &state,
        req.headers(),
        source,
        Req {
            method: "POST",
            path: &path,
            transfer_key: &key,
            // For media the signature covers the file's sha256, checked once staged.
            body_sha256: None,
        },
    )
    .await?;
    let fingerprint = header(req.headers(), "x-client-cert-fingerprint").map(str::to_string);
    let t = load(&state, &node, &key).await?;
    if t.status == "applied" {
        return Ok((StatusCode::CONFLICT, Json(t.body())).into_response());
    }
    let _slot = state.uploads.admit()?;
    // A refusal from here on is answered once the body is read to its end
    // (bounds::read_to_end), so the site hears it instead of nginx's 502.
    let (mut mp, head) = bounds::form(req).await?;
    let mut role: Option<String> = None;
    let mut encryption: Option<String> = None;
    let (staged, name) = loop {
        let field = head.next_field(&mut mp).await?.ok_or_else(|| {
            ApiError::bad_request("missing_file", "multipart body has no `file` field")
        })?;
        match field.name() {
            Some("media_role") => role = Some(head.text(field, "media_role field").await?),
            Some("media_encryption") => {
                encryption = Some(head.text(field, "media_encryption field").await?)
            }
            Some("file") => {
                let limit = state.config.hub_receiver.max_media_size;
                if role.as_deref() != Some("processed") {
                    return Err(ApiError::bad_request(
                        "bad_media_role",
                        "send media_role=processed before the file field",
                    ));
                }
                let opener = opener(&state, encryption.as_deref())?;
                let name = field.file_name().unwrap_or(&key);
                let name = super::upload::validate_name("file field's filename", Some(name))?;
                head.file_follows();
                // Stored in the form the policy keeps this kind in (a report sealed to
                // the hub's master identity), whatever it travelled in.
                let kind = Kind::parse(&t.kind).unwrap_or(Kind::Video);
                let staged = crate::ingest::stream::stage_opening(
                    &state.storage.for_kind(kind),
                    field,
                    limit,
                    opener,
                )
                .await
                .map_err(|e| match e {
                    crate::ingest::IngestError::Sealed(why) => {
                        tracing::warn!(transfer = %key, node = %node.key, "sealed media does not open: {why}");
                        ApiError::from(crate::ingest::IngestError::Sealed(why))
                    }
                    crate::ingest::IngestError::TooLarge { limit } => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("the media exceeds this hub's limit of {limit} bytes ([hub] max_media_size)"),
                    ),
                    other => ApiError::from(other),
                })?;
                break (staged, name);
            }
            _ => {}
        }
    };
    if staged.sha256 != t.resource_hash {
        let detail = format!(
            "media sha256 {} does not match the registered resource_hash {}",
            staged.sha256, t.resource_hash
        );
        staged.discard();
        set_status(&state, &key, "inconsistent", &detail, None).await?;
        tracing::warn!(transfer = %key, node = %node.key, "{detail}");
        let t = load(&state, &node, &key).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(t.body())).into_response());
    }
    if signed_body_sha256.is_some_and(|d| d != staged.sha256) {
        staged.discard();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "the media does not hash to the signed X-Lxgate-Content-Sha256: it changed after signing",
        ));
    }
    let job = NewJob {
        boundary: Boundary::HubTransfer,
        source_system: format!("hub:{}", node.key),
        center_id: node.center_id,
        original_name: name,
        kind: Kind::parse(&t.kind).unwrap_or(Kind::Video),
        idempotency_key: Some(key.clone()),
        metadata_hash: None,
        provenance: json!({
            "boundary": "hub_transfer",
            "transfer_key": key,
            "source_node_key": node.key,
            "target_node_key": t.target_node_key,
            "payload_schema_version": t.schema,
            "client_cert_fingerprint": fingerprint,
        }),
    };
    match ingest::commit(&state.pool, &state.storage, staged, job).await {
        Ok(outcome) => {
            let id = outcome.job().id;
            set_status(&state, &key, "applied", "", Some(id)).await?;
            tracing::info!(transfer = %key, job = %id, dedupe = outcome.is_dedupe(), "hub transfer applied");
            crate::audit::Event {
                event: "transfer_applied",
                outcome: "ok",
                principal: Some(&node.key),
                center: Some(&node.center_key),
                job: Some(&id.to_string()),
                transfer: Some(&key),
                source: Some(&source.label()),
                ..Default::default()
            }
            .emit();
            Ok(Json(load(&state, &node, &key).await?.body()).into_response())
        }
        Err(e) => {
            let err: ApiError = e.into();
            let detail = format!("storing the media failed on the hub: {}", err.message);
            set_status(&state, &key, "failed", &detail, None).await?;
            Err(err)
        }
    }
}
