//! `inventory`: the seed's inventory service in a choreographed saga, as a
//! reactor (its partners: `payment-js` and `shipping`; the guide's "Sagas").
//!
//! - `order.placed`: reserves every item of the order, each product starting
//!   with [`INITIAL_STOCK`] units the first time it is seen, and emits
//!   `inventory.reserved` (with the order's items and total, which payment
//!   needs). When any item lacks stock (or asks a quantity below 1) it
//!   reserves nothing and emits `inventory.reservation-failed` and
//!   `order.cancelled`: the saga ends here.
//! - `payment.failed` and `payment.refunded`: the compensation. The order's
//!   reservation goes back to stock; it emits `inventory.released` and
//!   `order.cancelled`. Inventory releases on `payment.refunded` (which
//!   payment emits for a `shipment.failed`), not on `shipment.failed`
//!   itself, so that a failed shipment's compensations run in the reverse
//!   order of the steps: refund, then release (ADR 44).
//!
//! Every emitted event goes to the stream `inventory-{orderId}` and carries
//! `orderId`. The read model, in KV: `stock/{productId}` holds the units
//! available (a JSON integer), `order/{orderId}` the order's reservation
//! ([`Reservation`]). An order id seen again in `order.placed` is ignored:
//! an order is reserved once.

use std::collections::BTreeMap;

use reel_guest_sdk::{Context, Emits, Envelope, Manifest, Projection, Reactor, Result, serde_json};
use serde::{Deserialize, Serialize};

/// Units of a product the first time an order names it.
pub const INITIAL_STOCK: i64 = 20;

/// The stream prefix of everything inventory emits.
pub const PREFIX: &str = "inventory-";

/// The events inventory reacts to.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "order.placed")]
    Placed(OrderPlaced),
    #[serde(rename = "payment.failed")]
    PaymentFailed(OrderRef),
    #[serde(rename = "payment.refunded")]
    PaymentRefunded(OrderRef),
}

/// `order.placed`, as the `order` decider and `order-summaries` know it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub total: f64,
}

/// A line item of an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub product_id: String,
    pub quantity: i64,
    pub price: f64,
}

/// An event about an order, of which inventory reads the id.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRef {
    pub order_id: String,
}

/// What inventory did with an order (`order/{orderId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// `reserved`, `rejected` (not enough stock) or `released`.
    pub status: String,
    /// Units taken from each product (empty when rejected).
    pub units: BTreeMap<String, i64>,
}

pub struct Inventory;

fn stock_key(product_id: &str) -> String {
    format!("stock/{product_id}")
}

fn order_key(order_id: &str) -> String {
    format!("order/{order_id}")
}

/// Units of `product_id` available now.
fn available(ctx: &mut Context<'_>, product_id: &str) -> Result<i64> {
    Ok(ctx.kv().get_json::<i64>(&stock_key(product_id))?.unwrap_or(INITIAL_STOCK))
}

/// Why `units` cannot be reserved, if they cannot.
fn shortage(ctx: &mut Context<'_>, order: &OrderPlaced, units: &BTreeMap<String, i64>) -> Result<Option<String>> {
    if let Some(item) = order.items.iter().find(|item| item.quantity < 1) {
        return Ok(Some(format!("product {}: quantity {} is not a positive number", item.product_id, item.quantity)));
    }
    for (product_id, wanted) in units {
        let left = available(ctx, product_id)?;
        if left < *wanted {
            return Ok(Some(format!("product {product_id}: {wanted} wanted, {left} in stock")));
        }
    }
    Ok(None)
}

fn place(ctx: &mut Context<'_>, cause: i64, order: OrderPlaced) -> Result<()> {
    let key = order_key(&order.order_id);
    if ctx.kv().get(&key).is_some() {
        return Ok(());
    }
    let stream = format!("{PREFIX}{}", order.order_id);
    let mut units = BTreeMap::new();
    for item in &order.items {
        *units.entry(item.product_id.clone()).or_insert(0) += item.quantity;
    }
    if let Some(reason) = shortage(ctx, &order, &units)? {
        let rejected = Reservation { status: "rejected".into(), units: BTreeMap::new() };
        ctx.kv().set_json(&key, &rejected)?;
        let data = serde_json::json!({ "orderId": order.order_id, "reason": reason });
        ctx.emit(cause, &stream, "inventory.reservation-failed", &data)?;
        let cancelled = serde_json::json!({ "orderId": order.order_id, "reason": "out of stock" });
        return ctx.emit(cause, &stream, "order.cancelled", &cancelled);
    }
    for (product_id, wanted) in &units {
        let left = available(ctx, product_id)?;
        ctx.kv().set_json(&stock_key(product_id), &(left - wanted))?;
    }
    ctx.kv().set_json(&key, &Reservation { status: "reserved".into(), units })?;
    let data = serde_json::json!({
        "orderId": order.order_id,
        "customerId": order.customer_id,
        "items": order.items,
        "total": order.total,
    });
    ctx.emit(cause, &stream, "inventory.reserved", &data)
}

