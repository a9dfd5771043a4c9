//! Live latency: from an append's commit to its effect being readable over
//! HTTP, at a steady rate.
//!
//! ```sh
//! cargo bench -p reel --bench latency                        # both backends
//! cargo bench -p reel --bench latency -- --backend postgres --seconds 20
//! cargo test  -p reel --bench latency -- --smoke
//! ```
//!
//! A `reel serve` process runs `customer-stats`; this process is the client.
//! Appenders send one
//! `order.placed` per request at the target rate, either through
//! `POST /events` or straight into the events table with SQL; as soon as an
//! append has committed, a reader asks
//! `GET /projections/customer-stats/kv/customer/{id}?min_position={position}`,
//! which answers once the projection has applied it. The latency is commit
//! to answer. After a second of warm-up, each path runs at 1,000 events/s,
//! then the rate doubles until the machine can no longer keep up. Appends
//! and reads use 8 connections each (`REEL_BENCH_LANES`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Backend;
use common::keepalive::Http;
use tokio::sync::Mutex;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Api,
    Sql,
}

/// How an appender writes.
enum Writer {
    Api(Http),
    Postgres(tokio_postgres::Client),
    Sqlite(std::path::PathBuf),
}

impl Writer {
    /// Append one event; its position once committed.
    async fn append(&mut self, i: u64) -> i64 {
        let data = format!(
            r#"{{"orderId":"l-{i}","customerId":"c-{:04}","items":[{{"productId":"p-1","quantity":1,"price":9.5}}],"total":9.5}}"#,
            i % 1000
        );
        match self {
            Writer::Api(http) => {
                let body = format!(
                    r#"{{"stream_id":"order-l-{i}","expected_version":0,"events":[{{"event_type":"order.placed","data":{data}}}]}}"#
                );
                let (status, response) = http.request("POST", "/events", &body).await;
                assert_eq!(status, 201, "{response}");
                let value: serde_json::Value = serde_json::from_str(&response).unwrap();
                value["positions"][0].as_i64().unwrap()
            }
            Writer::Postgres(client) => client
                .query_one(
                    "INSERT INTO events (stream_id, version, event_type, data) VALUES ($1, 1, 'order.placed', $2::text::jsonb) RETURNING id",
                    &[&format!("order-l-{i}"), &data],
                )
                .await
                .unwrap()
                .get(0),
            Writer::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let conn = rusqlite::Connection::open(path).unwrap();
                    conn.busy_timeout(Duration::from_secs(10)).unwrap();
                    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                    let id: i64 = conn
                        .query_row(
                            "INSERT INTO events (stream_id, version, event_type, data) VALUES (?1, 1, 'order.placed', ?2) RETURNING id",
                            rusqlite::params![format!("order-l-{i}"), data],
                            |r| r.get(0),
                        )
                        .unwrap();
                    conn.execute_batch("COMMIT").unwrap();
                    id
                })
                .await
                .unwrap()
            }
        }
    }
}

struct Run {
    achieved: f64,
    latencies: Vec<Duration>,
}

async fn run(addr: SocketAddr, config: &reel::Config, path: Path, rate: u64, seconds: f64, start: u64) -> Run {
    let lanes: usize = std::env::var("REEL_BENCH_LANES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let mut writers = Vec::new();
    for _ in 0..lanes {
        writers.push(Arc::new(Mutex::new(match (path, &config.database_url) {
            (Path::Api, _) => Writer::Api(Http::connect(addr).await),
            (Path::Sql, Some(url)) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                Writer::Postgres(client)
            }
            (Path::Sql, None) => Writer::Sqlite(config.data_dir.join("events.db")),
        })));
    }
    let mut readers = Vec::new();
    for _ in 0..lanes {
        readers.push(Arc::new(Mutex::new(Http::connect(addr).await)));
    }
    let total = (rate as f64 * seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until((started + interval.mul_f64(n as f64)).into()).await;
        let writer = Arc::clone(&writers[n as usize % lanes]);
        let reader = Arc::clone(&readers[n as usize % lanes]);
        let i = start + n;
        tasks.push(tokio::spawn(async move {
            let position = writer.lock().await.append(i).await;
            let committed = Instant::now();
            let (status, body) = reader
                .lock()
                .await
                .request(
                    "GET",
                    &format!("/projections/customer-stats/kv/customer/c-{:04}?min_position={position}", i % 1000),
                    "",
                )
                .await;
            assert_eq!(status, 200, "{body}");
            committed.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    Run { achieved: total as f64 / started.elapsed().as_secs_f64(), latencies }
}

/// Start `reel serve` for `config`; its address once it listens.
fn serve(config: &reel::Config) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reel"));
    command.args(["serve", "--listen", "127.0.0.1:0"]).arg("--data-dir").arg(&config.data_dir);
    command.arg("--projections").arg(&config.modules_dir);
    if let Some(url) = &config.database_url {
        command.args(["--database", url]);
    }
    let mut child = command
        .env("RUST_LOG", std::env::var("REEL_SERVER_LOG").unwrap_or_else(|_| "info".into()))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("reel exited before serving").unwrap();
        if let Some(url) = line.split("reel is serving http://").nth(1) {
            break url.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("reel: {line}");
            }
        }
    });
    (child, addr)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let value = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let seconds: f64 = value("--seconds").map_or(if smoke { 1.0 } else { 10.0 }, |s| s.parse().unwrap());
    let backends = match value("--backend").as_deref() {
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        _ => vec![Backend::Sqlite, Backend::Postgres],
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("live latency: commit to readable over HTTP, {seconds} s per rate, one event per append");
    for backend in backends {
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut config = common::test_config(dir.path());
            config.read_wait = Duration::from_secs(30);
            config.poll_interval = Duration::from_millis(250);
            if backend == Backend::Postgres {
                config.database_url = Some(common::create_database().await);
            }
            std::fs::create_dir_all(&config.modules_dir).unwrap();
            std::fs::copy(common::guest("customer_stats"), config.modules_dir.join("customer_stats.wasm")).unwrap();
            let (mut server, addr) = serve(&config);
            println!("\n== {backend:?}");
            println!(
                "{:<6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}",
                "path", "target/s", "achieved", "p50 ms", "p95 ms", "p99 ms", "max ms"
            );
            let mut next = 0u64;
            for path in [Path::Api, Path::Sql] {
                // Warm up (connections, pools, caches) before measuring.
                next += run(addr, &config, path, 500, if smoke { 0.2 } else { 1.0 }, next).await.latencies.len() as u64;
                let mut rate = 1000;
                loop {
                    let mut result = run(addr, &config, path, rate, seconds, next).await;
                    next += result.latencies.len() as u64;
                    result.latencies.sort();
                    let l = &result.latencies;
                    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                    println!(
                        "{:<6} {:>8} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                        format!("{path:?}"),
                        rate,
                        result.achieved,
                        ms(percentile(l, 0.5)),
                        ms(percentile(l, 0.95)),
                        ms(percentile(l, 0.99)),
                        ms(*l.last().unwrap())
                    );
                    let kept_up = result.achieved >= rate as f64 * 0.9 && percentile(l, 0.99) < Duration::from_secs(1);
                    if smoke || !kept_up || rate >= 64_000 {
                        break;
                    }
                    rate *= 2;
                }
            }
            server.kill().unwrap();
            server.wait().unwrap();
            if let Some(url) = &config.database_url {
                common::drop_database(url).await;
            }
        });
    }
}
