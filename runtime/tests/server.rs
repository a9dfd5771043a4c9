//! Tier 3: the whole server. One test over a real socket in-process; one
//! that runs the `reel` binary and kills it with SIGKILL mid-batch.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reel::testing::workload::{OrderWorkload, fold, generate};
use serde_json::{Value, json};

/// One HTTP/1.1 request over a fresh connection: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: reel\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    raw_response(&mut stream)
}

fn raw_response(stream: &mut TcpStream) -> (u16, String) {
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    // Chunked bodies: keep the JSON between the chunk sizes.
    let body = if body.contains("\r\n") {
        body.split("\r\n").filter(|line| !line.chars().all(|c| c.is_ascii_hexdigit()) || line.is_empty()).collect()
    } else {
        body
    };
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_real_socket_and_refuses_malformed_http() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path());
    std::fs::create_dir_all(&config.modules_dir).unwrap();
    std::fs::copy(common::guest("customer_stats"), config.modules_dir.join("customer_stats.wasm")).unwrap();
    let started = reel::Server::start(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(reel::serve(started, listener, async {
        let _ = stopped.await;
    }));

    let result = tokio::task::spawn_blocking(move || {
        let append = json!({ "stream_id": "order-1", "expected_version": 0, "events": [
            { "event_type": "order.placed", "data": { "orderId": "1", "customerId": "c", "items": [], "total": 2.5 } }
        ]});
        let (status, body) = http(addr, "POST", "/events", Some(&append));
        assert_eq!(status, 201, "{body}");
        let position = serde_json::from_str::<Value>(&body).unwrap()["positions"][0].as_i64().unwrap();
        let (status, body) =
            http(addr, "GET", &format!("/projections/customer-stats/kv/customer/c?min_position={position}"), None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({ "orders": 1, "cancelled": 0, "total_spent": 2.5 })
        );

        // A key no backend can hold is a malformed read, not a database failure.
        let (status, body) = http(addr, "GET", "/projections/customer-stats/kv/a%00b", None);
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("`key` contains a NUL character; KV keys hold none"), "{body}");
        let (status, body) = http(addr, "GET", "/projections/customer-stats/kv?prefix=a%00", None);
        assert_eq!(status, 400, "{body}");

        // Malformed HTTP gets a 400 from the server, and the server lives on.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
        let (status, _) = raw_response(&mut stream);
        assert_eq!(status, 400);
        let (status, body) = http(addr, "GET", "/healthz", None);
        assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");
        let (status, body) = http(addr, "GET", "/metrics", None);
        assert_eq!(status, 200);
        assert!(body.contains("reel_projection_position{projection=\"customer-stats\",version=\"1\"} 1"), "{body}");
        // customer-stats cached the key it wrote: what the writers hold is seen.
        assert!(common::gauge(&body, "reel_kv_cache_bytes").expect("reel_kv_cache_bytes") > 0.0, "{body}");
        // And SQLite holds the page caches of its read model (SQLite here).
        assert!(common::gauge(&body, "reel_sqlite_memory_bytes").expect("SQLite's memory") > 0.0, "{body}");
    })
    .await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    result.unwrap();
}

