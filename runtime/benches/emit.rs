//! What emitting costs a catch-up (issue 22): a reactor that emits one event
//! for each source event, beside a plain projection making the same
//! read-model writes without emitting, over the same source events.
//!
//! ```sh
//! cargo bench -p reel --bench emit                        # 100,000 events, 3 rounds, both backends
//! cargo bench -p reel --bench emit -- --events 20000 --rounds 5 --backend postgres
//! cargo test  -p reel --bench emit -- --smoke             # what CI runs
//! ```
//!
//! The two modules are test fixtures: `relay` (a reactor: for each
//! `order.placed` it sets `seen/{position}` in its KV and emits one
//! `relay.relayed` to `relay-{stream}`) and `relay-quiet` (a projection making
//! the same KV write and building the same event, emitting nothing). Each run
//! starts on a fresh log of the same `order.placed` events (a reactor's
//! emissions stay in the log, and its keys in reel's tables), deploys one of
//! the two and times it from deployment (compile included; a cached compile
//! after the first round) until it has handled every source event and, for
//! the reactor, until every emission is in the log. The rounds alternate
//! which runs first; the figures are the medians. Every run is verified: one
//! KV entry per source event, and for the reactor exactly one emitted event
//! per source event (by causation id), or the run panics.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, median};
use reel::Server;
use reel::testing::workload::{OrderEvent, OrderWorkload, generate};

struct Args {
    events: usize,
    rounds: usize,
    backends: Vec<Backend>,
}

fn args() -> Args {
    let mut args = Args { events: 100_000, rounds: 3, backends: vec![Backend::Sqlite, Backend::Postgres] };
    common::bench_args(|flag, value| {
        match flag {
            "--events" => args.events = value().parse().expect("--events N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--backend" => args.backends = common::backends(&value()),
            "--smoke" => {
                args.events = 5_000;
                args.rounds = 1;
            }
            _ => return false,
        }
        true
    });
    args
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// `relay-quiet`: the writes, no emission.
    Quiet,
    /// `relay`: the writes and one emission per event.
    Reactor,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Quiet => "relay-quiet",
            Variant::Reactor => "relay",
        }
    }

    fn crate_name(self) -> &'static str {
        match self {
            Variant::Quiet => "fixture_relay_quiet",
            Variant::Reactor => "fixture_relay",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Quiet => "projection, same writes, no emit",
            Variant::Reactor => "reactor, one emit per event",
        }
    }
}

fn main() {
    let args = args();
    // Built (or found up to date) before anything is timed.
    common::guests();
    let rt = common::bench_runtime();
    println!(
        "emit benchmark: {} source events (order.placed), {} round(s) alternated, {} cores, reel {}",
        args.events,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION")
    );
    let mut source = generate(&OrderWorkload::new(args.events + 1, 2026));
    source.retain(|e| e.event_type == "order.placed");
    source.truncate(args.events);
    assert_eq!(source.len(), args.events);
    for backend in &args.backends {
        rt.block_on(bench_backend(*backend, &args, &source));
    }
}

async fn bench_backend(backend: Backend, args: &Args, source: &[OrderEvent]) {
    println!("\n== {backend:?}");
    let (mut quiet, mut reactor) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let order =
            if round % 2 == 0 { [Variant::Quiet, Variant::Reactor] } else { [Variant::Reactor, Variant::Quiet] };
        for variant in order {
            let rate = run(backend, variant, source).await;
            println!("round {}: {:<34} {rate:>9.0} events/s", round + 1, variant.label());
            match variant {
                Variant::Quiet => quiet.push(rate),
                Variant::Reactor => reactor.push(rate),
            }
        }
    }
    let (q, r) = (median(&quiet), median(&reactor));
    println!(
        "{backend:?} medians: projection {q:.0} events/s, reactor {r:.0} events/s; reactor/projection {:.2}x \
         (target >= 0.5x: {})",
        r / q,
        if r / q >= 0.5 { "met" } else { "NOT met" }
    );
}

/// One catch-up of `variant` on a fresh log of `source`: events/s.
async fn run(backend: Backend, variant: Variant, source: &[OrderEvent]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.limits.batch_timeout = Duration::from_secs(60);
    config.poll_interval = Duration::from_millis(20);
    if backend == Backend::Postgres {
        config.database_url = Some(common::create_database().await);
    }
    std::fs::create_dir_all(&config.modules_dir).unwrap();
    let server = Server::start(config.clone()).await.unwrap();
    load(&config, source).await;
    let head = server.source().head().await.unwrap();
    let head_cursor = server.source().cursor_of(head).await.unwrap().unwrap();
    let n = source.len() as u64;

    let file = config.modules_dir.join(format!("{}.wasm", variant.name()));
    let started = Instant::now();
    std::fs::copy(common::guest(variant.crate_name()), &file).unwrap();
    server.deployments().reload(file.clone()).await;
    loop {
        if let Some((active, _)) = server.deployments().views(variant.name()) {
            let status = active.status.snapshot();
            let emitted_all = variant == Variant::Quiet || status.emitted >= n;
            if status.cursor >= head_cursor && emitted_all {
                break;
            }
            assert!(
                status.state != reel::testing::State::Stopped,
                "{} stopped: {:?}",
                variant.name(),
                status.last_error
            );
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "{} did not catch up", variant.name());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    verify(&server, &config, variant, head).await;
    server.shutdown().await;
    if let Some(url) = &config.database_url {
        common::drop_database(url).await;
    }
    rate
}

/// The read model has one entry per source event, and the reactor emitted
/// exactly one event per source event; or the run does not count.
async fn verify(server: &Server, config: &reel::Config, variant: Variant, head: i64) {
    let name = variant.name();
    let seen = server.reads().read(name, None, |ns| ns.kv_scan("seen/", None, 10_000_000)).await.unwrap();
    let expected: Vec<String> = (1..=head).map(|p| format!("seen/{p:020}")).collect();
    let keys: Vec<String> = seen.into_iter().map(|(k, _)| k).collect();
    assert!(keys == expected, "{name}: {} KV entries for {head} source events", keys.len());
    // (emitted events, distinct causes, least cause, greatest cause, events of other streams after the head)
    let counts: (i64, i64, i64, i64, i64) = match &config.database_url {
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT count(*), count(DISTINCT (metadata->>'causation_id')::bigint), \
                     coalesce(min((metadata->>'causation_id')::bigint), 0), \
                     coalesce(max((metadata->>'causation_id')::bigint), 0), \
                     (SELECT count(*) FROM events WHERE id > $1 AND stream_id NOT LIKE 'relay-%') \
                     FROM events WHERE stream_id LIKE 'relay-%'",
                    &[&head],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
        }
        None => {
            let db = config.data_dir.join("events.db");
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(db).unwrap();
                conn.query_row(
                    "SELECT count(*), count(DISTINCT json_extract(metadata, '$.causation_id')), \
                     coalesce(min(json_extract(metadata, '$.causation_id')), 0), \
                     coalesce(max(json_extract(metadata, '$.causation_id')), 0), \
                     (SELECT count(*) FROM events WHERE id > ?1 AND stream_id NOT LIKE 'relay-%') \
                     FROM events WHERE stream_id LIKE 'relay-%'",
                    [head],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let expected = match variant {
        Variant::Quiet => (0, 0, 0, 0, 0),
        Variant::Reactor => (head, head, 1, head, 0),
    };
    assert_eq!(counts, expected, "{name}: (emitted, distinct causes, first cause, last cause, others after the head)");
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
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute("VACUUM (ANALYZE) events").await.unwrap();
        }
    }
}
