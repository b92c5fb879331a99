//! `lxgate doctor`: check a host (or a tree under `--root`, for tests) against the
//! contract. One line per check; every failure says the fix; exit 0 only if all pass.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{Config, Env, FileConfig};
use crate::contract::render::{directory_path, Inputs};
use crate::contract::CONTRACT;

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn pass(check: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }
    pub(crate) fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            check: check.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Account names → ids from `<root>/etc/passwd` and `<root>/etc/group`.
pub struct Accounts {
    users: BTreeMap<String, u32>,
    groups: BTreeMap<String, (u32, Vec<String>)>,
    primary: BTreeMap<String, u32>,
}

impl Accounts {
    pub fn load(root: &Path) -> Accounts {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_default();
        let mut users = BTreeMap::new();
        let mut primary = BTreeMap::new();
        for line in read("etc/passwd").lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    users.insert(f[0].to_string(), uid);
                    primary.insert(f[0].to_string(), gid);
                }
            }
        }
        let mut groups = BTreeMap::new();
        for line in read("etc/group").lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 {
                if let Ok(gid) = f[2].parse() {
                    let members = f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect();
                    groups.insert(f[0].to_string(), (gid, members));
                }
            }
        }
        Accounts {
            users,
            groups,
            primary,
        }
    }
    pub fn uid(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }
    pub fn gid(&self, name: &str) -> Option<u32> {
        self.groups.get(name).map(|g| g.0)
    }
    pub fn in_group(&self, user: &str, group: &str) -> bool {
        let Some((gid, members)) = self.groups.get(group) else {
            return false;
        };
        members.iter().any(|m| m == user) || self.primary.get(user) == Some(gid)
    }
}

fn under(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// What every host check looks at: the resolved settings (when the environment
/// resolves), the render inputs, the accounts, and the tree under `root`.
struct Host<'a> {
    config: Option<Config>,
    inputs: Inputs,
    accounts: Accounts,
    root: &'a Path,
}

impl Host<'_> {
    fn path(&self, p: &str) -> PathBuf {
        under(self.root, p)
    }
}

/// The host checks, in the order they are reported; each says what it found and the fix.
const HOST_CHECKS: &[fn(&Host) -> Vec<Check>] =
    &[directories, master_key, key_group, hub_client_ca];

pub async fn run(file: &FileConfig, env: &Env, root: &Path) -> Vec<Check> {
    let (env_check, config) = match Config::from_parts(file.clone(), env) {
        Ok(c) => (
            Check::pass(
                "env",
                "data root variables agree; STORAGE_DIR inside the data root; role valid",
            ),
            Some(c),
        ),
        Err(e) => (
            Check::fail(
                "env",
                e.to_string(),
                "correct the variable named above in the env file or unit",
            ),
            None,
        ),
    };
    let mut checks = vec![env_check];
    // The host checks still run when the environment is wrong: then they use the file
    // alone, through the same resolver with an empty environment.
    let settings = match &config {
        Some(c) => c.clone(),
        None => match Config::from_parts(file.clone(), &Env::new()) {
            Ok(c) => c,
            Err(_) => return checks,
        },
    };
    let host = Host {
        inputs: Inputs::from_settings(&settings, None),
        config,
        accounts: Accounts::load(root),
        root,
    };
    for check in HOST_CHECKS {
        checks.extend(check(&host));
    }
    checks.extend(database(host.config.as_ref()).await);
    checks.extend(sealed_objects(host.config.as_ref(), root).await);
    checks
}

