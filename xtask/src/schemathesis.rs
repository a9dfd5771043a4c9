//! `cargo xtask schemathesis`: the HTTP API against its own OpenAPI document.
//!
//! schemathesis (PyPI, pinned below, in a virtualenv under `target/`) reads
//! `GET /openapi.json` from a real `reel serve` and sends every operation the
//! document's examples, then values at and past each schema's edges, then
//! random ones, valid and not. Each answer is checked against the document
//! (`--checks all`): no 5xx, a documented status, a body and headers matching
//! their schemas, valid data accepted, invalid data refused, 401 without the
//! token. The server runs on embedded SQLite with `order-summaries`,
//! `customer-stats` and the `order` decider deployed, sample orders in the log
//! and a few events that leave dead letters and a stopped projection behind,
//! so the document's examples name things that exist: every operation must
//! answer 2xx at least once, or the run fails. A shadow run of
//! `customer-stats` (its own module again) is started and compared before
//! the passes, and again before it is discarded: no generated body is a
//! component, so the `POST /projections/{name}/shadow` counted is that one.
//!
//! Three passes on one server, because some operations change what the
//! others read: everything but the control routes (the `admin` ones); then
//! pause, resume, skip, discard, retry, rebuild and the shadow run's compare,
//! promote, discard and start, one at a time; then, with
//! `order-summaries`' module file removed, `DELETE /projections/{name}`. One
//! worker each: with two, CPython 3.11's `ast.parse` (which hypothesis calls
//! to describe a filter) failed once with "AST constructor recursion depth
//! mismatch". Decisions and figures: docs/adr/41-schemathesis.md.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Result, build_rust_guests, cargo, have, root, run};

/// The schemathesis release this runs (PyPI).
const SCHEMATHESIS: &str = "4.32.5";

/// Orders `reel generate` puts in the log before the server starts.
const ORDERS: &str = "100";

/// The token schemathesis sends: every scope (`admin` includes the others).
const TOKEN_NAME: &str = "schemathesis";

/// The token `POST /session`'s example signs in with (`read`): the document's
/// example works against this server.
const BROWSER_TOKEN: &str = "example-browser-token-3f9a2c71";

/// Where `prepare` puts the cancellation `customer-stats` sets aside and
/// then applies when retried (the example of the retry route), the one it
/// sets aside for good (discarded), and the shipment `order-summaries`
/// stops at (skipped).
const RETRY_POSITION: i64 = 181;
const DISCARD_POSITION: i64 = RETRY_POSITION + 1;
const SKIP_POSITION: i64 = RETRY_POSITION + 3;

/// The control routes: the second pass, one at a time, in this order.
const CONTROL: &[(&str, &str)] = &[
    // The record of the event `order-summaries` stopped at (ADR 49).
    ("GET", "/projections/{name}/replays/{position}"),
    ("POST", "/projections/{name}/pause"),
    ("POST", "/projections/{name}/resume"),
    ("POST", "/projections/{name}/skip/{position}"),
    ("DELETE", "/projections/{name}/dead-letters/{position}"),
    ("POST", "/projections/{name}/dead-letters/{position}/retry"),
    ("POST", "/projections/{name}/rebuild"),
    ("POST", "/projections/{name}/shadow/compare"),
    ("POST", "/projections/{name}/shadow/promote"),
    ("DELETE", "/projections/{name}/shadow"),
    ("POST", "/projections/{name}/shadow"),
];

/// The shadow run's operations: the one whose success `prepare_shadow`
/// gives, and the one that needs a shadow again (the promotion before it
/// took the first).
const START_SHADOW: (&str, &str) = ("POST", "/projections/{name}/shadow");
const DISCARD_SHADOW: (&str, &str) = ("DELETE", "/projections/{name}/shadow");

/// `DELETE /projections/{name}`: the third pass, once the module is removed.
const DELETE: (&str, &str) = ("DELETE", "/projections/{name}");

