//! The environment half of the contract: the reference's variable names (lx-annotate
//! 1.6.4, endoreg-db 1.6.5), their aliases and the checks that make a value the
//! reference would refuse, or lxgate cannot honour, stop startup with its name.

use std::path::{Path, PathBuf};

use super::{contract_default, normalize, ConfigError, HubConfig, HubExport, Paths, Role};

/// A header name as endoreg-db writes it, a Django `request.META` key
/// (`HTTP_X_CLIENT_CERT_VERIFIED`), turned into the header (`x-client-cert-verified`);
/// a plain header name is returned as it is.
pub fn header_from_meta_key(v: &str) -> String {
    let v = v.trim();
    match v.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("HTTP_") && !v.contains('-') => {
            v[5..].replace('_', "-").to_ascii_lowercase()
        }
        _ => v.to_string(),
    }
}

/// The attestation header the app trusts: the one nginx is rendered to set and clear
/// ([hub] mtls_meta_key, default in the contract). The endoreg-db variable may only
/// repeat it, as a header name or in Django's META form: a name nginx does not know
/// would be a header any client can send.
pub(super) fn mtls_meta_key(
    env: Option<String>,
    file: Option<&str>,
) -> Result<String, ConfigError> {
    const VAR: &str = "ENDOREG_HUB_TRANSFER_MTLS_META_KEY";
    let rendered = file.map_or_else(|| contract_default("mtls_meta_key"), str::to_string);
    let token =
        |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !token(&rendered) {
        return Err(ConfigError::BadValue {
            var: "[hub] mtls_meta_key",
            value: rendered,
            why: "a header name is letters, digits and '-' (nginx drops other names)".into(),
        });
    }
    match env {
        Some(v) if !header_from_meta_key(&v).eq_ignore_ascii_case(&rendered) => Err(ConfigError::BadValue {
            var: VAR,
            why: format!(
                "it names the header {}, but nginx sets and clears the header {rendered} ([hub] mtls_meta_key); set {VAR} to {rendered} or its Django META form HTTP_{}, or set [hub] mtls_meta_key (services.lxgate.settings.hub.mtls_meta_key), re-render nginx and unset {VAR}",
                header_from_meta_key(&v),
                rendered.to_ascii_uppercase().replace('-', "_")
            ),
            value: v,
        }),
        _ => Ok(rendered),
    }
}

/// Both names of the transfer switch: lx-annotate 1.6.4 reads the first, endoreg-db's
/// own settings the second, and endoreg-db's `transfer_api_enabled` accepts either.
pub const TRANSFER_SWITCHES: [&str; 2] = [
    "ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS",
    "ENDOREG_ENABLE_HUB_TRANSFERS",
];

/// A switch's value, as the reference reads flags (case-insensitive).
pub(super) fn truthy(var: &'static str, v: String) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::BadValue {
            var,
            value: v,
            why: "use true or false".into(),
        }),
    }
}

/// On when either name says so (as `transfer_api_enabled`); the file's value only when
/// neither is set.
pub(super) fn transfers_enabled(
    get: &impl Fn(&str) -> Option<String>,
    file: Option<bool>,
    default: bool,
) -> Result<bool, ConfigError> {
    let mut set = None;
    for var in TRANSFER_SWITCHES {
        if let Some(v) = get(var) {
            set = Some(set.unwrap_or(false) | truthy(var, v)?);
        }
    }
    Ok(set.unwrap_or(file.unwrap_or(default)))
}

/// The reference watcher's variables, as lxgate honours them.
pub(super) struct WatcherEnv {
    pub(super) stable_after_ms: Option<u64>,
    pub(super) poll_ms: Option<u64>,
}

/// `WATCHER_*` from an lx-annotate env file: the timings become lxgate's, the rest is
/// checked so a value the reference would refuse (or lxgate cannot honour) stops startup.
pub(super) fn watcher_env(
    get: &impl Fn(&str) -> Option<String>,
    paths: &Paths,
) -> Result<WatcherEnv, ConfigError> {
    let seconds = |var: &'static str, zero_ok: bool| -> Result<Option<u64>, ConfigError> {
        let Some(v) = get(var) else { return Ok(None) };
        match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && (x > 0.0 || (zero_ok && x == 0.0)) => {
                Ok(Some((x * 1000.0).round() as u64))
            }
            _ => Err(ConfigError::BadValue {
                var,
                value: v,
                why: if zero_ok {
                    "seconds, a finite number >= 0 (e.g. 10 or 2.5)".into()
                } else {
                    "seconds, a finite number > 0 (e.g. 5 or 0.5)".into()
                },
            }),
        }
    };
    let stable_after_ms = seconds("WATCHER_STABLE_AFTER_SECONDS", true)?;
    let poll_ms = seconds("WATCHER_POLL_INTERVAL_SECONDS", false)?;
    if let Some(v) = get("WATCHER_LOG_LEVEL") {
        if watcher_log_filter(&v).is_none() {
            return Err(ConfigError::BadValue {
                var: "WATCHER_LOG_LEVEL",
                value: v,
                why: "one of DEBUG, INFO, WARNING, ERROR, CRITICAL".into(),
            });
        }
    }
    if let Some(v) = get("WATCHER_CELERY_INLINE_FALLBACK_ENABLED") {
        // lxgate always ingests inline (there is no broker); the value must still be one.
        if !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on" | "0" | "false" | "no" | "off"
        ) {
            return Err(ConfigError::BadValue {
                var: "WATCHER_CELERY_INLINE_FALLBACK_ENABLED",
                value: v,
                why: "use true or false (lxgate always ingests inline; the value changes nothing)"
                    .into(),
            });
        }
    }
    for (var, folder) in [
        ("WATCHER_VIDEO_DIR", "video_import"),
        ("WATCHER_REPORT_DIR", "report_import"),
        ("WATCHER_PREANONYMIZED_DIR", "preanonymized_import"),
    ] {
        let fixed = paths.import().join(folder);
        if let Some(v) = get(var) {
            if normalize(Path::new(v.trim())) != fixed {
                return Err(ConfigError::BadValue {
                    var,
                    value: v,
                    why: format!(
                        "the drop folder is fixed at {} (as in lx-annotate 1.6.4); move its files there and unset {var}",
                        fixed.display()
                    ),
                });
            }
        }
    }
    Ok(WatcherEnv {
        stable_after_ms,
        poll_ms,
    })
}

