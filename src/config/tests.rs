use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn export_file(url: &str) -> FileConfig {
    toml::from_str(&format!(
        "role = \"site_node\"\n[hub]\nexport = true\nurl = \"{url}\"\nnode_key = \"s\"\ntarget_node_key = \"h\"\nca_file = \"/ca\"\nclient_certificate = \"/c\"\nrecipient_public_key_file = \"/r.pem\"\n"
    ))
    .unwrap()
}

#[test]
fn forwarded_for_is_trusted_only_behind_nginx_on_a_local_listener() {
    let trusted = |text: &str, e: &[(&str, &str)]| {
        let f: FileConfig = toml::from_str(text).unwrap();
        Config::from_parts(f, &env(e)).unwrap().server.trusted_proxy
    };
    assert!(trusted("", &[]));
    assert!(trusted(
        "",
        &[("LXGATE_LISTEN", "unix:/run/lxgate/http.sock")]
    ));
    assert!(!trusted("[host]\nnginx = false\n", &[]));
    assert!(!trusted("", &[("LXGATE_LISTEN", "0.0.0.0:8080")]));
    assert!(!trusted("[server]\ntrusted_proxy = false\n", &[]));
    assert!(trusted(
        "[server]\ntrusted_proxy = true\n",
        &[("LXGATE_LISTEN", "0.0.0.0:8080")]
    ));
}

#[test]
fn the_app_outlasts_nginx_idle_connections_and_a_revocation_waits_seconds_at_most() {
    let resolve = |text: &str| {
        let f: FileConfig = toml::from_str(text).unwrap();
        Config::from_parts(f, &env(&[]))
    };
    let e = resolve("[server]\nheader_timeout_secs = 10\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nginx keeps an idle connection to the app for 10 s")
            && e.contains("set at least 15"),
        "{e}"
    );
    assert!(resolve("[server]\nheader_timeout_secs = 11\n").is_ok());
    assert!(resolve("[server]\nheader_timeout_secs = 2\n[host]\nnginx = false\n").is_ok());
    let c = resolve("").unwrap();
    assert_eq!(c.server.token_recheck, std::time::Duration::from_secs(5));
    assert_eq!(
        resolve("[server]\ntoken_recheck_secs = 0\n")
            .unwrap()
            .server
            .token_recheck,
        std::time::Duration::ZERO
    );
    let e = resolve("[server]\ntoken_recheck_secs = 3600\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("use at most 60"), "{e}");
}

