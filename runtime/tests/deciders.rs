//! The write side: a stream's events read back from the log
//! (`GET /streams/{id}`), and commands decided by the `order` decider
//! (`projections/order`, the seed's Order aggregate) and appended with the
//! stream's version: its rules, refusals that append nothing, concurrent
//! clients racing on the same streams; the Python `order` (`projections/order-py`)
//! answering every command as the Rust one does. Idempotency keys in
//! `deciders/keys.rs`, states kept in memory and snapshots in
//! `deciders/snapshots.rs`.

mod common;
#[path = "deciders/keys.rs"]
mod keys;
#[path = "deciders/snapshots.rs"]
mod snapshots;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Backend, Harness, language_guest};
use http_body_util::BodyExt;
use reel::model::Event;
use serde_json::{Value, json};
use tower::ServiceExt;

both_backends!(
    a_stream_read_returns_what_was_appended_in_version_order,
    commands_follow_the_order_rules_and_refusals_append_nothing,
    concurrent_commands_on_the_same_streams_append_each_accepted_event_once,
);

/// `GET uri`: the status and the body's text, untouched (numbers a `Value`
/// would round stay as they came).
async fn get_text(h: &Harness, uri: &str) -> (StatusCode, String) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = h.app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// A page of a stream: its events, read with the event shape's own
/// deserializer (payloads kept as raw JSON text), and `next`.
async fn page(h: &Harness, uri: &str) -> (Vec<Event>, Value) {
    let (status, text) = get_text(h, uri).await;
    assert_eq!(status, StatusCode::OK, "GET {uri}: {text}");
    #[derive(serde::Deserialize)]
    struct Page {
        stream_id: String,
        events: Vec<Event>,
        next: Value,
    }
    let page: Page = serde_json::from_str(&text).unwrap();
    assert!(page.events.iter().all(|e| e.stream_id == page.stream_id), "{text}");
    (page.events, page.next)
}

