//! Rebuild throughput: replay a generated order workload from position 0 and
//! time each projection until it has caught up with the head.
//!
//! ```sh
//! cargo bench -p reel --bench rebuild                      # 1,000,000 events, both backends
//! cargo bench -p reel --bench rebuild -- --events 200000 --backend postgres
//! cargo test  -p reel --bench rebuild -- --smoke           # 10,000 events, what CI runs
//! cargo bench -p reel --bench rebuild -- --events 100000 --backend sqlite --languages
//! cargo bench -p reel --bench rebuild -- --only wasm --changes 5 --events 100000   # change capture's cost
//! ```
//!
//! Variants: the two example projections as components (WASM), the same two
//! compiled natively against the same store code (the limit), and a
//! hand-written loop the way tutorials write a projector (one transaction and
//! one statement per event), on the first `--handwritten` events. With
//! `--languages`, also the JavaScript, Python and C versions of both (built by
//! `cargo xtask guests`). Every projection run is checked against the fold of
//! the events.

mod ceiling;
#[path = "../../tests/common/mod.rs"]
mod common;
mod handwritten;

use ceiling::{ceiling, kv_ceiling};
use handwritten::handwritten_loop;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Backend;
use reel::Server;
use reel::model::Cursor;
use reel::testing::TableRead;
use reel::testing::workload::{Expected, OrderEvent, OrderWorkload, fold, generate};
use serde_json::Value;

struct Args {
    events: usize,
    /// Run only the variants whose label contains this.
    only: Option<String>,
    backends: Vec<Backend>,
    handwritten: usize,
    batch: usize,
    /// Most events per guest call.
    call_events: usize,
    /// Also the JavaScript, Python and C components.
    languages: bool,
    /// Rounds of the examples rebuilt without and with change capture (ADR 28).
    changes: usize,
}