/// Give the order's reserved units back, once.
fn release(ctx: &mut Context<'_>, cause: i64, order_id: &str, reason: &str) -> Result<()> {
    let key = order_key(order_id);
    let Some(mut reservation) = ctx.kv().get_json::<Reservation>(&key)? else { return Ok(()) };
    if reservation.status != "reserved" {
        return Ok(());
    }
    for (product_id, units) in &reservation.units {
        let left = available(ctx, product_id)?;
        ctx.kv().set_json(&stock_key(product_id), &(left + units))?;
    }
    let items: Vec<_> = reservation
        .units
        .iter()
        .map(|(product_id, quantity)| serde_json::json!({ "productId": product_id, "quantity": quantity }))
        .collect();
    reservation.status = "released".into();
    ctx.kv().set_json(&key, &reservation)?;
    let stream = format!("{PREFIX}{order_id}");
    ctx.emit(cause, &stream, "inventory.released", &serde_json::json!({ "orderId": order_id, "items": items }))?;
    ctx.emit(cause, &stream, "order.cancelled", &serde_json::json!({ "orderId": order_id, "reason": reason }))
}

impl Projection for Inventory {
    type Event = Event;

    fn manifest() -> Manifest {
        Manifest::new("inventory", "1").event_types(["order.placed", "payment.failed", "payment.refunded"])
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Event>) -> Result<()> {
        let cause = event.position;
        match event.data {
            Event::Placed(order) => place(ctx, cause, order),
            Event::PaymentFailed(o) => release(ctx, cause, &o.order_id, "payment failed"),
            Event::PaymentRefunded(o) => release(ctx, cause, &o.order_id, "shipment failed"),
        }
    }

    /// `stock` with `{"productId": ...}`: the units available (20 for a
    /// product not seen yet); `order` with `{"orderId": ...}`: its
    /// reservation, or `null`.
    fn query(ctx: &mut Context<'_>, name: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        let arg = |field: &str| {
            args.get(field)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| reel_guest_sdk::Error::Failed(format!("query `{name}` needs {{\"{field}\": \"...\"}}")))
        };
        match name {
            "stock" => Ok(serde_json::json!(available(ctx, &arg("productId")?)?)),
            "order" => Ok(serde_json::to_value(ctx.kv().get_json::<Reservation>(&order_key(&arg("orderId")?))?)?),
            _ => Err(reel_guest_sdk::Error::Failed(format!("unknown query `{name}`"))),
        }
    }
}

impl Reactor for Inventory {
    fn emits() -> Emits {
        Emits::new(PREFIX)
    }
}

reel_guest_sdk::export_reactor!(Inventory);

#[cfg(test)]
mod tests {
    use reel_guest_sdk::RawEvent;
    use reel_guest_sdk::native::{self, MemoryHost};

    use super::*;

    fn event(position: i64, event_type: &str, data: serde_json::Value) -> RawEvent {
        RawEvent {
            position,
            stream_id: format!("s-{position}"),
            version: 1,
            event_type: event_type.into(),
            data: data.to_string(),
            metadata: "{}".into(),
            occurred_at: "2026-12-05T10:00:00.000000Z".into(),
        }
    }

    fn placed(position: i64, order: &str, quantity: i64) -> RawEvent {
        let items = [serde_json::json!({ "productId": "p-1", "quantity": quantity, "price": 2.5 })];
        let data = serde_json::json!({ "orderId": order, "customerId": "c-1", "items": items, "total": 2.5 });
        event(position, "order.placed", data)
    }

    #[test]
    fn reserves_until_stock_runs_out_and_releases_on_a_failed_payment() {
        let mut host = MemoryHost::default();
        let events = [
            placed(1, "o-1", 15),
            placed(2, "o-2", 6),
            event(3, "payment.failed", serde_json::json!({ "orderId": "o-1" })),
            placed(4, "o-3", 6),
            placed(5, "o-1", 1),
        ];
        native::handle::<Inventory, _>(&mut host, &events).unwrap();
        let types: Vec<_> = host.emitted.iter().map(|e| (e.cause, e.event_type.as_str())).collect();
        assert_eq!(
            types,
            [
                (1, "inventory.reserved"),
                (2, "inventory.reservation-failed"),
                (2, "order.cancelled"),
                (3, "inventory.released"),
                (3, "order.cancelled"),
                (4, "inventory.reserved"),
            ]
        );
        assert_eq!(host.kv.get("stock/p-1").unwrap(), b"14");
        assert!(host.emitted.iter().all(|e| e.stream_id.starts_with("inventory-o-")));
    }
}
