//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` attributes and the types they answer with; served at
//! `/api/openapi.json` and written by `lxgate openapi`. tests/openapi.rs runs
//! schemathesis against a live `lxgate dev` with it: every answer must match it.
//!
//! The shapes below that the handlers build as JSON values (upload result, transfer
//! status, transfer registration) are described here, beside the one document.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorBody;
use super::{health, jobs, request_id, transfers, upload};
use crate::ingest::{Kind, UploadJob};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lxgate",
        description = "Ingest, protected media and hub transfers of clinic patient media. \
            Clients reach /api/ through nginx over TLS; /healthz, /readyz and /metrics \
            answer only on the app's own listener, for the local host.",
    ),
    paths(
        upload::upload,
        jobs::list,
        jobs::get_one,
        jobs::status,
        jobs::media,
        transfers::register,
        transfers::media,
        transfers::status,
        health::healthz,
        health::readyz,
        health::metrics,
        served,
    ),
    components(schemas(UploadJob, jobs::UploadJobStatus, Kind, Uploaded, UploadForm, TransferRegistration, TransferStatus, Refusal, ErrorBody, health::Status)),
    modifiers(&Security, &RequestIds),
    tags(
        (name = "ingest", description = "Uploads and the UploadJobs they become"),
        (name = "media", description = "Protected media of stored jobs"),
        (name = "hub", description = "Site → hub transfers (hub role; nginx verifies the site's client certificate)"),
        (name = "operations", description = "Health, readiness, metrics and this description"),
    ),
)]
struct ApiDoc;

/// The document as served and as `lxgate openapi` writes it.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text = ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// This description.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json")),
)]
pub async fn served() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}

/// What every route behind a bearer token may answer before its own work.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum TokenRefusals {
    /// Missing, unknown or revoked bearer token
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Too many token checks from this address; see Retry-After
    #[response(status = 429)]
    RateLimited(ErrorBody),
}

/// What every transfer route may answer before its own work, as the reference's hub
/// does: DRF-shaped refusals (`{"detail": …}` or field lists).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum NodeRefusals {
    /// A body or header the reference's rules refuse (the rejection code says which)
    #[response(status = 400)]
    BadRequest(Refusal),
    /// Unknown node, wrong secret, no verified client certificate, another node's or center's transfer
    #[response(status = 403)]
    Forbidden(Refusal),
    /// Transfers are not enabled here, or no such transfer
    #[response(status = 404)]
    NotFound(Refusal),
    /// Too many node authentications from this address; see Retry-After
    #[response(status = 429)]
    RateLimited(ErrorBody),
}

/// A refusal in the reference's shapes: `{"detail": …}`, `{"error": …}` or a DRF
/// field-error object (src/hub/wire).
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub struct Refusal(serde_json::Value);

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from `lxgate token create`"))
                    .build(),
            ),
        );
        let header = |name: &str, what: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(name, what)))
        };
        c.add_security_scheme(
            "node_key",
            header(
                "X-Network-Node-Key",
                "The sending site's node key (`lxgate node add` on the hub)",
            ),
        );
        c.add_security_scheme(
            "node_secret",
            header(
                "X-Network-Node-Secret",
                "The node's secret, where the hub accepts unsigned requests",
            ),
        );
        c.add_security_scheme(
            "node_signature",
            header(
                "X-Lxgate-Signature",
                "HMAC of the request by the node's secret, with X-Lxgate-Timestamp, X-Lxgate-Nonce and X-Lxgate-Content-Sha256 (docs/spec.md)",
            ),
        );
    }
}

/// Every answer carries the request's id (middleware in http/mod.rs, for every route),
/// so every response of every operation says so, from one place.
struct RequestIds;

impl Modify for RequestIds {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{HeaderBuilder, RefOr};
        let header = HeaderBuilder::new()
            .schema(utoipa::openapi::schema::Object::with_type(
                utoipa::openapi::schema::Type::String,
            ))
            .description(Some(
                "The id of this request in lxgate's journal and nginx's log: the request's own \
                 X-Request-Id when it is sane (letters, digits, '-', '_', '.'; at most 64), \
                 else a new one",
            ))
            .build();
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(r) = response {
                        r.headers
                            .insert(request_id::HEADER.to_string(), header.clone());
                    }
                }
            }
        }
    }
}

/// What an upload answers: the job, and whether the content was already stored (then
/// the existing job, 200) or is new (201).
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)] // a description of what upload::upload builds as JSON
pub struct Uploaded {
    #[schema(inline)]
    #[serde(flatten)]
    job: UploadJob,
    /// True when this content was stored before: the answer is the earlier job.
    dedupe: bool,
}

/// The multipart shape of an upload. Text fields come before the file: the file is
/// streamed to storage as it arrives.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The center the upload belongs to; default: the token's center.
    center_key: Option<String>,
    kind: Kind,
    /// The file; its filename is the original name.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// A site announces a transfer before it sends the media: the payload schema 7.0
/// register body (src/hub/wire: transfer key, nodes, center, resource kind and hashes,
/// strict video/report resource_rows, provenance).
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub struct TransferRegistration(serde_json::Value);

/// A transfer's state as the hub sees it: the reference's status body (transfer key,
/// one of the nine statuses, processing decision, envelope_receipt once applied).
#[derive(ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)]
pub struct TransferStatus(serde_json::Value);
