//! Commands over HTTP (issue 23): `POST /commands/{decider}/{stream}` with
//! the deciders as components, beside the same deciders compiled into reel,
//! in the same run.
//!
//! ```sh
//! cargo bench -p reel --bench commands                      # both backends, 3 rounds
//! cargo bench -p reel --bench commands -- --backend postgres --rounds 5
//! cargo bench -p reel --bench commands -- --only long       # the 100,000-event stream alone
//! cargo test  -p reel --bench commands -- --smoke           # what CI runs
//! ```
//!
//! reel runs in this process (so that a decider can be compiled into it) and
//! serves HTTP on a local port; the clients are keep-alive HTTP/1.1
//! connections of this process. Parts:
//!
//! - **distinct**: `place` on 10,000 fresh `order-*` streams by 16 clients
//!   at once, as fast as answered (each command loads an empty state, decides
//!   and appends with expected version 0): commands/s;
//! - **hot**: `add` on one `tally-*` stream by 16 clients at once (the
//!   `tally` fixture appends on every command, so the clients contend for
//!   the stream's next version; reel retries a conflict up to 8 times, then
//!   answers 409): commands/s accepted, and the 409s;
//! - **rate**: `place` on fresh streams at a steady 1,000 commands/s for
//!   `--seconds` (10), and `add` on one hot stream at 1,000/s: p50/p99
//!   latency, measured from each command's scheduled send time (time queued
//!   behind a busy connection counts);
//! - **long**: a refused `place` on a stream of 100,000 events and on a
//!   stream of one event: the first command (the long one folded from zero),
//!   the median of 30 warm commands, and the first command after reel
//!   restarts (from its snapshot; a command on a third stream goes first,
//!   so that what a new process pays once is not counted against either).
//!
//! Each of distinct, hot and rate runs once with the component and once with
//! native code per round, the order alternating between rounds; medians are
//! printed. Every answer is checked (201 with the expected version, or 409 on
//! the hot stream, whose final state must count exactly the accepted
//! commands), or the run panics.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::keepalive::Http;
use common::{Backend, median};
use reel::Server;
use tokio::sync::Mutex;

struct Args {
    backends: Vec<Backend>,
    rounds: usize,
    streams: usize,
    hot_commands: usize,
    clients: usize,
    seconds: f64,
    rate: u64,
    long_events: usize,
    only: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        backends: vec![Backend::Sqlite, Backend::Postgres],
        rounds: 3,
        streams: 10_000,
        hot_commands: 3_000,
        clients: 16,
        seconds: 10.0,
        rate: 1_000,
        long_events: 100_000,
        only: None,
    };
    common::bench_args(|flag, value| {
        match flag {
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--streams" => args.streams = value().parse().expect("--streams N"),
            "--hot-commands" => args.hot_commands = value().parse().expect("--hot-commands N"),
            "--clients" => args.clients = value().parse().expect("--clients N"),
            "--seconds" => args.seconds = value().parse().expect("--seconds S"),
            "--rate" => args.rate = value().parse().expect("--rate N"),
            "--long-events" => args.long_events = value().parse().expect("--long-events N"),
            "--only" => args.only = Some(value()),
            "--backend" => args.backends = common::backends(&value()),
            "--smoke" => {
                args.rounds = 1;
                args.streams = 300;
                args.hot_commands = 200;
                args.seconds = 0.5;
                args.rate = 200;
                args.long_events = 3_000;
            }
            _ => return false,
        }
        true
    });
    args
}

const PLACE: &str =
    r#"{"command_type":"place","data":{"customerId":"c-1","items":[{"productId":"p-1","quantity":2,"price":9.5}]}}"#;
const ADD: &str = r#"{"command_type":"add","data":{"n":1}}"#;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Code {
    Wasm,
    Native,
}

