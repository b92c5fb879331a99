//! A body arriving in chunks (an HTTP request, a multipart field) staged as it
//! arrives: bounded by a limit, optionally opened from age on the way, hashed and
//! fsynced by the staged writer. The boundaries hand their streams here.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use super::settle::{identity, FileIdentity};
use super::{IngestError, Staged, Storage};

/// Stream a body into a staged temp file on a blocking thread, stopping at the limit.
/// Memory stays bounded by the channel: at most 2 body chunks queued per upload
/// (64 concurrent uploads stay under 100 MB RSS; see scripts/bench).
pub async fn stage<S, E>(storage: &Storage, body: S, limit: u64) -> Result<Staged, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    stage_opening(storage, body, limit, None).await
}

/// `stage`, opening an age-sealed body with `identity` on the way: what is staged (and
/// hashed) is the plaintext; the limit counts the sealed bytes.
pub async fn stage_opening<S, E>(
    storage: &Storage,
    mut body: S,
    limit: u64,
    identity: Option<std::sync::Arc<crate::crypto::age::Identity>>,
) -> Result<Staged, IngestError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut writer = storage.writer()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let worker = tokio::task::spawn_blocking(move || -> Result<_, IngestError> {
        match identity {
            None => {
                while let Some(chunk) = rx.blocking_recv() {
                    writer.write(&chunk)?;
                }
            }
            Some(id) => {
                let chunks = std::iter::from_fn(|| rx.blocking_recv());
                let mut input =
                    std::io::BufReader::new(crate::crypto::age::ChunkReader::new(chunks));
                crate::crypto::age::decrypt(&id, &mut input, &mut writer)
                    .map_err(|e| IngestError::Sealed(e.to_string()))?;
            }
        }
        Ok(writer)
    });
    let mut total = 0u64;
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                total += chunk.len() as u64;
                if total > limit {
                    failure = Some(IngestError::TooLarge { limit });
                    break;
                }
                // Once the writer has failed (its error is reported below), the rest
                // of the body is read and dropped, so the client gets that answer
                // instead of a connection reset halfway through its upload.
                if !tx.is_closed() {
                    let _ = tx.send(chunk).await;
                }
            }
            Err(e) => {
                failure = Some(IngestError::Source(e.to_string()));
                break;
            }
        }
    }
    drop(tx);
    let worker = worker
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // A stream that broke off explains a failed opening better than the opening does.
    let writer = match (worker, failure.take()) {
        (_, Some(f)) => return Err(f),
        (w, None) => w?,
    };
    Ok(tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??)
}

/// Read a regular file without following links, confirming it is still the file we
/// judged complete (same dev/inode) and that it did not change while read (the settle
/// identity), into a staged object. The watcher stages its drops this way.
pub fn stage_file(
    storage: &Storage,
    path: &std::path::Path,
) -> std::io::Result<(Staged, FileIdentity)> {
    let before = std::fs::symlink_metadata(path)?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() || m.dev() != before.dev() || m.ino() != before.ino() {
        return Err(std::io::Error::other("file changed while opening"));
    }
    let mut w = storage.writer()?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
    }
    let after = f.metadata()?;
    if identity(&after) != identity(&m) {
        return Err(std::io::Error::other("file changed while reading"));
    }
    Ok((w.finish()?, identity(&m)))
}