async fn a_stream_read_returns_what_was_appended_in_version_order(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    // Payloads a lossy reader would change: a number past f64, a decimal's
    // trailing zero, text outside ASCII, nesting, null.
    let sent = [
        json!({ "event_type": "order.placed", "data": { "total": 1, "items": [{ "sku": "a", "quantity": 2 }] } }),
        json!({ "event_type": "order.priced", "data": { "price": 0, "note": "café ☕", "gift": null },
                "metadata": { "causation": "c-1" } }),
        json!({ "event_type": "order.shipped", "data": [1, [2, { "x": true }]] }),
    ];
    let big = r#"{"event_type":"order.big","data":{"total":123456789012345678901234567890,"price":9.50}}"#;
    let mut positions = Vec::new();
    let first = h.append("order-1", Some(0), Value::Array(sent.to_vec())).await;
    positions.extend(first["positions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()));
    // Other streams between, one whose id the first's is a prefix of.
    h.append("order-10", None, json!([{ "event_type": "order.placed", "data": {} }])).await;
    h.append("order-2", None, json!([{ "event_type": "order.placed", "data": {} }])).await;
    let body = format!(r#"{{"stream_id":"order-1","expected_version":3,"events":[{big},{big}]}}"#);
    let (status, second) = h.call("POST", "/events", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    positions.extend(second["positions"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap()));

    let (events, next) = page(&h, "/streams/order-1").await;
    assert_eq!(next, Value::Null, "one page holds the stream");
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(events.iter().map(|e| e.position).collect::<Vec<_>>(), positions);
    for (event, sent) in events.iter().zip(&sent) {
        assert_eq!(event.event_type, sent["event_type"]);
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data, sent["data"], "payload of version {}", event.version);
        let metadata: Value = serde_json::from_str(&event.metadata).unwrap();
        assert_eq!(metadata, *sent.get("metadata").unwrap_or(&json!({})));
        assert!(event.occurred_at.ends_with('Z') && event.occurred_at.len() == 27, "{}", event.occurred_at);
    }
    for event in &events[3..] {
        // The digits as sent (PostgreSQL's jsonb may respace and reorder keys).
        assert!(event.data.contains("123456789012345678901234567890"), "{}", event.data);
        assert!(event.data.contains("9.50"), "{}", event.data);
    }

    // Pages: `next` is the from_version of the following one.
    let (two, next) = page(&h, "/streams/order-1?limit=2").await;
    assert_eq!((two.iter().map(|e| e.version).collect::<Vec<_>>(), next), (vec![1, 2], json!(2)));
    let (two, next) = page(&h, "/streams/order-1?from_version=2&limit=2").await;
    assert_eq!((two.iter().map(|e| e.version).collect::<Vec<_>>(), next), (vec![3, 4], json!(4)));
    let (last, next) = page(&h, "/streams/order-1?from_version=4&limit=2").await;
    assert_eq!((last, next), (events[4..].to_vec(), Value::Null));
    let (none, next) = page(&h, "/streams/order-1?from_version=5").await;
    assert_eq!((none.len(), next), (0, Value::Null), "past the end of a stream that exists: an empty page");

    // A stream id with a slash, encoded in the path.
    h.append("tenant/7", Some(0), json!([{ "event_type": "t", "data": 7 }])).await;
    let (slashed, _) = page(&h, "/streams/tenant%2F7").await;
    assert_eq!((slashed.len(), slashed[0].data.as_str()), (1, "7"));

    // Read-your-writes: the position an append returned.
    let at = positions[4];
    assert_eq!(page(&h, &format!("/streams/order-1?min_position={at}")).await.0.len(), 5);

    // Refusals, each with reel's error body.
    for (uri, status, code) in [
        ("/streams/order-3", StatusCode::NOT_FOUND, "not_found"),
        ("/streams/order-3?from_version=2", StatusCode::NOT_FOUND, "not_found"),
        ("/streams/order-1?from_version=-1", StatusCode::BAD_REQUEST, "bad_request"),
        ("/streams/order-1?from_version=x", StatusCode::BAD_REQUEST, "bad_request"),
        ("/streams/order-1?limit=0", StatusCode::BAD_REQUEST, "bad_request"),
        ("/streams/order-1?limit=10001", StatusCode::BAD_REQUEST, "bad_request"),
        ("/streams/order-1?version=2", StatusCode::BAD_REQUEST, "bad_request"),
        ("/streams/order-1?min_position=999999", StatusCode::BAD_REQUEST, "position_unknown"),
    ] {
        let (got, body) = h.call("GET", uri, None).await;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{uri}: {body}");
    }
    let (_, body) = h.call("GET", "/streams/order-3", None).await;
    assert_eq!(body["error"]["message"], "no stream `order-3`: no event was appended to it");
    h.finish().await;
}

/// An event as JSON values (PostgreSQL's jsonb respaces the payload's text).
fn shape(event: &Event) -> Value {
    serde_json::to_value(event).unwrap()
}

/// `POST /commands/order/{stream}`.
async fn command(h: &Harness, stream: &str, body: Value) -> (StatusCode, Value) {
    h.call("POST", &format!("/commands/order/{stream}"), Some(&body.to_string())).await
}

fn place(customer: &str, items: Value) -> Value {
    json!({ "command_type": "place", "data": { "customerId": customer, "items": items } })
}

/// Every event in the log, as the events table holds them.
async fn event_count(h: &Harness) -> usize {
    h.stored_events().await.len()
}

async fn commands_follow_the_order_rules_and_refusals_append_nothing(backend: Backend) {
    let h = Harness::start(backend, &["order"]).await;
    let modules = h.get("/modules").await;
    let file = modules.as_array().unwrap().iter().find(|f| f["provides"] == "order@1").expect("order.wasm loaded");
    assert_eq!(file["kind"], "decider", "{modules}");
    let deciders = h.get("/deciders").await;
    assert_eq!((deciders[0]["name"].as_str(), deciders[0]["stream_prefix"].as_str()), (Some("order"), Some("order-")));

    // Place: the total is the items' (in cents), the order id the stream's.
    let items = json!([{ "productId": "p-1", "quantity": 2, "price": 9.99 }, { "productId": "p-2", "quantity": 1, "price": 0.5 }]);
    let (status, placed) = command(&h, "order-1", place("c-7", items.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["version"], 1);
    let event = &placed["events"][0];
    assert_eq!((event["event_type"].as_str(), event["version"].as_i64()), (Some("order.placed"), Some(1)));
    assert_eq!(event["data"], json!({ "orderId": "1", "customerId": "c-7", "items": items, "total": 20.48 }));
    assert_eq!(placed["positions"], json!([event["position"]]));

    // The rules of the seed's Order, each refusal a 422 with the reason.
    let ship = |tracking: &str| json!({ "command_type": "ship", "data": { "trackingNumber": tracking } });
    let cancel = json!({ "command_type": "cancel", "data": { "reason": "changed my mind" } });
    for (stream, body, reason) in [
        ("order-2", place("c-1", json!([])), "Order must have at least one item"),
        ("order-1", place("c-1", items.clone()), "order 1 exists: it is placed"),
        ("order-3", ship("T-1"), "cannot ship order 3: it is not placed"),
        ("order-3", cancel.clone(), "cannot cancel order 3: it is not placed"),
    ] {
        let (status, body) = command(&h, stream, body).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("rejected")));
        assert_eq!(body["error"]["message"], reason);
    }
    let (status, shipped) = command(&h, "order-1", ship("TRK-1")).await;
    assert_eq!((status, shipped["version"].as_i64()), (StatusCode::CREATED, Some(2)), "{shipped}");
    assert_eq!(shipped["events"][0]["data"], json!({ "orderId": "1", "trackingNumber": "TRK-1" }));
    for (body, reason) in [
        (ship("T-2"), "cannot ship order 1: it is already shipped"),
        (cancel.clone(), "cannot cancel order 1: it is already shipped"),
    ] {
        let (status, body) = command(&h, "order-1", body).await;
        assert_eq!((status, body["error"]["message"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(reason)));
    }
    let (status, _) = command(&h, "order-4", place("c-2", items.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = command(&h, "order-4", cancel.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = command(&h, "order-4", cancel.clone()).await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cannot cancel order 4: it is already cancelled"))
    );

    // Requests reel or the decider cannot take: a clear 4xx each.
    let appended = event_count(&h).await;
    for (uri, body, status, code) in [
        ("/commands/nobody/order-1", place("c", items.clone()).to_string(), StatusCode::NOT_FOUND, "unknown_decider"),
        (
            "/commands/order/order-1",
            json!({ "command_type": "refund", "data": {} }).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("/commands/order/invoice-1", place("c", items.clone()).to_string(), StatusCode::BAD_REQUEST, "bad_request"),
        (
            "/commands/order/order-9",
            json!({ "command_type": "place", "data": { "items": "two" } }).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_command",
        ),
        (
            "/commands/order/order-9",
            json!({ "command_type": "place", "data": {}, "metadata": [1] }).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("/commands/order/order-9", "{\"command_type\": ".to_owned(), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            "/commands/order/order-9",
            json!({ "data": {} }).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
        ),
    ] {
        let (got, answer) = h.call("POST", uri, Some(&body)).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{uri} {body}: {answer}");
    }
    let (_, answer) = h
        .call(
            "POST",
            "/commands/order/order-9",
            Some(&json!({ "command_type": "place", "data": { "items": "two" } }).to_string()),
        )
        .await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("`place` command: "), "{answer}");
    // The decider owns its streams: other writers are refused them.
    let body = json!({ "stream_id": "order-1", "events": [{ "event_type": "order.shipped", "data": {} }] });
    let (status, answer) = h.call("POST", "/events", Some(&body.to_string())).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("owned_stream")), "{answer}");
    assert_eq!(event_count(&h).await, appended, "no refusal appended anything");

    // What the answers said is what the log holds, and the state is its fold.
    let (events, _) = page(&h, "/streams/order-1").await;
    let answered: Vec<Value> = [&placed, &shipped].iter().map(|a| a["events"][0].clone()).collect();
    assert_eq!(events.iter().map(shape).collect::<Vec<_>>(), answered);
    assert!(serde_json::from_str::<Value>(&events[0].metadata).unwrap().is_object());
    let state = h.get("/deciders/order/streams/order-1/state").await;
    assert_eq!((state["version"].as_i64(), state["state"]["status"].as_str()), (Some(2), Some("shipped")), "{state}");
    assert_eq!(state["state"]["total"], 20.48);
    let (status, _) = h.call("GET", "/deciders/order/streams/order-77/state", None).await;
    assert_eq!(status, StatusCode::OK, "a stream with no events has the initial state");
    let (status, _) = h.call("GET", "/deciders/nobody/streams/order-1/state", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.finish().await;
}

/// 16 clients send commands to the same 20 streams at once: each accepted
/// command's events are in the log exactly once, each stream's versions are
/// contiguous, each refusal is a 409 or a 422, and each stream's state is the
/// fold of its events (computed here, by the seed's rules).
async fn concurrent_commands_on_the_same_streams_append_each_accepted_event_once(backend: Backend) {
    const CLIENTS: u64 = 16;
    const STREAMS: u64 = 20;
    const COMMANDS: usize = 12;
    let h = std::sync::Arc::new(Harness::start(backend, &["order"]).await);
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let h = std::sync::Arc::clone(&h);
        clients.spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (client + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut answers = Vec::new();
            for i in 0..COMMANDS {
                let stream = format!("order-{}", next() % STREAMS);
                let body = match next() % 3 {
                    0 => place(&format!("c-{client}"), json!([{ "productId": "p", "quantity": 1 + i, "price": 1.25 }])),
                    1 => json!({ "command_type": "ship", "data": { "trackingNumber": format!("T-{client}-{i}") } }),
                    _ => json!({ "command_type": "cancel", "data": { "reason": format!("r-{client}-{i}") } }),
                };
                answers.push((stream.clone(), command(&h, &stream, body).await));
            }
            answers
        });
    }
    let mut accepted: Vec<Event> = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(answers) = clients.join_next().await {
        for (stream, (status, body)) in answers.unwrap() {
            *statuses.entry(status.as_u16()).or_insert(0) += 1;
            match status {
                StatusCode::CREATED => {
                    let events: Vec<Event> = serde_json::from_value(body["events"].clone()).unwrap();
                    assert!(events.iter().all(|e| e.stream_id == stream), "{body}");
                    assert_eq!(body["version"], events.last().unwrap().version);
                    accepted.extend(events);
                }
                StatusCode::CONFLICT => assert_eq!(body["error"]["code"], "command_conflict", "{body}"),
                StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(body["error"]["code"], "rejected", "{body}"),
                other => panic!("{other}: {body}"),
            }
        }
    }
    assert!(statuses.get(&201).is_some_and(|n| *n >= STREAMS as usize / 2), "{statuses:?}");

    let mut logged = Vec::new();
    for s in 0..STREAMS {
        let stream = format!("order-{s}");
        let (status, _) = h.call("GET", &format!("/streams/{stream}"), None).await;
        if status == StatusCode::NOT_FOUND {
            assert!(accepted.iter().all(|e| e.stream_id != stream));
            continue;
        }
        let (events, _) = page(&h, &format!("/streams/{stream}")).await;
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=events.len() as i64).collect::<Vec<_>>(), "{stream}: versions contiguous");
        // The seed's rules, folded here: placed first, then at most one of
        // shipped or cancelled.
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let status = match types.as_slice() {
            ["order.placed"] => "placed",
            ["order.placed", "order.shipped"] => "shipped",
            ["order.placed", "order.cancelled"] => "cancelled",
            other => panic!("{stream}: a history the rules forbid: {other:?}"),
        };
        let state = h.get(&format!("/deciders/order/streams/{stream}/state")).await;
        assert_eq!(
            (state["state"]["status"].as_str(), state["version"].as_i64()),
            (Some(status), Some(events.len() as i64))
        );
        let placed: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(state["state"]["total"], placed["total"], "{stream}");
        logged.extend(events);
    }
    let key = |e: &Event| e.position;
    accepted.sort_by_key(key);
    logged.sort_by_key(key);
    let (accepted, logged): (Vec<Value>, Vec<Value>) =
        (accepted.iter().map(shape).collect(), logged.iter().map(shape).collect());
    assert_eq!(accepted, logged, "every accepted event exactly once, and nothing else");
    assert_eq!(event_count(&h).await, logged.len());
    std::sync::Arc::into_inner(h).expect("the clients are done").finish().await;
}

/// `h`'s answer to `body` on `stream` from decider `name`, with what differs
/// between two servers taken out (times, and `received_at` in the metadata),
/// the decider's own name in a message made neutral (the server names it), and
/// serde's `at line L column C` dropped from a message (the Python helper's
/// JSON reader does not count lines).
async fn comparable(h: &Harness, name: &str, stream: &str, body: &str) -> (StatusCode, Value) {
    let (status, mut answer) = h.call("POST", &format!("/commands/{name}/{stream}"), Some(body)).await;
    if let Some(events) = answer["events"].as_array_mut() {
        for event in events {
            event.as_object_mut().unwrap().remove("occurred_at");
            event["metadata"].as_object_mut().unwrap().remove("received_at");
        }
    }
    if let Some(message) = answer["error"]["message"].as_str() {
        let cut = message.find(" at line ").unwrap_or(message.len());
        let message = message[..cut].replace(&format!("`{name}`"), "`<decider>`");
        answer["error"]["message"] = Value::String(message);
    }
    (status, answer)
}

/// The `order` decider in Python, against the Rust one on another server:
/// the same commands get the same answers (the same events, their payloads
/// byte for byte; the same refusals with the same reasons) and leave the same
/// states. On SQLite only: a decider's answers do not depend on the backend
/// (the Rust decider's tests run on both), and the ~18 MB component is
/// compiled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_order_decider_decides_as_the_rust_one() {
    let rust = Harness::start(Backend::Sqlite, &["order"]).await;
    let python = Harness::start_with(Backend::Sqlite, &[], |config| {
        std::fs::create_dir_all(&config.modules_dir).unwrap();
        std::fs::copy(language_guest("order-py"), config.modules_dir.join("order-py.wasm")).unwrap();
    })
    .await;
    // Its first compile takes minutes on a loaded machine (then it is cached).
    let started = std::time::Instant::now();
    while !python.get("/deciders").await.as_array().unwrap().iter().any(|d| d["name"] == "order-py") {
        assert!(started.elapsed().as_secs() < 600, "order-py not in service: {}", python.get("/modules").await);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let items = json!([{ "productId": "p-1", "quantity": 2, "price": 9.99 }, { "productId": "p-2", "quantity": 1, "price": 0.5 }]);
    // Totals that are easy to get wrong (halves, binary fractions, an integer
    // price, large amounts), text outside ASCII and quotes.
    let awkward = json!([
        { "productId": "p-\"q\"", "quantity": 3, "price": 1.005 },
        { "productId": "p-ü-😀", "quantity": 1, "price": 0.125 },
        { "productId": "p-3", "quantity": 7, "price": 2 },
        { "productId": "p-4", "quantity": 1000, "price": 12345678.915 },
        { "productId": "p-5", "quantity": 1, "price": 1e-7 },
    ]);
    let ship = |tracking: &str| json!({ "command_type": "ship", "data": { "trackingNumber": tracking } });
    let cancel = |reason: &str| json!({ "command_type": "cancel", "data": { "reason": reason } });
    let script = [
        ("order-1", place("c-7", items.clone())),
        ("order-2", place("c-1", json!([]))),
        ("order-1", place("c-1", items.clone())),
        ("order-3", ship("T-1")),
        ("order-3", cancel("early")),
        ("order-1", ship("TRK-1")),
        ("order-1", ship("T-2")),
        ("order-1", cancel("late")),
        ("order-4", place("c-ümlaut \"q\" 😀", awkward)),
        ("order-4", cancel("changed my mind ☕")),
        ("order-4", cancel("again")),
        ("order-4", ship("T-4")),
        (
            "order-5",
            json!({ "command_type": "place", "data": { "customerId": "c-5", "items": items.clone(), "extra": 1 },
                    "metadata": { "causation": "c-1", "n": [1, 2.50] } }),
        ),
        ("order-5", json!({ "command_type": "ship", "data": { "trackingNumber": "T-5" }, "metadata": {} })),
        ("order-6", place("c-6", json!([{ "productId": "p", "quantity": 0, "price": 1 }]))),
        ("order-6", place("c-6", json!([{ "productId": "p", "quantity": "two", "price": 1 }]))),
        ("order-6", json!({ "command_type": "place", "data": { "items": [] } })),
        ("order-6", json!({ "command_type": "ship", "data": {} })),
        ("order-6", json!({ "command_type": "cancel", "data": "now" })),
        ("order-6", json!({ "command_type": "refund", "data": {} })),
        ("invoice-6", place("c-6", items.clone())),
        ("order-6", place("c-6", items.clone())),
    ];
    for (i, (stream, body)) in script.iter().enumerate() {
        let body = body.to_string();
        let want = comparable(&rust, "order", stream, &body).await;
        let got = comparable(&python, "order-py", stream, &body).await;
        assert_eq!(got, want, "command {i} on {stream}: {body}");
    }

    for s in 1..=6 {
        let stream = format!("order-{s}");
        let want = rust.get(&format!("/deciders/order/streams/{stream}/state")).await;
        let got = python.get(&format!("/deciders/order-py/streams/{stream}/state")).await;
        assert_eq!((&got["state"], &got["version"]), (&want["state"], &want["version"]), "{stream}");
        // The payloads as the log holds them (SQLite keeps the text as written).
        let uri = format!("/streams/{stream}");
        let (want, got) = (get_text(&rust, &uri).await, get_text(&python, &uri).await);
        assert_eq!(got.0, want.0, "{stream}: {} {}", got.1, want.1);
        if want.0 == StatusCode::OK {
            let (want, got) = (page(&rust, &uri).await.0, page(&python, &uri).await.0);
            let payloads = |events: &[Event]| -> Vec<(String, String)> {
                events.iter().map(|e| (e.event_type.clone(), e.data.clone())).collect()
            };
            assert_eq!(payloads(&got), payloads(&want), "{stream}");
        }
    }
    let counts = |d: &Value| [d["commands"].clone(), d["rejections"].clone(), d["failures"].clone()];
    let (want, got) = (rust.get("/deciders").await, python.get("/deciders").await);
    assert_eq!(counts(&got[0]), counts(&want[0]), "{got} {want}");
    assert_eq!(
        (&got[0]["stream_prefix"], &got[0]["command_types"]),
        (&want[0]["stream_prefix"], &want[0]["command_types"])
    );
    rust.finish().await;
    python.finish().await;
}