/// A `reel serve` process.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Its log lines (stdout).
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(dir: &std::path::Path, database: Option<&str>) -> Self {
        Self::start_with_env(dir, database, &[])
    }

    fn start_with_env(dir: &std::path::Path, database: Option<&str>, env: &[(&str, &str)]) -> Self {
        Self::start_with(dir, database, env, &[], Some("info"))
    }

    /// `reel serve` with `args` added, and RUST_LOG set to `rust_log` (unset
    /// when `None`, for the log's own defaults).
    fn start_with(
        dir: &std::path::Path,
        database: Option<&str>,
        env: &[(&str, &str)],
        args: &[&str],
        rust_log: Option<&str>,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reel"));
        command.env_remove("REEL_PERF_MAP").env_remove("RUST_LOG").env_remove("NO_COLOR").envs(env.iter().copied());
        command.args(["serve", "--listen", "127.0.0.1:0", "--batch-size", "25", "--poll-ms", "20"]).args(args);
        if let Some(url) = database {
            command.args(["--database", url]);
        }
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--projections")
            .arg(dir.join("modules"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut before = vec![];
        let addr = loop {
            let line = lines.next().expect("reel exited before serving").unwrap();
            // `reel is serving http://ADDR` (or https://), in a text or a JSON line.
            let serving = line.split("reel is serving ").nth(1).and_then(|url| url.split_once("://"));
            let addr = serving.map(|(_, rest)| rest.split(|c: char| c == '"' || c.is_whitespace()).next().unwrap());
            let addr = addr.map(|a| a.parse().unwrap());
            before.push(line);
            if let Some(addr) = addr {
                break addr;
            }
        };
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = std::sync::Arc::new(before.into());
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| kept.lock().unwrap().push(l)));
        Self { child, addr, log }
    }

    fn position(&self, name: &str) -> i64 {
        let (status, body) = http(self.addr, "GET", &format!("/projections/{name}"), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["position"].as_i64().unwrap()
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL: no shutdown, no flush
        self.child.wait().unwrap();
    }

    /// Stop it with SIGTERM, as a service manager does: its exit status and log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100)); // the reader thread takes the last lines
        (status, self.log.lock().unwrap().join("\n"))
    }
}

/// A test that fails leaves no server behind.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_killed_process_resumes_exactly_once_sqlite() {
    killed_process_resumes_exactly_once(common::Backend::Sqlite);
}

#[test]
fn a_killed_process_resumes_exactly_once_postgres() {
    killed_process_resumes_exactly_once(common::Backend::Postgres);
}

