//! The Prometheus alert rules shipped in docs/alerts/: valid for promtool, firing on the
//! series they are meant for (promtool's own rule tests), naming only metrics lxgate
//! exports, and each explained in the runbook under its own heading.
use std::path::{Path, PathBuf};
use std::process::Command;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

fn promtool(args: &[&str]) -> String {
    let o = Command::new("promtool")
        .args(args)
        .current_dir(docs().join("alerts"))
        .output()
        .expect("run promtool (apt-get install prometheus)");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "promtool {args:?}:\n{out}");
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let out = promtool(&["check", "rules", "lxgate.rules.yml"]);
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    promtool(&["test", "rules", "lxgate.rules.test.yml"]);
}

#[test]
fn every_alert_names_real_metrics_and_has_a_runbook_entry() {
    let rules = std::fs::read_to_string(docs().join("alerts/lxgate.rules.yml")).unwrap();
    let metrics_src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/boundary/http/metrics.rs"),
    )
    .unwrap();
    let runbook = std::fs::read_to_string(docs().join("operations.md")).unwrap();
    let mut names = Vec::new();
    for (i, _) in rules.match_indices("lxgate_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.push(name);
    }
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        // Counters are exported with _total, histograms with _bucket/_count/_sum.
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map(str::to_string).unwrap_or(n)
            });
        assert!(
            metrics_src.contains(&format!("\"{family}\"")),
            "{name}: lxgate exports no metric family {family}"
        );
    }
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 8);
    for alert in alerts {
        assert!(
            runbook.lines().any(|l| l == format!("### {alert}")),
            "docs/operations.md has no `### {alert}` section"
        );
        let anchor = format!("docs/operations.md#{}", alert.to_lowercase());
        assert!(
            rules.contains(&anchor),
            "{alert}'s annotation does not link {anchor}"
        );
    }
}