/// Every directory of the contract: present, mode, owner, group.
fn directories(h: &Host) -> Vec<Check> {
    CONTRACT
        .directory
        .iter()
        .map(|d| {
            let path = directory_path(&h.inputs, d.root, &d.path);
            let owner = h.inputs.owner(d.owner).to_string();
            let group = h.inputs.group(d.group).to_string();
            let fix = format!(
                "run `systemd-tmpfiles --create` (or: install -d -m {} -o {owner} -g {group} {path})",
                d.mode
            );
            let name = format!("dir {path}");
            let m = match std::fs::symlink_metadata(h.path(&path)) {
                Err(_) => return Check::fail(name, "missing", fix),
                Ok(m) if !m.is_dir() => {
                    return Check::fail(name, "exists but is not a directory", fix)
                }
                Ok(m) => m,
            };
            let mode = m.permissions().mode() & 0o7777;
            let mut wrong = Vec::new();
            if mode != d.mode_bits() {
                wrong.push(format!("mode {mode:04o}, want {}", d.mode));
            }
            if h.accounts.uid(&owner) != Some(m.uid()) {
                wrong.push(format!("owner uid {}, want {owner}", m.uid()));
            }
            if h.accounts.gid(&group) != Some(m.gid()) {
                wrong.push(format!("group gid {}, want {group}", m.gid()));
            }
            if wrong.is_empty() {
                Check::pass(name, format!("{} {owner}:{group}", d.mode))
            } else {
                Check::fail(name, wrong.join("; "), fix)
            }
        })
        .collect()
}

/// The master key: root:<keys group> 0640. 0400 root:root would lock the service out;
/// 0644 would leak the key to every account.
fn master_key(h: &Host) -> Vec<Check> {
    let key = h.inputs.get("master_key");
    let keys_group = h.inputs.get("keys_group");
    let name = format!("key {key}");
    let check = match std::fs::symlink_metadata(h.path(key)) {
        Err(_) => Check::fail(
            name,
            "missing",
            "start lxgate-keys.service (it creates the identity) or provide the key at this path",
        ),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            let ok = m.is_file()
                && mode == 0o640
                && m.uid() == 0
                && h.accounts.gid(keys_group) == Some(m.gid());
            if ok {
                Check::pass(name, format!("0640 root:{keys_group}"))
            } else {
                Check::fail(
                    name,
                    format!("mode {mode:04o} uid {} gid {}", m.uid(), m.gid()),
                    format!("chown root:{keys_group} {key} && chmod 0640 {key}: the service reads the key through the {keys_group} group, so 0400 root:root locks it out and wider modes expose it"),
                )
            }
        }
    };
    vec![check]
}

/// The service user reads the master key through the keys group.
fn key_group(h: &Host) -> Vec<Check> {
    let user = h.inputs.get("user");
    let keys_group = h.inputs.get("keys_group");
    vec![if h.accounts.in_group(user, keys_group) {
        Check::pass("key group", format!("{user} is in {keys_group}"))
    } else {
        Check::fail(
            "key group",
            format!("{user} is not in {keys_group}"),
            format!("usermod -aG {keys_group} {user}"),
        )
    }]
}

/// A hub that accepts transfers relies on nginx demanding a certificate from the sites'
/// CA; without a readable CA file nginx does not start.
fn hub_client_ca(h: &Host) -> Vec<Check> {
    if !h.config.as_ref().is_some_and(|c| c.hub_receiver.enabled) {
        return Vec::new();
    }
    let ca = h.inputs.get("client_ca_file");
    let name = format!("client CA {ca}");
    vec![match std::fs::read_to_string(h.path(ca)) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {
            Check::pass(name, "PEM certificate present")
        }
        Ok(_) => Check::fail(
            name,
            "not a PEM certificate",
            "put the CA certificate that signs the sites' client certificates there (PEM)",
        ),
        Err(e) => Check::fail(
            name,
            format!("unreadable: {e}"),
            "install the sites' CA certificate there or set [hub] client_ca_file (services.lxgate.hub.transferApi.clientCaFile)",
        ),
    }]
}

/// PostgreSQL reachable with every migration applied (when a database is configured).
async fn database(config: Option<&Config>) -> Vec<Check> {
    let Some(url) = config.and_then(|c| c.db.url.clone()) else {
        return Vec::new();
    };
    vec![match crate::db::connect(url.expose()).await {
        Err(e) => Check::fail(
            "database",
            e.to_string(),
            "start PostgreSQL and check DATABASE_URL",
        ),
        Ok(client) => match crate::db::migrate::check(&client, &crate::db::migrate::embedded()).await {
            Ok(s) if !s.pending.is_empty() => Check::fail(
                "database",
                format!("{} migration(s) pending", s.pending.len()),
                "run `lxgate migrate` (lxgate-migrate.service)",
            ),
            Ok(s) if !s.ahead.is_empty() => Check::pass(
                "database",
                format!(
                    "reachable; {} migration(s) from a newer release, declared compatible with this one",
                    s.ahead.len()
                ),
            ),
            Ok(_) => Check::pass("database", "reachable, all migrations applied"),
            Err(e) if e.needs_restore() => Check::fail(
                "database",
                e.to_string(),
                "run the release that applied them, or stop lxgate and restore the snapshot taken before them (`lxgate snapshot list`)",
            ),
            Err(e) => Check::fail(
                "database",
                e.to_string(),
                "see the message; restore edited migrations",
            ),
        },
    }]
}

