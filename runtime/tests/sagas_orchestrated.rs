//! The orchestrated saga (issue 22, item 6; docs/adr/45-orchestrated-saga.md):
//! `order-fulfillment` (projections/order-fulfillment), a process manager,
//! asks `warehouse`, `billing` and `carrier` for the steps reserve-inventory,
//! process-payment, create-shipment; a failed step has the completed ones
//! compensated in reverse order, one after the other; billing leaves some
//! charges unanswered and the manager's durable timer fails them.
//!
//! Orders are made here with the participants' rules restated (a line of more
//! than 5 units is a stock-out; billing does not answer an amount whose whole
//! part ends in 7 and declines over 400.00; the carrier fails more than 4 line
//! items), appended over HTTP, and checked after quiescence against the log.
//! `REEL_ORCHESTRATED_ORDERS` sets how many (300 by default; docs/guide.md gives the
//! 2,000-order run).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Backend, Harness};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(300);
const REACTORS: [&str; 4] = ["order-fulfillment", "warehouse", "billing", "carrier"];

/// An order of the test: its lines as (product, quantity, price in cents).
struct Order {
    id: String,
    lines: Vec<(String, i64, i64)>,
    cents: i64,
}

impl Order {
    /// The outcome the participants' rules give, when billing answers in time.
    fn expected(&self) -> &'static str {
        if self.lines.iter().any(|l| l.1 > 5) {
            "stock-out"
        } else if self.cents / 100 % 10 == 7 {
            "payment-timeout"
        } else if self.cents > 40_000 {
            "payment-declined"
        } else if self.lines.len() > 4 {
            "shipment-failed"
        } else {
            "shipped"
        }
    }
}

/// `n` orders from a xorshift generator: 1 to 6 lines, mostly 1 to 5 units,
/// prices 1.00 to 45.00.
fn orders(n: usize) -> Vec<Order> {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    (0..n)
        .map(|i| {
            let lines: Vec<(String, i64, i64)> = (0..1 + next(6))
                .map(|_| {
                    let quantity = (if next(20) == 0 { 6 + next(2) } else { 1 + next(5) }) as i64;
                    (format!("p-{}", next(30)), quantity, 100 + next(4400) as i64)
                })
                .collect();
            let cents = lines.iter().map(|l| l.1 * l.2).sum();
            Order { id: format!("f{i:05}"), lines, cents }
        })
        .collect()
}

fn saga_orders() -> usize {
    std::env::var("REEL_ORCHESTRATED_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

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

/// `order-fulfillment`'s query `name` with `args`.
async fn query(h: &Harness, name: &str, args: Value) -> Value {
    let args = common::urlencode(&args.to_string());
    h.get(&format!("/projections/order-fulfillment/query/{name}?args={args}")).await
}

/// Every saga summary, through the `sagas` query, by order id.
async fn sagas(h: &Harness) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut after = Value::Null;
    loop {
        let page = query(h, "sagas", json!({ "limit": 1000, "after": after })).await;
        for saga in page["sagas"].as_array().unwrap() {
            out.insert(saga["orderId"].as_str().unwrap().to_owned(), saga.clone());
        }
        if page["next"].is_null() {
            return out;
        }
        after = page["next"].clone();
    }
}

/// Every KV entry of `projection` under `prefix`, over HTTP.
async fn kv(h: &Harness, projection: &str, prefix: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut after = String::new();
    loop {
        let page = h.get(&format!("/projections/{projection}/kv?prefix={prefix}&limit=1000{after}")).await;
        for e in page["entries"].as_array().unwrap() {
            out.insert(e["key"].as_str().unwrap().to_owned(), e["value"].clone());
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={}", common::urlencode(next)),
            None => return out,
        }
    }
}

/// Wait until `ended` sagas have ended, every reactor has handled the whole
/// log, no timer is pending and the log stays the same for a while.
async fn quiesce(h: &Harness, ended: i64) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let outcomes = query(h, "outcomes", Value::Null).await;
        let done: i64 = ["shipped", "stock-out", "payment-declined", "payment-timeout", "shipment-failed", "cancelled"]
            .iter()
            .map(|o| outcomes[o].as_i64().unwrap_or(0))
            .sum();
        assert!(Instant::now() < deadline, "{done} of {ended} sagas ended: {outcomes}");
        if done >= ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut before = 0;
    loop {
        let events = log(h).await;
        let head = events.last().and_then(|e| e["position"].as_i64()).unwrap_or(0);
        let mut settled = events.len() == before;
        for name in REACTORS {
            let status = h.status(name).await;
            assert_eq!(status["state"], "running", "{status:#}");
            let reactor = &status["reactor"];
            settled &= status["position"] == head
                && reactor["timers_pending"] == 0
                && reactor["outbox"].as_u64().unwrap_or(0) == 0;
        }
        assert!(Instant::now() < deadline, "the log does not settle");
        if settled {
            return events;
        }
        before = events.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The events of each order (every event of the saga carries its `orderId`),
/// in log order.
fn by_order(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        if let Some(order_id) = e["data"]["orderId"].as_str() {
            out.entry(order_id.to_owned()).or_default().push(e.clone());
        }
    }
    out
}

fn first<'a>(events: &'a [Value], event_type: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["event_type"] == event_type)
}

