//! Rebuild throughput: replay a generated order workload from position 0 and
//! time each projection until it has caught up with the head.
//!
//! ```sh
//! cargo bench -p reel --bench rebuild                      # 1,000,000 events, both backends
//! cargo bench -p reel --bench rebuild -- --events 200000 --backend postgres
//! cargo test  -p reel --bench rebuild -- --smoke           # 10,000 events, what CI runs
//! cargo bench -p reel --bench rebuild -- --events 100000 --backend sqlite --languages
//! ```
//!
//! Variants: the two example projections as components (WASM), the same two
//! compiled natively against the same store code (the limit), and a
//! hand-written loop the way tutorials write a projector (one transaction and
//! one statement per event), on the first `--handwritten` events. With
//! `--languages`, also the JavaScript, Python and C versions of both (built by
//! `cargo xtask guests`). Every projection run is checked against the fold of
//! the events.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Backend;
use reel::runtime::Runtime;
use reel::source::Cursor;
use reel::store::TableRead;
use reel::workload::{Expected, OrderEvent, OrderWorkload, StoredEvent, fold, generate};
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
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--events" => args.events = value().parse().expect("--events N"),
            "--handwritten" => args.handwritten = value().parse().expect("--handwritten N"),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--call-events" => args.call_events = value().parse().expect("--call-events N"),
            "--only" => args.only = Some(value()),
            "--languages" => args.languages = true,
            "--backend" => {
                args.backends = match value().as_str() {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" => vec![Backend::Postgres],
                    "both" => vec![Backend::Sqlite, Backend::Postgres],
                    other => panic!("unknown backend {other}"),
                }
            }
            "--smoke" => {
                args.events = 10_000;
                args.handwritten = 2_000;
            }
            "--bench" | "--nocapture" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .try_init();
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
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
    let runtime = Runtime::start(config.clone()).await.unwrap();

    let events = workload(args.events);
    let started = Instant::now();
    load(&config, &events).await;
    let load_time = started.elapsed();
    let stored = common::stored_events(&config.data_dir, config.database_url.as_deref()).await;
    let expected = fold(&stored);
    let head = runtime.source().head().await.unwrap();
    let head_cursor = runtime.source().cursor_of(head).await.unwrap().unwrap();
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
        let (rate, compile, cpu) = rebuild(&runtime, &config, variant, stored.len(), head_cursor, &expected).await;
        println!("{label:<36} {rate:>10.0} events/s  ({compile}, included; CPU per event: {cpu})");
        results.insert(label, rate);
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
        runtime.shutdown().await;
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
    runtime.shutdown().await;
    if let Some(url) = &config.database_url {
        common::drop_database(url).await;
    }
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
    runtime: &Runtime,
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
            runtime.reload(file.clone()).await;
        }
        Variant::Language(name) => {
            std::fs::copy(common::language_guest(name), &file).unwrap();
            runtime.reload(file.clone()).await;
        }
        Variant::NativeOrders => runtime.deploy_native::<order_summaries::OrderSummaries>().await.unwrap(),
        Variant::NativeOrdersPerEvent => runtime.deploy_native::<OrdersPerEvent>().await.unwrap(),
        Variant::NativeCustomers => runtime.deploy_native::<customer_stats::CustomerStatsProjection>().await.unwrap(),
    }
    loop {
        let (active, _) = runtime.deployments(name).expect("deployed");
        let status = active.status.snapshot();
        if status.cursor >= head {
            break;
        }
        assert!(status.last_error.is_none() || status.state != reel::worker::State::Stopped, "{status:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let cpu = Cpu::now().since(&cpu_before, events, config.database_url.is_some());
    let compile = match runtime.files().into_iter().find(|f| f.path == file) {
        Some(f) => format!(
            "{} {:.0} ms",
            if f.cached == Some(true) { "cache load" } else { "compile" },
            f.compile_ms.unwrap_or_default()
        ),
        None => "native, no compile".to_owned(),
    };
    verify(runtime, name, expected).await;
    if matches!(variant, Variant::Wasm(_) | Variant::Language(_)) {
        std::fs::remove_file(&file).unwrap();
        runtime.reload(file).await;
    }
    runtime.delete(name).await.unwrap();
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
async fn verify(runtime: &Runtime, name: &str, expected: &Expected) {
    if name.starts_with("order-summaries") {
        let read = TableRead { table: "order_summaries".into(), limit: 10_000_000, ..TableRead::default() };
        let rows = runtime.read(name, None, move |ns| ns.read_table(&read)).await.unwrap();
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
        let entries = runtime.read(name, None, |ns| ns.kv_scan("customer/", None, 10_000_000)).await.unwrap();
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
            tokio::task::spawn_blocking(move || reel::workload::load::insert_sqlite(&db, &events).unwrap())
                .await
                .unwrap();
        }
        Some(url) => {
            reel::workload::load::copy_postgres(url, events).await.unwrap();
            // As autovacuum soon would on a live table, so that no variant
            // pays alone for the first reads of fresh rows (which set their
            // hint bits and so write every page).
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute("VACUUM (ANALYZE) events").await.unwrap();
        }
    }
}

/// The statement `order-summaries` issued for an event before it folded its
/// batches (ADR 16): what the hand-written loop sends.
fn order_statement(e: &StoredEvent) -> (&'static str, Vec<String>) {
    let d: Value = serde_json::from_str(&e.data).unwrap();
    let id = d["orderId"].as_str().unwrap().to_owned();
    match e.event_type.as_str() {
        "order.placed" => {
            let count: i64 = d["items"].as_array().unwrap().iter().map(|i| i["quantity"].as_i64().unwrap()).sum();
            (
                "INSERT INTO hw_orders (order_id, customer_id, item_count, total, status, placed_at) \
                 VALUES ($1, $2, $3::text::bigint, $4::text::float8, 'placed', $5) \
                 ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
                 item_count = excluded.item_count, total = excluded.total, status = 'placed', placed_at = excluded.placed_at",
                vec![
                    id,
                    d["customerId"].as_str().unwrap().to_owned(),
                    count.to_string(),
                    d["total"].to_string(),
                    e.occurred_at.clone(),
                ],
            )
        }
        "order.shipped" => (
            "UPDATE hw_orders SET status = 'shipped', tracking_number = $2, shipped_at = $3 WHERE order_id = $1",
            vec![id, d["trackingNumber"].as_str().unwrap().to_owned(), e.occurred_at.clone()],
        ),
        _ => ("UPDATE hw_orders SET status = 'cancelled' WHERE order_id = $1", vec![id]),
    }
}

const HW_DDL: &str = "CREATE TABLE hw_orders (order_id TEXT PRIMARY KEY, customer_id TEXT, item_count BIGINT, \
           total DOUBLE PRECISION, status TEXT, placed_at TEXT, tracking_number TEXT, shipped_at TEXT); \
           CREATE INDEX hw_orders_by_customer ON hw_orders (customer_id, placed_at); \
           CREATE TABLE hw_checkpoint (id INTEGER PRIMARY KEY, position BIGINT); \
           INSERT INTO hw_checkpoint VALUES (1, 0);";

/// The settings reel uses for a namespace file (`store/sqlite/mod.rs`), so a
/// ceiling is measured on the same storage. Returns what reel does after each
/// commit: a checkpoint on another thread once the WAL is big.
fn tuned(conn: &rusqlite::Connection, path: &std::path::Path) -> impl FnMut() + use<> {
    use reel::store::wal;
    conn.pragma_update(None, "page_size", 16_384).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "cache_size", -262_144).unwrap();
    conn.wal_hook(Some(wal::note_wal_pages));
    let checkpointer = wal::Checkpointer::start(path).unwrap();
    move || {
        if wal::take_wal_pages() >= wal::BACKGROUND_PAGES {
            checkpointer.request();
        }
    }
}

