//! `warehouse`: a participant of the `order-fulfillment` saga. It answers
//! the manager's requests, each on `warehouse-{orderId}`, its correlation
//! id carried on by reel:
//!
//! - `fulfillment.reserve-requested` `{"orderId", "items": [{"productId",
//!   "quantity"}]}`: `warehouse.reserved`, or `warehouse.reservation-failed`
//!   when a line asks for more than [`MAX_PER_LINE`] units of a product (the
//!   deterministic stock-out rule: a history has every outcome);
//! - `fulfillment.release-requested` (the compensation): gives the units
//!   back, `warehouse.released`.
//!
//! Its read model (KV): `reserved/{productId}` the units held for orders
//! now, `order/{orderId}` what it did for the order.

use reel_guest_sdk::serde_json::json;
use reel_guest_sdk::{Context, Emits, Envelope, Manifest, Projection, Reactor, Result};
use serde::{Deserialize, Serialize};

/// The most units of one product a line may ask for; more is a stock-out.
pub const MAX_PER_LINE: i64 = 5;

/// A line of a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub product_id: String,
    pub quantity: i64,
}

/// A reservation or release request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub order_id: String,
    pub items: Vec<Item>,
}

/// The requests it answers.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "fulfillment.reserve-requested")]
    Reserve(Request),
    #[serde(rename = "fulfillment.release-requested")]
    Release(Request),
}

/// What it did for an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Held {
    Reserved,
    Refused,
    Released,
}

/// The participant.
pub struct Warehouse;

fn add(ctx: &mut Context<'_>, items: &[Item], sign: i64) -> Result<()> {
    for item in items {
        let key = format!("reserved/{}", item.product_id);
        let units: i64 = ctx.kv().get_json(&key)?.unwrap_or(0);
        ctx.kv().set_json(&key, &(units + sign * item.quantity))?;
    }
    Ok(())
}

impl Projection for Warehouse {
    type Event = Event;

    fn manifest() -> Manifest {
        Manifest::new("warehouse", "1").event_types(["fulfillment.reserve-requested", "fulfillment.release-requested"])
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Event>) -> Result<()> {
        let cause = event.position;
        match event.data {
            Event::Reserve(r) => {
                let stream = format!("warehouse-{}", r.order_id);
                let order = format!("order/{}", r.order_id);
                if ctx.kv().get(&order).is_some() {
                    return Ok(()); // answered already
                }
                if let Some(short) = r.items.iter().find(|i| i.quantity > MAX_PER_LINE) {
                    ctx.kv().set_json(&order, &Held::Refused)?;
                    let reason = format!(
                        "{} units of {} asked, at most {MAX_PER_LINE} a line",
                        short.quantity, short.product_id
                    );
                    let data = json!({ "orderId": r.order_id, "productId": short.product_id, "reason": reason });
                    return ctx.emit(cause, &stream, "warehouse.reservation-failed", &data);
                }
                add(ctx, &r.items, 1)?;
                ctx.kv().set_json(&order, &Held::Reserved)?;
                ctx.emit(cause, &stream, "warehouse.reserved", &json!({ "orderId": r.order_id, "items": r.items }))
            }
            Event::Release(r) => {
                let stream = format!("warehouse-{}", r.order_id);
                let order = format!("order/{}", r.order_id);
                if ctx.kv().get_json::<Held>(&order)? == Some(Held::Reserved) {
                    add(ctx, &r.items, -1)?;
                    ctx.kv().set_json(&order, &Held::Released)?;
                }
                ctx.emit(cause, &stream, "warehouse.released", &json!({ "orderId": r.order_id, "items": r.items }))
            }
        }
    }
}

impl Reactor for Warehouse {
    fn emits() -> Emits {
        Emits::new("warehouse-")
    }
}

reel_guest_sdk::export_reactor!(Warehouse);
