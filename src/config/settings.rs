//! The resolved settings every command and the HTTP layer read, with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{contract_default, redact_db_url, Role, ServerConfig};

// ---------------------------------------------------------------------------------------
// The resolved settings: what every command and the HTTP layer read. Built once by
// `Config::from_parts`; each type shows its defaults. Host-specific defaults (accounts,
// paths, TLS files) come from `nix/contract.toml` [defaults], which the NixOS module
// and `nix/render.nix` read too, so they are written down once.
// ---------------------------------------------------------------------------------------

/// The effective runtime configuration after defaults, file and environment.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub role: Role,
    pub paths: Paths,
    /// How each kind of object is kept at rest.
    pub storage: StoragePolicy,
    pub server: Server,
    pub db: Database,
    pub watcher: Watcher,
    pub sap_import: SapImport,
    pub recovery: Recovery,
    pub hub_receiver: HubReceiver,
    /// Present when `[hub] export` is on (site_node); every piece checked at load.
    pub hub_export: Option<HubExport>,
    pub host: HostFacts,
    pub backup: Backup,
}

/// Where things live. All but the state root are inside the data root (checked).
#[derive(Debug, Clone, Serialize)]
pub struct Paths {
    /// State root: env file, staticfiles, keys. Default: contract `state`
    /// (/var/lib/lxgate).
    pub state: PathBuf,
    /// Data root (LX_ANNOTATE_ENCRYPTED_DATA_DIR and aliases). Default `{state}/data`.
    pub data: PathBuf,
    /// Managed storage (STORAGE_DIR). Default `{data}/storage`.
    pub storage: PathBuf,
    /// Streamable videos (LX_ANNOTATE_STREAMABLE_VIDEO_ROOT). Default `{data}/streamable`.
    pub streamable: PathBuf,
}

impl Paths {
    /// The drop folders' parent.
    pub fn import(&self) -> PathBuf {
        self.data.join("import")
    }
    pub fn quarantine(&self) -> PathBuf {
        self.data.join("quarantine")
    }
    pub fn logs(&self) -> PathBuf {
        self.data.join("logs")
    }
}

/// How an object is kept at rest in managed storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtRest {
    /// On the LUKS data root as it came; nginx serves it (X-Accel-Redirect).
    Plain,
    /// Sealed with age to the master identity while staged; the app opens it to serve it.
    Sealed,
}

impl AtRest {
    pub fn parse(s: &str) -> Option<AtRest> {
        match s {
            "plain" => Some(AtRest::Plain),
            "sealed" => Some(AtRest::Sealed),
            _ => None,
        }
    }
}

/// Per kind of media, how it is kept at rest. Defaults: contract [storage].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StoragePolicy {
    pub video: AtRest,
    pub report: AtRest,
    pub preanonymized: AtRest,
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// `127.0.0.1:PORT` or `unix:/absolute/path`. Default: contract `listen`
    /// (127.0.0.1:8080).
    pub listen: String,
    /// Largest accepted upload body in bytes (UPLOAD_MAX_SIZE).
    pub upload_max_size: u64,
    /// Believe X-Forwarded-For (only when nothing but nginx reaches the app).
    pub trusted_proxy: bool,
    /// center_key for uploads and drops that name none (never used on a central_hub).
    pub default_center: Option<String>,
    /// Stream protected media from the app (dev, no nginx) instead of X-Accel-Redirect.
    pub serve_media_directly: bool,
    /// How long a confirmed bearer token is trusted without asking the database: the
    /// bound on how late a revocation takes effect.
    pub token_recheck: Duration,
    pub limits: ServerLimits,
}

/// What one client may hold of `lxgate serve`: time, connections, upload slots.
#[derive(Debug, Clone, Serialize)]
pub struct ServerLimits {
    /// To send a request's head; also how long an idle keep-alive connection stays.
    pub header_timeout: Duration,
    /// A request body that sends nothing this long is cut.
    pub body_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Uploads (API and hub media) at once; past it 503 + Retry-After.
    pub max_uploads: usize,
    /// After SIGTERM, requests in flight get this long, then are closed.
    pub shutdown_timeout: Duration,
    /// Bearer-token checks per second from one source address (bursts of twice that);
    /// 0 = unlimited.
    pub token_auth_per_second: u32,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_uploads: 64,
            shutdown_timeout: Duration::from_secs(20),
            token_auth_per_second: 50,
        }
    }
}

