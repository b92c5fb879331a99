//! The settings file as written: the shape the NixOS module's `settings` option
//! writes. Only `Config::from_parts` reads it; nothing keeps or prints it afterwards.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{redact_db_url, AtRest, ConfigError};

// ---------------------------------------------------------------------------------------
// The settings file as written. Only `Config::from_parts` reads it; nothing keeps or
// prints it afterwards (it may hold the database password).
// ---------------------------------------------------------------------------------------

/// The settings file. Each field is documented because the NixOS module's `settings`
/// option writes exactly this shape; the defaults are on the resolved types below.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// standalone | site_node | central_hub (env ENDOREG_DEPLOYMENT_ROLE wins).
    pub role: Option<String>,
    pub paths: PathsConfig,
    pub storage: StorageConfig,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub watcher: WatcherConfig,
    pub sap_import: SapImportConfig,
    pub recovery: RecoveryConfig,
    pub host: HostConfig,
    pub hub: HubConfig,
    pub backup: BackupConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// State root (env file, staticfiles, keys).
    pub state: Option<PathBuf>,
    /// Data root; env LX_ANNOTATE_ENCRYPTED_DATA_DIR (aliases LX_ANNOTATE_DATA_DIR, DATA_DIR) wins.
    pub data: Option<PathBuf>,
    /// Managed storage, inside the data root; env STORAGE_DIR wins.
    pub storage: Option<PathBuf>,
}

