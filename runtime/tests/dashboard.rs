//! The dashboard in a real browser: Debian's chromium, driven over WebDriver,
//! against the whole server on a real socket with the example projections
//! deployed and events appended. What the page shows must be what the API
//! says; its buttons must work; a phone must not scroll sideways.
//!
//! `REEL_DASHBOARD_SCREENSHOTS=docs cargo test -p reel --test dashboard`
//! also rebuilds a projection over a larger log and saves the screenshots
//! the README shows (`dashboard-desktop.png`, `dashboard-phone.png`).

mod common;
#[path = "dashboard/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{Backend, Harness};
use reel::testing::Client;
use reel::testing::workload::{OrderWorkload, generate, load};
use serde_json::{Value, json};
use webdriver::Browser;

/// Long enough for a few of the page's one-second polls on a busy machine.
const SEEN_WITHIN: Duration = Duration::from_secs(15);

/// The server has tokens: the page signs in with this one (ADR 33).
const TOKEN: &str = "dashboard-test-admin-token";

/// Append through the API with [`TOKEN`].
fn append(base: &str, events: &[reel::testing::workload::OrderEvent]) {
    load::append_through(Client::connect(base).unwrap().with_token(Some(TOKEN)), events).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says_pauses_and_fits_a_phone() {
    let modules = ["order_summaries", "customer_stats", "fixture_faulty", "fixture_skipper"];
    let harness = Harness::start_with(Backend::Sqlite, &modules, |config| {
        config.tokens = reel::config::tokens::Tokens::parse(&format!("browser admin {TOKEN}"), "test").unwrap();
        // The screenshots' large batches in a debug build need more than
        // the tests' short CPU deadline.
        if std::env::var_os("REEL_DASHBOARD_SCREENSHOTS").is_some() {
            config.limits.batch_timeout = Duration::from_secs(30);
        }
    })
    .await;
    std::fs::write(harness.config.modules_dir.join("broken.wasm"), b"not a module").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(reel::serve(harness.server.clone(), listener, async {
        let _ = stopped.await;
    }));
    let data = harness.config.data_dir.clone();
    let result = tokio::task::spawn_blocking(move || browse(addr, data)).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_with_their_types_and_revalidated() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt;

    let harness = Harness::start(Backend::Sqlite, &[]).await;
    let get = |uri: &str, etag: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        harness.app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    let page = get("/", None).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let etag = page.headers()[header::ETAG].to_str().unwrap().to_owned();
    let again = get("/", Some(&etag)).await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    let script = get("/dashboard/app.js", None).await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    let (status, body) = common::oneshot(&harness.app, "GET", "/dashboard/missing.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "the dashboard has no file `missing.js`");
    harness.finish().await;
}

fn browse(addr: SocketAddr, data_dir: PathBuf) {
    let base = format!("http://{addr}");
    let mut api = Api(Client::connect(&base).unwrap().with_token(Some(TOKEN)));
    append(&base, &generate(&OrderWorkload::new(60, 7)));
    // A poison event: `faulty` stops at it, `skipper` sets it aside as a
    // dead letter (and another one, to discard from the page).
    api.post(
        "/events",
        json!({ "stream_id": "fault-1", "events": [
        { "event_type": "fault", "data": { "target": "*", "action": "error" } } ] }),
    );
    fault(&mut api, "skipper");
    api.settle();

    let mut browser = Browser::start();
    browser.window(1280, 1000);
    browser.goto(&base);

    // reel has tokens: the page asks for one, and signs in with it (its
    // polls, then its buttons, go with the session cookie).
    browser.wait("the page asks for a token", SEEN_WITHIN, |b| {
        let asked = b.script("return !document.getElementById('sign-in').hidden;", json!([]));
        if asked == json!(true) { Ok(()) } else { Err(asked.to_string()) }
    });
    browser.script(
        "document.getElementById('token').value = arguments[0]; document.getElementById('sign-in').requestSubmit();",
        json!([TOKEN]),
    );

    // Every projection has its row, with the state, version, position, head,
    // lag and dead letters `GET /projections` gives.
    rows_match_the_api(&mut browser, &mut api);
    let faulty = api.get("/projections/faulty");
    assert_eq!(faulty["state"], "stopped", "{faulty}");
    let shown = field(&mut browser, "[data-module='faulty'] [data-field='error']");
    assert_eq!(shown, faulty["last_error"]["message"].as_str().unwrap(), "the last error in full");
    let files = api.get("/modules");
    let refused = files.as_array().unwrap().iter().find(|f| f["path"].as_str().unwrap().ends_with("broken.wasm"));
    let refusal = refused.expect("broken.wasm is listed")["error"].as_str().unwrap().to_owned();
    let shown = browser.wait("the refused file shows why", SEEN_WITHIN, |b| {
        let shown = text(b, "[data-file='broken.wasm'] [data-field='refusal']");
        if shown == refusal { Ok(shown) } else { Err(shown) }
    });
    assert!(shown.contains("not a WebAssembly component"), "{shown}");

    // The dead letter's error, behind its count.
    let count = browser.find("[data-module='skipper'] [data-field='dead-letters']").unwrap();
    browser.click(&count);
    let letter = api.get("/projections/skipper/dead-letters");
    let error = letter[0]["error"].as_str().unwrap().to_owned();
    browser.wait("the dead letter shows its error", SEEN_WITHIN, |b| {
        let shown = text(b, "[data-module='skipper'] .letters li pre");
        if shown == error { Ok(()) } else { Err(shown) }
    });
    let shown = browser.script(
        "return document.querySelector(\"[data-module='skipper'] .letters [data-field='data']\").textContent;",
        json!([]),
    );
    let shown: Value = serde_json::from_str(shown.as_str().unwrap()).expect("the payload shown is JSON");
    assert_eq!(shown, letter[0]["data"], "the dead letter's payload");

    // Retried with the same code, it fails again: the page says so, in reel's words.
    let retry = browser.find("[data-module='skipper'] .letters [data-action='retry']").unwrap();
    browser.click(&retry);
    browser.wait("the failed retry is explained", SEEN_WITHIN, |b| {
        let toast = text(b, ".toast.error");
        if toast.contains("still fails, and stays a dead letter") { Ok(()) } else { Err(toast) }
    });

    // Discard that dead letter from the page (the button asks once more).
    let position = letter[0]["position"].clone();
    // Both presses in one script: the list is drawn again when the retry's
    // answer arrives, which may replace the button between two WebDriver clicks.
    let discard = "[data-module='skipper'] .letters [data-action='discard']";
    browser.script("const b = document.querySelector(arguments[0]); b.click(); b.click();", json!([discard]));
    browser.wait("the discarded dead letter is gone", SEEN_WITHIN, |b| {
        let (count, first) = (row(b, "skipper", "dead-letters"), text(b, "[data-module='skipper'] .letters li pre"));
        if count == "1" && first == letter[1]["error"].as_str().unwrap() { Ok(()) } else { Err(count) }
    });
    let left = api.get("/projections/skipper/dead-letters");
    assert_eq!(left.as_array().unwrap().iter().map(|l| &l["position"]).collect::<Vec<_>>(), [&letter[1]["position"]]);
    let skipper = api.get("/projections/skipper");
    assert_eq!((&skipper["discarded"], &skipper["admin_actions"][0]["position"]), (&json!(1), &position));

    // Skip the event `faulty` stopped at: it goes on, the event is a dead
    // letter, and the status says who did it (the browser, on loopback).
    let stopped_at = faulty["stopped_at"].clone();
    let skip = browser.find("[data-module='faulty'] [data-action='skip']").unwrap();
    browser.click(&skip);
    browser.click(&skip);
    browser.wait("faulty runs again", SEEN_WITHIN, |b| {
        let state = row(b, "faulty", "state");
        if state == "running" { Ok(()) } else { Err(state) }
    });
    let faulty = api.get("/projections/faulty");
    assert_eq!((&faulty["dead_letters"], &faulty["skipped"]), (&json!(1), &json!(1)), "{faulty:#}");
    let action = &faulty["admin_actions"][0];
    assert_eq!(
        (&action["action"], &action["position"], &action["by"]),
        (&json!("skip"), &stopped_at, &json!("127.0.0.1"))
    );
    assert_eq!(api.get("/projections/faulty/dead-letters")[0]["position"], stopped_at);
    // Stopped again, for the rest of the test and the screenshots.
    fault(&mut api, "faulty");
    api.settle();

    // Pause customer-stats from its row; events appended meanwhile are its lag.
    let pause = browser.find("[data-module='customer-stats'] [data-action='pause']").unwrap();
    browser.click(&pause);
    browser.wait("customer-stats shows paused", SEEN_WITHIN, |b| {
        let state = field(b, "[data-module='customer-stats'] [data-field='state']");
        if state == "paused" { Ok(()) } else { Err(state) }
    });
    assert_eq!(api.get("/projections/customer-stats")["state"], "paused");
    append(&base, &generate(&OrderWorkload::new(15, 8)));
    api.settle();
    let lag = api.get("/projections/customer-stats")["lag"].as_i64().unwrap();
    assert!(lag > 0, "a paused projection falls behind");
    rows_match_the_api(&mut browser, &mut api);

    let resume = browser.find("[data-module='customer-stats'] [data-action='resume']").unwrap();
    browser.click(&resume);
    browser.wait("customer-stats runs and catches up", SEEN_WITHIN, |b| {
        let (state, lag) = (row(b, "customer-stats", "state"), row(b, "customer-stats", "lag"));
        if (state.as_str(), lag.as_str()) == ("running", "0") { Ok(()) } else { Err(format!("{state}, lag {lag}")) }
    });

    // From a small phone to a wide screen, nothing is wider than the window.
    for width in [320, 640, 641, 800, 1080, 1081, 1280, 1920] {
        browser.devtools(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        let wide = browser.script(&[WIDER_THAN_THE_WINDOW, "return wide;"].concat(), json!([]));
        assert_eq!(wide, json!([]), "at {width} px, elements wider than the window");
    }

    // A phone, 390 CSS pixels wide: nothing wider than the screen, every
    // module's row and state in view.
    phone(&mut browser);
    let layout = browser.script(
        &[
            WIDER_THAN_THE_WINDOW,
            "const rows = [...document.querySelectorAll('[data-module]')].map((m) => {
               const state = m.querySelector('[data-field=state]');
               const r = state.getBoundingClientRect();
               return { name: m.dataset.module, state: state.innerText, visible: state.checkVisibility(), left: r.left, right: r.right };
             });
             return { innerWidth, width, scrollWidth: document.documentElement.scrollWidth, wide, rows };",
        ]
        .concat(),
        json!([]),
    );
    assert_eq!(layout["innerWidth"], 390, "{layout}");
    assert!(layout["scrollWidth"].as_f64() <= layout["width"].as_f64(), "scrolls sideways: {layout}");
    assert_eq!(layout["wide"], json!([]), "elements wider than the screen: {layout}");
    let rows = layout["rows"].as_array().unwrap();
    assert_eq!(rows.len(), api.get("/projections").as_array().unwrap().len(), "{layout}");
    for r in rows {
        assert!(r["visible"] == true && r["state"] != "", "{r}");
        assert!(r["left"].as_f64() >= Some(0.0) && r["right"].as_f64() <= Some(390.0), "{r}");
    }

    // The failed retry answered 422: the browser logs that load; nothing else.
    let errors = browser.errors();
    assert!(errors.iter().all(|e| e.contains("/retry - Failed to load resource")), "{errors:#?}");

    if let Some(dir) = std::env::var_os("REEL_DASHBOARD_SCREENSHOTS") {
        screenshots(&mut browser, &mut api, &base, &data_dir, &PathBuf::from(dir));
    }
}

/// Sets `width` (the window's) and `wide`: the visible elements that reach past it.
const WIDER_THAN_THE_WINDOW: &str = "const width = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll('body *')]
      .filter((e) => e.checkVisibility() && e.getBoundingClientRect().right > width + 0.5)
      .map((e) => e.tagName.toLowerCase() + '.' + e.className);";

/// Each row as the page shows it equals `GET /projections` (read again at
/// each look: the page shows the last of its one-second polls).
fn rows_match_the_api(browser: &mut Browser, api: &mut Api) {
    browser.wait("every row shows what GET /projections says", SEEN_WITHIN, |b| {
        let projections = api.get("/projections");
        let projections = projections.as_array().unwrap();
        if projections.len() != 4 {
            return Err(format!("{} projections", projections.len()));
        }
        for p in projections {
            let name = p["name"].as_str().unwrap();
            let expected = [
                p["state"].as_str().unwrap().to_owned(),
                format!("projection · v{}", p["version"].as_str().unwrap()),
                p["position"].to_string(),
                p["head"].to_string(),
                p["lag"].to_string(),
                p["dead_letters"].to_string(),
            ];
            let shown = ["state", "meta", "position", "head", "lag", "dead-letters"].map(|f| {
                let value = row(b, name, f);
                // Figures are grouped for reading (1,234): compare digits.
                if ["position", "head", "lag", "dead-letters"].contains(&f) {
                    value.chars().filter(char::is_ascii_digit).collect()
                } else {
                    value
                }
            });
            if shown != expected {
                return Err(format!("{name}: shown {shown:?}, GET /projections {expected:?}"));
            }
        }
        Ok(())
    });
}

/// The text of a field of a module's row, as displayed.
fn row(browser: &mut Browser, module: &str, field: &str) -> String {
    let css = if field == "meta" {
        format!("[data-module='{module}'] .meta")
    } else {
        format!("[data-module='{module}'] [data-field='{field}']")
    };
    text(browser, &css)
}

/// The rendered text of the first element matching `css` ("" if none).
fn text(browser: &mut Browser, css: &str) -> String {
    let found =
        browser.script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", json!([css]));
    found.as_str().unwrap_or_default().trim().to_owned()
}

/// Like [`text`], waiting until the element shows something.
fn field(browser: &mut Browser, css: &str) -> String {
    browser.wait(&format!("{css} shows"), SEEN_WITHIN, |b| {
        let shown = text(b, css);
        if shown.is_empty() { Err("nothing".into()) } else { Ok(shown) }
    })
}

/// Emulate a phone: 390 x 844 CSS pixels, touch, twice the pixels.
fn phone(browser: &mut Browser) {
    let metrics = json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true });
    browser.devtools("Emulation.setDeviceMetricsOverride", metrics);
}

