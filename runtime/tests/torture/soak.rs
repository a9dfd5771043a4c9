//! The soak (issue 30 item 5): reel serving a steady stream of appends for a
//! long time, its code hot-swapped every minute and a new version rebuilt
//! every ten, while a sampler records its memory, open files, database
//! connections and lag. `cargo xtask torture soak --secs 3600` runs it and
//! plots the samples; docs/reliability.md has the hour's figures.
//!
//! Knobs: `REEL_SOAK_SECS` (how long appends go on), `REEL_SOAK_RATE`
//! (appends a second, each one event, spread over four keep-alive clients),
//! `REEL_SOAK_SWAP_SECS` (a hot swap: `order_summaries.wasm` rewritten with
//! a custom section of its own, same version, new hash),
//! `REEL_SOAK_REBUILD_SECS` (a version rebuild: `echo.wasm` replaced by the
//! echo fixture of the other version, 1 and 2 in turn), `REEL_SOAK_SAMPLE_SECS`,
//! `REEL_SOAK_CSV` (where the samples go), `REEL_TORTURE_SEED`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reel::testing::Client;
use reel::testing::workload::{OrderWorkload, generate};
use serde_json::json;

use super::common;
use super::process::{Reel, Rng, knob};

/// The clients appending.
const CLIENTS: u64 = 4;

/// One sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub t: f64,
    pub rss_mib: f64,
    pub fds: usize,
    pub db_connections: usize,
    /// The largest `lag_seconds` of the serving versions.
    pub lag_s: f64,
    /// The largest lag in events of the serving versions.
    pub lag_events: i64,
    pub appended: u64,
    /// Milliseconds a read of `order_summaries` took.
    pub read_ms: f64,
    /// Milliseconds `/healthz` took.
    pub health_ms: f64,
    /// What the read models' KV caches hold (`reel_kv_cache_bytes`), MiB.
    pub kv_cache_mib: f64,
}

impl Sample {
    const HEADER: &str = "t_s,rss_mib,fds,db_connections,lag_s,lag_events,appended,read_ms,health_ms,kv_cache_mib";

    fn csv(&self) -> String {
        format!(
            "{:.1},{:.1},{},{},{:.3},{},{},{:.2},{:.2},{:.1}",
            self.t,
            self.rss_mib,
            self.fds,
            self.db_connections,
            self.lag_s,
            self.lag_events,
            self.appended,
            self.read_ms,
            self.health_ms,
            self.kv_cache_mib
        )
    }
}

