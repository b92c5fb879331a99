//! Media kept sealed at rest at the site: opened only inside the envelope, and its video
//! facts read by ffprobe through the loopback feed without plaintext on disk.
use super::*;

/// A video kept sealed by both sides' policy crosses opened inside the envelope and is
/// sealed again at the hub (reports, sealed by default, cross the same way:
/// reports_are_exported_with_their_text_as_the_report_rows).
#[test]
fn a_video_sealed_at_the_site_is_sent_opened_and_sealed_again_at_the_hub() {
    let f = fleet_with("[storage]\nvideo = \"sealed\"\n");
    seal_site_videos(&f);
    let marker = format!("MARKER{}", uuid::Uuid::new_v4().simple());
    let body: Vec<u8> = format!("{marker} a clip's bytes\n")
        .bytes()
        .cycle()
        .take(300_000)
        .collect();
    let (job, hash) = site_job(&f, "sealed.mp4", &body);
    assert_eq!(site_stored_as(&f, &job), "age", "sealed at the site");
    f.site.ok(&["hub-export", "mark", &job]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        hub_counts(&f, &hash),
        (1, 1),
        "the hub has the plaintext's hash"
    );
    let r = f.hub.sql(&format!(
        "SELECT storage_path, stored_as FROM upload_jobs WHERE content_hash = '{hash}'"
    ));
    let (stored, form): (String, String) = (r[0].get(0), r[0].get(1));
    assert_eq!(form, "age", "sealed again at the hub, to the hub's key");
    assert!(
        hub_plaintext(&f, &stored).as_deref() == Some(&body[..]),
        "age -d at the hub"
    );
    for site in [&f.site, &f.hub] {
        let plain: Vec<PathBuf> = files_under(&site.data())
            .into_iter()
            .filter(|p| {
                std::fs::read(p)
                    .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
            })
            .collect();
        assert!(plain.is_empty(), "plaintext on disk: {plain:?}");
    }
}

/// A sealed video's facts are what ffprobe reads from the plain file, for an MP4 whose
/// index (moov) follows the media: ffmpeg's default, which a pipe cannot probe (it needs
/// seeking). ffprobe reads the opened object through the loopback feed (feed.rs), and
/// no plaintext reaches the disk.
#[test]
fn a_sealed_video_exports_the_facts_ffprobe_reads_from_the_plain_file() {
    let f = fleet();
    seal_site_videos(&f);
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("moov-last.mp4");
    run_ok(
        std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg("testsrc=size=320x240:rate=25:duration=4")
            .args(["-c:v", "mpeg4", "-q:v", "1", "-pix_fmt", "yuv420p"])
            .arg(&clip),
        "ffmpeg",
    );
    let body = std::fs::read(&clip).unwrap();
    let at = |b: &[u8]| body.windows(4).position(|w| w == b).unwrap();
    assert!(
        at(b"moov") > at(b"mdat"),
        "ffmpeg put the index after the media"
    );
    let plain = lxgate::boundary::hub_export::video_facts(
        &clip,
        lxgate::config::AtRest::Plain,
        &lxgate::crypto::keyring::MasterKeys::new(f.site.master_key()),
    )
    .expect("ffprobe reads the plain file");
    assert_eq!(
        (plain.width, plain.height, plain.frame_count),
        (Some(320), Some(240), Some(100))
    );

    let (job, hash) = site_job(&f, "moov-last.mp4", &body);
    assert_eq!(site_stored_as(&f, &job), "age", "sealed at the site");
    f.site.ok(&["hub-export", "mark", &job]);
    let (code, err) = run(&f);
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub_counts(&f, &hash), (1, 1));
    let rows: serde_json::Value = f.hub.sql(&format!(
        "SELECT resource_rows FROM transfers WHERE resource_hash = '{hash}'"
    ))[0]
        .get(0);
    let v = &rows["video_file"];
    assert_eq!(
        (
            v["fps"].as_f64(),
            v["duration"].as_f64(),
            v["frame_count"].as_u64(),
            v["width"].as_u64(),
            v["height"].as_u64(),
        ),
        (
            plain.fps,
            plain.duration,
            plain.frame_count,
            plain.width,
            plain.height
        ),
        "{rows}"
    );
    assert_eq!(plain.fps, Some(25.0));
    assert_eq!(plain.duration, Some(4.0));
    // The clip's bytes appear nowhere under the site's data but sealed.
    let probe = &body[at(b"moov")..at(b"moov") + 64];
    let clear: Vec<PathBuf> = files_under(&f.site.data())
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(probe.len()).any(|w| w == probe)))
        .collect();
    assert!(clear.is_empty(), "plaintext on disk: {clear:?}");
}
