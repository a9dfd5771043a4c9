//! HTTP reads (issue 29): requests/s and latency of reel's reads at 64
//! keep-alive connections, beside the plain-handler limit of the same run.
//!
//! ```sh
//! cargo bench -p reel --bench reads                          # both backends, 3 rounds of 30 s each
//! cargo bench -p reel --bench reads -- --backend sqlite --rounds 5 --seconds 20
//! cargo bench -p reel --bench reads -- --only "KV get"       # the plain handler and the reads named so
//! cargo test  -p reel --bench reads -- --smoke               # SQLite, 1 round of 1 s each
//! ```
//!
//! One process holds three tokio runtimes of two worker threads each (what
//! `reel serve`'s runtime has on a 2-core machine): reel (`Server::start`
//! and `reel::serve`, its own connection loop) with `customer-stats` and
//! `order-summaries` over a generated workload (20,000 orders, 1,000
//! customers); a plain axum server whose one handler answers each URL with
//! the bytes reel answered it with, from a `HashMap` in memory (the HTTP
//! limit of this machine: routing, hyper, loopback, the client); and the
//! load generator, hyper's HTTP/1 client on `--connections` keep-alive
//! connections, each sending its next request when the previous answer is
//! in. The generator shares the machine's cores with the server it loads,
//! as any loopback benchmark does, and takes the same share from both.
//!
//! Each round measures, `--seconds` each after a 2 s warm-up (not counted):
//! the plain handler on the KV get URLs, then reel's KV get by key, KV scan
//! of 100 by prefix, table read by an indexed column, the `query` export,
//! and KV get with `?min_position=` already applied; the plain handler and
//! the KV get swap order every round. Requests go round 256 keys (or
//! customers). The summary gives medians over the rounds and the ratio of
//! KV get to the plain handler (median of the per-round ratios).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, median};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Orders in the workload (1.8 events each, 20 per customer).
const ORDERS: usize = 20_000;
/// Distinct keys (customers) the requests go round.
const KEYS: usize = 256;

/// What one measurement sends: a name and the URLs its connections go round.
struct Kind {
    name: &'static str,
    paths: Arc<Vec<String>>,
    /// Served by the plain handler rather than reel.
    plain: bool,
}

/// What one measurement saw.
struct Sample {
    requests_per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// One keep-alive connection sending `paths` in turn (from `offset`) until
/// `until`; latencies (µs) of the requests sent after `counted_from` and
/// answered before `until`.
async fn connection(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    offset: usize,
    counted_from: Instant,
    until: Instant,
) -> Vec<u32> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    let mut n = offset;
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        let path = &paths[n % paths.len()];
        n += 1;
        let request = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        let answered = Instant::now();
        if sent >= counted_from && answered <= until {
            latencies.push((answered - sent).as_micros() as u32);
        }
    }
    latencies
}

/// Load `addr` with `connections` connections for the warm-up and `seconds`.
async fn measure(
    addr: SocketAddr,
    paths: &Arc<Vec<String>>,
    connections: usize,
    warm_up: Duration,
    seconds: f64,
) -> Sample {
    let counted_from = Instant::now() + warm_up;
    let until = counted_from + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(connection(addr, Arc::clone(paths), i * 7, counted_from, until)))
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let at = |p: f64| Duration::from_micros(u64::from(all[((all.len() as f64 - 1.0) * p).round() as usize]));
    Sample { requests_per_s: all.len() as f64 / seconds, p50: at(0.5), p99: at(0.99) }
}

/// One GET on a fresh connection: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let request =
        hyper::Request::get(path).header(hyper::header::HOST, "127.0.0.1").body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.unwrap().to_bytes())
}

