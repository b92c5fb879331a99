//! lxgate's age implementation against the real `age` CLI, both ways, across chunk
//! boundaries: what lxgate seals, age opens, and what age seals, lxgate opens.
mod common;
use common::*;
use lxgate::crypto::age::{decrypt, encrypt, Identity, Recipient};
use std::io::Write;
use std::process::{Command, Stdio};

fn need_age() {
    assert!(
        Command::new("age").arg("--version").output().is_ok(),
        "the age CLI is missing: apt-get install -y age"
    );
}

fn age(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut c = Command::new("age")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed stdin from a thread: age writes while it reads, and a full stdout pipe that
    // nobody drains would block both.
    let mut input = c.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || input.write_all(&data));
    let o = c.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        o.status.success(),
        "age {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

#[test]
fn lxgate_and_the_age_cli_open_each_others_files() {
    need_age();
    let t = tempdir();
    let id = Identity::generate();
    let key = t.path().join("master.age");
    std::fs::write(
        &key,
        format!(
            "# created: test\n{}\n",
            lxgate::crypto::age::ExposeSecret::expose_secret(&id.to_secret_string())
        ),
    )
    .unwrap();
    let recipient = id.recipient().to_string();
    for len in [0usize, 1, 65_535, 65_536, 65_537, 300_000] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
        let mut sealed = Vec::new();
        encrypt(&id.recipient(), &mut plain.as_slice(), &mut sealed).unwrap();
        let sealed_path = t.path().join("x.age");
        std::fs::write(&sealed_path, &sealed).unwrap();
        let opened = age(
            &[
                "-d",
                "-i",
                key.to_str().unwrap(),
                sealed_path.to_str().unwrap(),
            ],
            b"",
        );
        assert_eq!(opened, plain, "age opened lxgate's {len} bytes");

        let theirs = age(&["-r", &recipient], &plain);
        let mut back = Vec::new();
        decrypt(&id, &mut theirs.as_slice(), &mut back).unwrap();
        assert_eq!(back, plain, "lxgate opened age's {len} bytes");
    }
}

#[test]
fn keys_from_age_keygen_are_read_as_age_reads_them() {
    need_age();
    let t = tempdir();
    let key = t.path().join("k.txt");
    run_ok(
        Command::new("age-keygen")
            .arg("-o")
            .arg(&key)
            .stderr(Stdio::null()),
        "age-keygen",
    );
    let expected = String::from_utf8(
        run_ok(
            Command::new("age-keygen").arg("-y").arg(&key),
            "age-keygen -y",
        )
        .stdout,
    )
    .unwrap();
    let id = Identity::from_file(&key).unwrap();
    assert_eq!(id.recipient().to_string(), expected.trim());
    assert_eq!(Recipient::parse(expected.trim()).unwrap(), id.recipient());
}