impl ServerLimits {
    pub(super) fn resolve(s: &ServerConfig) -> ServerLimits {
        let d = ServerLimits::default();
        // Zero would mean "no time at all" or "nothing at once": one is the least.
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, |v| Duration::from_secs(v.max(1)));
        ServerLimits {
            header_timeout: secs(s.header_timeout_secs, d.header_timeout),
            body_timeout: secs(s.body_timeout_secs, d.body_timeout),
            max_connections: s.max_connections.unwrap_or(d.max_connections).max(1),
            max_uploads: s.max_uploads.unwrap_or(d.max_uploads).max(1),
            shutdown_timeout: secs(s.shutdown_timeout_secs, d.shutdown_timeout),
            token_auth_per_second: s.token_auth_per_second.unwrap_or(d.token_auth_per_second),
        }
    }
}

impl Server {
    /// A few seconds: a video player's range requests within it cost no token lookup,
    /// and a revocation still takes effect almost at once.
    pub const DEFAULT_TOKEN_RECHECK: Duration = Duration::from_secs(5);
    pub const MAX_TOKEN_RECHECK_SECS: u64 = 60;
    /// 100 MiB: the API's limit for one upload (lx-annotate's value).
    pub const DEFAULT_UPLOAD_MAX_SIZE: u64 = 104_857_600;
}

#[derive(Debug, Clone, Serialize)]
pub struct Database {
    /// None until DATABASE_URL or `[database] url` is set; commands that need it say so.
    pub url: Option<DatabaseUrl>,
    pub pool_size: usize,
    pub keep_snapshots: usize,
}

impl Database {
    pub const DEFAULT_POOL_SIZE: usize = 16;
    pub const DEFAULT_KEEP_SNAPSHOTS: usize = 5;
}

