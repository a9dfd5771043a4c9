//! The change feed of read models (`GET /projections/{name}/changes`, ADR
//! 28) on both backends: clients disconnected at random and resumed with
//! `Last-Event-ID` get every change once, in order, and applying them to an
//! empty copy gives the read model (its table and its KV entries); a resume
//! point past the retention window answers 410 with where to resume after
//! reading afresh; a rebuild's cut-over sends `reset` first. A client that
//! joins after a rebuild caught up (whose catch-up is not in the history,
//! ADR 30) gets each row once as a snapshot, then the changes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Backend, Harness, sse};
use reel::testing::workload::{OrderWorkload, generate};
use serde_json::{Value, json};

const PROJECTIONS: [&str; 2] = ["order-summaries", "customer-stats"];

/// A server capturing the changes of both example projections.
async fn start(backend: Backend, retention: Option<Duration>) -> Harness {
    start_batched(backend, retention, None).await
}

/// The same, with batches of at most `batch` events.
async fn start_batched(backend: Backend, retention: Option<Duration>, batch: Option<usize>) -> Harness {
    Harness::start_with(backend, &["order_summaries", "customer_stats"], |c| {
        for name in PROJECTIONS {
            c.projections.entry(name.into()).or_default().changes = true;
        }
        if let Some(retention) = retention {
            c.changes_retention = retention;
        }
        if let Some(batch) = batch {
            c.batch.max_events = batch;
        }
    })
    .await
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A client's copy of a read model, built from the feed alone.
#[derive(Debug, Default, Clone, PartialEq)]
struct Replica {
    rows: BTreeMap<(String, String), Value>,
    kv: BTreeMap<String, Value>,
}

impl Replica {
    fn apply(&mut self, change: &Value) {
        let kind = change["kind"].as_str().unwrap();
        match change["table"].as_str() {
            Some(table) => {
                let key = (table.to_owned(), change["key"].to_string());
                match kind {
                    "insert" | "update" => drop(self.rows.insert(key, change["row"].clone())),
                    "delete" => drop(self.rows.remove(&key)),
                    other => panic!("a row change of kind {other}"),
                }
            }
            None => {
                let key = change["key"].as_str().unwrap().to_owned();
                match kind {
                    "set" => drop(self.kv.insert(key, change["value"].clone())),
                    "unset" => drop(self.kv.remove(&key)),
                    other => panic!("a KV change of kind {other}"),
                }
            }
        }
    }
}

/// What a client saw: every change's id and data, resets included.
#[derive(Default)]
struct Seen {
    ids: Vec<String>,
    /// Every change's data, in order.
    changes: Vec<Value>,
    copy: Replica,
    resets: usize,
    /// Each `complete` (a snapshot ended): its position, the copy then and
    /// how many changes came before it.
    completes: Vec<(i64, Replica, usize)>,
    connections: usize,
}

/// For a follower of what is already applied.
static ALWAYS: AtomicBool = AtomicBool::new(true);

/// Follows the feed of `name` from `start`, dropping the connection after
/// a random number of messages (at most `disconnect_every`) and resuming
/// with `Last-Event-ID`, until no change came for `quiet` once `done`.
async fn follow(
    h: &Harness,
    name: &str,
    start: Option<String>,
    disconnect_every: u64,
    seed: u64,
    quiet: Duration,
    done: &AtomicBool,
) -> Seen {
    let (mut seen, mut last_id, mut rng) = (Seen::default(), start, Rng(seed));
    let uri = format!("/projections/{name}/changes");
    loop {
        let (status, content_type, mut stream) = sse::open(&h.app, &uri, last_id.as_deref()).await;
        assert_eq!(status, StatusCode::OK, "{}", stream.text().await);
        assert_eq!(content_type, "text/event-stream");
        seen.connections += 1;
        let quota = 1 + rng.below(disconnect_every);
        let mut read = 0;
        while read < quota {
            let Ok(next) = tokio::time::timeout(quiet, stream.next()).await else {
                if done.load(Ordering::SeqCst) {
                    return seen;
                }
                continue;
            };
            read += 1;
            let message = next.expect("the feed stays open");
            last_id = message.id.clone().or(last_id);
            match message.event.as_str() {
                "message" => {
                    let change: Value = serde_json::from_str(&message.data).unwrap();
                    seen.ids.push(message.id.clone().unwrap());
                    seen.copy.apply(&change);
                    seen.changes.push(change);
                }
                "reset" => {
                    seen.resets += 1;
                    seen.copy = Replica::default();
                }
                "complete" => {
                    let data: Value = serde_json::from_str(&message.data).unwrap();
                    seen.completes.push((data["position"].as_i64().unwrap(), seen.copy.clone(), seen.changes.len()));
                }
                other => panic!("unexpected {other}: {}", message.data),
            }
        }
    }
}

/// The read models as HTTP reads give them, in the copy's shape.
async fn read_model(h: &Harness) -> Replica {
    let rows = h.order_rows().await;
    let rows = rows
        .into_values()
        .map(|row| {
            let key = serde_json::json!({ "order_id": row["order_id"] }).to_string();
            (("order_summaries".to_owned(), key), row)
        })
        .collect();
    Replica { rows, kv: kv_entries(h, "customer-stats").await }
}

/// Every KV entry of `name`, over HTTP.
async fn kv_entries(h: &Harness, name: &str) -> BTreeMap<String, Value> {
    let (mut out, mut after) = (BTreeMap::new(), None::<String>);
    loop {
        let mut uri = format!("/projections/{name}/kv?limit=1000");
        if let Some(a) = &after {
            uri.push_str(&format!("&after={}", common::urlencode(a)));
        }
        let page = h.get(&uri).await;
        for e in page["entries"].as_array().unwrap() {
            out.insert(e["key"].as_str().unwrap().to_owned(), e["value"].clone());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// Waits until both projections applied everything appended.
async fn caught_up(h: &Harness, last: i64) {
    for name in PROJECTIONS {
        h.wait_status(name, Duration::from_secs(60), |s| s["position"].as_i64().is_some_and(|c| c >= last)).await;
    }
}

/// The entries where two maps differ (for a readable failure).
fn differ<K: Ord + Clone + std::fmt::Debug>(a: &BTreeMap<K, Value>, b: &BTreeMap<K, Value>) -> Vec<String> {
    let keys: std::collections::BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(5)
        .map(|k| format!("{k:?}: {:?} != {:?}", a.get(k), b.get(k)))
        .collect()
}

/// Every change once and in order: ids strictly increasing within the namespace.
fn in_order(ids: &[String]) {
    let seqs: Vec<i64> = ids.iter().map(|id| id.split_once(':').unwrap().0.parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "changes doubled or out of order");
}

async fn clients_resumed_at_random_rebuild_the_read_model_from_the_changes(backend: Backend) {
    let h = start(backend, None).await;
    let events = generate(&OrderWorkload::new(400, 7));
    let quiet = Duration::from_secs(3);
    // One client never disconnects; two resume at random, from the start
    // and from a token of the first client.
    let done = AtomicBool::new(false);
    let appending = async {
        let last = h.append_workload(&events).await;
        caught_up(&h, last).await;
        done.store(true, Ordering::SeqCst);
    };
    let ((), whole, resumed, kv) = tokio::join!(
        appending,
        follow(&h, "order-summaries", None, u64::MAX, 1, quiet, &done),
        follow(&h, "order-summaries", None, 40, 2, quiet, &done),
        follow(&h, "customer-stats", None, 25, 3, quiet, &done),
    );
    let model = read_model(&h).await;
    assert!(!model.rows.is_empty() && !model.kv.is_empty());
    in_order(&whole.ids);
    assert!(
        whole.copy.rows == model.rows,
        "the table rebuilt from the changes: {:#?}",
        differ(&whole.copy.rows, &model.rows)
    );
    assert_eq!(resumed.ids, whole.ids, "every change once, in order, over {} connections", resumed.connections);
    assert_eq!(resumed.copy.rows, model.rows);
    assert!(kv.connections > 1);
    in_order(&kv.ids);
    assert_eq!(kv.copy.kv, model.kv, "the KV entries rebuilt from the changes");
    // A resume from a token in the middle gets exactly the rest.
    let middle = whole.ids.len() / 2;
    let rest =
        follow(&h, "order-summaries", Some(whole.ids[middle].clone()), 30, 4, Duration::from_secs(1), &ALWAYS).await;
    assert_eq!(rest.ids, whole.ids[middle + 1..]);
    h.finish().await;
}

async fn a_resume_point_past_retention_answers_410_and_where_to_read_on(backend: Backend) {
    let h = start(backend, Some(Duration::from_secs(2))).await;
    let events = generate(&OrderWorkload::new(200, 9));
    let last = h.append_workload(&events[..100]).await;
    caught_up(&h, last).await;
    let early = follow(&h, "order-summaries", None, u64::MAX, 1, Duration::from_millis(500), &ALWAYS).await;
    assert!(!early.ids.is_empty());
    // Past the window, later batches prune what came before.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut at = 100;
    let gone = loop {
        let last = h.append_workload(&events[at..at + 1]).await;
        at += 1;
        caught_up(&h, last).await;
        let (status, body) =
            h.call("GET", &format!("/projections/order-summaries/changes?after={}", early.ids[0]), None).await;
        if status == StatusCode::GONE {
            break body;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(Instant::now() < deadline, "the old changes were never pruned");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(gone["error"]["code"], "changes_gone", "{gone}");
    let position = gone["position"].as_i64().unwrap();
    // Read afresh at that position, then resume where the 410 says.
    let rows = h
        .get(&format!("/projections/order-summaries/tables/order_summaries?limit=10000&min_position={position}"))
        .await;
    let mut copy = Replica::default();
    for row in rows.as_array().unwrap() {
        let key = serde_json::json!({ "order_id": row["order_id"] }).to_string();
        copy.rows.insert(("order_summaries".to_owned(), key), row.clone());
    }
    // A few events, resumed at once: the changes after the resume point are
    // kept for the window (2 s) only, so a slow append of many events made
    // the resume itself meet a 410 on a loaded machine.
    let last = h.append_workload(&events[at..at + 10]).await;
    caught_up(&h, last).await;
    let resume = gone["resume_after"].as_str().unwrap().to_owned();
    let rest = follow(&h, "order-summaries", Some(resume), 20, 5, Duration::from_secs(1), &ALWAYS).await;
    for id in &rest.ids {
        assert!(id.split_once(':').unwrap().0.parse::<i64>().unwrap() > 0);
    }
    // From no resume point: the history no longer holds the start, so a
    // snapshot, then the history (ADR 30).
    let fresh = follow(&h, "order-summaries", None, 30, 6, Duration::from_secs(1), &ALWAYS).await;
    assert_eq!(fresh.copy.rows, read_model(&h).await.rows, "a snapshot where the history was pruned");
    // Applying the rest onto the fresh read gives the read model.
    let mut applied = copy;
    for (key, row) in rest.copy.rows {
        applied.rows.insert(key, row);
    }
    assert_eq!(applied.rows, read_model(&h).await.rows);
    h.finish().await;
}

async fn a_rebuild_sends_reset_before_the_new_namespace_s_changes(backend: Backend) {
    let h = start(backend, None).await;
    let events = generate(&OrderWorkload::new(100, 11));
    let last = h.append_workload(&events).await;
    caught_up(&h, last).await;
    let before = follow(&h, "order-summaries", None, u64::MAX, 1, Duration::from_millis(500), &ALWAYS).await;
    let serving = h.status("order-summaries").await["namespace"].clone();
    let (status, body) = h.call("POST", "/projections/order-summaries/rebuild", None).await;
    assert!(status.is_success(), "{body}");
    let old = before.ids.last().unwrap().split_once(':').unwrap().1.to_owned();
    h.wait_status("order-summaries", Duration::from_secs(60), |s| {
        s["namespace"] != serving && s["rebuild"].is_null() && s["position"].as_i64().is_some_and(|c| c >= last)
    })
    .await;
    let after = follow(&h, "order-summaries", before.ids.last().cloned(), 50, 6, Duration::from_secs(1), &ALWAYS).await;
    assert_eq!(after.resets, 1, "one reset at the cut-over");
    assert!(after.ids.iter().all(|id| !id.ends_with(&format!(":{old}"))), "then the new namespace's changes");
    assert_eq!(after.copy.rows, read_model(&h).await.rows, "which rebuild the read model from empty");
    h.finish().await;
}

/// The messages of each key in `changes`: a snapshot row at most once, and
/// only as the key's first message (a key changed since the snapshot began
/// comes as its changes alone).
fn each_row_once(changes: &[Value]) {
    let mut seen: BTreeMap<(Option<String>, String), usize> = BTreeMap::new();
    for change in changes {
        let key = (change["table"].as_str().map(str::to_owned), change["key"].to_string());
        let before = seen.entry(key.clone()).or_default();
        if change["snapshot"] == true {
            assert_eq!(*before, 0, "a snapshot row of {key:?} after other messages of it");
        }
        *before += 1;
    }
}

/// Rebuilds both projections and waits for their cut-over.
async fn rebuild_both(h: &Harness, last: i64) {
    for name in PROJECTIONS {
        let serving = h.status(name).await["namespace"].clone();
        let (status, body) = h.call("POST", &format!("/projections/{name}/rebuild"), None).await;
        assert!(status.is_success(), "{body}");
        h.wait_status(name, Duration::from_secs(60), |s| {
            s["namespace"] != serving && s["rebuild"].is_null() && s["position"].as_i64().is_some_and(|c| c >= last)
        })
        .await;
    }
}

async fn a_client_joining_after_a_rebuild_gets_each_row_once_then_the_changes(backend: Backend) {
    // Batches of 100 events: the rebuild has a catch-up to leave out of its
    // history (a first batch that reaches the head on an empty read model
    // is captured, ADR 30).
    let h = start_batched(backend, None, Some(100)).await;
    let events = generate(&OrderWorkload::new(1200, 13));
    let split = events.len() * 2 / 3;
    let last = h.append_workload(&events[..split]).await;
    caught_up(&h, last).await;
    // The rebuilt versions catch up on all of it before their history starts.
    rebuild_both(&h, last).await;
    let quiet = Duration::from_millis(1500);
    let orders = follow(&h, "order-summaries", None, u64::MAX, 1, quiet, &ALWAYS).await;
    let customers = follow(&h, "customer-stats", None, u64::MAX, 2, quiet, &ALWAYS).await;
    let model = read_model(&h).await;
    assert!(orders.copy.rows == model.rows, "the snapshot: {:#?}", differ(&orders.copy.rows, &model.rows));
    assert_eq!(customers.copy.kv, model.kv);
    // Each row and entry once: the read model, not the history of the rebuild.
    assert_eq!(orders.changes.len(), model.rows.len(), "one message per row");
    assert_eq!(customers.changes.len(), model.kv.len(), "one message per entry");
    for seen in [&orders, &customers] {
        let positions: Vec<i64> = seen.completes.iter().map(|c| c.0).collect();
        assert_eq!(positions, [last], "the snapshot ends with `complete` at the position it is read at");
    }
    // Now live changes, while these two read on and two more clients join,
    // all of them dropped at random and resumed.
    let done = AtomicBool::new(false);
    let appending = async {
        let last = h.append_workload(&events[split..]).await;
        caught_up(&h, last).await;
        done.store(true, Ordering::SeqCst);
    };
    let quiet = Duration::from_secs(3);
    let ((), orders_on, customers_on, joined_orders, joined_customers) = tokio::join!(
        appending,
        follow(&h, "order-summaries", orders.ids.last().cloned(), 40, 3, quiet, &done),
        follow(&h, "customer-stats", customers.ids.last().cloned(), 40, 4, quiet, &done),
        follow(&h, "order-summaries", None, 40, 5, quiet, &done),
        follow(&h, "customer-stats", None, 25, 6, quiet, &done),
    );
    let model = read_model(&h).await;
    let (mut orders_copy, mut customers_copy) = (orders.copy, customers.copy);
    orders_on.changes.iter().for_each(|c| orders_copy.apply(c));
    customers_on.changes.iter().for_each(|c| customers_copy.apply(c));
    assert!(orders_copy.rows == model.rows, "snapshot + changes: {:#?}", differ(&orders_copy.rows, &model.rows));
    assert_eq!(customers_copy.kv, model.kv);
    assert!(
        joined_orders.copy.rows == model.rows,
        "joined while changes came: {:#?}",
        differ(&joined_orders.copy.rows, &model.rows)
    );
    assert!(joined_orders.connections > 1 && joined_customers.connections > 1);
    assert_eq!(joined_customers.copy.kv, model.kv);
    for seen in [&joined_orders, &joined_customers] {
        each_row_once(&seen.changes);
        let ids: std::collections::HashSet<&String> = seen.ids.iter().collect();
        assert_eq!(ids.len(), seen.ids.len(), "no message twice");
    }
    h.finish().await;
}

/// The churn fixture's tables and their keys (`projections/fixtures/churn`).
const CHURN_TABLES: [(&str, &[&str]); 2] = [("items", &["id"]), ("pairs", &["a", "b"])];

/// A server capturing the changes of the churn fixture, in batches of at
/// most 100 events, with `tweak` on top.
async fn start_churn(backend: Backend, tweak: impl FnOnce(&mut reel::Config)) -> Harness {
    Harness::start_with(backend, &["fixture_churn"], |c| {
        c.projections.entry("churn".into()).or_default().changes = true;
        c.batch.max_events = 100;
        tweak(c);
    })
    .await
}

/// Appends `churn.tick` events `i` = `from`, `from + 1`, ... (`total` of
/// them) through `app`, 1 to 40 to an append, to 8 streams. Returns the
/// last position.
async fn append_ticks(app: &axum::Router, from: i64, total: i64, seed: u64) -> i64 {
    let (mut rng, mut i, mut last) = (Rng(seed), from, 0);
    while i < from + total {
        let n = (1 + rng.below(40) as i64).min(from + total - i);
        let events: Vec<Value> =
            (i..i + n).map(|i| json!({ "event_type": "churn.tick", "data": { "i": i } })).collect();
        let body = json!({ "stream_id": format!("churn-{}", rng.below(8)), "events": events });
        let (status, body) = common::oneshot(app, "POST", "/events", Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        last = body["positions"].as_array().unwrap().last().unwrap().as_i64().unwrap();
        i += n;
    }
    last
}

/// The first tick, alone, applied: the batch that reaches the head of the
/// log then finds the read model empty, so its history holds every change
/// from empty (ADR 30; a first batch of 100 would not reach the head).
async fn first_tick(h: &Harness) {
    let last = append_ticks(&h.app, 0, 1, 20).await;
    churn_caught_up(h, last).await;
}

/// Waits until the churn fixture applied everything through `last`.
async fn churn_caught_up(h: &Harness, last: i64) {
    h.wait_status("churn", Duration::from_secs(60), |s| s["position"].as_i64().is_some_and(|c| c >= last)).await;
}

/// The churn fixture's whole read model over HTTP, in the copy's shape:
/// every table (the list is checked, so none is left out) with its rows
/// keyed by primary key as the feed keys them, and every KV entry.
async fn churn_model(h: &Harness) -> Replica {
    let names: Vec<&str> = CHURN_TABLES.iter().map(|(t, _)| *t).collect();
    assert_eq!(h.get("/projections/churn/tables").await, json!(names), "every table is compared");
    let mut rows = BTreeMap::new();
    for (table, keys) in CHURN_TABLES {
        let read = h.get(&format!("/projections/churn/tables/{table}?limit=10000")).await;
        let read = read.as_array().unwrap();
        assert!(read.len() < 10_000, "read whole");
        for row in read {
            let key: serde_json::Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), row[*k].clone())).collect();
            rows.insert((table.to_owned(), Value::Object(key).to_string()), row.clone());
        }
    }
    Replica { rows, kv: kv_entries(h, "churn").await }
}

/// The copy equals the read model, table by table and in the KV entries.
fn same_model(copy: &Replica, model: &Replica, what: &str) {
    assert!(copy.rows == model.rows, "{what}: the rows differ: {:#?}", differ(&copy.rows, &model.rows));
    assert!(copy.kv == model.kv, "{what}: the KV entries differ: {:#?}", differ(&copy.kv, &model.kv));
}

/// The (table or `kv`, kind) pairs of `changes`, and how many of each.
fn kinds(changes: &[Value]) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for change in changes {
        let table = change["table"].as_str().unwrap_or("kv").to_owned();
        *out.entry((table, change["kind"].as_str().unwrap().to_owned())).or_default() += 1;
    }
    out
}

async fn a_feed_of_deletes_updates_and_rekeyed_rows_rebuilds_every_table_and_kv_entry(backend: Backend) {
    let h = start_churn(backend, |_| {}).await;
    first_tick(&h).await;
    // Two clients from empty while the ticks commit: one never drops its
    // connection, one is dropped at random and resumes with Last-Event-ID.
    let done = AtomicBool::new(false);
    let appending = async {
        let last = append_ticks(&h.app, 1, 2999, 21).await;
        churn_caught_up(&h, last).await;
        done.store(true, Ordering::SeqCst);
        last
    };
    let quiet = Duration::from_secs(3);
    let (last, whole, resumed) = tokio::join!(
        appending,
        follow(&h, "churn", None, u64::MAX, 1, quiet, &done),
        follow(&h, "churn", None, 60, 2, quiet, &done),
    );
    let model = churn_model(&h).await;
    assert!(model.rows.len() > 500 && !model.kv.is_empty(), "{} rows", model.rows.len());
    // The feed carries what the update hook would miss: deletes (many rows
    // to a statement), updates, a key changed, the table WITHOUT ROWID.
    let seen = kinds(&whole.changes);
    for (table, kind) in [
        ("kv", "set"),
        ("kv", "unset"),
        ("items", "insert"),
        ("items", "update"),
        ("items", "delete"),
        ("pairs", "insert"),
        ("pairs", "update"),
        ("pairs", "delete"),
    ] {
        assert!(seen.contains_key(&(table.into(), kind.into())), "no {kind} of {table} in the feed: {seen:?}");
    }
    in_order(&whole.ids);
    assert!(whole.completes.is_empty(), "a history from the empty read model is no snapshot");
    same_model(&whole.copy, &model, "the feed from empty, applied to an empty copy");
    assert!(resumed.connections > 1);
    assert_eq!(resumed.ids, whole.ids, "every change once, in order, over {} connections", resumed.connections);
    same_model(&resumed.copy, &model, "the feed resumed at random");

    // After a rebuild the history starts at the head (ADR 30): a client
    // from empty gets a snapshot (the pairs paged by their two-column key),
    // interleaved with the changes of ticks committing meanwhile; one with
    // a token of the old namespace gets `reset`, then the same.
    let serving = h.status("churn").await["namespace"].clone();
    let (status, body) = h.call("POST", "/projections/churn/rebuild", None).await;
    assert!(status.is_success(), "{body}");
    let before = model;
    let position = h
        .wait_status("churn", Duration::from_secs(60), |s| {
            s["namespace"] != serving && s["rebuild"].is_null() && s["position"].as_i64().is_some_and(|c| c >= last)
        })
        .await["position"]
        .as_i64()
        .unwrap();
    // On a quiet log the snapshot ends with `complete` at the position
    // the read model is at, and the copy is the read model then.
    let quiet_snapshot = follow(&h, "churn", None, u64::MAX, 5, Duration::from_millis(1500), &ALWAYS).await;
    assert_eq!(quiet_snapshot.completes.len(), 1, "one `complete`");
    let (at, copy, _) = &quiet_snapshot.completes[0];
    assert_eq!(*at, position, "the position the snapshot is complete at");
    same_model(copy, &before, "the copy when the snapshot is complete");
    assert!(quiet_snapshot.changes.iter().all(|c| c["snapshot"] == true), "nothing but the snapshot");
    let pairs = quiet_snapshot.changes.iter().filter(|c| c["table"] == "pairs").count();
    assert!(pairs > 500, "the pairs in more than one step (500 rows), paged by their two-column key: {pairs}");
    let done = AtomicBool::new(false);
    let appending = async {
        let last = append_ticks(&h.app, 3000, 1000, 22).await;
        churn_caught_up(&h, last).await;
        done.store(true, Ordering::SeqCst);
    };
    let ((), fresh, reset) = tokio::join!(
        appending,
        follow(&h, "churn", None, 80, 3, quiet, &done),
        follow(&h, "churn", whole.ids.last().cloned(), 80, 4, quiet, &done),
    );
    let model = churn_model(&h).await;
    assert_ne!(model, before, "the ticks after the rebuild changed the read model");
    same_model(&fresh.copy, &model, "a snapshot and the changes after it, applied to an empty copy");
    assert_eq!(reset.resets, 1, "one reset at the cut-over");
    same_model(&reset.copy, &model, "after the reset");
    for seen in [&fresh, &reset] {
        assert_eq!(seen.completes.len(), 1, "one `complete`, however often the client reconnected");
        let (_, _, sent) = &seen.completes[0];
        assert!(seen.changes[..*sent].iter().any(|c| c["snapshot"] == true), "the snapshot comes before it");
        assert!(seen.changes[*sent..].iter().all(|c| c["snapshot"].is_null()), "and only the history after it");
        each_row_once(&seen.changes);
        let ids: std::collections::HashSet<&String> = seen.ids.iter().collect();
        assert_eq!(ids.len(), seen.ids.len(), "no message twice");
    }
    h.finish().await;
}

async fn changes_not_captured_are_refused_and_bad_tokens_too(backend: Backend) {
    let h = Harness::start(backend, &["order_summaries"]).await;
    let (status, body) = h.call("GET", "/projections/order-summaries/changes", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("changes_not_captured")),
        "{body}"
    );
    let (status, _) = h.call("GET", "/projections/nothing/changes", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.finish().await;
    let h = start(backend, None).await;
    let (status, body) = h.call("GET", "/projections/order-summaries/changes?after=12", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    h.finish().await;
}

/// Every committed event's position, in delivery order, paging `GET /events`.
async fn log_positions(h: &Harness) -> Vec<i64> {
    let (mut out, mut after) = (Vec::new(), String::new());
    loop {
        let page = h.get(&format!("/events?limit=1000&after={}", common::urlencode(&after))).await;
        let events = page["events"].as_array().unwrap();
        out.extend(events.iter().map(|e| e["position"].as_i64().unwrap()));
        after = page["next"].as_str().unwrap().to_owned();
        if events.len() < 1000 {
            return out;
        }
    }
}

/// Follows `GET /events/live` from `start` until `want` events came,
/// dropping the connection after a random number of messages (at most
/// `disconnect_every`) and resuming with `Last-Event-ID`: the positions.
async fn follow_live(h: &Harness, start: Option<String>, want: usize, disconnect_every: u64, seed: u64) -> Vec<i64> {
    let (mut got, mut last_id, mut rng) = (Vec::new(), start, Rng(seed));
    while got.len() < want {
        let (status, _, mut stream) = sse::open(&h.app, "/events/live", last_id.as_deref()).await;
        assert_eq!(status, StatusCode::OK, "{}", stream.text().await);
        let quota = 1 + rng.below(disconnect_every);
        for _ in 0..quota {
            if got.len() == want {
                break;
            }
            let next = tokio::time::timeout(Duration::from_secs(30), stream.next()).await;
            let Ok(message) = next else { panic!("the live feed stopped after {} of {want} events", got.len()) };
            let message = message.expect("the live feed stays open");
            assert_eq!(message.event, "message", "{message:?}");
            last_id = message.id.clone().or(last_id);
            got.push(serde_json::from_str::<Value>(&message.data).unwrap()["position"].as_i64().unwrap());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_does_not_own_the_projection_serves_its_changes_and_the_live_log() {
    let a = start_churn(Backend::Postgres, |_| {}).await;
    let url = a.config.database_url.clone().unwrap();
    a.wait_status("churn", Duration::from_secs(30), |s| s["state"] == "running").await;
    let b = start_churn(Backend::Postgres, |c| c.database_url = Some(url.clone())).await;
    b.wait_status("churn", Duration::from_secs(30), |s| s["state"] == "standby").await;
    // A client of the owner reads the first changes; the log is read there too.
    first_tick(&a).await;
    let last = append_ticks(&a.app, 1, 499, 31).await;
    churn_caught_up(&a, last).await;
    let early = follow(&a, "churn", None, u64::MAX, 1, Duration::from_millis(800), &ALWAYS).await;
    assert!(!early.ids.is_empty());
    let page = a.get("/events?limit=200").await;
    let live_start = page["next"].as_str().unwrap().to_owned();
    // While the owner applies more, clients of the other process resume
    // with the owner's tokens (and one starts from empty), dropped at random.
    let done = AtomicBool::new(false);
    let appending = async {
        let last = append_ticks(&a.app, 500, 1500, 32).await;
        churn_caught_up(&a, last).await;
        done.store(true, Ordering::SeqCst);
    };
    let quiet = Duration::from_secs(3);
    let ((), resumed, fresh, live) = tokio::join!(
        appending,
        follow(&b, "churn", early.ids.last().cloned(), 40, 2, quiet, &done),
        follow(&b, "churn", None, 40, 3, quiet, &done),
        follow_live(&b, Some(live_start), 2000 - 200, 300, 4),
    );
    assert_eq!(b.status("churn").await["state"], "standby", "the other process never owned the projection");
    // The owner's feed from empty is the reference.
    let model = churn_model(&a).await;
    let whole = follow(&a, "churn", None, u64::MAX, 5, Duration::from_secs(1), &ALWAYS).await;
    same_model(&whole.copy, &model, "the owner's feed");
    assert!(resumed.connections > 1 && fresh.connections > 1);
    assert_eq!(resumed.ids, whole.ids[early.ids.len()..], "resumed at the other process: every change once, in order");
    assert_eq!(fresh.ids, whole.ids, "from empty at the other process");
    same_model(&fresh.copy, &model, "the other process's feed from empty");
    let mut copy = early.copy;
    resumed.changes.iter().for_each(|c| copy.apply(c));
    same_model(&copy, &model, "the owner's changes, then the other process's");
    let log = log_positions(&a).await;
    assert_eq!(log.len(), 2000);
    assert!(live == log[200..], "the live log at the other process: every event once, in order");
    a.server.shutdown().await;
    b.finish().await;
}

both_backends!(
    clients_resumed_at_random_rebuild_the_read_model_from_the_changes,
    a_resume_point_past_retention_answers_410_and_where_to_read_on,
    a_rebuild_sends_reset_before_the_new_namespace_s_changes,
    a_client_joining_after_a_rebuild_gets_each_row_once_then_the_changes,
    changes_not_captured_are_refused_and_bad_tokens_too,
    a_feed_of_deletes_updates_and_rekeyed_rows_rebuilds_every_table_and_kv_entry,
);

/// Resident memory of this process (the server runs in it), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// A measurement, not a CI test (`cargo test -p reel --test changes --
/// --ignored --nocapture stalled`, on each backend): 50 change-feed clients
/// that stop reading after their first change while 20,000 ticks of the
/// churn fixture commit (some 60,000 changes); prints the resident memory
/// as it goes. The feed reads the history at the client's pace (ADR 28): a
/// stalled client holds at most a page, and is never cut.
async fn stalled_change_feed_clients_keep_the_servers_memory_flat(backend: Backend) {
    let h = start_churn(backend, |_| {}).await;
    first_tick(&h).await;
    // Tick 0 leaves nothing (what it writes it deletes): a few more.
    churn_caught_up(&h, append_ticks(&h.app, 1, 10, 39).await).await;
    let mut streams = Vec::new();
    // `REEL_STALLED_CLIENTS=0` for the same run without them.
    let clients = std::env::var("REEL_STALLED_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    for _ in 0..clients {
        let (_, _, mut stream) = sse::open(&h.app, "/projections/churn/changes", None).await;
        stream.next().await.unwrap();
        streams.push(stream);
    }
    eprintln!("before: {:.0} MiB", rss_mib());
    for round in 0..10 {
        let last = append_ticks(&h.app, 11 + round * 2000, 2000, 40 + round as u64).await;
        churn_caught_up(&h, last).await;
        eprintln!("after {} ticks: {:.0} MiB", (round + 1) * 2000, rss_mib());
    }
    // Each stalled client reads on from where it stopped.
    for stream in &mut streams {
        assert_eq!(stream.next().await.unwrap().event, "message");
    }
    eprintln!("all {clients} read on: {:.0} MiB", rss_mib());
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn stalled_change_feed_clients_keep_the_servers_memory_flat_on_sqlite() {
    stalled_change_feed_clients_keep_the_servers_memory_flat(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn stalled_change_feed_clients_keep_the_servers_memory_flat_on_postgres() {
    stalled_change_feed_clients_keep_the_servers_memory_flat(Backend::Postgres).await;
}