/// The limit for order-summaries: the statements it issues for each batch
/// (recorded beforehand by running it natively in memory, in batches of
/// `batch` events handed over in calls as reel's worker does), sent by
/// a native client with no reel in between: statements prepared, each batch a
/// transaction with its checkpoint; on PostgreSQL pipelined, as `EXECUTE`s like
/// reel's (ADR 15).
/// Returns events/s and how many statements that was.
async fn ceiling(config: &reel::Config, events: &[StoredEvent], batch: usize) -> (f64, usize) {
    let dialect = if config.database_url.is_some() { "postgres" } else { "sqlite" };
    let mut host = RecordingHost { dialect, ..RecordingHost::default() };
    guest_sdk::native::init::<order_summaries::OrderSummaries>(&mut host).unwrap();
    let ddl: Vec<String> = std::mem::take(&mut host.statements).into_iter().map(|(sql, _)| sql).collect();
    let raw = raw_events(events, |_| true);
    let total = raw.len() as f64;
    let batches: Vec<Vec<(String, Vec<guest_sdk::Value>)>> = raw
        .chunks(batch)
        .map(|chunk| {
            for call in config.batch.calls(chunk) {
                guest_sdk::native::handle::<order_summaries::OrderSummaries, _>(&mut host, call).unwrap();
            }
            std::mem::take(&mut host.statements)
        })
        .collect();
    let statements = batches.iter().map(Vec::len).sum();
    let rate = match &config.database_url {
        None => {
            let path = config.data_dir.join("ceiling.db");
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(&path).unwrap();
                let mut after_commit = tuned(&conn, &path);
                for statement in &ddl {
                    conn.execute_batch(statement).unwrap();
                }
                conn.execute_batch(CHECKPOINT_DDL).unwrap();
                let started = Instant::now();
                for (n, statements) in batches.iter().enumerate() {
                    let tx = conn.transaction().unwrap();
                    for (sql, params) in statements {
                        let params = params.iter().map(|v| match v {
                            guest_sdk::Value::Null => rusqlite::types::Value::Null,
                            guest_sdk::Value::Integer(i) => (*i).into(),
                            guest_sdk::Value::Real(f) => (*f).into(),
                            guest_sdk::Value::Text(s) => s.clone().into(),
                            guest_sdk::Value::Blob(b) => b.clone().into(),
                        });
                        let sql = sql.replace('$', "?");
                        tx.prepare_cached(&sql).unwrap().execute(rusqlite::params_from_iter(params)).unwrap();
                    }
                    tx.execute("UPDATE hw_checkpoint SET position = ?1 WHERE id = 1", [n as i64]).unwrap();
                    tx.commit().unwrap();
                    after_commit();
                }
                total / started.elapsed().as_secs_f64()
            })
            .await
            .unwrap()
        }
        Some(url) => {
            // As reel sends them (ADR 15): each statement prepared under a
            // name, its executions as `EXECUTE`s, 1,000 to a simple query.
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute("CREATE SCHEMA ceiling; SET search_path TO ceiling").await.unwrap();
            for statement in &ddl {
                client.batch_execute(statement).await.unwrap();
            }
            client.batch_execute(CHECKPOINT_DDL).await.unwrap();
            // Statements with at most 16 parameters as `EXECUTE`s, the rest
            // bound (reel's EXEC_MAX_PARAMS).
            let mut names = std::collections::HashMap::new();
            let mut bound = std::collections::HashMap::new();
            for (sql, params) in batches.iter().flatten() {
                if params.len() > 16 {
                    if !bound.contains_key(sql) {
                        bound.insert(sql.clone(), client.prepare(sql).await.unwrap());
                    }
                } else if !names.contains_key(sql) {
                    let name = format!("hw_e{}", names.len());
                    client.batch_execute(&format!("PREPARE {name} AS {sql}")).await.unwrap();
                    names.insert(sql.clone(), name);
                }
            }
            enum Out<'a> {
                Query(String),
                Bound(&'a tokio_postgres::Statement, &'a [guest_sdk::Value]),
            }
            let sends: Vec<Vec<Out<'_>>> = batches
                .iter()
                .enumerate()
                .map(|(n, statements)| {
                    let mut sends = vec![Out::Query("BEGIN".to_owned())];
                    let mut executes = String::new();
                    let mut count = 0;
                    for (sql, params) in statements {
                        if let Some(statement) = bound.get(sql) {
                            if !executes.is_empty() {
                                sends.push(Out::Query(std::mem::take(&mut executes)));
                            }
                            sends.push(Out::Bound(statement, params));
                            count = 0;
                            continue;
                        }
                        let literals: Vec<String> = params.iter().map(pg_literal).collect();
                        executes += &format!("EXECUTE {}({});", names[sql], literals.join(", "));
                        count += 1;
                        if count == 1000 {
                            sends.push(Out::Query(std::mem::take(&mut executes)));
                            count = 0;
                        }
                    }
                    if !executes.is_empty() {
                        sends.push(Out::Query(executes));
                    }
                    sends.push(Out::Query(format!("UPDATE hw_checkpoint SET position = {n} WHERE id = 1")));
                    sends.push(Out::Query("COMMIT".to_owned()));
                    sends
                })
                .collect();
            let client = &client;
            let started = Instant::now();
            for batch in &sends {
                let sent = batch.iter().map(|send| async move {
                    match send {
                        Out::Query(text) => client.batch_execute(text).await,
                        Out::Bound(statement, params) => {
                            let params = params.iter().map(TextParam);
                            client.execute_raw(*statement, params).await.map(|_| ())
                        }
                    }
                });
                for result in futures_util::future::join_all(sent).await {
                    result.unwrap();
                }
            }
            total / started.elapsed().as_secs_f64()
        }
    };
    (rate, statements)
}

