//! `order`: the seed's `Order` aggregate and `OrderCommandHandler` as a
//! decider. It owns the streams `order-{id}` and decides three commands:
//!
//! - `place` `{"customerId", "items": [{"productId", "quantity", "price"}]}`:
//!   refused with no items, or when the order exists; emits `order.placed`
//!   with the total of the items;
//! - `ship` `{"trackingNumber"}`: refused unless the order is placed; emits
//!   `order.shipped`;
//! - `cancel` `{"reason"}`: refused when the order is shipped, already
//!   cancelled, or was never placed; emits `order.cancelled`.
//!
//! Its events are the ones `order-summaries` and `customer-stats` fold.

use reel_guest_sdk::{Command, Decider, DeciderManifest, Envelope, NewEvent, Rejection, Result, serde_json};
use serde::{Deserialize, Serialize};

/// A line item, as `order.placed` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub product_id: String,
    pub quantity: i64,
    pub price: f64,
}

/// The events of an order stream.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    #[serde(rename = "order.placed")]
    Placed {
        #[serde(rename = "customerId")]
        customer_id: String,
        items: Vec<LineItem>,
        total: f64,
    },
    #[serde(rename = "order.shipped")]
    Shipped {},
    #[serde(rename = "order.cancelled")]
    Cancelled {},
}

/// The commands an order takes.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderCommand {
    #[serde(rename = "place")]
    Place {
        #[serde(rename = "customerId")]
        customer_id: String,
        items: Vec<LineItem>,
    },
    #[serde(rename = "ship")]
    Ship {
        #[serde(rename = "trackingNumber")]
        tracking_number: String,
    },
    #[serde(rename = "cancel")]
    Cancel { reason: String },
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Draft,
    Placed,
    Shipped,
    Cancelled,
}

/// The seed's `OrderState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderState {
    pub status: Status,
    pub customer_id: Option<String>,
    pub items: Vec<LineItem>,
    pub total: f64,
}

/// The decider.
pub struct Order;

/// The total of `items`, in whole cents as the workload counts them.
fn total(items: &[LineItem]) -> f64 {
    let cents: i64 = items.iter().map(|i| i.quantity * (i.price * 100.0).round() as i64).sum();
    cents as f64 / 100.0
}

impl Decider for Order {
    type State = OrderState;
    type Event = OrderEvent;
    type Command = OrderCommand;

    fn manifest() -> DeciderManifest {
        DeciderManifest::new("order", "1", "order-").command_types(["place", "ship", "cancel"])
    }

    fn evolve(state: &mut OrderState, event: Envelope<'_, OrderEvent>) -> Result<()> {
        match event.data {
            OrderEvent::Placed { customer_id, items, total } => {
                state.status = Status::Placed;
                state.customer_id = Some(customer_id);
                state.items = items;
                state.total = total;
            }
            OrderEvent::Shipped {} => state.status = Status::Shipped,
            OrderEvent::Cancelled {} => state.status = Status::Cancelled,
        }
        Ok(())
    }

    fn decide(state: &OrderState, command: Command<'_, OrderCommand>) -> Result<Vec<NewEvent>, Rejection> {
        let order_id = command.stream_id.strip_prefix("order-").unwrap_or(command.stream_id);
        let event = match command.data {
            OrderCommand::Place { customer_id, items } => {
                if state.status != Status::Draft {
                    return Err(Rejection::rejected(format!(
                        "order {order_id} exists: it is {}",
                        describe(state.status)
                    )));
                }
                if items.is_empty() {
                    return Err(Rejection::rejected("Order must have at least one item"));
                }
                if let Some(bad) = items.iter().find(|i| i.quantity < 1 || i.price < 0.0) {
                    return Err(Rejection::InvalidCommand(format!(
                        "item {} needs a quantity of at least 1 and a price of at least 0",
                        bad.product_id
                    )));
                }
                let total = total(&items);
                let data = serde_json::json!({
                    "orderId": order_id, "customerId": customer_id, "items": items, "total": total,
                });
                NewEvent::new("order.placed", &data)
            }
            OrderCommand::Ship { tracking_number } => {
                if state.status != Status::Placed {
                    return Err(Rejection::rejected(format!(
                        "cannot ship order {order_id}: it is {}",
                        describe(state.status)
                    )));
                }
                NewEvent::new(
                    "order.shipped",
                    &serde_json::json!({ "orderId": order_id, "trackingNumber": tracking_number }),
                )
            }
            OrderCommand::Cancel { reason } => {
                if state.status != Status::Placed {
                    return Err(Rejection::rejected(format!(
                        "cannot cancel order {order_id}: it is {}",
                        describe(state.status)
                    )));
                }
                NewEvent::new("order.cancelled", &serde_json::json!({ "orderId": order_id, "reason": reason }))
            }
        };
        Ok(vec![event])
    }
}

/// A status as a refusal names it.
fn describe(status: Status) -> &'static str {
    match status {
        Status::Draft => "not placed",
        Status::Placed => "placed",
        Status::Shipped => "already shipped",
        Status::Cancelled => "already cancelled",
    }
}

reel_guest_sdk::export_decider!(Order);
