//! States kept (ADR 26): in memory between commands, and snapshotted in the
//! database, so a restarted reel starts a stream's state from its snapshot,
//! not its first event; new code of the decider ignores old snapshots. The
//! evidence is the count of events `evolve` folded (`events_folded` in
//! `GET /deciders`), not a time.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::common::{self, Backend, Harness};
use super::{command, place};
use crate::both_backends;

both_backends!(a_restarted_reel_starts_from_snapshots_and_new_code_ignores_them);

/// The `order` decider's counts, once it is in service.
async fn counts(h: &Harness) -> Value {
    let started = Instant::now();
    loop {
        let deciders = h.get("/deciders").await;
        if let Some(order) = deciders.as_array().unwrap().iter().find(|d| d["name"] == "order") {
            return order.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "order not in service: {}", h.get("/modules").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn folded(counts: &Value) -> (u64, u64, u64) {
    let n = |k: &str| counts[k].as_u64().unwrap();
    (n("events_folded"), n("snapshots_loaded"), n("snapshots_saved"))
}

/// `wasm` with a custom section appended: the same decider, another file
/// (a rebuild), which reel takes for new code.
fn rebuilt(mut wasm: Vec<u8>) -> Vec<u8> {
    let name = b"reel-test-rebuild";
    let content_len = 1 + name.len() + 1;
    assert!(content_len < 128, "one LEB128 byte");
    wasm.extend([0, content_len as u8, name.len() as u8]);
    wasm.extend(name);
    wasm.push(1);
    wasm
}

async fn a_restarted_reel_starts_from_snapshots_and_new_code_ignores_them(backend: Backend) {
    let h = Harness::start_with(backend, &["order"], |c| c.deciders.snapshot_every = 2).await;
    let items = json!([{ "productId": "p-1", "quantity": 2, "price": 9.99 }]);
    for (stream, body) in [
        ("order-1", place("c-1", items.clone())),
        ("order-1", json!({ "command_type": "ship", "data": { "trackingNumber": "T-1" } })),
        ("order-2", place("c-2", items.clone())),
    ] {
        assert_eq!(command(&h, stream, body).await.0, StatusCode::CREATED);
    }
    // Each command folded only what was appended since the previous one.
    let shipped = h.get("/deciders/order/streams/order-1/state").await;
    assert_eq!((shipped["version"].as_i64(), shipped["state"]["status"].as_str()), (Some(2), Some("shipped")));
    h.get("/deciders/order/streams/order-2/state").await;
    assert_eq!(folded(&counts(&h).await), (3, 0, 1), "order-1 (2 events) snapshotted, order-2 (1) not yet");

    let h = h.restart().await;
    counts(&h).await;
    assert_eq!(h.get("/deciders/order/streams/order-1/state").await, shipped, "the same state");
    assert_eq!(folded(&counts(&h).await), (0, 1, 0), "order-1 from its snapshot: nothing folded");
    let (status, _) = command(&h, "order-1", json!({ "command_type": "cancel", "data": { "reason": "r" } })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "decided on the snapshot's state: shipped");
    h.get("/deciders/order/streams/order-2/state").await;
    assert_eq!(folded(&counts(&h).await), (1, 1, 0), "order-2 had no snapshot: folded from its first event");

    // New code (the same decider rebuilt): old snapshots are not used.
    let file = h.config.modules_dir.join("order.wasm");
    let tmp = h.dir.path().join("order.wasm.tmp");
    std::fs::write(&tmp, rebuilt(std::fs::read(common::guest("order")).unwrap())).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let h = h.restart().await;
    counts(&h).await;
    assert_eq!(h.get("/deciders/order/streams/order-1/state").await, shipped);
    assert_eq!(folded(&counts(&h).await), (2, 0, 1), "folded from the first event, and snapshotted anew");
    let h = h.restart().await;
    counts(&h).await;
    assert_eq!(h.get("/deciders/order/streams/order-1/state").await, shipped);
    assert_eq!(folded(&counts(&h).await), (0, 1, 0), "the new code's snapshot");
    h.finish().await;
}

/// The time `h` takes to refuse `place` on the placed order `stream`: its
/// state loaded, the command decided, nothing appended.
async fn refused_in(h: &Harness, stream: &str) -> Duration {
    let body = place("c-1", json!([{ "productId": "p-1", "quantity": 1, "price": 1.5 }]));
    let started = Instant::now();
    let (status, answer) = command(h, stream, body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    started.elapsed()
}

/// A measurement, not a check (run by hand, figures in docs/benchmarks.md):
/// the latency of commands on a stream of 100,000 events, cold (folded from
/// zero), warm (cached) and right after a restart (from its snapshot), beside
/// the same commands on a stream of one event.
///
/// ```sh
/// cargo test -p reel --test deciders -- --ignored --nocapture a_stream_of_100000_events
/// ```
async fn a_stream_of_100000_events_answers_like_a_short_one(backend: Backend) {
    const EVENTS: usize = 100_000;
    const SAMPLES: usize = 30;
    let h = Harness::start(backend, &[]).await;
    let placed = json!({ "event_type": "order.placed",
        "data": { "customerId": "c-1", "items": [{ "productId": "p-1", "quantity": 1, "price": 1.5 }], "total": 1.5 } });
    for (stream, count) in [("order-long", EVENTS), ("order-short", 1)] {
        for chunk in 0..count.div_ceil(10_000) {
            let n = (count - chunk * 10_000).min(10_000);
            h.append(stream, None, Value::Array(vec![placed.clone(); n])).await;
        }
    }
    h.install("order", "order.wasm");
    counts(&h).await;
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let cold = refused_in(&h, "order-long").await;
    let short_cold = refused_in(&h, "order-short").await;
    let mut warm = (Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        warm.0.push(refused_in(&h, "order-long").await);
        warm.1.push(refused_in(&h, "order-short").await);
    }
    let h = h.restart().await;
    counts(&h).await;
    let restarted = (refused_in(&h, "order-long").await, refused_in(&h, "order-short").await);
    let after = folded(&counts(&h).await);
    eprintln!(
        "{backend:?}: a stream of {EVENTS} events: first command {cold:.1?} (short stream {short_cold:.1?}); warm \
         median {:.2?} (short {:.2?}); first after a restart {:.2?} (short {:.2?}); folded after the restart \
         (events, snapshots loaded, saved): {after:?}",
        median(warm.0),
        median(warm.1),
        restarted.0,
        restarted.1,
    );
    assert_eq!(after, (1, 1, 0), "the long stream from its snapshot, the short one folded (one event)");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (docs/benchmarks.md)"]
async fn a_stream_of_100000_events_on_sqlite() {
    a_stream_of_100000_events_answers_like_a_short_one(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (docs/benchmarks.md)"]
async fn a_stream_of_100000_events_on_postgres() {
    a_stream_of_100000_events_answers_like_a_short_one(Backend::Postgres).await
}
