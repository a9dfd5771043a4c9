//! Sagas: the seed's choreography end to end over HTTP (issue 22, item 6;
//! docs/adr/44-sagas.md). Three reactors, two languages:
//! `projections/inventory` and `projections/shipping` (Rust) and
//! `projections/payment-js` (JavaScript, `cargo xtask guests`), beside
//! `order-summaries`. Orders go in with `POST /events`; the test then reads
//! the log (`GET /events`) and folds it the way the seed's rules say, and
//! compares: every order has exactly one outcome, each saga took the steps
//! its order calls for (compensations in reverse order), inventory's stock
//! and order-summaries' rows are the fold's, and nothing was emitted twice.
//!
//! `REEL_SAGA_ORDERS` sets the number of orders (default 2,000).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::Reel;
use common::process::Process;
use common::{Backend, Harness};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(300);

/// Customers the orders are spread over.
const CUSTOMERS: usize = 97;

/// Units of a product before any order (inventory's `INITIAL_STOCK`).
const INITIAL_STOCK: i64 = 20;

fn orders_wanted() -> usize {
    std::env::var("REEL_SAGA_ORDERS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
}

/// SplitMix64, so the same count gives the same orders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// `n` `order.placed` payloads, each order on its stream `order-{id}`. One
/// order in ten asks 21 units of a product (a stock-out whatever the
/// timing), one in ten totals over 400 (a payment failure, stock allowing),
/// one in ten has 5 or 6 line items (a shipment failure, stock allowing);
/// the rest have 1 to 4 line items totalling at most 400 and ship, while
/// their products last: 20 units of each of `3n/20` products meet about
/// 3.5 units of demand per order, so later orders also run out.
fn orders(n: usize) -> Vec<Value> {
    let mut rng = Rng(0x5A6A_0000 + n as u64);
    let products = (n * 3 / 20).max(8) as u64;
    let item = |rng: &mut Rng, quantity: u64, max_cents: u64| {
        json!({
            "productId": format!("p-{:04}", rng.range(0, products - 1)),
            "quantity": quantity,
            "price": rng.range(100, max_cents) as f64 / 100.0,
        })
    };
    (0..n)
        .map(|i| {
            let items: Vec<Value> = match i % 10 {
                0 => vec![item(&mut rng, 21, 1_000)],
                1 => vec![item(&mut rng, 1, 1_000), json!({ "productId": "p-gold", "quantity": 1, "price": 450.0 })],
                2 => (0..rng.range(5, 6)).map(|_| item(&mut rng, 1, 5_000)).collect(),
                _ => (0..rng.range(1, 4))
                    .map(|_| {
                        let quantity = rng.range(1, 3);
                        item(&mut rng, quantity, 3_300)
                    })
                    .collect(),
            };
            let cents: i64 = items
                .iter()
                .map(|it| it["quantity"].as_i64().unwrap() * (it["price"].as_f64().unwrap() * 100.0).round() as i64)
                .sum();
            json!({
                "orderId": format!("o-{i:05}"),
                "customerId": format!("c-{:03}", i % CUSTOMERS),
                "items": items,
                "total": cents as f64 / 100.0,
            })
        })
        .collect()
}

/// Append `order` as `order.placed` to `order-{orderId}`: its position.
async fn place(reel: &Reel<'_>, order: &Value) -> i64 {
    let stream = format!("order-{}", order["orderId"].as_str().unwrap());
    reel.append_new(&stream, json!([{ "event_type": "order.placed", "data": order }])).await[0]
}

/// Inventory's stock, by product (`stock/` in its KV).
async fn stock(reel: &Reel<'_>) -> BTreeMap<String, i64> {
    reel.kv("inventory", "stock/")
        .await
        .into_iter()
        .map(|(product, units)| (product, units.as_i64().unwrap()))
        .collect()
}

/// `order-summaries`' status of each order, read a customer at a time (a
/// table read returns at most 10,000 rows).
async fn statuses(reel: &Reel<'_>) -> BTreeMap<String, String> {
    let mut statuses = BTreeMap::new();
    for customer in 0..CUSTOMERS {
        let uri =
            format!("/projections/order-summaries/tables/order_summaries?customer_id=c-{customer:03}&limit=10000");
        let rows = reel.get(&uri).await;
        let rows = rows.as_array().unwrap();
        assert!(rows.len() < 10_000, "too many orders per customer to read back");
        for r in rows {
            statuses.insert(r["order_id"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned());
        }
    }
    statuses
}

/// The modules of the choreography, and `order-summaries`.
const MODULES: [&str; 4] = ["inventory", "payment", "shipping", "order-summaries"];

/// How an order's saga ends, as the seed's rules and the stock say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Shipped,
    StockOut,
    PaymentFailed,
    ShipmentFailed,
}

impl Outcome {
    /// The events each reactor emits for an order with this outcome, in order.
    fn steps(self) -> [&'static [&'static str]; 3] {
        match self {
            Outcome::Shipped => {
                [&["inventory.reserved"], &["payment.processed"], &["shipment.created", "order.shipped"]]
            }
            Outcome::StockOut => [&["inventory.reservation-failed", "order.cancelled"], &[], &[]],
            Outcome::PaymentFailed => {
                [&["inventory.reserved", "inventory.released", "order.cancelled"], &["payment.failed"], &[]]
            }
            Outcome::ShipmentFailed => [
                &["inventory.reserved", "inventory.released", "order.cancelled"],
                &["payment.processed", "payment.refunded"],
                &["shipment.failed"],
            ],
        }
    }
}

