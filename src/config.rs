//! Settings (TOML file) plus the environment contract of SPEC §1.
//!
//! Precedence: defaults < file < environment. Every struct denies unknown keys: on a
//! hospital host a typo in a nested table is an error, never a silently ignored line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::contract::CONTRACT;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Pass an existing file with --config or LXGATE_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("data root variables disagree: {0}. Set them to the same path or unset all but LX_ANNOTATE_ENCRYPTED_DATA_DIR")]
    AliasConflict(String),
    #[error("STORAGE_DIR {storage} is outside the data root {data}: managed storage must live inside the data root (same filesystem, atomic renames). Unset STORAGE_DIR or point it below {data}")]
    StorageOutsideRoot { storage: PathBuf, data: PathBuf },
    #[error("{what} {path} is outside the data root {data}; point it below the data root")]
    OutsideRoot {
        what: &'static str,
        path: PathBuf,
        data: PathBuf,
    },
    #[error("ENDOREG_DEPLOYMENT_ROLE={0:?} is not a role; valid roles: standalone, site_node, central_hub")]
    UnknownRole(String),
    #[error("{var}={value:?} is not valid: {why}")]
    BadValue {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("no database configured: set DATABASE_URL or [database] url in the config file")]
    NoDatabase,
    #[error("[hub] export: {0}")]
    HubExport(String),
    #[error("hub transfer API is enabled without mTLS: set [hub] require_mtls = true (ENDOREG_HUB_TRANSFER_REQUIRE_MTLS) and give nginx a client CA (services.lxgate.hub.transferApi.clientCaFile)")]
    TransferWithoutMtls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Standalone,
    SiteNode,
    CentralHub,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, ConfigError> {
        match s {
            "standalone" => Ok(Role::Standalone),
            "site_node" => Ok(Role::SiteNode),
            "central_hub" => Ok(Role::CentralHub),
            other => Err(ConfigError::UnknownRole(other.to_string())),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::SiteNode => "site_node",
            Role::CentralHub => "central_hub",
        }
    }
}