fn args() -> Args {
    let mut args = Args {
        only: None,
        events: 1_000_000,
        backends: vec![Backend::Sqlite, Backend::Postgres],
        handwritten: 20_000,
        batch: reel::config::BatchConfig::default().max_events,
        call_events: reel::config::BatchConfig::default().call_events,
        languages: false,
        changes: 0,
    };
    common::bench_args(|flag, value| {
        match flag {
            "--events" => args.events = value().parse().expect("--events N"),
            "--handwritten" => args.handwritten = value().parse().expect("--handwritten N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--call-events" => args.call_events = value().parse().expect("--call-events N"),
            "--only" => args.only = Some(value()),
            "--languages" => args.languages = true,
            "--changes" => args.changes = value().parse().expect("--changes ROUNDS"),
            "--backend" => args.backends = common::backends(&value()),
            "--smoke" => {
                args.events = 10_000;
                args.handwritten = 2_000;
                args.changes = 1;
            }
            _ => return false,
        }
        true
    });
    args
}

fn main() {
    let args = args();
    let rt = common::bench_runtime();
    println!(
        "rebuild benchmark: {} events, batches of {}, {} cores, reel {}",
        args.events,
        args.batch,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION")
    );
    for backend in &args.backends {
        rt.block_on(bench_backend(*backend, &args));
    }
}

/// Orders for about `events` events (1.8 events per order on average).
fn workload(events: usize) -> Vec<OrderEvent> {
    let mut events_out = generate(&OrderWorkload::new(events * 5 / 9 + 1, 2026));
    events_out.truncate(events);
    events_out
}

async fn bench_backend(backend: Backend, args: &Args) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.batch.max_events = args.batch;
    config.batch.call_events = args.call_events;
    config.limits.batch_timeout = Duration::from_secs(60);
    config.poll_interval = Duration::from_millis(20);
    if backend == Backend::Postgres {
        config.database_url = Some(common::create_database().await);
    }
    std::fs::create_dir_all(&config.modules_dir).unwrap();
    let server = Server::start(config.clone()).await.unwrap();

    let events = workload(args.events);
    let started = Instant::now();
    load(&config, &events).await;
    let load_time = started.elapsed();
    let stored = common::stored_events(&config.data_dir, config.database_url.as_deref()).await;
    let expected = fold(&stored);
    let head = server.source().head().await.unwrap();
    let head_cursor = server.source().cursor_of(head).await.unwrap().unwrap();
    println!(
        "\n== {backend:?}: {} events loaded in {:.1?} ({:.0} events/s); {} orders, {} customers",
        stored.len(),
        load_time,
        stored.len() as f64 / load_time.as_secs_f64(),
        expected.orders.len(),
        expected.customers.len()
    );

    let mut results = BTreeMap::new();
    let mut variants = vec![
        ("order-summaries (wasm)".to_owned(), Variant::Wasm("order_summaries")),
        ("order-summaries (native)".to_owned(), Variant::NativeOrders),
        ("order-summaries (native, per event)".to_owned(), Variant::NativeOrdersPerEvent),
        ("customer-stats (wasm)".to_owned(), Variant::Wasm("customer_stats")),
        ("customer-stats (native)".to_owned(), Variant::NativeCustomers),
    ];
    if args.languages {
        for name in LANGUAGE_MODULES {
            variants.push((format!("{name} (wasm)"), Variant::Language(name)));
        }
    }
    for (label, variant) in variants {
        if args.only.as_ref().is_some_and(|only| !label.contains(only.as_str())) {
            continue;
        }
        let (rate, compile, cpu) = rebuild(&server, &config, variant, stored.len(), head_cursor, &expected).await;
        println!("{label:<36} {rate:>10.0} events/s  ({compile}, included; CPU per event: {cpu})");
        results.insert(label, rate);
    }
    if args.changes > 0 {
        changes_cost(&server, &config, stored.len(), head_cursor, &expected, args.changes).await;
    }
    let (ceiling, statements) = ceiling(&config, &stored, args.batch).await;
    println!(
        "{:<36} {ceiling:>10.0} events/s (order-summaries' {statements} statements from a native client, no reel; events pre-read)",
        "ceiling: direct writes"
    );
    println!(
        "order-summaries: wasm/ceiling {:.2}",
        results.get("order-summaries (wasm)").copied().unwrap_or_default() / ceiling
    );
    let kv_ceiling = kv_ceiling(&config, &stored, args.batch).await;
    println!(
        "{:<36} {kv_ceiling:>10.0} events/s (customer-stats' KV writes from a native client, values computed beforehand)",
        "ceiling: direct KV writes"
    );
    println!(
        "customer-stats: wasm/ceiling {:.2}",
        results.get("customer-stats (wasm)").copied().unwrap_or_default() / kv_ceiling
    );
    if args.only.is_some() {
        server.shutdown().await;
        if let Some(url) = &config.database_url {
            common::drop_database(url).await;
        }
        return;
    }
    let sample = &stored[..args.handwritten.min(stored.len())];
    if backend == Backend::Sqlite {
        let defaults = handwritten_loop(&config, sample, true).await;
        println!(
            "{:<36} {defaults:>10.0} events/s (one transaction per event, SQLite defaults: rollback journal, synchronous=FULL)",
            "hand-written loop"
        );
        println!(
            "order-summaries: wasm/hand-written(defaults) {:.0}x",
            results.get("order-summaries (wasm)").copied().unwrap_or_default() / defaults
        );
    }
    let handwritten = handwritten_loop(&config, sample, false).await;
    println!(
        "{:<36} {handwritten:>10.0} events/s (one transaction per event{}, first {} events)",
        "hand-written loop",
        if backend == Backend::Sqlite { ", WAL and synchronous=NORMAL" } else { "" },
        args.handwritten.min(stored.len())
    );
    let ratio = |a: &str, b: &str| results[a] / results[b];
    println!(
        "order-summaries: wasm/native {:.2}, wasm/hand-written {:.1}x",
        ratio("order-summaries (wasm)", "order-summaries (native)"),
        results["order-summaries (wasm)"] / handwritten
    );
    println!(
        "customer-stats:  wasm/native {:.2}, wasm/hand-written {:.1}x",
        ratio("customer-stats (wasm)", "customer-stats (native)"),
        results["customer-stats (wasm)"] / handwritten
    );
    server.shutdown().await;
    if let Some(url) = &config.database_url {
        common::drop_database(url).await;
    }
}

