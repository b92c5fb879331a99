//! Realistic sample bundles for tests and fuzz seeds: several table types, umlauts in
//! cp1252 and UTF-8 (with and without BOM), dates in each accepted form.

use std::io::Write;

fn cp1252(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| match c {
            '€' => 0x80,
            c if (c as u32) < 0x100 => c as u32 as u8,
            _ => b'?',
        })
        .collect()
}

/// Tables as (path in the zip, bytes).
pub fn tables(patients: usize) -> Vec<(String, Vec<u8>)> {
    let mut cwd =
        String::from("PatientNr\tFallNr\tDokumentzeit\tDokumentnummer\tDokumentversion\tpmdAnam\n");
    let mut briefe = String::from("PatientNr\tFallNr\tdateErstellzeit\tstrText\n");
    let mut radio = String::from("PatientNr\tFallNr\tDokumentzeit\tDokumentnummer\tDokumentversion\tkurbefund\tbefund\tbeurteilung\n");
    let mut labor =
        String::from("PatientNr\tFallNr\tDokumentzeit\tLeistung\tLeistungstext\tMesswert\n");
    let mut stamm = String::from("PatientNr\tFallNr\tPatientAlter\tGeschlecht\n");
    let mut proz = String::from("PatientNr\tFallNr\tOPCode\tBeginnzeit\n");
    for p in 0..patients {
        let (pat, fall) = (format!("P{:05}", 1000 + p), format!("F{:07}", 5000 + p));
        stamm.push_str(&format!(
            "{pat}\t{fall}\t{}\t{}\n",
            30 + p % 50,
            ["M", "W", "D", "U"][p % 4]
        ));
        cwd.push_str(&format!("{pat}\t{fall}\t2024-03-{:02} 10:{:02}:00\tD{p}\t1\tAnamnese: Übelkeit seit {p} Tagen, Schmerzen im Oberbauch.\\nKeine Vorerkrankungen.\n", p % 28 + 1, p % 60));
        briefe.push_str(&format!("{pat}\t{fall}\t{:02}.04.2024 09:15\tSehr geehrte Kollegin, wir berichten über Herrn/Frau Müller-Lüdenscheidt. Größe 1,80 m. Befund unauffällig.\n", p % 28 + 1));
        if p % 2 == 0 {
            radio.push_str(&format!("{pat}\t{fall}\t2024-05-{:02}\tR{p}\t2\tKurz: o.B.\tSonographie: Leber homogen, Gallenblase zartwandig.\tKein Anhalt für Cholezystitis.\n", p % 28 + 1));
        }
        labor.push_str(&format!(
            "{pat}\t{fall}\t2024-03-01\tCRP\tC-reaktives Protein\t{}.{}\n",
            p % 20,
            p % 10
        ));
        // A case with no text-bearing row: gets its pair from the procedure anchor.
        proz.push_str(&format!(
            "{pat}\tF{:07}\t5-513.1\t01.06.2024 08:00\n",
            9000 + p
        ));
    }
    vec![
        ("export/cwd.txt".into(), cwd.into_bytes()),
        ("export/briefe.txt".into(), cp1252(&briefe)),
        (
            "export/radiologie.txt".into(),
            [b"\xEF\xBB\xBF".as_slice(), radio.as_bytes()].concat(),
        ),
        ("export/sub/labor.txt".into(), labor.into_bytes()),
        ("stammdaten.txt".into(), stamm.into_bytes()),
        ("prozeduren.txt".into(), proz.into_bytes()),
        ("readme.pdf".into(), b"%PDF not a table".to_vec()),
    ]
}

/// Zip the given entries (deflate).
pub fn zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    zip_with(entries, zip::CompressionMethod::Deflated)
}

/// Entries stored uncompressed: what the fuzz target wraps each input in, so that an
/// execution spends its time in the parser rather than in deflate.
pub fn zip_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    zip_with(entries, zip::CompressionMethod::Stored)
}

fn zip_with(entries: &[(String, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        w.start_file(name.as_str(), opts).expect("start entry");
        w.write_all(bytes).expect("write entry");
    }
    w.finish().expect("finish zip").into_inner()
}

pub fn bundle(patients: usize) -> Vec<u8> {
    zip(&tables(patients))
}