/// The settings file. Each field is documented because `lxgate config check` and the
/// NixOS module's `settings` option expose exactly this shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// standalone | site_node | central_hub (env ENDOREG_DEPLOYMENT_ROLE wins).
    pub role: Option<String>,
    pub paths: PathsConfig,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub watcher: WatcherConfig,
    pub sap_import: SapImportConfig,
    pub recovery: RecoveryConfig,
    pub host: HostConfig,
    pub hub: HubConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// State root (env file, staticfiles, keys). Default /var/lib/lxgate.
    pub state: Option<PathBuf>,
    /// Data root; env LX_ANNOTATE_ENCRYPTED_DATA_DIR (aliases LX_ANNOTATE_DATA_DIR, DATA_DIR) wins.
    pub data: Option<PathBuf>,
    /// Managed storage, inside the data root. Default {data}/storage; env STORAGE_DIR wins.
    pub storage: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `127.0.0.1:PORT` or `unix:/path`; env LXGATE_LISTEN wins.
    pub listen: Option<String>,
    /// Largest accepted upload body in bytes (default 104857600); env UPLOAD_MAX_SIZE wins.
    pub upload_max_size: Option<u64>,
    /// Trust X-Forwarded-For from the proxy (only when nothing but nginx reaches the app).
    pub trusted_proxy: Option<bool>,
    /// center_key for super_admin uploads without a key (not in central_hub);
    /// env LX_ANNOTATE_DEFAULT_CENTER wins.
    pub default_center: Option<String>,
    /// Serve protected media from the app itself (dev, no nginx) instead of X-Accel-Redirect.
    pub serve_media_directly: Option<bool>,
    /// Seconds a client has to send a request's head (default 30). The same timer runs
    /// while a keep-alive connection waits for its next request: the idle timeout.
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may send nothing before the request is cut (default 60).
    pub body_timeout_secs: Option<u64>,
    /// Connections open at once (default 4096); more wait in the listen backlog. Kept
    /// within the open-file limit, whose soft value lxgate raises to the hard one.
    pub max_connections: Option<usize>,
    /// Uploads (API and hub media) received at once (default 64); past it 503 with
    /// Retry-After, so slow uploads cannot take every staging thread and file.
    pub max_uploads: Option<usize>,
    /// Seconds SIGTERM waits for requests in flight before closing them (default 20,
    /// below systemd's TimeoutStopSec).
    pub shutdown_timeout_secs: Option<u64>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL or key=value string. Secret: never logged. Env DATABASE_URL wins.
    pub url: Option<String>,
    /// Pool size (default 16).
    pub pool_size: Option<usize>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_db_url))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatcherConfig {
    /// Run lxgate-watcher.service (module/render switch).
    pub enable: Option<bool>,
    /// A file must keep (dev, inode, size, mtime) this long before ingest (ms, default 2000).
    pub settle_ms: Option<u64>,
    /// A lone half of a preanonymized pair waits this long before quarantine (s, default 300).
    pub pair_timeout_secs: Option<u64>,
    /// Full rescan interval (s, default 30): drops missed while down are not lost.
    pub rescan_secs: Option<u64>,
    /// Files ingested in parallel (default 4).
    pub concurrency: Option<usize>,
    /// Directory entries considered per folder and scan (default 4096): bounds memory
    /// under a burst of drops; the rest is taken in the next scan.
    pub max_per_scan: Option<usize>,
    /// MemoryMax of lxgate-watcher.service (default 512M).
    pub memory_max: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SapImportConfig {
    /// Install lxgate-sap-import.path/.service.
    pub enable: Option<bool>,
    /// center_key written into sidecars (default: the default center).
    pub center_key: Option<String>,
    /// center_name written into sidecars.
    pub center_name: Option<String>,
    /// Largest uncompressed table in a bundle (bytes, default 64 MiB).
    pub max_entry_bytes: Option<u64>,
    /// Largest total uncompressed size of a bundle's tables (bytes, default 512 MiB).
    pub max_total_bytes: Option<u64>,
    /// Largest compression ratio of an entry over 1 MiB (default 100).
    pub max_ratio: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Install lxgate-data-recovery.service.
    pub enable: Option<bool>,
    /// Legacy data directory to merge from.
    pub source: Option<PathBuf>,
}

/// Facts about the host that only the renderers and doctor need.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    pub user: Option<String>,
    pub group: Option<String>,
    pub keys_group: Option<String>,
    /// Path of this settings file as the units see it.
    pub config: Option<String>,
    /// Age master identity, root:keys_group 0640.
    pub master_key: Option<String>,
    pub server_name: Option<String>,
    pub tls_certificate: Option<String>,
    pub tls_certificate_key: Option<String>,
    /// Enable the nginx server block in render.
    pub nginx: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Accept hub transfers (central_hub only); requires mTLS at nginx.
    pub transfer_api: Option<bool>,
    /// CA that signs site client certificates (nginx ssl_client_certificate).
    pub client_ca_file: Option<String>,
    /// Refuse transfer requests whose proxy attestation header is missing (default true).
    pub require_mtls: Option<bool>,
    /// Run lxgate-hub-export (site_node): send marked jobs to the hub.
    pub export: Option<bool>,
    /// The hub's https base URL (site_node export).
    pub url: Option<String>,
    /// This site's node key at the hub (`lxgate node add` on the hub).
    pub node_key: Option<String>,
    /// The hub's node key (target_node_key of every transfer).
    pub target_node_key: Option<String>,
    /// CA that signs the hub's server certificate.
    pub ca_file: Option<PathBuf>,
    /// This site's client certificate (PEM) for the hub's mTLS.
    pub client_certificate: Option<PathBuf>,
    /// Its key, when the systemd credential hub-client-key is not loaded.
    pub client_certificate_key: Option<PathBuf>,
    /// Header nginx sets from `$ssl_client_verify` on the transfer path and clears
    /// everywhere else (rendered into the nginx block; default in nix/contract.toml).
    pub mtls_meta_key: Option<String>,
    /// The value that header must have (default SUCCESS).
    pub mtls_meta_value: Option<String>,
    /// Refuse transfer requests not marked `X-Forwarded-Proto: https` (default true).
    pub require_secure_transport: Option<bool>,
    /// central_hub: accept only HMAC-signed transfer requests, never the secret header
    /// (default false: endoreg-db senders send the secret).
    pub require_signed_requests: Option<bool>,
    /// site_node: sign requests instead of sending the secret (default true; false for
    /// an endoreg-db hub).
    pub sign_requests: Option<bool>,
    /// site_node: seal media with age to this recipient (`lxgate keys recipient` on the
    /// hub) before it leaves the site.
    pub hub_recipient: Option<String>,
    /// central_hub: refuse media that is not sealed with age (default false).
    pub require_sealed_media: Option<bool>,
    /// central_hub: largest transfer media in bytes (default 50 GiB, nginx's
    /// client_max_body_size; videos outgrow UPLOAD_MAX_SIZE's API default).
    pub max_media_size: Option<u64>,
}

