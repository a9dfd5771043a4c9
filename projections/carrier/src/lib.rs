//! `carrier`: a participant of the `order-fulfillment` saga. It answers
//! the manager's requests on `carrier-{orderId}` (reel carries the saga's
//! correlation id on):
//!
//! - `fulfillment.ship-requested` `{"orderId", "items"}`:
//!   `carrier.shipped` with a `shipmentId` and `trackingNumber`, or
//!   `carrier.shipment-failed` when the order has more than [`MAX_LINES`]
//!   line items (the deterministic rule: a history has every outcome);
//! - `fulfillment.cancel-shipment-requested` `{"orderId", "shipmentId"}`
//!   (the compensation, when the customer cancels a shipped order):
//!   `carrier.shipment-cancelled`.
//!
//! Its read model (KV): `shipment/{orderId}` each shipment's state.

use reel_guest_sdk::serde_json::{Value, json};
use reel_guest_sdk::{Context, Emits, Envelope, Manifest, Projection, Reactor, Result};
use serde::Deserialize;

/// An order with more line items than this does not fit a parcel.
pub const MAX_LINES: usize = 4;

/// A shipment request or its cancellation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub order_id: String,
    #[serde(default)]
    pub items: Vec<Value>,
    #[serde(default)]
    pub shipment_id: Option<String>,
}

/// The requests it answers.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "fulfillment.ship-requested")]
    Ship(Request),
    #[serde(rename = "fulfillment.cancel-shipment-requested")]
    Cancel(Request),
}

/// The participant.
pub struct Carrier;

impl Projection for Carrier {
    type Event = Event;

    fn manifest() -> Manifest {
        Manifest::new("carrier", "1")
            .event_types(["fulfillment.ship-requested", "fulfillment.cancel-shipment-requested"])
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Event>) -> Result<()> {
        let cause = event.position;
        match event.data {
            Event::Ship(r) => {
                let stream = format!("carrier-{}", r.order_id);
                let key = format!("shipment/{}", r.order_id);
                if r.items.len() > MAX_LINES {
                    ctx.kv().set_json(&key, &json!({ "status": "failed" }))?;
                    let reason = format!("{} line items, at most {MAX_LINES} a parcel", r.items.len());
                    let data = json!({ "orderId": r.order_id, "reason": reason });
                    return ctx.emit(cause, &stream, "carrier.shipment-failed", &data);
                }
                let shipment_id = format!("shp-{}", r.order_id);
                let tracking = format!("TRK-{}", r.order_id);
                ctx.kv().set_json(&key, &json!({ "status": "shipped", "shipmentId": shipment_id }))?;
                let data = json!({ "orderId": r.order_id, "shipmentId": shipment_id, "trackingNumber": tracking });
                ctx.emit(cause, &stream, "carrier.shipped", &data)
            }
            Event::Cancel(r) => {
                let stream = format!("carrier-{}", r.order_id);
                let key = format!("shipment/{}", r.order_id);
                ctx.kv().set_json(&key, &json!({ "status": "cancelled", "shipmentId": r.shipment_id }))?;
                let data = json!({ "orderId": r.order_id, "shipmentId": r.shipment_id });
                ctx.emit(cause, &stream, "carrier.shipment-cancelled", &data)
            }
        }
    }
}

impl Reactor for Carrier {
    fn emits() -> Emits {
        Emits::new("carrier-")
    }
}

reel_guest_sdk::export_reactor!(Carrier);
