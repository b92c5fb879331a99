//! The protected-media decision: may this caller read this job's stored object, and
//! where and how is that object stored. One prepared statement per decision: the job
//! alone when the token was confirmed a moment ago ([`super::verified`]), else the token
//! and the job together.

use std::time::Instant;

use uuid::Uuid;

use super::tokens::{principal_at, Principal, TokenHash};
use super::verified::Recent;
use crate::db::DbError;

/// How an object lies in managed storage; it decides how the object is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Plaintext on the data root (LUKS): nginx serves it, byte ranges and all, from its
    /// internal /protected_media/ location.
    Plain,
    /// Sealed with age to the master identity (`stored_as = 'age'`): nginx cannot open
    /// it, the app streams the plaintext.
    Sealed,
}

/// A stored object the caller may read.
#[derive(Debug, Clone)]
pub struct MediaObject {
    pub job: Uuid,
    /// The job's center.
    pub center_key: Option<String>,
    /// Relative to managed storage.
    pub storage_path: String,
    pub stored: Stored,
}

/// Who asks: a token the database confirmed within the verified window (and when it
/// was asked), or one to look up.
pub enum Caller {
    Known(Principal, Instant),
    Unverified(TokenHash),
}

/// Allowed decisions by token and job, trusted like verified tokens: a player's range
/// requests on one job within the window cost no database round trip at all. Jobs are
/// never updated or deleted once stored, so the token is what may change meanwhile.
pub type Decisions = Recent<(TokenHash, Uuid), (Principal, MediaObject)>;

/// Why the answer is no. A caller must not tell another center's job from a missing one:
/// both are answered alike (404); only the audit trail tells them apart.
#[derive(Debug)]
pub enum Refusal {
    /// No such token, or a revoked one.
    UnknownToken,
    /// No such job, or one without a stored object (an error job).
    NoSuchJob(Principal),
    /// A job of a center the principal does not see.
    OtherCenter(Principal),
}

/// The answer for `caller` and `job`, in one round trip to the database.
pub async fn decide(
    c: &deadpool_postgres::Client,
    caller: Caller,
    job: Uuid,
) -> Result<Result<(Principal, MediaObject), Refusal>, DbError> {
    let (principal, row) = match caller {
        Caller::Known(p, _) => {
            let stmt = c
                .prepare_cached(
                    "SELECT j.id IS NOT NULL, j.center_id, c.center_key, j.storage_path,
                            j.stored_as = 'age'
                     FROM (VALUES (1)) AS one (x)
                     LEFT JOIN upload_jobs j ON j.id = $1
                     LEFT JOIN centers c ON c.id = j.center_id",
                )
                .await?;
            (Some(p), c.query_one(&stmt, &[&job]).await?)
        }
        Caller::Unverified(hash) => {
            // One row always: the token's columns NULL for no valid token, the job's for
            // no such job.
            let stmt = c
                .prepare_cached(
                    "SELECT j.id IS NOT NULL, j.center_id, jc.center_key, j.storage_path,
                            j.stored_as = 'age', t.id, t.label, t.role, t.center_id, tc.center_key
                     FROM (VALUES (1)) AS one (x)
                     LEFT JOIN upload_jobs j ON j.id = $2
                     LEFT JOIN centers jc ON jc.id = j.center_id
                     LEFT JOIN api_tokens t ON t.token_sha256 = $1 AND t.revoked_at IS NULL
                     LEFT JOIN centers tc ON tc.id = t.center_id",
                )
                .await?;
            let row = c.query_one(&stmt, &[&&hash[..], &job]).await?;
            (principal_at(&row, 5), row)
        }
    };
    let Some(p) = principal else {
        return Ok(Err(Refusal::UnknownToken));
    };
    let exists: bool = row.get(0);
    let center_id: Option<i64> = row.get(1);
    let center_key: Option<String> = row.get(2);
    let storage_path: Option<String> = row.get(3);
    // NULL only when there is no job.
    let sealed: Option<bool> = row.get(4);
    if !exists {
        return Ok(Err(Refusal::NoSuchJob(p)));
    }
    if !p.sees_center(center_id) {
        return Ok(Err(Refusal::OtherCenter(p)));
    }
    let Some(storage_path) = storage_path else {
        return Ok(Err(Refusal::NoSuchJob(p)));
    };
    Ok(Ok((
        p,
        MediaObject {
            job,
            center_key,
            storage_path,
            stored: if sealed == Some(true) {
                Stored::Sealed
            } else {
                Stored::Plain
            },
        },
    )))
}
