//! Seal and open throughput of the staging writer and the sealed-object reader (issue
//! 19), for scripts/bench to set beside the `age` CLI on the same file.
//!   cargo run --release --example seal_bench -- FILE WORKDIR
//! Writes WORKDIR/master.age (the identity, for `age -d -i`) and prints
//! `seal_s open_s recipient` on one line.
use std::path::Path;
use std::time::Instant;

use lxgate::config::{AtRest, StoragePolicy};
use lxgate::crypto::age::{ExposeSecret, Identity};
use lxgate::crypto::keyring::MasterKeys;
use lxgate::ingest::Storage;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (file, work) = (&args[1], std::path::Path::new(&args[2]));
    let key = work.join("master.age");
    let id = Identity::generate();
    std::fs::write(&key, id.to_secret_string().expose_secret())?;
    let sealed = AtRest::Sealed;
    let policy = StoragePolicy {
        video: sealed,
        report: sealed,
        preanonymized: sealed,
    };
    let storage =
        Storage::new(work.join("storage"), policy, MasterKeys::new(&key)).staging_as(sealed);
    storage.prepare()?;

    let start = Instant::now();
    let (staged, _) = lxgate::ingest::stream::stage_file(&storage, Path::new(file))?;
    let rel = staged.object_rel();
    storage.place(staged)?;
    let seal = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut object = storage.open(&rel, AtRest::Sealed)?;
    let mut sink = std::io::sink();
    std::io::copy(&mut object, &mut sink)?;
    let open = start.elapsed().as_secs_f64();
    println!(
        "{seal:.3} {open:.3} {} {}",
        id.recipient(),
        storage.root().join(rel).display()
    );
    Ok(())
}
