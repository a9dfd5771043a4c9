//! Tier 2: real components built from `projections/`, run by a real runtime
//! on embedded SQLite, driven and read through the HTTP router.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, Harness, expected_customers, expected_rows};
use reel::testing::workload::{OrderWorkload, fold, generate};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

both_backends!(
    read_models_equal_the_fold_over_randomized_events,
    restart_continues_from_the_checkpoint_without_doubling,
    trapping_and_looping_projections_do_not_stop_the_others,
    a_replaced_module_handles_later_events_without_a_restart,
    broken_module_files_never_replace_a_working_one,
    bad_requests_get_clear_errors_and_lose_nothing,
    reads_wait_for_min_position_and_time_out_with_504,
    big_events_come_in_calls_the_guests_memory_holds,
    a_guest_out_of_memory_gets_smaller_calls_from_then_on,
    appended_payloads_keep_their_numbers,
);

async fn read_models_equal_the_fold_over_randomized_events(backend: Backend) {
    let h = Harness::start(backend, &["order_summaries", "customer_stats"]).await;
    let workload = OrderWorkload { orders: 1500, customers: 40, follow_up_window: 300, seed: 42 };
    let events = generate(&workload);
    assert!(events.len() > 2000, "a few thousand events: {}", events.len());
    let last = h.append_workload(&events).await;

    // Read-your-writes: both projections have applied the last append.
    h.get(&format!("/projections/order-summaries/tables/order_summaries?limit=1&min_position={last}")).await;
    h.get(&format!("/projections/customer-stats/kv?limit=1&min_position={last}")).await;

    let expected = fold(&h.stored_events().await);
    assert_eq!(expected.orders.len(), 1500);
    assert_eq!(h.order_rows().await, expected_rows(&expected), "order_summaries differs from the fold");
    assert_eq!(h.customer_values().await, expected_customers(&expected), "customer-stats differs from the fold");
    assert_eq!(
        h.kv_bytes("customer-stats", "customer/").await,
        expected.customers,
        "stored customer-stats bytes differ from the fold"
    );

    // The custom query answers from the same data, newest first, at most 50.
    let customer = expected.orders.values().next().unwrap().customer_id.clone();
    let args = common::urlencode(&json!({ "customerId": customer }).to_string());
    let answer = h.get(&format!("/projections/order-summaries/query/customer-orders?args={args}")).await;
    let mut mine: Vec<_> = expected.orders.values().filter(|o| o.customer_id == customer).collect();
    mine.sort_by(|a, b| (&b.placed_at, &b.order_id).cmp(&(&a.placed_at, &a.order_id)));
    let want: Vec<&str> = mine.iter().take(50).map(|o| o.order_id.as_str()).collect();
    let got: Vec<&str> = answer.as_array().unwrap().iter().map(|r| r["order_id"].as_str().unwrap()).collect();
    assert_eq!(got, want);

    let status = h.status("order-summaries").await;
    assert_eq!(status["state"], "running");
    assert_eq!(status["position"], last);
    assert_eq!(status["lag"], 0);
    assert!(status["last_error"].is_null());
    h.finish().await;
}