fn all<'a>(events: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event_type"] == event_type).collect()
}

/// The compensation requests of a saga, in log order, but for the refund of
/// a charge that came after the timeout.
fn compensations(events: &[Value]) -> Vec<&'static str> {
    events
        .iter()
        .filter_map(|e| match e["event_type"].as_str().unwrap() {
            "fulfillment.cancel-shipment-requested" => Some("cancel-shipment"),
            "fulfillment.refund-requested" => Some("refund-payment"),
            "fulfillment.release-requested" => Some("release-inventory"),
            _ => None,
        })
        .collect()
}

/// Each compensation request was sent when the one before it was answered:
/// it is caused by that answer (the first by `start`, the failure).
fn assert_one_after_the_other(id: &str, events: &[Value], start: Option<&str>, chain: &[(&str, &str)]) {
    let mut cause = start.map(|start| first(events, start).unwrap_or_else(|| panic!("{id}: no {start}: {events:#?}")));
    for (request, answer) in chain {
        let sent = first(events, request).unwrap_or_else(|| panic!("{id}: no {request}: {events:#?}"));
        if let Some(cause) = cause {
            assert_eq!(sent["metadata"]["causation_id"], cause["position"], "{id}: {request} not caused by {cause}");
        }
        let answered = first(events, answer).unwrap_or_else(|| panic!("{id}: no {answer}: {events:#?}"));
        assert!(answered["position"].as_i64() > sent["position"].as_i64(), "{id}: {answer} before its request");
        cause = Some(answered);
    }
}

both_backends!(each_orchestrated_saga_ends_once_compensating_in_reverse);