/// Every sealed object is sealed to an identity the host has (the master key, or the
/// next one while `lxgate keys rotate` runs): one sealed to an identity that is gone
/// can no longer be opened, served or verified.
async fn sealed_objects(config: Option<&Config>, root: &Path) -> Vec<Check> {
    const NAME: &str = "sealed objects";
    let Some(config) = config else {
        return Vec::new();
    };
    let Some(url) = config.db.url.clone() else {
        return Vec::new();
    };
    let Ok(client) = crate::db::connect(url.expose()).await else {
        // The database check has said why.
        return Vec::new();
    };
    let rows = match client
        .query(
            "SELECT sealed_to, count(DISTINCT storage_path) FROM upload_jobs
             WHERE sealed_to IS NOT NULL AND status <> 'error' GROUP BY sealed_to ORDER BY 1",
            &[],
        )
        .await
    {
        Ok(r) => r,
        // Before migration 0005 there are no sealed objects; the database check says so.
        Err(_) => return Vec::new(),
    };
    let sealed: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    if sealed.is_empty() {
        return vec![Check::pass(NAME, "none stored yet")];
    }
    let keys = crate::crypto::keyring::MasterKeys::new(under(
        root,
        &config.host.master_key.display().to_string(),
    ));
    let have: Vec<String> = match keys.identities() {
        Ok(ids) => ids.iter().map(|i| i.recipient().to_string()).collect(),
        Err(e) => {
            return vec![Check::fail(
                NAME,
                e.to_string(),
                "run doctor as root or as the service user (in the keys group)",
            )]
        }
    };
    let total: i64 = sealed.iter().map(|(_, n)| n).sum();
    let gone: Vec<&(String, i64)> = sealed.iter().filter(|(r, _)| !have.contains(r)).collect();
    let lost_objects: i64 = gone.iter().map(|(_, n)| n).sum();
    let lost: Vec<String> = gone
        .iter()
        .map(|(r, n)| format!("{n} sealed to {r}"))
        .collect();
    let rotating = keys.next_path().exists();
    if lost.is_empty() {
        let mut detail = format!("{total} sealed objects open with the identities this host has");
        if rotating {
            detail.push_str(&format!(
                "; a key rotation is unfinished ({} exists): rerun `lxgate keys rotate`",
                keys.next_path().display()
            ));
        }
        return vec![Check::pass(NAME, detail)];
    }
    vec![Check::fail(
        NAME,
        format!(
            "{} of {total} objects are sealed to an identity this host no longer has ({}), so they cannot be opened",
            lost_objects,
            lost.join(", ")
        ),
        format!(
            "restore that identity to {} from the key backup (or, if `lxgate keys rotate` was interrupted, rerun it)",
            config.host.master_key.display()
        ),
    )]
}

/// Print the checks (text or JSON) and give the exit code: success only if every check
/// passed. Doctor and smoke both end here.
pub fn report(checks: &[Check], json: bool) -> std::process::ExitCode {
    print(checks, json);
    if checks.iter().all(|c| c.ok) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

fn print(checks: &[Check], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(checks).unwrap_or_default()
        );
        return;
    }
    for c in checks {
        if c.ok {
            println!("ok    {}: {}", c.check, c.detail);
        } else {
            println!(
                "FAIL  {}: {} — fix: {}",
                c.check,
                c.detail,
                c.fix.as_deref().unwrap_or("")
            );
        }
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    println!("{} checks, {failed} failed", checks.len());
}