/// The hub transfer receiver's effective switches (SPEC §8).
#[derive(Debug, Clone, Serialize)]
pub struct HubTransfers {
    pub enabled: bool,
    pub require_mtls: bool,
    pub mtls_meta_key: String,
    pub mtls_meta_value: String,
    pub require_secure_transport: bool,
    pub require_signed_requests: bool,
    pub require_sealed_media: bool,
    pub max_media_size: u64,
}

/// The effective runtime configuration after defaults, file and environment.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub role: Role,
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    pub storage_dir: PathBuf,
    pub streamable_dir: PathBuf,
    pub listen: String,
    #[serde(serialize_with = "ser_redacted_url")]
    pub database_url: Option<String>,
    pub pool_size: usize,
    pub upload_max_size: u64,
    pub trusted_proxy: bool,
    pub default_center: Option<String>,
    pub serve_media_directly: bool,
    pub watcher_settle_ms: u64,
    pub watcher_pair_timeout_secs: u64,
    pub watcher_rescan_secs: u64,
    pub watcher_concurrency: usize,
    pub watcher_max_per_scan: usize,
    pub hub_transfers: HubTransfers,
    pub hub_export: Option<crate::boundary::hub_export::ExportSettings>,
    pub file: FileConfig,
}

/// The sender's settings when `[hub] export` is on; every missing piece named at once.
fn hub_export(
    role: Role,
    h: &HubConfig,
) -> Result<Option<crate::boundary::hub_export::ExportSettings>, ConfigError> {
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
    need("ca_file", h.ca_file.is_some());
    need("client_certificate", h.client_certificate.is_some());
    if !missing.is_empty() {
        return Err(ConfigError::HubExport(format!(
            "set {} in [hub] (services.lxgate.hub.export.*)",
            missing.join(", ")
        )));
    }
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
    Ok(Some(crate::boundary::hub_export::ExportSettings {
        url: url.trim_end_matches('/').to_string(),
        node_key: h.node_key.clone().unwrap_or_default(),
        target_node_key: h.target_node_key.clone().unwrap_or_default(),
        ca_file: h.ca_file.clone().unwrap_or_default(),
        client_certificate: h.client_certificate.clone().unwrap_or_default(),
        client_certificate_key: h.client_certificate_key.clone(),
        sign_requests: h.sign_requests.unwrap_or(true),
        hub_recipient: match &h.hub_recipient {
            None => None,
            Some(r) => {
                crate::crypto::age::Recipient::parse(r).map_err(|e| {
                    ConfigError::HubExport(format!(
                        "hub_recipient: {e}; use the age1… line `lxgate keys recipient` prints on the hub"
                    ))
                })?;
                Some(r.trim().to_string())
            }
        },
    }))
}

fn ser_redacted_url<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(u) => s.serialize_some(&redact_db_url(u)),
        None => s.serialize_none(),
    }
}

