// The process manager, included by lib.rs (and by
// ../../fixtures/fulfillment-v2, the same code as version 2): the crate
// including it defines `VERSION` and the module `saga`.
use reel_guest_sdk::serde_json::{self, Map, Value, json};
use reel_guest_sdk::{Context, Emits, Emitted, Envelope, Error, Level, Manifest, Projection, Reactor, Result};
use serde::Deserialize;

use saga::{Answer, Command, Item, Saga, Status, Step};

/// How long billing has to answer, counted from the `warehouse.reserved`
/// event that made the charge request (a module has no clock: time comes
/// from events).
pub const PAYMENT_TIMEOUT_SECS: i64 = 10;

/// The process manager.
pub struct Fulfillment;

/// `order.placed`, as the `order` decider and `reel generate` write it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placed {
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub customer_id: String,
    #[serde(default)]
    pub items: Vec<Item>,
    #[serde(default)]
    pub total: f64,
}

/// A participant's answer (or the timer's event): the order it is about,
/// and what the participant made or why it failed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    #[serde(default)]
    pub order_id: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub shipment_id: Option<String>,
}

/// The events the manager handles.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "order.placed")]
    Placed(Placed),
    #[serde(rename = "order.cancelled")]
    Cancelled(Reply),
    #[serde(rename = "warehouse.reserved")]
    Reserved(Reply),
    #[serde(rename = "warehouse.reservation-failed")]
    ReservationFailed(Reply),
    #[serde(rename = "warehouse.released")]
    Released(Reply),
    #[serde(rename = "billing.charged")]
    Charged(Reply),
    #[serde(rename = "billing.declined")]
    Declined(Reply),
    #[serde(rename = "billing.refunded")]
    Refunded(Reply),
    #[serde(rename = "carrier.shipped")]
    Shipped(Reply),
    #[serde(rename = "carrier.shipment-failed")]
    ShipmentFailed(Reply),
    #[serde(rename = "carrier.shipment-cancelled")]
    ShipmentCancelled(Reply),
    #[serde(rename = "fulfillment.payment-timed-out")]
    PaymentTimedOut(Reply),
}

const EVENT_TYPES: [&str; 12] = [
    "order.placed",
    "order.cancelled",
    "warehouse.reserved",
    "warehouse.reservation-failed",
    "warehouse.released",
    "billing.charged",
    "billing.declined",
    "billing.refunded",
    "carrier.shipped",
    "carrier.shipment-failed",
    "carrier.shipment-cancelled",
    "fulfillment.payment-timed-out",
];

/// What an answer means to the saga.
fn answer(event: Event) -> (Reply, Answer) {
    let failed = |step, outcome, r: &Reply| Answer::Failed {
        step,
        outcome,
        reason: r.reason.clone().unwrap_or_else(|| "no reason given".into()),
    };
    match event {
        Event::Placed(_) => unreachable!("order.placed starts a saga"),
        Event::Cancelled(r) => (r, Answer::CancelledByCustomer),
        Event::Reserved(r) => (r, Answer::Done { step: Step::ReserveInventory, id: None }),
        Event::ReservationFailed(r) => {
            let a = failed(Step::ReserveInventory, "stock-out", &r);
            (r, a)
        }
        Event::Released(r) => (r, Answer::Compensated(Step::ReserveInventory)),
        Event::Charged(r) => {
            let id = r.payment_id.clone();
            (r, Answer::Done { step: Step::ProcessPayment, id })
        }
        Event::Declined(r) => {
            let a = failed(Step::ProcessPayment, "payment-declined", &r);
            (r, a)
        }
        Event::Refunded(r) => (r, Answer::Compensated(Step::ProcessPayment)),
        Event::Shipped(r) => {
            let id = r.shipment_id.clone();
            (r, Answer::Done { step: Step::CreateShipment, id })
        }
        Event::ShipmentFailed(r) => {
            let a = failed(Step::CreateShipment, "shipment-failed", &r);
            (r, a)
        }
        Event::ShipmentCancelled(r) => (r, Answer::Compensated(Step::CreateShipment)),
        Event::PaymentTimedOut(r) => (r, Answer::TimedOut),
    }
}

/// The saga's correlation id: the event's `correlation_id`, or its position
/// when it has none (what reel gives the events it causes).
fn correlation(event: &Envelope<'_, Event>) -> Value {
    let metadata: Map<String, Value> = serde_json::from_str(event.metadata).unwrap_or_default();
    metadata.get("correlation_id").cloned().unwrap_or(Value::from(event.position))
}

