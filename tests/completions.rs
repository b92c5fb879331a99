//! Shell completions and man pages (what nix/package.nix installs, and what a Debian host
//! generates by hand, README) name every command the binary has: the list of commands
//! is read from `lxgate help`, not from the generators, so a command they miss fails.
mod common;
use common::*;

/// Subcommands listed under "Commands:" in `lxgate [PATH…] --help`, without `help`.
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let o = lxgate(&args, &[]);
    assert!(o.status.success(), "lxgate {args:?}: {}", stderr(&o));
    stdout(&o)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path: `["serve"]`, `["token", "create"]`, ...
fn every_command() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for top in subcommands(&[]) {
        let nested = subcommands(&[&top]);
        out.push(vec![top.clone()]);
        for sub in nested {
            out.push(vec![top.clone(), sub]);
        }
    }
    out
}

/// Whether a generated script offers the last word of `path` after the words before it,
/// in each generator's own form.
fn offers(shell: &str, script: &str, path: &[String]) -> bool {
    let (name, parents) = path.split_last().unwrap();
    match shell {
        // A case label `PARENT,NAME)`, PARENT = lxgate__subcmd__hub__subcmd__export.
        "bash" => {
            let parent: String = std::iter::once("lxgate".to_string())
                .chain(
                    parents
                        .iter()
                        .map(|p| format!("__subcmd__{}", p.replace('-', "__subcmd__"))),
                )
                .collect();
            script.contains(&format!("{parent},{name})"))
        }
        // `'NAME:description'` in the parent's _..._commands() list.
        "zsh" => {
            let parent: String = std::iter::once("_lxgate".to_string())
                .chain(parents.iter().map(|p| format!("__subcmd__{p}")))
                .collect();
            let Some(at) = script.find(&format!("{parent}_commands() {{")) else {
                return false;
            };
            let list = &script[at..];
            let list = &list[..list.find("\n    )").unwrap_or(list.len())];
            list.contains(&format!("'{name}:"))
        }
        // `-a "NAME"` under the parent's condition.
        _ => {
            let condition = match parents {
                [] => "__fish_lxgate_needs_command".to_string(),
                [p] => format!("__fish_lxgate_using_subcommand {p}; and not"),
                _ => unreachable!("two levels of commands"),
            };
            script
                .lines()
                .any(|l| l.contains(&condition) && l.contains(&format!("-a \"{name}\"")))
        }
    }
}

#[test]
fn completions_and_man_pages_name_every_command() {
    let all = every_command();
    assert!(
        all.len() > 30 && all.iter().any(|c| c == &["hub-export", "mark"]),
        "{all:?}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let o = lxgate(&["completions", shell], &[]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        for path in &all {
            assert!(
                offers(shell, &script, path),
                "{shell} completion does not offer `lxgate {}`",
                path.join(" ")
            );
        }
    }
    let unknown = lxgate(&["completions", "tcsh"], &[]);
    assert_eq!(unknown.status.code(), Some(2), "{}", stderr(&unknown));

    let t = tempdir();
    let out = t.path().join("man");
    let o = lxgate(&["man", "--out", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pages = names(&out);
    assert!(pages.contains(&"lxgate.1".to_string()), "{pages:?}");
    for path in &all {
        let page = format!("lxgate-{}.1", path.join("-"));
        assert!(pages.contains(&page), "no {page} in {pages:?}");
        let text = std::fs::read_to_string(out.join(&page)).unwrap();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
}
