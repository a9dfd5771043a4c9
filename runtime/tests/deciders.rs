//! The write side: a stream's events read back from the log
//! (`GET /streams/{id}`).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Backend, Harness};
use http_body_util::BodyExt;
use reel::model::Event;
use serde_json::{Value, json};
use tower::ServiceExt;

both_backends!(a_stream_read_returns_what_was_appended_in_version_order);

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