const CHECKPOINT_DDL: &str =
    "CREATE TABLE hw_checkpoint (id INTEGER PRIMARY KEY, position BIGINT); INSERT INTO hw_checkpoint VALUES (1, 0);";

/// `value` as a PostgreSQL literal, written as reel writes it (`pg/value.rs`,
/// private to reel): text in `E'...'` with `\` and `'` doubled.
fn pg_literal(value: &guest_sdk::Value) -> String {
    match value {
        guest_sdk::Value::Null => "NULL".to_owned(),
        guest_sdk::Value::Integer(i) => format!("'{i}'"),
        guest_sdk::Value::Real(f) => format!("'{f}'"),
        guest_sdk::Value::Text(s) => format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
        guest_sdk::Value::Blob(b) => {
            format!("E'\\\\x{}'", b.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
        }
    }
}

/// A parameter in text format, as reel binds them (`pg/value.rs`).
#[derive(Debug)]
struct TextParam<'a>(&'a guest_sdk::Value);

impl tokio_postgres::types::ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            guest_sdk::Value::Null => return Ok(tokio_postgres::types::IsNull::Yes),
            guest_sdk::Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
            guest_sdk::Value::Real(f) => out.extend_from_slice(f.to_string().as_bytes()),
            guest_sdk::Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            guest_sdk::Value::Blob(_) => return Err("the ceiling binds no blobs".into()),
        }
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    fn encode_format(&self, _: &tokio_postgres::types::Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The stored events `keep` keeps, as the SDK's events (positions from 1).
fn raw_events(events: &[StoredEvent], keep: fn(&StoredEvent) -> bool) -> Vec<guest_sdk::RawEvent> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| keep(e))
        .map(|(i, e)| guest_sdk::RawEvent {
            position: i as i64 + 1,
            stream_id: String::new(),
            version: 1,
            event_type: e.event_type.clone(),
            data: e.data.clone(),
            metadata: "{}".into(),
            occurred_at: e.occurred_at.clone(),
        })
        .collect()
}

