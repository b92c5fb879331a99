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

mod file;
mod settings;

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

/// The attestation header the app trusts: the one nginx is rendered to set and clear
/// ([hub] mtls_meta_key, default in the contract). The endoreg-db variable may only
/// repeat it: a name nginx does not know would be a header any client can send.
fn mtls_meta_key(env: Option<String>, file: Option<&str>) -> Result<String, ConfigError> {
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
        let role_s = get("ENDOREG_DEPLOYMENT_ROLE")
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
            limits: ServerLimits::resolve(&file.server),
        };
        let db = Database {
            url: get("DATABASE_URL")
                .or_else(|| file.database.url.clone())
                .map(DatabaseUrl),
            pool_size: file
                .database
                .pool_size
                .unwrap_or(Database::DEFAULT_POOL_SIZE),
        };

        let w = &file.watcher;
        let dw = Watcher::default();
        let watcher = Watcher {
            enable: w.enable.unwrap_or(dw.enable),
            settle_ms: w.settle_ms.unwrap_or(dw.settle_ms),
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
            enabled: flag("ENDOREG_ENABLE_HUB_TRANSFERS", h.transfer_api, dh.enabled)?,
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
            require_sealed_media: h.require_sealed_media.unwrap_or(dh.require_sealed_media),
            max_media_size: h.max_media_size.unwrap_or(dh.max_media_size),
            client_ca_file: h.client_ca_file.clone().unwrap_or(dh.client_ca_file),
            auth_per_second: h.auth_per_second.unwrap_or(dh.auth_per_second),
        };
        if hub_receiver.enabled && !hub_receiver.require_mtls {
            return Err(ConfigError::TransferWithoutMtls);
        }
        if hub_receiver.enabled && role != Role::CentralHub {
            return Err(ConfigError::BadValue {
                var: "ENDOREG_ENABLE_HUB_TRANSFERS",
                value: "true".into(),
                why: format!(
                    "only a central_hub receives transfers, this node is {}; disable transfers or set the role",
                    role.as_str()
                ),
            });
        }
        let hub_export = hub_export(role, h)?;
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
    let data = match set.first() {
        Some((_, v)) => normalize(Path::new(v)),
        None => p
            .data
            .clone()
            .map(|p| normalize(&p))
            .unwrap_or_else(|| state.join("data")),
    };
    let storage = get("STORAGE_DIR")
        .map(PathBuf::from)
        .or_else(|| p.storage.clone())
        .map(|p| normalize(&p))
        .unwrap_or_else(|| data.join("storage"));
    if !storage.starts_with(&data) || storage == data {
        return Err(ConfigError::StorageOutsideRoot { storage, data });
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

/// The sender's settings when `[hub] export` is on; every missing piece named at once.
fn hub_export(role: Role, h: &HubConfig) -> Result<Option<HubExport>, ConfigError> {
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
    Ok(Some(HubExport {
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
    fn forwarded_for_is_trusted_only_behind_nginx_on_a_local_listener() {
        let trusted = |text: &str, e: &[(&str, &str)]| {
            let f: FileConfig = toml::from_str(text).unwrap();
            Config::from_parts(f, &env(e)).unwrap().server.trusted_proxy
        };
        assert!(trusted("", &[]));
        assert!(trusted(
            "",
            &[("LXGATE_LISTEN", "unix:/run/lxgate/http.sock")]
        ));
        assert!(!trusted("[host]\nnginx = false\n", &[]));
        assert!(!trusted("", &[("LXGATE_LISTEN", "0.0.0.0:8080")]));
        assert!(!trusted("[server]\ntrusted_proxy = false\n", &[]));
        assert!(trusted(
            "[server]\ntrusted_proxy = true\n",
            &[("LXGATE_LISTEN", "0.0.0.0:8080")]
        ));
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
        assert_eq!(c.paths.data, PathBuf::from("/d"));
        assert_eq!(c.paths.storage, PathBuf::from("/d/storage"));
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
    fn the_resolved_settings_never_show_the_password() {
        let file = FileConfig::parse(
            "[database]\nurl = \"postgres://u:hunter2@h/db\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let c = Config::from_parts(file, &env(&[])).unwrap();
        assert_eq!(
            c.require_database_url().unwrap(),
            "postgres://u:hunter2@h/db"
        );
        let debug = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for shown in [debug, json] {
            assert!(
                !shown.contains("hunter2") && shown.contains("u:***@h/db"),
                "{shown}"
            );
        }
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
