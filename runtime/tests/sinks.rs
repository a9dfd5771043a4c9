//! Sinks (issue 25, docs/adr/31-sinks.md): the log delivered to NATS
//! JetStream and RabbitMQ, with the real brokers (NATS with JetStream on
//! 127.0.0.1:4222, RabbitMQ on 127.0.0.1:5672; `cargo xtask test` starts
//! them). Each test uses subjects, streams and queues of its own; the tests
//! that restart a broker start a private `nats-server` or `rabbitmq-server`.
//!
//! `REEL_SINK_EVENTS` sets how many events the delivery tests append
//! (2,000 by default; the acceptance run used 50,000).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::brokers::{PrivateNats, PrivateRabbit, spare_port};
use common::sinks::{
    AMQP, NATS, PATIENCE, Sent, append_orders, bind_topic, nats_stream, run_id, sink, through, wait_sink,
};
use common::{Backend, Harness};
use serde_json::{Value, json};

/// Events the delivery tests append.
fn events_wanted() -> usize {
    std::env::var("REEL_SINK_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
}

/// Every message of a JetStream stream, in stream order.
async fn stream_messages(stream: &mut jetstream::stream::Stream) -> Vec<jetstream::message::StreamMessage> {
    let state = stream.info().await.unwrap().state.clone();
    let mut messages = Vec::with_capacity(state.messages as usize);
    if state.messages == 0 {
        return messages;
    }
    for seq in state.first_sequence..=state.last_sequence {
        messages.push(stream.get_raw_message(seq).await.unwrap());
    }
    messages
}

fn header<'a>(headers: &'a async_nats::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.as_str()).unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

/// The messages are the sent events, each once from each of `sinks`:
/// `Nats-Msg-Id` the sink's name and the event's position, its body the
/// event's data, its subject `orders.{stream_id}`, and each stream's events
/// in version order.
fn check_jetstream(messages: &[jetstream::message::StreamMessage], sent: &BTreeMap<i64, Sent>, sinks: &[&str]) {
    assert_eq!(
        messages.len(),
        sent.len() * sinks.len(),
        "one message per event and sink: {} messages for {} events and {} sinks",
        messages.len(),
        sent.len(),
        sinks.len()
    );
    for sink in sinks {
        let mut seen = BTreeSet::new();
        let mut versions: BTreeMap<&str, i64> = BTreeMap::new();
        for m in messages {
            let id = header(&m.headers, "Nats-Msg-Id");
            let (name, position) = id.rsplit_once(':').unwrap_or_else(|| panic!("dedup id {id} names no sink"));
            if name != *sink {
                assert!(sinks.contains(&name), "message {id} from a sink not deployed here");
                continue;
            }
            let id: i64 = position.parse().unwrap();
            assert!(seen.insert(id), "event {id} published twice by {sink}");
            assert_eq!(header(&m.headers, "Reel-Position"), id.to_string());
            let event = sent.get(&id).unwrap_or_else(|| panic!("message {id} is no event the sink takes"));
            assert_eq!(m.subject.as_str(), format!("orders.{}", event.stream));
            assert_eq!(header(&m.headers, "Reel-Event-Type"), event.event_type);
            assert_eq!(header(&m.headers, "Reel-Version"), event.version.to_string());
            let body: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(body, event.data, "message {id}'s body");
            let last = versions.insert(&event.stream, event.version).unwrap_or(0);
            assert_eq!(event.version, last + 1, "stream {} out of order at message {id}", event.stream);
        }
        assert_eq!(seen.len(), sent.len(), "{sink} published each event once");
    }
}

both_backends!(events_reach_a_jetstream_stream_once_each_in_order);