/// reel in this process, serving HTTP.
struct Reel {
    server: Server,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Reel {
    async fn start(config: &reel::Config) -> Self {
        let server = Server::start(config.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(reel::serve(server.clone(), listener, async move {
            let _ = stopped.await;
        }));
        Self { server, addr, stop, serving }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.serving.await.unwrap().unwrap();
    }

    /// Serve the deciders `order` and `tally` as `code` (`None`: no decider).
    async fn deploy(&self, config: &reel::Config, code: Option<Code>) {
        let deciders = self.server.deployments().deciders();
        for name in ["order", "tally"] {
            deciders.unload(Path::new(&format!("native:{name}")));
            let file = wasm_file(config, name);
            if file.exists() {
                std::fs::remove_file(&file).unwrap();
                self.server.deployments().reload(file).await;
            }
        }
        match code {
            None => return,
            Some(Code::Native) => {
                deciders.deploy_native::<order::Order>().unwrap();
                deciders.deploy_native::<fixture_tally::Tally>().unwrap();
            }
            Some(Code::Wasm) => {
                for (name, crate_name) in [("order", "order"), ("tally", "fixture_tally")] {
                    let file = wasm_file(config, name);
                    std::fs::copy(common::guest(crate_name), &file).unwrap();
                    self.server.deployments().reload(file).await;
                }
            }
        }
        let names: Vec<String> = deciders.list().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["order", "tally"], "both deciders in service");
    }
}

fn wasm_file(config: &reel::Config, name: &str) -> PathBuf {
    config.modules_dir.join(format!("{name}.wasm"))
}

fn main() {
    let args = args();
    // Built (or found up to date) before anything is timed.
    common::guests();
    let rt = common::bench_runtime();
    println!(
        "commands benchmark: {} clients, {} distinct streams, {} commands on one hot stream, {}/s for {} s, a stream \
         of {} events; {} round(s) alternated; {} cores, reel {}",
        args.clients,
        args.streams,
        args.hot_commands,
        args.rate,
        args.seconds,
        args.long_events,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION")
    );
    for backend in &args.backends {
        rt.block_on(bench_backend(*backend, &args));
    }
}

fn wanted(args: &Args, part: &str) -> bool {
    args.only.as_deref().is_none_or(|only| only == part)
}

async fn bench_backend(backend: Backend, args: &Args) {
    println!("\n== {backend:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.limits.batch_timeout = Duration::from_secs(10);
    if backend == Backend::Postgres {
        config.database_url = Some(common::create_database().await);
    }
    std::fs::create_dir_all(&config.modules_dir).unwrap();
    let reel = Reel::start(&config).await;
    let mut results: std::collections::BTreeMap<(&str, Code), Vec<f64>> = Default::default();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [Code::Wasm, Code::Native] } else { [Code::Native, Code::Wasm] };
        for code in order {
            reel.deploy(&config, Some(code)).await;
            let tag = format!("r{round}{}", if code == Code::Wasm { "w" } else { "n" });
            if wanted(args, "distinct") {
                let rate = distinct(reel.addr, args, &tag).await;
                println!("round {}: {code:?} distinct streams: {rate:>8.0} commands/s", round + 1);
                results.entry(("distinct", code)).or_default().push(rate);
            }
            if wanted(args, "hot") {
                let (rate, refused) = hot(reel.addr, args, &tag).await;
                println!(
                    "round {}: {code:?} one hot stream:   {rate:>8.0} commands/s accepted ({refused} answered 409)",
                    round + 1
                );
                results.entry(("hot", code)).or_default().push(rate);
            }
            if wanted(args, "rate") {
                for (part, hot) in [("rate distinct", false), ("rate hot", true)] {
                    let run = at_rate(reel.addr, args, &tag, hot).await;
                    println!(
                        "round {}: {code:?} {part} at {}/s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
                        round + 1,
                        args.rate,
                        run.achieved,
                        ms(run.p50),
                        ms(run.p99),
                        ms(run.max),
                        if hot { format!(" ({} answered 409)", run.refused) } else { String::new() }
                    );
                    let key = if hot { "p99 hot" } else { "p99 distinct" };
                    results.entry((key, code)).or_default().push(ms(run.p99));
                    let key = if hot { "p50 hot" } else { "p50 distinct" };
                    results.entry((key, code)).or_default().push(ms(run.p50));
                }
            }
        }
    }
    if !results.is_empty() {
        println!("{backend:?} medians of {} round(s):", args.rounds);
    }
    let med = |part: &'static str, code: Code| results.get(&(part, code)).map(|v| median(v));
    for (part, unit) in [
        ("distinct", "commands/s"),
        ("hot", "commands/s accepted"),
        ("p50 distinct", "ms"),
        ("p99 distinct", "ms"),
        ("p50 hot", "ms"),
        ("p99 hot", "ms"),
    ] {
        if let (Some(w), Some(n)) = (med(part, Code::Wasm), med(part, Code::Native)) {
            let target = match part {
                "distinct" => format!(" (target >= 0.7x: {})", if w / n >= 0.7 { "met" } else { "NOT met" }),
                "p99 distinct" if backend == Backend::Postgres => {
                    format!(" (target < 20 ms on PostgreSQL: {})", if w < 20.0 { "met" } else { "NOT met" })
                }
                _ => String::new(),
            };
            println!("  {part:<13} wasm {w:>9.2} {unit}, native {n:>9.2}; wasm/native {:.2}{target}", w / n);
        }
    }
    if wanted(args, "long") {
        long_stream(reel, &config, args).await;
    } else {
        reel.stop().await;
    }
    if let Some(url) = &config.database_url {
        common::drop_database(url).await;
    }
}