/// A host that keeps KV in memory and records each batch's writes and SQL statements.
#[derive(Default)]
struct RecordingHost {
    kv: std::collections::HashMap<String, Vec<u8>>,
    written: BTreeMap<String, Vec<u8>>,
    statements: Vec<(String, Vec<guest_sdk::Value>)>,
    dialect: &'static str,
}

impl guest_sdk::Host for RecordingHost {
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key).cloned()
    }
    fn kv_set(&mut self, key: &str, value: Vec<u8>) {
        self.kv.insert(key.to_owned(), value.clone());
        self.written.insert(key.to_owned(), value);
    }
    fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }
    fn kv_scan(&mut self, _: &str, _: Option<&str>, _: u32) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
    fn sql_execute(&mut self, statement: &str, params: Vec<guest_sdk::Value>) {
        self.statements.push((statement.to_owned(), params));
    }
    fn sql_query(&mut self, _: &str, _: Vec<guest_sdk::Value>) -> Result<guest_sdk::Rows, guest_sdk::SqlError> {
        Ok(guest_sdk::Rows::default())
    }
    fn sql_dialect(&mut self) -> String {
        self.dialect.to_owned()
    }
    fn log(&mut self, _: guest_sdk::Level, _: &str) {}
}

/// The limit for customer-stats: the KV writes it makes per batch (computed
/// beforehand, in memory), written by a native client as one multi-row insert
/// of the new keys and one upsert of the others per batch, with the checkpoint.
async fn kv_ceiling(config: &reel::Config, events: &[StoredEvent], batch: usize) -> f64 {
    let subscribed = raw_events(events, |e| e.event_type != "order.shipped");
    let mut host = RecordingHost::default();
    let mut writes: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for chunk in subscribed.chunks(batch) {
        guest_sdk::native::handle::<customer_stats::CustomerStatsProjection, _>(&mut host, chunk).unwrap();
        writes.push(std::mem::take(&mut host.written).into_iter().collect());
    }
    let total = events.len() as f64;
    match &config.database_url {
        None => {
            let path = config.data_dir.join("kv-ceiling.db");
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(&path).unwrap();
                let mut after_commit = tuned(&conn, &path);
                conn.execute_batch(
                    "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID; \
                     CREATE TABLE checkpoint (id INTEGER PRIMARY KEY, position BIGINT); INSERT INTO checkpoint VALUES (1, 0);",
                )
                .unwrap();
                let started = Instant::now();
                for (n, batch) in writes.iter().enumerate() {
                    let tx = conn.transaction().unwrap();
                    for (key, value) in batch {
                        tx.prepare_cached("INSERT INTO kv VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                            .unwrap()
                            .execute(rusqlite::params![key, value])
                            .unwrap();
                    }
                    tx.execute("UPDATE checkpoint SET position = ?1 WHERE id = 1", [n as i64]).unwrap();
                    tx.commit().unwrap();
                    after_commit();
                }
                total / started.elapsed().as_secs_f64()
            })
            .await
            .unwrap()
        }
        Some(url) => {
            let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(
                    "CREATE TABLE kv_c (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL) WITH (fillfactor = 50); \
                     CREATE TABLE kv_c_checkpoint (id INTEGER PRIMARY KEY, position BIGINT); INSERT INTO kv_c_checkpoint VALUES (1, 0);",
                )
                .await
                .unwrap();
            // Keys no earlier batch wrote are inserted, the rest upserted, as
            // reel does with keys its cache knows absent.
            let mut seen = std::collections::HashSet::new();
            type Keys<'a> = (Vec<&'a str>, Vec<&'a [u8]>);
            let split: Vec<[Keys<'_>; 2]> = writes
                .iter()
                .map(|batch| {
                    let mut split: [Keys<'_>; 2] = Default::default();
                    for (k, v) in batch {
                        let part = &mut split[usize::from(seen.insert(k.as_str()))];
                        part.0.push(k);
                        part.1.push(v);
                    }
                    split
                })
                .collect();
            let started = Instant::now();
            for (n, [(old_keys, old_values), (new_keys, new_values)]) in split.iter().enumerate() {
                let tx = client.transaction().await.unwrap();
                tx.execute("INSERT INTO kv_c SELECT * FROM unnest($1::text[], $2::bytea[])", &[new_keys, new_values])
                    .await
                    .unwrap();
                tx.execute(
                    "INSERT INTO kv_c SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[old_keys, old_values],
                )
                .await
                .unwrap();
                tx.execute("UPDATE kv_c_checkpoint SET position = $1 WHERE id = 1", &[&(n as i64)]).await.unwrap();
                tx.commit().await.unwrap();
            }
            total / started.elapsed().as_secs_f64()
        }
    }
}

/// What users write instead: for each event, BEGIN; one statement; move the
/// checkpoint; COMMIT. `order_summaries`' statements, on `events`.
async fn handwritten_loop(config: &reel::Config, events: &[StoredEvent], sqlite_defaults: bool) -> f64 {
    let statements = order_statement;
    let ddl = HW_DDL;
    match &config.database_url {
        None => {
            let path = config.data_dir.join(if sqlite_defaults { "handwritten-default.db" } else { "handwritten.db" });
            let events = events.to_vec();
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(path).unwrap();
                if !sqlite_defaults {
                    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
                    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
                }
                conn.execute_batch(ddl).unwrap();
                let started = Instant::now();
                for (i, e) in events.iter().enumerate() {
                    let (sql, params) = statements(e);
                    let sql = sql.replace("::text::bigint", "").replace("::text::float8", "").replace('$', "?");
                    let tx = conn.transaction().unwrap();
                    tx.execute(&sql, rusqlite::params_from_iter(params.iter())).unwrap();
                    tx.execute("UPDATE hw_checkpoint SET position = ?1 WHERE id = 1", [i as i64 + 1]).unwrap();
                    tx.commit().unwrap();
                }
                events.len() as f64 / started.elapsed().as_secs_f64()
            })
            .await
            .unwrap()
        }
        Some(url) => {
            let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(ddl).await.unwrap();
            let started = Instant::now();
            for (i, e) in events.iter().enumerate() {
                let (sql, params) = statements(e);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                let tx = client.transaction().await.unwrap();
                tx.execute(sql, &refs).await.unwrap();
                tx.execute("UPDATE hw_checkpoint SET position = $1 WHERE id = 1", &[&(i as i64 + 1)]).await.unwrap();
                tx.commit().await.unwrap();
            }
            events.len() as f64 / started.elapsed().as_secs_f64()
        }
    }
}
