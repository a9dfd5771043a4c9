//! A deterministic order workload, and the read models it must produce.
//!
//! Used by `reel generate`, the test suite and the benchmarks (through
//! `reel::testing`; it sits with the command, above the runtime's layers,
//! having its own INSERT and COPY into an events table): N orders,
//! each `order.placed` with 1 to 5 items, then about 70% `order.shipped` and
//! 10% `order.cancelled`, over about N/20 customers. A follow-up lands a
//! random distance (up to `follow_up_window` events) after its order. The
//! expected read models are folded here independently of any projection code.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::Serialize;
use serde_json::json;

/// Shape of a generated workload.
#[derive(Debug, Clone)]
pub struct OrderWorkload {
    /// Number of orders (each is 1 to 2 events).
    pub orders: usize,
    /// Number of distinct customers.
    pub customers: usize,
    /// Follow-ups land at most this many events after their order.
    pub follow_up_window: usize,
    /// RNG seed: the same seed gives the same events.
    pub seed: u64,
}

impl OrderWorkload {
    /// `orders` orders over `orders / 20` customers, follow-ups within 20,000
    /// events.
    pub fn new(orders: usize, seed: u64) -> Self {
        Self { orders, customers: (orders / 20).max(1), follow_up_window: 20_000, seed }
    }
}

/// One generated event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderEvent {
    /// `order-{orderId}`.
    pub stream_id: String,
    /// Version in the stream (1 for `order.placed`, 2 for its follow-up).
    pub version: i64,
    /// `order.placed`, `order.shipped` or `order.cancelled`.
    pub event_type: &'static str,
    /// The payload.
    pub data: serde_json::Value,
}

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Generate the events, in append order.
pub fn generate(workload: &OrderWorkload) -> Vec<OrderEvent> {
    let mut rng = Rng(workload.seed);
    let mut events = Vec::with_capacity(workload.orders * 9 / 5);
    // Follow-ups waiting for their slot: (due index, tie-breaker, event).
    let mut pending: BinaryHeap<Reverse<(usize, usize, PendingFollowUp)>> = BinaryHeap::new();
    let window = workload.follow_up_window.max(1) as u64;
    for i in 0..workload.orders {
        while let Some(Reverse((due, _, _))) = pending.peek() {
            if *due > events.len() {
                break;
            }
            let Reverse((_, _, follow_up)) = pending.pop().expect("peeked");
            events.push(follow_up.event());
        }
        let order_id = format!("{:016x}", rng.next());
        let customer_id = format!("c-{:06}", rng.range(0, workload.customers as u64 - 1));
        let item_count = rng.range(1, 5);
        let mut total_cents = 0u64;
        let items: Vec<serde_json::Value> = (0..item_count)
            .map(|_| {
                let quantity = rng.range(1, 3);
                let price_cents = rng.range(100, 10_000);
                total_cents += quantity * price_cents;
                json!({
                    "productId": format!("p-{:04}", rng.range(0, 999)),
                    "quantity": quantity,
                    "price": price_cents as f64 / 100.0,
                })
            })
            .collect();
        events.push(OrderEvent {
            stream_id: format!("order-{order_id}"),
            version: 1,
            event_type: "order.placed",
            data: json!({
                "orderId": order_id,
                "customerId": customer_id,
                "items": items,
                "total": total_cents as f64 / 100.0,
            }),
        });
        let roll = rng.range(0, 99);
        let kind = match roll {
            0..=69 => Some(FollowUp::Shipped(format!("TRK{:010}", rng.range(0, 9_999_999_999)))),
            70..=79 => Some(FollowUp::Cancelled),
            _ => None,
        };
        if let Some(kind) = kind {
            let due = events.len() + rng.range(1, window) as usize - 1;
            pending.push(Reverse((due, i, PendingFollowUp { order_id, kind })));
        }
    }
    while let Some(Reverse((_, _, follow_up))) = pending.pop() {
        events.push(follow_up.event());
    }
    events
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum FollowUp {
    Shipped(String),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PendingFollowUp {
    order_id: String,
    kind: FollowUp,
}

impl PendingFollowUp {
    fn event(self) -> OrderEvent {
        let stream_id = format!("order-{}", self.order_id);
        match self.kind {
            FollowUp::Shipped(tracking) => OrderEvent {
                stream_id,
                version: 2,
                event_type: "order.shipped",
                data: json!({ "orderId": self.order_id, "trackingNumber": tracking }),
            },
            FollowUp::Cancelled => OrderEvent {
                stream_id,
                version: 2,
                event_type: "order.cancelled",
                data: json!({ "orderId": self.order_id, "reason": "customer request" }),
            },
        }
    }
}

/// A row of `order_summaries` as the fold computes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderSummary {
    /// Order id.
    pub order_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Sum of item quantities.
    pub item_count: i64,
    /// Order total.
    pub total: f64,
    /// `placed`, `shipped` or `cancelled`.
    pub status: String,
    /// `occurred_at` of the placed event.
    pub placed_at: String,
    /// Tracking number, once shipped.
    pub tracking_number: Option<String>,
    /// `occurred_at` of the shipped event.
    pub shipped_at: Option<String>,
}

/// The read models a correct run produces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expected {
    /// `order_summaries` rows by order id.
    pub orders: BTreeMap<String, OrderSummary>,
    /// `customer-stats` values (the exact stored JSON) by key `customer/{id}`.
    pub customers: BTreeMap<String, String>,
}

