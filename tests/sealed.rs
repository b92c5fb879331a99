//! Reports and preanonymized pairs sealed at rest (nix/contract.toml [storage]): no
//! plaintext byte on disk, the age CLI opens what lxgate sealed, byte ranges served by
//! the app (directly and through the real nginx), audit --verify, doctor, and a key
//! rotation killed at random points.
mod common;
use common::edge::{Nginx, Pki};
use common::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A report of about 600 KiB (ten age chunks) with `marker` on every line.
fn report(marker: &str) -> Vec<u8> {
    let mut b = b"%PDF-1.4\n".to_vec();
    let mut i = 0;
    while b.len() < 600 * 1024 {
        b.extend_from_slice(format!("{marker} line {i} of a report about nobody\n").as_bytes());
        i += 1;
    }
    b
}

fn marker() -> String {
    format!("MARKER{}", uuid::Uuid::new_v4().simple())
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `root` whose bytes contain `marker`.
fn holding(root: &Path, marker: &str) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| contains(&b, marker)))
        .collect()
}

/// The age CLI (Debian's `age`) opening `file` with the identity files given.
fn age_open(keys: &[&Path], file: &Path) -> Result<Vec<u8>, String> {
    let mut c = Command::new("age");
    c.arg("-d");
    for k in keys {
        c.arg("-i").arg(k);
    }
    let o = c.arg(file).output().expect("age (apt-get install age)");
    if o.status.success() {
        Ok(o.stdout)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// A body that arrives in 64 KiB pieces a few ms apart, so the staging file exists and
/// grows while the upload is under way.
struct Slow {
    data: Vec<u8>,
    at: usize,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at >= self.data.len() {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(5));
        let n = buf.len().min(64 * 1024).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// inotify on managed storage's tmp/: on every event, the named file is read and
/// searched for the marker. What it saw: (events on staging files, files with plaintext).
struct StagingWatch {
    _w: notify::RecommendedWatcher,
    seen: Arc<Mutex<(usize, Vec<PathBuf>)>>,
}

impl StagingWatch {
    fn start(tmp: &Path, marker: &str) -> StagingWatch {
        use notify::Watcher as _;
        std::fs::create_dir_all(tmp).unwrap();
        let seen = Arc::new(Mutex::new((0usize, Vec::new())));
        let s = seen.clone();
        let marker = marker.to_string();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            for p in ev.paths {
                let mut s = s.lock().unwrap();
                s.0 += 1;
                if !s.1.contains(&p) && std::fs::read(&p).is_ok_and(|b| contains(&b, &marker)) {
                    s.1.push(p);
                }
            }
        })
        .unwrap();
        w.watch(tmp, notify::RecursiveMode::NonRecursive).unwrap();
        StagingWatch { _w: w, seen }
    }

    fn result(&self) -> (usize, Vec<PathBuf>) {
        let s = self.seen.lock().unwrap();
        (s.0, s.1.clone())
    }
}

/// GET with an optional Range: status, Content-Range, body.
fn get(url: &str, token: &str, range: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut r = http()
        .get(url)
        .set("Authorization", &format!("Bearer {token}"));
    if let Some(range) = range {
        r = r.set("Range", range);
    }
    let resp = match r.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let cr = resp.header("content-range").map(str::to_string);
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    (status, cr, body)
}

/// The ranges every media client relies on, against the plaintext `plain`.
fn check_ranges(fetch: impl Fn(Option<&str>) -> (u16, Option<String>, Vec<u8>), plain: &[u8]) {
    let len = plain.len();
    let (s, _, body) = fetch(None);
    assert_eq!(s, 200);
    assert!(body == plain, "the whole object");
    let (s, cr, body) = fetch(Some("bytes=0-0"));
    assert_eq!(
        (s, cr.as_deref()),
        (206, Some(&*format!("bytes 0-0/{len}")))
    );
    assert_eq!(body, &plain[..1]);
    // Across an age chunk boundary (64 KiB), in the middle.
    let (a, b) = (len / 2 - 70_000, len / 2 + 70_000);
    let (s, cr, body) = fetch(Some(&format!("bytes={a}-{b}")));
    assert_eq!(
        (s, cr.as_deref()),
        (206, Some(&*format!("bytes {a}-{b}/{len}")))
    );
    assert!(body == plain[a..=b], "middle range");
    let (s, cr, body) = fetch(Some("bytes=-1"));
    assert_eq!(
        (s, cr.as_deref()),
        (206, Some(&*format!("bytes {}-{}/{len}", len - 1, len - 1)))
    );
    assert_eq!(body, &plain[len - 1..]);
    let (s, cr, _) = fetch(Some(&format!("bytes={len}-")));
    assert_eq!((s, cr.as_deref()), (416, Some(&*format!("bytes */{len}"))));
}

fn object_of(site: &Site, job: &serde_json::Value) -> PathBuf {
    site.data()
        .join("storage")
        .join(job["storage_path"].as_str().unwrap())
}

#[test]
fn reports_from_the_api_and_the_watcher_are_sealed_and_no_plaintext_reaches_the_disk() {
    let (site, import) = Site::with_center_a("[watcher]\nsettle_ms = 50\n");
    let srv = Server::start(&site);
    let tok = site.token("uploader", Some("A"), "up");
    let marker = marker();
    let watch = StagingWatch::start(&site.data().join("storage/tmp"), &marker);

    // The API, as a chunked body arriving over time.
    let api_body = report(&marker);
    let (s, job) = call(
        http()
            .post(&srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set("X-Filename", "befund.pdf")
            .set("X-Kind", "report")
            .send(Slow {
                data: api_body.clone(),
                at: 0,
            }),
    );
    assert_eq!(s, 201, "{job}");
    assert_eq!(job["stored_as"], "age");
    assert_eq!(
        job["content_hash"],
        hex::encode(Sha256::digest(&api_body)),
        "the content hash is the plaintext's"
    );
    assert_eq!(job["size_bytes"], api_body.len());
    // As the lx-annotate frontend sends it: `file` first, no kind; its first bytes say
    // report, so it is staged sealed from the first byte.
    let mut form_body = report(&marker);
    form_body.extend_from_slice(b"the frontend's copy\n");
    let (s, form_job) = post_form(
        &srv,
        &tok,
        &[
            ("file", Some("brief.pdf"), &form_body),
            ("center_key", None, b"A"),
        ],
    );
    assert_eq!(
        (s, form_job["kind"].as_str()),
        (201, Some("report")),
        "{form_job}"
    );
    assert_eq!(form_job["stored_as"], "age");

    // The watcher.
    let mut drop_body = report(&marker);
    drop_body.extend_from_slice(b"the watcher's copy\n");
    drop_file(&import.join("report_import"), "dropped.pdf", &drop_body);
    // A preanonymized pair: carrier and sidecar both carry the marker.
    let pre = import.join("preanonymized_import");
    drop_file(
        &pre,
        "n.txt",
        format!("{marker} preanonymized text\n").as_bytes(),
    );
    let sidecar = format!(r#"{{"external_id":"{marker}","text":"{marker}","center_key":"A"}}"#);
    drop_file(&pre, "n.json", sidecar.as_bytes());
    site.ok(&["watch", "--once"]);
    let pair = site
        .sql("SELECT provenance::text, sidecar_path FROM upload_jobs WHERE kind = 'preanonymized'");
    let (prov, sidecar_rel): (String, String) = (pair[0].get(0), pair[0].get(1));
    assert!(
        !prov.contains(&marker),
        "the sidecar's content stays out of the database: {prov}"
    );
    let opened = age_open(
        &[&site.master_key()],
        &site.data().join("storage").join(sidecar_rel),
    )
    .unwrap();
    assert_eq!(opened, sidecar.as_bytes());
    let rows = site.sql(
        "SELECT storage_path, stored_as, sealed_to FROM upload_jobs WHERE original_name = 'dropped.pdf'",
    );
    let (dropped_rel, stored_as, sealed_to): (String, String, String) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!(stored_as, "age");
    let recipient = site.ok(&["keys", "recipient"]);
    assert_eq!(sealed_to, recipient.trim());

    // Nowhere on disk, then or now.
    let (events, caught) = watch.result();
    assert!(events > 0, "inotify saw the staging files");
    assert!(caught.is_empty(), "plaintext in staging: {caught:?}");
    assert_eq!(holding(&site.data(), &marker), Vec::<PathBuf>::new());

    // The age CLI opens both with the master identity.
    let key = site.master_key();
    assert!(age_open(&[&key], &object_of(&site, &job)).unwrap() == api_body);
    assert!(age_open(&[&key], &object_of(&site, &form_job)).unwrap() == form_body);
    let dropped = site.data().join("storage").join(&dropped_rel);
    assert!(age_open(&[&key], &dropped).unwrap() == drop_body);

    // Served by the app with ranges, to the same authorization as any media.
    let url = srv.url(&format!("/api/media/{}", job["id"].as_str().unwrap()));
    check_ranges(|r| get(&url, &tok, r), &api_body);
    let other = {
        site.ok(&["center", "add", "B", "--name", "B"]);
        site.token("viewer", Some("B"), "view-b")
    };
    assert_eq!(get(&url, &other, None).0, 404);
    assert_eq!(get(&url, "wrong", None).0, 401);

    // A video keeps the nginx fast path.
    let (s, video) = post(&srv, &tok, "clip.mp4", "video", b"not really a video");
    assert_eq!((s, video["stored_as"].as_str()), (201, Some("plain")));
    let r = http()
        .get(&srv.url(&format!("/api/media/{}", video["id"].as_str().unwrap())))
        .set("Authorization", &format!("Bearer {tok}"))
        .call()
        .unwrap();
    assert!(r.header("x-accel-redirect").is_some());

    // audit --verify opens sealed objects; one altered byte is damage.
    site.ok(&["storage", "audit", "--verify"]);
    let mut bytes = std::fs::read(&dropped).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&dropped, &bytes).unwrap();
    let plain_audit = site.run(&["storage", "audit"]);
    assert!(plain_audit.status.success(), "sizes alone still agree");
    let o = site.run(&["storage", "audit", "--verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&dropped_rel) && stdout(&o).contains("does not decrypt"),
        "{}",
        stdout(&o)
    );
}

fn post_form(
    srv: &Server,
    tok: &str,
    parts: &[(&str, Option<&str>, &[u8])],
) -> (u16, serde_json::Value) {
    let (ct, body) = multipart(parts);
    call(
        http()
            .post(&srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set("Content-Type", &ct)
            .send_bytes(&body),
    )
}

/// A kind field after the file (lxgate's own field; the reference has none) comes too
/// late to choose the form the file is staged in: the form follows the file's first
/// bytes and name, and what it must be then follows the kind field.
#[test]
fn a_kind_field_after_the_file_never_leaves_a_sealed_kind_plain() {
    let (site, _) = Site::with_center_a("");
    let srv = Server::start(&site);
    let tok = site.token("uploader", Some("A"), "up");
    let marker = marker();
    // Neither content nor name says a kind: staged sealed, then opened into the plain
    // form the later kind field's policy keeps.
    let odd = format!("{marker} no known type").into_bytes();
    let (s, v) = post_form(
        &srv,
        &tok,
        &[
            ("file", Some("capture.bin"), &odd),
            ("kind", None, b"video"),
        ],
    );
    assert_eq!(
        (s, v["kind"].as_str(), v["stored_as"].as_str()),
        (201, Some("video"), Some("plain")),
        "{v}"
    );
    assert_eq!(std::fs::read(object_of(&site, &v)).unwrap(), odd);
    // A PDF declared a video after the fact: sealed while staged, stored plain.
    let pdf = report(&marker);
    let (s, v) = post_form(
        &srv,
        &tok,
        &[("file", Some("scan.pdf"), &pdf), ("kind", None, b"video")],
    );
    assert_eq!((s, v["stored_as"].as_str()), (201, Some("plain")), "{v}");
    // A video declared a report after the fact: it was staged plain, so it is refused
    // rather than stored as a report, and nothing of it stays.
    let mut mp4 = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
    mp4.extend_from_slice(format!("{marker} frames").as_bytes());
    let (s, e) = post_form(
        &srv,
        &tok,
        &[("file", Some("clip.mp4"), &mp4), ("kind", None, b"report")],
    );
    assert_eq!(
        (s, e["code"].as_str()),
        (400, Some("kind_after_file")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("kind field before the file"),
        "{e}"
    );
    assert_eq!(
        site.count("SELECT count(*) FROM upload_jobs WHERE original_name = 'clip.mp4'"),
        0
    );
    assert_eq!(
        std::fs::read_dir(site.data().join("storage/tmp"))
            .unwrap()
            .count(),
        0
    );
    // Sent first, the same kind field seals it from the first byte.
    let (s, v) = post_form(
        &srv,
        &tok,
        &[("kind", None, b"report"), ("file", Some("clip.mp4"), &mp4)],
    );
    assert_eq!((s, v["stored_as"].as_str()), (201, Some("age")), "{v}");
    assert_eq!(
        holding(&site.data(), &marker).len(),
        2,
        "the two plain videos only"
    );
}

fn post(srv: &Server, tok: &str, name: &str, kind: &str, body: &[u8]) -> (u16, serde_json::Value) {
    call(
        http()
            .post(&srv.url("/api/upload/"))
            .set("Authorization", &format!("Bearer {tok}"))
            .set("X-Filename", name)
            .set("X-Kind", kind)
            .send_bytes(body),
    )
}

#[test]
fn the_policy_is_per_kind_and_settings_change_it() {
    let (site, _) = Site::with_center_a("[storage]\nreport = \"plain\"\nvideo = \"sealed\"\n");
    let srv = Server::start(&site);
    let tok = site.token("uploader", Some("A"), "up");
    let (_, r) = post(&srv, &tok, "r.pdf", "report", b"a report kept plain");
    let (_, v) = post(&srv, &tok, "v.mp4", "video", b"a video kept sealed");
    let (_, p) = post(&srv, &tok, "p.txt", "preanonymized", b"preanonymized text");
    assert_eq!(r["stored_as"], "plain");
    assert_eq!(v["stored_as"], "age");
    assert_eq!(p["stored_as"], "age", "the contract's default");
    assert!(v["storage_path"].as_str().unwrap().ends_with(".age"));
    // A value that is neither is refused when the settings load.
    let bad = site.dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\nreport = \"encrypted\"\n").unwrap();
    let o = lxgate(
        &["--config", bad.to_str().unwrap(), "config", "check"],
        &site.env(),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("plain") && stderr(&o).contains("sealed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_sealed_object_is_served_with_ranges_through_the_real_nginx() {
    let mut site = Site::new("standalone");
    let pki = Pki::new(&site.dir.path().join("pki"));
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(
        &cfg,
        format!("role = \"standalone\"\n{}", pki.host_settings()),
    )
    .unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    let srv = Server::start(&site);
    let nginx = Nginx::rendered(&site, &srv);
    let tok = site.token("uploader", Some("A"), "up");
    // Text, so curl's body comes back as the same string.
    let plain = report(&marker());
    let (s, job) = post(&srv, &tok, "r.pdf", "report", &plain);
    assert_eq!((s, job["stored_as"].as_str()), (201, Some("age")));
    let path = format!("/api/media/{}", job["id"].as_str().unwrap());
    let ca = pki.path("hub-ca.crt");
    let hdr = site.dir.path().join("headers");
    let fetch = |range: Option<&str>| {
        let auth = format!("Authorization: Bearer {tok}");
        let mut args = vec!["-H", &auth, "-D", hdr.to_str().unwrap()];
        let r;
        if let Some(range) = range {
            r = format!("Range: {range}");
            args.extend(["-H", &r]);
        }
        let (status, body) = nginx.curl(&ca, &path, &args, None);
        let headers = std::fs::read_to_string(&hdr).unwrap();
        let cr = headers.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-range:")
                .map(|v| v.trim().to_string())
        });
        (status, cr, body.into_bytes())
    };
    check_ranges(fetch, &plain);
}

/// Every sealed object under `site`'s storage: (path, its plaintext's sha256 by name).
fn sealed_objects(site: &Site) -> Vec<(PathBuf, String)> {
    let root = site.data().join("storage/objects");
    files_under(&root)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "age"))
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = rel.trim_end_matches(".age").replace('/', "");
            (p, name)
        })
        .collect()
}