/// order-sink (Rust, no transform) publishes every `order.*` event to
/// `orders.{stream_id}` once, per-stream order kept, and leaves the rest;
/// its status and `/metrics` show where it is.
async fn events_reach_a_jetstream_stream_once_each_in_order(backend: Backend) {
    let run = run_id();
    let (js, mut stream) = nats_stream(NATS, &run).await;
    let h = Harness::start_with(backend, &["order_sink"], |c| c.sinks.nats_url = Some(NATS.into())).await;
    let (sent, head) = append_orders(events_wanted(), &run, async |s, e| through(&h, s, e).await).await;
    let status = wait_sink(&h, "order-sink", |s| s["position"].as_i64() >= Some(head)).await;
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(status["broker"], "nats");
    assert_eq!(status["delivered_events"], sent.len(), "{status:#}");
    assert_eq!(status["lag_events"], 0, "{status:#}");
    check_jetstream(&stream_messages(&mut stream).await, &sent, &["order-sink"]);
    let (_, metrics) = h.call("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(&format!("reel_sink_position{{sink=\"order-sink\",broker=\"nats\"}} {head}")),
        "{metrics}"
    );
    assert!(metrics.contains("reel_sink_up{sink=\"order-sink\",state=\"running\"} 1"), "{metrics}");
    let modules = h.get("/modules").await;
    let file = modules.as_array().unwrap().iter().find(|f| f["kind"] == "sink").expect("the sink's file");
    assert_eq!(file["provides"], "order-sink@1", "{modules:#}");
    h.finish().await;
    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
}

/// The hold's session ended under its owner (PostgreSQL: the backend
/// terminated, as `idle_session_timeout` or an administrator would): the
/// owner sees it before its next batch, claims again (taking a new hold) and
/// goes on from its checkpoint; each event still reaches the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_hold_ended_claims_again_and_goes_on() {
    let run = run_id();
    let (js, mut stream) = nats_stream(NATS, &run).await;
    let h = Harness::start_with(Backend::Postgres, &["order_sink"], |c| c.sinks.nats_url = Some(NATS.into())).await;
    let (mut sent, head) = append_orders(events_wanted() / 2, &run, async |s, e| through(&h, s, e).await).await;
    wait_sink(&h, "order-sink", |s| s["position"].as_i64() >= Some(head)).await;
    let url = h.config.database_url.clone().unwrap();
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let holders = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' \
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let pids: Vec<i32> = db.query(holders, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(pids.len(), 1, "one hold, the sink's");
    db.execute("SELECT pg_terminate_backend($1)", &[&pids[0]]).await.unwrap();
    let (more, head) =
        append_orders(events_wanted() / 2, &format!("{run}.b"), async |s, e| through(&h, s, e).await).await;
    sent.extend(more);
    let status = wait_sink(&h, "order-sink", |s| s["position"].as_i64() >= Some(head)).await;
    assert_eq!(status["state"], "running", "{status:#}");
    assert!(status["last_error"].as_str().unwrap_or("").contains("hold ended"), "{status:#}");
    let again: Vec<i32> = db.query(holders, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(again.len() == 1 && again != pids, "a new hold: {again:?} (the ended one: {pids:?})");
    drop(db);
    check_jetstream(&stream_messages(&mut stream).await, &sent, &["order-sink"]);
    h.finish().await;
    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
}

both_backends!(two_sinks_publishing_the_same_events_into_one_stream_both_arrive);

/// order-sink and its twin (another name, the same events and subjects)
/// publish into one JetStream stream: every event arrives twice, once from
/// each, since a dedup id names its sink (ADR 31); with the position alone,
/// the second sink's messages were dropped as the first's duplicates.
async fn two_sinks_publishing_the_same_events_into_one_stream_both_arrive(backend: Backend) {
    let run = run_id();
    let (js, mut stream) = nats_stream(NATS, &run).await;
    let h = Harness::start_with(backend, &["order_sink", "fixture_sink_twin"], |c| {
        c.sinks.nats_url = Some(NATS.into());
    })
    .await;
    let (sent, head) = append_orders(200, &run, async |s, e| through(&h, s, e).await).await;
    for name in ["order-sink", "sink-twin"] {
        let status = wait_sink(&h, name, |s| s["position"].as_i64() >= Some(head)).await;
        assert_eq!(status["delivered_events"], sent.len(), "{status:#}");
    }
    check_jetstream(&stream_messages(&mut stream).await, &sent, &["order-sink", "sink-twin"]);
    h.finish().await;
    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
}