#[test]
fn hub_export_needs_https_every_setting_and_a_site_node() {
    let c = Config::from_parts(export_file("https://hub.example.org/"), &env(&[])).unwrap();
    assert_eq!(c.hub_export.unwrap().url, "https://hub.example.org");
    let e = Config::from_parts(export_file("http://hub.example.org"), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("must start with https://"), "{e}");
    let e = Config::from_parts(
        export_file("https://h"),
        &env(&[("ENDOREG_DEPLOYMENT_ROLE", "central_hub")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("only a site_node exports"), "{e}");
    let mut f = export_file("https://h");
    f.hub.ca_file = None;
    f.hub.node_key = None;
    let e = Config::from_parts(f, &env(&[])).unwrap_err().to_string();
    assert!(e.contains("set node_key, ca_file in [hub]"), "{e}");
}

#[test]
fn hub_export_timeout_and_retry_budget_read_lx_annotates_names_over_the_file() {
    let with = |pairs: &[(&str, &str)], extra: &str| {
        let mut f = export_file("https://h");
        let t: FileConfig = toml::from_str(&format!("[hub]\n{extra}")).unwrap();
        f.hub.request_timeout_seconds = t.hub.request_timeout_seconds;
        f.hub.max_retries = t.hub.max_retries;
        Config::from_parts(f, &env(pairs)).map(|c| c.hub_export.unwrap())
    };
    let d = with(&[], "").unwrap();
    assert_eq!((d.request_timeout_seconds, d.max_retries), (21600, 5));
    let f = with(&[], "request_timeout_seconds = 30\nmax_retries = 2\n").unwrap();
    assert_eq!((f.request_timeout_seconds, f.max_retries), (30, 2));
    let e = with(
        &[
            ("LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS", "7"),
            ("LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES", "1"),
        ],
        "request_timeout_seconds = 30\nmax_retries = 2\n",
    )
    .unwrap();
    assert_eq!((e.request_timeout_seconds, e.max_retries), (7, 1));
    // lx-annotate: max(int(v), 0).
    let n = with(&[("LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES", "-3")], "").unwrap();
    assert_eq!(n.max_retries, 0);
    for (var, bad) in [
        ("LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS", "0"),
        ("LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS", "-1"),
        ("LX_ANNOTATE_HUB_EXPORT_REQUEST_TIMEOUT_SECONDS", "6h"),
        ("LX_ANNOTATE_HUB_EXPORT_MAX_RETRIES", "five"),
    ] {
        let e = with(&[(var, bad)], "").unwrap_err().to_string();
        assert!(e.contains(var) && e.contains("whole number"), "{e}");
    }
    let e = with(&[], "request_timeout_seconds = 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("set a positive number of seconds"), "{e}");
}

#[test]
fn aliases_that_agree_are_fine() {
    let c = Config::from_parts(
        FileConfig::default(),
        &env(&[
            ("LX_ANNOTATE_ENCRYPTED_DATA_DIR", "/d"),
            ("DATA_DIR", "/d/"),
        ]),
    )
    .unwrap();
    assert_eq!(c.paths.data, PathBuf::from("/d"));
    assert_eq!(c.paths.storage, PathBuf::from("/d/storage"));
}

#[test]
fn alias_conflict_names_every_variable() {
    let e = Config::from_parts(
        FileConfig::default(),
        &env(&[
            ("LX_ANNOTATE_ENCRYPTED_DATA_DIR", "/a"),
            ("LX_ANNOTATE_DATA_DIR", "/b"),
        ]),
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "LX_ANNOTATE_ENCRYPTED_DATA_DIR=/a",
        "LX_ANNOTATE_DATA_DIR=/b",
        "DATA_DIR=(unset)",
    ] {
        assert!(e.contains(needle), "{e}");
    }
}

#[test]
fn storage_outside_root_is_refused_even_via_dotdot() {
    for s in ["/elsewhere", "/d/../etc", "/"] {
        let e = Config::from_parts(
            FileConfig::default(),
            &env(&[("DATA_DIR", "/d"), ("STORAGE_DIR", s)]),
        )
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::StorageOutsideRoot { .. }),
            "{s}: {e}"
        );
    }
}

#[test]
fn unknown_role_lists_valid_ones() {
    let e = Config::from_parts(
        FileConfig::default(),
        &env(&[("ENDOREG_DEPLOYMENT_ROLE", "hub")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("\"hub\"") && e.contains("central_hub") && e.contains("site_node"),
        "{e}"
    );
}

fn err(pairs: &[(&str, &str)]) -> String {
    Config::from_parts(FileConfig::default(), &env(pairs))
        .unwrap_err()
        .to_string()
}

fn ok(pairs: &[(&str, &str)]) -> Config {
    Config::from_parts(FileConfig::default(), &env(pairs)).unwrap()
}

#[test]
fn lx_runtime_root_is_the_data_root_and_a_conflict_names_both() {
    let c = ok(&[("LX_RUNTIME_ROOT", "/srv/lx/data")]);
    assert_eq!(c.paths.data, PathBuf::from("/srv/lx/data"));
    assert_eq!(c.paths.storage, PathBuf::from("/srv/lx/data/storage"));
    let c = ok(&[
        ("LX_RUNTIME_ROOT", "/srv/lx/data"),
        ("LX_ANNOTATE_ENCRYPTED_DATA_DIR", "/srv/lx/data/"),
    ]);
    assert_eq!(c.paths.data, PathBuf::from("/srv/lx/data"));
    let e = err(&[("LX_RUNTIME_ROOT", "/srv/new"), ("DATA_DIR", "/srv/old")]);
    assert!(
        e.contains("LX_RUNTIME_ROOT=/srv/new") && e.contains("DATA_DIR=/srv/old"),
        "{e}"
    );
    let e = err(&[("LX_RUNTIME_ROOT", "data")]);
    assert!(
        e.contains("LX_RUNTIME_ROOT=\"data\"") && e.contains("absolute"),
        "{e}"
    );
}

#[test]
fn the_env_file_lx_annotates_migration_writes_resolves() {
    // render_target_env_text: all five path keys set to the data root.
    let d = "/var/lib/lx-annotate/data";
    let c = ok(&[
        ("LX_ANNOTATE_ENCRYPTED_DATA_DIR", d),
        ("DATA_DIR", d),
        ("LX_ANNOTATE_DATA_DIR", d),
        ("STORAGE_DIR", d),
        ("IO_DIR", d),
    ]);
    assert_eq!(c.paths.data, PathBuf::from(d));
    assert_eq!(c.paths.storage, PathBuf::from(format!("{d}/storage")));
}

#[test]
fn io_dir_elsewhere_stops_startup_naming_it_and_the_fix() {
    let e = err(&[("DATA_DIR", "/d"), ("IO_DIR", "/io")]);
    assert!(
        e.contains("IO_DIR=\"/io\"") && e.contains("move them there") && e.contains("/d"),
        "{e}"
    );
    ok(&[("DATA_DIR", "/d"), ("IO_DIR", "/d/")]);
}

#[test]
fn roles_in_any_case_and_local_study_server_refused_naming_the_supported_ones() {
    for (v, r) in [
        ("Central_Hub", Role::CentralHub),
        (" SITE_NODE ", Role::SiteNode),
        ("Standalone", Role::Standalone),
        ("   ", Role::Standalone),
    ] {
        assert_eq!(ok(&[("ENDOREG_DEPLOYMENT_ROLE", v)]).role, r, "{v:?}");
    }
    let e = err(&[("ENDOREG_DEPLOYMENT_ROLE", "local_study_server")]);
    assert!(
        e.contains("ENDOREG_DEPLOYMENT_ROLE=\"local_study_server\" is not supported")
            && e.contains("standalone, site_node or central_hub")
            && e.contains("lx-annotate 1.6.4"),
        "{e}"
    );
}

#[test]
fn the_django_meta_form_of_the_attestation_header_names_the_same_header() {
    assert_eq!(
        header_from_meta_key("HTTP_X_CLIENT_CERT_VERIFIED"),
        "x-client-cert-verified"
    );
    assert_eq!(
        header_from_meta_key("X-Client-Cert-Verified"),
        "X-Client-Cert-Verified"
    );
    for v in ["HTTP_X_CLIENT_CERT_VERIFIED", "x-client-cert-verified"] {
        let c = ok(&[("ENDOREG_HUB_TRANSFER_MTLS_META_KEY", v)]);
        assert_eq!(c.hub_receiver.mtls_meta_key, "X-Client-Cert-Verified");
    }
    let e = err(&[(
        "ENDOREG_HUB_TRANSFER_MTLS_META_KEY",
        "HTTP_X_SSL_CLIENT_VERIFY",
    )]);
    assert!(
        e.contains("ENDOREG_HUB_TRANSFER_MTLS_META_KEY=\"HTTP_X_SSL_CLIENT_VERIFY\"")
            && e.contains("names the header x-ssl-client-verify")
            && e.contains("HTTP_X_CLIENT_CERT_VERIFIED"),
        "{e}"
    );
}

#[test]
fn either_transfer_switch_turns_transfers_on() {
    let hub = [("ENDOREG_DEPLOYMENT_ROLE", "central_hub")];
    for var in TRANSFER_SWITCHES {
        let c = ok(&[hub[0], (var, "TRUE")]);
        assert!(c.hub_receiver.enabled, "{var}");
    }
    let c = ok(&[
        hub[0],
        ("ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS", "true"),
        ("ENDOREG_ENABLE_HUB_TRANSFERS", "0"),
    ]);
    assert!(
        c.hub_receiver.enabled,
        "either one, as transfer_api_enabled"
    );
    assert!(!ok(&hub).hub_receiver.enabled);
    let e = err(&[("ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS", "yes")]);
    assert!(
        e.contains("ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS") && e.contains("only a central_hub"),
        "{e}"
    );
    let e = err(&[hub[0], ("ENDOREG_ENABLE_INCOMING_HUB_TRANSFERS", "maybe")]);
    assert!(
        e.contains("\"maybe\"") && e.contains("true or false"),
        "{e}"
    );
}

#[test]
fn watcher_variables_set_the_timings_or_stop_startup() {
    let c = ok(&[
        ("WATCHER_STABLE_AFTER_SECONDS", "10"),
        ("WATCHER_POLL_INTERVAL_SECONDS", "0.5"),
        ("WATCHER_LOG_LEVEL", "WARNING"),
        ("WATCHER_CELERY_INLINE_FALLBACK_ENABLED", "false"),
    ]);
    assert_eq!(
        (c.watcher.settle_ms, c.watcher.poll_ms),
        (10_000, Some(500))
    );
    assert_eq!(
        ok(&[("WATCHER_STABLE_AFTER_SECONDS", "0")])
            .watcher
            .settle_ms,
        0
    );
    for (var, v, why) in [
        ("WATCHER_STABLE_AFTER_SECONDS", "-1", ">= 0"),
        ("WATCHER_STABLE_AFTER_SECONDS", "inf", ">= 0"),
        ("WATCHER_POLL_INTERVAL_SECONDS", "0", "> 0"),
        ("WATCHER_LOG_LEVEL", "chatty", "DEBUG, INFO"),
        (
            "WATCHER_CELERY_INLINE_FALLBACK_ENABLED",
            "sometimes",
            "true or false",
        ),
    ] {
        let e = err(&[(var, v)]);
        assert!(
            e.contains(&format!("{var}={v:?}")) && e.contains(why),
            "{e}"
        );
    }
    let d = "/var/lib/lxgate/data/import";
    ok(&[
        ("WATCHER_VIDEO_DIR", &format!("{d}/video_import")),
        ("WATCHER_REPORT_DIR", &format!("{d}/report_import/")),
        (
            "WATCHER_PREANONYMIZED_DIR",
            &format!("{d}/preanonymized_import"),
        ),
    ]);
    let e = err(&[("WATCHER_VIDEO_DIR", "/srv/videos")]);
    assert!(
        e.contains("WATCHER_VIDEO_DIR=\"/srv/videos\"")
            && e.contains(&format!("{d}/video_import"))
            && e.contains("unset WATCHER_VIDEO_DIR"),
        "{e}"
    );
}

#[test]
fn every_reference_name_read_here_is_in_the_contracts_env_list() {
    let listed: Vec<&str> = CONTRACT
        .env
        .iter()
        .flat_map(|e| std::iter::once(&e.name).chain(&e.aliases))
        .map(String::as_str)
        .collect();
    let read = DATA_ROOT_NAMES.iter().chain(&TRANSFER_SWITCHES).chain(&[
        "STORAGE_DIR",
        "IO_DIR",
        "ENDOREG_DEPLOYMENT_ROLE",
        "LX_ANNOTATE_DEFAULT_CENTER",
        "ENDOREG_HUB_TRANSFER_MTLS_META_KEY",
        "WATCHER_STABLE_AFTER_SECONDS",
        "WATCHER_POLL_INTERVAL_SECONDS",
        "WATCHER_LOG_LEVEL",
        "WATCHER_CELERY_INLINE_FALLBACK_ENABLED",
        "WATCHER_VIDEO_DIR",
        "WATCHER_REPORT_DIR",
        "WATCHER_PREANONYMIZED_DIR",
    ]);
    for n in read {
        assert!(
            listed.contains(n),
            "{n} is read but not in nix/contract.toml"
        );
    }
}

#[test]
fn unknown_nested_key_is_an_error() {
    let e = FileConfig::parse("[watcher]\nsettle_msec = 5\n", Path::new("x.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("settle_msec"), "{e}");
}

#[test]
fn the_resolved_settings_never_show_the_password() {
    let file = FileConfig::parse(
        "[database]\nurl = \"postgres://u:hunter2@h/db\"\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let c = Config::from_parts(file, &env(&[])).unwrap();
    assert_eq!(
        c.require_database_url().unwrap(),
        "postgres://u:hunter2@h/db"
    );
    let debug = format!("{c:?}");
    let json = serde_json::to_string(&c).unwrap();
    for shown in [debug, json] {
        assert!(
            !shown.contains("hunter2") && shown.contains("u:***@h/db"),
            "{shown}"
        );
    }
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_db_url("postgres://u:secret@h/db"),
        "postgres://u:***@h/db"
    );
    assert_eq!(
        redact_db_url("host=/run/pg user=u password=secret"),
        "host=/run/pg user=u password=***"
    );
}
