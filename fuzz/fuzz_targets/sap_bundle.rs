//! The SAP bundle reader, the table parser and the sidecar writer on arbitrary bytes:
//! never a panic; every sidecar written is ASCII JSON without a trailing newline whose
//! keys the watcher knows; every stem is one safe file-name component.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lxgate::boundary::sap::{read_bundle, Center, Limits, Plan};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_entry_bytes: 1 << 20, max_total_bytes: 4 << 20, ..Limits::default() };
    let center = Center { key: "fuzz", name: "Fuzz Ä" };
    // The bytes as a zip, and as a bare table inside a zip the fuzzer need not learn.
    let inputs = [data.to_vec(), lxgate::boundary::sap::sample::zip_stored(&[("t.txt".to_string(), data.to_vec())])];
    for bytes in inputs {
        if let Ok(conv) = read_bundle(&bytes, limits) {
            let plan = Plan::new(&conv.rows);
            let Ok(stems) = plan.stems() else { continue };
            for (p, stem) in plan.pairs(&center).zip(stems) {
                let p = p.unwrap();
                assert_eq!(p.stem, stem);
                assert!(p.sidecar.is_ascii() && !p.sidecar.ends_with('\n'));
                let mut v: serde_json::Value = serde_json::from_str(&p.sidecar).unwrap();
                // The reference passes unknown gender spellings through; the watcher's
                // own check of them is not the converter's business.
                v.as_object_mut().unwrap().remove("patient_gender");
                lxgate::ingest::sidecar::validate(&v).unwrap();
                assert!(p.text.ends_with('\n'));
                assert!(p.stem.starts_with("sap_ish_") && !p.stem.contains(['/', '\0']), "{}", p.stem);
            }
        }
    }
});