/// The KV key of a saga: numbers zero-padded so the keys sort by position.
fn saga_key(correlation: &Value) -> String {
    match correlation {
        Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => format!("saga/{:020}", n.as_i64().unwrap_or(0)),
        Value::String(s) => format!("saga/{s}"),
        other => format!("saga/{other}"),
    }
}

/// Where a correlation that is not a saga's own points to its saga.
fn alias_key(correlation: &Value) -> String {
    let key = saga_key(correlation);
    format!("alias/{}", key.strip_prefix("saga/").unwrap_or(&key))
}

/// The timer of an order's payment.
fn timer_key(order_id: &str) -> String {
    format!("payment-timeout/{order_id}")
}

/// `occurred_at` plus `seconds`, in RFC 3339.
fn after(occurred_at: &str, seconds: i64) -> Result<String> {
    let micros = reel_model::time::parse_micros(occurred_at)
        .ok_or_else(|| Error::Failed(format!("occurred_at `{occurred_at}` is not RFC 3339")))?;
    Ok(reel_model::time::format_micros(micros + seconds * 1_000_000))
}

fn items_json(items: &[Item]) -> Value {
    items.iter().map(|i| json!({ "productId": i.product_id, "quantity": i.quantity })).collect()
}

/// Send `commands` for `saga`, caused by the event at `cause`.
fn send(ctx: &mut Context<'_>, saga: &Saga, commands: &[Command], cause: i64, occurred_at: &str) -> Result<()> {
    let stream = format!("fulfillment-{}", saga.order_id);
    let order_id = saga.order_id.as_str();
    for command in commands {
        match *command {
            Command::Request(step) => {
                let data = match step {
                    Step::ReserveInventory | Step::CreateShipment => {
                        json!({ "orderId": order_id, "items": items_json(&saga.items) })
                    }
                    Step::ProcessPayment => {
                        json!({ "orderId": order_id, "customerId": saga.customer_id, "amount": saga.total })
                    }
                };
                ctx.emit(cause, &stream, step.request(), &data)?;
            }
            Command::Compensate(step) => {
                let data = match step {
                    Step::ReserveInventory => json!({ "orderId": order_id, "items": items_json(&saga.items) }),
                    Step::ProcessPayment => {
                        json!({ "orderId": order_id, "paymentId": saga.payment_id, "amount": saga.total })
                    }
                    Step::CreateShipment => json!({ "orderId": order_id, "shipmentId": saga.shipment_id }),
                };
                ctx.emit(cause, &stream, step.compensation_request(), &data)?;
            }
            Command::StartTimer => {
                let data = json!({ "orderId": order_id }).to_string();
                let event = Emitted::new(cause, &stream, "fulfillment.payment-timed-out", data);
                ctx.schedule(&timer_key(order_id), &after(occurred_at, PAYMENT_TIMEOUT_SECS)?, event);
            }
            Command::CancelTimer => ctx.cancel_timer(&timer_key(order_id)),
            Command::Finish(status) => {
                let event_type = match status {
                    Status::Completed => "fulfillment.completed",
                    Status::Cancelled => "fulfillment.cancelled",
                    _ => "fulfillment.failed",
                };
                let compensated: Vec<&str> = saga.compensated.iter().map(|s| s.compensation()).collect();
                let data = json!({
                    "orderId": order_id, "outcome": saga.outcome, "reason": saga.reason,
                    "paymentId": saga.payment_id, "shipmentId": saga.shipment_id, "compensated": compensated,
                });
                ctx.emit(cause, &stream, event_type, &data)?;
            }
        }
    }
    Ok(())
}

