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

use common::client::Reel;
use common::process::Process;
use common::{Backend, Harness};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(300);
const REACTORS: [&str; 4] = ["order-fulfillment", "warehouse", "billing", "carrier"];
const OUTCOMES: [&str; 5] = ["shipped", "stock-out", "payment-declined", "payment-timeout", "shipment-failed"];

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

/// `order-fulfillment`'s query `name` with `args`.
async fn query(reel: &Reel<'_>, name: &str, args: Value) -> Value {
    let args = common::urlencode(&args.to_string());
    reel.get(&format!("/projections/order-fulfillment/query/{name}?args={args}")).await
}

/// Every saga summary, through the `sagas` query, by order id.
async fn sagas(reel: &Reel<'_>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut after = Value::Null;
    loop {
        let page = query(reel, "sagas", json!({ "limit": 1000, "after": after })).await;
        for saga in page["sagas"].as_array().unwrap() {
            out.insert(saga["orderId"].as_str().unwrap().to_owned(), saga.clone());
        }
        if page["next"].is_null() {
            return out;
        }
        after = page["next"].clone();
    }
}

/// Place `o` (`POST /events`): the position of its `order.placed`.
async fn place(reel: &Reel<'_>, o: &Order) -> i64 {
    let items: Vec<Value> =
        o.lines.iter().map(|(p, q, c)| json!({ "productId": p, "quantity": q, "price": *c as f64 / 100.0 })).collect();
    let data = json!({ "orderId": o.id, "customerId": "c-1", "items": items, "total": o.cents as f64 / 100.0 });
    reel.append_new(&format!("order-{}", o.id), json!([{ "event_type": "order.placed", "data": data }])).await[0]
}