/// A sink is refused, with the reason in `GET /modules`, when reel has no
/// address for its broker; the projections beside it run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_without_its_broker_address_is_refused_by_name() {
    let h = Harness::start(Backend::Sqlite, &["order_sink", "fixture_noop"]).await;
    let modules = h.get("/modules").await;
    let file =
        modules.as_array().unwrap().iter().find(|f| f["path"].as_str().unwrap().ends_with("order_sink.wasm")).unwrap();
    let error = file["error"].as_str().unwrap_or_default();
    assert!(error.contains("sink `order-sink` publishes to nats") && error.contains("--nats-url"), "{modules:#}");
    assert_eq!(h.get("/sinks").await, json!([]));
    h.append("o-1", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    h.wait_status("noop", PATIENCE, |s| s["position"].as_i64() >= Some(1)).await;
    h.finish().await;
}

/// The broker stopped mid-run and started again (a private instance): the
/// sink says it is retrying and why, then delivers everything, each event
/// once and in order; nothing is lost or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_mid_run_loses_nothing() {
    let store = tempfile::tempdir().unwrap();
    let port = spare_port();
    let mut nats = PrivateNats::start(store.path(), port);
    let run = run_id();
    let (_, _) = nats_stream(&nats.url(), &run).await;
    let url = nats.url();
    let h = Harness::start_with(Backend::Sqlite, &["order_sink"], |c| {
        c.sinks.nats_url = Some(url);
        c.sinks.batch_events = 100;
    })
    .await;
    let total = events_wanted();
    let (first, _) = append_orders(total / 2, &run, async |s, e| through(&h, s, e).await).await;
    let some = *first.keys().nth(first.len() / 4).unwrap();
    wait_sink(&h, "order-sink", |s| s["position"].as_i64() >= Some(some)).await;
    nats.stop();
    // Appends go on while the broker is away.
    let (second, head) = append_orders(total / 2, &format!("{run}.b"), async |s, e| through(&h, s, e).await).await;
    let down = wait_sink(&h, "order-sink", |s| s["state"] == "retrying").await;
    assert_eq!(down["connected"], false, "{down:#}");
    assert!(down["last_error"].as_str().unwrap().contains("NATS"), "{down:#}");
    assert!(down["position"].as_i64() < Some(head), "{down:#}");
    let nats = PrivateNats::start(store.path(), port);
    let status = wait_sink(&h, "order-sink", |s| s["position"].as_i64() >= Some(head)).await;
    assert!(status["retries"].as_u64() > Some(0), "{status:#}");
    let (_, mut stream) = nats_stream_again(&nats.url(), &run).await;
    let mut sent = first;
    sent.extend(second);
    check_jetstream(&stream_messages(&mut stream).await, &sent, &["order-sink"]);
    h.finish().await;
}

