//! The 7.0 register body for what the site holds: the strict video or report rows.

use super::facts::{Facts, VideoFacts};
use super::Item;
use crate::config::HubExport;
use crate::hub::wire::register::{ProcessingSnapshot, Provenance, RegisterBody};
use crate::hub::wire::rows::{
    ProcessingHistory, RawPdfFile, RawPdfState, ReportRows, VideoFile, VideoRows, VideoState,
};
use crate::hub::wire::{TransferMode, PAYLOAD_SCHEMA_VERSION};

/// The 7.0 register body for a video or report lxgate holds. Marking stated the
/// anonymization validated: that sets the eligibility flags, and nothing else does.
pub(super) fn register_body(s: &HubExport, item: &Item, facts: Facts) -> RegisterBody {
    let rows = match facts {
        Facts::Video(f) => serde_json::to_value(video_rows(item, f.unwrap_or_default())),
        Facts::Report(text) => serde_json::to_value(report_rows(item, text)),
    }
    .expect("rows serialize");
    RegisterBody {
        transfer_key: item.key.clone(),
        source_node_key: s.node_key.clone(),
        target_node_key: s.target_node_key.clone(),
        source_center_key: item.center.clone(),
        resource_kind: item.kind,
        resource_hash: item.raw_hash.clone(),
        transfer_mode: TransferMode::MetadataAndProcessedMedia,
        processing_policy: Default::default(),
        processing_intent: Default::default(),
        cleanup_policy: Default::default(),
        payload_schema_version: PAYLOAD_SCHEMA_VERSION.into(),
        resource_rows: rows,
        processing_snapshot: ProcessingSnapshot {
            sender_processing_success: Some(true),
        },
        provenance: Provenance {
            entrypoint: Some("lxgate_sender".into()),
            source_node_key: Some(s.node_key.clone()),
            target_node_key: Some(s.target_node_key.clone()),
            source_center_key: Some(item.center.clone()),
            transfer_mode: Some(TransferMode::MetadataAndProcessedMedia.as_str().into()),
            processing_policy: Some("preserve_processing_state".into()),
            cleanup_policy: Some("retain_all".into()),
            ..Provenance::default()
        },
    }
}

/// A report's rows as lx-annotate builds them (`_build_report_rows`): the raw hash
/// with the text, the three flags a report needs (no segments to remove), and its
/// processing history under the raw hash.
fn report_rows(item: &Item, anonymized_text: String) -> ReportRows {
    ReportRows {
        raw_pdf_file: RawPdfFile {
            pdf_hash: item.raw_hash.clone(),
            anonymized_text,
            ..RawPdfFile::default()
        },
        raw_pdf_state: Some(RawPdfState {
            sensitive_meta_processed: Some(true),
            anonymized: Some(true),
            anonymization_validated: Some(true),
            processed_file_sha256: Some(item.processed_hash.clone()),
            ..RawPdfState::default()
        }),
        processing_history: Some(ProcessingHistory {
            file_hash: Some(item.raw_hash.clone()),
            success: Some(true),
        }),
        ..ReportRows::default()
    }
}

fn video_rows(item: &Item, f: VideoFacts) -> VideoRows {
    VideoRows {
        video_file: VideoFile {
            raw_video_hash: item.raw_hash.clone(),
            processed_video_hash: Some(item.processed_hash.clone()),
            fps: f.fps,
            duration: f.duration,
            frame_count: f.frame_count,
            width: f.width,
            height: f.height,
            suffix: item.suffix.clone(),
        },
        video_state: Some(VideoState {
            anonymized: Some(true),
            sensitive_meta_processed: Some(true),
            anonymization_validated: Some(true),
            outside_segments_removed: Some(true),
            processed_file_sha256: Some(item.processed_hash.clone()),
            ..VideoState::default()
        }),
        processing_history: Some(ProcessingHistory {
            file_hash: Some(item.processed_hash.clone()),
            success: Some(true),
        }),
        ..VideoRows::default()
    }
}