/// Options: `--max-examples N` (per operation and phase), `--seed S`.
/// `build`: build `reel` and the Rust projections first (`cargo xtask test`
/// has: its `cargo test` built `target/debug/reel` with the test suite's
/// features, which a `cargo build -p reel` would rebuild for minutes).
pub fn schemathesis(args: &[String], build: bool) -> Result {
    let usage = || "usage: cargo xtask schemathesis [--max-examples N] [--seed S]".to_owned();
    let mut max_examples = "12".to_owned();
    let mut seed = "1".to_owned();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().filter(|v| v.parse::<u64>().is_ok()).ok_or_else(usage)?;
        match flag.as_str() {
            "--max-examples" => max_examples = value.clone(),
            "--seed" => seed = value.clone(),
            _ => return Err(usage()),
        }
    }
    let started = Instant::now();
    let st = install()?;
    if build {
        build_rust_guests()?;
        run(&cargo(), &["build", "--locked", "--package", "reel", "--bin", "reel"])?;
    }
    let work = root().join("target/schemathesis");
    let dir = work.join("run");
    let _ = std::fs::remove_dir_all(&dir);
    let modules = dir.join("modules");
    std::fs::create_dir_all(&modules).map_err(|e| format!("creating {}: {e}", modules.display()))?;
    for name in ["order_summaries", "customer_stats", "order"] {
        let from = root().join(format!("projections/target/wasm32-wasip2/release/{name}.wasm"));
        std::fs::copy(&from, modules.join(format!("{name}.wasm")))
            .map_err(|e| format!("copying {}: {e}", from.display()))?;
    }
    let reel = root().join("target/debug/reel");
    let data = dir.join("data").to_string_lossy().into_owned();
    run(&reel.to_string_lossy(), &["generate", "--orders", ORDERS, "--seed", "1", "--data-dir", &data])?;
    let token = random_token()?;
    let server = Server::start(&reel, &dir, &token)?;
    server.prepare()?;
    let mut shadow_started = server.prepare_shadow(&modules)?;

    let url = format!("http://{}/openapi.json", server.addr);
    let config = root().join("xtask/schemathesis.toml");
    let st_run = |pass: &str, workers: &str, filter: &[String]| -> Result<PathBuf> {
        let file: String = pass.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let report = work.join(format!("{file}.ndjson"));
        let mut command = Command::new(&st);
        command
            .args(["--config-file"])
            .arg(&config)
            .args(["run", &url, "--checks", "all", "--workers", workers, "--max-examples", &max_examples])
            .args(["--seed", &seed, "--no-color", "--report", "ndjson", "--report-ndjson-path"])
            .arg(&report)
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(filter)
            .current_dir(&work);
        eprintln!("$ st run {url} --checks all --workers {workers} --max-examples {max_examples} ({pass})");
        let status = command.status().map_err(|e| format!("cannot run {}: {e}", st.display()))?;
        if !status.success() {
            return Err(format!("schemathesis found failures in the {pass} pass ({status}); see above"));
        }
        Ok(report)
    };
    let only = |(method, path): (&str, &str)| ["--include-name".to_owned(), format!("{method} {path}")];
    let mut reports = Vec::new();
    // The control routes are exactly the `admin` ones.
    let others = ["--exclude-by".to_owned(), "/x-reel-scope == admin".to_owned()];
    reports.push(st_run("reads-and-appends", "1", &others)?);
    for &operation in CONTROL {
        if operation == DISCARD_SHADOW {
            shadow_started = server.prepare_shadow(&modules)?;
        }
        reports.push(st_run(&format!("control {} {}", operation.0, operation.1), "1", &only(operation))?);
    }
    std::fs::remove_file(modules.join("order_summaries.wasm")).map_err(|e| format!("removing a module: {e}"))?;
    server.wait_for("order-summaries' module removed", || {
        Ok(server.get_json("/projections/order-summaries")?["state"].as_str() == Some("unloaded"))
    })?;
    reports.push(st_run("delete", "1", &only(DELETE))?);
    // schemathesis reads the document it tests but sends it no request.
    let (document, _) = server.call("GET", "/openapi.json", None)?;
    drop(server);

    let mut statuses = statuses(&reports)?;
    *statuses.entry("GET /openapi.json".to_owned()).or_default().entry(document).or_default() += 1;
    let start_shadow = format!("{} {}", START_SHADOW.0, START_SHADOW.1);
    *statuses.entry(start_shadow).or_default().entry(shadow_started).or_default() += 1;
    let operations = operations()?;
    let mut missing = Vec::new();
    for operation in &operations {
        let seen = statuses.get(operation).cloned().unwrap_or_default();
        let summary: Vec<String> = seen.iter().map(|(status, n)| format!("{status}x{n}")).collect();
        eprintln!("  {operation:<55} {}", summary.join(" "));
        if !seen.keys().any(|s| (200..300).contains(s)) {
            missing.push(operation.clone());
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "these operations never answered 2xx, so their success was not checked (give their parameters \
             examples in openapi.json that exist in the server xtask/src/schemathesis.rs prepares): {}",
            missing.join(", ")
        ));
    }
    eprintln!("xtask: schemathesis passed, every operation answered 2xx, in {:.0?}", started.elapsed());
    Ok(())
}

