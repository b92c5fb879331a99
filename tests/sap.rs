//! SAP IS-H bundles → preanonymized pairs → watcher jobs, and every bad
//! archive refused with its own reason.
mod common;
use common::*;
use lxgate::boundary::sap::sample;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn site(extra: &str) -> (Site, PathBuf) {
    Site::with_center_a(&format!(
        "[watcher]\nsettle_ms = 0\n[sap_import]\ncenter_key = \"A\"\ncenter_name = \"Klinik Ä\"\n{extra}"
    ))
}

fn drop_zip(import: &Path, name: &str, bytes: &[u8]) {
    drop_file(&import.join("sap_import"), name, bytes);
}

/// Rewrite every occurrence of `from` with `to` (same length) in a zip's raw bytes:
/// local headers and the central directory both carry names and flags.
fn patch(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    let mut n = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(n >= 2, "patched {n} places");
    out
}

/// Set a general-purpose flag bit on every local and central header.
fn set_flag(bytes: &[u8], flag: u16) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for i in 0..out.len().saturating_sub(10) {
        let at = match &out[i..i + 4] {
            b"PK\x03\x04" => i + 6,
            b"PK\x01\x02" => i + 8,
            _ => continue,
        };
        let v = u16::from_le_bytes([out[at], out[at + 1]]) | flag;
        out[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// The "name is UTF-8" flag on every header.
fn mark_utf8(bytes: &[u8]) -> Vec<u8> {
    set_flag(bytes, 0x800)
}

/// The "encrypted" flag on every header.
fn mark_encrypted(bytes: &[u8]) -> Vec<u8> {
    set_flag(bytes, 1)
}

/// A self-extractor stub: bytes before the archive, its offsets left as they were.
fn prefixed(bytes: &[u8]) -> Vec<u8> {
    [b"MZ\x90\x00SFX".as_slice(), bytes].concat()
}

/// An archive comment holding a second, empty end-of-central-directory record: a
/// reader that takes the last one sees no entries at all.
fn fake_eocd(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let n = out.len();
    assert_eq!(&out[n - 22..n - 18], b"PK\x05\x06", "no comment yet");
    out[n - 2..].copy_from_slice(&22u16.to_le_bytes());
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 18]);
    out
}

fn symlink_zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.add_symlink(
        "link.txt",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    w.finish().unwrap().into_inner()
}

fn entry(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    (name.to_string(), bytes.to_vec())
}

fn incompressible(n: usize) -> Vec<u8> {
    let mut x: u32 = 12345;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 26) as u8 + b'a'
        })
        .collect()
}

#[test]
fn each_bad_archive_is_refused_with_its_own_reason() {
    let (s, import) = site("max_entry_bytes = 4000\nmax_total_bytes = 6000\n");
    let table = b"PatientNr\tFallNr\tdateErstellzeit\tstrText\nP1\tF1\t2024-01-01\tText\n".to_vec();
    let good = sample::zip(&[entry("aaaa.txt", &table), entry("bbbb.txt", &table)]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "slip.zip",
            sample::zip(&[entry("../evil.txt", &table)]),
            "zip-slip",
        ),
        (
            "absolute.zip",
            sample::zip(&[entry("/etc/evil.txt", &table)]),
            "zip-slip",
        ),
        ("symlink.zip", symlink_zip(), "symbolic link"),
        (
            "duplicate.zip",
            patch(&good, b"bbbb.txt", b"aaaa.txt"),
            "more than once",
        ),
        (
            "prefixed-duplicate.zip",
            prefixed(&patch(&good, b"bbbb.txt", b"aaaa.txt")),
            "self-extractor stub",
        ),
        ("prefixed.zip", prefixed(&good), "self-extractor stub"),
        (
            "fake-eocd.zip",
            fake_eocd(&good),
            "second end-of-central-directory record",
        ),
        (
            "encrypted.zip",
            mark_encrypted(&sample::zip(&[entry("a.txt", &table)])),
            "encrypted",
        ),
        (
            "big-entry.zip",
            sample::zip(&[entry("a.txt", &incompressible(5000))]),
            "entry limit",
        ),
        (
            "big-total.zip",
            sample::zip(&[
                entry("a.txt", &incompressible(3500)),
                entry("b.txt", &incompressible(3500)),
            ]),
            "more than 6000 bytes",
        ),
        (
            "bomb.zip",
            sample::zip(&[entry("a.txt", &vec![b'0'; 3 << 20])]),
            "zip bomb",
        ),
        (
            "non-utf8.zip",
            mark_utf8(&patch(&good, b"aaaa.txt", b"\xff\xfeaa.txt")),
            "not valid UTF-8",
        ),
        (
            "truncated.zip",
            good[..good.len() / 2].to_vec(),
            "truncated or corrupt",
        ),
        (
            "no-table.zip",
            sample::zip(&[entry("notes.txt", b"Name\tWert\nx\t1\n")]),
            "no supported table",
        ),
    ];
    // The bomb is over both the ratio and the entry limit: the ratio, checked first,
    // names it for what it is.
    for (name, bytes, _) in &cases {
        drop_zip(&import, name, bytes);
    }
    s.ok(&["sap-import", "--once"]);
    let failed = import.join("sap_import_failed");
    for (name, _, needle) in &cases {
        assert!(
            failed.join(name).exists(),
            "{name} not moved to failed: {:?}",
            names(&failed)
        );
        let reason = std::fs::read_to_string(failed.join(format!("{name}.reason"))).unwrap();
        assert!(reason.contains(needle), "{name}: {reason}");
    }
    assert!(names(&import.join("preanonymized_import")).is_empty());
    assert!(names(&import.join("sap_import")).is_empty());
    let r = std::fs::read_to_string(failed.join("no-table.zip.reason")).unwrap();
    assert!(
        r.contains("cwd (PatientNr, FallNr, Dokumentzeit") && r.contains("notes.txt: [Name, Wert]"),
        "{r}"
    );
}

