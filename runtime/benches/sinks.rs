//! Sink throughput (issue 25): each sink beside a native publisher sending
//! the same messages (body, headers, dedup id, routing) to the same broker
//! in the same run, in batches of 1,000, each batch's acknowledgements
//! awaited.
//!
//! ```sh
//! cargo bench -p reel --bench sinks                        # 50,000 events, 3 rounds, every pair
//! cargo bench -p reel --bench sinks -- --events 10000 --rounds 5 --pair amqp
//! cargo test  -p reel --bench sinks -- --smoke             # what CI runs
//! ```
//!
//! Three pairs, with the shared brokers (NATS with JetStream on 4222,
//! RabbitMQ on 5672):
//! - `nats`: `order-sink` (Rust, no transform) to a JetStream stream, beside
//!   async-nats publishing its messages;
//! - `amqp`: `amqp-sink` (Rust, no transform) to RabbitMQ's `amq.topic`,
//!   beside lapin with publisher confirms;
//! - `amqp-js`: `order-sink-js` (a JavaScript transform: one message per
//!   event, one more per line of a placed order with several) to RabbitMQ,
//!   beside lapin publishing what the transform makes.
//!
//! Each round starts a fresh reel (SQLite) on its own data folder, appends
//! the events over the router, then times the native publisher and the
//! sink, in an order that alternates between rounds. The sink is timed from
//! the first status showing a confirmed batch (the module's compile is not
//! counted; the status is read every millisecond) until its checkpoint
//! reaches the head, and must have delivered every event;
//! the native publisher from its first message to its last confirmation.
//! The figures are the medians over the rounds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::sinks::{AMQP, NATS, PATIENCE, Sent, append_orders, nats_stream, run_id, sink, through};
use common::{Backend, Harness, median};
use serde_json::{Value, json};

struct Args {
    events: usize,
    rounds: usize,
    pairs: Vec<&'static str>,
}

const PAIRS: [&str; 3] = ["nats", "amqp", "amqp-js"];

