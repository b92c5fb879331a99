//! endoreg-db's anonymization state of a transfer's video or report, derived from the
//! state flags the body carries. The hub admits only `validated`, and its refusal names
//! the state, so both ends must derive it alike: the rules are endoreg-db 1.6.5's
//! (`endoreg_rust_backend.anonymization_status_rules`), first match wins, in this order.
//! tests/hub/reference.rs compares every flag combination with the reference's own extension.

use serde_json::Value;

/// Which rows a state comes from: a video's `video_state` or a report's `raw_pdf_state`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resource {
    Video,
    Report,
}

/// `(state, [(flag, value the flag must have)])`: the first rule whose flags all match.
type Rule = (&'static str, &'static [(&'static str, bool)]);

const VIDEO: &[Rule] = &[
    ("failed", &[("processing_error", true)]),
    ("validated", &[("anonymization_validated", true)]),
    (
        "done_processing_anonymization",
        &[("sensitive_meta_processed", true)],
    ),
    (
        "processing_anonymization",
        &[("frames_extracted", true), ("anonymized", false)],
    ),
    (
        "extracting_frames",
        &[("was_created", true), ("frames_extracted", false)],
    ),
    ("started", &[("processing_started", true)]),
    ("anonymized", &[("anonymized", true)]),
];

const REPORT: &[Rule] = &[
    ("failed", &[("processing_error", true)]),
    ("validated", &[("anonymization_validated", true)]),
    (
        "done_processing_anonymization",
        &[("sensitive_meta_processed", true)],
    ),
    (
        "processing_anonymization",
        &[("processing_started", true), ("anonymized", false)],
    ),
    ("started", &[("processing_started", true)]),
    ("anonymized", &[("anonymized", true)]),
];

/// The state endoreg-db derives from `state` (a JSON object of flags). A flag counts as
/// set as Python's `bool()` counts it, which is how the reference reads the body.
pub fn status(resource: Resource, state: &Value) -> &'static str {
    let rules = match resource {
        Resource::Video => VIDEO,
        Resource::Report => REPORT,
    };
    rules
        .iter()
        .find(|(_, flags)| flags.iter().all(|(f, want)| truthy(state.get(f)) == *want))
        .map_or("not_started", |(s, _)| s)
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_matching_rule_wins_and_flags_read_as_python_bool() {
        let v = |s: Value| status(Resource::Video, &s);
        assert_eq!(v(json!({})), "not_started");
        assert_eq!(
            v(json!({"processing_error": true, "anonymization_validated": true})),
            "failed"
        );
        assert_eq!(
            v(json!({"sensitive_meta_processed": true})),
            "done_processing_anonymization"
        );
        assert_eq!(
            v(json!({"frames_extracted": true})),
            "processing_anonymization"
        );
        assert_eq!(
            v(json!({"frames_extracted": true, "anonymized": true})),
            "anonymized"
        );
        assert_eq!(v(json!({"was_created": true})), "extracting_frames");
        assert_eq!(v(json!({"processing_error": 1})), "failed");
        assert_eq!(
            v(json!({"processing_error": "", "anonymization_validated": "yes"})),
            "validated"
        );
        let r = |s: Value| status(Resource::Report, &s);
        assert_eq!(
            r(json!({"processing_started": true})),
            "processing_anonymization"
        );
        assert_eq!(
            r(json!({"processing_started": true, "anonymized": true})),
            "started"
        );
    }
}
