//! `shipping`: the seed's shipping service in a choreographed saga, as a
//! reactor (its partners: `inventory` and `payment-js`; the guide's "Sagas").
//!
//! - `payment.processed`: an order of at most [`MAX_LINE_ITEMS`] line items
//!   ships: `shipment.created`, and `order.shipped` with a tracking number
//!   (the event `order-summaries` folds into status `shipped`). An order
//!   with more line items cannot: `shipment.failed`, which payment answers
//!   with a refund and inventory then with a release.
//!
//! The line items come with `payment.processed` (payment copies them from
//! `inventory.reserved`), so shipping looks nothing up. Every emitted event
//! goes to the stream `shipping-{orderId}` and carries `orderId`. The read
//! model, in KV: `shipment/{orderId}` ([`Shipment`]). An order seen again is
//! ignored: it ships once.

use reel_guest_sdk::{Context, Emits, Envelope, Manifest, Projection, Reactor, Result, serde_json};
use serde::{Deserialize, Serialize};

/// Most line items a shipment takes.
pub const MAX_LINE_ITEMS: usize = 4;

/// The stream prefix of everything shipping emits.
pub const PREFIX: &str = "shipping-";

/// The events shipping reacts to.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    #[serde(rename = "payment.processed")]
    PaymentProcessed(PaymentProcessed),
}

/// `payment.processed`: the fields shipping reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentProcessed {
    pub order_id: String,
    /// The order's line items (their content is not read, only how many).
    pub items: Vec<serde_json::Value>,
}

/// What shipping did with an order (`shipment/{orderId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Shipment {
    /// `created` or `failed`.
    pub status: String,
    /// The tracking number of a created shipment.
    pub tracking_number: Option<String>,
}

pub struct Shipping;

impl Projection for Shipping {
    type Event = Event;

    fn manifest() -> Manifest {
        Manifest::new("shipping", "1").event_types(["payment.processed"])
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Event>) -> Result<()> {
        let Event::PaymentProcessed(paid) = event.data;
        let key = format!("shipment/{}", paid.order_id);
        if ctx.kv().get(&key).is_some() {
            return Ok(());
        }
        let (cause, order_id) = (event.position, paid.order_id);
        let stream = format!("{PREFIX}{order_id}");
        if paid.items.len() > MAX_LINE_ITEMS {
            ctx.kv().set_json(&key, &Shipment { status: "failed".into(), tracking_number: None })?;
            let reason = format!("{} line items; a shipment takes at most {MAX_LINE_ITEMS}", paid.items.len());
            return ctx.emit(
                cause,
                &stream,
                "shipment.failed",
                &serde_json::json!({ "orderId": order_id, "reason": reason }),
            );
        }
        // Derived from the cause, not a clock or a counter: a replay or a
        // new version computes the same number.
        let tracking = format!("TRK{cause:010}");
        ctx.kv().set_json(&key, &Shipment { status: "created".into(), tracking_number: Some(tracking.clone()) })?;
        let created = serde_json::json!({ "orderId": order_id, "shipmentId": format!("ship-{order_id}") });
        ctx.emit(cause, &stream, "shipment.created", &created)?;
        let shipped = serde_json::json!({ "orderId": order_id, "trackingNumber": tracking });
        ctx.emit(cause, &stream, "order.shipped", &shipped)
    }

    /// `shipment` with `{"orderId": ...}`: the order's [`Shipment`], or `null`.
    fn query(ctx: &mut Context<'_>, name: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        let order_id = args.get("orderId").and_then(serde_json::Value::as_str);
        match (name, order_id) {
            ("shipment", Some(id)) => {
                Ok(serde_json::to_value(ctx.kv().get_json::<Shipment>(&format!("shipment/{id}"))?)?)
            }
            _ => Err(reel_guest_sdk::Error::Failed(format!(
                "unknown query `{name}` (try `shipment` with {{\"orderId\"}})"
            ))),
        }
    }
}

impl Reactor for Shipping {
    fn emits() -> Emits {
        Emits::new(PREFIX)
    }
}

reel_guest_sdk::export_reactor!(Shipping);

#[cfg(test)]
mod tests {
    use reel_guest_sdk::RawEvent;
    use reel_guest_sdk::native::{self, MemoryHost};

    use super::*;

    fn paid(position: i64, order: &str, line_items: usize) -> RawEvent {
        let items: Vec<_> = (0..line_items).map(|i| serde_json::json!({ "productId": format!("p-{i}") })).collect();
        RawEvent {
            position,
            stream_id: format!("payment-{order}"),
            version: 1,
            event_type: "payment.processed".into(),
            data: serde_json::json!({ "orderId": order, "items": items }).to_string(),
            metadata: "{}".into(),
            occurred_at: "2026-12-05T10:00:00.000000Z".into(),
        }
    }

    #[test]
    fn ships_up_to_four_line_items_once() {
        let mut host = MemoryHost::default();
        native::handle::<Shipping, _>(&mut host, &[paid(7, "o-1", 4), paid(8, "o-2", 5), paid(9, "o-1", 1)]).unwrap();
        let emitted: Vec<_> =
            host.emitted.iter().map(|e| (e.cause, e.stream_id.as_str(), e.event_type.as_str())).collect();
        assert_eq!(
            emitted,
            [
                (7, "shipping-o-1", "shipment.created"),
                (7, "shipping-o-1", "order.shipped"),
                (8, "shipping-o-2", "shipment.failed"),
            ]
        );
        assert_eq!(host.emitted[1].data, r#"{"orderId":"o-1","trackingNumber":"TRK0000000007"}"#);
    }
}