/// The README's pictures: a busy log, a rebuild under way, live charts.
fn screenshots(browser: &mut Browser, api: &mut Api, base: &str, data_dir: &std::path::Path, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    browser.devtools("Emulation.clearDeviceMetricsOverride", json!({}));
    browser.window(1280, 1000);
    // A backlog to catch up on, live appends for the charts, then a rebuild.
    api.post("/projections/skipper/pause", json!({}));
    load::insert_sqlite(&data_dir.join("events.db"), &generate(&OrderWorkload::new(150_000, 9))).unwrap();
    let feed = {
        let base = base.to_owned();
        std::thread::spawn(move || {
            for seed in 0..80 {
                append(&base, &generate(&OrderWorkload::new(20 + seed * 7 % 40, 100 + seed as u64)));
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(12));
    api.post("/projections/order-summaries/rebuild", json!({}));
    std::thread::sleep(Duration::from_secs(5));
    let rebuilding = text(browser, "[data-module='order-summaries'] [data-field='rebuild']");
    assert!(!rebuilding.is_empty(), "the screenshot should show a rebuild under way");
    // From the top: the sticky header is drawn where the page is scrolled to.
    browser.script("window.scrollTo(0, 0);", json!([]));
    std::fs::write(dir.join("dashboard-desktop.png"), browser.screenshot(true)).unwrap();
    phone(browser);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("dashboard-phone.png"), browser.screenshot(false)).unwrap();
    feed.join().unwrap();
}

/// Append a poison event for `target`.
fn fault(api: &mut Api, target: &str) {
    let event = json!({ "event_type": "fault", "data": { "target": target, "action": "error" } });
    api.post("/events", json!({ "stream_id": format!("fault-{target}"), "events": [event] }));
}

/// reel's API over the real socket.
struct Api(Client);

impl Api {
    fn get(&mut self, path: &str) -> Value {
        let response = self.0.get(path).unwrap();
        assert_eq!(response.status, 200, "GET {path}: {}", response.body);
        response.json().unwrap()
    }

    fn post(&mut self, path: &str, body: Value) {
        let response = self.0.post(path, Some(&body.to_string())).unwrap();
        assert!((200..300).contains(&response.status), "POST {path}: {}", response.body);
    }

    /// Wait until every projection has applied the whole log or stopped
    /// (or paused) for good.
    fn settle(&mut self) {
        let deadline = std::time::Instant::now() + SEEN_WITHIN;
        loop {
            let all = self.get("/projections");
            let settled = |p: &Value| match p["state"].as_str() {
                Some("running") => p["lag"] == 0,
                Some("stopped" | "paused") => true,
                _ => false,
            };
            if all.as_array().unwrap().iter().all(settled) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "projections did not catch up: {all:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