/// One stored event as the fold needs it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its type.
    pub event_type: String,
    /// Its payload (JSON text).
    pub data: String,
    /// Its `occurred_at`.
    pub occurred_at: String,
}

/// Fold stored events (in position order) into the expected read models.
pub fn fold(events: &[StoredEvent]) -> Expected {
    #[derive(Default, Clone, Copy)]
    struct Stats {
        orders: i64,
        cancelled: i64,
        cents: i64,
    }
    let mut expected = Expected::default();
    let mut stats: BTreeMap<String, Stats> = BTreeMap::new();
    // order id -> (customer, cents, cancelled)
    let mut placed: BTreeMap<String, (String, i64, bool)> = BTreeMap::new();
    for event in events {
        let data: serde_json::Value = match serde_json::from_str(&event.data) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let order_id = data["orderId"].as_str().unwrap_or_default().to_owned();
        match event.event_type.as_str() {
            "order.placed" => {
                let customer_id = data["customerId"].as_str().unwrap_or_default().to_owned();
                let total = data["total"].as_f64().unwrap_or_default();
                let item_count = data["items"]
                    .as_array()
                    .map(|items| items.iter().map(|i| i["quantity"].as_i64().unwrap_or(0)).sum())
                    .unwrap_or(0);
                expected.orders.insert(
                    order_id.clone(),
                    OrderSummary {
                        order_id: order_id.clone(),
                        customer_id: customer_id.clone(),
                        item_count,
                        total,
                        status: "placed".into(),
                        placed_at: event.occurred_at.clone(),
                        tracking_number: None,
                        shipped_at: None,
                    },
                );
                let cents = (total * 100.0 + 0.5).floor() as i64;
                let s = stats.entry(customer_id.clone()).or_default();
                s.orders += 1;
                s.cents += cents;
                placed.insert(order_id, (customer_id, cents, false));
            }
            "order.shipped" => {
                if let Some(row) = expected.orders.get_mut(&order_id) {
                    row.status = "shipped".into();
                    row.tracking_number = data["trackingNumber"].as_str().map(str::to_owned);
                    row.shipped_at = Some(event.occurred_at.clone());
                }
            }
            "order.cancelled" => {
                if let Some(row) = expected.orders.get_mut(&order_id) {
                    row.status = "cancelled".into();
                }
                if let Some((customer, cents, cancelled)) = placed.get_mut(&order_id)
                    && !*cancelled
                {
                    *cancelled = true;
                    let s = stats.entry(customer.clone()).or_default();
                    s.cancelled += 1;
                    s.cents -= *cents;
                }
            }
            _ => {}
        }
    }
    for (customer, s) in stats {
        let sign = if s.cents < 0 { "-" } else { "" };
        let value = format!(
            r#"{{"orders":{},"cancelled":{},"total_spent":{sign}{}.{:02}}}"#,
            s.orders,
            s.cancelled,
            s.cents.abs() / 100,
            s.cents.abs() % 100
        );
        expected.customers.insert(format!("customer/{customer}"), value);
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_shaped_like_the_spec() {
        let w = OrderWorkload { orders: 2000, customers: 100, follow_up_window: 500, seed: 7 };
        let a = generate(&w);
        assert_eq!(a, generate(&w));
        let count = |t: &str| a.iter().filter(|e| e.event_type == t).count();
        assert_eq!(count("order.placed"), 2000);
        let shipped = count("order.shipped") as f64 / 2000.0;
        let cancelled = count("order.cancelled") as f64 / 2000.0;
        assert!((0.65..0.75).contains(&shipped), "{shipped}");
        assert!((0.07..0.13).contains(&cancelled), "{cancelled}");
        // Every follow-up comes after its order, as version 2 of the stream.
        let mut seen = std::collections::HashSet::new();
        for e in &a {
            if e.version == 1 {
                assert!(seen.insert(e.stream_id.clone()));
            } else {
                assert!(seen.contains(&e.stream_id), "follow-up before its order");
            }
        }
    }
}

/// Loading a workload into an event log.
pub mod load {
    use std::path::Path;

    use super::OrderEvent;
    use reel_model::time::{format_micros, now_micros};

    /// Insert `events` into the SQLite events table at `db` in one
    /// transaction (the table must exist), stamped one millisecond apart
    /// ending now. Returns the last position.
    pub fn insert_sqlite(db: &Path, events: &[OrderEvent]) -> rusqlite::Result<i64> {
        let mut conn = rusqlite::Connection::open(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let start = now_micros() - events.len() as i64 * 1000;
        {
            let mut insert = tx.prepare(
                "INSERT INTO events (stream_id, version, event_type, data, metadata, occurred_at) \
                 VALUES (?1, ?2, ?3, ?4, '{}', ?5)",
            )?;
            for (i, e) in events.iter().enumerate() {
                let at = format_micros(start + i as i64 * 1000);
                insert.execute(rusqlite::params![e.stream_id, e.version, e.event_type, e.data.to_string(), at])?;
            }
        }
        let last = tx.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
        tx.commit()?;
        Ok(last)
    }

    /// Load `events` into the PostgreSQL events table at `url` with one
    /// `COPY` (the table must exist), stamped one millisecond apart ending
    /// now. Returns the last position.
    pub async fn copy_postgres(url: &str, events: &[OrderEvent]) -> Result<i64, String> {
        use futures_util::SinkExt;
        let (client, connection) =
            tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| format!("connecting: {e}"))?;
        let connection = tokio::spawn(connection);
        let copy = async {
            let sink =
                client.copy_in("COPY events (stream_id, version, event_type, data, occurred_at) FROM STDIN").await?;
            futures_util::pin_mut!(sink);
            let start = now_micros() - events.len() as i64 * 1000;
            let mut buf = String::new();
            for (i, e) in events.iter().enumerate() {
                // Text format: a backslash starts an escape. JSON has no raw
                // tabs or newlines; its backslashes are doubled.
                let data = e.data.to_string().replace('\\', "\\\\");
                let at = format_micros(start + i as i64 * 1000);
                buf.push_str(&format!("{}\t{}\t{}\t{}\t{}\n", e.stream_id, e.version, e.event_type, data, at));
                if buf.len() > 1 << 20 {
                    sink.send(bytes::Bytes::from(std::mem::take(&mut buf))).await?;
                }
            }
            sink.send(bytes::Bytes::from(buf)).await?;
            sink.finish().await?;
            client.query_one("SELECT coalesce(max(id), 0) FROM events", &[]).await.map(|row| row.get::<_, i64>(0))
        };
        let last = copy.await.map_err(|e| format!("copying events: {e}"));
        drop(client);
        let _ = connection.await;
        last
    }

    /// Append `events` through a reel server's `POST /events` (one request
    /// per event, with its expected version), over one keep-alive connection.
    /// Returns the last position.
    pub fn append_http(base_url: &str, events: &[OrderEvent]) -> Result<i64, String> {
        append_through(crate::client::Client::connect(base_url)?, events)
    }

    /// [`append_http`] over a connected client (one carrying a token, say).
    pub fn append_through(mut client: crate::client::Client, events: &[OrderEvent]) -> Result<i64, String> {
        let mut last = 0;
        for e in events {
            let body = serde_json::json!({
                "stream_id": e.stream_id,
                "expected_version": e.version - 1,
                "events": [{ "event_type": e.event_type, "data": e.data }],
            })
            .to_string();
            let response = client.post("/events", Some(&body))?;
            if response.status != 201 {
                // A seed names its streams: the same seed twice meets its own events.
                let hint = if response.status == 409 {
                    " (these orders were appended before: run it with another --seed)"
                } else {
                    ""
                };
                return Err(format!(
                    "append of {} failed: HTTP {}: {}{hint}",
                    e.stream_id,
                    response.status,
                    response.message()
                ));
            }
            last = response.json()?["positions"][0].as_i64().unwrap_or(last);
        }
        Ok(last)
    }
}
