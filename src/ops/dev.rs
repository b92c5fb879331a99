//! `lxgate dev`: a complete local lxgate from nothing but the system's PostgreSQL
//! binaries. Everything lives under one directory (default `./.lxgate-dev`): `pg/`, a
//! private cluster (created on first run, reused after), and `state/`, lxgate's state
//! root with the contract's modes. They are siblings because the state root is 0750:
//! as root, the cluster runs as `postgres`, which must still reach `pg/`. The master
//! identity (reports are sealed at rest) is made under the state root on first run.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::{Config, FileConfig};
use crate::contract::{DirRoot, CONTRACT};
use crate::ops::pgcluster::Cluster;

pub async fn run(state: &Path, listen: &str) -> Result<()> {
    std::fs::create_dir_all(state)?;
    let state = state.canonicalize()?;
    let cluster =
        Cluster::start(&state.join("pg")).context("starting the dev PostgreSQL cluster")?;
    let url = cluster.create_database("lxgate").await?;

    let mut file = FileConfig::default();
    file.paths.state = Some(state.join("state"));
    file.server.listen = Some(listen.to_string());
    file.server.default_center = Some("dev".into());
    file.server.serve_media_directly = Some(true);
    // No nginx in front: clients reach the app directly, so X-Forwarded-For is theirs.
    file.host.nginx = Some(false);
    file.database.url = Some(url.clone());
    let config = Config::from_parts(file, &crate::config::process_env())?;

    // The data tree with the contract's modes (owners are the current user in dev).
    for d in &CONTRACT.directory {
        let base = match d.root {
            DirRoot::State => &config.paths.state,
            DirRoot::Data => &config.paths.data,
        };
        let p = if d.path.is_empty() {
            base.clone()
        } else {
            base.join(&d.path)
        };
        std::fs::create_dir_all(&p)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(d.mode_bits()))?;
    }

    // Reports are sealed at rest: dev has its own master identity, the current user's.
    crate::ops::keys::ensure_own(&config.host.master_key)?;

    let mut client = crate::db::connect(&url).await?;
    crate::db::migrate::run(&mut client, &crate::db::migrate::embedded()).await?;
    crate::access::tokens::add_center(&client, "dev", "Local development center").await?;
    let label = format!("dev-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let token =
        crate::access::tokens::create_token(&client, "uploader", Some("dev"), &label).await?;
    drop(client);

    let base = if let Some(p) = listen.strip_prefix("unix:") {
        format!("unix socket {p}")
    } else {
        format!("http://{listen}")
    };
    let data_root = config.paths.data.clone();
    // The banner (with the token the README tells people to use) only once the
    // listener is bound: a client reading it may connect at once.
    let result = crate::boundary::http::serve_then(config, move || {
        println!("lxgate dev is up: {base}");
        println!("  data root : {}", data_root.display());
        println!("  database  : {url}");
        println!("  token     : {token}   (uploader for center \"dev\"; shown once)");
        println!("  try       : curl -H 'Authorization: Bearer {token}' -H 'X-Filename: a.pdf' -H 'X-Kind: report' --data-binary @README.md http://{listen}/api/upload/");
        println!("  more      : DATABASE_URL='{url}' lxgate token create --role super_admin --name me");
        println!("  Ctrl-C stops lxgate and the dev database.");
    })
    .await;
    drop(cluster);
    result
}