#[test]
fn a_valid_bundle_becomes_pairs_the_watcher_ingests_and_a_repeat_adds_no_job() {
    let (s, import) = site("");
    let zip = sample::bundle(6);
    drop_zip(&import, "export-1.zip", &zip);
    s.ok(&["sap-import", "--once"]);
    let out = import.join("preanonymized_import");
    let files = names(&out);
    let jsons: Vec<_> = files.iter().filter(|n| n.ends_with(".json")).collect();
    // 6 cwd + 6 briefe + 3 radiologie text rows, plus 6 procedure-only cases.
    assert_eq!(jsons.len(), 21, "{files:?}");
    assert_eq!(files.len(), 42);
    assert!(
        files.contains(&"sap_ish_0002_cwd_p01000_f0005000.json".to_string()),
        "{files:?}"
    );
    assert!(names(&import.join("sap_import_processed")).contains(&"export-1.zip".to_string()));
    // Sidecar: keys, ASCII, cp1252 umlauts decoded, gender from stammdaten, ISO dates.
    let briefe = files
        .iter()
        .find(|n| n.contains("_briefe_p01001_") && n.ends_with(".json"))
        .unwrap();
    let raw = std::fs::read_to_string(out.join(briefe)).unwrap();
    assert!(raw.is_ascii(), "{raw}");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["external_id"], "P01001");
    assert_eq!(v["casenumber"], "F0005001");
    assert_eq!(v["external_id_origin"], "sap_ish:A");
    assert_eq!(v["center_name"], "Klinik Ä");
    assert_eq!(v["patient_gender"], "female");
    assert_eq!(v["examination_date"], "2024-04-02");
    assert_eq!(v["examination_time"], "09:15:00");
    assert!(
        v["text"].as_str().unwrap().contains("Müller-Lüdenscheidt"),
        "{v}"
    );
    let txt = std::fs::read_to_string(out.join(briefe.replace(".json", ".txt"))).unwrap();
    assert_eq!(txt, format!("{}\n", v["text"].as_str().unwrap()));
    let manifests = files_under(&s.data().join("logs/sap_import"));
    assert_eq!(manifests.len(), 1);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifests[0]).unwrap()).unwrap();
    assert_eq!(m["generated"].as_array().unwrap().len(), 21);
    assert_eq!(m["other_entries"], serde_json::json!(["readme.pdf"]));

    s.ok(&["watch", "--once"]);
    assert!(
        names(&out).is_empty(),
        "watcher took every pair: {:?}",
        names(&out)
    );
    assert_eq!(
        s.count(
            "SELECT count(*) FROM upload_jobs WHERE kind = 'preanonymized' AND status = 'stored'"
        ),
        21
    );
    // 6 anamneses, 1 letter and 1 radiology text shared by all, 6 case summaries
    // (each names its patient): 14 stored carriers; each pair's sidecar is an object of
    // its own.
    assert_eq!(
        s.count("SELECT count(DISTINCT storage_path) FROM upload_jobs"),
        14
    );
    assert_eq!(
        s.count("SELECT count(DISTINCT sidecar_path) FROM upload_jobs"),
        21
    );
    assert_eq!(
        files_under(&s.data().join("storage/objects")).len(),
        14 + 21
    );

    // The same zip again: the same names, and downstream only dedupes.
    drop_zip(&import, "export-1-again.zip", &zip);
    s.ok(&["sap-import", "--once"]);
    assert!(names(&out).contains(&"sap_ish_0002_cwd_p01000_f0005000.json".to_string()));
    s.ok(&["watch", "--once"]);
    assert_eq!(s.count("SELECT count(*) FROM upload_jobs"), 21);
}

