//! Settings (TOML file) plus the environment contract of SPEC §1, resolved once into
//! typed settings (`Config`) that every command, the renderers and the HTTP layer read.
//!
//! Precedence: defaults < file < environment. Every file table denies unknown keys: on a
//! hospital host a typo in a nested table is an error, never a silently ignored line.
//! This module depends on nothing in the crate but the contract's data (and the age
//! parser that checks a recipient at load).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::contract::CONTRACT;

mod env;
mod file;
mod settings;

pub use env::{header_from_meta_key, watcher_log_filter, TRANSFER_SWITCHES};
use env::{hub_export, mtls_meta_key, transfers_enabled, truthy, watcher_env};
pub use file::*;
pub use settings::*;

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
    #[error("ENDOREG_DEPLOYMENT_ROLE={0:?} is not supported: lxgate, like lx-annotate 1.6.4, runs as standalone, site_node or central_hub (the local study server's preanonymized-only intake is endoreg-db's own mode). Set ENDOREG_DEPLOYMENT_ROLE=standalone and drop validated pairs into import/preanonymized_import, or keep this host on endoreg-db")]
    LocalStudyServer(String),
    #[error("{var}={value:?} is not valid: {why}")]
    BadValue {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("no database configured: set DATABASE_URL or [database] url in the config file")]
    NoDatabase,
    #[error("[backup]: {0}")]
    Backup(String),
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
    /// Any case and surrounding blanks, as lx-annotate lower-cases and strips the value;
    /// blank means standalone, as there.
    pub fn parse(s: &str) -> Result<Role, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "standalone" => Ok(Role::Standalone),
            "site_node" => Ok(Role::SiteNode),
            "central_hub" => Ok(Role::CentralHub),
            "local_study_server" => Err(ConfigError::LocalStudyServer(s.to_string())),
            _ => Err(ConfigError::UnknownRole(s.to_string())),
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

/// Only local processes can connect: a unix socket or a loopback address.
fn listens_locally(listen: &str) -> bool {
    listen.starts_with("unix:/")
        || listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
}

/// A host-specific default: the contract's render input of that name.
fn contract_default(key: &str) -> String {
    CONTRACT.default_of(key).to_string()
}

/// Replace any password in a URL or key=value connection string with `***`.
/// A restic repository as it may be shown: a password in a URL's authority
/// (`rest:https://user:pass@host/…`, which restic accepts) becomes `***`.
pub fn redact_repository(repo: &str) -> String {
    let Some(i) = repo.find("://") else {
        return repo.to_string();
    };
    let (head, rest) = repo.split_at(i + 3);
    let authority = rest.split('/').next().unwrap_or("");
    match authority.rfind('@').and_then(|at| {
        let cred = &authority[..at];
        cred.find(':').map(|c| (c, at))
    }) {
        Some((colon, at)) => format!("{head}{}:***{}", &rest[..colon], &rest[at..]),
        None => repo.to_string(),
    }
}

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

/// Where the environment comes from; tests pass a map instead of mutating the process env.
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars().collect()
}

impl Config {
    /// Resolve from an optional file path and an environment map.
    pub fn resolve(path: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
        let file = FileConfig::load(path)?;
        Self::from_parts(file, env)
    }

