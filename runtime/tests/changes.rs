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
use serde_json::Value;

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
    let h = start(backend, Some(Duration::from_secs(1))).await;
    let events = generate(&OrderWorkload::new(200, 9));
    let last = h.append_workload(&events[..100]).await;
    caught_up(&h, last).await;
    let early = follow(&h, "order-summaries", None, u64::MAX, 1, Duration::from_millis(500), &ALWAYS).await;
    assert!(!early.ids.is_empty());
    // Past the window, later batches prune what came before.
    tokio::time::sleep(Duration::from_millis(2500)).await;
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
    let last = h.append_workload(&events[at..]).await;
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

both_backends!(
    clients_resumed_at_random_rebuild_the_read_model_from_the_changes,
    a_resume_point_past_retention_answers_410_and_where_to_read_on,
    a_rebuild_sends_reset_before_the_new_namespace_s_changes,
    a_client_joining_after_a_rebuild_gets_each_row_once_then_the_changes,
    changes_not_captured_are_refused_and_bad_tokens_too,
);
