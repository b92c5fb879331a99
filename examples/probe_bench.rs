//! ffprobe's video facts for one video plain and sealed (hub export's loopback feed),
//! for scripts/bench: time of each, whether they agree, and this process's peak RSS
//! (the feed runs in it; ffprobe is a child) before and after the sealed probe.
//!   cargo run --release --example probe_bench -- VIDEO WORKDIR
//! Prints `plain_s sealed_s same_facts rss_before_kib rss_peak_kib`.
use std::path::Path;
use std::time::Instant;

use lxgate::boundary::hub_export::video_facts;
use lxgate::config::{AtRest, StoragePolicy};
use lxgate::crypto::age::{ExposeSecret, Identity};
use lxgate::crypto::keyring::MasterKeys;
use lxgate::ingest::Storage;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (file, work) = (
        std::path::Path::new(&args[1]),
        std::path::Path::new(&args[2]),
    );
    let key = work.join("master.age");
    std::fs::write(
        &key,
        Identity::generate().to_secret_string().expose_secret(),
    )?;
    let keys = MasterKeys::new(&key);
    let policy = StoragePolicy {
        video: AtRest::Sealed,
        report: AtRest::Sealed,
        preanonymized: AtRest::Sealed,
    };
    let storage =
        Storage::new(work.join("storage"), policy, keys.clone()).staging_as(AtRest::Sealed);
    storage.prepare()?;
    let (staged, _) = lxgate::ingest::stream::stage_file(&storage, Path::new(file))?;
    let rel = staged.object_rel();
    storage.place(staged)?;
    let sealed = storage.root().join(rel);

    let start = Instant::now();
    let plain = video_facts(file, AtRest::Plain, &keys);
    let plain_s = start.elapsed().as_secs_f64();
    let before = peak_rss_kib();
    let start = Instant::now();
    let opened = video_facts(&sealed, AtRest::Sealed, &keys);
    let sealed_s = start.elapsed().as_secs_f64();
    println!(
        "{plain_s:.3} {sealed_s:.3} {} {before} {}",
        plain.is_some() && plain == opened,
        peak_rss_kib()
    );
    Ok(())
}