/// Count the saga in `outcomes` under its status (and outcome once final),
/// moving it from where it was counted before.
fn count(ctx: &mut Context<'_>, before: Option<&Saga>, after: &Saga) -> Result<()> {
    let label = |s: &Saga| match (s.status.is_final(), &s.outcome) {
        (true, Some(outcome)) => outcome.clone(),
        _ => serde_json::to_value(s.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
    };
    let (old, new) = (before.map(label), label(after));
    if old.as_deref() == Some(new.as_str()) {
        return Ok(());
    }
    let mut counts: Map<String, Value> = ctx.kv().get_json("outcomes")?.unwrap_or_default();
    let mut bump = |key: String, by: i64| {
        let n = counts.get(&key).and_then(Value::as_i64).unwrap_or(0) + by;
        counts.insert(key, Value::from(n));
    };
    if let Some(old) = old {
        bump(old, -1);
    }
    bump(new, 1);
    ctx.kv().set_json("outcomes", &counts)
}

impl Projection for Fulfillment {
    type Event = Event;

    fn manifest() -> Manifest {
        Manifest::new("order-fulfillment", VERSION).event_types(EVENT_TYPES).stream_prefixes([
            "order-",
            "warehouse-",
            "billing-",
            "carrier-",
            "fulfillment-",
        ])
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Event>) -> Result<()> {
        let correlation = correlation(&event);
        let (position, occurred_at, event_type) = (event.position, event.occurred_at, event.event_type);
        let order_of_stream = event.stream_id.strip_prefix("order-").map(str::to_owned);
        let key = match (&event.data, &order_of_stream) {
            (Event::Cancelled(_), None) => return Ok(()),
            // A customer's cancellation comes with a correlation of its own
            // (reel starts one for an event that has none): find the saga by
            // its order, and let the answers to what it causes find it too.
            (Event::Cancelled(_), Some(order_id)) => match ctx.kv().get(&format!("order/{order_id}")) {
                Some(key) => {
                    ctx.kv().set(&alias_key(&correlation), key.clone());
                    String::from_utf8_lossy(&key).into_owned()
                }
                None => return Ok(()),
            },
            _ => match ctx.kv().get(&alias_key(&correlation)) {
                Some(key) => String::from_utf8_lossy(&key).into_owned(),
                None => saga_key(&correlation),
            },
        };
        if let Event::Placed(placed) = event.data {
            if ctx.kv().get(&key).is_some() {
                ctx.log(Level::Warn, &format!("order.placed at {position}: saga {key} exists; ignored"));
                return Ok(());
            }
            let order_id = placed.order_id.or(order_of_stream).unwrap_or_else(|| event.stream_id.to_owned());
            let (saga, commands) =
                Saga::start(correlation, order_id, placed.customer_id, placed.items, placed.total, position);
            send(ctx, &saga, &commands, position, occurred_at)?;
            ctx.kv().set(&format!("order/{}", saga.order_id), key.as_bytes());
            count(ctx, None, &saga)?;
            return ctx.kv().set_json(&key, &saga);
        }
        let (reply, answer) = answer(event.data);
        let Some(mut saga) = ctx.kv().get_json::<Saga>(&key)? else {
            ctx.log(Level::Warn, &format!("{event_type} at {position} for order {}: no saga {key}", reply.order_id));
            return ctx.kv().set_json(&format!("orphans/{position:020}"), &json!({ "event": event_type, "saga": key }));
        };
        let before = saga.clone();
        let commands = saga.on(answer, position, event_type);
        send(ctx, &saga, &commands, position, occurred_at)?;
        count(ctx, Some(&before), &saga)?;
        ctx.kv().set_json(&key, &saga)
    }

    fn query(ctx: &mut Context<'_>, name: &str, args: Value) -> Result<Value> {
        match name {
            "saga" => {
                let key = if let Some(order_id) = args.get("orderId").and_then(Value::as_str) {
                    match ctx.kv().get(&format!("order/{order_id}")) {
                        Some(key) => String::from_utf8_lossy(&key).into_owned(),
                        None => return Ok(Value::Null),
                    }
                } else if let Some(saga) = args.get("saga") {
                    saga_key(saga)
                } else {
                    return Err(Error::Failed("saga needs {\"orderId\": \"...\"} or {\"saga\": ...}".into()));
                };
                Ok(ctx.kv().get_json::<Value>(&key)?.unwrap_or(Value::Null))
            }
            "sagas" => {
                let limit = args.get("limit").and_then(Value::as_u64).unwrap_or(100).clamp(1, 1000) as u32;
                let after = args.get("after").and_then(Value::as_str).map(str::to_owned);
                let status = args.get("status").and_then(Value::as_str);
                let page = ctx.kv().scan("saga/", after.as_deref(), limit);
                let next = if page.len() == limit as usize { page.last().map(|(k, _)| k.clone()) } else { None };
                let mut sagas = Vec::new();
                for (key, bytes) in page {
                    let saga: Saga = serde_json::from_slice(&bytes)?;
                    let shown = serde_json::to_value(saga.status)?;
                    if status.is_some_and(|s| shown != s) {
                        continue;
                    }
                    sagas.push(json!({
                        "key": key, "saga": saga.saga, "orderId": saga.order_id, "status": shown,
                        "outcome": saga.outcome, "completed": saga.completed, "compensated": saga.compensated,
                        "late": saga.late,
                    }));
                }
                Ok(json!({ "sagas": sagas, "next": next }))
            }
            "outcomes" => Ok(ctx.kv().get_json::<Value>("outcomes")?.unwrap_or_else(|| json!({}))),
            other => {
                Err(Error::Failed(format!("unknown query `{other}`; this reactor has `saga`, `sagas`, `outcomes`")))
            }
        }
    }
}

impl Reactor for Fulfillment {
    fn emits() -> Emits {
        Emits::new("fulfillment-")
    }
}

reel_guest_sdk::export_reactor!(Fulfillment);