/// The test's own fold of the log: inventory's rules over the events in the
/// order inventory receives them (reservations in `order.placed` order,
/// releases where the failures land), then payment's and shipping's rules.
struct Fold {
    outcomes: BTreeMap<String, Outcome>,
    stock: BTreeMap<String, i64>,
}

fn fold(events: &[Value]) -> Fold {
    let mut stock: BTreeMap<String, i64> = BTreeMap::new();
    let mut reserved: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    for e in events {
        let data = &e["data"];
        let order_id = || data["orderId"].as_str().unwrap().to_owned();
        match e["event_type"].as_str().unwrap() {
            "order.placed" => {
                let mut units: BTreeMap<String, i64> = BTreeMap::new();
                for item in data["items"].as_array().unwrap() {
                    *units.entry(item["productId"].as_str().unwrap().to_owned()).or_default() +=
                        item["quantity"].as_i64().unwrap();
                }
                let fits = units.iter().all(|(p, n)| stock.get(p).copied().unwrap_or(INITIAL_STOCK) >= *n);
                let outcome = if !fits {
                    Outcome::StockOut
                } else {
                    for (p, n) in &units {
                        *stock.entry(p.clone()).or_insert(INITIAL_STOCK) -= n;
                    }
                    reserved.insert(order_id(), units);
                    if data["total"].as_f64().unwrap() > 400.0 {
                        Outcome::PaymentFailed
                    } else if data["items"].as_array().unwrap().len() > 4 {
                        Outcome::ShipmentFailed
                    } else {
                        Outcome::Shipped
                    }
                };
                outcomes.insert(order_id(), outcome);
            }
            "payment.failed" | "payment.refunded" => {
                for (p, n) in reserved.remove(&order_id()).expect("a release of a reservation") {
                    *stock.get_mut(&p).unwrap() += n;
                }
            }
            _ => {}
        }
    }
    Fold { outcomes, stock }
}

/// The emitted events by order: per reactor, their types in log order, and
/// the position of each type.
#[derive(Default, Debug)]
struct Saga {
    by_reactor: BTreeMap<String, Vec<String>>,
    at: BTreeMap<String, i64>,
    correlations: BTreeSet<i64>,
}

/// Check the emitted events' keys and metadata; group them by order.
fn sagas(events: &[Value]) -> BTreeMap<String, Saga> {
    let by_position: BTreeMap<i64, &Value> = events.iter().map(|e| (e["position"].as_i64().unwrap(), e)).collect();
    let mut keys = BTreeSet::new();
    let mut sagas: BTreeMap<String, Saga> = BTreeMap::new();
    for e in events.iter().filter(|e| e["metadata"]["emitted_by"].is_string()) {
        let meta = &e["metadata"];
        let reactor = meta["emitted_by"].as_str().unwrap().split('@').next().unwrap().to_owned();
        let cause = meta["causation_id"].as_i64().unwrap();
        let event_type = e["event_type"].as_str().unwrap().to_owned();
        // Each reactor emits at most one event of a type per cause: with
        // the reactor's name this is its emission key (ADR 23).
        assert!(keys.insert((cause, reactor.clone(), event_type.clone())), "emitted twice: {e:#}");
        let order_id = e["data"]["orderId"].as_str().unwrap_or_else(|| panic!("no orderId: {e:#}")).to_owned();
        let cause_event = by_position[&cause];
        assert_eq!(cause_event["data"]["orderId"], order_id, "caused by another order's event: {e:#}");
        assert_eq!(e["stream_id"], format!("{reactor}-{order_id}"), "in the reactor's stream of the order: {e:#}");
        let saga = sagas.entry(order_id).or_default();
        saga.by_reactor.entry(reactor).or_default().push(event_type.clone());
        saga.at.insert(event_type, e["position"].as_i64().unwrap());
        saga.correlations.insert(meta["correlation_id"].as_i64().unwrap());
    }
    sagas
}

