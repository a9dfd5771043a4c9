//! `order-summaries`: one row per order, kept in SQL.
//!
//! - `order.placed` upserts the row with status `placed`;
//! - `order.shipped` sets status `shipped`, the tracking number and `shipped_at`;
//! - `order.cancelled` sets status `cancelled`.
//!
//! `item_count` is the sum of the items' quantities. Timestamps come from the
//! event's `occurred_at`. The query `customer-orders` with `{"customerId": ...}`
//! returns that customer's orders, newest `placed_at` first, at most 50.

use reel_guest_sdk::{Context, Envelope, Error, Manifest, Projection, Result, params, serde_json};
use serde::Deserialize;

/// The events this projection reads.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    #[serde(rename = "order.placed")]
    Placed(OrderPlaced),
    #[serde(rename = "order.shipped")]
    Shipped(OrderShipped),
    #[serde(rename = "order.cancelled")]
    Cancelled(OrderCancelled),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub total: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub product_id: String,
    pub quantity: i64,
    pub price: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderShipped {
    pub order_id: String,
    pub tracking_number: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

pub struct OrderSummaries;

const UPSERT_PLACED: &str = "INSERT INTO order_summaries \
    (order_id, customer_id, item_count, total, status, placed_at) \
    VALUES ($1, $2, $3, $4, 'placed', $5) \
    ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
    item_count = excluded.item_count, total = excluded.total, status = 'placed', \
    placed_at = excluded.placed_at";

const MARK_SHIPPED: &str =
    "UPDATE order_summaries SET status = 'shipped', tracking_number = $2, shipped_at = $3 WHERE order_id = $1";

const MARK_CANCELLED: &str = "UPDATE order_summaries SET status = 'cancelled' WHERE order_id = $1";

const CUSTOMER_ORDERS: &str = "SELECT order_id, customer_id, item_count, total, status, placed_at, \
    tracking_number, shipped_at FROM order_summaries WHERE customer_id = $1 \
    ORDER BY placed_at DESC, order_id DESC LIMIT 50";

impl Projection for OrderSummaries {
    type Event = OrderEvent;

    fn manifest() -> Manifest {
        Manifest::new("order-summaries", "1").event_types(["order.placed", "order.shipped", "order.cancelled"])
    }

    fn init(ctx: &mut Context<'_>) -> Result<()> {
        let mut sql = ctx.sql();
        sql.execute(
            "CREATE TABLE IF NOT EXISTS order_summaries (
                order_id TEXT PRIMARY KEY,
                customer_id TEXT NOT NULL,
                item_count BIGINT NOT NULL,
                total DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                placed_at TEXT NOT NULL,
                tracking_number TEXT,
                shipped_at TEXT
            )",
            params![],
        );
        sql.execute(
            "CREATE INDEX IF NOT EXISTS order_summaries_by_customer ON order_summaries (customer_id, placed_at)",
            params![],
        );
        Ok(())
    }

    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, OrderEvent>) -> Result<()> {
        let mut sql = ctx.sql();
        match event.data {
            OrderEvent::Placed(placed) => {
                let item_count: i64 = placed.items.iter().map(|item| item.quantity).sum();
                sql.execute(
                    UPSERT_PLACED,
                    params![placed.order_id, placed.customer_id, item_count, placed.total, event.occurred_at],
                );
            }
            OrderEvent::Shipped(shipped) => {
                sql.execute(MARK_SHIPPED, params![shipped.order_id, shipped.tracking_number, event.occurred_at]);
            }
            OrderEvent::Cancelled(cancelled) => {
                sql.execute(MARK_CANCELLED, params![cancelled.order_id]);
            }
        }
        Ok(())
    }

    fn query(ctx: &mut Context<'_>, name: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        match name {
            "customer-orders" => {
                let customer_id = args
                    .get("customerId")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| Error::Failed("customer-orders needs {\"customerId\": \"...\"}".into()))?;
                let rows = ctx.sql().query(CUSTOMER_ORDERS, params![customer_id])?;
                Ok(rows.to_json())
            }
            other => Err(Error::Failed(format!("unknown query `{other}`; this projection has `customer-orders`"))),
        }
    }
}

reel_guest_sdk::export!(OrderSummaries);
