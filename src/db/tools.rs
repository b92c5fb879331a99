//! Where PostgreSQL's own programs are: the host's PATH first (NixOS units and
//! `nix develop` put the right version there), then Debian's versioned directories,
//! newest first, because Debian keeps initdb and pg_ctl out of PATH.

use std::path::PathBuf;

/// The first directory holding every one of `tools`.
pub fn bindir_with(tools: &[&str]) -> Option<PathBuf> {
    let has_all = |p: &PathBuf| tools.iter().all(|t| p.join(t).is_file());
    if let Some(paths) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&paths).find(|p| has_all(p)) {
            return Some(p);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_all(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

/// One client program (`pg_dump`, `pg_restore`, `psql`), or an error saying how to get it.
pub fn program(tool: &str) -> std::io::Result<PathBuf> {
    bindir_with(&[tool]).map(|d| d.join(tool)).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{tool} not found in PATH or /usr/lib/postgresql/*/bin: install the PostgreSQL \
                 client (`apt-get install postgresql-client`) or add it to the unit's path"
            ),
        )
    })
}
