//! Envelope throughput for the closing notes (scripts/bench envelope): seal a file to a
//! fresh recipient key and open it again, each streamed file to file, timed apart.
//!   cargo run --release --example hub_envelope -- FILE WORKDIR
//! Prints `seal_seconds open_seconds`.
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use lxgate::hub::envelope::{self, Identity};
use lxgate::hub::keys::{Keyring, RecipientKey};
use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (file, dir) = (
        std::path::Path::new(&args[1]),
        std::path::Path::new(&args[2]),
    );
    let key = RecipientKey::generate();
    let key_file = dir.join("recipient.pem");
    std::fs::write(&key_file, key.to_pem().as_bytes())?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let ring = Keyring::load(&[key_file], true)?;
    // The approved hash, as the site knows it from ingest (not part of the timing).
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(file)?, &mut h)?;
    let hash = hex::encode(h.finalize());
    let id = Identity {
        transfer_key: format!("bench__video__{hash}__processed_v1"),
        source_node_key: "bench".into(),
        source_center_key: "A".into(),
        target_node_key: "hub".into(),
        resource_kind: "video".into(),
        resource_hash: hash.clone(),
        processed_media_hash: hash,
    };
    let size = std::fs::metadata(file)?.len();
    let ct = dir.join("ciphertext");
    let t = Instant::now();
    let sealed = {
        let mut out = BufWriter::with_capacity(envelope::CHUNK, std::fs::File::create(&ct)?);
        let mut src = BufReader::with_capacity(envelope::CHUNK, std::fs::File::open(file)?);
        envelope::seal(&mut src, size, &mut out, &id, &key.public())?
    };
    let seal = t.elapsed().as_secs_f64();
    let t = Instant::now();
    {
        let mut out = BufWriter::with_capacity(
            envelope::CHUNK,
            std::fs::File::create(dir.join("plaintext"))?,
        );
        let mut src = BufReader::with_capacity(envelope::CHUNK, std::fs::File::open(&ct)?);
        envelope::open(&sealed.envelope, &ring, &mut src, &mut out)?;
    }
    let open = t.elapsed().as_secs_f64();
    println!("{seal:.3} {open:.3}");
    Ok(())
}
