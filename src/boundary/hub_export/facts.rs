//! What the site knows about the media it exports: a video's facts from `ffprobe`
//! (through `feed` when the object is sealed), a report's text, the suffix the hub may
//! see.

use std::path::Path;

use serde_json::Value;

use super::{feed, Item};
use crate::crypto::keyring::MasterKeys;
use crate::hub::wire::ResourceKind;
use std::io::Read;

use crate::ingest::at_rest::{AtRest, Object};

/// The hub sees no original file name (it may name a patient): only its suffix.
pub(super) fn suffix_of(name: &str) -> Option<String> {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| e.len() <= 8 && e.bytes().all(|c| c.is_ascii_alphanumeric()))
        .map(|e| format!(".{}", e.to_ascii_lowercase()))
}

/// What `ffprobe` tells about a video: fps, duration, frame count, width, height.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VideoFacts {
    pub fps: Option<f64>,
    pub duration: Option<f64>,
    pub frame_count: Option<u64>,
    pub width: Option<u64>,
    pub height: Option<u64>,
}

/// `ffprobe` on the stored object; None when it is no video ffprobe can read (the hub
/// takes nulls for these fields; lx-annotate fills them, and so does lxgate when it can).
/// A sealed object is opened for ffprobe alone through a loopback feed (feed.rs): no
/// plaintext on disk, and ffprobe can seek, which an MP4 with its index at the end needs.
pub fn video_facts(object: &Path, at_rest: AtRest, keys: &MasterKeys) -> Option<VideoFacts> {
    let ffprobe = |input: &std::ffi::OsStr| {
        let mut c = std::process::Command::new("ffprobe");
        c.args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=width,height,avg_frame_rate,nb_frames,nb_read_packets,duration:format=duration",
            "-of",
            "json",
        ])
        .arg(input);
        c
    };
    let out = match at_rest {
        AtRest::Plain => ffprobe(object.as_os_str())
            .stdin(std::process::Stdio::null())
            .output(),
        AtRest::Sealed => feed::run_with_feed(&|| Object::open(object, at_rest, keys), |url| {
            ffprobe(url.as_ref())
        }),
    }
    .map_err(|e| {
        tracing::warn!("ffprobe does not run ({e}); video facts are sent empty: install ffmpeg")
    })
    .ok()?;
    if !out.status.success() {
        // ffprobe's own last words say why (a codec, a truncated file, the feed); they
        // name the stored object or the feed's port, never the original file.
        let said = String::from_utf8_lossy(&out.stderr);
        let said: String = said
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect();
        tracing::warn!(object = %object.display(), ffprobe = %said, "ffprobe cannot read this media ({}); video facts are sent empty", out.status);
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let stream = v["streams"].get(0)?;
    let num = |x: &Value| -> Option<f64> {
        x.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or_else(|| x.as_f64())
    };
    let fps = stream["avg_frame_rate"].as_str().and_then(|r| {
        let (n, d) = r.split_once('/')?;
        let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
        (d > 0.0).then(|| n / d)
    });
    let frames = num(&stream["nb_frames"]).or_else(|| num(&stream["nb_read_packets"]));
    Some(VideoFacts {
        fps: fps.filter(|f| f.is_finite() && *f >= 0.0),
        duration: num(&stream["duration"])
            .or_else(|| num(&v["format"]["duration"]))
            .filter(|d| d.is_finite() && *d >= 0.0),
        frame_count: frames.filter(|f| *f >= 0.0).map(|f| f as u64),
        width: stream["width"].as_u64().filter(|w| *w >= 1),
        height: stream["height"].as_u64().filter(|h| *h >= 1),
    })
}

/// What the register body says about the media beyond its hashes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Facts {
    /// `ffprobe`'s, or none when it cannot read the media (the hub takes nulls).
    Video(Option<VideoFacts>),
    /// The report's text, `raw_pdf_file.anonymized_text` (never blank).
    Report(String),
}

pub(super) fn media_facts(item: &Item) -> std::result::Result<Facts, String> {
    Ok(match item.kind {
        ResourceKind::Report => Facts::Report(report_text(
            &item.object,
            item.at_rest,
            &item.keys,
            item.suffix.as_deref(),
        )?),
        _ => Facts::Video(video_facts(&item.object, item.at_rest, &item.keys)),
    })
}

/// The text of a report: a text report (`.txt`, as lx-annotate takes them) is its own
/// text; a PDF's is its text layer, read by `pdftotext` (poppler-utils) from a pipe, so
/// a report sealed at rest is opened in memory and never written out in the clear.
/// Marking stated the report anonymized, so this is the anonymized text the hub
/// requires. A report without text (a scan without a text layer) cannot be sent: the
/// hub refuses a blank one.
pub fn report_text(
    path: &Path,
    at_rest: AtRest,
    keys: &MasterKeys,
    suffix: Option<&str>,
) -> std::result::Result<String, String> {
    let unreadable = |e: &dyn std::fmt::Display| {
        format!(
            "reading the stored report {}: {e}; run `lxgate storage audit --verify`",
            path.display()
        )
    };
    let mut object = Object::open(path, at_rest, keys).map_err(|e| unreadable(&e))?;
    let text = if suffix == Some(".txt") {
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).map_err(|e| unreadable(&e))?;
        String::from_utf8(bytes).map_err(|_| {
            "the text report is not UTF-8; the hub takes its text as JSON: convert it to UTF-8 and ingest it again".to_string()
        })?
    } else {
        let mut child = std::process::Command::new("pdftotext")
            .args(["-q", "-enc", "UTF-8", "-", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("pdftotext does not run ({e}): install poppler-utils; a report's text goes to the hub as raw_pdf_file.anonymized_text")
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        // Fed from a thread: pdftotext may answer before it has read everything.
        let (fed, out) = std::thread::scope(|s| {
            let feeder = s.spawn(move || std::io::copy(&mut object, &mut stdin).map(drop));
            let out = child.wait_with_output();
            (feeder.join().expect("the feeder does not panic"), out)
        });
        let out = out.map_err(|e| format!("pdftotext: {e}"))?;
        match fed {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(unreadable(&e)),
            _ => {}
        }
        if !out.status.success() {
            return Err(format!(
                "pdftotext cannot read the stored report {} (exit {}): is it a PDF?",
                path.display(),
                out.status.code().unwrap_or(-1)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // NUL is not text, and the hub refuses it in JSON.
    let text = text.replace('\0', "");
    if text.trim().is_empty() {
        return Err("the report has no text (a scanned PDF without a text layer?); the hub requires its anonymized text (raw_pdf_file.anonymized_text must not be blank): export a PDF with a text layer".into());
    }
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_sees_the_suffix_never_the_name() {
        assert_eq!(suffix_of("Mueller_Hans_1961.MP4").as_deref(), Some(".mp4"));
        assert_eq!(suffix_of("no-extension"), None);
        assert_eq!(suffix_of("x.a b"), None);
    }
}