    /// The one resolver: defaults < file < environment, then the cross-checks.
    pub fn from_parts(file: FileConfig, env: &Env) -> Result<Config, ConfigError> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let flag = |var: &'static str, file_value: Option<bool>, default: bool| match get(var) {
            Some(v) => truthy(var, v),
            None => Ok(file_value.unwrap_or(default)),
        };
        let role_s = get("ENDOREG_DEPLOYMENT_ROLE")
            .filter(|v| !v.trim().is_empty())
            .or_else(|| file.role.clone())
            .unwrap_or_else(|| "standalone".into());
        let role = Role::parse(&role_s)?;
        let paths = resolve_paths(&file.paths, &get)?;
        let storage = storage_policy(&file.storage)?;

        let listen = get("LXGATE_LISTEN")
            .or_else(|| file.server.listen.clone())
            .unwrap_or_else(|| contract_default("listen"));
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
            None => file
                .server
                .upload_max_size
                .unwrap_or(Server::DEFAULT_UPLOAD_MAX_SIZE),
        };
        let server = Server {
            listen: listen.clone(),
            upload_max_size,
            trusted_proxy: file
                .server
                .trusted_proxy
                .unwrap_or(file.host.nginx.unwrap_or(true) && listens_locally(&listen)),
            default_center: get("LX_ANNOTATE_DEFAULT_CENTER")
                .or_else(|| file.server.default_center.clone()),
            serve_media_directly: file.server.serve_media_directly.unwrap_or(false),
            token_recheck: match file.server.token_recheck_secs {
                None => Server::DEFAULT_TOKEN_RECHECK,
                Some(s) if s <= Server::MAX_TOKEN_RECHECK_SECS => std::time::Duration::from_secs(s),
                Some(s) => {
                    return Err(ConfigError::BadValue {
                        var: "[server] token_recheck_secs",
                        value: s.to_string(),
                        why: format!(
                            "a revoked token would stay usable for up to {s} s: use at most {} (default 5)",
                            Server::MAX_TOKEN_RECHECK_SECS
                        ),
                    })
                }
            },
            limits: ServerLimits::resolve(&file.server),
        };
        // nginx keeps idle connections to the app open; if the app closed one first, a
        // request nginx writes on it (an upload it cannot resend) would end in a 502.
        let nginx_idle = CONTRACT.nginx.upstream.keepalive_secs();
        if file.host.nginx.unwrap_or(true) && server.limits.header_timeout.as_secs() <= nginx_idle {
            return Err(ConfigError::BadValue {
                var: "[server] header_timeout_secs",
                value: server.limits.header_timeout.as_secs().to_string(),
                why: format!(
                    "nginx keeps an idle connection to the app for {nginx_idle} s, so the app must keep it longer: set at least {} (default 30), or [host] nginx = false when nothing fronts the app",
                    nginx_idle + 5
                ),
            });
        }
        let db = Database {
            url: get("DATABASE_URL")
                .or_else(|| file.database.url.clone())
                .map(DatabaseUrl),
            pool_size: file
                .database
                .pool_size
                .unwrap_or(Database::DEFAULT_POOL_SIZE),
            // The snapshot just taken is always kept: it is the way back from this run.
            keep_snapshots: file
                .database
                .keep_snapshots
                .unwrap_or(Database::DEFAULT_KEEP_SNAPSHOTS)
                .max(1),
        };

        let w = &file.watcher;
        let dw = Watcher::default();
        let reference_watcher = watcher_env(&get, &paths)?;
        let watcher = Watcher {
            enable: w.enable.unwrap_or(dw.enable),
            settle_ms: reference_watcher
                .stable_after_ms
                .or(w.settle_ms)
                .unwrap_or(dw.settle_ms),
            poll_ms: reference_watcher.poll_ms,
            pair_timeout_secs: w.pair_timeout_secs.unwrap_or(dw.pair_timeout_secs),
            rescan_secs: w.rescan_secs.unwrap_or(dw.rescan_secs),
            concurrency: w.concurrency.unwrap_or(dw.concurrency).max(1),
            max_per_scan: w.max_per_scan.unwrap_or(dw.max_per_scan).max(1),
            memory_max: w.memory_max.clone().unwrap_or(dw.memory_max),
        };
        let s = &file.sap_import;
        let ds = SapImport::default();
        let sap_import = SapImport {
            enable: s.enable.unwrap_or(ds.enable),
            center_key: s.center_key.clone(),
            center_name: s.center_name.clone(),
            max_entry_bytes: s.max_entry_bytes.unwrap_or(ds.max_entry_bytes),
            max_total_bytes: s.max_total_bytes.unwrap_or(ds.max_total_bytes),
            max_ratio: s.max_ratio.unwrap_or(ds.max_ratio),
        };
        let dr = Recovery::default();
        let recovery = Recovery {
            enable: file.recovery.enable.unwrap_or(dr.enable),
            source: file.recovery.source.clone().unwrap_or(dr.source),
        };

        let h = &file.hub;
        let dh = HubReceiver::default();
        let hub_receiver = HubReceiver {
            enabled: transfers_enabled(&get, h.transfer_api, dh.enabled)?,
            require_mtls: flag(
                "ENDOREG_HUB_TRANSFER_REQUIRE_MTLS",
                h.require_mtls,
                dh.require_mtls,
            )?,
            mtls_meta_key: mtls_meta_key(
                get("ENDOREG_HUB_TRANSFER_MTLS_META_KEY"),
                h.mtls_meta_key.as_deref(),
            )?,
            mtls_meta_value: get("ENDOREG_HUB_TRANSFER_MTLS_META_VALUE")
                .or_else(|| h.mtls_meta_value.clone())
                .unwrap_or(dh.mtls_meta_value),
            require_secure_transport: flag(
                "ENDOREG_HUB_TRANSFER_REQUIRE_SECURE_TRANSPORT",
                h.require_secure_transport,
                dh.require_secure_transport,
            )?,
            require_signed_requests: h
                .require_signed_requests
                .unwrap_or(dh.require_signed_requests),
            max_media_size: match get("ENDOREG_HUB_TRANSFER_MAX_UPLOAD_BYTES") {
                Some(v) => v.trim().parse::<u64>().map_err(|_| ConfigError::BadValue {
                    var: "ENDOREG_HUB_TRANSFER_MAX_UPLOAD_BYTES",
                    value: v.clone(),
                    why: "a whole number of bytes, e.g. 53687091200".into(),
                })?,
                None => h.max_media_size.unwrap_or(dh.max_media_size),
            },
            client_ca_file: h.client_ca_file.clone().unwrap_or(dh.client_ca_file),
            auth_per_second: h.auth_per_second.unwrap_or(dh.auth_per_second),
            node_key: h.hub_node_key.clone().unwrap_or(dh.node_key),
            // The reference's form: absolute paths, comma-separated.
            recipient_key_files: match get("ENDOREG_HUB_TRANSFER_RECIPIENT_PRIVATE_KEY_FILES") {
                Some(v) => v
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect(),
                None => h.recipient_key_files.clone().unwrap_or_default(),
            },
        };
        if hub_receiver.enabled && !hub_receiver.require_mtls {
            return Err(ConfigError::TransferWithoutMtls);
        }
        if hub_receiver.enabled && role != Role::CentralHub {
            return Err(ConfigError::BadValue {
                var: TRANSFER_SWITCHES
                    .into_iter()
                    .find(|v| get(v).is_some())
                    .unwrap_or(TRANSFER_SWITCHES[0]),
                value: "true".into(),
                why: format!(
                    "only a central_hub receives transfers, this node is {}; disable transfers or set the role",
                    role.as_str()
                ),
            });
        }
        let hub_export = hub_export(role, h, &get, &paths)?;
        let mut host = resolve_host(&file.host, &paths);
        if let Some(key) = get("LXGATE_MASTER_KEY") {
            host.master_key = PathBuf::from(key);
        }
        let backup = resolve_backup(&file.backup)?;

        Ok(Config {
            role,
            paths,
            storage,
            server,
            db,
            watcher,
            sap_import,
            recovery,
            hub_receiver,
            hub_export,
            host,
            backup,
        })
    }

    /// The resolved values the contract's [input] and [feature] tables name, in the
    /// settings file's shape (`host.user`, `hub.transfer_api`, ...): the renders read
    /// them through those tables, as nix/render.nix reads the module's settings.
    pub fn settings_tree(&self) -> toml::Value {
        let path = |p: &Path| p.display().to_string();
        let hub = &self.hub_receiver;
        let tree = serde_json::json!({
            "role": self.role.as_str(),
            "paths": {
                "state": path(&self.paths.state),
                "data": path(&self.paths.data),
                "storage": path(&self.paths.storage),
            },
            "server": { "listen": self.server.listen },
            "host": {
                "user": self.host.user,
                "group": self.host.group,
                "keys_group": self.host.keys_group,
                "config": self.host.config,
                "master_key": path(&self.host.master_key),
                "server_name": self.host.server_name,
                "tls_certificate": self.host.tls_certificate,
                "tls_certificate_key": self.host.tls_certificate_key,
                "nginx": self.host.nginx,
            },
            "hub": {
                "client_ca_file": hub.client_ca_file,
                "mtls_meta_key": hub.mtls_meta_key,
                "transfer_api": hub.enabled,
                "export": self.hub_export.is_some(),
            },
            "recovery": { "enable": self.recovery.enable, "source": path(&self.recovery.source) },
            "watcher": { "enable": self.watcher.enable, "memory_max": self.watcher.memory_max },
            "sap_import": { "enable": self.sap_import.enable },
            "backup": { "enable": self.backup.enable, "on_calendar": self.backup.on_calendar },
        });
        toml::Value::try_from(tree).expect("strings and booleans are TOML")
    }

    pub fn require_database_url(&self) -> Result<&str, ConfigError> {
        self.db
            .url
            .as_ref()
            .map(DatabaseUrl::expose)
            .ok_or(ConfigError::NoDatabase)
    }
}