/// N orders through the saga: every order has exactly one outcome, the
/// one the rules give (a charge answered after the timeout is a timeout,
/// refunded); every outcome occurs; compensations run in reverse order, each
/// after the previous one's answer; the payment timers fire once with the
/// saga's correlation id; nothing is emitted twice; stock and ledger equal
/// a fold over the shipped orders. Then customers cancel shipped orders:
/// cancel-shipment, refund, release, in that order.
async fn each_orchestrated_saga_ends_once_compensating_in_reverse(backend: Backend) {
    let orders = orders(saga_orders());
    let h = Harness::start(backend, &["order_fulfillment", "warehouse", "billing", "carrier"]).await;
    for name in REACTORS {
        h.wait_status(name, PATIENCE, |s| s["state"] == "running").await;
    }
    let started = Instant::now();
    let mut placed_at = BTreeMap::new();
    for o in &orders {
        let items: Vec<Value> = o
            .lines
            .iter()
            .map(|(p, q, c)| json!({ "productId": p, "quantity": q, "price": *c as f64 / 100.0 }))
            .collect();
        let data = json!({ "orderId": o.id, "customerId": "c-1", "items": items, "total": o.cents as f64 / 100.0 });
        let body = h
            .append(&format!("order-{}", o.id), Some(0), json!([{ "event_type": "order.placed", "data": data }]))
            .await;
        placed_at.insert(o.id.clone(), body["positions"][0].as_i64().unwrap());
    }
    let events = quiesce(&h, orders.len() as i64).await;
    eprintln!("{} orders, {} events: quiet after {:.1?} ({backend:?})", orders.len(), events.len(), started.elapsed());

    let per_order = by_order(&events);
    let summaries = sagas(&h).await;
    let mut seen = BTreeSet::new();
    let mut late = 0;
    let mut shipped = Vec::new();
    for o in &orders {
        let placed = placed_at[&o.id];
        let saga = &per_order[&o.id];
        let summary = &summaries[&o.id];
        let ends: Vec<&Value> = saga
            .iter()
            .filter(|e| matches!(e["event_type"].as_str(), Some("fulfillment.completed" | "fulfillment.failed")))
            .collect();
        assert_eq!(ends.len(), 1, "{}: one outcome: {saga:#?}", o.id);
        let outcome = ends[0]["data"]["outcome"].as_str().unwrap();
        assert_eq!(summary["outcome"], outcome, "{}", o.id);
        assert_eq!(summary["saga"], placed, "{}: the saga is keyed by its correlation id", o.id);
        for e in &saga[1..] {
            assert_eq!(e["metadata"]["correlation_id"], placed, "{}: reel carries the correlation: {e:#}", o.id);
        }
        seen.insert(outcome.to_owned());
        let timers = all(saga, "fulfillment.payment-timed-out");
        assert!(timers.len() <= 1, "{}: the timer fired once: {timers:#?}", o.id);
        for timer in &timers {
            assert_eq!(
                timer["metadata"]["correlation_id"], placed,
                "{}: the timer's event keeps the saga's correlation",
                o.id
            );
            assert_eq!(timer["metadata"]["timer"], format!("payment-timeout/{}", o.id));
            let reserved = first(saga, "warehouse.reserved").unwrap();
            assert_eq!(timer["metadata"]["causation_id"], reserved["position"], "{}", o.id);
        }
        let billed =
            saga.iter().find(|e| matches!(e["event_type"].as_str(), Some("billing.charged" | "billing.declined")));
        let expected = o.expected();
        if outcome != expected {
            // Only a charge answered after the timer fired may change it.
            assert!(
                expected != "stock-out" && outcome == "payment-timeout",
                "{}: {outcome}, not {expected}: {saga:#?}",
                o.id
            );
            let (timer, billed) = (timers[0], billed.unwrap());
            assert!(timer["position"].as_i64() < billed["position"].as_i64(), "{}: {saga:#?}", o.id);
            if billed["event_type"] == "billing.charged" {
                assert!(first(saga, "billing.refunded").is_some(), "{}: a late charge is refunded: {saga:#?}", o.id);
            }
            late += 1;
        }
        match outcome {
            "shipped" => {
                assert!(compensations(saga).is_empty(), "{}: {saga:#?}", o.id);
                shipped.push(o);
            }
            "stock-out" => assert!(compensations(saga).is_empty() && billed.is_none(), "{}: {saga:#?}", o.id),
            "payment-declined" => {
                assert_eq!(compensations(saga), ["release-inventory"], "{}", o.id);
                assert_one_after_the_other(
                    &o.id,
                    saga,
                    Some("billing.declined"),
                    &[("fulfillment.release-requested", "warehouse.released")],
                );
            }
            "payment-timeout" => {
                assert_eq!(timers.len(), 1, "{}: timed out by its timer: {saga:#?}", o.id);
                assert!(billed.is_none() || outcome != expected, "{}: billing answered in time: {saga:#?}", o.id);
                let release = first(saga, "fulfillment.release-requested").unwrap();
                assert_eq!(release["metadata"]["causation_id"], timers[0]["position"], "{}", o.id);
                assert!(first(saga, "warehouse.released").is_some(), "{}: {saga:#?}", o.id);
            }
            "shipment-failed" => {
                assert_eq!(compensations(saga), ["refund-payment", "release-inventory"], "{}: in reverse", o.id);
                assert_one_after_the_other(
                    &o.id,
                    saga,
                    Some("carrier.shipment-failed"),
                    &[
                        ("fulfillment.refund-requested", "billing.refunded"),
                        ("fulfillment.release-requested", "warehouse.released"),
                    ],
                );
                let failed = ends[0]["position"].as_i64();
                assert!(first(saga, "warehouse.released").unwrap()["position"].as_i64() < failed, "{}", o.id);
            }
            other => panic!("{}: unknown outcome {other}", o.id),
        }
    }
    for outcome in ["shipped", "stock-out", "payment-declined", "payment-timeout", "shipment-failed"] {
        assert!(seen.contains(outcome), "no saga ended `{outcome}`: {seen:?}");
    }
    eprintln!("outcomes: {}; late charges: {late}", query(&h, "outcomes", Value::Null).await);

    // Customers cancel a few shipped orders: undone in reverse.
    let cancelled: Vec<&Order> = shipped.iter().take(5).copied().collect();
    for o in &cancelled {
        h.append(
            &format!("order-{}", o.id),
            Some(1),
            json!([{ "event_type": "order.cancelled", "data": { "orderId": o.id } }]),
        )
        .await;
    }
    let events = quiesce(&h, orders.len() as i64).await;
    let per_order = by_order(&events);
    for o in &cancelled {
        let saga = &per_order[&o.id];
        assert_eq!(compensations(saga), ["cancel-shipment", "refund-payment", "release-inventory"], "{}", o.id);
        assert_one_after_the_other(
            &o.id,
            saga,
            Some("order.cancelled"),
            &[
                ("fulfillment.cancel-shipment-requested", "carrier.shipment-cancelled"),
                ("fulfillment.refund-requested", "billing.refunded"),
                ("fulfillment.release-requested", "warehouse.released"),
            ],
        );
        assert_eq!(all(saga, "fulfillment.cancelled").len(), 1, "{}: {saga:#?}", o.id);
        let state = query(&h, "saga", json!({ "orderId": o.id })).await;
        assert_eq!(state["status"], "cancelled", "{state:#}");
        let history: Vec<&str> =
            state["history"].as_array().unwrap().iter().map(|e| e["did"].as_str().unwrap()).collect();
        assert_eq!(history.last(), Some(&"release-inventory done; ended"), "{state:#}");
    }
    let shipped: Vec<&Order> = shipped.iter().skip(cancelled.len()).copied().collect();

    // No emission doubled: one event per (module, cause, type), and as many
    // as the reactors count.
    let mut keys = BTreeSet::new();
    for e in events.iter().filter(|e| e["metadata"]["emitted_by"].is_string()) {
        let key = (
            e["metadata"]["emitted_by"].to_string(),
            e["metadata"]["causation_id"].to_string(),
            e["event_type"].to_string(),
        );
        assert!(keys.insert(key.clone()), "emitted twice: {key:?}");
    }
    let mut counted = 0;
    for name in REACTORS {
        let reactor = h.status(name).await["reactor"].clone();
        counted += reactor["emitted"].as_u64().unwrap() + reactor["timers_fired"].as_u64().unwrap();
    }
    assert_eq!(keys.len() as u64, counted, "every emitted event in the log, once");

    // The warehouse holds exactly the shipped orders' units, billing their money.
    let mut units: BTreeMap<String, i64> = BTreeMap::new();
    for o in &shipped {
        for (product, quantity, _) in &o.lines {
            *units.entry(format!("reserved/{product}")).or_default() += quantity;
        }
    }
    let held: BTreeMap<String, i64> = kv(&h, "warehouse", "reserved/")
        .await
        .into_iter()
        .map(|(k, v)| (k, v.as_i64().unwrap()))
        .filter(|(_, v)| *v != 0)
        .collect();
    assert_eq!(held, units, "stock held equals the shipped orders' lines");
    let ledger = kv(&h, "billing", "ledger").await["ledger"].clone();
    let paid: i64 = shipped.iter().map(|o| o.cents).sum();
    assert_eq!(ledger["charged"].as_i64().unwrap() - ledger["refunded"].as_i64().unwrap(), paid, "{ledger}");
    assert!(kv(&h, "order-fulfillment", "orphans/").await.is_empty(), "every answer found its saga");
    h.finish().await;
}