/// Replace any password in a URL or key=value connection string with `***`.
pub fn redact_db_url(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let (cred, host) = rest.split_at(at);
            if let Some(colon) = cred.find(':') {
                return format!("{scheme}{}:***{host}", &cred[..colon]);
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.to_ascii_lowercase().starts_with("password=") {
                "password=***".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The attestation header the app trusts: the one nginx is rendered to set and clear
/// ([hub] mtls_meta_key, default in the contract). The endoreg-db variable may only
/// repeat it: a name nginx does not know would be a header any client can send.
fn mtls_meta_key(env: Option<String>, file: Option<&str>) -> Result<String, ConfigError> {
    const VAR: &str = "ENDOREG_HUB_TRANSFER_MTLS_META_KEY";
    let rendered = file.map_or_else(|| default_str("mtls_meta_key"), str::to_string);
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
        Some(v) if !v.eq_ignore_ascii_case(&rendered) => Err(ConfigError::BadValue {
            var: VAR,
            value: v,
            why: format!(
                "nginx sets and clears the header {rendered} ([hub] mtls_meta_key); set [hub] mtls_meta_key (services.lxgate.settings.hub.mtls_meta_key) instead, re-render nginx and unset {VAR}"
            ),
        }),
        _ => Ok(rendered),
    }
}

/// Where the environment comes from; tests pass a map instead of mutating the process env.
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars().collect()
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }
}

fn default_str(key: &str) -> String {
    CONTRACT.default_of(key).to_string()
}

impl Config {
    /// Resolve from an optional file path and an environment map.
    pub fn resolve(path: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
        let file = FileConfig::load(path)?;
        Self::from_parts(file, env)
    }

    pub fn from_parts(file: FileConfig, env: &Env) -> Result<Config, ConfigError> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let role_s = get("ENDOREG_DEPLOYMENT_ROLE")
            .or_else(|| file.role.clone())
            .unwrap_or_else(|| "standalone".into());
        let role = Role::parse(&role_s)?;

        let state_dir = file
            .paths
            .state
            .clone()
            .unwrap_or_else(|| PathBuf::from(default_str("state")));

