//! Under systemd, log entries go to journald with their fields as journal fields, so
//! `journalctl JOB_ID=<id>` finds a job's lines. The journal here is a real datagram
//! socket this test binds, mounted at journald's path (/run/systemd/journal/socket) in a
//! private mount namespace of the child (`unshare -m`, root), and read in journald's
//! native protocol; the host's own journal is never touched.
mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Output;

/// One journal entry: field name → value (a repeated name keeps the last).
type Entry = BTreeMap<String, String>;

/// Parse one native-protocol datagram: `NAME=value\n`, or `NAME\n` + little-endian u64
/// length + value + `\n` for values that may hold newlines.
fn parse(mut d: &[u8]) -> Entry {
    let mut e = Entry::new();
    while !d.is_empty() {
        let nl = d
            .iter()
            .position(|&b| b == b'\n')
            .expect("field ends in newline");
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            e.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            d = &d[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &d[nl + 9..nl + 9 + len];
            assert_eq!(d[nl + 9 + len], b'\n', "value of {name} ends in newline");
            e.insert(name, String::from_utf8_lossy(value).into_owned());
            d = &d[nl + 10 + len..];
        }
    }
    e
}

struct Journal {
    dir: tempfile::TempDir,
    socket: UnixDatagram,
}

impl Journal {
    fn bind() -> Journal {
        let dir = tempdir();
        let socket = UnixDatagram::bind(dir.path().join("socket")).unwrap();
        socket.set_nonblocking(true).unwrap();
        Journal { dir, socket }
    }

    /// Run lxgate with `args` where /run/systemd/journal is this journal, stderr going to
    /// `stderr`, and JOURNAL_STREAM set by `stream` from that file's device and inode.
    fn run(
        &self,
        site: &Site,
        args: &[&str],
        stderr: &Path,
        stream: impl Fn(&std::fs::Metadata) -> Option<String>,
    ) -> Output {
        let err = std::fs::File::create(stderr).unwrap();
        let mut env = site.env();
        let value = stream(&err.metadata().unwrap());
        if let Some(v) = &value {
            env.push(("JOURNAL_STREAM", v));
        }
        // A private /run: the child sees our socket where journald's would be.
        let script = r#"mount -t tmpfs lxgate-test /run && mkdir -p /run/systemd/journal && mount --bind "$0" /run/systemd/journal && exec "$@""#;
        let mut c = std::process::Command::new("unshare");
        c.args(["-m", "sh", "-c", script])
            .arg(self.dir.path())
            .arg(bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            c.env(k, v);
        }
        c.stderr(err);
        let o = c.output().expect("run unshare (util-linux)");
        assert!(
            o.status.success(),
            "lxgate {args:?} failed: {}",
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
        o
    }

    fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = self.socket.recv(&mut buf) {
            if n > 0 {
                out.push(parse(&buf[..n]));
            }
        }
        out
    }
}

fn dev_ino(m: &std::fs::Metadata) -> Option<String> {
    Some(format!("{}:{}", m.dev(), m.ino()))
}

#[test]
fn under_systemd_a_jobs_lines_carry_its_id_as_a_journal_field() {
    let (s, import) = Site::with_center_a("[watcher]\nsettle_ms = 50\n");
    let journal = Journal::bind();
    let err = s.dir.path().join("watch.err");

    drop_file(&import.join("video_import"), "clip.mp4", b"video bytes");
    journal.run(&s, &["watch", "--once"], &err, dev_ino);
    let job: uuid::Uuid = s.sql("SELECT id FROM upload_jobs")[0].get(0);
    let entries = journal.entries();
    let of_job: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.get("JOB_ID") == Some(&job.to_string()))
        .collect();
    assert_eq!(of_job.len(), 1, "{entries:#?}");
    let e = of_job[0];
    for (k, v) in [
        ("MESSAGE", "watcher"),
        ("BOUNDARY", "watcher"),
        ("OUTCOME", "accepted"),
        ("SYSLOG_IDENTIFIER", "lxgate"),
        ("PRIORITY", "6"),
        ("TARGET", "lxgate::boundary::watch"),
    ] {
        assert_eq!(e.get(k).map(String::as_str), Some(v), "{k} in {e:#?}");
    }
    // The journal has the lines; stderr does not repeat them.
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(!text.contains(&job.to_string()), "{text}");

    // Not under systemd, or JOURNAL_STREAM inherited from a unit but stderr elsewhere:
    // plain text on stderr, nothing to the journal.
    for stream in [None, Some("1:1".to_string())] {
        drop_file(&import.join("video_import"), "other.mp4", b"other bytes");
        journal.run(&s, &["watch", "--once"], &err, |_| stream.clone());
        assert!(journal.entries().is_empty(), "JOURNAL_STREAM={stream:?}");
        let text = std::fs::read_to_string(&err).unwrap();
        assert!(
            text.contains("boundary=\"watcher\"") && text.contains("job_id="),
            "JOURNAL_STREAM={stream:?}: {text}"
        );
    }
}