/// The cost of change capture (ADR 28): each example rebuilt `rounds` times
/// without and with it, alternately, by this server and by a second one on
/// the same log that captures their changes.
async fn changes_cost(
    server: &Server,
    config: &reel::Config,
    events: usize,
    head: Cursor,
    expected: &Expected,
    rounds: usize,
) {
    let mut with = config.clone();
    with.modules_dir = config.modules_dir.with_file_name("modules-changes");
    std::fs::create_dir_all(&with.modules_dir).unwrap();
    for name in ["order-summaries", "customer-stats"] {
        with.projections.entry(name.into()).or_default().changes = true;
    }
    let capturing = Server::start(with.clone()).await.unwrap();
    for (label, crate_name) in [("order-summaries", "order_summaries"), ("customer-stats", "customer_stats")] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            off.push(rebuild(server, config, Variant::Wasm(crate_name), events, head, expected).await.0);
            on.push(rebuild(&capturing, &with, Variant::Wasm(crate_name), events, head, expected).await.0);
        }
        let best = |rates: &[f64]| rates.iter().copied().fold(0.0, f64::max);
        let median = |rates: &[f64]| {
            let mut sorted = rates.to_vec();
            sorted.sort_by(f64::total_cmp);
            let mid = sorted.len() / 2;
            if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
        };
        let shown = |rates: &[f64]| rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
        println!(
            "{label} (wasm): {} events/s without change capture, {} with; best with/best without {:.2}, \
             median with/median without {:.2}",
            shown(&off),
            shown(&on),
            best(&on) / best(&off),
            median(&on) / median(&off)
        );
    }
    capturing.shutdown().await;
}

/// The example projections in the other languages (`projections/<name>/dist/<name>.wasm`).
const LANGUAGE_MODULES: [&str; 6] = [
    "order-summaries-js",
    "customer-stats-js",
    "order-summaries-py",
    "customer-stats-py",
    "order-summaries-c",
    "customer-stats-c",
];