/// Each kind's form at rest: the settings file, else the contract's [storage] default.
fn storage_policy(s: &StorageConfig) -> Result<StoragePolicy, ConfigError> {
    let d = &CONTRACT.storage;
    let or = |v: Option<AtRest>, kind: &'static str, default: &str| match v {
        Some(v) => Ok(v),
        None => AtRest::parse(default).ok_or_else(|| ConfigError::BadValue {
            var: kind,
            value: default.to_string(),
            why: "nix/contract.toml [storage] must say \"plain\" or \"sealed\"".into(),
        }),
    };
    Ok(StoragePolicy {
        video: or(s.video, "[storage] video", &d.video)?,
        report: or(s.report, "[storage] report", &d.report)?,
        preanonymized: or(s.preanonymized, "[storage] preanonymized", &d.preanonymized)?,
    })
}

/// Every name of the data root; all that are set must agree. `LX_RUNTIME_ROOT` is the
/// name lx-annotate 1.6.4 reads, the others the names of its earlier releases.
pub const DATA_ROOT_NAMES: [&str; 4] = [
    "LX_ANNOTATE_ENCRYPTED_DATA_DIR",
    "LX_RUNTIME_ROOT",
    "LX_ANNOTATE_DATA_DIR",
    "DATA_DIR",
];

