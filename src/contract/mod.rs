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
    pub defaults: BTreeMap<String, String>,
    pub directory: Vec<Directory>,
    pub env: Vec<EnvName>,
    pub hardening: BTreeMap<String, Section>,
    pub service_defaults: Section,
    pub unit: Vec<Unit>,
    pub nginx: Nginx,
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
    pub client_max_body_size: String,
    pub location: Vec<Location>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub path: String,
    pub internal: bool,
    #[serde(default)]
    pub hub_transfer: bool,
    pub body: Vec<String>,
}

pub const FEATURES: &[&str] = &["always", "watcher", "sap_import", "recovery", "hub_export"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_parses_and_is_coherent() {
        let c = &*CONTRACT;
        assert_eq!(c.version, 1);
        for d in &c.directory {
            assert!(
                u32::from_str_radix(&d.mode, 8).is_ok(),
                "mode {} of {} is not octal",
                d.mode,
                d.path
            );
        }
        for u in &c.unit {
            assert!(
                FEATURES.contains(&u.feature.as_str()),
                "{}: unknown feature {}",
                u.name,
                u.feature
            );
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
