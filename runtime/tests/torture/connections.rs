//! Connection abuse (issue 30 item 6): `reel serve` holding a crowd of idle
//! keep-alive connections (clients that made one request and went quiet)
//! while others read as fast as they can, with a connection cap below the
//! crowd, so the idle ones have to give way (ADR 35). Every reader must get
//! its answers, correct, all along; reel must stay up.
//!
//! Knobs: `REEL_ABUSE_IDLE` (idle keep-alives, 1,000), `REEL_ABUSE_ACTIVE`
//! (readers, 200), `REEL_ABUSE_SECS` (how long they read, 5),
//! `REEL_ABUSE_CAP` (reel's `--max-connections`; by default the idle ones
//! plus half the readers). `cargo xtask torture connections` runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reel::testing::workload::{OrderWorkload, generate, load};

use super::common::keepalive::Http;
use super::common::{self, Backend};
use super::process::{Reel, knob};

#[test]
fn connection_abuse_sqlite() {
    abuse(Backend::Sqlite);
}

#[test]
fn connection_abuse_postgres() {
    abuse(Backend::Postgres);
}

/// What the readers saw.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u64>,
    /// Time from the start to each reader's first answer.
    first_answers: Vec<Duration>,
}

fn abuse(backend: Backend) {
    let idle = knob("REEL_ABUSE_IDLE", 1_000);
    let active = knob("REEL_ABUSE_ACTIVE", 200);
    let secs = knob("REEL_ABUSE_SECS", 5) as u64;
    let cap = knob("REEL_ABUSE_CAP", idle + active / 2);

    // The clients' sockets are this process's files too.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if limit.current.is_some_and(|current| current < (idle + active + 1024) as u64) {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised);
    }

    let (dir, setup, database) = common::scratch(backend);
    let db = database.as_deref();
    std::fs::copy(common::guest("customer_stats"), dir.path().join("modules/customer_stats.wasm")).unwrap();
    let cap_arg = cap.to_string();
    let args = ["--max-connections", cap_arg.as_str()];
    // Started once to create the events table, which gets a few orders.
    Reel::start(dir.path(), db, &args).kill();
    let events = generate(&OrderWorkload::new(20, 7));
    match db {
        None => {
            load::insert_sqlite(&dir.path().join("data/events.db"), &events).unwrap();
        }
        Some(url) => {
            setup.block_on(load::copy_postgres(url, &events)).unwrap();
        }
    }
    let mut reel = Reel::start(dir.path(), db, &args);
    let head = events.len() as i64;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = reel.addr;
    // The key every reader asks for, and its value once caught up.
    let (key, expected) = runtime.block_on(async {
        let mut http = Http::connect(addr).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, body) = http.request("GET", "/projections/customer-stats", "").await;
            assert_eq!(code, 200, "{body}");
            let status: serde_json::Value = serde_json::from_str(&body).unwrap();
            if status["position"].as_i64() >= Some(head) {
                break;
            }
            assert!(Instant::now() < deadline, "customer-stats did not catch up: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (code, body) = http.request("GET", "/projections/customer-stats/kv?prefix=customer/&limit=1", "").await;
        assert_eq!(code, 200, "{body}");
        let scan: serde_json::Value = serde_json::from_str(&body).unwrap();
        let key = scan["entries"][0]["key"].as_str().unwrap().to_owned();
        let path = format!("/projections/customer-stats/kv/{key}");
        let (code, expected) = http.request("GET", &path, "").await;
        assert_eq!(code, 200, "{expected}");
        (path, expected)
    });

    // The crowd: each makes one request, then stays connected saying nothing.
    let started = Instant::now();
    let mut crowd = runtime.block_on(async {
        let mut crowd = Vec::with_capacity(idle);
        for _ in 0..idle {
            let mut http = Http::connect(addr).await;
            let (code, _) = http.request("GET", "/healthz", "").await;
            assert_eq!(code, 200);
            crowd.push(http);
        }
        crowd
    });
    eprintln!("abuse: {idle} idle keep-alives open in {:.1?} (cap {cap})", started.elapsed());
    let fds_with_crowd = open_files(reel.pid());

    // The readers, for `secs`, reconnecting when reel closes their
    // connection between two requests.
    let reconnects = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let seen = runtime.block_on(async {
        let readers = (0..active).map(|_| {
            let (key, expected, reconnects) = (key.clone(), expected.clone(), reconnects.clone());
            tokio::spawn(async move {
                let reading = read_until(addr, &key, &expected, until, started, &reconnects);
                tokio::time::timeout(Duration::from_secs(secs + 60), reading).await.expect("a reader hung")
            })
        });
        let mut seen = Seen::default();
        for reader in futures_util::future::join_all(readers).await {
            let (latencies, first) = reader.unwrap();
            seen.latencies_us.extend(latencies);
            seen.first_answers.push(first);
        }
        seen
    });
    let fds_peak = open_files(reel.pid());
    assert!(reel.running(), "reel died: {}", reel.log_tail());

    // How many of the crowd reel closed to make room.
    let closed = runtime.block_on(async {
        let mut closed = 0;
        for http in &mut crowd {
            if http.try_request("GET", "/healthz", "").await.is_err() {
                closed += 1;
            }
        }
        closed
    });
    drop(crowd);

    let mut latencies = seen.latencies_us;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let slowest_first = seen.first_answers.iter().max().copied().unwrap_or_default();
    eprintln!(
        "abuse ({backend:?}): {} reads by {active} readers in {secs} s beside {idle} idle keep-alives, cap {cap}: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; slowest first answer {slowest_first:.1?}; {} reconnects; \
         {closed} of the idle closed to make room; open files {fds_with_crowd} with the crowd, {fds_peak} at the end",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        reconnects.load(Ordering::Relaxed),
    );
    // A reader let in only when the others stop would wait all `secs`.
    assert!(
        slowest_first < Duration::from_secs(secs) * 4 / 5,
        "a reader waited {slowest_first:?} of {secs} s for its first answer beside {idle} idle connections"
    );
    if idle + active > cap {
        assert!(closed > 0, "reel served past the cap of {cap} without closing an idle connection");
    }
    reel.terminate();
}

/// One reader: KV gets on one keep-alive connection until `until`, a new
/// connection whenever reel closed the last; its latencies and when its
/// first answer came.
async fn read_until(
    addr: SocketAddr,
    path: &str,
    expected: &str,
    until: Instant,
    started: Instant,
    reconnects: &AtomicU64,
) -> (Vec<u64>, Duration) {
    let mut latencies = Vec::new();
    let mut first = None;
    let mut http = None;
    while Instant::now() < until || first.is_none() {
        let connection = match &mut http {
            Some(http) => http,
            None => http.insert(Http::try_connect(addr).await.expect("reel refused a connection")),
        };
        let sent = Instant::now();
        match connection.try_request("GET", path, "").await {
            Ok((code, body)) => {
                assert_eq!((code, body.as_str()), (200, expected), "a read answered wrong");
                latencies.push(sent.elapsed().as_micros() as u64);
                first.get_or_insert_with(|| started.elapsed());
            }
            Err(_) => {
                // Closed between two requests (idle the longest at the cap):
                // what an HTTP client retries on a new connection.
                reconnects.fetch_add(1, Ordering::Relaxed);
                http = None;
            }
        }
    }
    (latencies, first.unwrap_or_default())
}

/// The process's open file descriptors.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