        // The data root: the canonical name and its aliases must agree.
        let names = [
            "LX_ANNOTATE_ENCRYPTED_DATA_DIR",
            "LX_ANNOTATE_DATA_DIR",
            "DATA_DIR",
        ];
        let set: Vec<(&str, String)> = names
            .iter()
            .filter_map(|n| get(n).map(|v| (*n, v)))
            .collect();
        let distinct: std::collections::BTreeSet<PathBuf> =
            set.iter().map(|(_, v)| normalize(Path::new(v))).collect();
        if distinct.len() > 1 {
            let listing = names
                .iter()
                .map(|n| format!("{n}={}", get(n).unwrap_or_else(|| "(unset)".into())))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ConfigError::AliasConflict(listing));
        }
        let data_dir = match set.first() {
            Some((_, v)) => normalize(Path::new(v)),
            None => file
                .paths
                .data
                .clone()
                .map(|p| normalize(&p))
                .unwrap_or_else(|| state_dir.join("data")),
        };
        let storage_dir = get("STORAGE_DIR")
            .map(PathBuf::from)
            .or_else(|| file.paths.storage.clone())
            .map(|p| normalize(&p))
            .unwrap_or_else(|| data_dir.join("storage"));
        if !storage_dir.starts_with(&data_dir) || storage_dir == data_dir {
            return Err(ConfigError::StorageOutsideRoot {
                storage: storage_dir,
                data: data_dir,
            });
        }
        let streamable_dir = get("LX_ANNOTATE_STREAMABLE_VIDEO_ROOT")
            .map(|p| normalize(Path::new(&p)))
            .unwrap_or_else(|| data_dir.join("streamable"));
        if !streamable_dir.starts_with(&data_dir) {
            return Err(ConfigError::OutsideRoot {
                what: "LX_ANNOTATE_STREAMABLE_VIDEO_ROOT",
                path: streamable_dir,
                data: data_dir,
            });
        }

        let listen = get("LXGATE_LISTEN")
            .or_else(|| file.server.listen.clone())
            .unwrap_or_else(|| default_str("listen"));
        if !(listen.starts_with("unix:/") || listen.parse::<std::net::SocketAddr>().is_ok()) {
            return Err(ConfigError::BadValue {
                var: "LXGATE_LISTEN",
                value: listen,
                why: "use 127.0.0.1:PORT or unix:/absolute/path".into(),
            });
        }
        let upload_max_size = match get("UPLOAD_MAX_SIZE") {
            Some(v) => v.parse::<u64>().map_err(|_| ConfigError::BadValue {
                var: "UPLOAD_MAX_SIZE",
                value: v.clone(),
                why: "a whole number of bytes, e.g. 104857600".into(),
            })?,
            None => file.server.upload_max_size.unwrap_or(104_857_600),
        };
        let database_url = get("DATABASE_URL").or_else(|| file.database.url.clone());
        let default_center =
            get("LX_ANNOTATE_DEFAULT_CENTER").or_else(|| file.server.default_center.clone());

        let flag = |var: &'static str, file_value: Option<bool>, default: bool| match get(var) {
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::BadValue {
                    var,
                    value: v,
                    why: "use true or false".into(),
                }),
            },
            None => Ok(file_value.unwrap_or(default)),
        };
        let hub_transfers = HubTransfers {
            enabled: flag("ENDOREG_ENABLE_HUB_TRANSFERS", file.hub.transfer_api, false)?,
            require_mtls: flag(
                "ENDOREG_HUB_TRANSFER_REQUIRE_MTLS",
                file.hub.require_mtls,
                true,
            )?,
            mtls_meta_key: mtls_meta_key(
                get("ENDOREG_HUB_TRANSFER_MTLS_META_KEY"),
                file.hub.mtls_meta_key.as_deref(),
            )?,
            mtls_meta_value: get("ENDOREG_HUB_TRANSFER_MTLS_META_VALUE")
                .or_else(|| file.hub.mtls_meta_value.clone())
                .unwrap_or_else(|| "SUCCESS".into()),
            require_secure_transport: flag(
                "ENDOREG_HUB_TRANSFER_REQUIRE_SECURE_TRANSPORT",
                file.hub.require_secure_transport,
                true,
            )?,
            require_signed_requests: file.hub.require_signed_requests.unwrap_or(false),
            require_sealed_media: file.hub.require_sealed_media.unwrap_or(false),
            max_media_size: file.hub.max_media_size.unwrap_or(50 << 30),
        };
        if hub_transfers.enabled && !hub_transfers.require_mtls {
            return Err(ConfigError::TransferWithoutMtls);
        }
        if hub_transfers.enabled && role != Role::CentralHub {
            return Err(ConfigError::BadValue {
                var: "ENDOREG_ENABLE_HUB_TRANSFERS",
                value: "true".into(),
                why: format!(
                    "only a central_hub receives transfers, this node is {}; disable transfers or set the role",
                    role.as_str()
                ),
            });
        }
        let hub_export = hub_export(role, &file.hub)?;

        Ok(Config {
            role,
            state_dir,
            data_dir,
            storage_dir,
            streamable_dir,
            listen,
            database_url,
            pool_size: file.database.pool_size.unwrap_or(16),
            upload_max_size,
            trusted_proxy: file.server.trusted_proxy.unwrap_or(false),
            default_center,
            serve_media_directly: file.server.serve_media_directly.unwrap_or(false),
            watcher_settle_ms: file.watcher.settle_ms.unwrap_or(2000),
            watcher_pair_timeout_secs: file.watcher.pair_timeout_secs.unwrap_or(300),
            watcher_rescan_secs: file.watcher.rescan_secs.unwrap_or(30),
            watcher_concurrency: file.watcher.concurrency.unwrap_or(4).max(1),
            watcher_max_per_scan: file.watcher.max_per_scan.unwrap_or(4096).max(1),
            hub_transfers,
            hub_export,
            file,
        })
    }

    pub fn import_dir(&self) -> PathBuf {
        self.data_dir.join("import")
    }
    pub fn quarantine_dir(&self) -> PathBuf {
        self.data_dir.join("quarantine")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    pub fn sap_limits(&self) -> crate::boundary::sap::Limits {
        let d = crate::boundary::sap::Limits::default();
        let s = &self.file.sap_import;
        crate::boundary::sap::Limits {
            max_entry_bytes: s.max_entry_bytes.unwrap_or(d.max_entry_bytes),
            max_total_bytes: s.max_total_bytes.unwrap_or(d.max_total_bytes),
            max_ratio: s.max_ratio.unwrap_or(d.max_ratio),
            ..d
        }
    }

    pub fn server_limits(&self) -> crate::boundary::http::Limits {
        let d = crate::boundary::http::Limits::default();
        let s = &self.file.server;
        let secs = |v: Option<u64>, d: std::time::Duration| {
            v.map_or(d, |v| std::time::Duration::from_secs(v.max(1)))
        };
        crate::boundary::http::Limits {
            header_timeout: secs(s.header_timeout_secs, d.header_timeout),
            body_timeout: secs(s.body_timeout_secs, d.body_timeout),
            max_connections: s.max_connections.unwrap_or(d.max_connections).max(1),
            max_uploads: s.max_uploads.unwrap_or(d.max_uploads).max(1),
            shutdown_timeout: secs(s.shutdown_timeout_secs, d.shutdown_timeout),
        }
    }

    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.database_url.as_deref().ok_or(ConfigError::NoDatabase)
    }
}

