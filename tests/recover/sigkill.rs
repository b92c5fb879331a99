//! SIGKILL at random points of a merge, then a rerun: the same tree, no temp files.
use super::*;

#[test]
fn sigkill_trials_then_rerun_give_the_same_tree_and_no_temp_files() {
    sigkill_trials(&[]);
}

#[test]
fn sigkill_trials_into_an_existing_skeleton_then_rerun_give_every_file() {
    sigkill_trials(&["storage/objects/ab", "reports/2023", "import/video_import"]);
}

/// 20 runs killed at random points, then one run to the end: the same tree as the
/// source (only the files, where `skeleton` directories existed in advance).
fn sigkill_trials(skeleton: &[&str]) {
    let t = tempdir();
    let src = legacy_tree(t.path(), 400, 400_000);
    let before = snapshot(&src);
    let target = t.path().join("state/data");
    for d in skeleton {
        std::fs::create_dir_all(target.join(d)).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for trial in 0..20 {
        let log = t.path().join(format!("trial{trial}.log"));
        let mut p = Proc::spawn(
            &[
                "recover",
                "--merge",
                "--from",
                src.to_str().unwrap(),
                "--to",
                target.to_str().unwrap(),
            ],
            &[],
            &log,
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..120)));
        p.kill9();
    }
    let o = recover_into("--merge", &src, &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = snapshot(&target);
    let temps: Vec<_> = after
        .keys()
        .filter(|k| k.contains(".lxgate-recover-"))
        .collect();
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    if skeleton.is_empty() {
        assert_eq!(after, before);
    } else {
        assert_eq!(files_only(after), files_only(before.clone()));
    }
    assert_eq!(snapshot(&src), before);
}