#[derive(Clone, Copy)]
enum Variant {
    Wasm(&'static str),
    NativeOrders,
    /// [`OrdersPerEvent`].
    NativeOrdersPerEvent,
    NativeCustomers,
    /// One of [`LANGUAGE_MODULES`].
    Language(&'static str),
}

/// `order-summaries` applying each event on its own (the SDK's default
/// `handle_batch`, no fold): what folding a batch saves.
struct OrdersPerEvent;

impl guest_sdk::Projection for OrdersPerEvent {
    type Event = order_summaries::OrderEvent;

    fn manifest() -> guest_sdk::Manifest {
        order_summaries::OrderSummaries::manifest()
    }

    fn init(ctx: &mut guest_sdk::Context<'_>) -> guest_sdk::Result<()> {
        order_summaries::OrderSummaries::init(ctx)
    }

    fn handle(ctx: &mut guest_sdk::Context<'_>, event: guest_sdk::Envelope<'_, Self::Event>) -> guest_sdk::Result<()> {
        order_summaries::OrderSummaries::handle(ctx, event)
    }
}

/// Deploy `variant` on a fresh namespace; events/s until it reached the head
/// (the module's compile included), and how long that compile took.
async fn rebuild(
    server: &Server,
    config: &reel::Config,
    variant: Variant,
    events: usize,
    head: Cursor,
    expected: &Expected,
) -> (f64, String, String) {
    let name = match variant {
        Variant::Wasm("order_summaries") | Variant::NativeOrders | Variant::NativeOrdersPerEvent => "order-summaries",
        Variant::Language(name) => name,
        _ => "customer-stats",
    };
    let file = config.modules_dir.join(format!("{name}.wasm"));
    let started = Instant::now();
    let cpu_before = Cpu::now();
    match variant {
        Variant::Wasm(crate_name) => {
            std::fs::copy(common::guest(crate_name), &file).unwrap();
            server.deployments().reload(file.clone()).await;
        }
        Variant::Language(name) => {
            std::fs::copy(common::language_guest(name), &file).unwrap();
            server.deployments().reload(file.clone()).await;
        }
        Variant::NativeOrders => server.deployments().deploy_native::<order_summaries::OrderSummaries>().await.unwrap(),
        Variant::NativeOrdersPerEvent => server.deployments().deploy_native::<OrdersPerEvent>().await.unwrap(),
        Variant::NativeCustomers => {
            server.deployments().deploy_native::<customer_stats::CustomerStatsProjection>().await.unwrap()
        }
    }
    loop {
        let (active, _) = server.deployments().views(name).expect("deployed");
        let status = active.status.snapshot();
        if status.cursor >= head {
            break;
        }
        assert!(status.last_error.is_none() || status.state != reel::testing::State::Stopped, "{status:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let cpu = Cpu::now().since(&cpu_before, events, config.database_url.is_some());
    let compile = match server.deployments().files().into_iter().find(|f| f.path == file) {
        Some(f) => format!(
            "{} {:.0} ms",
            if f.cached == Some(true) { "cache load" } else { "compile" },
            f.compile_ms.unwrap_or_default()
        ),
        None => "native, no compile".to_owned(),
    };
    verify(server, name, expected).await;
    if matches!(variant, Variant::Wasm(_) | Variant::Language(_)) {
        std::fs::remove_file(&file).unwrap();
        server.deployments().reload(file).await;
    }
    server.deployments().delete(name).await.unwrap();
    (rate, compile, cpu)
}

/// CPU time used so far by this process and by the PostgreSQL server's
/// processes, in clock ticks (`/proc`). On a shared machine whose speed
/// changes by the hour, CPU per event is steadier than events/s.
struct Cpu {
    reel: u64,
    server: u64,
}

impl Cpu {
    /// Linux reports `/proc` times in USER_HZ, 100 per second.
    const TICKS_PER_SECOND: f64 = 100.0;

    fn now() -> Self {
        let ticks = |stat: &str| -> Option<(String, u64)> {
            // pid (comm) state ppid ... utime stime: fields 14 and 15, the
            // comm in parentheses may hold spaces.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((comm, fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?))
        };
        let reel = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| ticks(&s)).map_or(0, |(_, t)| t);
        let server = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
            .filter_map(|s| ticks(&s))
            .filter(|(comm, _)| comm == "postgres")
            .map(|(_, t)| t)
            .sum();
        Self { reel, server }
    }

    /// Microseconds of CPU per event since `before`: reel's, and the
    /// server's (processes that exited meanwhile are not counted).
    fn since(&self, before: &Cpu, events: usize, server: bool) -> String {
        let micros = |ticks: u64| ticks as f64 / Self::TICKS_PER_SECOND * 1e6 / events as f64;
        let reel = micros(self.reel.saturating_sub(before.reel));
        if server {
            format!("reel {reel:.1} µs, server {:.1} µs", micros(self.server.saturating_sub(before.server)))
        } else {
            format!("reel {reel:.1} µs")
        }
    }
}

/// The read model equals the fold, or the run does not count.
async fn verify(server: &Server, name: &str, expected: &Expected) {
    if name.starts_with("order-summaries") {
        let read = TableRead { table: "order_summaries".into(), limit: 10_000_000, ..TableRead::default() };
        let rows = server.reads().read(name, None, move |ns| ns.read_table(&read)).await.unwrap();
        let got: BTreeMap<String, Value> = rows
            .iter()
            .map(|row| {
                let object: serde_json::Map<String, Value> =
                    rows.columns.iter().cloned().zip(row.values().iter().map(|v| v.to_json())).collect();
                (object["order_id"].as_str().unwrap().to_owned(), Value::Object(object))
            })
            .collect();
        assert!(got == common::expected_rows(expected), "{name} differs from the fold");
    } else {
        let entries = server.reads().read(name, None, |ns| ns.kv_scan("customer/", None, 10_000_000)).await.unwrap();
        let got: BTreeMap<String, String> =
            entries.into_iter().map(|(k, v)| (k, String::from_utf8(v).unwrap())).collect();
        assert!(got == expected.customers, "{name} differs from the fold");
    }
}

/// Bulk-load the events (SQLite: one transaction; PostgreSQL: COPY, then VACUUM).
async fn load(config: &reel::Config, events: &[OrderEvent]) {
    match &config.database_url {
        None => {
            let db = config.data_dir.join("events.db");
            let events = events.to_vec();
            tokio::task::spawn_blocking(move || reel::testing::workload::load::insert_sqlite(&db, &events).unwrap())
                .await
                .unwrap();
        }
        Some(url) => {
            reel::testing::workload::load::copy_postgres(url, events).await.unwrap();
            // As autovacuum soon would on a live table, so that no variant
            // pays alone for the first reads of fresh rows (which set their
            // hint bits and so write every page).
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute("VACUUM (ANALYZE) events").await.unwrap();
        }
    }
}
