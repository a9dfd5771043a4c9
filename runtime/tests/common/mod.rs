//! Shared test harness: builds the test projections, starts a runtime on a
//! fresh data folder, talks to its API through the router.

#![allow(dead_code)]

pub mod brokers;
pub mod client;
pub mod keepalive;
pub mod process;
pub mod sinks;
pub mod sse;
pub mod writers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use reel::Config;
use reel::Server;
use reel::testing::workload::StoredEvent;
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

/// The component of a projection in another language
/// (`projections/<name>/dist/<name>.wasm`, e.g. `order-summaries-js`). Their
/// toolchains are not cargo's: `cargo xtask guests` builds them, and a test
/// that needs one fails loudly when it is missing.
pub fn language_guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../projections/{name}/dist/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the JavaScript, Python and C projections with `cargo xtask guests` \
         (it installs their toolchains: npm packages, componentize-py, clang + wasi-libc, wit-bindgen, wasm-tools)",
        path.display()
    );
    path
}

/// A compile cache shared by every test (safe for concurrent use).
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("reel-compile-cache")
}

/// Which event log and read-model store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite files.
    Sqlite,
    /// A fresh PostgreSQL database on 127.0.0.1:5432.
    Postgres,
}

/// Run a test body on both backends: `both_backends!(name, ...)` turns each
/// `async fn name(backend: Backend)` into tests `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::common::Backend::Postgres).await
            }
        }
    )*};
}

