//! The SAP IS-H import against its reference: endoreg-db 1.6.5's own
//! `import_sap_ish_zip` command (tests/reference/sap_oracle.py loads it on the system
//! Python; the stubs it needs are printed) runs on the same zips as lxgate, and the
//! pairs must agree byte for byte: names, `.txt` bytes, `.json` bytes, numbering. A
//! bundle the reference refuses, lxgate refuses too.
//!
//! Replay a random bundle: `LXGATE_SAP_SEED=<seed> LXGATE_SAP_BUNDLES=1 cargo test
//! --test sap_reference random`.
mod archives;
#[path = "../common/mod.rs"]
mod common;
mod hand_made;
mod random;

use common::*;

use std::io::Write as _;
use std::process::Stdio;

use lxgate::boundary::sap::{read_bundle, sample, templates, Center, Limits, Plan};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const CENTER: Center = Center {
    key: "A",
    name: "Klinik Ä",
};

/// A bundle's pairs as (file name, bytes), sorted by name; or a refusal.
type Outcome = Result<Vec<(String, Vec<u8>)>, String>;

fn ours(bytes: &[u8]) -> Outcome {
    let conv = read_bundle(bytes, Limits::default())?;
    let plan = Plan::new(&conv.rows);
    // The whole bundle is refused before a pair is written when one cannot be named.
    plan.stems()?;
    let mut files = Vec::new();
    for p in plan.pairs(&CENTER) {
        let p = p?;
        files.push((format!("{}.txt", p.stem), p.text.into_bytes()));
        files.push((format!("{}.json", p.stem), p.sidecar.into_bytes()));
    }
    files.sort();
    Ok(files)
}

/// Scratch space for the reference: tmpfs when there is one (it fsyncs every file).
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("sapref")
            .tempdir_in(shm)
            .unwrap()
    } else {
        tempdir()
    }
}

/// The reference on many bundles, in one Python process.
fn theirs(bundles: &[Vec<u8>]) -> Vec<Outcome> {
    let dir = scratch();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("out")).unwrap();
    let mut jobs = Vec::new();
    for (i, b) in bundles.iter().enumerate() {
        let zip = dir.path().join(format!("{i}.zip"));
        std::fs::write(&zip, b).unwrap();
        jobs.push(serde_json::json!([
            zip,
            root.join("out").join(i.to_string())
        ]));
    }
    let request =
        serde_json::json!({"center_key": CENTER.key, "center_name": CENTER.name, "jobs": jobs});
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/sap_oracle.py");
    let mut child = reference::python()
        .arg(script)
        .arg(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reference");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // What the oracle stubbed and shimmed, for the log.
    for line in err.lines().filter(|l| l.starts_with("[reference]")) {
        println!("{line}");
    }
    assert!(out.status.success(), "the reference oracle failed: {err}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), bundles.len(), "one answer per bundle: {err}");
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if l["ok"] != true {
                return Err(l["error"].as_str().unwrap_or("?").to_string());
            }
            let mut files = Vec::new();
            // The reference creates the folder with its first pair.
            let d = root.join("out").join(i.to_string());
            for n in if d.exists() { names(&d) } else { vec![] } {
                files.push((n.clone(), std::fs::read(d.join(&n)).unwrap()));
            }
            files.sort();
            Ok(files)
        })
        .collect()
}

/// Where two outcomes differ, said so a person can see it.
fn disagreement(ours: &Outcome, theirs: &Outcome) -> Option<String> {
    match (ours, theirs) {
        (Err(_), Err(_)) => None,
        (Ok(a), Err(e)) => Some(format!(
            "the reference refused ({e}), lxgate made {} files",
            a.len()
        )),
        (Err(e), Ok(b)) => Some(format!(
            "lxgate refused ({e}), the reference made {} files: {:?}",
            b.len(),
            b.iter().map(|f| &f.0).collect::<Vec<_>>()
        )),
        (Ok(a), Ok(b)) => {
            let an: Vec<_> = a.iter().map(|f| &f.0).collect();
            let bn: Vec<_> = b.iter().map(|f| &f.0).collect();
            if an != bn {
                return Some(format!(
                    "names differ:\n lxgate    {an:?}\n reference {bn:?}"
                ));
            }
            a.iter().zip(b).find(|(x, y)| x.1 != y.1).map(|(x, y)| {
                format!(
                    "{} differs:\n--- lxgate\n{}\n--- reference\n{}",
                    x.0,
                    String::from_utf8_lossy(&x.1),
                    String::from_utf8_lossy(&y.1)
                )
            })
        }
    }
}

fn files_of(o: &Outcome) -> &[(String, Vec<u8>)] {
    o.as_ref().map(Vec::as_slice).unwrap_or(&[])
}

fn file<'a>(o: &'a Outcome, name: &str) -> &'a str {
    let f = files_of(o).iter().find(|f| f.0 == name).unwrap_or_else(|| {
        panic!(
            "no {name} in {:?}",
            files_of(o).iter().map(|f| &f.0).collect::<Vec<_>>()
        )
    });
    std::str::from_utf8(&f.1).unwrap()
}

fn sidecar(o: &Outcome, name: &str) -> serde_json::Value {
    serde_json::from_str(file(o, name)).unwrap()
}

fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    sample::zip(
        &entries
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_vec()))
            .collect::<Vec<_>>(),
    )
}

/// The header of a `cwd` table (text column pmdAnam), the bundles' most used table.
const CWD: &str = "PatientNr\tFallNr\tDokumentzeit\tDokumentnummer\tDokumentversion\tpmdAnam\n";