/// RabbitMQ killed (SIGKILL) mid-run and started again (a private
/// instance): the sink says it is retrying and why, publishes again what
/// the broker had not confirmed, and a consumer that drops message ids it
/// has seen gets every event once, each stream in order; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_broker_killed_mid_run_loses_nothing() {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let folder = tempfile::tempdir().unwrap();
    let port = spare_port();
    let mut rabbit = PrivateRabbit::start(folder.path(), port);
    let run = run_id();
    let queue = format!("reel-{run}");
    let declare = async |url: &str| {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await.unwrap();
        bind_topic(&channel, &queue, format!("orders.{run}.#")).await;
        (connection, channel)
    };
    drop(declare(&rabbit.url()).await);
    let url = rabbit.url();
    let h = Harness::start_with(Backend::Sqlite, &[], |c| {
        c.sinks.amqp_url = Some(url);
        c.sinks.batch_events = 100;
    })
    .await;
    let total = events_wanted();
    // A backlog, so that the broker dies while batches are in flight.
    let (first, first_head) = append_orders(total / 2, &run, async |s, e| through(&h, s, e).await).await;
    h.install("fixture_amqp_sink", "amqp-sink.wasm");
    // Watched closely: a backlog of this size goes out within tens of ms.
    let deadline = Instant::now() + PATIENCE;
    let at_kill = loop {
        let status = sink(&h, "amqp-sink").await;
        if status["position"].as_i64() > Some(0) {
            break status;
        }
        assert!(Instant::now() < deadline, "the sink never delivered: {status:#}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    rabbit.kill();
    // Appends go on while the broker is away.
    let (second, head) = append_orders(total / 2, &format!("{run}.b"), async |s, e| through(&h, s, e).await).await;
    let down = wait_sink(&h, "amqp-sink", |s| s["state"] == "retrying").await;
    assert_eq!(down["connected"], false, "{down:#}");
    assert!(down["last_error"].as_str().unwrap().contains("RabbitMQ"), "{down:#}");
    // The broker died with batches of the first backlog still to confirm.
    assert!(down["position"].as_i64() < Some(first_head), "{down:#}");
    let rabbit = PrivateRabbit::start(folder.path(), port);
    let status = wait_sink(&h, "amqp-sink", |s| s["position"].as_i64() >= Some(head)).await;
    assert!(status["retries"].as_u64() > Some(0), "{status:#}");
    assert_eq!(status["state"], "running", "{status:#}");

    let (_connection, channel) = declare(&rabbit.url()).await;
    let mut sent = first;
    sent.extend(second);
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    let mut versions: BTreeMap<String, i64> = BTreeMap::new();
    let mut again = 0;
    while let Some(got) = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        let delivery = got.delivery;
        let id = delivery.properties.message_id().clone().expect("a message-id").to_string();
        let position: i64 = id.strip_prefix("amqp-sink:").unwrap_or_else(|| panic!("message id {id}")).parse().unwrap();
        if !seen.insert(position) {
            again += 1;
            continue;
        }
        let event = sent.get(&position).unwrap_or_else(|| panic!("message {id} is no event the sink takes"));
        assert_eq!(delivery.routing_key.as_str(), format!("orders.{}", event.stream));
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let version = match headers.inner().get("Reel-Version") {
            Some(AMQPValue::LongString(v)) => String::from_utf8_lossy(v.as_bytes()).parse::<i64>().unwrap(),
            other => panic!("Reel-Version header: {other:?}"),
        };
        assert_eq!(version, event.version, "message {id}");
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        assert_eq!(body, event.data, "message {id}'s body");
        let last = versions.insert(event.stream.clone(), version).unwrap_or(0);
        assert_eq!(version, last + 1, "stream {} out of order at message {id}", event.stream);
    }
    let missing: Vec<&i64> = sent.keys().filter(|p| !seen.contains(p)).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never reached the queue, first {missing:?}",
        sent.len() - seen.len(),
        sent.len()
    );
    eprintln!(
        "{} events, each once after dropping {again} messages published again; the broker was killed with the sink \
         past {} and confirmed to {} of a backlog to {first_head}",
        sent.len(),
        at_kill["position"],
        down["position"]
    );
    h.finish().await;
}

/// The stream made by [`nats_stream`], looked up again (after a restart).
async fn nats_stream_again(url: &str, run: &str) -> (jetstream::Context, jetstream::stream::Stream) {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream(format!("REEL_{}", run.to_uppercase())).await.unwrap();
    (js, stream)
}