/// The plain handler: the bytes recorded for the request's URL.
async fn plain(
    axum::extract::State(answers): axum::extract::State<Arc<HashMap<String, Bytes>>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let url = uri.path_and_query().map_or("", |p| p.as_str());
    match answers.get(url) {
        Some(bytes) => ([(axum::http::header::CONTENT_TYPE, "application/json")], bytes.clone()).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// What a run measures: rounds, seconds per measurement after its warm-up,
/// connections, orders in the workload.
struct Plan {
    rounds: usize,
    seconds: f64,
    warm_up: Duration,
    connections: usize,
    orders: usize,
    /// Only the reads whose name contains this (the plain handler always).
    only: Option<String>,
}

fn run(backend: Backend, plan: &Plan) {
    let Plan { rounds, seconds, warm_up, connections, orders, .. } = *plan;
    let server_rt = runtime();
    let plain_rt = runtime();
    let load_rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    // reel serve's defaults, but the wait for the workload to be applied.
    let defaults = reel::Config::default();
    config.limits = defaults.limits.clone();
    config.poll_interval = defaults.poll_interval;
    config.read_wait = Duration::from_secs(120);
    if backend == Backend::Postgres {
        config.database_url = Some(server_rt.block_on(common::create_database()));
    }
    std::fs::create_dir_all(&config.modules_dir).unwrap();
    for module in ["customer_stats", "order_summaries"] {
        std::fs::copy(common::guest(module), config.modules_dir.join(format!("{module}.wasm"))).unwrap();
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, serving) = server_rt.block_on(async {
        let server = reel::Server::start(config.clone()).await.expect("reel starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(reel::serve(server, listener, async {
            let _ = stopped.await;
        }));
        (addr, serving)
    });

    // The workload, and its last position applied by both projections.
    let events = reel::testing::workload::generate(&reel::testing::workload::OrderWorkload::new(orders, 1));
    let total = events.len();
    let last = load_rt.block_on(async {
        match &config.database_url {
            None => {
                let db = config.data_dir.join("events.db");
                tokio::task::spawn_blocking(move || reel::testing::workload::load::insert_sqlite(&db, &events).unwrap())
                    .await
                    .unwrap()
            }
            Some(url) => reel::testing::workload::load::copy_postgres(url, &events).await.unwrap(),
        }
    });
    let customers = (orders / 20).max(1);
    let customer = |i: usize| format!("c-{:06}", (i * customers / KEYS.min(customers)) % customers);
    let kinds: Vec<(&str, Vec<String>)> = vec![
        ("KV get", (0..KEYS).map(|i| format!("/projections/customer-stats/kv/customer/{}", customer(i))).collect()),
        (
            "KV scan of 100",
            (0..KEYS)
                .map(|i| {
                    // Starting early enough for 100 entries after it.
                    let start = i * customers.saturating_sub(100) / KEYS;
                    format!("/projections/customer-stats/kv?prefix=customer/&limit=100&after=customer/c-{start:06}")
                })
                .collect(),
        ),
        (
            "table read (indexed)",
            (0..KEYS)
                .map(|i| format!("/projections/order-summaries/tables/order_summaries?customer_id={}", customer(i)))
                .collect(),
        ),
        (
            "query export",
            (0..KEYS)
                .map(|i| {
                    format!(
                        "/projections/order-summaries/query/customer-orders?args=%7B%22customerId%22%3A%22{}%22%7D",
                        customer(i)
                    )
                })
                .collect(),
        ),
        (
            "KV get, min_position",
            (0..KEYS)
                .map(|i| format!("/projections/customer-stats/kv/customer/{}?min_position={last}", customer(i)))
                .collect(),
        ),
    ];
    // Wait until both projections have applied the workload, then record
    // reel's answers for the plain handler.
    let answers: HashMap<String, Bytes> = load_rt.block_on(async {
        for path in [
            &kinds[4].1[0],
            &format!("/projections/order-summaries/tables/order_summaries?min_position={last}&limit=1"),
        ] {
            let (status, body) = get(addr, path).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        }
        let mut answers = HashMap::new();
        for path in &kinds[0].1 {
            let (status, body) = get(addr, path).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            answers.insert(path.clone(), body);
        }
        answers
    });
    let size = |paths: &[String]| {
        load_rt.block_on(async {
            let mut bytes = 0;
            for path in paths {
                bytes += get(addr, path).await.1.len();
            }
            bytes / paths.len()
        })
    };
    let plain_addr = plain_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(plain).with_state(Arc::new(answers));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });

    println!(
        "\n== {backend:?}: {} events ({orders} orders, {customers} customers), {connections} connections, \
         {seconds} s per measurement after {:.1} s of warm-up, {rounds} round(s)",
        total,
        warm_up.as_secs_f64()
    );
    let mut measured: Vec<Kind> = Vec::new();
    measured.push(Kind { name: "plain handler (KV get bytes)", paths: Arc::new(kinds[0].1.clone()), plain: true });
    for (name, paths) in kinds.iter().filter(|(name, _)| plan.only.as_ref().is_none_or(|o| name.contains(o.as_str()))) {
        println!("{name:<28} answers {} bytes on average", size(paths));
        measured.push(Kind { name, paths: Arc::new(paths.clone()), plain: false });
    }
    let mut samples: Vec<Vec<Sample>> = (0..measured.len()).map(|_| Vec::new()).collect();
    println!("{:<6} {:<30} {:>10} {:>8} {:>8}", "round", "read", "req/s", "p50 ms", "p99 ms");
    for round in 0..rounds {
        // The plain handler and KV get swap places every round.
        let mut order: Vec<usize> = (0..measured.len()).collect();
        if round % 2 == 1 {
            order.swap(0, 1);
        }
        for i in order {
            let kind = &measured[i];
            let target = if kind.plain { plain_addr } else { addr };
            let sample = load_rt.block_on(measure(target, &kind.paths, connections, warm_up, seconds));
            println!(
                "{:<6} {:<30} {:>10.0} {:>8.2} {:>8.2}",
                round + 1,
                kind.name,
                sample.requests_per_s,
                sample.p50.as_secs_f64() * 1e3,
                sample.p99.as_secs_f64() * 1e3
            );
            samples[i].push(sample);
        }
    }
    println!("\n{backend:?}, medians of {rounds} round(s):");
    println!("{:<30} {:>10} {:>8} {:>8} {:>12}", "read", "req/s", "p50 ms", "p99 ms", "x plain");
    let plain_rates: Vec<f64> = samples[0].iter().map(|s| s.requests_per_s).collect();
    for (kind, samples) in measured.iter().zip(&samples) {
        let ratios: Vec<f64> = samples.iter().zip(&plain_rates).map(|(s, p)| s.requests_per_s / p).collect();
        println!(
            "{:<30} {:>10.0} {:>8.2} {:>8.2} {:>12.2}",
            kind.name,
            median(&samples.iter().map(|s| s.requests_per_s).collect::<Vec<_>>()),
            median(&samples.iter().map(|s| s.p50.as_secs_f64() * 1e3).collect::<Vec<_>>()),
            median(&samples.iter().map(|s| s.p99.as_secs_f64() * 1e3).collect::<Vec<_>>()),
            median(&ratios),
        );
    }

    let _ = stop.send(());
    server_rt.block_on(async { serving.await.unwrap().unwrap() });
    if let Some(url) = &config.database_url {
        server_rt.block_on(common::drop_database(url));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let value = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let plan = Plan {
        seconds: value("--seconds").map_or(if smoke { 1.0 } else { 30.0 }, |s| s.parse().unwrap()),
        warm_up: Duration::from_secs_f64(if smoke { 0.5 } else { 2.0 }),
        rounds: value("--rounds").map_or(if smoke { 1 } else { 3 }, |s| s.parse().unwrap()),
        connections: value("--connections").map_or(64, |s| s.parse().unwrap()),
        orders: value("--orders").map_or(if smoke { 2_000 } else { ORDERS }, |s| s.parse().unwrap()),
        only: value("--only"),
    };
    let backends = match value("--backend").as_deref() {
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        _ if smoke => vec![Backend::Sqlite],
        _ => vec![Backend::Sqlite, Backend::Postgres],
    };
    println!(
        "HTTP reads: reel beside a plain axum handler answering the same bytes from memory, in one process; \
         the load generator (hyper, keep-alive) runs in it too and shares the cores"
    );
    for backend in backends {
        run(backend, &plan);
    }
}
