//! Reactors: modules that emit events exactly once (wit/reactor.wit,
//! docs/adr/23-reactors-exactly-once.md).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, Harness};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);

/// Every event of the log, through `GET /events`.
async fn log(h: &Harness) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = String::new();
    loop {
        let page = h.get(&format!("/events?limit=10000{after}")).await;
        let got = page["events"].as_array().unwrap().clone();
        let done = got.len() < 10_000;
        events.extend(got);
        if done {
            return events;
        }
        after = format!("&after={}", common::urlencode(page["next"].as_str().unwrap()));
    }
}

/// The relay's emissions by their key (cause, and the version that made it):
/// panics on a key seen twice.
fn relayed(events: &[Value]) -> BTreeMap<i64, String> {
    let mut by_cause = BTreeMap::new();
    for e in events.iter().filter(|e| e["event_type"] == "relay.relayed") {
        let cause = e["metadata"]["causation_id"].as_i64().expect("causation_id");
        let by = e["metadata"]["emitted_by"].as_str().unwrap().to_owned();
        assert!(by_cause.insert(cause, by).is_none(), "emitted twice for cause {cause}: {events:#?}");
    }
    by_cause
}

both_backends!(a_reactor_emits_once_per_cause_across_restarts_and_a_new_version);

/// relay emits one event per `order.placed`: with reel's metadata, under its
/// prefix, once; a restart emits nothing again, and a new version replays
/// history without emitting it again (its emissions there are dropped and
/// counted) and goes on emitting for new events.
async fn a_reactor_emits_once_per_cause_across_restarts_and_a_new_version(backend: Backend) {
    let h = Harness::start(backend, &["fixture_relay"]).await;
    let mut placed = Vec::new();
    for i in 0..10 {
        let body =
            h.append(&format!("order-{i}"), Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
        placed.push(body["positions"][0].as_i64().unwrap());
    }
    h.append("order-silent", Some(0), json!([{ "event_type": "order.placed", "data": { "silent": true } }])).await;
    let status = h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == 10).await;
    assert_eq!(status["reactor"]["stream_prefix"], "relay-", "{status:#}");

    let events = log(&h).await;
    let by_cause = relayed(&events);
    assert_eq!(
        by_cause.keys().copied().collect::<Vec<_>>(),
        placed,
        "one emission per order.placed, none for the silent one"
    );
    let first = events.iter().find(|e| e["event_type"] == "relay.relayed").unwrap();
    let cause = &events.iter().find(|e| e["position"] == first["metadata"]["causation_id"]).unwrap();
    assert_eq!(first["stream_id"], format!("relay-{}", cause["stream_id"].as_str().unwrap()));
    assert_eq!(first["version"], 1, "reel assigns the version");
    assert_eq!(first["metadata"]["emitted_by"], "relay@1");
    assert_eq!(first["metadata"]["correlation_id"], cause["position"], "a cause without one starts a correlation");
    assert_eq!(first["metadata"]["causation_depth"], 1);
    assert_eq!(first["data"], json!({ "from": cause["position"], "by": "1" }));

    // A restart replays nothing.
    let h = h.restart().await;
    let last = h.append("order-10", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    placed.push(last["positions"][0].as_i64().unwrap());
    h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == 1).await;
    assert_eq!(relayed(&log(&h).await).keys().copied().collect::<Vec<_>>(), placed);

    // Version 2 rebuilds from position 0: history wins.
    h.install("fixture_relay_v2", "fixture_relay.wasm");
    let done = h.wait_status("relay", PATIENCE, |s| s["version"] == "2" && s["rebuild"].is_null()).await;
    let after = h.append("order-11", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    placed.push(after["positions"][0].as_i64().unwrap());
    let status = h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == 1).await;
    assert_eq!(status["reactor"]["dropped"], 11, "version 2's emissions for handled causes: {done:#} {status:#}");
    let by_cause = relayed(&log(&h).await);
    assert_eq!(by_cause.keys().copied().collect::<Vec<_>>(), placed, "nothing emitted again, nothing missing");
    assert_eq!(by_cause.values().filter(|by| *by == "relay@2").count(), 1, "{by_cause:?}");
    h.finish().await;
}

both_backends!(an_event_set_aside_keeps_nothing_its_failed_attempts_emitted);

/// A flood past the per-event limit (100) fails after its first 100 emits:
/// the reactor stops at that event, an administrator skips it, and nothing
/// the failed attempts emitted reaches the log (they rode on the skip's
/// commit before the emitter was cleared on rollback).
async fn an_event_set_aside_keeps_nothing_its_failed_attempts_emitted(backend: Backend) {
    let h = Harness::start(backend, &["fixture_relay"]).await;
    h.append("order-1", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    let body = h.append("order-2", Some(0), json!([{ "event_type": "order.placed", "data": { "flood": 101 } }])).await;
    let flood = body["positions"][0].as_i64().unwrap();
    h.wait_status("relay", PATIENCE, |s| s["stopped_at"] == flood).await;
    let (code, answer) = h.call("POST", &format!("/projections/relay/skip/{flood}"), None).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let body = h.append("order-3", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    let last = body["positions"][0].as_i64().unwrap();
    let status = h.wait_status("relay", PATIENCE, |s| s["position"].as_i64() >= Some(last)).await;
    let relayed = relayed(&log(&h).await);
    assert!(!relayed.contains_key(&flood), "the skipped event's emissions reached the log: {relayed:?}");
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    assert_eq!(status["reactor"]["emitted"], 2, "{status:#}");
}