/// lxgate's log filter for a Python logging level name (`WATCHER_LOG_LEVEL`).
pub fn watcher_log_filter(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_uppercase().as_str() {
        "DEBUG" => Some("debug"),
        "INFO" => Some("info"),
        "WARNING" | "WARN" => Some("warn"),
        "ERROR" | "CRITICAL" | "FATAL" => Some("error"),
        _ => None,
    }
}

/// The sender's settings when `[hub] export` is on; every missing piece named at once.
pub(super) fn hub_export(
    role: Role,
    h: &HubConfig,
    get: &impl Fn(&str) -> Option<String>,
    paths: &Paths,
) -> Result<Option<HubExport>, ConfigError> {
    if !h.export.unwrap_or(false) {
        return Ok(None);
    }
    if role != Role::SiteNode {
        return Err(ConfigError::HubExport(format!(
            "only a site_node exports to a hub, this node is {}; set role = \"site_node\" or export = false",
            role.as_str()
        )));
    }
    let mut missing = Vec::new();
    let mut need = |name: &'static str, present: bool| {
        if !present {
            missing.push(name);
        }
    };
    need("url", h.url.is_some());
    need("node_key", h.node_key.is_some());
    need("target_node_key", h.target_node_key.is_some());
    // lx-annotate's names win over the file, as for every setting with a reference name.
    let path = |var: &str, file: &Option<PathBuf>| get(var).map(PathBuf::from).or(file.clone());
    let ca_file = path("LX_ANNOTATE_HUB_EXPORT_CA_FILE", &h.ca_file);
    let client_certificate = path(
        "LX_ANNOTATE_HUB_EXPORT_CLIENT_CERT_FILE",
        &h.client_certificate,
    );
    let client_certificate_key = path(
        "LX_ANNOTATE_HUB_EXPORT_CLIENT_KEY_FILE",
        &h.client_certificate_key,
    );
    let recipient = path(
        "LX_ANNOTATE_HUB_EXPORT_RECIPIENT_PUBLIC_KEY_FILE",
        &h.recipient_public_key_file,
    );
    need("ca_file", ca_file.is_some());
    need("client_certificate", client_certificate.is_some());
    need("recipient_public_key_file", recipient.is_some());
    if !missing.is_empty() {
        return Err(ConfigError::HubExport(format!(
            "set {} in [hub] (services.lxgate.hub.export.*)",
            missing.join(", ")
        )));
    }
    // As lx-annotate's settings read them: the timeout a positive whole number of
    // seconds, the retry budget a whole number where a negative one means 0.
    const TIMEOUT: &str = "LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS";
    let request_timeout_seconds = match get(TIMEOUT) {
        Some(v) => v.trim().parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
            ConfigError::BadValue {
                var: TIMEOUT,
                why: format!("a whole number of seconds above 0 (default {}), e.g. 21600 for six hours", HubExport::DEFAULT_REQUEST_TIMEOUT_SECONDS),
                value: v,
            }
        })?,
        None => match h.request_timeout_seconds {
            Some(0) => {
                return Err(ConfigError::HubExport(
                    "request_timeout_seconds = 0 would give up before the hub can answer; set a positive number of seconds or leave it out (default 21600)".into(),
                ))
            }
            Some(s) => s,
            None => HubExport::DEFAULT_REQUEST_TIMEOUT_SECONDS,
        },
    };
    const RETRIES: &str = "LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES";
    let max_retries = match get(RETRIES) {
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map(|n| n.clamp(0, u32::MAX.into()) as u32)
            .map_err(|_| ConfigError::BadValue {
                var: RETRIES,
                why: format!(
                    "a whole number of retries (default {})",
                    HubExport::DEFAULT_MAX_RETRIES
                ),
                value: v,
            })?,
        None => h.max_retries.unwrap_or(HubExport::DEFAULT_MAX_RETRIES),
    };
    let url = h.url.clone().unwrap_or_default();
    let rest = url.strip_prefix("https://").ok_or_else(|| {
        ConfigError::HubExport(format!(
            "url {url:?} must start with https://: transfers carry patient media and the node secret"
        ))
    })?;
    if rest.is_empty() || rest.contains(['?', '#']) {
        return Err(ConfigError::HubExport(format!(
            "url {url:?} must be the hub's base address, e.g. https://hub.example.org"
        )));
    }
    Ok(Some(HubExport {
        url: url.trim_end_matches('/').to_string(),
        node_key: h.node_key.clone().unwrap_or_default(),
        target_node_key: h.target_node_key.clone().unwrap_or_default(),
        ca_file: ca_file.unwrap_or_default(),
        client_certificate: client_certificate.unwrap_or_default(),
        client_certificate_key,
        sign_requests: h.sign_requests.unwrap_or(false),
        recipient_public_key_file: recipient.unwrap_or_default(),
        envelope_staging_dir: path(
            "LX_ANNOTATE_HUB_EXPORT_ENVELOPE_STAGING_DIR",
            &h.envelope_staging_dir,
        )
        .unwrap_or_else(|| paths.state.join("hub-export-envelopes")),
        request_timeout_seconds,
        max_retries,
    }))
}
