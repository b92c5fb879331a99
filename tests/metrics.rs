//! `/metrics` of a running `lxgate serve`: ingest counters from every process (the
//! watcher has no listener of its own), backlogs (quarantine, hub exports), request
//! latency by route pattern, HELP lines; and each request's id in its answer and log.
mod common;
use common::*;

fn scrape(srv: &Server) -> String {
    let r = http().get(&srv.url("/metrics")).call().unwrap();
    assert!(
        r.content_type().contains("text"),
        "metrics content type {}",
        r.content_type()
    );
    r.into_string().unwrap()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn watcher_ingests_show_in_the_metrics_of_a_separately_running_server() {
    let (s, import) = Site::with_center_a("[watcher]\nsettle_ms = 50\n");
    // Started before the drop: the counts are read when scraped, not when it starts.
    let srv = Server::start(&s);
    drop_file(&import.join("video_import"), "clip.mp4", b"video bytes");
    drop_file(&import.join("report_import"), "notes.exe", b"not a report");
    s.ok(&["watch", "--once"]);
    let text = scrape(&srv);
    for line in [
        r#"lxgate_ingest_total{boundary="watcher",outcome="stored"} 1"#,
        r#"lxgate_ingest_total{boundary="watcher",outcome="error"} 1"#,
        r#"lxgate_ingest_bytes_total{boundary="watcher"} 11"#,
        // The refused report waits in quarantine; nothing is marked for export.
        "lxgate_quarantine_items 1",
        r#"lxgate_hub_exports{state="failed"} 0"#,
        r#"lxgate_hub_exports{state="retrying"} 0"#,
    ] {
        assert!(has_line(&text, line), "{line} missing from:\n{text}");
    }
    assert!(
        text.contains("# HELP lxgate_ingest "),
        "no HELP line:\n{text}"
    );
}

#[test]
fn request_latency_is_a_histogram_by_route_pattern() {
    let (s, _) = Site::with_center_a("");
    let srv = Server::start(&s);
    let id = "5f0c2a4e-8d3b-4c1a-9e2f-000000000001";
    for _ in 0..3 {
        let (status, _) = call(http().get(&srv.url(&format!("/api/media/{id}"))).call());
        assert_eq!(status, 401);
    }
    let text = scrape(&srv);
    assert!(
        has_line(
            &text,
            r#"lxgate_http_requests_total{route="/api/media/{id}",status="401"} 3"#
        ),
        "{text}"
    );
    assert!(
        has_line(
            &text,
            r#"lxgate_http_request_duration_seconds_count{route="/api/media/{id}"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            r#"lxgate_http_request_duration_seconds_bucket{le="+Inf",route="/api/media/{id}"}"#
        ) || l.starts_with(
            r#"lxgate_http_request_duration_seconds_bucket{route="/api/media/{id}",le="+Inf"}"#
        )),
        "{text}"
    );
    // Bounded series: the raw path never becomes a label.
    assert!(!text.contains(id), "{text}");
    assert!(
        text.contains("# HELP lxgate_http_request_duration_seconds "),
        "{text}"
    );
}

#[test]
fn each_request_has_an_id_in_its_answer_and_its_log_lines_and_no_query_in_the_log() {
    let (s, _) = Site::with_center_a("");
    let srv = Server::start(&s);
    let job = "5f0c2a4e-8d3b-4c1a-9e2f-000000000002";
    let get = |id: Option<&str>| {
        let mut r = http().get(&srv.url(&format!("/api/media/{job}?patient=Erika%20Mustermann")));
        if let Some(id) = id {
            r = r.set("X-Request-Id", id);
        }
        let resp = match r.call() {
            Err(ureq::Error::Status(401, resp)) => resp,
            other => panic!("expected 401, got {other:?}"),
        };
        resp.header("x-request-id").unwrap_or_default().to_string()
    };
    // nginx's $request_id is kept.
    let nginx = "0123456789abcdef0123456789abcdef";
    assert_eq!(get(Some(nginx)), nginx);
    // None sent, or one that could carry text into the journal: a new one, nginx's form.
    let fresh = get(None);
    let replaced = get(Some("a;b=c"));
    for id in [&fresh, &replaced] {
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id:?}"
        );
    }
    assert_ne!(fresh, replaced);
    let mut log = String::new();
    wait_for(
        "the third answer in the log",
        std::time::Duration::from_secs(10),
        || {
            log = std::fs::read_to_string(&srv.log).unwrap();
            log.contains(&replaced)
        },
    );
    for id in [nginx, &fresh, &replaced] {
        // The refusal's audit line and the answer line both sit in the request's span.
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(id)).collect();
        assert!(
            lines.iter().any(|l| l.contains("auth_failed"))
                && lines
                    .iter()
                    .any(|l| l.contains("answered") && l.contains("status=401")),
            "request {id}:\n{log}"
        );
        assert!(
            lines.iter().all(|l| l.contains(&format!(
                "request{{route=/api/media/{{id}} request_id={id}}}"
            ))),
            "{lines:?}"
        );
    }
    for secret in ["Mustermann", "patient=", job, "a;b=c"] {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
}
