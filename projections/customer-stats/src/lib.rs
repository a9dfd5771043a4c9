//! `customer-stats`: per customer, `{"orders", "cancelled", "total_spent"}` as
//! JSON under the key `customer/{customerId}`.
//!
//! - `orders` counts placed orders, `cancelled` the cancelled ones;
//! - `total_spent` sums the totals of orders not cancelled, in exact cents,
//!   written with two decimals (`{"orders":2,"cancelled":0,"total_spent":31.50}`).
//!
//! A cancellation names only the order, so each placed order is remembered
//! under `order/{orderId}` with its customer and amount.

use reel_guest_sdk::{Context, Envelope, Error, Manifest, Projection, Result, serde_json};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    #[serde(rename = "order.placed")]
    Placed(OrderPlaced),
    #[serde(rename = "order.cancelled")]
    Cancelled(OrderCancelled),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub total: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: String,
}

/// The value under `customer/{id}`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CustomerStats {
    pub orders: i64,
    pub cancelled: i64,
    pub total_spent_cents: i64,
}

impl CustomerStats {
    /// The stored JSON, written by hand so every language's version of this
    /// projection produces the same bytes.
    pub fn to_json(self) -> String {
        let cents = self.total_spent_cents;
        let sign = if cents < 0 { "-" } else { "" };
        format!(
            r#"{{"orders":{},"cancelled":{},"total_spent":{sign}{}.{:02}}}"#,
            self.orders,
            self.cancelled,
            cents.abs() / 100,
            cents.abs() % 100
        )
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Stored {
            orders: i64,
            cancelled: i64,
            total_spent: f64,
        }
        let stored: Stored = serde_json::from_slice(bytes)?;
        Ok(Self { orders: stored.orders, cancelled: stored.cancelled, total_spent_cents: to_cents(stored.total_spent) })
    }
}

/// What is remembered of a placed order, under `order/{id}`.
#[derive(Serialize, Deserialize)]
struct OrderRef {
    customer: String,
    cents: i64,
    cancelled: bool,
}

/// Amounts are decimals with two places; cents make the sums exact.
pub fn to_cents(amount: f64) -> i64 {
    (amount * 100.0 + 0.5).floor() as i64
}

fn load(ctx: &mut Context<'_>, key: &str) -> Result<CustomerStats> {
    match ctx.kv().get(key) {
        Some(bytes) => CustomerStats::from_json(&bytes),
        None => Ok(CustomerStats::default()),
    }
}

pub struct CustomerStatsProjection;

impl Projection for CustomerStatsProjection {
    type Event = OrderEvent;

    fn manifest() -> Manifest {
        Manifest::new("customer-stats", "1").event_types(["order.placed", "order.cancelled"])
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, OrderEvent>) -> Result<()> {
        match event.data {
            OrderEvent::Placed(placed) => {
                let cents = to_cents(placed.total);
                let key = format!("customer/{}", placed.customer_id);
                let mut stats = load(ctx, &key)?;
                stats.orders += 1;
                stats.total_spent_cents += cents;
                ctx.kv().set(&key, stats.to_json());
                let order = OrderRef { customer: placed.customer_id, cents, cancelled: false };
                ctx.kv().set_json(&format!("order/{}", placed.order_id), &order)?;
            }
            OrderEvent::Cancelled(cancelled) => {
                let order_key = format!("order/{}", cancelled.order_id);
                let Some(mut order) = ctx.kv().get_json::<OrderRef>(&order_key)? else {
                    return Err(Error::InvalidEvent(format!("order {} was never placed", cancelled.order_id)));
                };
                if order.cancelled {
                    return Ok(());
                }
                let key = format!("customer/{}", order.customer);
                let mut stats = load(ctx, &key)?;
                stats.cancelled += 1;
                stats.total_spent_cents -= order.cents;
                ctx.kv().set(&key, stats.to_json());
                order.cancelled = true;
                ctx.kv().set_json(&order_key, &order)?;
            }
        }
        Ok(())
    }

    fn query(ctx: &mut Context<'_>, name: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        match name {
            "customer" => {
                let id = args
                    .get("customerId")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| Error::Failed("customer needs {\"customerId\": \"...\"}".into()))?;
                match ctx.kv().get(&format!("customer/{id}")) {
                    Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
                    None => Ok(serde_json::Value::Null),
                }
            }
            other => Err(Error::Failed(format!("unknown query `{other}`; this projection has `customer`"))),
        }
    }
}

reel_guest_sdk::export!(CustomerStatsProjection);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_has_exact_cents() {
        let stats = CustomerStats { orders: 2, cancelled: 1, total_spent_cents: 3150 };
        assert_eq!(stats.to_json(), r#"{"orders":2,"cancelled":1,"total_spent":31.50}"#);
        assert_eq!(CustomerStats::from_json(stats.to_json().as_bytes()).unwrap(), stats);
        assert_eq!(to_cents(19.99), 1999);
        assert_eq!(to_cents(0.07), 7);
    }
}