/// Counters the clients share.
#[derive(Default)]
struct Appends {
    done: AtomicU64,
    /// Answers `503`, retried.
    unavailable: AtomicU64,
    /// Anything else than `201`/`503`: not retried, counted.
    failed: AtomicU64,
    /// Connections that broke (reconnected).
    broken: AtomicU64,
    /// The furthest behind schedule a client fell, in milliseconds.
    behind_ms: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

/// How long a soak runs, how fast it appends, and how often it swaps and
/// rebuilds (each overridden by its `REEL_SOAK_*` variable).
struct Knobs {
    secs: usize,
    rate: usize,
    swap_secs: usize,
    rebuild_secs: usize,
}

/// The soak's own knobs: a minute unless told (the hour is `cargo xtask
/// torture soak --secs 3600`).
const FULL: Knobs = Knobs { secs: 60, rate: 500, swap_secs: 60, rebuild_secs: 600 };

#[test]
#[ignore = "an hour long at full size: cargo xtask torture soak (docs/reliability.md)"]
fn soak_sqlite() {
    soak(common::Backend::Sqlite, FULL);
}

#[test]
#[ignore = "an hour long at full size: cargo xtask torture soak --backend postgres (docs/reliability.md)"]
fn soak_postgres() {
    soak(common::Backend::Postgres, FULL);
}

/// The short version CI runs: 40 s at 200 appends a second, a hot swap
/// every 10 s, a version rebuild at 20 s; the same checks as the hour.
#[test]
fn soak_short_sqlite() {
    soak(common::Backend::Sqlite, Knobs { secs: 40, rate: 200, swap_secs: 10, rebuild_secs: 20 });
}

fn soak(backend: common::Backend, knobs: Knobs) {
    let secs = knob("REEL_SOAK_SECS", knobs.secs) as u64;
    let rate = knob("REEL_SOAK_RATE", knobs.rate) as u64;
    let swap_every = Duration::from_secs(knob("REEL_SOAK_SWAP_SECS", knobs.swap_secs) as u64);
    let rebuild_every = Duration::from_secs(knob("REEL_SOAK_REBUILD_SECS", knobs.rebuild_secs) as u64);
    let sample_every = Duration::from_secs(knob("REEL_SOAK_SAMPLE_SECS", 5) as u64);
    let backend_name = format!("{backend:?}").to_lowercase();
    let csv_path = std::env::var("REEL_SOAK_CSV").map_or_else(
        |_| Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{backend_name}.csv")),
        PathBuf::from,
    );
    let seed = Rng::from_env().next_u64();

    let (dir, setup, database) = super::common::scratch(backend);
    let db = database.as_deref();
    let modules = dir.path().join("modules");
    let order_summaries = std::fs::read(common::guest("order_summaries")).unwrap();
    let echo = [
        std::fs::read(common::guest("fixture_echo_a")).unwrap(),
        std::fs::read(common::guest("fixture_echo_v2")).unwrap(),
    ];
    std::fs::write(modules.join("order_summaries.wasm"), &order_summaries).unwrap();
    std::fs::copy(common::guest("customer_stats"), modules.join("customer_stats.wasm")).unwrap();
    std::fs::write(modules.join("echo.wasm"), &echo[0]).unwrap();

    let mut reel = Reel::start(dir.path(), db, &[]);
    let pid = reel.pid();
    let base = format!("http://{}", reel.addr);
    wait_until(&base, Duration::from_secs(120), |list| {
        list.as_array().is_some_and(|all| all.len() == 3 && all.iter().all(|p| p["state"] == "running"))
    });
    let idle = rss_mib(pid);
    eprintln!("soak: reel serving at {base}, {idle:.1} MiB idle; {secs} s at {rate} appends/s, seed {seed}");

    let counts = Arc::new(Appends::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (base, counts, stop) = (base.clone(), Arc::clone(&counts), Arc::clone(&stop));
            let share = rate as f64 / CLIENTS as f64;
            std::thread::spawn(move || append(&base, seed ^ (i << 40), share, started, &counts, &stop))
        })
        .collect();

