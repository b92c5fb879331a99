//! Replay protection for signed transfer requests: the hub accepts each signature once.
//! Seen signatures live in PostgreSQL (`seen_signatures`), not in memory, so the rule
//! holds across restarts and across every process serving the hub. A row is needed only
//! while its request could still pass the timestamp check; expired rows are deleted on
//! the way, so the table holds at most the signatures of the last ten minutes.

use crate::crypto::signing::WINDOW_SECS;

/// Kept past the window by this much, for clock differences between the app and the
/// database.
const MARGIN_SECS: i64 = 60;

/// Record a verified signature; false when it was accepted before (a replay).
pub async fn first_use(
    c: &tokio_postgres::Client,
    node_key: &str,
    signature: &[u8],
    timestamp: i64,
) -> Result<bool, crate::db::DbError> {
    c.execute("DELETE FROM seen_signatures WHERE expires_at < now()", &[])
        .await?;
    // `fresh` already bounded the timestamp to the window around now: no overflow.
    let expires = chrono::DateTime::from_timestamp(timestamp + WINDOW_SECS + MARGIN_SECS, 0)
        .unwrap_or_else(chrono::Utc::now);
    let inserted = c
        .execute(
            "INSERT INTO seen_signatures (signature, node_key, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (signature) DO NOTHING",
            &[&signature, &node_key, &expires],
        )
        .await?;
    Ok(inserted == 1)
}