/// `place` on `args.streams` fresh streams by `args.clients` clients: commands/s.
async fn distinct(addr: SocketAddr, args: &Args, tag: &str) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let (next, tag, total) = (Arc::clone(&next), tag.to_owned(), args.streams);
        clients.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let (status, body) = http.request("POST", &format!("/commands/order/order-{tag}-{i}"), PLACE).await;
                assert_eq!(status, 201, "{body}");
                assert!(body.contains(r#""version":1"#), "{body}");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    args.streams as f64 / started.elapsed().as_secs_f64()
}

/// `add` on one stream by `args.clients` clients: accepted commands/s, and
/// the number answered 409. The stream's state must count exactly the
/// accepted ones.
async fn hot(addr: SocketAddr, args: &Args, tag: &str) -> (f64, usize) {
    let stream = format!("tally-{tag}-hot");
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let (next, accepted, stream, total) =
            (Arc::clone(&next), Arc::clone(&accepted), stream.clone(), args.hot_commands);
        clients.push(tokio::spawn(async move {
            let mut http = Http::connect(addr).await;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let (status, body) = http.request("POST", &format!("/commands/tally/{stream}"), ADD).await;
                match status {
                    201 => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    409 => {}
                    _ => panic!("{status} {body}"),
                }
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    check_tally(addr, &stream, accepted).await;
    (accepted as f64 / elapsed.as_secs_f64(), args.hot_commands - accepted)
}

/// The tally stream's state and version count exactly `accepted` commands.
async fn check_tally(addr: SocketAddr, stream: &str, accepted: usize) {
    let (status, body) =
        Http::connect(addr).await.request("GET", &format!("/deciders/tally/streams/{stream}/state"), "").await;
    assert_eq!(status, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["version"].as_u64(), Some(accepted as u64), "{state}");
    assert_eq!(state["state"]["count"].as_u64(), Some(accepted as u64), "{state}");
}

struct RateRun {
    achieved: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    refused: usize,
}

/// Commands at a steady `args.rate` for `args.seconds` over `args.clients`
/// connections: `place` on fresh streams, or (`hot`) `add` on one stream.
/// Latency from each command's scheduled time to its answer.
async fn at_rate(addr: SocketAddr, args: &Args, tag: &str, hot: bool) -> RateRun {
    let mut lanes = Vec::new();
    for _ in 0..args.clients {
        lanes.push(Arc::new(Mutex::new(Http::connect(addr).await)));
    }
    let total = (args.rate as f64 * args.seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let hot_stream = format!("tally-{tag}-rate");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let lane = Arc::clone(&lanes[n % lanes.len()]);
        let (path, body) = if hot {
            (format!("/commands/tally/{hot_stream}"), ADD)
        } else {
            (format!("/commands/order/order-{tag}-rate-{n}"), PLACE)
        };
        tasks.push(tokio::spawn(async move {
            let (status, answer) = lane.lock().await.request("POST", &path, body).await;
            match (status, hot) {
                (201, _) => {}
                (409, true) => {}
                _ => panic!("{status} {answer}"),
            }
            (due.elapsed(), status == 201)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut accepted = 0;
    for task in tasks {
        let (latency, ok) = task.await.unwrap();
        latencies.push(latency);
        accepted += usize::from(ok);
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    if hot {
        check_tally(addr, &hot_stream, accepted).await;
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    RateRun { achieved, p50: at(0.5), p99: at(0.99), max: *latencies.last().unwrap(), refused: total - accepted }
}

/// The time to refuse `place` on the placed order `stream`: its state
/// loaded, the command decided, nothing appended.
async fn refused_in(http: &mut Http, stream: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = http.request("POST", &format!("/commands/order/{stream}"), PLACE).await;
    assert_eq!(status, 422, "{body}");
    started.elapsed()
}

/// The order decider's (events folded, snapshots loaded, snapshots saved).
async fn folded(addr: SocketAddr) -> (u64, u64, u64) {
    let (status, body) = Http::connect(addr).await.request("GET", "/deciders", "").await;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let order = list.as_array().unwrap().iter().find(|d| d["name"] == "order").expect("order in service");
    let n = |k: &str| order[k].as_u64().unwrap();
    (n("events_folded"), n("snapshots_loaded"), n("snapshots_saved"))
}

/// A refused command on a stream of `args.long_events` events beside one on a
/// stream of one event: first, warm (median of 30), first after a restart.
async fn long_stream(reel: Reel, config: &reel::Config, args: &Args) {
    const SAMPLES: usize = 30;
    let placed = r#"{"event_type":"order.placed","data":{"customerId":"c-1","items":[{"productId":"p-1","quantity":1,"price":1.5}],"total":1.5}}"#;
    // Appended as plain events, before the decider owns the streams.
    reel.deploy(config, None).await;
    let mut http = Http::connect(reel.addr).await;
    for (stream, count) in [("order-long", args.long_events), ("order-short", 1), ("order-warm", 1)] {
        for chunk in 0..count.div_ceil(10_000) {
            let n = (count - chunk * 10_000).min(10_000);
            let events = vec![placed; n].join(",");
            let body = format!(r#"{{"stream_id":"{stream}","events":[{events}]}}"#);
            let (status, answer) = http.request("POST", "/events", &body).await;
            assert_eq!(status, 201, "{answer}");
        }
    }
    reel.deploy(config, Some(Code::Wasm)).await;
    let before = folded(reel.addr).await;
    let cold = refused_in(&mut http, "order-long").await;
    let short_cold = refused_in(&mut http, "order-short").await;
    let (mut long, mut short) = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        long.push(refused_in(&mut http, "order-long").await.as_secs_f64() * 1000.0);
        short.push(refused_in(&mut http, "order-short").await.as_secs_f64() * 1000.0);
    }
    let after_first = folded(reel.addr).await;
    assert_eq!(
        after_first.0 - before.0,
        args.long_events as u64 + 1,
        "the long stream folded once, from zero, and the short one"
    );
    drop(http);
    reel.stop().await;
    let reel = Reel::start(config).await;
    let started = Instant::now();
    while folded_or_none(reel.addr).await.is_none() {
        assert!(started.elapsed() < Duration::from_secs(120), "order not in service after the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut http = Http::connect(reel.addr).await;
    // What a new process pays once, whatever the stream (the decider's
    // first instance, the connection's statements), goes to a third stream
    // first: the long and the short one then compare as streams.
    refused_in(&mut http, "order-warm").await;
    let restarted = refused_in(&mut http, "order-long").await;
    let short_restarted = refused_in(&mut http, "order-short").await;
    let after = folded(reel.addr).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (warm_long, warm_short) = (median(&long), median(&short));
    println!(
        "a stream of {} events (wasm): first command {:.2} ms (a stream of one event: {:.2} ms); warm median {:.2} ms \
         (one event: {:.2} ms), {:.2}x; first after a restart {:.2} ms (one event: {:.2} ms), {:.2}x; \
         after the restart (events folded, snapshots loaded, saved): {after:?} (target: within 2x after the first \
         command: {})",
        args.long_events,
        ms(cold),
        ms(short_cold),
        warm_long,
        warm_short,
        warm_long / warm_short,
        ms(restarted),
        ms(short_restarted),
        ms(restarted) / ms(short_restarted),
        if warm_long / warm_short <= 2.0 && ms(restarted) / ms(short_restarted) <= 2.0 { "met" } else { "NOT met" }
    );
    assert_eq!(after, (2, 1, 0), "after the restart: the long stream from its snapshot, the short and warm-up folded");
    drop(http);
    reel.stop().await;
}

async fn folded_or_none(addr: SocketAddr) -> Option<(u64, u64, u64)> {
    let (status, body) = Http::connect(addr).await.request("GET", "/deciders", "").await;
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200 && list.as_array()?.iter().any(|d| d["name"] == "order")).then_some(())?;
    Some(folded(addr).await)
}