    let mut monitor = Monitor::new(&setup, db, dir.path(), pid);
    let mut csv = std::fs::File::create(&csv_path).unwrap();
    writeln!(csv, "{}", Sample::HEADER).unwrap();
    let mut samples = Vec::new();
    let (mut swaps, mut rebuilds) = (0u64, 0u64);
    // The contents of order_summaries.wasm seen loaded in `GET /modules`:
    // each swap writes a new one, sampled 12 times before the next.
    let mut swapped_in = std::collections::HashSet::new();
    let mut next_sample = started;
    let mut rebuild_started: Option<(Instant, &str)> = None;
    let mut rebuild_times = Vec::new();
    let end = started + Duration::from_secs(secs);
    while Instant::now() < end {
        let now = Instant::now();
        let elapsed = now - started;
        if elapsed >= swap_every * (swaps as u32 + 1) {
            swaps += 1;
            install(&modules, "order_summaries.wasm", &with_custom_section(&order_summaries, swaps));
        }
        if elapsed >= rebuild_every * (rebuilds as u32 + 1) {
            rebuilds += 1;
            let version = if rebuilds % 2 == 1 { "2" } else { "1" };
            install(&modules, "echo.wasm", &echo[(rebuilds % 2) as usize]);
            if let Some((_, v)) = rebuild_started {
                eprintln!("soak: the rebuild of echo@{v} had not finished when the next version came");
            }
            rebuild_started = Some((now, version));
        }
        if now >= next_sample {
            next_sample += sample_every;
            assert!(reel.running(), "reel died: {}", reel.log_tail());
            let (sample, list) = monitor.sample(&base, elapsed.as_secs_f64(), counts.done.load(Ordering::Relaxed));
            if let Some(hash) = monitor.loaded(&base, "order_summaries.wasm") {
                swapped_in.insert(hash);
            }
            if let Some((at, version)) = rebuild_started {
                let echo = list.as_array().and_then(|all| all.iter().find(|p| p["name"] == "echo"));
                if echo.is_some_and(|e| e["version"] == version && e["rebuild"].is_null()) {
                    eprintln!("soak: echo@{version} rebuilt and serving after {:.1?}", at.elapsed());
                    rebuild_times.push(at.elapsed().as_secs_f64());
                    rebuild_started = None;
                }
            }
            eprintln!(
                "soak: {:>6.0} s  rss {:>6.1} MiB (kv caches {:>6.1})  fds {:>4}  db {:>3}  lag {:>6.2} s / {:>6} events  appended {:>8}  \
                 read {:>6.2} ms  healthz {:>6.2} ms",
                sample.t,
                sample.rss_mib,
                sample.kv_cache_mib,
                sample.fds,
                sample.db_connections,
                sample.lag_s,
                sample.lag_events,
                sample.appended,
                sample.read_ms,
                sample.health_ms
            );
            writeln!(csv, "{}", sample.csv()).unwrap();
            samples.push(sample);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client panicked");
    }
    let appended = counts.done.load(Ordering::Relaxed);
    let caught_up = Instant::now();
    wait_until(&base, Duration::from_secs(600), |list| {
        list.as_array().is_some_and(|all| {
            all.len() == 3 && all.iter().all(|p| p["lag"] == 0 && p["rebuild"].is_null() && p["state"] == "running")
        })
    });
    let catch_up = caught_up.elapsed();
    if let Some(hash) = monitor.loaded(&base, "order_summaries.wasm") {
        swapped_in.insert(hash);
    }
    let loads = swapped_in.len() as u64;
    reel.terminate();

    let summary = Summary::of(&samples, secs as f64);
    let failed = counts.failed.load(Ordering::Relaxed);
    eprintln!(
        "soak: {backend:?}: {appended} events appended in {secs} s ({:.0}/s asked {rate}/s; {} x 503 retried, {failed} \
         failed, {} broken connections, furthest behind schedule {} ms); {swaps} hot swaps ({} loads of \
         order_summaries.wasm), {rebuilds} version rebuilds (serving after {rebuild_times:.0?} s); caught up {catch_up:.1?} \
         after the appends stopped; idle {idle:.1} MiB; {summary}; samples in {}",
        appended as f64 / secs as f64,
        counts.unavailable.load(Ordering::Relaxed),
        counts.broken.load(Ordering::Relaxed),
        counts.behind_ms.load(Ordering::Relaxed),
        loads,
        csv_path.display()
    );
    assert_eq!(failed, 0, "appends failed: {:?}", counts.first_failure.lock().unwrap());
    assert_eq!(loads, swaps + 1, "every hot swap is loaded");
    assert!(summary.lag_median < 5.0, "the serving read models' lag: median {:.2} s (at most 5 s)", summary.lag_median);
    drop(monitor);
    if let Some(url) = db {
        setup.block_on(common::drop_database(url));
    }
}

/// Append single events of generated orders at `rate` a second from
/// `started` (each on schedule, or at once when behind), with each event's
/// expected version, until `stop`.
fn append(base: &str, seed: u64, rate: f64, started: Instant, counts: &Appends, stop: &AtomicBool) {
    let mut client = Client::connect(base).unwrap();
    let mut sent = 0u64;
    // A minute of orders at a time (1.8 events an order).
    let orders = (rate * 60.0 / 1.8).ceil() as usize;
    for chunk in 0u64.. {
        for e in generate(&OrderWorkload::new(orders, seed ^ chunk.wrapping_mul(0x9E37_79B9))) {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                counts.behind_ms.fetch_max((now - due).as_millis() as u64, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let body = json!({
                "stream_id": e.stream_id,
                "expected_version": e.version - 1,
                "events": [{ "event_type": e.event_type, "data": e.data }],
            })
            .to_string();
            loop {
                match client.post("/events", Some(&body)) {
                    Ok(r) if r.status == 201 => break,
                    Ok(r) if r.status == 503 => {
                        counts.unavailable.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(r) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        counts.first_failure.lock().unwrap().get_or_insert(format!("{}: {}", r.status, r.body));
                        break;
                    }
                    Err(e) => {
                        counts.broken.fetch_add(1, Ordering::Relaxed);
                        counts.first_failure.lock().unwrap().get_or_insert(e);
                        std::thread::sleep(Duration::from_millis(20));
                        client = Client::connect(base).unwrap();
                    }
                }
            }
            sent += 1;
            counts.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Put `bytes` in the modules folder as `name` at once (written beside it,
/// then renamed into it).
fn install(modules: &Path, name: &str, bytes: &[u8]) {
    let staged = modules.parent().unwrap().join(name);
    std::fs::write(&staged, bytes).unwrap();
    std::fs::rename(&staged, modules.join(name)).unwrap();
}

/// `component` with a custom section `reel-soak` holding `n` appended: the
/// same code, a different file.
pub fn with_custom_section(component: &[u8], n: u64) -> Vec<u8> {
    let name = b"reel-soak";
    let payload = n.to_le_bytes();
    let mut section = leb128(name.len() as u64);
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0);
    out.extend(leb128(section.len() as u64));
    out.extend(section);
    out
}

fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Poll `GET /projections` until `done` holds.
fn wait_until(base: &str, timeout: Duration, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let list = Client::connect(base).and_then(|mut c| c.get("/projections")).and_then(|r| r.json());
        if let Ok(list) = &list
            && done(list)
        {
            return;
        }
        assert!(Instant::now() < deadline, "not reached in {timeout:?}: {list:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Resident memory of process `pid`, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    proc_status_kib(pid, "VmRSS:") / 1024.0
}

/// A `kB` field of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// What the sampler reads the figures from.
struct Monitor<'a> {
    setup: &'a tokio::runtime::Runtime,
    /// On PostgreSQL: a connection of its own and the database's name.
    postgres: Option<(tokio_postgres::Client, String)>,
    data: PathBuf,
    pid: u32,
    client: Option<Client>,
}

impl<'a> Monitor<'a> {
    fn new(setup: &'a tokio::runtime::Runtime, db: Option<&str>, dir: &Path, pid: u32) -> Self {
        let postgres = db.map(|url| {
            let name = url.rsplit('/').next().unwrap().to_owned();
            let client = setup.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&common::postgres_admin_url(), tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client
            });
            (client, name)
        });
        Self { setup, postgres, data: dir.join("data"), pid, client: None }
    }

    /// Connections to the database: PostgreSQL's backends for it; on
    /// SQLite, reel's open descriptors of database files (one a connection).
    fn db_connections(&self) -> usize {
        match &self.postgres {
            Some((client, name)) => {
                let row = self
                    .setup
                    .block_on(client.query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[name]))
                    .unwrap();
                row.get::<_, i64>(0) as usize
            }
            None => std::fs::read_dir(format!("/proc/{}/fd", self.pid))
                .map(|fds| {
                    fds.flatten()
                        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                        .filter(|target| {
                            target.starts_with(&self.data) && target.extension().is_some_and(|e| e == "db")
                        })
                        .count()
                })
                .unwrap_or(0),
        }
    }

    fn get(&mut self, base: &str, path: &str) -> (u16, String, f64) {
        let started = Instant::now();
        for _ in 0..3 {
            if self.client.is_none() {
                self.client = Client::connect(base).ok();
            }
            if let Some(client) = &mut self.client {
                match client.get(path) {
                    Ok(r) => return (r.status, r.body, started.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => self.client = None,
                }
            }
        }
        panic!("GET {path}: no answer");
    }

    /// The content hash of module file `file` as `GET /modules` shows it,
    /// when it is loaded (compiled, in use, no error).
    fn loaded(&mut self, base: &str, file: &str) -> Option<String> {
        let (status, body, _) = self.get(base, "/modules");
        assert_eq!(status, 200, "GET /modules: {body}");
        let files: serde_json::Value = serde_json::from_str(&body).unwrap();
        let entry = files.as_array()?.iter().find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(file)))?;
        let loaded = entry["provides"].is_string() && entry["error"].is_null() && entry["compiling"] == false;
        loaded.then(|| entry["hash"].as_str().map(str::to_owned)).flatten()
    }

    fn sample(&mut self, base: &str, t: f64, appended: u64) -> (Sample, serde_json::Value) {
        let (status, _, health_ms) = self.get(base, "/healthz");
        assert_eq!(status, 200, "/healthz");
        let (status, body, read_ms) = self.get(base, "/projections/order-summaries/tables/order_summaries?limit=10");
        assert_eq!(status, 200, "a read of order_summaries: {body}");
        let (status, body, _) = self.get(base, "/projections");
        assert_eq!(status, 200, "/projections: {body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        let all = list.as_array().unwrap();
        let lag_s = all.iter().filter_map(|p| p["lag_seconds"].as_f64()).fold(0.0, f64::max);
        let lag_events = all.iter().filter_map(|p| p["lag"].as_i64()).max().unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, Iterator::count);
        let (status, metrics, _) = self.get(base, "/metrics");
        assert_eq!(status, 200, "/metrics: {metrics}");
        let kv_cache_bytes = common::gauge(&metrics, "reel_kv_cache_bytes").expect("reel_kv_cache_bytes in /metrics");
        let sample = Sample {
            t,
            rss_mib: rss_mib(self.pid),
            fds,
            db_connections: self.db_connections(),
            lag_s,
            lag_events,
            appended,
            read_ms,
            health_ms,
            kv_cache_mib: kv_cache_bytes / (1 << 20) as f64,
        };
        (sample, list)
    }
}

/// The run's figures: lag's median and the spread of memory, descriptors
/// and connections after the warm-up (the first sixth of the run, at least
/// a minute).
pub struct Summary {
    lag_median: f64,
    lag_p99: f64,
    lines: Vec<String>,
}

impl Summary {
    fn of(samples: &[Sample], secs: f64) -> Self {
        let warm = (secs / 6.0).max(60.0).min(secs / 2.0);
        let after: Vec<&Sample> = samples.iter().filter(|s| s.t >= warm).collect();
        let mut lags: Vec<f64> = samples.iter().map(|s| s.lag_s).collect();
        lags.sort_by(f64::total_cmp);
        let quantile = |q: f64| lags.get(((lags.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
        let spread = |what: &str, mut sorted: Vec<f64>| {
            sorted.sort_by(f64::total_cmp);
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
            let (lo, hi) = (sorted.first().copied().unwrap_or(0.0), sorted.last().copied().unwrap_or(0.0));
            let off = if median > 0.0 { ((hi - median).max(median - lo)) / median * 100.0 } else { 0.0 };
            format!("{what} after {warm:.0} s: median {median:.1}, {lo:.1}..{hi:.1} ({off:.1}% off the median at most)")
        };
        let lines = vec![
            spread("rss MiB", after.iter().map(|s| s.rss_mib).collect()),
            spread("kv caches MiB", after.iter().map(|s| s.kv_cache_mib).collect()),
            spread("fds", after.iter().map(|s| s.fds as f64).collect()),
            spread("db connections", after.iter().map(|s| s.db_connections as f64).collect()),
        ];
        Self { lag_median: quantile(0.5), lag_p99: quantile(0.99), lines }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lag median {:.2} s, p99 {:.2} s; {}", self.lag_median, self.lag_p99, self.lines.join("; "))
    }
}
