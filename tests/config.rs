//! The settings file and the environment contract: errors that name the problem, and
//! `lxgate config check` never printing a secret.
mod common;
use common::*;

#[test]
fn config_errors_name_the_problem_and_exit_nonzero() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[("LX_ANNOTATE_ENCRYPTED_DATA_DIR", "/a"), ("DATA_DIR", "/b")],
            &[
                "LX_ANNOTATE_ENCRYPTED_DATA_DIR=/a",
                "DATA_DIR=/b",
                "LX_ANNOTATE_DATA_DIR=(unset)",
            ],
        ),
        (
            &[("DATA_DIR", "/srv/d"), ("STORAGE_DIR", "/srv/elsewhere")],
            &["STORAGE_DIR /srv/elsewhere", "outside the data root /srv/d"],
        ),
        (
            &[("ENDOREG_DEPLOYMENT_ROLE", "hub")],
            &["\"hub\"", "standalone, site_node, central_hub"],
        ),
        (&[("UPLOAD_MAX_SIZE", "lots")], &["UPLOAD_MAX_SIZE"]),
    ];
    for (env, needles) in cases {
        let o = lxgate(&["config", "check"], env);
        assert!(!o.status.success(), "{env:?} should fail");
        let e = stderr(&o);
        for n in *needles {
            assert!(e.contains(n), "{env:?}: {e:?} lacks {n:?}");
        }
    }
}

#[test]
fn unknown_config_key_and_missing_file_are_errors() {
    let d = tempdir();
    let f = d.path().join("c.toml");
    std::fs::write(&f, "role = \"standalone\"\n[server]\nlisten_addr = \"x\"\n").unwrap();
    let o = lxgate(&["--config", f.to_str().unwrap(), "config", "check"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("listen_addr"), "{}", stderr(&o));
    let o = lxgate(
        &["--config", "/nonexistent/lxgate.toml", "config", "check"],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/lxgate.toml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_check_redacts_the_database_password() {
    let o = lxgate(
        &["config", "check"],
        &[("DATABASE_URL", "postgres://u:hunter2@localhost/db")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("hunter2") && stdout(&o).contains("u:***@"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn config_check_redacts_the_database_password_from_the_settings_file() {
    let d = tempdir();
    let f = d.path().join("c.toml");
    std::fs::write(
        &f,
        "[database]\nurl = \"postgres://u:hunter2@localhost/db\"\n",
    )
    .unwrap();
    let o = lxgate(&["--config", f.to_str().unwrap(), "config", "check"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!out.contains("hunter2") && out.contains("u:***@"), "{out}");
}