/// The server tests create their databases on (`REEL_TEST_DATABASE_URL`
/// overrides it): a superuser connection to an existing database.
pub fn postgres_admin_url() -> String {
    std::env::var("REEL_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database of its own for one test, dropped by [`drop_database`].
pub async fn create_database() -> String {
    let admin_url = postgres_admin_url();
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is needed for this test at {admin_url}: {e}"));
    tokio::spawn(connection);
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let name = format!("reel_t_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    let mut config: tokio_postgres::Config = admin_url.parse().unwrap();
    config.dbname(&name);
    let host = "127.0.0.1";
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{name}")
}

/// Drop a test database and the roles reel created in it.
pub async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap().to_owned();
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let roles: Vec<String> = client
            .query("SELECT role_name FROM reel.namespaces", &[])
            .await
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .unwrap_or_default();
        drop(client);
        let (admin, connection) = tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        for role in roles {
            let _ = admin.batch_execute(&format!("DROP ROLE IF EXISTS \"{role}\"")).await;
        }
    }
}

/// A runtime on a fresh folder (and database), with short timings for tests.
pub struct Harness {
    pub server: Server,
    pub app: Router,
    pub dir: TempDir,
    pub config: Config,
    pub backend: Backend,
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

/// reel's warnings (or what `RUST_LOG` asks for) go to the test's captured
/// output, which the test runner prints when the test fails.
fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "reel=warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

impl Harness {
    /// Start with these components (crate names) in the modules folder.
    pub async fn start(backend: Backend, modules: &[&str]) -> Self {
        Self::start_with(backend, modules, |_| {}).await
    }

    /// Start with a configuration tweak.
    pub async fn start_with(backend: Backend, modules: &[&str], tweak: impl FnOnce(&mut Config)) -> Self {
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        if backend == Backend::Postgres && config.database_url.is_none() {
            config.database_url = Some(create_database().await);
        }
        std::fs::create_dir_all(&config.modules_dir).unwrap();
        for module in modules {
            std::fs::copy(guest(module), config.modules_dir.join(format!("{module}.wasm"))).unwrap();
        }
        let server = Server::start(config.clone()).await.expect("reel starts");
        let app = reel::testing::app(server.services());
        Self { server, app, dir, config, backend }
    }

    /// Stop this runtime and start a new one on the same folders.
    pub async fn restart(self) -> Self {
        self.server.shutdown().await;
        let server = Server::start(self.config.clone()).await.expect("reel restarts");
        let app = reel::testing::app(server.services());
        Self { server, app, ..self }
    }

    /// Stop the runtime and drop the test's database.
    pub async fn finish(self) {
        self.server.shutdown().await;
        if let Some(url) = &self.config.database_url {
            drop_database(url).await;
        }
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
    pub async fn append_workload(&self, events: &[reel::testing::workload::OrderEvent]) -> i64 {
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

    /// A plain connection to the test's PostgreSQL database (as the superuser).
    pub async fn postgres(&self) -> tokio_postgres::Client {
        let url = self.config.database_url.as_ref().expect("a PostgreSQL test");
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Every stored event in delivery order, read straight from the events table.
    pub async fn stored_events(&self) -> Vec<StoredEvent> {
        stored_events(&self.config.data_dir, self.config.database_url.as_deref()).await
    }

    /// Raw KV entries of a projection's serving namespace under `prefix`,
    /// read straight from the database.
    pub async fn kv_bytes(&self, projection: &str, prefix: &str) -> std::collections::BTreeMap<String, String> {
        match self.backend {
            Backend::Sqlite => {
                let (active, _) = self.server.deployments().views(projection).expect("a known projection");
                let file = self.config.data_dir.join(format!("projections/{}.db", active.ns.slug()));
                let conn = rusqlite::Connection::open(file).unwrap();
                let mut stmt =
                    conn.prepare("SELECT key, value FROM _reel_kv WHERE substr(key, 1, length(?1)) = ?1").unwrap();
                stmt.query_map([prefix], |r| {
                    Ok((r.get::<_, String>(0)?, String::from_utf8(r.get::<_, Vec<u8>>(1)?).unwrap()))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Backend::Postgres => {
                let client = self.postgres().await;
                let schema: String = client
                    .query_one(
                        "SELECT n.schema_name FROM reel.active a JOIN reel.namespaces n USING (namespace) WHERE a.name = $1",
                        &[&projection],
                    )
                    .await
                    .unwrap()
                    .get(0);
                let rows = client
                    .query(
                        &format!("SELECT key, value FROM \"{schema}\"._reel_kv WHERE starts_with(key, $1)"),
                        &[&prefix],
                    )
                    .await
                    .unwrap();
                rows.iter().map(|r| (r.get(0), String::from_utf8(r.get(1)).unwrap())).collect()
            }
        }
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

/// A request through `app`: (status, JSON body or the text as a string).
pub async fn oneshot(app: &Router, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
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
pub fn expected_rows(expected: &reel::testing::workload::Expected) -> std::collections::BTreeMap<String, Value> {
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
pub fn expected_customers(expected: &reel::testing::workload::Expected) -> std::collections::BTreeMap<String, Value> {
    expected.customers.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect()
}

/// Every event of the events table in `data_dir` (SQLite) or at
/// `database_url`, in delivery order, read straight from the table.
pub async fn stored_events(data_dir: &Path, database_url: Option<&str>) -> Vec<StoredEvent> {
    match database_url {
        None => {
            let conn = rusqlite::Connection::open(data_dir.join("events.db")).unwrap();
            let mut stmt = conn.prepare("SELECT event_type, data, occurred_at FROM events ORDER BY id").unwrap();
            stmt.query_map([], |r| Ok(StoredEvent { event_type: r.get(0)?, data: r.get(1)?, occurred_at: r.get(2)? }))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let rows = client
                .query(
                    "SELECT event_type, data::text, (extract(epoch FROM occurred_at) * 1000000)::bigint \
                     FROM events ORDER BY transaction_id, id",
                    &[],
                )
                .await
                .unwrap();
            rows.iter()
                .map(|r| StoredEvent {
                    event_type: r.get(0),
                    data: r.get(1),
                    occurred_at: reel::model::time::format_micros(r.get(2)),
                })
                .collect()
        }
    }
}

/// A run's own place: a temporary folder holding an empty `modules` folder,
/// a runtime for the setup's async calls, and on PostgreSQL a database of
/// the run's own.
pub fn scratch(backend: Backend) -> (tempfile::TempDir, tokio::runtime::Runtime, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let setup = tokio::runtime::Runtime::new().unwrap();
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(setup.block_on(create_database())),
    };
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    (dir, setup, database)
}

/// A benchmark's own arguments: `each(flag, value)` takes a flag it knows
/// (calling `value` for the flag's value) and says whether it did; cargo's
/// `--bench` and `--nocapture` are passed over, anything else refused.
pub fn bench_args(mut each: impl FnMut(&str, &mut dyn FnMut() -> String) -> bool) {
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        if !each(&arg, &mut value) && !matches!(arg.as_str(), "--bench" | "--nocapture") {
            panic!("unknown argument {arg}");
        }
    }
}

/// A benchmark's logging (as `RUST_LOG` says, warnings otherwise) and the
/// runtime it drives reel with.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The value of the unlabelled gauge `name` in `/metrics`' text, if there.
pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The backends a benchmark's `--backend sqlite|postgres|both` names.
pub fn backends(name: &str) -> Vec<Backend> {
    match name {
        "sqlite" => vec![Backend::Sqlite],
        "postgres" => vec![Backend::Postgres],
        "both" => vec![Backend::Sqlite, Backend::Postgres],
        other => panic!("unknown backend {other}"),
    }
}
