//! The runtime contract (`nix/contract.toml`), typed. Embedded at build time: a
//! malformed contract fails the unit tests and every binary start, never a host later.

pub mod render;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::LazyLock;

pub const CONTRACT_TOML: &str = include_str!("../../nix/contract.toml");

pub static CONTRACT: LazyLock<Contract> = LazyLock::new(|| {
    toml::from_str(CONTRACT_TOML).unwrap_or_else(|e| panic!("nix/contract.toml is malformed: {e}"))
});

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub version: u32,
    pub input: BTreeMap<String, Input>,
    pub feature: BTreeMap<String, Feature>,
    pub storage: StorageDefaults,
    pub directory: Vec<Directory>,
    pub env: Vec<EnvName>,
    pub hardening: BTreeMap<String, Section>,
    pub service_defaults: Section,
    pub unit: Vec<Unit>,
    pub nginx: Nginx,
}

impl Contract {
    /// An input's default as written (placeholders unresolved); empty for no such input.
    pub fn default_of(&self, input: &str) -> &str {
        self.input.get(input).map_or("", |i| i.default.as_str())
    }
}

/// How each kind of object is kept at rest by default: "plain" or "sealed".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageDefaults {
    pub video: String,
    pub report: String,
    pub preanonymized: String,
}

/// A render input (`{name}`): the settings-file key that sets it, and its default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub setting: Option<String>,
    pub default: String,
}

/// A feature switch: the settings-file key that turns it on, its default, and the roles
/// it is possible on (every role when absent).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub setting: Option<String>,
    pub default: bool,
    pub roles: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DirRoot {
    State,
    Data,
}

/// Who owns a directory, by role in the deployment rather than account name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Principal {
    Service,
    Keys,
    Root,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    pub root: DirRoot,
    pub path: String,
    pub mode: String,
    pub owner: Principal,
    pub group: Principal,
    pub purpose: String,
}

impl Directory {
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).expect("contract modes are octal (checked by test)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvName {
    pub name: String,
    pub aliases: Vec<String>,
    pub meaning: String,
}

/// A systemd value as written in the contract.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<String>),
}

pub type Section = BTreeMap<String, Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    pub name: String,
    pub roles: Vec<String>,
    pub feature: String,
    pub hardening: Vec<String>,
    pub as_root: bool,
    pub long_running: bool,
    #[serde(rename = "Unit")]
    pub unit: Section,
    #[serde(rename = "Service")]
    pub service: Option<Section>,
    #[serde(rename = "Path")]
    pub path: Option<Section>,
    #[serde(rename = "Timer")]
    pub timer: Option<Section>,
    #[serde(rename = "Install")]
    pub install: Option<Section>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nginx {
    pub tls: Vec<String>,
    pub upstream: Upstream,
    pub server: Vec<ServerPart>,
    pub snippets: BTreeMap<String, Vec<String>>,
    pub location: Vec<Location>,
}

/// The app as nginx's upstream: a name for `proxy_pass http://NAME`, its one server, and
/// the block's other lines (keepalive).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    pub server: String,
    pub lines: Vec<String>,
}

impl Upstream {
    /// Seconds nginx keeps an idle connection to the app (its `keepalive_timeout` line;
    /// nginx's default of 60 s without one). The app must keep idle connections longer.
    pub fn keepalive_secs(&self) -> u64 {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix("keepalive_timeout "))
            .and_then(|v| v.trim_end_matches(';').strip_suffix('s'))
            .and_then(|v| v.parse().ok())
            .unwrap_or(60)
    }
}

/// Server-level lines present when `feature` is on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerPart {
    pub feature: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub path: String,
    #[serde(default = "always")]
    pub feature: String,
    #[serde(default)]
    pub snippets: Vec<String>,
    #[serde(default)]
    pub body: Vec<String>,
}

fn always() -> String {
    "always".into()
}

impl Location {
    /// Its lines before substitution: the snippets' lines, then its own.
    pub fn lines<'a>(&'a self, c: &'a Contract) -> impl Iterator<Item = &'a String> + 'a {
        self.snippets
            .iter()
            .flat_map(move |s| c.nginx.snippets[s].iter())
            .chain(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_parses_and_is_coherent() {
        let c = &*CONTRACT;
        assert_eq!(c.version, 2);
        for l in &c.nginx.location {
            for s in &l.snippets {
                assert!(
                    c.nginx.snippets.contains_key(s),
                    "{}: unknown snippet {s}",
                    l.path
                );
            }
        }
        let features = c
            .unit
            .iter()
            .map(|u| &u.feature)
            .chain(c.nginx.server.iter().map(|p| &p.feature))
            .chain(c.nginx.location.iter().map(|l| &l.feature));
        for f in features {
            assert!(c.feature.contains_key(f), "unknown feature {f}");
        }
        for d in &c.directory {
            assert!(
                u32::from_str_radix(&d.mode, 8).is_ok(),
                "mode {} of {} is not octal",
                d.mode,
                d.path
            );
        }
        for u in &c.unit {
            for h in &u.hardening {
                assert!(
                    c.hardening.contains_key(h),
                    "{}: unknown hardening profile {h}",
                    u.name
                );
            }
            for r in &u.roles {
                assert!(
                    crate::config::Role::parse(r).is_ok(),
                    "{}: unknown role {r}",
                    u.name
                );
            }
        }
        assert!(
            c.nginx
                .upstream
                .lines
                .iter()
                .any(|l| l.starts_with("keepalive_timeout "))
                && c.nginx.upstream.keepalive_secs() < 60,
            "the upstream names its keepalive_timeout in seconds (\"keepalive_timeout 10s;\")"
        );
        // Every import subtree of SPEC §1 is provisioned.
        for sub in [
            "video_import",
            "report_import",
            "preanonymized_import",
            "sap_import",
            "sap_import_processed",
            "sap_import_failed",
        ] {
            let p = format!("import/{sub}");
            assert!(
                c.directory.iter().any(|d| d.path == p && d.mode == "0770"),
                "{p} missing"
            );
        }
    }
}
