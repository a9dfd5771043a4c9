//! What the sink tests and the sink benchmark share: the shared brokers'
//! addresses, order events appended over a harness, waiting on a sink's
//! status, a JetStream stream of a run's own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{Value, json};

use super::Harness;

/// How long a sink may take to reach what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(180);
pub const NATS: &str = "nats://127.0.0.1:4222";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A name for this test's streams, subjects and queues.
pub fn run_id() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).unwrap();
    format!("t{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// One appended event, as the test expects to see it published.
#[derive(Debug, Clone)]
pub struct Sent {
    pub stream: String,
    pub version: i64,
    pub event_type: String,
    pub data: Value,
}

/// Append about `total` events over 20 streams `{run}.order-{i}` (placed,
/// then shipped ones, interleaved across streams, a few per append), plus
/// one `customer.noted` event per 10 that no sink here takes. Returns the
/// events by position, and the head.
pub async fn append_orders(
    total: usize,
    run: &str,
    mut append: impl AsyncFnMut(&str, Value) -> Vec<i64>,
) -> (BTreeMap<i64, Sent>, i64) {
    let streams = 20;
    let per_append = 5;
    let mut sent = BTreeMap::new();
    let mut versions = vec![0i64; streams];
    let mut head = 0;
    let mut n = 0;
    while n < total {
        for (s, version) in versions.iter_mut().enumerate() {
            let stream = format!("{run}.order-{s}");
            let events: Vec<(String, Value)> = (0..per_append)
                .map(|k| {
                    let v = *version + 1 + k as i64;
                    if v == 1 {
                        let lines: Vec<Value> =
                            (0..1 + s % 3).map(|l| json!({ "sku": format!("sku-{l}"), "qty": l + 1 })).collect();
                        ("order.placed".to_owned(), json!({ "order": stream, "lines": lines, "total": 12.5 }))
                    } else {
                        (
                            "order.shipped".to_owned(),
                            json!({ "order": stream, "parcel": v, "note": "fragile \"glass\"" }),
                        )
                    }
                })
                .collect();
            let body: Vec<Value> = events.iter().map(|(t, d)| json!({ "event_type": t, "data": d })).collect();
            let positions = append(&stream, Value::Array(body)).await;
            for (k, ((event_type, data), position)) in events.into_iter().zip(&positions).enumerate() {
                let version = *version + 1 + k as i64;
                sent.insert(*position, Sent { stream: stream.clone(), version, event_type, data });
            }
            *version += per_append as i64;
            head = head.max(*positions.last().unwrap());
            n += per_append;
            if n % 50 == 0 {
                let other = format!("{run}.customer-{s}");
                let positions = append(&other, json!([{ "event_type": "customer.noted", "data": {} }])).await;
                head = head.max(positions[0]);
            }
        }
    }
    (sent, head)
}

/// Append through a harness's router.
pub async fn through(h: &Harness, stream: &str, events: Value) -> Vec<i64> {
    let body = h.append(stream, None, events).await;
    body["positions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect()
}

/// The sink `name` as `GET /sinks` shows it.
pub async fn sink(h: &Harness, name: &str) -> Value {
    let sinks = h.get("/sinks").await;
    sinks.as_array().unwrap().iter().find(|s| s["name"] == name).cloned().unwrap_or(Value::Null)
}

/// Wait until `check` holds for sink `name`'s status.
pub async fn wait_sink(h: &Harness, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = sink(h, name).await;
        if check(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "timed out waiting on sink {name}; last status: {status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bind queue `queue` to `amq.topic` for routing key `key`.
pub async fn bind_topic(channel: &lapin::Channel, queue: &str, key: String) {
    use lapin::options::QueueBindOptions;
    use lapin::types::FieldTable;
    channel
        .queue_bind(queue.into(), "amq.topic".into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
}

/// A JetStream stream capturing `orders.{run}.>`, with a 2-minute duplicate
/// window, on the server at `url`.
pub async fn nats_stream(url: &str, run: &str) -> (jetstream::Context, jetstream::stream::Stream) {
    let client = async_nats::connect(url).await.unwrap_or_else(|e| panic!("NATS is needed at {url}: {e}"));
    let js = jetstream::new(client);
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: format!("REEL_{}", run.to_uppercase()),
            subjects: vec![format!("orders.{run}.>")],
            duplicate_window: Duration::from_secs(120),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    (js, stream)
}