async fn restart_continues_from_the_checkpoint_without_doubling(backend: Backend) {
    let mut h = Harness::start(backend, &["order_summaries", "customer_stats", "fixture_echo_a"]).await;
    let events = generate(&OrderWorkload { orders: 400, customers: 15, follow_up_window: 100, seed: 9 });
    let (first, second) = events.split_at(events.len() / 2);
    let mid = h.append_workload(first).await;
    h.get(&format!("/projections/echo/kv/seen/{mid:020}?min_position={mid}")).await;
    h = h.restart().await;
    let last = h.append_workload(second).await;
    h.get(&format!("/projections/customer-stats/kv?limit=1&min_position={last}")).await;
    h.get(&format!("/projections/order-summaries/tables/order_summaries?limit=1&min_position={last}")).await;
    h.get(&format!("/projections/echo/kv?limit=1&min_position={last}")).await;

    let expected = fold(&h.stored_events().await);
    assert_eq!(h.order_rows().await, expected_rows(&expected));
    assert_eq!(h.kv_bytes("customer-stats", "customer/").await, expected.customers);
    // echo records every position it handled: each exactly once.
    let seen = h.get("/projections/echo/kv?prefix=seen/&limit=10000").await;
    let positions: Vec<i64> = seen["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap()["seen/".len()..].parse().unwrap())
        .collect();
    assert_eq!(positions, (1..=last).collect::<Vec<_>>());
    assert_eq!(h.get("/projections/echo/query/seen").await, json!(last));
    h.finish().await;
}

async fn trapping_and_looping_projections_do_not_stop_the_others(backend: Backend) {
    let h = Harness::start(backend, &["order_summaries", "fixture_faulty", "fixture_faulty_twin"]).await;
    let events = generate(&OrderWorkload { orders: 200, customers: 10, follow_up_window: 50, seed: 3 });
    let (before, after) = events.split_at(150);
    h.append_workload(before).await;
    let trap = h
        .append("faults", None, json!([{ "event_type": "fault", "data": { "target": "faulty", "action": "trap" } }]))
        .await;
    let trap_at = trap["positions"][0].as_i64().unwrap();
    let spin = h
        .append(
            "faults",
            None,
            json!([{ "event_type": "fault", "data": { "target": "faulty-twin", "action": "loop" } }]),
        )
        .await;
    let spin_at = spin["positions"][0].as_i64().unwrap();
    let last = h.append_workload(after).await;

    // The healthy projection catches up with everything.
    h.get(&format!("/projections/order-summaries/tables/order_summaries?limit=1&min_position={last}")).await;
    let expected = fold(&h.stored_events().await);
    assert_eq!(h.order_rows().await, expected_rows(&expected));

    // The trapping one stops exactly at its poison event, and says why.
    let faulty = h.wait_status("faulty", PATIENCE, |s| s["state"] == "stopped").await;
    assert_eq!(faulty["stopped_at"], trap_at, "{faulty:#}");
    let error = faulty["last_error"]["message"].as_str().unwrap();
    assert!(error.contains("trapped"), "{error}");
    assert!(error.contains(&format!("fault event {trap_at} asked faulty to trap")), "{error}");
    assert_eq!(faulty["position"], trap_at - 1, "everything before the poison event is applied");

    // The looping one is cut off by its CPU deadline and stops at its event.
    let twin = h.wait_status("faulty-twin", PATIENCE, |s| s["state"] == "stopped").await;
    assert_eq!(twin["stopped_at"], spin_at, "{twin:#}");
    assert!(twin["last_error"]["message"].as_str().unwrap().contains("timed out"), "{twin:#}");

    // Both applied each event before their poison event exactly once.
    for (name, stop) in [("faulty", trap_at), ("faulty-twin", spin_at)] {
        let seen = h.get(&format!("/projections/{name}/kv?prefix=seen/&limit=10000")).await;
        let positions: Vec<i64> = seen["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap()["seen/".len()..].parse().unwrap())
            .collect();
        assert_eq!(positions, (1..stop).collect::<Vec<_>>(), "{name}");
    }
    // The server still answers.
    assert_eq!(h.get("/healthz").await["status"], "ok");
    h.finish().await;
}

async fn a_replaced_module_handles_later_events_without_a_restart(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    h.install("fixture_echo_a", "echo.wasm");
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    let first =
        h.append("s-1", Some(0), json!([{ "event_type": "tick", "data": {} }])).await["positions"][0].as_i64().unwrap();
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{first:020}?min_position={first}")).await, json!("a"));

    let before = h.status("echo").await["module"]["hash"].clone();
    h.install("fixture_echo_b", "echo.wasm");
    h.wait_status("echo", PATIENCE, |s| s["module"]["hash"] != before).await;
    let second =
        h.append("s-1", Some(1), json!([{ "event_type": "tick", "data": {} }])).await["positions"][0].as_i64().unwrap();
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{second:020}?min_position={second}")).await, json!("b"));
    // Same version: it continued from the checkpoint, nothing was replayed.
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{first:020}")).await, json!("a"));
    assert_eq!(h.get("/projections/echo/query/variant").await, json!("b"));
    h.finish().await;
}

async fn broken_module_files_never_replace_a_working_one(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    h.install("fixture_echo_a", "echo.wasm");
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    let file = h.config.modules_dir.join("echo.wasm");
    let good = std::fs::read(common::guest("fixture_echo_b")).unwrap();
    let wrong_world = std::fs::read(common::guest("fixture_not_a_projection")).unwrap();

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("garbage", b"this is not wasm at all".to_vec(), "not a WebAssembly component: no WebAssembly header"),
        ("core module", b"\0asm\x01\0\0\0".to_vec(), "it is a core module"),
        ("truncated component", good[..good.len() / 2].to_vec(), "is not a WebAssembly component"),
        ("wrong world", wrong_world, "does not match the reel:projection@0.1.1 world"),
    ];
    let mut version = 0;
    for (what, bytes, message) in cases {
        std::fs::write(&file, bytes).unwrap();
        let status =
            h.wait_status("echo", PATIENCE, |s| s["module_error"].as_str().is_some_and(|e| e.contains(message))).await;
        assert_eq!(status["state"], "running", "{what}: {status:#}");
        let modules = h.get("/modules").await;
        let entry =
            modules.as_array().unwrap().iter().find(|m| m["path"].as_str().unwrap().ends_with("echo.wasm")).unwrap();
        assert!(entry["error"].as_str().unwrap().contains(message), "{what}: {entry:#}");
        // The old code keeps running and serving.
        let at = h.append("s-2", Some(version), json!([{ "event_type": "tick", "data": {} }])).await["positions"][0]
            .as_i64()
            .unwrap();
        version += 1;
        assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}?min_position={at}")).await, json!("a"), "{what}");
    }

    // Fixing the file recovers.
    h.install("fixture_echo_b", "echo.wasm");
    h.wait_status("echo", PATIENCE, |s| s["module_error"].is_null()).await;
    let at = h.append("s-2", Some(version), json!([{ "event_type": "tick", "data": {} }])).await["positions"][0]
        .as_i64()
        .unwrap();
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}?min_position={at}")).await, json!("b"));
    h.finish().await;
}

