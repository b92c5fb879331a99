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

pub async fn run(file: &FileConfig, env: &Env, root: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let config = match Config::from_parts(file.clone(), env) {
        Ok(c) => {
            checks.push(Check::pass(
                "env",
                "data root variables agree; STORAGE_DIR inside the data root; role valid",
            ));
            Some(c)
        }
        Err(e) => {
            checks.push(Check::fail(
                "env",
                e.to_string(),
                "correct the variable named above in the env file or unit",
            ));
            None
        }
    };
    // The host checks still run when the environment is wrong: then they use the file
    // alone, through the same resolver with an empty environment.
    let settings = match &config {
        Some(c) => c.clone(),
        None => match Config::from_parts(file.clone(), &Env::new()) {
            Ok(c) => c,
            Err(_) => return checks,
        },
    };
    let inputs = Inputs::from_settings(&settings, None);
    let acc = Accounts::load(root);
    let user = inputs.get("user").to_string();
    let keys_group = inputs.get("keys_group").to_string();

    for d in &CONTRACT.directory {
        let path = directory_path(&inputs, d.root, &d.path);
        let owner = inputs.owner(d.owner).to_string();
        let group = inputs.group(d.group).to_string();
        let want = format!("{} {owner}:{group}", d.mode);
        let fix = format!(
            "run `systemd-tmpfiles --create` (or: install -d -m {} -o {owner} -g {group} {path})",
            d.mode
        );
        let name = format!("dir {path}");
        match std::fs::symlink_metadata(under(root, &path)) {
            Err(_) => checks.push(Check::fail(name, "missing", fix)),
            Ok(m) if !m.is_dir() => {
                checks.push(Check::fail(name, "exists but is not a directory", fix))
            }
            Ok(m) => {
                let mode = m.permissions().mode() & 0o7777;
                let mut wrong = Vec::new();
                if mode != d.mode_bits() {
                    wrong.push(format!("mode {mode:04o}, want {}", d.mode));
                }
                if acc.uid(&owner) != Some(m.uid()) {
                    wrong.push(format!("owner uid {}, want {owner}", m.uid()));
                }
                if acc.gid(&group) != Some(m.gid()) {
                    wrong.push(format!("group gid {}, want {group}", m.gid()));
                }
                if wrong.is_empty() {
                    checks.push(Check::pass(name, want));
                } else {
                    checks.push(Check::fail(name, wrong.join("; "), fix));
                }
            }
        }
    }

    // The master key: root:<keys group> 0640, service user in the group. 0400 root:root
    // would lock the service out; 0644 would leak the key to every account.
    let key = inputs.get("master_key").to_string();
    let key_fix = format!(
        "chown root:{keys_group} {key} && chmod 0640 {key}: the service reads the key through the {keys_group} group, so 0400 root:root locks it out and wider modes expose it"
    );
    match std::fs::symlink_metadata(under(root, &key)) {
        Err(_) => checks.push(Check::fail(
            format!("key {key}"),
            "missing",
            "start lxgate-keys.service (it creates the identity) or provide the key at this path",
        )),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            let ok = m.is_file()
                && mode == 0o640
                && m.uid() == 0
                && acc.gid(&keys_group) == Some(m.gid());
            if ok {
                checks.push(Check::pass(
                    format!("key {key}"),
                    format!("0640 root:{keys_group}"),
                ));
            } else {
                checks.push(Check::fail(
                    format!("key {key}"),
                    format!("mode {mode:04o} uid {} gid {}", m.uid(), m.gid()),
                    key_fix,
                ));
            }
        }
    }
    if acc.in_group(&user, &keys_group) {
        checks.push(Check::pass(
            "key group",
            format!("{user} is in {keys_group}"),
        ));
    } else {
        checks.push(Check::fail(
            "key group",
            format!("{user} is not in {keys_group}"),
            format!("usermod -aG {keys_group} {user}"),
        ));
    }

    // A hub that accepts transfers relies on nginx demanding a certificate from the
    // sites' CA; without a readable CA file nginx does not start.
    if config.as_ref().is_some_and(|c| c.hub_receiver.enabled) {
        let ca = inputs.get("client_ca_file").to_string();
        let name = format!("client CA {ca}");
        match std::fs::read_to_string(under(root, &ca)) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {
                checks.push(Check::pass(name, "PEM certificate present"))
            }
            Ok(_) => checks.push(Check::fail(
                name,
                "not a PEM certificate",
                "put the CA certificate that signs the sites' client certificates there (PEM)",
            )),
            Err(e) => checks.push(Check::fail(
                name,
                format!("unreadable: {e}"),
                "install the sites' CA certificate there or set [hub] client_ca_file (services.lxgate.hub.transferApi.clientCaFile)",
            )),
        }
    }

    if let Some(url) = config.as_ref().and_then(|c| c.db.url.clone()) {
        match crate::db::connect(url.expose()).await {
            Err(e) => checks.push(Check::fail(
                "database",
                e.to_string(),
                "start PostgreSQL and check DATABASE_URL",
            )),
            Ok(client) => match crate::db::migrate::pending(&client).await {
                Ok(0) => checks.push(Check::pass("database", "reachable, all migrations applied")),
                Ok(n) => checks.push(Check::fail(
                    "database",
                    format!("{n} migration(s) pending"),
                    "run `lxgate migrate` (lxgate-migrate.service)",
                )),
                Err(e) => checks.push(Check::fail(
                    "database",
                    e.to_string(),
                    "see the message; restore edited migrations",
                )),
            },
        }
    }
    checks
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