fn killed_process_resumes_exactly_once(backend: common::Backend) {
    let (dir, rt, database) = common::scratch(backend);
    let db = database.as_deref();
    for module in ["order_summaries", "customer_stats", "fixture_echo_a"] {
        std::fs::copy(common::guest(module), dir.path().join(format!("modules/{module}.wasm"))).unwrap();
    }
    // Start once to create the events table, then load a backlog into it
    // directly, the way another service would write it.
    let server = Server::start(dir.path(), db);
    let events = generate(&OrderWorkload { orders: 2500, customers: 60, follow_up_window: 400, seed: 11 });
    server.kill();
    let stamp = |i: usize| format!("2026-01-01T00:00:{:02}.{:06}Z", i / 100_000, i % 100_000);
    match db {
        None => {
            let mut conn = rusqlite::Connection::open(dir.path().join("data/events.db")).unwrap();
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
            for (i, e) in events.iter().enumerate() {
                tx.execute(
                    "INSERT INTO events (stream_id, version, event_type, data, occurred_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![e.stream_id, e.version, e.event_type, e.data.to_string(), stamp(i)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        Some(url) => rt.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            for chunk in events.chunks(500).enumerate() {
                let (n, chunk) = chunk;
                let streams: Vec<&str> = chunk.iter().map(|e| e.stream_id.as_str()).collect();
                let versions: Vec<i32> = chunk.iter().map(|e| e.version as i32).collect();
                let types: Vec<&str> = chunk.iter().map(|e| e.event_type).collect();
                let data: Vec<String> = chunk.iter().map(|e| e.data.to_string()).collect();
                let stamps: Vec<String> = (0..chunk.len()).map(|i| stamp(n * 500 + i)).collect();
                client
                    .execute(
                        "INSERT INTO events (stream_id, version, event_type, data, occurred_at) \
                         SELECT s, v, t, d::jsonb, o::timestamptz FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[]) AS u(s, v, t, d, o)",
                        &[&streams, &versions, &types, &data, &stamps],
                    )
                    .await
                    .unwrap();
            }
        }),
    }
    let head = events.len() as i64;

    // Kill it twice while the projections are part-way through the backlog.
    for round in 0..2 {
        let server = Server::start(dir.path(), db);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let position = server.position("order-summaries");
            if position > head / 4 * (round + 1) && position < head {
                break;
            }
            assert!(position < head, "caught up before the kill; make the backlog bigger");
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill();
    }

    let server = Server::start(dir.path(), db);
    let (status, body) = http(server.addr, "GET", &format!("/projections/echo/query/seen?min_position={head}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, head.to_string(), "echo saw every event");
    let (status, body) = http(server.addr, "GET", "/projections/echo/kv?prefix=duplicate/", None);
    assert_eq!((status, body.contains("\"entries\":[]")), (200, true), "no event applied twice: {body}");
    for name in ["order-summaries", "customer-stats"] {
        let (status, body) =
            http(server.addr, "GET", &format!("/projections/{name}/kv?limit=1&min_position={head}"), None);
        assert_eq!(status, 200, "{body}");
    }
    let stored = rt.block_on(common::stored_events(&dir.path().join("data"), db));
    let expected = fold(&stored);
    let (_, body) = http(
        server.addr,
        "GET",
        "/projections/order-summaries/tables/order_summaries?limit=10000&order=order_id",
        None,
    );
    let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
    let got: std::collections::BTreeMap<String, Value> =
        rows.into_iter().map(|r| (r["order_id"].as_str().unwrap().to_owned(), r)).collect();
    assert_eq!(got, common::expected_rows(&expected));
    let mut customers = std::collections::BTreeMap::new();
    let (_, body) = http(server.addr, "GET", "/projections/customer-stats/kv?prefix=customer/&limit=10000", None);
    for entry in serde_json::from_str::<Value>(&body).unwrap()["entries"].as_array().unwrap() {
        customers.insert(entry["key"].as_str().unwrap().to_owned(), entry["value"].clone());
    }
    assert_eq!(customers, common::expected_customers(&expected));
    server.kill();
    if let Some(url) = db {
        rt.block_on(common::drop_database(url));
    }
}

/// Run `reel ARGS` against `server`; (success, stdout + stderr).
fn reel_cli(server: &Server, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(args)
        .args(["--server", &format!("http://{}", server.addr)])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn serve_refuses_settings_that_would_never_apply() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (["--set", "Bad.on-error=skip"], "`Bad` cannot name a projection"),
        (["--set", "orders.batch-timeout=-1"], "`batch-timeout` must be more than 0, not `-1`"),
        (["--memory-mib", "0"], "--memory-mib must be at least 1"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_reel"))
            .arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn the_cli_controls_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    std::fs::copy(common::guest("fixture_echo_a"), dir.path().join("modules/echo.wasm")).unwrap();
    let server = Server::start(dir.path(), None);
    let perf_map = format!("/tmp/perf-{}.map", server.child.id());
    for i in 0..50 {
        let body = json!({ "stream_id": format!("s-{i}"), "events": [{ "event_type": "tick", "data": {} }] });
        assert_eq!(http(server.addr, "POST", "/events", Some(&body)).0, 201);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.position("echo") < 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = reel_cli(&server, &["status"]);
    assert!(ok, "{out}");
    assert!(!std::path::Path::new(&perf_map).exists(), "{perf_map} written without REEL_PERF_MAP=1");
    assert!(out.lines().any(|l| l.starts_with("echo ") && l.contains("running")), "{out}");
    // Position, head and lag right-aligned in their columns.
    assert!(out.lines().any(|l| l.starts_with("echo ") && l.contains("        50         50          0")), "{out}");
    // Dead letters have a column of their own, and a command that lists them.
    assert!(out.lines().next().unwrap().contains("events/s   dead  error"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("echo ") && l.contains(" 0  ")), "{out}");
    let (ok, listed) = reel_cli(&server, &["dead-letters", "echo"]);
    assert!(ok && listed.contains("echo: no dead letters"), "{listed}");
    let (ok, listed) = reel_cli(&server, &["dead-letters", "nope"]);
    assert!(!ok && listed.contains("no projection named `nope`"), "{listed}");

    let (ok, out) = reel_cli(&server, &["pause", "echo"]);
    assert!(ok && out.contains("echo: pause done"), "{out}");
    let (ok, out) = reel_cli(&server, &["status", "echo"]);
    assert!(ok && out.contains("\"state\": \"paused\""), "{out}");
    let (ok, out) = reel_cli(&server, &["resume", "echo"]);
    assert!(ok && out.contains("echo: resume done"), "{out}");

    let (ok, out) = reel_cli(&server, &["rebuild", "echo"]);
    assert!(ok, "{out}");
    assert!(out.contains("rebuilding into echo@1+g1"), "{out}");
    assert!(out.contains("100%"), "the progress bar reached the end: {out}");
    assert!(out.contains("reads now come from echo@1+g1"), "{out}");
    let (_, body) = http(server.addr, "GET", "/projections/echo/query/seen?min_position=50", None);
    assert_eq!(body, "50");

    // A new version whose setup fails: the table shows it rebuilding and why.
    std::fs::copy(common::guest("fixture_echo_bad_init"), dir.path().join("modules/echo.wasm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let (ok, out) = reel_cli(&server, &["status"]);
        assert!(ok, "{out}");
        if out.contains("refuses to initialise") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = out.lines().find(|l| l.trim_start().starts_with("rebuilding")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(" 3 ") && row.contains("echo refuses to initialise"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("echo ") && l.contains(" 1 ") && l.contains("running")), "{out}");

    let (ok, out) = reel_cli(&server, &["delete", "echo"]);
    assert!(!ok, "a deployed projection cannot be deleted");
    assert!(out.contains("remove the file first"), "{out}");
    let (ok, out) = reel_cli(&server, &["pause", "nope"]);
    assert!(!ok && out.contains("no projection named `nope`"), "{out}");
    // Skip and discard (tests/poison.rs has them at work): reel's refusal, as the CLI prints it.
    let (ok, out) = reel_cli(&server, &["skip", "echo", "7"]);
    assert!(!ok && out.contains("projection `echo` is running, not stopped at event 7"), "{out}");
    let (ok, out) = reel_cli(&server, &["discard", "echo", "7"]);
    assert!(!ok && out.contains("no dead letter at position 7"), "{out}");
    // The server named by REEL_SERVER, as the README says.
    let output = Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(["status", "echo"])
        .env("REEL_SERVER", format!("http://{}", server.addr))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"state\": \"running\""), "{output:?}");
    // The same seed twice meets its own streams: the refusal says what to do.
    let (ok, out) = reel_cli(&server, &["generate", "--orders", "2", "--seed", "77"]);
    assert!(ok, "{out}");
    let (ok, out) = reel_cli(&server, &["generate", "--orders", "2", "--seed", "77"]);
    assert!(!ok && out.contains("HTTP 409") && out.contains("run it with another --seed"), "{out}");

    // SIGTERM stops it cleanly, and the log says so.
    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("SIGTERM received: shutting down"), "{log}");
    assert!(!log.contains('\x1b'), "no colour codes in a log that is not a terminal: {log}");
    assert!(log.lines().last().is_some_and(|l| l.contains("reel stopped")), "{log}");
}

#[test]
fn reel_perf_map_names_the_guests_functions_for_perf() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    std::fs::copy(common::guest("customer_stats"), dir.path().join("modules/customer-stats.wasm")).unwrap();
    let server = Server::start_with_env(dir.path(), None, &[("REEL_PERF_MAP", "1")]);
    struct RemovedOnDrop(String);
    impl Drop for RemovedOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let path = RemovedOnDrop(format!("/tmp/perf-{}.map", server.child.id()));
    let path = &path.0;
    let placed = json!({ "orderId": "o-1", "customerId": "c-1", "total": 5.0 });
    let body = json!({ "stream_id": "order-o-1", "events": [{ "event_type": "order.placed", "data": placed }] });
    let (status, appended) = http(server.addr, "POST", "/events", Some(&body));
    assert_eq!(status, 201, "{appended}");
    let started = std::time::Instant::now();
    while server.position("customer-stats") < 1 {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "customer-stats did not handle the event");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let map = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    server.kill();
    // `0x<address> <size> <name>` per compiled function, the guest's among
    // them, its name mangled as the module's name section has it.
    let handle = map.lines().find(|line| line.contains("CustomerStatsProjection") && line.contains("6handle"));
    let line = handle.unwrap_or_else(|| panic!("no `CustomerStatsProjection::handle` in {path}"));
    let fields: Vec<&str> = line.splitn(3, ' ').collect();
    let hex = |field: &str| u64::from_str_radix(field.trim_start_matches("0x"), 16).is_ok();
    assert!(fields.len() == 3 && hex(fields[0]) && hex(fields[1]), "{line}");
}

#[test]
fn a_json_log_has_a_line_per_batch_sqlite() {
    json_log_has_a_line_per_batch(common::Backend::Sqlite);
}

#[test]
fn a_json_log_has_a_line_per_batch_postgres() {
    json_log_has_a_line_per_batch(common::Backend::Postgres);
}

/// `--log-format json` with the log's own defaults (no RUST_LOG): every line
/// is a JSON object, each batch applied has a line with its projection,
/// version, namespace, positions, events, durations and outcome, the
/// committed ones cover every event once, and what the guest logs carries
/// the projection and the positions of the batch it was handling (ADR 46).
fn json_log_has_a_line_per_batch(backend: common::Backend) {
    let (dir, rt, database) = common::scratch(backend);
    let db = database.as_deref();
    std::fs::copy(common::guest("fixture_echo_a"), dir.path().join("modules/echo.wasm")).unwrap();
    let server = Server::start_with(dir.path(), db, &[], &["--log-format", "json"], None);
    let mut last = 0;
    let mut fault = 0;
    for i in 0..40 {
        let event = if i == 20 {
            json!({ "event_type": "fault", "data": { "target": "*", "action": "log", "message": "the guest speaks" } })
        } else {
            json!({ "event_type": "tick", "data": { "i": i } })
        };
        let body = json!({ "stream_id": format!("s-{}", i % 7), "events": [event] });
        let (status, appended) = http(server.addr, "POST", "/events", Some(&body));
        assert_eq!(status, 201, "{appended}");
        last = serde_json::from_str::<Value>(&appended).unwrap()["positions"][0].as_i64().unwrap();
        if i == 20 {
            fault = last;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.position("echo") < last {
        assert!(Instant::now() < deadline, "echo did not reach {last}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string()), "{log}");
    assert!(lines.iter().any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("reel is serving http://"))));

    let batches: Vec<&Value> = lines.iter().filter(|l| l["target"] == "reel::batch").collect();
    assert!(!batches.is_empty(), "no batch line in:\n{log}");
    let mut seen = 0;
    for b in &batches {
        assert_eq!((&b["projection"], &b["version"], &b["namespace"]), (&json!("echo"), &json!("1"), &json!("echo@1")));
        assert_eq!(b["outcome"], "committed", "{b}");
        assert_eq!(b["message"], "batch committed", "{b}");
        let (from, to, events) =
            (b["from"].as_i64().unwrap(), b["to"].as_i64().unwrap(), b["events"].as_i64().unwrap());
        assert!(1 <= from && from <= to && to <= last && events >= 1 && events <= to - from + 1, "{b}");
        // The resume token after the batch: `tx.id` on PostgreSQL, `id` on SQLite.
        let cursor = b["cursor"].as_str().and_then(|c| c.rsplit('.').next()?.parse::<i64>().ok());
        assert!(cursor >= Some(to), "the checkpoint after {to}: {b}");
        for field in ["duration_ms", "handle_ms", "commit_ms"] {
            assert!(b[field].as_f64().is_some_and(|ms| ms >= 0.0), "{field}: {b}");
        }
        assert!(b["duration_ms"].as_f64() >= b["handle_ms"].as_f64(), "{b}");
        seen += events;
    }
    assert_eq!(seen, 40, "every event in one committed batch: {batches:?}");

    let guest = lines.iter().find(|l| l["target"] == "reel::guest").unwrap_or_else(|| panic!("no guest line:\n{log}"));
    assert_eq!((&guest["message"], &guest["projection"]), (&json!("the guest speaks"), &json!("echo")), "{guest}");
    let span = &guest["span"];
    assert_eq!((&span["name"], &span["projection"], &span["version"]), (&json!("batch"), &json!("echo"), &json!("1")));
    let (from, to) = (span["from"].as_i64().unwrap(), span["to"].as_i64().unwrap());
    assert!(from <= fault && fault <= to, "the batch holding event {fault}: {guest}");
    if let Some(url) = db {
        rt.block_on(common::drop_database(url));
    }
}

/// A self-signed certificate for `localhost`, written to `dir` as cert.pem
/// and key.pem.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

#[test]
fn the_cli_talks_to_a_tls_server_it_is_told_to_trust() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    std::fs::copy(common::guest("fixture_echo_a"), dir.path().join("modules/echo.wasm")).unwrap();
    let (cert, key) = certificate(dir.path());
    let token = "cli-admin-token-0123456789";
    std::fs::write(dir.path().join("tokens"), format!("cli admin {token}\n")).unwrap();
    let (cert, key, tokens) = (cert.to_str().unwrap(), key.to_str().unwrap(), dir.path().join("tokens"));
    let args = ["--tls-cert", cert, "--tls-key", key, "--tokens", tokens.to_str().unwrap()];
    let server = Server::start_with(dir.path(), None, &[], &args, Some("info"));
    let port = server.addr.port();
    let cli = |server_url: &str, extra: &[&str], args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_reel"))
            .args(args)
            .args(["--server", server_url])
            .args(extra)
            .env_remove("REEL_TOKEN")
            .env_remove("REEL_CA")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    };
    let https = format!("https://localhost:{port}");
    let trusted = ["--ca", cert, "--token", token];

    let (ok, out) = cli(&https, &trusted, &["status"]);
    assert!(ok && out.lines().any(|l| l.starts_with("echo ")), "{out}");
    let (ok, out) = cli(&https, &trusted, &["pause", "echo"]);
    assert!(ok && out.contains("echo: pause done"), "{out}");
    let (ok, out) = cli(&https, &trusted, &["status", "echo"]);
    assert!(ok && out.contains("\"state\": \"paused\""), "{out}");
    let (ok, out) = cli(&https, &trusted, &["resume", "echo"]);
    assert!(ok && out.contains("echo: resume done"), "{out}");
    // `generate` appends through the same client; REEL_CA works as --ca.
    let output = Command::new(env!("CARGO_BIN_EXE_reel"))
        .args(["generate", "--orders", "3", "--server", &https, "--token", token])
        .env("REEL_CA", cert)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("appended 3 orders"), "{output:?}");

    // Refusals: a certificate the CLI was not told to trust, a name the
    // certificate does not carry, plain HTTP to the TLS port, no token.
    let (ok, out) = cli(&https, &["--token", token], &["status"]);
    assert!(!ok && out.contains("--ca"), "the system's roots do not know a self-signed certificate: {out}");
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = certificate(other.path());
    let (ok, out) = cli(&https, &["--ca", stranger.to_str().unwrap(), "--token", token], &["status"]);
    assert!(!ok && out.contains("TLS with localhost:"), "{out}");
    let (ok, out) = cli(&format!("https://127.0.0.1:{port}"), &trusted, &["status"]);
    assert!(!ok && out.contains("TLS with 127.0.0.1:"), "an address the certificate does not carry: {out}");
    let (ok, out) = cli(&format!("http://localhost:{port}"), &trusted, &["status"]);
    assert!(!ok && out.contains("use an https:// address"), "{out}");
    let (ok, out) = cli(&https, &["--ca", cert], &["status"]);
    assert!(!ok && out.to_lowercase().contains("token"), "{out}");
    server.kill();
}