/// A PostgreSQL URL or key=value string. Its password must reach neither a log line nor
/// `lxgate config check`: Debug and Serialize print it redacted; `expose` is only for
/// connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub(super) String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn redacted(&self) -> String {
        redact_db_url(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Watcher {
    /// Run lxgate-watcher.service.
    pub enable: bool,
    /// A file must keep (dev, inode, size, mtime) this long before ingest (ms).
    pub settle_ms: u64,
    /// How often a settling file is looked at again (ms); None: half the settle time.
    /// Set by `WATCHER_POLL_INTERVAL_SECONDS` (an lx-annotate env file) only.
    pub poll_ms: Option<u64>,
    /// A lone half of a preanonymized pair waits this long before quarantine (s).
    pub pair_timeout_secs: u64,
    /// Full rescan interval (s).
    pub rescan_secs: u64,
    /// Files ingested in parallel (at least 1).
    pub concurrency: usize,
    /// Directory entries considered per folder and scan (at least 1).
    pub max_per_scan: usize,
    /// MemoryMax of lxgate-watcher.service. Default: contract `watcher_memory_max` (512M).
    pub memory_max: String,
}

impl Default for Watcher {
    fn default() -> Watcher {
        Watcher {
            enable: true,
            settle_ms: 2000,
            poll_ms: None,
            pair_timeout_secs: 300,
            rescan_secs: 30,
            concurrency: 4,
            max_per_scan: 4096,
            memory_max: contract_default("watcher_memory_max"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SapImport {
    /// Install lxgate-sap-import.path/.service.
    pub enable: bool,
    /// center_key written into sidecars; None = the default center.
    pub center_key: Option<String>,
    /// center_name written into sidecars; None = the center key.
    pub center_name: Option<String>,
    /// Largest uncompressed table in a bundle (bytes).
    pub max_entry_bytes: u64,
    /// Largest total uncompressed size of a bundle's tables (bytes).
    pub max_total_bytes: u64,
    /// Largest compression ratio of an entry over 1 MiB.
    pub max_ratio: u64,
}

impl SapImport {
    pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 64 << 20;
    pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 512 << 20;
    pub const DEFAULT_MAX_RATIO: u64 = 100;
}

impl Default for SapImport {
    fn default() -> SapImport {
        SapImport {
            enable: false,
            center_key: None,
            center_name: None,
            max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
            max_total_bytes: Self::DEFAULT_MAX_TOTAL_BYTES,
            max_ratio: Self::DEFAULT_MAX_RATIO,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    /// Install lxgate-data-recovery.service.
    pub enable: bool,
    /// Legacy data directory to merge from. Default: contract `recovery_source`.
    pub source: PathBuf,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            enable: false,
            source: PathBuf::from(contract_default("recovery_source")),
        }
    }
}

/// The hub transfer receiver's switches (SPEC §8).
#[derive(Debug, Clone, Serialize)]
pub struct HubReceiver {
    /// Answer the transfer endpoints (central_hub only; else they are 404).
    pub enabled: bool,
    /// Require the proxy's client-certificate attestation header; false while enabled is
    /// a configuration error.
    pub require_mtls: bool,
    /// The attestation header nginx sets from `$ssl_client_verify`.
    pub mtls_meta_key: String,
    /// The value that header must carry.
    pub mtls_meta_value: String,
    /// Require `X-Forwarded-Proto: https`.
    pub require_secure_transport: bool,
    /// Accept only HMAC-signed requests, never the secret header (endoreg-db senders send
    /// the secret, hence off by default).
    pub require_signed_requests: bool,
    /// Largest transfer media in bytes: nginx's client_max_body_size, since videos
    /// outgrow the API's UPLOAD_MAX_SIZE.
    pub max_media_size: u64,
    /// CA that signs the sites' client certificates (nginx ssl_client_certificate).
    /// Default: contract `client_ca_file`.
    pub client_ca_file: String,
    /// Node authentications per second from one source address (bursts of twice that;
    /// an unsigned one costs ~25 ms of PBKDF2); 0 = unlimited.
    pub auth_per_second: u32,
    /// This hub's node key: the `target_node_key` sites name (blank names it too).
    pub node_key: String,
    /// The keyring that opens media envelopes (systemd credentials on NixOS).
    pub recipient_key_files: Vec<std::path::PathBuf>,
}

impl Default for HubReceiver {
    fn default() -> HubReceiver {
        HubReceiver {
            enabled: false,
            require_mtls: true,
            mtls_meta_key: contract_default("mtls_meta_key"),
            mtls_meta_value: "SUCCESS".into(),
            require_secure_transport: true,
            require_signed_requests: false,
            max_media_size: 50 << 30,
            client_ca_file: contract_default("client_ca_file"),
            auth_per_second: 5,
            node_key: "hub".into(),
            recipient_key_files: Vec::new(),
        }
    }
}

/// The site's sender when `[hub] export` is on (SPEC §8). The node secret and the
/// client key are not here: they are read from systemd credentials when a run starts.
#[derive(Debug, Clone, Serialize)]
pub struct HubExport {
    /// https base URL of the hub, without a trailing slash.
    pub url: String,
    pub node_key: String,
    pub target_node_key: String,
    pub ca_file: PathBuf,
    pub client_certificate: PathBuf,
    /// Used only when no `hub-client-key` credential is loaded.
    pub client_certificate_key: Option<PathBuf>,
    /// HMAC-sign requests (the secret never travels); both ends must enable it, so the
    /// default (false) sends X-Network-Node-Secret as endoreg-db hubs expect.
    pub sign_requests: bool,
    /// The hub's X25519 public key (PEM) media envelopes are sealed to.
    pub recipient_public_key_file: PathBuf,
    /// Per-transfer envelope and ciphertext, kept until the hub has them.
    pub envelope_staging_dir: PathBuf,
    /// How long one request to the hub may wait for the next bytes, in seconds (as
    /// lx-annotate's `requests` timeout; default 21600: a media upload of tens of GiB).
    pub request_timeout_seconds: u64,
    /// After this many attempts ended in a retryable failure, the export is failed
    /// for good with its last reason (lx-annotate counts the same way; default 5).
    pub max_retries: u32,
}

impl HubExport {
    pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 21600;
    pub const DEFAULT_MAX_RETRIES: u32 = 5;
}

/// Facts about the host: accounts, the key and TLS files, nginx. Defaults: contract
/// [defaults] of the same names; `master_key` defaults to `{state}/keys/master.age`.
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    /// Service account and its group.
    pub user: String,
    pub group: String,
    /// Group that may read the master key (the service user is a member).
    pub keys_group: String,
    /// Path of the settings file as the units see it.
    pub config: String,
    /// Age master identity, root:keys_group 0640.
    pub master_key: PathBuf,
    pub server_name: String,
    pub tls_certificate: String,
    pub tls_certificate_key: String,
    /// Render and check the nginx server block.
    pub nginx: bool,
}

/// Backups with restic (`lxgate backup`); the password and backend credentials are
/// read from systemd credentials when a run starts, never from the settings.
#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    /// Render lxgate-backup.service and .timer.
    pub enable: bool,
    /// The restic repository; required when enabled (checked at load). Shown with a
    /// URL password redacted.
    #[serde(serialize_with = "redacted_repository")]
    pub repository: Option<String>,
    /// OnCalendar of lxgate-backup.timer. Default: contract `backup_on_calendar`.
    pub on_calendar: String,
    /// `restic forget --prune --keep-daily/--keep-weekly/--keep-monthly` after a backup.
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

impl Default for Backup {
    fn default() -> Backup {
        Backup {
            enable: false,
            repository: None,
            on_calendar: contract_default("backup_on_calendar"),
            keep_daily: 7,
            keep_weekly: 5,
            keep_monthly: 12,
        }
    }
}

fn redacted_repository<S: serde::Serializer>(r: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => s.serialize_some(&super::redact_repository(r)),
        None => s.serialize_none(),
    }
}