#[test]
fn two_bundles_never_overwrite_each_others_pairs() {
    let (s, import) = site("");
    drop_zip(&import, "a.zip", &sample::bundle(2));
    s.ok(&["sap-import", "--once"]);
    // Same patients, different text: the counter restarts, so stems collide.
    let mut t = sample::tables(2);
    t[0].1 = String::from_utf8(t[0].1.clone())
        .unwrap()
        .replace("Anamnese", "Zweite Anamnese")
        .into_bytes();
    drop_zip(&import, "b.zip", &sample::zip(&t));
    s.ok(&["sap-import", "--once"]);
    let out = import.join("preanonymized_import");
    let first = std::fs::read_to_string(out.join("sap_ish_0002_cwd_p01000_f0005000.txt")).unwrap();
    assert!(
        !first.contains("Zweite"),
        "the first bundle's pair was overwritten"
    );
    let second: Vec<_> = names(&out)
        .into_iter()
        .filter(|n| n.starts_with("sap_ish_0002_cwd_p01000_f0005000__"))
        .collect();
    assert_eq!(second.len(), 2, "{:?}", names(&out));
    assert!(std::fs::read_to_string(
        out.join(second.iter().find(|n| n.ends_with(".txt")).unwrap())
    )
    .unwrap()
    .contains("Zweite"));
}

#[test]
fn sigkill_mid_conversion_then_rerun_is_consistent() {
    let (s, import) = site("");
    let zip = sample::bundle(3000);
    drop_zip(&import, "big.zip", &zip);
    let out = import.join("preanonymized_import");
    let log = s.dir.path().join("sap.log");
    let mut p = Proc::spawn(&["sap-import", "--once"], &s.env(), &log);
    wait_for("some pairs", Duration::from_secs(60), || {
        names(&out).len() > 50 || !p.alive()
    });
    p.kill9();
    s.ok(&["sap-import", "--once"]);
    let files = names(&out);
    assert!(files.iter().all(|n| !n.starts_with('.')), "temp files left");
    let txt = files.iter().filter(|n| n.ends_with(".txt")).count();
    let json = files.iter().filter(|n| n.ends_with(".json")).count();
    assert_eq!(txt, json, "every carrier has its sidecar");
    assert_eq!(json, 3000 * 2 + 1500 + 3000);
    assert_eq!(names(&import.join("sap_import_processed")), vec!["big.zip"]);
    assert!(names(&import.join("sap_import")).is_empty());
}

/// A bundle whose pairs cannot all be written leaves none of them visible, and the zip
/// stays where it was to be retried; once the obstacle is gone the rerun writes them all.
/// The obstacle: a directory where the temp file of pair 5's carrier would go.
#[test]
fn a_failed_write_keeps_no_pair_and_leaves_the_zip_to_retry() {
    use lxgate::boundary::sap::{read_bundle, Limits, Plan};
    let (s, import) = site("");
    let zip = sample::bundle(6);
    let conv = read_bundle(&zip, Limits::default()).unwrap();
    let stems = Plan::new(&conv.rows).stems().unwrap();
    let out = import.join("preanonymized_import");
    let obstacle = out.join(format!(".{}.txt.tmp", stems[4]));
    std::fs::create_dir_all(&obstacle).unwrap();
    drop_zip(&import, "export-1.zip", &zip);
    let failed = s.run(&["sap-import", "--once"]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("left in") && err.contains("to retry"), "{err}");
    assert_eq!(
        names(&out),
        vec![obstacle.file_name().unwrap().to_string_lossy().into_owned()]
    );
    assert_eq!(names(&import.join("sap_import")), vec!["export-1.zip"]);
    assert!(names(&import.join("sap_import_failed")).is_empty());

    std::fs::remove_dir(&obstacle).unwrap();
    s.ok(&["sap-import", "--once"]);
    assert_eq!(names(&out).len(), 2 * stems.len());
    assert_eq!(
        names(&import.join("sap_import_processed")),
        vec!["export-1.zip"]
    );
}