/// Wait until `ended` sagas have ended, no timer is pending and every
/// module has handled the whole log; the log then.
async fn settle(reel: &Reel<'_>, ended: i64) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let outcomes = query(reel, "outcomes", Value::Null).await;
        let done: i64 = OUTCOMES.iter().chain(["cancelled"].iter()).map(|o| outcomes[o].as_i64().unwrap_or(0)).sum();
        let manager = reel.get("/projections/order-fulfillment").await;
        let orphans = reel.get("/projections/order-fulfillment/kv?prefix=orphans/&limit=5").await;
        assert_eq!(orphans["entries"], json!([]), "events that found no saga by their correlation id");
        if done >= ended && manager["reactor"]["timers_pending"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {ended} sagas ended: {outcomes}; {manager:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    reel.quiesce().await;
    reel.log().await
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

/// What [`check`] saw: the orders that shipped, and how many timed out
/// only because billing answered after the timer fired.
struct Checked<'o> {
    shipped: Vec<&'o Order>,
    late: usize,
}

/// Every order has exactly one outcome, the one the rules give (a charge
/// answered after the timeout is a timeout, refunded); every outcome occurs;
/// compensations run in reverse order, each after the previous one's
/// answer; the payment timers fire once with the saga's correlation id;
/// nothing is emitted twice (one event per module, cause and type).
async fn check<'o>(
    reel: &Reel<'_>,
    orders: &'o [Order],
    placed_at: &BTreeMap<String, i64>,
    events: &[Value],
) -> Checked<'o> {
    let per_order = by_order(events);
    let summaries = sagas(reel).await;
    let mut seen = BTreeSet::new();
    let mut late = 0;
    let mut shipped = Vec::new();
    for o in orders {
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
    for outcome in OUTCOMES {
        assert!(seen.contains(outcome), "no saga ended `{outcome}`: {seen:?}");
    }
    let mut keys = BTreeSet::new();
    for e in events.iter().filter(|e| e["metadata"]["emitted_by"].is_string()) {
        // By module, whatever its version: a new version must not send again.
        let by = e["metadata"]["emitted_by"].as_str().unwrap();
        let key = (
            by.split('@').next().unwrap().to_owned(),
            e["metadata"]["causation_id"].to_string(),
            e["event_type"].to_string(),
        );
        assert!(keys.insert(key.clone()), "emitted twice: {key:?}");
    }
    Checked { shipped, late }
}

/// The warehouse holds exactly the shipped orders' units and billing their
/// money; every answer found its saga.
async fn assert_folds(reel: &Reel<'_>, shipped: &[&Order]) {
    let mut units: BTreeMap<String, i64> = BTreeMap::new();
    for o in shipped {
        for (product, quantity, _) in &o.lines {
            *units.entry(product.clone()).or_default() += quantity;
        }
    }
    let held: BTreeMap<String, i64> = reel
        .kv("warehouse", "reserved/")
        .await
        .into_iter()
        .map(|(k, v)| (k, v.as_i64().unwrap()))
        .filter(|(_, v)| *v != 0)
        .collect();
    assert_eq!(held, units, "stock held equals the shipped orders' lines");
    let ledger = reel.kv("billing", "ledger").await[""].clone();
    let paid: i64 = shipped.iter().map(|o| o.cents).sum();
    assert_eq!(ledger["charged"].as_i64().unwrap() - ledger["refunded"].as_i64().unwrap(), paid, "{ledger}");
    assert!(reel.kv("order-fulfillment", "orphans/").await.is_empty(), "every answer found its saga");
}

both_backends!(each_orchestrated_saga_ends_once_compensating_in_reverse);

/// N orders through the saga while `order-fulfillment` is rebuilt after the
/// first third and replaced by version 2 (the same code) after the second,
/// sagas under way each time; checked by [`check`]. Version 2 drops what
/// version 1 sent (counted) and with what it sent itself that makes every
/// event the manager emitted in the log. Then customers cancel shipped
/// orders: cancel-shipment, refund, release, in that order; stock and ledger
/// equal a fold over the orders still shipped.
async fn each_orchestrated_saga_ends_once_compensating_in_reverse(backend: Backend) {
    let orders = orders(saga_orders());
    let h = Harness::start(backend, &["order_fulfillment", "warehouse", "billing", "carrier"]).await;
    let reel = Reel::Router(&h);
    reel.running(&REACTORS).await;
    let started = Instant::now();
    let mut placed_at = BTreeMap::new();
    let third = orders.len() / 3;
    for o in &orders[..third] {
        placed_at.insert(o.id.clone(), place(&reel, o).await);
    }
    // Rebuilt, then a new version, while sagas are under way: each replays
    // what was handled before without sending anything again and takes over
    // the sagas' state, timers included.
    let (code, answer) = h.call("POST", "/projections/order-fulfillment/rebuild", None).await;
    assert_eq!(code, axum::http::StatusCode::ACCEPTED, "{answer}");
    for o in &orders[third..2 * third] {
        placed_at.insert(o.id.clone(), place(&reel, o).await);
    }
    h.wait_status("order-fulfillment", PATIENCE, |s| s["rebuild"].is_null()).await;
    h.install("fixture_fulfillment_v2", "order_fulfillment.wasm");
    for o in &orders[2 * third..] {
        placed_at.insert(o.id.clone(), place(&reel, o).await);
    }
    h.wait_status("order-fulfillment", PATIENCE, |s| s["version"] == "2" && s["rebuild"].is_null()).await;
    let events = settle(&reel, orders.len() as i64).await;
    eprintln!("{} orders, {} events: quiet after {:.1?} ({backend:?})", orders.len(), events.len(), started.elapsed());
    let Checked { shipped, late } = check(&reel, &orders, &placed_at, &events).await;
    eprintln!("outcomes: {}; late charges: {late}", query(&reel, "outcomes", Value::Null).await);
    // Version 2 computed again what version 1 had sent (dropped, counted) and
    // sent the rest: together, every emission in the log (timers aside: each
    // fired once, `check` says).
    let emitted = events.iter().filter(|e| e["metadata"]["emitted_by"].is_string() && e["metadata"]["timer"].is_null());
    let mut by_module: BTreeMap<&str, u64> = BTreeMap::new();
    for e in emitted {
        *by_module.entry(e["metadata"]["emitted_by"].as_str().unwrap().split('@').next().unwrap()).or_default() += 1;
    }
    for name in REACTORS {
        let reactor = h.status(name).await["reactor"].clone();
        let [sent, dropped] = ["emitted", "dropped"].map(|k| reactor[k].as_u64().unwrap());
        assert_eq!(dropped > 0, name == "order-fulfillment", "{name}: {reactor}");
        assert_eq!(sent + dropped, by_module[name], "{name}: every emission in the log, once: {reactor}");
    }
    let v2 = events.iter().filter(|e| e["metadata"]["emitted_by"] == "order-fulfillment@2").count();
    assert!(v2 > 0, "version 2 sent what came after it");

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
    let events = settle(&reel, orders.len() as i64).await;
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
        let state = query(&reel, "saga", json!({ "orderId": o.id })).await;
        assert_eq!(state["status"], "cancelled", "{state:#}");
        let history: Vec<&str> =
            state["history"].as_array().unwrap().iter().map(|e| e["did"].as_str().unwrap()).collect();
        assert_eq!(history.last(), Some(&"release-inventory done; ended"), "{state:#}");
    }
    let shipped: Vec<&Order> = shipped.iter().skip(cancelled.len()).copied().collect();
    assert_folds(&reel, &shipped).await;
    h.finish().await;
}