/// The data root and what must live inside it.
fn resolve_paths(
    p: &PathsConfig,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Paths, ConfigError> {
    let state = p
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from(contract_default("state")));

    // The data root: the canonical name and its aliases must agree.
    let names = DATA_ROOT_NAMES;
    if let Some(v) = get("LX_RUNTIME_ROOT") {
        if !Path::new(v.trim()).is_absolute() {
            return Err(ConfigError::BadValue {
                var: "LX_RUNTIME_ROOT",
                value: v,
                why: "the runtime root must be an absolute path, e.g. /var/lib/lxgate/data".into(),
            });
        }
    }
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
    let data = match set.first() {
        Some((_, v)) => normalize(Path::new(v)),
        None => p
            .data
            .clone()
            .map(|p| normalize(&p))
            .unwrap_or_else(|| state.join("data")),
    };
    // STORAGE_DIR equal to the data root is what lx-annotate's migration writes; the
    // reference (endoreg-db 1.6.5) then keeps storage at <root>/storage, and so do we.
    let storage = get("STORAGE_DIR")
        .map(|v| normalize(Path::new(&v)))
        .filter(|s| *s != data)
        .or_else(|| p.storage.clone().map(|p| normalize(&p)))
        .unwrap_or_else(|| data.join("storage"));
    if !storage.starts_with(&data) || storage == data {
        return Err(ConfigError::StorageOutsideRoot { storage, data });
    }
    // Earlier endoreg-db moved import/, export/, logs/ and quarantine/ with IO_DIR; 1.6.5
    // and lxgate keep them in the data root. Equal to it (as the migration writes) is fine.
    if let Some(v) = get("IO_DIR") {
        if normalize(Path::new(&v)) != data {
            return Err(ConfigError::BadValue {
                var: "IO_DIR",
                value: v,
                why: format!(
                    "lxgate keeps import/, export/, logs/ and quarantine/ in the data root {} (as endoreg-db 1.6.5 does); move them there and set IO_DIR={} or unset it",
                    data.display(),
                    data.display()
                ),
            });
        }
    }
    let streamable = get("LX_ANNOTATE_STREAMABLE_VIDEO_ROOT")
        .map(|p| normalize(Path::new(&p)))
        .unwrap_or_else(|| data.join("streamable"));
    if !streamable.starts_with(&data) {
        return Err(ConfigError::OutsideRoot {
            what: "LX_ANNOTATE_STREAMABLE_VIDEO_ROOT",
            path: streamable,
            data,
        });
    }
    Ok(Paths {
        state,
        data,
        storage,
        streamable,
    })
}

/// Host facts from the file, else the contract's defaults. A value may name `{state}`,
/// `{data}` or `{storage}` (the contract's master_key default does), as in the renders.
fn resolve_host(h: &HostConfig, paths: &Paths) -> HostFacts {
    let expand = |s: String| {
        s.replace("{state}", &paths.state.display().to_string())
            .replace("{data}", &paths.data.display().to_string())
            .replace("{storage}", &paths.storage.display().to_string())
    };
    let or =
        |v: &Option<String>, key: &str| expand(v.clone().unwrap_or_else(|| contract_default(key)));
    HostFacts {
        user: or(&h.user, "user"),
        group: or(&h.group, "group"),
        keys_group: or(&h.keys_group, "keys_group"),
        config: or(&h.config, "config"),
        master_key: PathBuf::from(or(&h.master_key, "master_key")),
        server_name: or(&h.server_name, "server_name"),
        tls_certificate: or(&h.tls_certificate, "tls_certificate"),
        tls_certificate_key: or(&h.tls_certificate_key, "tls_certificate_key"),
        nginx: h.nginx.unwrap_or(true),
    }
}

fn resolve_backup(b: &BackupConfig) -> Result<Backup, ConfigError> {
    let d = Backup::default();
    let backup = Backup {
        enable: b.enable.unwrap_or(d.enable),
        repository: b.repository.clone().filter(|r| !r.trim().is_empty()),
        on_calendar: b.on_calendar.clone().unwrap_or(d.on_calendar),
        keep_daily: b.keep_daily.unwrap_or(d.keep_daily),
        keep_weekly: b.keep_weekly.unwrap_or(d.keep_weekly),
        keep_monthly: b.keep_monthly.unwrap_or(d.keep_monthly),
    };
    if backup.enable && backup.repository.is_none() {
        return Err(ConfigError::Backup(
            "enable = true names no restic repository; set repository (a path, sftp:, rest:, s3:, ...) or enable = false".into(),
        ));
    }
    Ok(backup)
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
mod tests;