fn args() -> Args {
    let mut args = Args { events: 50_000, rounds: 3, pairs: PAIRS.to_vec() };
    common::bench_args(|flag, value| {
        match flag {
            "--events" => args.events = value().parse().expect("--events N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--pair" => {
                let pair = value();
                args.pairs = vec![PAIRS.into_iter().find(|p| *p == pair).unwrap_or_else(|| panic!("pairs: {PAIRS:?}"))];
            }
            "--smoke" => {
                args.events = 2_000;
                args.rounds = 1;
            }
            _ => return false,
        }
        true
    });
    args
}

fn main() {
    let args = args();
    // Built (or found up to date) before anything is timed.
    common::guests();
    common::language_guest("order-sink-js");
    let rt = common::bench_runtime();
    println!(
        "sinks benchmark: {} events, {} round(s) alternated, {} cores, reel {}",
        args.events,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        env!("CARGO_PKG_VERSION")
    );
    let mut results: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for round in 0..args.rounds {
        for pair in &args.pairs {
            let native_first = round % 2 == 0;
            let (sink, native) = rt.block_on(run(pair, args.events, native_first));
            println!(
                "round {}: {pair:8} sink {sink:>8.0} messages/s, native {native:>8.0} messages/s: {:.2}x ({} first)",
                round + 1,
                sink / native,
                if native_first { "native" } else { "sink" }
            );
            results.entry(pair).or_default().push((sink, native));
        }
    }
    println!("\nmedians over {} round(s):", args.rounds);
    for (pair, runs) in &results {
        let sinks: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let natives: Vec<f64> = runs.iter().map(|r| r.1).collect();
        let ratios: Vec<f64> = runs.iter().map(|r| r.0 / r.1).collect();
        println!(
            "{pair:8} sink {:>8.0} messages/s, native {:>8.0} messages/s, sink/native {:.2}x (rounds {})",
            median(&sinks),
            median(&natives),
            median(&ratios),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
        );
    }
}

/// One round of `pair` on a fresh reel: (sink, native) messages/s.
async fn run(pair: &str, events: usize, native_first: bool) -> (f64, f64) {
    let run = run_id();
    let h = Harness::start_with(Backend::Sqlite, &[], |c| {
        c.sinks.nats_url = Some(NATS.into());
        c.sinks.amqp_url = Some(AMQP.into());
    })
    .await;
    let (sent, head) = append_orders(events, &run, async |s, e| through(&h, s, e).await).await;
    let mut rates = (0.0, 0.0);
    for native in [native_first, !native_first] {
        if native {
            rates.1 = match pair {
                "nats" => {
                    let (js, stream) = nats_stream(NATS, &run).await;
                    let rate = native_nats(&js, &sent).await;
                    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
                    rate
                }
                "amqp" => with_queue(&run, native_amqp_plain(&sent)).await,
                _ => with_queue(&run, native_amqp(&sent)).await,
            };
        } else {
            rates.0 = match pair {
                "nats" => {
                    let (js, stream) = nats_stream(NATS, &run).await;
                    let rate = timed_sink(&h, "order_sink", "order-sink", "order_sink.wasm", head, sent.len()).await;
                    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
                    rate
                }
                "amqp" => {
                    let sink = timed_sink(&h, "fixture_amqp_sink", "amqp-sink", "amqp-sink.wasm", head, sent.len());
                    with_queue(&run, sink).await
                }
                _ => {
                    let wasm = common::language_guest("order-sink-js");
                    std::fs::copy(&wasm, h.dir.path().join("order-sink-js.wasm")).unwrap();
                    let sink = timed_sink(&h, "", "order-sink-js", "order-sink-js.wasm", head, sent.len());
                    with_queue(&run, sink).await
                }
            };
        }
    }
    h.finish().await;
    rates
}

/// Run `publish` with a queue of the run's own bound to `amq.topic` for its
/// order and line messages (RabbitMQ returns unroutable messages), deleted
/// after.
async fn with_queue(run: &str, publish: impl Future<Output = f64>) -> f64 {
    let queue = format!("reel-{run}");
    let channel = amqp_queue(&queue, run).await;
    let rate = publish.await;
    let _ = channel.queue_delete(queue.as_str().into(), Default::default()).await;
    rate
}

/// Deploy the sink (`crate_name`'s component, or the file `file` in the
/// test folder when `crate_name` is empty) and time it from the first
/// status showing a confirmed batch until its checkpoint reaches the head:
/// messages per second over that stretch (the status is read every
/// millisecond). When the first status seen is already at the head (a
/// small smoke run), from the deployment instead, compile included.
async fn timed_sink(h: &Harness, crate_name: &str, name: &str, file: &str, head: i64, events: usize) -> f64 {
    let deployed = Instant::now();
    if crate_name.is_empty() {
        std::fs::rename(h.dir.path().join(file), h.config.modules_dir.join(file)).unwrap();
    } else {
        h.install(crate_name, file);
    }
    let poll = async |check: &dyn Fn(&Value) -> bool| loop {
        let status = sink(h, name).await;
        if check(&status) {
            return (Instant::now(), status);
        }
        assert!(deployed.elapsed() < PATIENCE, "sink {name} timed out: {status:#}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (mut started, mut first) = poll(&|s| s["position"].as_i64() > Some(0)).await;
    let (ended, done) = poll(&|s| s["position"].as_i64() >= Some(head)).await;
    let messages = |s: &Value| s["published_messages"].as_u64().unwrap() + s["duplicate_messages"].as_u64().unwrap();
    if messages(&first) == messages(&done) {
        (started, first) = (deployed, Value::Null);
    }
    assert_eq!(done["delivered_events"].as_u64().unwrap() as usize, events, "{done:#}");
    let before = if first.is_null() { 0 } else { messages(&first) };
    (messages(&done) - before) as f64 / (ended - started).as_secs_f64()
}

/// The messages order-sink would send, published with async-nats in
/// batches of 1,000, each batch's acknowledgements awaited: messages/s.
async fn native_nats(js: &jetstream::Context, sent: &BTreeMap<i64, Sent>) -> f64 {
    let started = Instant::now();
    let events: Vec<(&i64, &Sent)> = sent.iter().collect();
    for chunk in events.chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (position, e) in chunk {
            let mut headers = async_nats::HeaderMap::new();
            headers.append("Reel-Position", position.to_string().as_str());
            headers.append("Reel-Stream-Id", e.stream.as_str());
            headers.append("Reel-Version", e.version.to_string().as_str());
            headers.append("Reel-Event-Type", e.event_type.as_str());
            headers.append("Content-Type", "application/json");
            let body = bytes::Bytes::from(e.data.to_string());
            let publish = jetstream::message::PublishMessage::build()
                .payload(body)
                .headers(headers)
                .message_id(format!("order-sink:{position}"));
            acks.push(js.send_publish(format!("orders.{}", e.stream), publish).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    sent.len() as f64 / started.elapsed().as_secs_f64()
}

/// A queue bound to `amq.topic` for the run's order and line messages.
async fn amqp_queue(queue: &str, run: &str) -> lapin::Channel {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    let connection = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    for key in [format!("orders.{run}.#"), format!("order-lines.{run}.#")] {
        common::sinks::bind_topic(&channel, queue, key).await;
    }
    // The channel keeps the connection open.
    std::mem::forget(connection);
    channel
}

/// The messages amqp-sink sends (one per order event, its data as the
/// body, reel's headers), published with lapin with confirms in batches of
/// 1,000: messages/s.
async fn native_amqp_plain(sent: &BTreeMap<i64, Sent>) -> f64 {
    let messages = sent
        .iter()
        .map(|(position, e)| (format!("amqp-sink:{position}"), format!("orders.{}", e.stream), e, e.data.to_string()))
        .collect::<Vec<_>>();
    publish_amqp(&messages, Some("application/json")).await
}

/// The messages order-sink-js would send (one per event; the lines'
/// messages too), published with lapin with confirms in batches of 1,000:
/// messages/s.
async fn native_amqp(sent: &BTreeMap<i64, Sent>) -> f64 {
    let mut messages = Vec::new();
    for (position, e) in sent {
        let body = json!({ "event": e.event_type, "order": e.stream, "version": e.version, "data": e.data });
        messages.push((format!("order-sink-js:{position}"), format!("orders.{}", e.stream), e, body.to_string()));
        if let Some(lines) = e.data["lines"].as_array().filter(|l| l.len() > 1 && e.event_type == "order.placed") {
            for (i, line) in lines.iter().enumerate() {
                let body = json!({ "order": e.stream, "line": line });
                messages.push((
                    format!("order-sink-js:{position}:{}", i + 1),
                    format!("order-lines.{}", e.stream),
                    e,
                    body.to_string(),
                ));
            }
        }
    }
    publish_amqp(&messages, None).await
}

/// `messages` (dedup id, routing key, event, body) published to `amq.topic`
/// with reel's headers, as the sink publishes them: messages/s.
async fn publish_amqp(messages: &[(String, String, &Sent, String)], content_type: Option<&str>) -> f64 {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let confirming = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
    let publisher = confirming.create_channel().await.unwrap();
    publisher.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let started = Instant::now();
    for chunk in messages.chunks(1000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (id, key, e, body) in chunk {
            let mut headers = FieldTable::default();
            let position = id.split(':').nth(1).unwrap();
            headers.insert("Reel-Position".into(), AMQPValue::LongString(position.into()));
            headers.insert("Reel-Stream-Id".into(), AMQPValue::LongString(e.stream.as_str().into()));
            headers.insert("Reel-Version".into(), AMQPValue::LongString(e.version.to_string().as_str().into()));
            headers.insert("Reel-Event-Type".into(), AMQPValue::LongString(e.event_type.as_str().into()));
            // reel's fifth header: a time of the same length (the events'
            // own are not kept here).
            headers.insert("Reel-Occurred-At".into(), AMQPValue::LongString("2026-12-06T23:59:59.123456Z".into()));
            let mut properties = lapin::BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_delivery_mode(2)
                .with_headers(headers);
            if let Some(content_type) = content_type {
                properties = properties.with_content_type(content_type.into());
            }
            let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
            confirms.push(
                publisher
                    .basic_publish("amq.topic".into(), key.as_str().into(), options, body.as_bytes(), properties)
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
    messages.len() as f64 / started.elapsed().as_secs_f64()
}
