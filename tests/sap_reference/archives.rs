//! Archive shapes (name encodings, streamed entries) converted or refused alike, and
//! the deliberate differences: what the reference converts and lxgate refuses.
use super::*;

/// Clear the "name is UTF-8" flag everywhere: the reference then reads names as cp437.
fn unmark_utf8(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for i in 0..out.len().saturating_sub(10) {
        if out[i..i + 4] == *b"PK\x03\x04" {
            out[i + 7] &= !0x08;
        } else if out[i..i + 4] == *b"PK\x01\x02" {
            out[i + 9] &= !0x08;
        }
    }
    out
}

/// A zip written to a pipe by Python's zipfile: every entry has a data descriptor.
fn streamed_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let script = "import sys, zipfile, json\n\
        class Pipe:\n\
        \x20   def __init__(self): self.b = bytearray()\n\
        \x20   def write(self, d): self.b += d; return len(d)\n\
        \x20   def flush(self): pass\n\
        p = Pipe()\n\
        with zipfile.ZipFile(p, 'w', zipfile.ZIP_DEFLATED) as z:\n\
        \x20   for name, hexdata in json.load(sys.stdin):\n\
        \x20       z.writestr(name, bytes.fromhex(hexdata))\n\
        sys.stdout.buffer.write(p.b)\n";
    let input: Vec<(String, String)> = entries
        .iter()
        .map(|(n, b)| {
            (
                n.to_string(),
                b.iter().map(|x| format!("{x:02x}")).collect(),
            )
        })
        .collect();
    let mut child = reference::python()
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.windows(4).any(|w| w == b"PK\x07\x08"),
        "no data descriptor"
    );
    out.stdout
}

/// Archive shapes: lxgate and the reference convert or refuse alike.
#[test]
fn archive_shapes_agree() {
    let table = format!("{CWD}P1\tF1\t2024-01-01\tD1\t1\tText\n");
    let t = table.as_bytes();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        // (label, bundle, converts)
        (
            "streamed with data descriptors",
            streamed_zip(&[("a.txt", t), ("b/c.txt", t)]),
            true,
        ),
        (
            "cp437 names",
            unmark_utf8(&zip(&[("Ärzte/Übersicht.txt", t)])),
            true,
        ),
        (
            "stored",
            sample::zip_stored(&[("x.txt".into(), t.to_vec())]),
            true,
        ),
        (
            "dot components",
            zip(&[("./a/./b.txt", t), ("a//c.txt", t)]),
            true,
        ),
        (
            "same file after dropping dots",
            zip(&[("a/./b.txt", t), ("a/b.txt", t)]),
            false,
        ),
        ("file and folder", zip(&[("a", t), ("a/b.txt", t)]), false),
        ("folder named .txt", zip(&[("x.txt/b.txt", t)]), false),
        ("backslash", zip(&[("a\\b.txt", t)]), false),
        ("colon", zip(&[("c:b.txt", t)]), false),
        ("dot-dot", zip(&[("a/../b.txt", t)]), false),
        ("only a PDF", zip(&[("a.pdf", t)]), false),
    ];
    let bundles: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    let reference = theirs(&bundles);
    for ((label, bytes, converts), r) in cases.iter().zip(&reference) {
        let m = ours(bytes);
        assert_eq!(disagreement(&m, r), None, "{label}");
        assert_eq!(m.is_ok(), *converts, "{label}: {:?}", m.as_ref().err());
    }
    let cp437 = ours(&bundles[1]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&cp437[0].1).unwrap();
    assert_eq!(v["raw_columns"]["source_files"][0], "├£bersicht.txt");
}

/// Where lxgate is stricter than the reference (docs/sap-import.md lists each case):
/// the reference converts these, lxgate refuses them with a reason.
#[test]
fn deliberate_differences_are_refusals() {
    let table = format!("{CWD}P1\tF1\t2024-01-01\tD1\t1\tText\n");
    let good = zip(&[("a.txt", table.as_bytes())]);
    let prefixed = [b"MZ\x90\x00SFX".as_slice(), &good].concat();
    let bomb = zip(&[
        ("a.txt", table.as_bytes()),
        ("pad.bin", &vec![0u8; 3 << 20]),
    ]);
    let cases = [
        ("self-extractor stub", prefixed, "self-extractor stub"),
        ("zip bomb", bomb, "zip bomb"),
    ];
    let reference = theirs(&cases.iter().map(|c| c.1.clone()).collect::<Vec<_>>());
    for ((label, bytes, reason), r) in cases.iter().zip(&reference) {
        assert!(r.is_ok(), "{label}: the reference converts it ({r:?})");
        let err = ours(bytes).expect_err(label);
        assert!(err.contains(reason), "{label}: {err}");
    }
}
