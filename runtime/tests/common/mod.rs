//! Shared test harness: builds the test projections, starts a runtime on a
//! fresh data folder, talks to its API through the router.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use reel::runtime::Runtime;
use reel::workload::StoredEvent;
use reel::{Config, api};
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

/// Where the components of `projections/` are, built once per test binary.
pub fn guests() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../projections");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the test projections");
        assert!(
            status.success(),
            "building the test projections failed; is the target installed? `rustup target add wasm32-wasip2`"
        );
        root.join("target/wasm32-wasip2/release")
    })
}

/// The component file of a projection crate (`order_summaries`, `fixture_faulty`, ...).
pub fn guest(crate_name: &str) -> PathBuf {
    let path = guests().join(format!("{crate_name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A compile cache shared by every test (safe for concurrent use).
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("reel-compile-cache")
}

/// A runtime on a fresh folder, with short timings for tests.
pub struct Harness {
    pub runtime: Runtime,
    pub app: Router,
    pub dir: TempDir,
    pub config: Config,
}

/// Test configuration: fast polling and debounce, a short CPU deadline.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.join("data"),
        modules_dir: dir.join("modules"),
        cache_dir: Some(shared_cache()),
        listen: "127.0.0.1:0".parse().unwrap(),
        poll_interval: Duration::from_millis(50),
        watch_debounce: Duration::from_millis(150),
        read_wait: Duration::from_secs(10),
        ..Config::default()
    };
    config.limits.batch_timeout = Duration::from_millis(1500);
    config.limits.memory_bytes = 64 << 20;
    config
}

impl Harness {
    /// Start with these components (crate names) in the modules folder.
    pub async fn start(modules: &[&str]) -> Self {
        Self::start_with(modules, |_| {}).await
    }

    /// Start with a configuration tweak.
    pub async fn start_with(modules: &[&str], tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        std::fs::create_dir_all(&config.modules_dir).unwrap();
        for module in modules {
            std::fs::copy(guest(module), config.modules_dir.join(format!("{module}.wasm"))).unwrap();
        }
        let runtime = Runtime::start(config.clone()).await.expect("runtime starts");
        let app = api::app(runtime.clone());
        Self { runtime, app, dir, config }
    }

    /// Stop this runtime and start a new one on the same folders.
    pub async fn restart(self) -> Self {
        self.runtime.shutdown().await;
        let runtime = Runtime::start(self.config.clone()).await.expect("runtime restarts");
        let app = api::app(runtime.clone());
        Self { runtime, app, dir: self.dir, config: self.config }
    }

    /// Put a component into the modules folder as `file` (atomically).
    pub fn install(&self, crate_name: &str, file: &str) {
        let tmp = self.dir.path().join(format!("{file}.tmp"));
        std::fs::copy(guest(crate_name), &tmp).unwrap();
        std::fs::rename(&tmp, self.config.modules_dir.join(file)).unwrap();
    }

    /// A request through the router: (status, JSON body or the text as a string).
    pub async fn call(&self, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    /// `GET uri`, expecting 200.
    pub async fn get(&self, uri: &str) -> Value {
        let (status, body) = self.call("GET", uri, None).await;
        assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
        body
    }

    /// Append through the API; returns the response body.
    pub async fn append(&self, stream: &str, expected: Option<i64>, events: Value) -> Value {
        let body = json!({ "stream_id": stream, "expected_version": expected, "events": events });
        let (status, body) = self.call("POST", "/events", Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "append: {body}");
        body
    }

    /// Append a generated workload through the API, in batches of events of
    /// consecutive streams where possible. Returns the last position.
    pub async fn append_workload(&self, events: &[reel::workload::OrderEvent]) -> i64 {
        let mut last = 0;
        for e in events {
            let body = self
                .append(&e.stream_id, Some(e.version - 1), json!([{ "event_type": e.event_type, "data": e.data }]))
                .await;
            last = body["positions"][0].as_i64().unwrap();
        }
        last
    }

    /// Status of a projection.
    pub async fn status(&self, name: &str) -> Value {
        self.get(&format!("/projections/{name}")).await
    }

    /// Wait (up to `timeout`) until `check` holds for the projection's status.
    pub async fn wait_status(&self, name: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (code, status) = self.call("GET", &format!("/projections/{name}"), None).await;
            if code == StatusCode::OK && check(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "timed out waiting on {name}; last status: {status:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every stored event, read straight from the events table.
    pub fn stored_events(&self) -> Vec<StoredEvent> {
        let conn = rusqlite::Connection::open(self.config.data_dir.join("events.db")).unwrap();
        let mut stmt = conn.prepare("SELECT event_type, data, occurred_at FROM events ORDER BY id").unwrap();
        stmt.query_map([], |r| Ok(StoredEvent { event_type: r.get(0)?, data: r.get(1)?, occurred_at: r.get(2)? }))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Every row of `order_summaries`, by order id, over HTTP.
    pub async fn order_rows(&self) -> std::collections::BTreeMap<String, Value> {
        let rows = self.get("/projections/order-summaries/tables/order_summaries?limit=10000&order=order_id").await;
        rows.as_array().unwrap().iter().map(|r| (r["order_id"].as_str().unwrap().to_owned(), r.clone())).collect()
    }

    /// Every `customer/` KV entry of customer-stats, over HTTP, as raw JSON text.
    pub async fn customer_values(&self) -> std::collections::BTreeMap<String, Value> {
        let mut out = std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut uri = "/projections/customer-stats/kv?prefix=customer/&limit=1000".to_owned();
            if let Some(a) = &after {
                uri.push_str(&format!("&after={}", urlencode(a)));
            }
            let page = self.get(&uri).await;
            for e in page["entries"].as_array().unwrap() {
                out.insert(e["key"].as_str().unwrap().to_owned(), e["value"].clone());
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return out,
            }
        }
    }
}

/// Percent-encode a query parameter value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The expected `order_summaries` rows as the API renders them.
pub fn expected_rows(expected: &reel::workload::Expected) -> std::collections::BTreeMap<String, Value> {
    expected
        .orders
        .iter()
        .map(|(id, o)| {
            let row = json!({
                "order_id": o.order_id,
                "customer_id": o.customer_id,
                "item_count": o.item_count,
                "total": o.total,
                "status": o.status,
                "placed_at": o.placed_at,
                "tracking_number": o.tracking_number,
                "shipped_at": o.shipped_at,
            });
            (id.clone(), row)
        })
        .collect()
}

/// The expected customer-stats values as the API renders them (parsed JSON).
pub fn expected_customers(expected: &reel::workload::Expected) -> std::collections::BTreeMap<String, Value> {
    expected.customers.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect()
}
