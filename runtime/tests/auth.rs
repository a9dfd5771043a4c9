//! Tokens and scopes: every operation of `openapi.json` called with no
//! token and with each scope answers as its `x-reel-scope` says. Above the
//! backends, so on SQLite only.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use reel::config::tokens::Tokens;
use serde_json::Value;
use tower::ServiceExt;

use common::{Backend, Harness};

/// How long a projection may take to settle into a state on a loaded machine.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(90);

const READER: &str = "reader-token-0123456789";
const WRITER: &str = "writer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
/// May read only the projection `other`.
const NARROW: &str = "narrow-token-0123456789";

async fn start() -> Harness {
    let lines =
        format!("reader read {READER}\nwriter append {WRITER}\nadmin admin {ADMIN}\nnarrow read:other {NARROW}");
    let tokens = Tokens::parse(&lines, "test").unwrap();
    Harness::start_with(Backend::Sqlite, &["customer_stats"], |config| config.tokens = tokens).await
}

/// (status, WWW-Authenticate, JSON body) of a request with `token`.
async fn call(h: &Harness, method: &str, uri: &str, token: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = if method == "POST" { Body::from("{}") } else { Body::empty() };
    let request = request.header(header::CONTENT_TYPE, "application/json").body(body).unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
    // A streaming route's body never ends: its status is what is checked.
    let bytes = match tokio::time::timeout(std::time::Duration::from_millis(200), response.into_body().collect()).await
    {
        Ok(body) => body.unwrap().to_bytes(),
        Err(_) => Default::default(),
    };
    (status, challenge, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A concrete URI for an OpenAPI path template.
fn concrete(template: &str) -> String {
    template
        .replace("{name}", "customer-stats")
        .replace("{file}", "app.js")
        .replace("{position}", "1")
        .replace("{key}", "customer/c")
        .split('/')
        .map(|segment| if segment.starts_with('{') { "x" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_each_scope_as_declared() {
    let h = start().await;
    let openapi: Value = serde_json::from_str(reel::testing::OPENAPI).unwrap();
    let mut checked = 0;
    for (template, operations) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let method = method.to_uppercase();
            let scope =
                operation["x-reel-scope"].as_str().unwrap_or_else(|| panic!("{method} {template}: no x-reel-scope"));
            let uri = concrete(template);
            for (who, token) in
                [("no token", None), ("read", Some(READER)), ("append", Some(WRITER)), ("admin", Some(ADMIN))]
            {
                let (status, challenge, body) = call(&h, &method, &uri, token).await;
                let allowed = scope == "open" || token == Some(ADMIN) || Some(scope) == token.map(|_| who);
                let context = format!("{method} {uri} (scope {scope}) with {who}: {status} {body}");
                if allowed {
                    assert!(status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN, "{context}");
                } else if token.is_none() {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{context}");
                    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="reel""#), "{context}");
                    assert_eq!(body["error"]["code"], "unauthorized", "{context}");
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{context}");
                    assert_eq!(body["error"]["code"], "forbidden", "{context}");
                    assert!(
                        body["error"]["message"].as_str().unwrap().contains(&format!("scope `{scope}`")),
                        "{context}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 4 * 21, "walked {checked} calls");

    // A token reel does not know is no token, said so.
    let (status, challenge, body) = call(&h, "GET", "/projections", Some("not-a-token-reel-knows")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="reel", error="invalid_token""#));

    // `read:other` reads `other`'s routes, and nothing else.
    let (status, _, body) = call(&h, "GET", "/projections/customer-stats/kv/customer/c", Some(NARROW)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["error"]["message"],
        "the token `narrow` may not GET /projections/{name}/kv/{*key}: that needs scope `read` (or `read:customer-stats`)"
    );
    let (status, _, body) = call(&h, "GET", "/projections/other/kv/customer/c", Some(NARROW)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _) = call(&h, "GET", "/projections", Some(NARROW)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // `read:NAME` names a projection: a decider of the same name is not `other`'s.
    let (status, _, body) = call(&h, "GET", "/deciders/other/streams/order-1/state", Some(NARROW)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Paths no route serves: 401 before the 404, a wrong method still 405.
    let (status, _, _) = call(&h, "GET", "/nowhere", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = call(&h, "GET", "/nowhere", Some(READER)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = call(&h, "PUT", "/events", Some(ADMIN)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_open_and_no_tokens_means_no_authentication() {
    let tokens = Tokens::parse(&format!("admin admin {ADMIN}"), "test").unwrap();
    let h = Harness::start_with(Backend::Sqlite, &[], |config| {
        config.tokens = tokens;
        config.metrics_open = true;
    })
    .await;
    assert_eq!(call(&h, "GET", "/metrics", None).await.0, StatusCode::OK);
    assert_eq!(call(&h, "GET", "/projections", None).await.0, StatusCode::UNAUTHORIZED);
    h.finish().await;

    let h = Harness::start(Backend::Sqlite, &[]).await;
    assert_eq!(call(&h, "GET", "/projections", None).await.0, StatusCode::OK);
    assert_eq!(call(&h, "GET", "/metrics", None).await.0, StatusCode::OK);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_serve_beyond_loopback_without_tokens_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let error = reel::run(config.clone(), async {}).await.unwrap_err().to_string();
    assert!(error.starts_with("reel will not listen on 0.0.0.0:0 without API tokens"), "{error}");

    config.insecure = true;
    reel::run(config.clone(), async {}).await.expect("--insecure serves it open");
    config.insecure = false;
    config.tokens = Tokens::parse(&format!("admin admin {ADMIN}"), "test").unwrap();
    reel::run(config, async {}).await.expect("tokens protect it");
}

/// `reel ARGS` with `env`: (success, stdout, stderr).
fn reel(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(args)
        .env_remove("REEL_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_token_reel_token_made() {
    let (ok, out, _) = reel(&["token", "ops", "admin"], &[]);
    assert!(ok, "{out}");
    let token = out.lines().find_map(|l| l.strip_prefix("token: ")).unwrap().to_owned();
    let line = out.lines().find_map(|l| l.strip_prefix("line:  ")).unwrap().to_owned();
    assert!(line.starts_with("ops admin sha256:") && !line.contains(&token), "{line}");

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.tokens = Tokens::parse(&line, "test").unwrap();
    let started = reel::Server::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(reel::serve(started, listener, async {
        let _ = stopped.await;
    }));
    let result = tokio::task::spawn_blocking(move || {
        let (ok, _, err) = reel(&["status", "--server", &url], &[]);
        assert!(!ok);
        assert!(err.contains("this route needs a token: send `Authorization: Bearer TOKEN`"), "{err}");
        let (ok, out, err) = reel(&["status", "--server", &url], &[("REEL_TOKEN", &token)]);
        assert!(ok, "{err}");
        assert!(out.starts_with("projection"), "{out}");
        let (ok, out, err) = reel(&["generate", "--orders", "3", "--server", &url, "--token", &token], &[]);
        assert!(ok, "{err}");
        assert!(out.starts_with("appended 3 orders"), "{out}");
        let (ok, _, err) = reel(&["pause", "nothing", "--server", &url, "--token", "reel_not-a-token-it-knows"], &[]);
        assert!(!ok && err.contains("the token is not one reel accepts"), "{err}");
    })
    .await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    result.unwrap();
}

/// (status, Set-Cookie, JSON body) of a request with these headers.
async fn call_with(
    h: &Harness,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Option<String>, Value) {
    let mut request = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = h.app.clone().oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = response.status();
    let cookie = response.headers().get(header::SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, cookie, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_for_a_cookie_that_needs_a_csrf_header_to_change_anything() {
    let h = start().await;
    let (status, _, body) = call_with(&h, "GET", "/session", &[], "").await;
    assert_eq!((status, &body), (StatusCode::OK, &serde_json::json!({ "authentication": true, "token": null })));
    let (status, cookie, _) = call_with(&h, "POST", "/session", &[], r#"{"token": "not-a-token-reel-knows"}"#).await;
    assert_eq!((status, cookie), (StatusCode::UNAUTHORIZED, None));

    let (status, cookie, body) = call_with(&h, "POST", "/session", &[], &format!(r#"{{"token": "{ADMIN}"}}"#)).await;
    assert_eq!((status, &body), (StatusCode::OK, &serde_json::json!({ "token": "admin" })));
    let cookie = cookie.unwrap();
    // A random session id, not the token: a leaked cookie ends with its session.
    let (id, attributes) = cookie.strip_prefix("reel_session=").unwrap().split_once(';').unwrap();
    assert!(id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) && !cookie.contains(ADMIN), "{cookie}");
    assert_eq!(attributes, " Path=/; HttpOnly; SameSite=Strict; Max-Age=43200");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let jar = [("cookie", cookie.as_str())];
    assert_eq!(call_with(&h, "GET", "/session", &jar, "").await.2["token"], "admin");
    let (status, _, body) = call_with(&h, "GET", "/projections", &jar, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Changing state by cookie alone is what a cross-site form could do.
    let (status, _, body) = call_with(&h, "POST", "/projections/customer-stats/pause", &jar, "").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")), "{body}");
    assert_eq!(body["error"]["message"], "a POST signed in by the session cookie must carry the x-reel-csrf header");
    // The live feed, as an EventSource reads it: the cookie, no header.
    let live = Request::get("/events/live").header("cookie", cookie.as_str()).body(Body::empty()).unwrap();
    let live = h.app.clone().oneshot(live).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.headers()[header::CONTENT_TYPE], "text/event-stream");
    let refused = h.app.clone().oneshot(Request::get("/events/live").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    drop(live);

    let csrf = [jar[0], ("x-reel-csrf", "1")];
    let (status, _, body) = call_with(&h, "POST", "/projections/customer-stats/pause", &csrf, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, cookie, _) = call_with(&h, "DELETE", "/session", &jar, "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(cookie.unwrap().starts_with("reel_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
    // Signed out on the server too: the old cookie opens nothing.
    assert_eq!(call_with(&h, "GET", "/projections", &jar, "").await.0, StatusCode::UNAUTHORIZED);
    h.finish().await;
}

/// State of `customer-stats` as the status route says.
async fn state(h: &Harness) -> Value {
    call_with(h, "GET", "/projections/customer-stats", &[], "").await.2["state"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_another_sites_page_cannot_change_reel_nor_rebind_a_name_to_it() {
    let h = Harness::start(Backend::Sqlite, &["customer_stats"]).await;
    let pause = "/projections/customer-stats/pause";
    let form = ("content-type", "application/x-www-form-urlencoded");
    // A plain cross-site form: the browser adds Origin (and Sec-Fetch-Site).
    for headers in [
        vec![form, ("origin", "http://evil.example"), ("host", "127.0.0.1:8080")],
        vec![form, ("origin", "null"), ("host", "127.0.0.1:8080")],
        vec![form, ("sec-fetch-site", "cross-site"), ("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")],
    ] {
        let (status, _, body) = call_with(&h, "POST", pause, &headers, "").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("cross_origin")),
            "{headers:?}"
        );
        assert_eq!(
            body["error"]["message"],
            "a POST from a page of another origin is refused; a client of reel's API sends no Origin header or adds \
             the x-reel-csrf header (any value)"
        );
    }
    assert_ne!(state(&h).await, "paused", "a refused request changed nothing");
    let (status, _, body) =
        call_with(&h, "DELETE", "/projections/customer-stats", &[("origin", "http://evil.example")], "").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("cross_origin")));

    // The dashboard (same origin, and it sends the header), the CLI and curl (no Origin) still can.
    let same = [("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")];
    // The runner takes a pause or a resume up a moment after the answer.
    let settled = |want: &'static str| h.wait_status("customer-stats", PATIENCE, move |s| s["state"] == want);
    assert_eq!(call_with(&h, "POST", pause, &same, "").await.0, StatusCode::OK);
    settled("paused").await;
    let resume = "/projections/customer-stats/resume";
    assert_eq!(call_with(&h, "POST", resume, &[("sec-fetch-site", "same-origin")], "").await.0, StatusCode::OK);
    settled("running").await;
    assert_eq!(call_with(&h, "POST", pause, &[], "").await.0, StatusCode::OK);
    settled("paused").await;
    let csrf = [("origin", "http://evil.example"), ("x-reel-csrf", "1")];
    assert_eq!(call_with(&h, "POST", resume, &csrf, "").await.0, StatusCode::OK);
    settled("running").await;
    // Reading stays open to any page (the browser keeps the answer from it).
    let (status, _, _) = call_with(&h, "GET", "/projections", &[("origin", "http://evil.example")], "").await;
    assert_eq!(status, StatusCode::OK);

    // DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1.
    let rebound = [("host", "evil.example:8080"), ("origin", "http://evil.example:8080")];
    let (status, _, body) = call_with(&h, "GET", "/projections", &rebound, "").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("host_not_allowed")), "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().ends_with("start reel with --allow-host evil.example"),
        "{body}"
    );
    assert_eq!(call_with(&h, "POST", pause, &rebound, "").await.0, StatusCode::FORBIDDEN);
    assert_ne!(state(&h).await, "paused");
    for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "reel"] {
        assert_eq!(call_with(&h, "GET", "/projections", &[("host", host)], "").await.0, StatusCode::OK, "{host}");
    }
    h.finish().await;

    // A name the operator allows; and with tokens, Host is not checked (a
    // rebound page holds no token and cannot read the cookie of another site).
    let h = Harness::start_with(Backend::Sqlite, &[], |c| c.allowed_hosts = vec!["reel.internal".into()]).await;
    assert_eq!(call_with(&h, "GET", "/projections", &[("host", "reel.internal:80")], "").await.0, StatusCode::OK);
    h.finish().await;
    let h = start().await;
    let bearer = format!("Bearer {ADMIN}");
    let named = [("host", "reel.example.com"), ("authorization", bearer.as_str())];
    assert_eq!(call_with(&h, "GET", "/projections", &named, "").await.0, StatusCode::OK);
    let foreign = [("origin", "http://evil.example"), ("authorization", bearer.as_str())];
    assert_eq!(call_with(&h, "POST", pause, &foreign, "").await.0, StatusCode::FORBIDDEN);
    h.finish().await;
}
