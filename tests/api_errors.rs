//! Issue 23: every error the app sends is JSON `{code, message}`, on every route:
//! wrong methods, query/path/body rejections, unknown routes, refusals.
mod common;
use common::*;

/// Status, content type and body text of a response, whatever its status.
fn raw(r: Result<ureq::Response, ureq::Error>) -> (u16, String, String) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let ct = resp.header("content-type").unwrap_or_default().to_string();
    (status, ct, resp.into_string().unwrap_or_default())
}

/// Method, path, content type, body, expected status.
type Case<'a> = (&'a str, String, Option<&'a str>, Vec<u8>, u16);

#[test]
fn every_error_on_every_route_is_json() {
    let mut site = Site::new("central_hub");
    let cfg = site.dir.path().join("lxgate.toml");
    std::fs::write(&cfg, "[hub]\ntransfer_api = true\n").unwrap();
    site.set("LXGATE_CONFIG", cfg.to_str().unwrap());
    site.migrate();
    site.ok(&["center", "add", "A", "--name", "A"]);
    let admin = site.token("super_admin", None, "root");
    let srv = Server::start(&site);
    let bearer = format!("Bearer {admin}");
    let id = "00000000-0000-0000-0000-000000000000";
    let hub_headers = [
        ("X-Forwarded-Proto", "https"),
        ("X-Client-Cert-Verified", "SUCCESS"),
    ];
    // Not here: a JSON body over 2 MB (413). The app answers before reading it, so the
    // client sees a reset about one run in ten until refusals drain their bodies.
    let cases: Vec<Case> = vec![
        ("POST", "/healthz".into(), None, vec![], 405),
        ("POST", "/readyz".into(), None, vec![], 405),
        ("DELETE", "/metrics".into(), None, vec![], 405),
        ("GET", "/api/upload/".into(), None, vec![], 405),
        (
            "POST",
            "/api/upload/".into(),
            Some("multipart/form-data"),
            b"x".to_vec(),
            400,
        ),
        ("PUT", "/api/upload-jobs/".into(), None, vec![], 405),
        (
            "GET",
            "/api/upload-jobs/?limit=many".into(),
            None,
            vec![],
            400,
        ),
        (
            "GET",
            "/api/upload-jobs/?colour=red".into(),
            None,
            vec![],
            400,
        ),
        (
            "DELETE",
            format!("/api/upload-jobs/{id}"),
            None,
            vec![],
            405,
        ),
        ("GET", "/api/upload-jobs/%FF".into(), None, vec![], 400),
        ("GET", format!("/api/upload-jobs/{id}"), None, vec![], 404),
        ("POST", format!("/api/media/{id}"), None, vec![], 405),
        ("GET", "/api/media/%FF%FE".into(), None, vec![], 400),
        ("GET", "/api/media/hub/transfers/".into(), None, vec![], 405),
        (
            "POST",
            "/api/media/hub/transfers/".into(),
            Some("application/json"),
            b"{}".to_vec(),
            // endoreg-db validates the body before it authenticates the node.
            400,
        ),
        (
            "GET",
            "/api/media/hub/transfers/k/media/".into(),
            None,
            vec![],
            405,
        ),
        (
            "POST",
            "/api/media/hub/transfers/%FF/media/".into(),
            Some("multipart/form-data"),
            b"x".to_vec(),
            400,
        ),
        (
            "POST",
            "/api/media/hub/transfers/k/status/".into(),
            None,
            vec![],
            405,
        ),
        (
            "GET",
            "/api/media/hub/transfers/%FF/status/".into(),
            None,
            vec![],
            400,
        ),
        ("GET", "/no/such/route".into(), None, vec![], 404),
    ];
    for (method, path, ct, body, want) in cases {
        let mut r = http()
            .request(method, &srv.url(&path))
            .set("Authorization", &bearer)
            // A refusal may close the connection unread; a pooled reuse of it would be a
            // transport error in the next case, not an answer.
            .set("Connection", "close");
        for (k, v) in hub_headers {
            r = r.set(k, v);
        }
        let resp = match ct {
            Some(ct) => r.set("Content-Type", ct).send_bytes(&body),
            None if method == "GET" || method == "DELETE" => r.call(),
            None => r.send_bytes(&body),
        };
        let (status, ctype, text) = raw(resp);
        assert_eq!(status, want, "{method} {path}: {text}");
        assert!(
            ctype.starts_with("application/json"),
            "{method} {path}: {ctype} {text:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        if path.starts_with("/api/media/hub/transfers/") && v.get("code").is_none() {
            // The hub speaks the reference's refusal shapes (src/hub/wire): a detail
            // or a DRF field-error object, never an empty one.
            assert!(
                v.as_object().is_some_and(|o| !o.is_empty()),
                "{method} {path}: {v}"
            );
            continue;
        }
        let code = v["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no code: {v}"));
        let message = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no message: {v}"));
        assert!(
            !code.is_empty() && message.len() > 10,
            "{method} {path}: {v}"
        );
    }
}
