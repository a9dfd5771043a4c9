//! The tutorial projector: one transaction and one statement per event.

use std::time::Instant;

use reel::testing::workload::StoredEvent;
use serde_json::Value;

/// The statement `order-summaries` issued for an event before it folded its
/// batches (ADR 16): what the hand-written loop sends.
fn order_statement(e: &StoredEvent) -> (&'static str, Vec<String>) {
    let d: Value = serde_json::from_str(&e.data).unwrap();
    let id = d["orderId"].as_str().unwrap().to_owned();
    match e.event_type.as_str() {
        "order.placed" => {
            let count: i64 = d["items"].as_array().unwrap().iter().map(|i| i["quantity"].as_i64().unwrap()).sum();
            (
                "INSERT INTO hw_orders (order_id, customer_id, item_count, total, status, placed_at) \
                 VALUES ($1, $2, $3::text::bigint, $4::text::float8, 'placed', $5) \
                 ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, \
                 item_count = excluded.item_count, total = excluded.total, status = 'placed', placed_at = excluded.placed_at",
                vec![
                    id,
                    d["customerId"].as_str().unwrap().to_owned(),
                    count.to_string(),
                    d["total"].to_string(),
                    e.occurred_at.clone(),
                ],
            )
        }
        "order.shipped" => (
            "UPDATE hw_orders SET status = 'shipped', tracking_number = $2, shipped_at = $3 WHERE order_id = $1",
            vec![id, d["trackingNumber"].as_str().unwrap().to_owned(), e.occurred_at.clone()],
        ),
        _ => ("UPDATE hw_orders SET status = 'cancelled' WHERE order_id = $1", vec![id]),
    }
}

const HW_DDL: &str = "CREATE TABLE hw_orders (order_id TEXT PRIMARY KEY, customer_id TEXT, item_count BIGINT, \
           total DOUBLE PRECISION, status TEXT, placed_at TEXT, tracking_number TEXT, shipped_at TEXT); \
           CREATE INDEX hw_orders_by_customer ON hw_orders (customer_id, placed_at); \
           CREATE TABLE hw_checkpoint (id INTEGER PRIMARY KEY, position BIGINT); \
           INSERT INTO hw_checkpoint VALUES (1, 0);";

/// What users write instead: for each event, BEGIN; one statement; move the
/// checkpoint; COMMIT. `order_summaries`' statements, on `events`.
pub async fn handwritten_loop(config: &reel::Config, events: &[StoredEvent], sqlite_defaults: bool) -> f64 {
    let statements = order_statement;
    let ddl = HW_DDL;
    match &config.database_url {
        None => {
            let path = config.data_dir.join(if sqlite_defaults { "handwritten-default.db" } else { "handwritten.db" });
            let events = events.to_vec();
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(path).unwrap();
                if !sqlite_defaults {
                    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
                    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
                }
                conn.execute_batch(ddl).unwrap();
                let started = Instant::now();
                for (i, e) in events.iter().enumerate() {
                    let (sql, params) = statements(e);
                    let sql = sql.replace("::text::bigint", "").replace("::text::float8", "").replace('$', "?");
                    let tx = conn.transaction().unwrap();
                    tx.execute(&sql, rusqlite::params_from_iter(params.iter())).unwrap();
                    tx.execute("UPDATE hw_checkpoint SET position = ?1 WHERE id = 1", [i as i64 + 1]).unwrap();
                    tx.commit().unwrap();
                }
                events.len() as f64 / started.elapsed().as_secs_f64()
            })
            .await
            .unwrap()
        }
        Some(url) => {
            let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(ddl).await.unwrap();
            let started = Instant::now();
            for (i, e) in events.iter().enumerate() {
                let (sql, params) = statements(e);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                let tx = client.transaction().await.unwrap();
                tx.execute(sql, &refs).await.unwrap();
                tx.execute("UPDATE hw_checkpoint SET position = $1 WHERE id = 1", &[&(i as i64 + 1)]).await.unwrap();
                tx.commit().await.unwrap();
            }
            events.len() as f64 / started.elapsed().as_secs_f64()
        }
    }
}