/// `reel serve` killed with SIGKILL while its sink delivers a backlog: once
/// started again it publishes from its checkpoint (at once, though the dead
/// process's lease has an hour left), and the JetStream consumer still sees
/// each event once (the messages sent again carry the same `Nats-Msg-Id`
/// and are dropped as duplicates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reel_killed_mid_delivery_still_publishes_each_event_once() {
    let run = run_id();
    let (js, mut stream) = nats_stream(NATS, &run).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    let args = ["--nats-url", NATS, "--sink-batch", "200"];
    let reel = common::process::Process::start(dir.path(), None, &args);
    let (sent, head) = append_orders(events_wanted().max(4_000), &run, async |s, e| process_append(&reel, s, e)).await;
    std::fs::copy(common::guest("order_sink"), dir.path().join("modules/order_sink.wasm")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let at_kill = loop {
        let (_, sinks) = reel.call("GET", "/sinks", None);
        let position = sinks[0]["position"].as_i64().unwrap_or(0);
        if position > 0 {
            break position;
        }
        assert!(Instant::now() < deadline, "the sink never delivered: {sinks:#}");
        std::thread::sleep(Duration::from_millis(2));
    };
    reel.kill();
    assert!(at_kill < head, "the sink had delivered everything before the kill ({at_kill} of {head})");
    // The dead owner's lease says an hour more: the restarted process takes
    // the sink at once all the same, its hold having died with the process.
    let events = rusqlite::Connection::open(dir.path().join("data/events.db")).unwrap();
    let in_an_hour = "UPDATE reel_sinks SET lease_until = (unixepoch('now', '+1 hour') * 1000000)";
    assert_eq!(events.execute(in_an_hour, []).unwrap(), 1);
    drop(events);
    let reel = common::process::Process::start(dir.path(), None, &args);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let (_, sinks) = reel.call("GET", "/sinks", None);
        if sinks[0]["position"].as_i64() >= Some(head) {
            break sinks[0].clone();
        }
        assert!(Instant::now() < deadline, "the sink did not finish after the restart: {sinks:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    check_jetstream(&stream_messages(&mut stream).await, &sent, &["order-sink"]);
    // Published by this process, new or dropped by id as a duplicate (what
    // the first one published past its checkpoint): about the rest of the log.
    let published = status["published_messages"].as_u64().unwrap() + status["duplicate_messages"].as_u64().unwrap();
    assert!(published as i64 >= head - at_kill - head / 10, "{status:#}");
    reel.kill();
    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
}

both_backends!(a_javascript_transform_feeds_a_rabbitmq_queue);

/// order-sink-js (a JavaScript transform) to RabbitMQ's `amq.topic`: one
/// message per order event on `orders.{stream_id}`, and one more per line
/// of a placed order with several on `order-lines.{stream_id}`. Until a
/// queue takes the line messages they come back unrouted: the sink retries
/// and says why, and skips nothing. A consumer that drops message ids it has
/// seen gets each message once, each stream in order.
async fn a_javascript_transform_feeds_a_rabbitmq_queue(backend: Backend) {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let wasm = common::language_guest("order-sink-js");
    let run = run_id();
    let queue = format!("reel-{run}");
    let connection = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is needed at {AMQP}: {e}"));
    let channel = connection.create_channel().await.unwrap();
    channel.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    bind_topic(&channel, &queue, format!("orders.{run}.#")).await;

    let h = Harness::start_with(backend, &[], |c| c.sinks.amqp_url = Some(AMQP.into())).await;
    std::fs::copy(&wasm, h.config.modules_dir.join("order-sink-js.wasm")).unwrap();
    let (sent, head) = append_orders(events_wanted() / 2, &run, async |s, e| through(&h, s, e).await).await;
    let stuck = wait_sink(&h, "order-sink-js", |s| s["state"] == "retrying").await;
    assert!(stuck["last_error"].as_str().unwrap().contains("no queue is bound"), "{stuck:#}");
    assert!(stuck["position"].as_i64() < Some(head), "{stuck:#}");
    assert_eq!(stuck["transform"], true);
    bind_topic(&channel, &queue, format!("order-lines.{run}.#")).await;
    let status = wait_sink(&h, "order-sink-js", |s| s["position"].as_i64() >= Some(head)).await;
    assert_eq!(status["state"], "running", "{status:#}");

    // Expected: per event, its message, then one per line of a placed order with several.
    let mut expected: BTreeMap<String, (String, Value)> = BTreeMap::new();
    for (position, e) in &sent {
        let message = json!({ "event": e.event_type, "order": e.stream, "version": e.version, "data": e.data });
        let lines = e.data["lines"].as_array().filter(|l| l.len() > 1 && e.event_type == "order.placed");
        match lines {
            None => {
                expected.insert(format!("order-sink-js:{position}"), (format!("orders.{}", e.stream), message));
            }
            Some(lines) => {
                expected.insert(format!("order-sink-js:{position}:0"), (format!("orders.{}", e.stream), message));
                for (i, line) in lines.iter().enumerate() {
                    let body = json!({ "order": e.stream, "line": line });
                    let id = format!("order-sink-js:{position}:{}", i + 1);
                    expected.insert(id, (format!("order-lines.{}", e.stream), body));
                }
            }
        }
    }
    let mut seen: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut order: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut duplicates = 0;
    while let Some(got) = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        let delivery = got.delivery;
        let id = delivery.properties.message_id().clone().expect("a message-id").to_string();
        if seen.contains_key(&id) {
            duplicates += 1;
            continue;
        }
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let version = match headers.inner().get("Reel-Version") {
            Some(AMQPValue::LongString(v)) => String::from_utf8_lossy(v.as_bytes()).parse::<i64>().unwrap(),
            other => panic!("Reel-Version header: {other:?}"),
        };
        let key = delivery.routing_key.to_string();
        let line = id.matches(':').count() == 2 && !id.ends_with(":0");
        order.entry(format!("{key}@{line}")).or_default().push(version);
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        seen.insert(id, (key, body));
    }
    assert_eq!(seen.len(), expected.len(), "distinct messages: {} of {}", seen.len(), expected.len());
    assert_eq!(seen, expected);
    for (key, versions) in &order {
        assert!(versions.is_sorted(), "{key}'s messages out of version order: {versions:?}");
    }
    // The retried batches were delivered again to the queue that took them: the ids tell them apart.
    assert!(duplicates > 0, "the retries published messages again (RabbitMQ keeps no dedup window)");
    h.finish().await;
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
}

