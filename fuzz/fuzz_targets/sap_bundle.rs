//! The SAP bundle parser and the sidecar writer on arbitrary bytes: never a panic, and
//! every sidecar written is ASCII JSON that parses back to what was written and that the
//! watcher's validation accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lxgate::boundary::sap::{convert, convert_bundle, Center, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_entry_bytes: 1 << 20, max_total_bytes: 4 << 20, ..Limits::default() };
    let center = Center { key: "fuzz", name: "Fuzz Ä" };
    // The bytes as a zip, and as a bare table inside a zip the fuzzer need not learn.
    let inputs = [data.to_vec(), lxgate::boundary::sap::sample::zip_stored(&[("t.txt".to_string(), data.to_vec())])];
    for bytes in inputs {
        if let Ok(conv) = convert_bundle(&bytes, limits, &center) {
            for p in conv.pairs {
                let json = convert::sidecar_json(&p.sidecar);
                assert!(json.is_ascii());
                let back: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
                assert_eq!(back, p.sidecar);
                lxgate::ingest::sidecar::validate(&serde_json::to_value(&back).unwrap()).unwrap();
                assert!(p.stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{}", p.stem);
            }
        }
    }
});