/// The virtualenv with schemathesis, made when missing: its `st`.
fn install() -> Result<PathBuf> {
    if !have("python3") {
        return Err("python3 (with venv and pip) is needed to run schemathesis".into());
    }
    let venv = root().join("target/schemathesis/venv");
    let st = venv.join("bin/st");
    let installed = Command::new(&st).arg("--version").output();
    if installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS)) {
        return Ok(st);
    }
    run("python3", &["-m", "venv", &venv.to_string_lossy()])?;
    let pip = venv.join("bin/pip").to_string_lossy().into_owned();
    run(&pip, &["install", "--quiet", "--disable-pip-version-check", &format!("schemathesis=={SCHEMATHESIS}")])?;
    Ok(st)
}

/// 32 random bytes as hex.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Every operation of openapi.json, as "METHOD /path".
fn operations() -> Result<Vec<String>> {
    let path = root().join("runtime/src/api/openapi.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let document: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&method.as_str()) {
                operations.push(format!("{} {path}", method.to_ascii_uppercase()));
            }
        }
    }
    Ok(operations)
}

/// The statuses each operation answered, counted from schemathesis' NDJSON
/// reports.
fn statuses(reports: &[PathBuf]) -> Result<BTreeMap<String, BTreeMap<u16, usize>>> {
    let mut seen: BTreeMap<String, BTreeMap<u16, usize>> = BTreeMap::new();
    for report in reports {
        let text = std::fs::read_to_string(report).map_err(|e| format!("reading {}: {e}", report.display()))?;
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).map_err(|e| format!("{}: {e}", report.display()))?;
            collect(&event, &mut seen);
        }
    }
    Ok(seen)
}

/// Count the statuses of a finished scenario's requests under its
/// operation ("METHOD /path"; a stateful scenario's label names no
/// operation, and its requests are not counted).
fn collect(event: &Value, seen: &mut BTreeMap<String, BTreeMap<u16, usize>>) {
    let recorder = &event["ScenarioFinished"]["recorder"];
    let Some(label) = recorder["label"].as_str() else { return };
    for interaction in recorder["interactions"].as_object().into_iter().flat_map(|i| i.values()) {
        if let Some(status) = interaction["response"]["status_code"].as_u64() {
            *seen.entry(label.to_owned()).or_default().entry(status as u16).or_default() += 1;
        }
    }
}

/// The `reel serve` schemathesis talks to; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    token: String,
}