/// What the test appended, the reactors did and the read models show agree:
/// the number of orders of each outcome.
async fn check(reel: &Reel<'_>, placed: &BTreeMap<String, i64>) -> BTreeMap<Outcome, usize> {
    let events = reel.log().await;
    let fold = fold(&events);
    let sagas = sagas(&events);
    assert_eq!(fold.outcomes.len(), placed.len(), "every order placed once");
    let mut counts = BTreeMap::new();
    for (order_id, outcome) in &fold.outcomes {
        *counts.entry(*outcome).or_insert(0) += 1;
        let saga = sagas.get(order_id).unwrap_or_else(|| panic!("{order_id}: nothing emitted"));
        let took = |reactor: &str| saga.by_reactor.get(reactor).cloned().unwrap_or_default();
        let expected = outcome.steps().map(|steps| steps.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            [took("inventory"), took("payment"), took("shipping")],
            expected,
            "{order_id} ({outcome:?}): {saga:?}"
        );
        assert_eq!(
            saga.correlations,
            BTreeSet::from([placed[order_id]]),
            "{order_id}: one correlation, its order.placed"
        );
        let ends = ["shipment.created", "order.cancelled"].iter().filter(|t| saga.at.contains_key(**t)).count();
        assert_eq!(ends, 1, "{order_id}: exactly one outcome: {saga:?}");
        if *outcome == Outcome::ShipmentFailed {
            let at = |t: &str| saga.at[t];
            assert!(
                at("shipment.failed") < at("payment.refunded") && at("payment.refunded") < at("inventory.released"),
                "{order_id}: compensations in reverse order of the steps: {saga:?}"
            );
        }
    }
    assert_eq!(stock(reel).await, fold.stock, "inventory's stock is the fold's");
    let statuses = statuses(reel).await;
    assert_eq!(statuses.len(), placed.len());
    for (order_id, outcome) in &fold.outcomes {
        let status = if *outcome == Outcome::Shipped { "shipped" } else { "cancelled" };
        assert_eq!(statuses[order_id], status, "order-summaries: {order_id} ({outcome:?})");
    }
    for outcome in [Outcome::Shipped, Outcome::StockOut, Outcome::PaymentFailed, Outcome::ShipmentFailed] {
        assert!(counts.get(&outcome).copied().unwrap_or(0) > 0, "no {outcome:?} in {counts:?}");
    }
    counts
}

/// Put the choreography's components (and `order-summaries`) into
/// `modules`, each file whole at once (a running reel may be watching).
fn install(modules: &Path) {
    std::fs::create_dir_all(modules).unwrap();
    let files = [
        (common::guest("inventory"), "inventory.wasm"),
        (common::guest("shipping"), "shipping.wasm"),
        (common::guest("order_summaries"), "order_summaries.wasm"),
        (common::language_guest("payment-js"), "payment-js.wasm"),
    ];
    for (from, file) in files {
        let tmp = modules.join(format!("{file}.tmp"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, modules.join(file)).unwrap();
    }
}

/// `payment` as version 2 (`projections/payment-js/src/v2.js`).
fn payment_v2() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../projections/payment-js/dist/payment-js-v2.wasm");
    assert!(path.exists(), "{} is missing: build it with `cargo xtask guests`", path.display());
    path
}

both_backends!(every_order_of_the_choreography_ends_once_and_stock_is_the_fold);