/// Lexical normalisation (no filesystem access): drop `.` and resolve `..`, so
/// `/data/../etc` cannot pass the "inside the data root" check.
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn export_file(url: &str) -> FileConfig {
        toml::from_str(&format!(
            "role = \"site_node\"\n[hub]\nexport = true\nurl = \"{url}\"\nnode_key = \"s\"\ntarget_node_key = \"h\"\nca_file = \"/ca\"\nclient_certificate = \"/c\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn hub_export_needs_https_every_setting_and_a_site_node() {
        let c = Config::from_parts(export_file("https://hub.example.org/"), &env(&[])).unwrap();
        assert_eq!(c.hub_export.unwrap().url, "https://hub.example.org");
        let e = Config::from_parts(export_file("http://hub.example.org"), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with https://"), "{e}");
        let e = Config::from_parts(
            export_file("https://h"),
            &env(&[("ENDOREG_DEPLOYMENT_ROLE", "central_hub")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("only a site_node exports"), "{e}");
        let mut f = export_file("https://h");
        f.hub.ca_file = None;
        f.hub.node_key = None;
        let e = Config::from_parts(f, &env(&[])).unwrap_err().to_string();
        assert!(e.contains("set node_key, ca_file in [hub]"), "{e}");
    }

    #[test]
    fn aliases_that_agree_are_fine() {
        let c = Config::from_parts(
            FileConfig::default(),
            &env(&[
                ("LX_ANNOTATE_ENCRYPTED_DATA_DIR", "/d"),
                ("DATA_DIR", "/d/"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!(c.storage_dir, PathBuf::from("/d/storage"));
    }

    #[test]
    fn alias_conflict_names_every_variable() {
        let e = Config::from_parts(
            FileConfig::default(),
            &env(&[
                ("LX_ANNOTATE_ENCRYPTED_DATA_DIR", "/a"),
                ("LX_ANNOTATE_DATA_DIR", "/b"),
            ]),
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "LX_ANNOTATE_ENCRYPTED_DATA_DIR=/a",
            "LX_ANNOTATE_DATA_DIR=/b",
            "DATA_DIR=(unset)",
        ] {
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn storage_outside_root_is_refused_even_via_dotdot() {
        for s in ["/elsewhere", "/d/../etc", "/d"] {
            let e = Config::from_parts(
                FileConfig::default(),
                &env(&[("DATA_DIR", "/d"), ("STORAGE_DIR", s)]),
            )
            .unwrap_err();
            assert!(
                matches!(e, ConfigError::StorageOutsideRoot { .. }),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn unknown_role_lists_valid_ones() {
        let e = Config::from_parts(
            FileConfig::default(),
            &env(&[("ENDOREG_DEPLOYMENT_ROLE", "hub")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"hub\"") && e.contains("central_hub") && e.contains("site_node"),
            "{e}"
        );
    }

    #[test]
    fn unknown_nested_key_is_an_error() {
        let e = FileConfig::parse("[watcher]\nsettle_msec = 5\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("settle_msec"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_db_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_db_url("host=/run/pg user=u password=secret"),
            "host=/run/pg user=u password=***"
        );
    }
}