/// Each sealed object opens with one of `keys` (the age CLI) to the plaintext its name
/// says.
fn all_open_with(site: &Site, keys: &[&Path]) {
    for (p, name) in sealed_objects(site) {
        let plain = age_open(keys, &p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(hex::encode(Sha256::digest(&plain)), name, "{}", p.display());
    }
}

#[test]
fn a_rotation_killed_at_random_points_finishes_on_rerun_and_every_object_opens_with_the_new_key() {
    use rand::Rng;
    let (site, import) = Site::with_center_a("[watcher]\nsettle_ms = 0\nconcurrency = 8\n");
    for i in 0..40 {
        let body: Vec<u8> = format!("report {i} ")
            .bytes()
            .cycle()
            .take(150_000 + i * 1000)
            .collect();
        drop_file(&import.join("report_import"), &format!("r{i}.pdf"), &body);
    }
    drop_file(
        &import.join("video_import"),
        "v.mp4",
        b"a plain video stays plain",
    );
    site.ok(&["watch", "--once"]);
    let objects = sealed_objects(&site);
    assert_eq!(objects.len(), 40);
    let key = site.master_key();
    let next = key.with_file_name("master.age.next");
    let sealed_to = |s: &Site| -> Vec<String> {
        s.sql("SELECT DISTINCT sealed_to FROM upload_jobs WHERE sealed_to IS NOT NULL")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };

    // A full run first: how long one takes, where the kills are aimed.
    let before = site.ok(&["keys", "recipient"]);
    let started = Instant::now();
    let o = site.run(&["keys", "rotate"]);
    let full = started.elapsed();
    assert!(o.status.success(), "keys rotate: {}", stderr(&o));
    // Not a terminal: no bar, a summary line in the log instead (issue 21).
    let log = stderr(&o);
    assert!(
        log.contains("keys rotate: re-sealing: 40 files,") && !log.contains('\r'),
        "{log}"
    );
    let after = site.ok(&["keys", "recipient"]);
    assert_ne!(before, after);
    assert_eq!(sealed_to(&site), vec![after.trim().to_string()]);
    all_open_with(&site, &[&key]);

    let mut rng = rand::thread_rng();
    let mut interrupted = 0;
    // Twenty runs killed mid-way (one that finished before its kill does not count).
    let mut trial = 0;
    while interrupted < 20 {
        trial += 1;
        assert!(
            trial <= 100,
            "only {interrupted} of {trial} runs were still running at their kill"
        );
        let log = site.dir.path().join(format!("rotate-{trial}.log"));
        let mut p = Proc::spawn(&["keys", "rotate"], &site.env(), &log);
        let at =
            Duration::from_micros(rng.gen_range(0..(full.as_micros() as u64 * 12 / 10).max(1)));
        std::thread::sleep(at);
        if p.alive() {
            p.kill9();
            interrupted += 1;
        }
        // Whatever state the kill left: every object opens with the identities the
        // host has, and no temp file is mistaken for an object.
        let mut have: Vec<&Path> = Vec::new();
        if key.exists() {
            have.push(&key);
        }
        if next.exists() {
            have.push(&next);
        }
        all_open_with(&site, &have);
        assert_eq!(sealed_objects(&site).len(), 40, "trial {trial}");
        // The rerun finishes it.
        site.ok(&["keys", "rotate"]);
        assert!(!next.exists(), "trial {trial}: rotation finished");
        all_open_with(&site, &[&key]);
        let now = site.ok(&["keys", "recipient"]);
        assert_eq!(
            sealed_to(&site),
            vec![now.trim().to_string()],
            "trial {trial}"
        );
    }
    // Every object still accounted for, with its plaintext intact.
    site.ok(&["storage", "audit", "--verify"]);
    // The retired identities are root-only.
    for f in std::fs::read_dir(key.parent().unwrap()).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.contains(".retired-") {
            use std::os::unix::fs::MetadataExt;
            let m = f.metadata().unwrap();
            assert_eq!(
                (m.mode() & 0o777, m.uid(), m.gid()),
                (0o400, 0, 0),
                "{name}"
            );
        }
    }
}

#[test]
fn doctor_names_objects_sealed_to_an_identity_the_host_no_longer_has() {
    let (site, import) = Site::with_center_a("[watcher]\nsettle_ms = 0\n");
    drop_file(&import.join("report_import"), "r.pdf", b"a report");
    site.ok(&["watch", "--once"]);
    let sealed = |site: &Site| -> (bool, String) {
        let o = site.run(&["doctor", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let c = v
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "sealed objects")
            .unwrap_or_else(|| panic!("no sealed objects check: {v}"))
            .clone();
        (
            c["ok"].as_bool().unwrap(),
            format!("{} {}", c["detail"], c["fix"]),
        )
    };
    let (ok, detail) = sealed(&site);
    assert!(ok, "{detail}");
    let old = site.ok(&["keys", "recipient"]);
    // The key is lost and replaced by a new one.
    let key = site.master_key();
    std::fs::remove_file(&key).unwrap();
    site.ensure_master_key(&key);
    let (ok, detail) = sealed(&site);
    assert!(!ok);
    assert!(
        detail.contains(old.trim()) && detail.contains("1 of 1"),
        "{detail}"
    );
}
