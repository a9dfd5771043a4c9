//! Shadow runs (ADR 48): a module built beside the serving version, which
//! keeps serving (events arrive all along here); the two read models
//! compared at one position; promoted (reads switch) or discarded (nothing
//! stays); a same-version hot swap under `swap=shadow` taken only when the
//! shadow shows the same read model.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::{Backend, Harness};

const NAME: &str = "order-summaries";

/// An order's events: (order id, stream, version, type, data).
type OrderEvent = (String, String, i64, &'static str, Value);

/// `orders` orders, each placed, then shipped or cancelled (every third) or
/// left placed (every fifth), follow-ups a few orders later.
fn orders(from: usize, orders: usize) -> Vec<OrderEvent> {
    let mut events = Vec::new();
    let mut later = Vec::new();
    for i in from..from + orders {
        let id = format!("o-{i:04}");
        let stream = format!("order-{id}");
        let items = json!([{ "productId": "p-1", "quantity": i % 4 + 1, "price": 2.5 }]);
        let data = json!({ "orderId": id, "customerId": format!("c-{}", i % 7), "items": items, "total": 2.5 });
        events.push((id.clone(), stream.clone(), 1, "order.placed", data));
        if i % 5 != 0 {
            let follow_up = if i % 3 == 0 {
                (id.clone(), stream, 2, "order.cancelled", json!({ "orderId": id, "reason": "changed mind" }))
            } else {
                (id.clone(), stream, 2, "order.shipped", json!({ "orderId": id, "trackingNumber": format!("t-{i}") }))
            };
            later.push(follow_up);
        }
        if later.len() > 3 {
            events.push(later.remove(0));
        }
    }
    events.extend(later);
    events
}

/// Append `events` one at a time: their positions, by order id for the
/// cancellations.
async fn append(app: &axum::Router, events: &[OrderEvent]) -> Vec<(i64, String, &'static str)> {
    let mut appended = Vec::new();
    for (id, stream, version, kind, data) in events {
        let body = json!({ "stream_id": stream, "expected_version": version - 1, "events": [{ "event_type": kind, "data": data }] });
        let (status, answer) = common::oneshot(app, "POST", "/events", Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        appended.push((answer["positions"][0].as_i64().unwrap(), id.clone(), *kind));
    }
    appended
}

/// Events appended one by one, a little apart, until `stop` (or the last).
fn keep_appending(
    h: &Harness,
    events: Vec<OrderEvent>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(i64, String, &'static str)>> {
    let app = h.app.clone();
    tokio::spawn(async move {
        let mut appended = Vec::new();
        for event in events {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            appended.extend(append(&app, std::slice::from_ref(&event)).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        appended
    })
}

/// `POST /projections/{name}/shadow` with a component's bytes.
async fn send_shadow(h: &Harness, crate_name: &str) -> (StatusCode, Value) {
    let bytes = std::fs::read(common::guest(crate_name)).unwrap();
    let request = Request::builder()
        .method("POST")
        .uri(format!("/projections/{NAME}/shadow"))
        .header("content-type", "application/wasm")
        .body(Body::from(bytes))
        .unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The shadow's status once it has been compared.
async fn compared(h: &Harness) -> Value {
    let status = h
        .wait_status(NAME, Duration::from_secs(60), |s| {
            let state = &s["shadow"]["comparison"]["state"];
            assert_ne!(state, "failed", "{s:#}");
            state == "compared"
        })
        .await;
    status["shadow"].clone()
}

/// Every difference, read `limit` at a time: the position they are at, and
/// the differences.
async fn differences(h: &Harness, limit: usize) -> (i64, Vec<Value>) {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = h.get(&format!("/projections/{NAME}/shadow/diff?after={after}&limit={limit}")).await;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        all.extend(items.iter().cloned());
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => {
                assert_eq!(page["differences"].as_u64().unwrap() as usize, all.len());
                return (page["position"].as_i64().unwrap(), all);
            }
        }
    }
}

/// A server running `order-summaries` over 120 orders, caught up; the
/// events of 80 more to append while a shadow runs.
async fn serving(
    backend: Backend,
    tweak: impl FnOnce(&mut reel::Config),
) -> (Harness, Vec<(i64, String, &'static str)>, Vec<OrderEvent>) {
    let h = Harness::start_with(backend, &["order_summaries"], tweak).await;
    let appended = append(&h.app, &orders(0, 120)).await;
    let last = appended.iter().map(|a| a.0).max().unwrap();
    h.wait_status(NAME, Duration::from_secs(30), |s| s["position"].as_i64() >= Some(last)).await;
    (h, appended, orders(120, 80))
}

/// The orders whose cancellation is at or before `position`.
fn cancelled_by(appended: &[(i64, String, &'static str)], position: i64) -> BTreeSet<String> {
    appended.iter().filter(|(p, _, kind)| *p <= position && *kind == "order.cancelled").map(|a| a.1.clone()).collect()
}

async fn a_renamed_status_lists_exactly_the_rows_it_changes(backend: Backend) {
    let (h, mut appended, more) = serving(backend, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let appender = keep_appending(&h, more, Arc::clone(&stop));
    let (status, started) = send_shadow(&h, "fixture_summaries_renamed").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["shadow"], format!("{NAME}@1+g1"));
    let shadow = compared(&h).await;
    let (position, found) = differences(&h, 7).await;
    stop.store(true, Ordering::Relaxed);
    appended.extend(appender.await.unwrap());
    assert_eq!(shadow["comparison"]["position"], position);
    let expected = cancelled_by(&appended, position);
    assert!(expected.len() > 10, "{expected:?}");
    let keys: BTreeSet<String> = found.iter().map(|d| d["key"]["order_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(keys, expected, "exactly the orders cancelled by position {position}");
    assert_eq!(found.len(), expected.len(), "each once");
    for d in &found {
        assert_eq!(
            (d["kind"].as_str(), d["table"].as_str(), d["change"].as_str()),
            (Some("row"), Some("order_summaries"), Some("changed"))
        );
        let (mut serving, mut shadow) = (d["serving"].clone(), d["shadow"].clone());
        assert_eq!((serving["status"].as_str(), shadow["status"].as_str()), (Some("cancelled"), Some("canceled")));
        serving["status"] = Value::Null;
        shadow["status"] = Value::Null;
        assert_eq!(serving, shadow, "only the status differs");
    }
    // The serving version kept serving: its reads are its own.
    let rows = h.order_rows().await;
    assert!(rows.values().all(|r| r["status"] != "canceled"));
    h.finish().await;
}

async fn an_unchanged_rebuild_shows_no_difference(backend: Backend) {
    let (h, _, more) = serving(backend, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let appender = keep_appending(&h, more, Arc::clone(&stop));
    let (status, started) = send_shadow(&h, "order_summaries").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let shadow = compared(&h).await;
    let (position, found) = differences(&h, 100).await;
    stop.store(true, Ordering::Relaxed);
    let appended = appender.await.unwrap();
    assert_eq!(found, Vec::<Value>::new(), "at {position}");
    assert_eq!(shadow["comparison"]["differences"], 0);
    assert!(position >= 200, "the comparison is at {position}: after the first 200 events");
    // Compared again, later: still none, and no further back.
    let last = appended.iter().map(|a| a.0).max().unwrap_or(position);
    let (code, again) = h.call("POST", &format!("/projections/{NAME}/shadow/compare"), None).await;
    assert_eq!(code, StatusCode::OK, "{again}");
    assert_eq!(again["differences"], 0);
    assert!(again["position"].as_i64().unwrap() >= last.max(position), "{again} after {last}");
    h.finish().await;
}

async fn a_promoted_shadow_serves_the_reads(backend: Backend) {
    let (h, _, _) = serving(backend, |_| {}).await;
    let before = h.order_rows().await;
    let (status, _) = send_shadow(&h, "fixture_summaries_renamed").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    compared(&h).await;
    let (code, promoted) = h.call("POST", &format!("/projections/{NAME}/shadow/promote"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{promoted}");
    assert_eq!(promoted["promoted"], format!("{NAME}@1+g1"));
    let status = h.wait_status(NAME, Duration::from_secs(30), |s| s["namespace"] == format!("{NAME}@1+g1")).await;
    assert!(status["shadow"].is_null(), "{status:#}");
    let after = h.order_rows().await;
    assert_eq!(after.len(), before.len());
    for (id, row) in &before {
        let status = if row["status"] == "cancelled" { "canceled" } else { row["status"].as_str().unwrap() };
        assert_eq!(after[id]["status"], status, "{id}");
    }
    // The promoted module is the one the modules folder holds now: a restart
    // serves it, and rebuilds nothing.
    let hash = status["module"]["hash"].as_str().unwrap().to_owned();
    let file = h.config.modules_dir.join("order_summaries.wasm");
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(common::guest("fixture_summaries_renamed")).unwrap());
    let h = h.restart().await;
    let status = h.wait_status(NAME, Duration::from_secs(30), |s| s["state"] == "running").await;
    assert_eq!(
        (status["namespace"].as_str(), status["module"]["hash"].as_str()),
        (Some(&*format!("{NAME}@1+g1")), Some(&*hash))
    );
    assert!(status["rebuild"].is_null() && status["shadow"].is_null(), "{status:#}");
    h.finish().await;
}

/// What reel keeps, as a list of names: the data folder's files, and on
/// PostgreSQL its schemas, roles and the rows of its own tables.
async fn reels_things(h: &Harness) -> Vec<String> {
    fn files(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            // The compile cache is a cache; SQLite's -wal and -shm files come and go.
            if path.ends_with("compiled")
                || path.to_string_lossy().ends_with("-shm")
                || path.to_string_lossy().ends_with("-wal")
            {
                continue;
            }
            out.push(path.display().to_string());
            if path.is_dir() {
                files(&path, out);
            }
        }
    }
    let mut out = Vec::new();
    files(&h.config.data_dir, &mut out);
    if h.backend == Backend::Postgres {
        let client = h.postgres().await;
        for row in client
            .query(
                "SELECT 'schema ' || nspname FROM pg_namespace UNION ALL SELECT 'role ' || rolname FROM pg_roles",
                &[],
            )
            .await
            .unwrap()
        {
            out.push(row.get(0));
        }
        let tables = client.query("SELECT tablename FROM pg_tables WHERE schemaname = 'reel'", &[]).await.unwrap();
        for table in tables {
            let table: String = table.get(0);
            let rows = client.query(&format!("SELECT t::text FROM reel.\"{table}\" t"), &[]).await.unwrap();
            out.extend(rows.iter().map(|r| format!("reel.{table}: {}", r.get::<_, String>(0))));
        }
    }
    out.sort();
    out
}

async fn a_discarded_shadow_leaves_nothing(backend: Backend) {
    let (h, _, _) = serving(backend, |_| {}).await;
    let before = reels_things(&h).await;
    let rows = h.order_rows().await;
    let (status, _) = send_shadow(&h, "fixture_summaries_renamed").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    compared(&h).await;
    let during = reels_things(&h).await;
    assert_ne!(during, before, "the shadow has a namespace and a module file");
    // Roles belong to the server, which tests running beside this one share:
    // the shadow's are the ones that came with it and that this database's
    // catalog names.
    let roles =
        |things: &[String]| -> BTreeSet<String> { things.iter().filter(|t| t.starts_with("role ")).cloned().collect() };
    let catalog: Vec<&String> = during.iter().filter(|t| t.starts_with("reel.namespaces: ")).collect();
    let its_roles: BTreeSet<String> = roles(&during)
        .difference(&roles(&before))
        .filter(|role| catalog.iter().any(|row| row.contains(&role["role ".len()..])))
        .cloned()
        .collect();
    assert_eq!(its_roles.is_empty(), backend == Backend::Sqlite, "{its_roles:?}");
    let others =
        |things: Vec<String>| -> Vec<String> { things.into_iter().filter(|t| !t.starts_with("role ")).collect() };
    let (code, discarded) = h.call("DELETE", &format!("/projections/{NAME}/shadow"), None).await;
    assert_eq!(code, StatusCode::OK, "{discarded}");
    assert_eq!(discarded["discarded"], format!("{NAME}@1+g1"));
    let after = reels_things(&h).await;
    assert!(roles(&after).is_disjoint(&its_roles), "{its_roles:?} stay");
    assert_eq!(others(after), others(before));
    assert!(h.status(NAME).await["shadow"].is_null());
    assert_eq!(h.order_rows().await, rows);
    let (code, gone) = h.call("GET", &format!("/projections/{NAME}/shadow/diff"), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{gone}");
    h.finish().await;
}

async fn a_same_version_swap_waits_for_an_empty_diff(backend: Backend) {
    let (h, _, _) = serving(backend, |config| {
        config.projections.entry(NAME.into()).or_default().set("swap", "shadow").unwrap();
    })
    .await;
    let serving_hash = h.status(NAME).await["module"]["hash"].as_str().unwrap().to_owned();
    let rows = h.order_rows().await;
    // A build that renames a status: refused, the serving code stays.
    h.install("fixture_summaries_renamed", "order_summaries.wasm");
    let deadline = Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        let modules = h.get("/modules").await;
        let file = modules
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with("order_summaries.wasm"))
            .unwrap()
            .clone();
        if let Some(error) = file["error"].as_str() {
            break error.to_owned();
        }
        assert!(Instant::now() < deadline, "no refusal: {modules:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refusal.starts_with("hot swap refused (swap=shadow): the shadow run of this build differs"), "{refusal}");
    let status = h.status(NAME).await;
    assert_eq!(status["module_error"], refusal.as_str());
    assert_eq!(status["module"]["hash"], serving_hash.as_str());
    assert_eq!(h.order_rows().await, rows);
    // A build with the same read model: taken, the shadow gone.
    h.install("fixture_summaries_refactored", "order_summaries.wasm");
    let refactored = h.get("/modules").await; // (the hash appears once loaded)
    let _ = refactored;
    let status = h
        .wait_status(NAME, Duration::from_secs(60), |s| {
            s["module"]["hash"] != serving_hash.as_str() && s["shadow"].is_null() && s["module_error"].is_null()
        })
        .await;
    assert_eq!(status["namespace"], format!("{NAME}@1"), "a hot swap: the same namespace, the new code");
    let modules = h.get("/modules").await;
    let file = modules
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with("order_summaries.wasm"))
        .unwrap();
    assert!(file["error"].is_null(), "{file:#}");
    assert_eq!(file["hash"], status["module"]["hash"]);
    h.append("order-o-9999", Some(0), json!([{ "event_type": "order.placed", "data": { "orderId": "o-9999", "customerId": "c-1", "items": [], "total": 0.0 } }])).await;
    h.wait_status(NAME, Duration::from_secs(30), |s| s["lag"] == 0).await;
    assert!(h.order_rows().await.contains_key("o-9999"), "the swapped code applies new events");
    h.finish().await;
}

both_backends!(
    a_renamed_status_lists_exactly_the_rows_it_changes,
    an_unchanged_rebuild_shows_no_difference,
    a_promoted_shadow_serves_the_reads,
    a_discarded_shadow_leaves_nothing,
    a_same_version_swap_waits_for_an_empty_diff,
);