/// The seed's choreography over `REEL_SAGA_ORDERS` orders (2,000): every
/// order has exactly one outcome, the histories hold all four, each saga's
/// steps follow the seed's rules with compensations in reverse order, stock
/// and order summaries are the test's fold, nothing is emitted twice.
/// Halfway, a new version of `payment` is deployed while the second half
/// goes in: it replays the first half emitting nothing again (its
/// emissions there are dropped and counted) and misses nothing.
async fn every_order_of_the_choreography_ends_once_and_stock_is_the_fold(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    install(&h.config.modules_dir);
    let reel = Reel::Router(&h);
    reel.running(&MODULES).await;
    let started = Instant::now();
    let all = orders(orders_wanted());
    let (first, second) = all.split_at(all.len() / 2);
    let mut placed = BTreeMap::new();
    for order in first {
        placed.insert(order["orderId"].as_str().unwrap().to_owned(), place(&reel, order).await);
    }
    reel.quiesce().await;
    let by_v1 = reel.log().await.iter().filter(|e| e["metadata"]["emitted_by"] == "payment@1").count();
    let tmp = h.dir.path().join("payment-v2.tmp");
    std::fs::copy(payment_v2(), &tmp).unwrap();
    std::fs::rename(&tmp, h.config.modules_dir.join("payment-js.wasm")).unwrap();
    for order in second {
        placed.insert(order["orderId"].as_str().unwrap().to_owned(), place(&reel, order).await);
    }
    let appended = started.elapsed();
    let payment = h.wait_status("payment", PATIENCE, |s| s["version"] == "2" && s["rebuild"].is_null()).await;
    reel.quiesce().await;
    let settled = started.elapsed();
    let counts = check(&reel, &placed).await;
    let dropped = h.status("payment").await["reactor"]["dropped"].as_u64().unwrap();
    eprintln!(
        "{backend:?}: {} orders appended in {appended:.1?}, settled after {settled:.1?}: {counts:?}; \
         payment@2 dropped {dropped} emissions for causes payment@1 had handled ({by_v1} in the first half)",
        placed.len()
    );
    assert!(dropped >= by_v1 as u64, "version 2 replayed the first half: {payment:#}");
    for name in ["inventory", "shipping"] {
        let status = h.status(name).await;
        assert_eq!(status["reactor"]["dropped"], 0, "{status:#}");
    }
    h.finish().await;
}

both_backends!(the_choreography_killed_five_times_ends_as_if_never_killed);

/// The same run with `reel serve` killed (SIGKILL) five times, each at a
/// random order of each sixth of the run, just after an append, while the
/// reactors are busy with what came before it (small batches; on SQLite
/// some kills land between a batch's commit and the forward of its outbox):
/// the same checks hold, so no emission was lost or doubled by a crash.
async fn the_choreography_killed_five_times_ends_as_if_never_killed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    install(&dir.path().join("modules"));
    let url = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(common::create_database().await),
    };
    let all = orders(orders_wanted());
    let sixth = all.len() / 6;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let kill_at: BTreeSet<usize> = (1..6)
        .map(|k| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            k * sixth + (seed % sixth as u64) as usize
        })
        .collect();
    let start = || Process::start(dir.path(), url.as_deref(), &["--batch-size", "20"]);
    let mut p = start();
    Reel::Process(&p).running(&MODULES).await;
    let mut placed = BTreeMap::new();
    let mut busy_kills = 0;
    for (i, order) in all.iter().enumerate() {
        placed.insert(order["orderId"].as_str().unwrap().to_owned(), place(&Reel::Process(&p), order).await);
        if kill_at.contains(&i) {
            let (_, all) = p.call("GET", "/projections", None);
            let busy =
                all.as_array().unwrap().iter().any(|s| s["lag"] != 0 || s["reactor"]["outbox"].as_u64() > Some(0));
            busy_kills += usize::from(busy);
            p.kill();
            p = start();
            Reel::Process(&p).running(&MODULES).await;
        }
    }
    let reel = Reel::Process(&p);
    reel.quiesce().await;
    let counts = check(&reel, &placed).await;
    eprintln!(
        "{backend:?}: {} orders, {} kills ({busy_kills} while a module was behind): {counts:?}",
        placed.len(),
        kill_at.len()
    );
    assert_eq!(kill_at.len(), 5);
    assert!(busy_kills >= 3, "only {busy_kills} kills landed while the modules were behind");
    p.kill();
    if let Some(url) = url {
        common::drop_database(&url).await;
    }
}