/// Append through a `reel serve` process.
fn process_append(reel: &common::process::Process, stream: &str, events: Value) -> Vec<i64> {
    let body = json!({ "stream_id": stream, "events": events });
    let (status, body) = reel.call("POST", "/events", Some(&body));
    assert_eq!(status, 201, "{body}");
    body["positions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect()
}

/// Wait until `check` holds for the first sink of a `reel serve` process.
fn process_sink(reel: &common::process::Process, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, sinks) = reel.call("GET", "/sinks", None);
        if check(&sinks[0]) {
            return sinks[0].clone();
        }
        assert!(Instant::now() < deadline, "timed out; last: {sinks:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two `reel serve` processes on PostgreSQL `url`, each with `order-sink`:
/// the first delivering it, the second standing by (and their folders).
fn delivering_and_standing_by(
    url: &str,
) -> ([tempfile::TempDir; 2], common::process::Process, common::process::Process) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        std::fs::create_dir_all(dir.path().join("modules")).unwrap();
        std::fs::copy(common::guest("order_sink"), dir.path().join("modules/order_sink.wasm")).unwrap();
    }
    let args = ["--nats-url", NATS];
    let first = common::process::Process::start(dirs[0].path(), Some(url), &args);
    process_sink(&first, |s| s["state"] == "running");
    let second = common::process::Process::start(dirs[1].path(), Some(url), &args);
    process_sink(&second, |s| s["state"] == "standby");
    (dirs, first, second)
}

/// The owner of a sink (PostgreSQL).
async fn sink_owner(db: &tokio_postgres::Client) -> String {
    db.query_one("SELECT owner FROM reel.sinks", &[]).await.unwrap().get(0)
}

