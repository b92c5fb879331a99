//! The audit trail a patient-data host is expected to keep: failed authentication,
//! refused cross-center access, rate limiting, media downloads, exports and key
//! operations, as structured tracing events under one target (`lxgate::audit`), so
//! the journal can be filtered to them (`journalctl TARGET=lxgate::audit`, the target
//! being a journal field under systemd, or `LXGATE_LOG=lxgate::audit=info`).
//!
//! Events name who (token label or node key, never a token or secret), for which
//! center, what (job, transfer), from where (source address) and how it ended.
//! Client-supplied names (a claimed node key) are passed escaped by the caller.

/// The tracing target of every audit event.
pub const TARGET: &str = "lxgate::audit";

/// One audit event; unset fields are left out of the record.
#[derive(Debug, Default, Clone, Copy)]
pub struct Event<'a> {
    /// What happened, snake_case: `auth_failed`, `cross_center`, `media_download`, …
    pub event: &'static str,
    /// `ok`, `refused`, `rate_limited`, `failed`.
    pub outcome: &'static str,
    /// Token label or node key.
    pub principal: Option<&'a str>,
    /// The principal's center.
    pub center: Option<&'a str>,
    pub job: Option<&'a str>,
    pub transfer: Option<&'a str>,
    pub source: Option<&'a str>,
    /// Why, in words we wrote (never client text, never a secret).
    pub reason: Option<&'a str>,
}

impl Event<'_> {
    /// Refusals and failures at warn, the rest at info.
    pub fn emit(&self) {
        macro_rules! at {
            ($level:expr) => {
                tracing::event!(
                    target: TARGET,
                    $level,
                    event = self.event,
                    outcome = self.outcome,
                    principal = self.principal,
                    center = self.center,
                    job_id = self.job,
                    transfer_key = self.transfer,
                    source = self.source,
                    reason = self.reason,
                    "audit"
                )
            };
        }
        if self.outcome == "ok" {
            at!(tracing::Level::INFO)
        } else {
            at!(tracing::Level::WARN)
        }
    }
}

/// A key or credential operation from the command line (token, node, master key).
pub fn key_operation(event: &'static str, principal: &str, center: Option<&str>) {
    Event {
        event,
        outcome: "ok",
        principal: Some(principal),
        center,
        source: Some("cli"),
        ..Default::default()
    }
    .emit();
}