async fn bad_requests_get_clear_errors_and_lose_nothing(backend: Backend) {
    let h = Harness::start(backend, &["order_summaries", "customer_stats"]).await;
    let events = generate(&OrderWorkload { orders: 100, customers: 5, follow_up_window: 20, seed: 5 });
    let last = h.append_workload(&events).await;
    // The read model holds the whole workload before anything compares two
    // reads of it: a catching-up projection answers differently each time.
    h.get(&format!("/projections/order-summaries/tables/order_summaries?limit=1&min_position={last}")).await;

    let cases: Vec<(&str, &str, Option<&str>, StatusCode, &str)> = vec![
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "x", "events": [{"event_type": "a", "data": {}"#),
            StatusCode::BAD_REQUEST,
            "Failed to parse the request body as JSON",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "x", "events": []}"#),
            StatusCode::BAD_REQUEST,
            "events must hold 1 to 10000 events",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "", "events": [{"event_type": "a", "data": {}}]}"#),
            StatusCode::BAD_REQUEST,
            "stream_id must be 1 to 512 bytes",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "x", "evnts": []}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `evnts`",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "x", "events": [{"event_type": "a", "data": {}, "metadata": 3}]}"#),
            StatusCode::BAD_REQUEST,
            "metadata must be a JSON object",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "a\u0000b", "events": [{"event_type": "a", "data": {}}]}"#),
            StatusCode::BAD_REQUEST,
            "stream_id holds a NUL character (\\u0000), which PostgreSQL cannot store",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "x", "events": [{"event_type": "a\u0000", "data": {}}]}"#),
            StatusCode::BAD_REQUEST,
            "events[0].event_type holds a NUL character",
        ),
        (
            "POST",
            "/events",
            Some(
                r#"{"stream_id": "x", "events": [{"event_type": "a", "data": {}}, {"event_type": "a", "data": {"list": [{"k\u0000": 1}]}}]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "events[1].data holds a NUL character",
        ),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "x", "events": [{"event_type": "a", "data": {}, "metadata": {"by": "\u0000"}}]}"#),
            StatusCode::BAD_REQUEST,
            "events[0].metadata holds a NUL character",
        ),
        (
            "POST",
            "/events",
            Some(r#"["x", null, [{"event_type": "a", "data": {}}]]"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid type: sequence, expected a JSON object",
        ),
        ("POST", "/events", Some("[]"), StatusCode::UNPROCESSABLE_ENTITY, "expected a JSON object"),
        (
            "POST",
            "/events",
            Some(r#"{"stream_id": "x", "events": [["a", {}]]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "events[0]: invalid type: sequence, expected a JSON object",
        ),
        ("PUT", "/events", None, StatusCode::METHOD_NOT_ALLOWED, "PUT is not allowed here"),
        ("DELETE", "/healthz", None, StatusCode::METHOD_NOT_ALLOWED, "DELETE is not allowed here"),
        ("GET", "/projections/nope", None, StatusCode::NOT_FOUND, "no projection named `nope`"),
        ("GET", "/projections/nope/kv/a", None, StatusCode::NOT_FOUND, "no projection named `nope`"),
        (
            "GET",
            "/projections/order-summaries/tables/nope",
            None,
            StatusCode::NOT_FOUND,
            "no table `nope` in this projection",
        ),
        ("GET", "/projections/order-summaries/tables/_reel_kv", None, StatusCode::NOT_FOUND, "no table `_reel_kv`"),
        (
            "GET",
            "/projections/order-summaries/tables/order_summaries?bogus=1",
            None,
            StatusCode::BAD_REQUEST,
            "table `order_summaries` has no column `bogus`",
        ),
        (
            "GET",
            "/projections/order-summaries/tables/order_summaries?order=x%22%3B%20DROP",
            None,
            StatusCode::BAD_REQUEST,
            "has no column",
        ),
        (
            "GET",
            "/projections/order-summaries/tables/order_summaries?order=total.sideways",
            None,
            StatusCode::BAD_REQUEST,
            "order `total.sideways`: the direction after the dot is `asc` or `desc`, not `sideways`",
        ),
        (
            "GET",
            "/projections/order-summaries/tables/order_summaries?customer_id=c%00",
            None,
            StatusCode::BAD_REQUEST,
            "the filter on `customer_id` holds a NUL character",
        ),
        (
            "GET",
            "/projections/order-summaries/tables/order_summaries?limit=1&limit=2",
            None,
            StatusCode::BAD_REQUEST,
            "`limit` is given twice",
        ),
        ("GET", "/projections/customer-stats/kv?limit=-1", None, StatusCode::BAD_REQUEST, "limit `-1` is not a number"),
        (
            "GET",
            "/projections/customer-stats/kv/customer/x?min_position=soon",
            None,
            StatusCode::BAD_REQUEST,
            "min_position `soon` is not a number",
        ),
        (
            "GET",
            "/projections/order-summaries/tables/order_summaries?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "limit must be at least 1",
        ),
        (
            "GET",
            "/projections/order-summaries/tables/order_summaries?min_position=abc",
            None,
            StatusCode::BAD_REQUEST,
            "min_position `abc` is not a number",
        ),
        (
            "GET",
            "/projections/customer-stats/kv?prefix=customer/&limit=99999",
            None,
            StatusCode::BAD_REQUEST,
            "limit must be at most 10000",
        ),
        ("GET", "/projections/customer-stats/kv?colour=red", None, StatusCode::BAD_REQUEST, "unknown field `colour`"),
        (
            "GET",
            "/projections/customer-stats/kv/customer/nobody",
            None,
            StatusCode::NOT_FOUND,
            "has no key `customer/nobody`",
        ),
        (
            "GET",
            "/projections/order-summaries/query/customer-orders?args=%7Bnot-json",
            None,
            StatusCode::BAD_REQUEST,
            "args is not valid JSON",
        ),
        ("GET", "/projections/order-summaries/query/nope", None, StatusCode::BAD_REQUEST, "unknown query `nope`"),
        (
            "GET",
            "/projections/order-summaries/query/customer-orders?args=%7B%7D",
            None,
            StatusCode::BAD_REQUEST,
            "customer-orders needs",
        ),
        ("GET", "/no/such/route", None, StatusCode::NOT_FOUND, "no such endpoint"),
        // Refusals of every extractor carry reel's JSON body, not axum's text.
        ("POST", "/projections/%FF/pause", None, StatusCode::BAD_REQUEST, "Invalid UTF-8 in `name`"),
        ("DELETE", "/projections/%FF", None, StatusCode::BAD_REQUEST, "Invalid UTF-8 in `name`"),
        ("GET", "/projections/%FF/dead-letters", None, StatusCode::BAD_REQUEST, "Invalid UTF-8 in `name`"),
        (
            "POST",
            "/projections/order-summaries/dead-letters/first/retry",
            None,
            StatusCode::BAD_REQUEST,
            "Cannot parse value at index 1 with value `first`",
        ),
        (
            "POST",
            "/projections/order-summaries/query/customer-orders",
            Some("{not json"),
            StatusCode::BAD_REQUEST,
            "Failed to parse the request body as JSON",
        ),
        (
            "POST",
            "/projections/order-summaries/query/customer-orders?args=%7B%7D",
            Some("{}"),
            StatusCode::BAD_REQUEST,
            "args are given twice",
        ),
    ];
    for (method, uri, body, want, message) in cases {
        let (status, response) = h.call(method, uri, body).await;
        assert_eq!(status, want, "{method} {uri}: {response}");
        let text = response["error"]["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{method} {uri}: {text:?} should say {message:?}");
    }
    // Missing content type.
    let (status, response) = {
        let request = axum::http::Request::post("/events").body(axum::body::Body::from("{}")).unwrap();
        let response = tower::ServiceExt::oneshot(h.app.clone(), request).await.unwrap();
        (response.status(), response)
    };
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{response:?}");

    // A body over the limit: 413, saying the limit.
    let huge =
        format!(r#"{{"stream_id": "x", "events": [{{"event_type": "a", "data": "{}"}}]}}"#, "x".repeat(17 << 20));
    let (status, response) = h.call("POST", "/events", Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{response}");
    assert_eq!(response["error"]["code"], "payload_too_large");
    assert_eq!(response["error"]["message"], "the request body is over the limit of 16 MiB");

    // A query's text parameter with a NUL character: PostgreSQL cannot hold
    // one, and reel says so in its own words, not the server's.
    let args = common::urlencode(r#"{"customerId": "c\u0000"}"#);
    let (status, response) =
        h.call("GET", &format!("/projections/order-summaries/query/customer-orders?args={args}"), None).await;
    match backend {
        Backend::Postgres => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
            let message = response["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("text with a NUL character (\\u0000), which PostgreSQL cannot store"),
                "{message}"
            );
            assert!(!message.contains("22021"), "{message}");
        }
        Backend::Sqlite => assert_eq!(response, json!([])),
    }

    // The arguments of a query may come as the body of a POST, and answer
    // what the same arguments in `?args=` do.
    let customer = json!({ "customerId": events[0].data["customerId"] }).to_string();
    let url = "/projections/order-summaries/query/customer-orders";
    let (status, posted) = h.call("POST", url, Some(&customer)).await;
    assert_eq!(status, StatusCode::OK, "{posted}");
    assert!(!posted.as_array().unwrap().is_empty(), "{posted}");
    assert_eq!(posted, h.get(&format!("{url}?args={}", common::urlencode(&customer))).await);

    // Any case of the direction orders.
    let rows = h
        .get(&format!(
            "/projections/order-summaries/tables/order_summaries?order=total.DESC&limit=3&min_position={last}"
        ))
        .await;
    let totals: Vec<f64> = rows.as_array().unwrap().iter().map(|r| r["total"].as_f64().unwrap()).collect();
    assert!(totals.len() == 3 && totals.windows(2).all(|w| w[0] >= w[1]), "{totals:?}");

    // Version conflicts are 409 with both versions named, and store nothing.
    let stream = &events[0].stream_id;
    let body =
        json!({ "stream_id": stream, "expected_version": 0, "events": [{ "event_type": "order.placed", "data": {} }] });
    let (status, response) = h.call("POST", "/events", Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let expected_message = format!("stream `{stream}` is at version");
    assert!(response["error"]["message"].as_str().unwrap().contains(&expected_message), "{response}");

    // Nothing was lost or added by any of it.
    assert_eq!(h.get("/healthz").await["head"], last);
    h.get(&format!("/projections/customer-stats/kv?limit=1&min_position={last}")).await;
    h.get(&format!("/projections/order-summaries/tables/order_summaries?limit=1&min_position={last}")).await;
    let expected = fold(&h.stored_events().await);
    assert_eq!(h.order_rows().await, expected_rows(&expected));
    assert_eq!(h.customer_values().await, expected_customers(&expected));
    h.finish().await;
}

async fn reads_wait_for_min_position_and_time_out_with_504(backend: Backend) {
    let h = Harness::start_with(backend, &["fixture_echo_a"], |c| {
        c.read_wait = Duration::from_millis(300);
        c.limits.query_timeout = Duration::from_millis(500);
    })
    .await;
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    let at = h.append("s", None, json!([{ "event_type": "tick", "data": {} }])).await["positions"][0].as_i64().unwrap();
    // Immediately after the append, a read with min_position sees it.
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}?min_position={at}")).await, json!("a"));
    // A position the log never handed out answers at once (min_position.rs
    // has the rest: stopped, paused, and behind).
    let (status, body) = h.call("GET", "/projections/echo/kv/seen?min_position=1000000", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "position_unknown", "{body}");
    // A query whose SQL runs past the query deadline is cancelled: a 504, and
    // the projection's queries go on.
    let (status, body) = h.call("GET", "/projections/echo/query/slow-sql", None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "query_timeout", "{body}");
    assert_eq!(h.get("/projections/echo/query/variant").await, json!("a"));
    // So is a table read: here of a view that counts to a billion. The
    // projection's other reads go on.
    let fault = json!([{ "event_type": "fault", "data": { "target": "echo", "action": "slow-view" } }]);
    let at = h.append("s", None, fault).await["positions"][0].as_i64().unwrap();
    let started = std::time::Instant::now();
    let (status, body) = h.call("GET", &format!("/projections/echo/tables/slow?min_position={at}"), None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["code"], "query_timeout", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("deadline"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(30), "cut off at the deadline, not at the end");
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}")).await, json!("a"));
    assert_eq!(h.get("/projections/echo/tables").await, json!(["slow"]));

    h.finish().await;
}

/// A batch of big events fits no guest memory at once; the worker hands it
/// over in calls of at most `call_bytes`, with no failure on the way.
async fn big_events_come_in_calls_the_guests_memory_holds(backend: Backend) {
    const CALL_BYTES: usize = 1 << 20;
    let h = Harness::start_with(backend, &["fixture_echo_a"], |c| {
        c.limits.memory_bytes = 4 << 20;
        c.batch.call_bytes = CALL_BYTES;
    })
    .await;
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    // 6 MB in one transaction: one batch, bigger than the guest's memory.
    let pad = "x".repeat(300_000);
    let events: Vec<_> = (0..20).map(|i| json!({ "event_type": "big", "data": { "i": i, "pad": pad } })).collect();
    let positions = h.append("big", None, json!(events)).await["positions"].clone();
    let last = positions[19].as_i64().unwrap();
    applied_with_no_failure(&h, "echo", last).await;
    for position in positions.as_array().unwrap() {
        let key = format!("/projections/echo/kv/seen/{:020}", position.as_i64().unwrap());
        assert_eq!(h.get(&key).await, json!("a"), "{key}");
    }
    h.finish().await;
}

async fn a_guest_out_of_memory_gets_smaller_calls_from_then_on(backend: Backend) {
    // The default calls (64 MiB of event text) and a guest capped at 4 MiB:
    // the first call of big events runs it out of memory.
    let h = Harness::start_with(backend, &["fixture_echo_a"], |c| c.limits.memory_bytes = 4 << 20).await;
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    let pad = "x".repeat(300_000);
    let big = |from: usize| -> Vec<_> {
        (from..from + 20).map(|i| json!({ "event_type": "big", "data": { "i": i, "pad": pad } })).collect()
    };
    let first = h.append("big", None, json!(big(0))).await["positions"].clone();
    let last = first[19].as_i64().unwrap();
    let status = h.wait_status("echo", PATIENCE, |s| s["position"] == last).await;
    assert_eq!(status["state"], "running", "{status:#}");

    // From then on calls hold what the guest can: the next 6 MB go through
    // with no failure at all.
    let second = h.append("big", Some(20), json!(big(20))).await["positions"].clone();
    let last = second[19].as_i64().unwrap();
    applied_with_no_failure(&h, "echo", last).await;
    // Every event applied once: echo records each position it handled.
    let seen = h.get("/projections/echo/kv?prefix=seen/&limit=100").await;
    let handled: Vec<&str> = seen["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    let appended: Vec<String> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(second.as_array().unwrap())
        .map(|p| format!("seen/{:020}", p.as_i64().unwrap()))
        .collect();
    assert_eq!(handled, appended);
    let doubled = h.get("/projections/echo/kv?prefix=duplicate/&limit=100").await;
    assert_eq!(doubled["entries"], json!([]), "no event handled twice");
    h.finish().await;
}

/// Wait until projection `name` has applied `last`, checking every few
/// milliseconds on the way that it never failed.
async fn applied_with_no_failure(h: &Harness, name: &str, last: i64) {
    let started = std::time::Instant::now();
    loop {
        let status = h.get(&format!("/projections/{name}")).await;
        assert!(status["last_error"].is_null() && status["state"] == "running", "{status:#}");
        if status["position"] == last {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "{name} did not reach {last}: {status:#}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn appended_payloads_keep_their_numbers(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    // Read into an f64, the first would become 1.2345678901234568e29.
    let body = r#"{"stream_id": "n", "events": [{"event_type": "n", "data": {"big": 123456789012345678901234567890, "cents": 1.50, "small": 0.1}, "metadata": {"id": 98765432109876543210}}]}"#;
    let (status, response) = h.call("POST", "/events", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{response}");
    let stored = h.stored_events().await;
    let data = &stored.last().unwrap().data;
    for number in ["123456789012345678901234567890", "1.50", "0.1"] {
        assert!(data.contains(number), "{number} is not in the stored payload {data}");
    }
    h.finish().await;
}