impl Server {
    fn start(reel: &Path, dir: &Path, token: &str) -> Result<Self> {
        let mut child = Command::new(reel)
            .args(["serve", "--listen", "127.0.0.1:0", "--poll-ms", "20"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--projections")
            .arg(dir.join("modules"))
            .args(["--set", "order-summaries.changes=on", "--set", "customer-stats.on-error=skip"])
            .env("REEL_TOKENS", format!("{TOKEN_NAME} admin {token}\nbrowser read {BROWSER_TOKEN}"))
            .env("RUST_LOG", "warn,reel=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", reel.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.split("reel is serving http://").nth(1) {
                        break url.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    return Err("reel exited before serving; see its log above".into());
                }
            }
        };
        std::thread::spawn(move || lines.map_while(std::result::Result::ok).for_each(drop));
        Ok(Self { child, addr, token: token.to_owned() })
    }

    /// Wait until the projections have caught up with the generated orders,
    /// then append what the document's dead-letter and skip examples name:
    /// two cancellations of orders not yet placed (`customer-stats` sets
    /// them aside), the placing of one of them (so retrying its cancellation
    /// succeeds) and a shipment without its tracking number, which stops
    /// `order-summaries`.
    fn prepare(&self) -> Result {
        self.wait_for("the projections to apply the generated orders", || {
            let head = self.get_json("/healthz")?["head"].as_i64();
            let projections = self.get_json("/projections")?;
            let list = projections.as_array().map(Vec::as_slice).unwrap_or_default();
            Ok(list.len() == 2 && list.iter().all(|p| p["state"] == "running" && p["position"].as_i64() == head))
        })?;
        let cancelled = |order: &str| json!({ "event_type": "order.cancelled", "data": { "orderId": order } });
        let placed = json!({ "event_type": "order.placed", "data": {
            "orderId": "late", "customerId": "c-000001",
            "items": [{ "productId": "p-0001", "quantity": 1, "price": 5.0 }], "total": 5.0 } });
        let shipped = json!({ "event_type": "order.shipped", "data": { "orderId": "late" } });
        let append =
            json!({ "stream_id": "import-1", "events": [cancelled("late"), cancelled("never"), placed, shipped] });
        let (status, body) = self.call("POST", "/events", Some(&append))?;
        if status != 201 {
            return Err(format!("POST /events: {status} {body}"));
        }
        self.wait_for("customer-stats' two dead letters and order-summaries' stop", || {
            let stats = self.get_json("/projections/customer-stats")?;
            let summaries = self.get_json("/projections/order-summaries")?;
            Ok(stats["dead_letters"] == 2 && summaries["stopped_at"].is_i64())
        })?;
        let appended: Value = serde_json::from_str(&body).map_err(|e| format!("POST /events: {e}: {body}"))?;
        let expected = json!([RETRY_POSITION, DISCARD_POSITION, RETRY_POSITION + 2, SKIP_POSITION]);
        if appended["positions"] != expected {
            return Err(format!(
                "the events the examples of openapi.json name are at positions {}, not {expected}: the generated \
                 log changed; give those examples (and the constants in xtask/src/schemathesis.rs) the new ones",
                appended["positions"]
            ));
        }
        Ok(())
    }

    /// Start a shadow run of `customer-stats` with its own module (the
    /// examples name it), and wait until it is compared: the shadow routes'
    /// examples find it. The status of the start.
    fn prepare_shadow(&self, modules: &Path) -> Result<u16> {
        let path = "/projections/customer-stats/shadow";
        let module =
            std::fs::read(modules.join("customer_stats.wasm")).map_err(|e| format!("reading a module: {e}"))?;
        let (status, body) = self.send("POST", path, "application/wasm", &module)?;
        if status != 202 {
            return Err(format!("POST {path}: {status} {body}"));
        }
        self.wait_for("customer-stats' shadow to be compared", || {
            Ok(self.get_json("/projections/customer-stats")?["shadow"]["comparison"]["state"] == "compared")
        })?;
        Ok(status)
    }

    /// Poll `done` every 50 ms for up to 60 s.
    fn wait_for(&self, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done()? {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.call("GET", path, None)?;
        if !(200..300).contains(&status) {
            return Err(format!("GET {path}: {status} {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
    }

    /// One request with the token: (status, body).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        self.send(method, path, "application/json", body.as_bytes())
    }

    /// One request with the token and a body of `content_type`: (status, body).
    fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.token,
            body.len()
        )
        .and_then(|()| stream.write_all(body))
        .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