/// A process stuck past its lease (frozen for longer than the 10 s lease,
/// its session and so its hold alive) is taken over by the standby, which
/// delivers on the lease alone; when it wakes it finds the sink taken and
/// stands by, letting its hold go, and the new owner takes the hold: the
/// sink stays with the new owner, and each event reaches the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_owner_taken_over_stands_by_when_it_wakes() {
    let run = run_id();
    let (js, mut stream) = nats_stream(NATS, &run).await;
    let url = common::create_database().await;
    let (_dirs, first, second) = delivering_and_standing_by(&url);
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let (mut sent, head) = append_orders(events_wanted() / 4, &run, async |s, e| process_append(&first, s, e)).await;
    process_sink(&first, |s| s["position"].as_i64() >= Some(head));
    let stuck = sink_owner(&db).await;
    first.freeze();
    process_sink(&second, |s| s["state"] == "running");
    let taken_by = sink_owner(&db).await;
    assert_ne!(taken_by, stuck);
    let (more, head) =
        append_orders(events_wanted() / 4, &format!("{run}.b"), async |s, e| process_append(&second, s, e)).await;
    sent.extend(more);
    process_sink(&second, |s| s["position"].as_i64() >= Some(head));
    first.thaw();
    process_sink(&first, |s| s["state"] == "standby");
    // Longer than the woken process's stand-by and a standby's check.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(sink_owner(&db).await, taken_by, "the woken process took the sink back");
    let (more, head) =
        append_orders(events_wanted() / 4, &format!("{run}.c"), async |s, e| process_append(&second, s, e)).await;
    sent.extend(more);
    let status = process_sink(&second, |s| s["position"].as_i64() >= Some(head));
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(process_sink(&first, |_| true)["state"], "standby");
    assert_eq!(sink_owner(&db).await, taken_by);
    drop(db);
    check_jetstream(&stream_messages(&mut stream).await, &sent, &["order-sink"]);
    first.kill();
    second.kill();
    common::drop_database(&url).await;
    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
}

/// Two reel processes on one PostgreSQL, both with the sink: one delivers,
/// the other stands by; the first killed, the second takes the sink over
/// from the checkpoint as soon as it sees the first's hold gone, though the
/// dead owner's lease has an hour left, and the JetStream stream holds each
/// event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_delivers_a_sink_and_another_takes_over() {
    let run = run_id();
    let (js, mut stream) = nats_stream(NATS, &run).await;
    let url = common::create_database().await;
    let (_dirs, first, second) = delivering_and_standing_by(&url);
    let (mut sent, head) = append_orders(events_wanted() / 2, &run, async |s, e| process_append(&first, s, e)).await;
    process_sink(&first, |s| s["position"].as_i64() >= Some(head));
    // The first, frozen (it keeps its hold), gets a lease an hour long, then
    // is killed: its hold, which died with it, is what lets the second take
    // the sink.
    first.freeze();
    let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let owner = sink_owner(&db).await;
    let in_an_hour = "UPDATE reel.sinks SET lease_until = (extract(epoch FROM now() + interval '1 hour') * 1e6)::bigint \
                      WHERE owner = $1";
    assert_eq!(db.execute(in_an_hour, &[&owner]).await.unwrap(), 1);
    first.kill();
    let (more, head) =
        append_orders(events_wanted() / 2, &format!("{run}.b"), async |s, e| process_append(&second, s, e)).await;
    sent.extend(more);
    let status = process_sink(&second, |s| s["position"].as_i64() >= Some(head));
    assert_eq!(status["state"], "running", "{status:#}");
    assert_ne!(sink_owner(&db).await, owner, "the second process delivers under its own name");
    drop(db);
    check_jetstream(&stream_messages(&mut stream).await, &sent, &["order-sink"]);
    second.kill();
    common::drop_database(&url).await;
    js.delete_stream(stream.cached_info().config.name.clone()).await.unwrap();
}