/// How each kind of object is kept at rest: `"sealed"` (age to the master identity,
/// opened by the app to serve it) or `"plain"` (LUKS only, served by nginx with
/// X-Accel-Redirect). Defaults in nix/contract.toml [storage]: video plain, report and
/// preanonymized (carrier and sidecar) sealed. A change applies to objects stored after
/// it; stored objects keep the form their row records.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub video: Option<AtRest>,
    pub report: Option<AtRest>,
    pub preanonymized: Option<AtRest>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `127.0.0.1:PORT` or `unix:/path`; env LXGATE_LISTEN wins.
    pub listen: Option<String>,
    /// Largest accepted upload body in bytes; env UPLOAD_MAX_SIZE wins.
    pub upload_max_size: Option<u64>,
    /// Trust X-Forwarded-For from the proxy (only when nothing but nginx reaches the app).
    /// Default: on when nginx fronts the app ([host] nginx, default true) and the app
    /// listens on loopback or a unix socket, where only nginx and local accounts reach it;
    /// nginx overwrites the header with the client's address. Off, every client behind
    /// nginx shares one rate-limit bucket (127.0.0.1).
    pub trusted_proxy: Option<bool>,
    /// center_key for super_admin uploads without a key (not in central_hub);
    /// env LX_ANNOTATE_DEFAULT_CENTER wins.
    pub default_center: Option<String>,
    /// Serve protected media from the app itself (dev, no nginx) instead of X-Accel-Redirect.
    pub serve_media_directly: Option<bool>,
    /// Seconds a bearer token the database confirmed is trusted before it is asked
    /// again (default 5; 0 asks on every request). A revoked token is refused at most
    /// this long after `lxgate token revoke`.
    pub token_recheck_secs: Option<u64>,
    /// Seconds a client has to send a request's head (default 30). The same timer runs
    /// while a keep-alive connection waits for its next request: the idle timeout. With
    /// nginx in front it must exceed the time nginx keeps an idle upstream connection
    /// (nix/contract.toml [nginx.upstream] keepalive_timeout, 10 s).
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
    /// Bearer-token checks per second per source address, with bursts of twice that
    /// (default 50; 0 turns the limit off). Past it: 429 with Retry-After.
    pub token_auth_per_second: Option<u32>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// PostgreSQL URL or key=value string. Secret: never logged. Env DATABASE_URL wins.
    pub url: Option<String>,
    /// Pool size.
    pub pool_size: Option<usize>,
    /// Sealed snapshots `lxgate migrate` keeps in `<state>/snapshots/` (default 5, at
    /// least 1): each is a way back from one upgrade.
    pub keep_snapshots: Option<usize>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_db_url))
            .field("pool_size", &self.pool_size)
            .field("keep_snapshots", &self.keep_snapshots)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatcherConfig {
    /// Run lxgate-watcher.service (module/render switch).
    pub enable: Option<bool>,
    /// A file must keep (dev, inode, size, mtime) this long before ingest (ms).
    pub settle_ms: Option<u64>,
    /// A lone half of a preanonymized pair waits this long before quarantine (s).
    pub pair_timeout_secs: Option<u64>,
    /// Full rescan interval (s): drops missed while down are not lost.
    pub rescan_secs: Option<u64>,
    /// Files ingested in parallel.
    pub concurrency: Option<usize>,
    /// Directory entries considered per folder and scan: bounds memory under a burst of
    /// drops; the rest is taken in the next scan.
    pub max_per_scan: Option<usize>,
    /// MemoryMax of lxgate-watcher.service.
    pub memory_max: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SapImportConfig {
    /// Install lxgate-sap-import.path/.service.
    pub enable: Option<bool>,
    /// center_key written into sidecars (default: the default center).
    pub center_key: Option<String>,
    /// center_name written into sidecars.
    pub center_name: Option<String>,
    /// Largest uncompressed table in a bundle (bytes).
    pub max_entry_bytes: Option<u64>,
    /// Largest total uncompressed size of a bundle's tables (bytes).
    pub max_total_bytes: Option<u64>,
    /// Largest compression ratio of an entry over 1 MiB.
    pub max_ratio: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Install lxgate-data-recovery.service.
    pub enable: Option<bool>,
    /// Legacy data directory to merge from.
    pub source: Option<PathBuf>,
}

/// Facts about the host that the renderers, doctor, smoke and keys need.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    pub user: Option<String>,
    pub group: Option<String>,
    pub keys_group: Option<String>,
    /// Path of this settings file as the units see it.
    pub config: Option<String>,
    /// Age master identity, root:keys_group 0640; env LXGATE_MASTER_KEY wins.
    pub master_key: Option<String>,
    pub server_name: Option<String>,
    pub tls_certificate: Option<String>,
    pub tls_certificate_key: Option<String>,
    /// Enable the nginx server block in render.
    pub nginx: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Accept hub transfers (central_hub only); requires mTLS at nginx.
    pub transfer_api: Option<bool>,
    /// CA that signs site client certificates (nginx ssl_client_certificate).
    pub client_ca_file: Option<String>,
    /// Refuse transfer requests whose proxy attestation header is missing.
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
    /// The value that header must have.
    pub mtls_meta_value: Option<String>,
    /// Refuse transfer requests not marked `X-Forwarded-Proto: https`.
    pub require_secure_transport: Option<bool>,
    /// central_hub: accept only HMAC-signed transfer requests, never the secret header.
    pub require_signed_requests: Option<bool>,
    /// site_node: HMAC-sign requests instead of sending the secret; only for an lxgate
    /// hub with require_signed_requests (endoreg-db hubs take the secret header).
    pub sign_requests: Option<bool>,
    /// site_node: the hub's X25519 public key (PEM, `lxgate keys hub-recipient` on the
    /// hub) every media envelope is sealed to (env
    /// LX_ANNOTATE_HUB_EXPORT_RECIPIENT_PUBLIC_KEY_FILE).
    pub recipient_public_key_file: Option<PathBuf>,
    /// site_node: where each transfer's envelope and ciphertext wait until the hub has
    /// them, so a retry sends the same bytes (env LX_ANNOTATE_HUB_EXPORT_ENVELOPE_STAGING_DIR;
    /// default `{state}/hub-export-envelopes`).
    pub envelope_staging_dir: Option<PathBuf>,
    /// site_node: seconds one request to the hub may wait for its next bytes (env
    /// LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS; default 21600, > 0).
    pub request_timeout_seconds: Option<u64>,
    /// site_node: retryable failures before an export is failed for good (env
    /// LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES; default 5).
    pub max_retries: Option<u32>,
    /// central_hub: largest transfer media in bytes (env ENDOREG_HUB_TRANSFER_MAX_UPLOAD_BYTES).
    pub max_media_size: Option<u64>,
    /// central_hub: this hub's own node key; a blank `target_node_key` means this hub.
    pub hub_node_key: Option<String>,
    /// central_hub: PEM PKCS#8 X25519 private keys that open media envelopes (env
    /// ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES, comma-separated).
    pub recipient_key_files: Option<Vec<PathBuf>>,
    /// central_hub: node authentications per second per source address, with bursts of
    /// twice that (default 5; an unsigned one costs ~25 ms of PBKDF2; 0 turns the limit
    /// off). Past it: 429 with Retry-After.
    pub auth_per_second: Option<u32>,
}

/// Backups with restic (`lxgate backup`). The repository password and any credentials
/// of the repository's backend are never here: systemd hands them to lxgate-backup as
/// the credentials restic-password and restic-env (a KEY=VALUE file, e.g. AWS_* keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Back this host up: `lxgate render` writes lxgate-backup.service and .timer (the
    /// NixOS module configures services.restic.backups.lxgate instead).
    pub enable: Option<bool>,
    /// The restic repository: a path, or sftp:, rest:, s3:, ... (not a secret; the
    /// backend's credentials go in restic-env). Must be set when enable is on.
    pub repository: Option<String>,
    /// When lxgate-backup.timer fires (systemd OnCalendar; default daily).
    pub on_calendar: Option<String>,
    /// Snapshots `restic forget --prune` keeps after each backup, per day, week and
    /// month (defaults 7, 5, 12; 0 keeps none of that kind).
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
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