both_backends!(the_orchestration_killed_five_times_ends_as_if_never_killed);

/// The same orders, `billing` the JavaScript one (`projections/billing-js`),
/// with `reel serve` killed (SIGKILL) five times: four at
/// a random order of each fifth of the run, just after its append, while
/// the reactors are behind (small batches; on SQLite some kills land between
/// a batch's commit and the forward of its outbox), and the fifth once every
/// order is in and payment timers are pending, which fire after the
/// restart. [`check`] and the folds hold: nothing lost, nothing doubled.
async fn the_orchestration_killed_five_times_ends_as_if_never_killed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    for module in ["order_fulfillment", "warehouse", "carrier"] {
        std::fs::copy(common::guest(module), modules.join(format!("{module}.wasm"))).unwrap();
    }
    // billing in JavaScript here: the twin of the Rust one (`cargo xtask guests` builds it).
    std::fs::copy(common::language_guest("billing-js"), modules.join("billing-js.wasm")).unwrap();
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(common::create_database().await),
    };
    let orders = orders(saga_orders());
    let fifth = orders.len() / 5;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let kill_at: BTreeSet<usize> = (0..4)
        .map(|k| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            k * fifth + 1 + (seed % (fifth as u64 - 1)) as usize
        })
        .collect();
    let start = || Process::start(dir.path(), url.as_deref(), &["--batch-size", "20"]);
    let mut p = start();
    Reel::Process(&p).running(&REACTORS).await;
    let mut placed_at = BTreeMap::new();
    let mut busy_kills = 0;
    for (i, o) in orders.iter().enumerate() {
        placed_at.insert(o.id.clone(), place(&Reel::Process(&p), o).await);
        if kill_at.contains(&i) {
            let (_, all) = p.call("GET", "/projections", None);
            let busy =
                all.as_array().unwrap().iter().any(|s| s["lag"] != 0 || s["reactor"]["outbox"].as_u64() > Some(0));
            busy_kills += usize::from(busy);
            p.kill();
            p = start();
            Reel::Process(&p).running(&REACTORS).await;
        }
    }
    let deadline = Instant::now() + PATIENCE;
    let pending = loop {
        let status = Reel::Process(&p).get("/projections/order-fulfillment").await;
        let pending = status["reactor"]["timers_pending"].as_u64().unwrap_or(0);
        if pending > 0 {
            break pending;
        }
        assert!(Instant::now() < deadline, "no timer pending: {status:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    p.kill();
    let p = start();
    let reel = Reel::Process(&p);
    reel.running(&REACTORS).await;
    let events = settle(&reel, orders.len() as i64).await;
    let Checked { shipped, late } = check(&reel, &orders, &placed_at, &events).await;
    assert_folds(&reel, &shipped).await;
    eprintln!(
        "{backend:?}: {} orders, {} events, 5 kills ({busy_kills} of the first 4 while a reactor was behind, \
         the last with {pending} timers pending); {} shipped, {late} late charges",
        orders.len(),
        events.len(),
        shipped.len()
    );
    assert_eq!(kill_at.len(), 4);
    assert!(busy_kills >= 2, "only {busy_kills} kills landed while the reactors were behind");
    p.kill();
    if let Some(url) = url {
        common::drop_database(&url).await;
    }
}
