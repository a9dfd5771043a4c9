//! `min_position` answers at once when waiting cannot help: a position the
//! log never handed out (400 `position_unknown`), a projection stopped at a
//! poison event (409 `projection_stopped`, naming it and why) or paused (409
//! `projection_paused`). Only a running projection that is behind waits, and
//! times out with a 504.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Backend, Harness};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

both_backends!(min_position_waits_only_for_a_running_projection_that_is_behind);

async fn min_position_waits_only_for_a_running_projection_that_is_behind(backend: Backend) {
    let h = Harness::start_with(backend, &["fixture_echo_a", "fixture_chatter"], |c| {
        c.read_wait = Duration::from_secs(2);
        c.limits.batch_timeout = Duration::from_secs(1);
    })
    .await;
    let at = h.append("s", None, json!([{ "event_type": "tick", "data": {} }])).await["positions"][0].as_i64().unwrap();
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}?min_position={at}")).await, json!("a"));
    let answer = async |projection: &str, position: i64| {
        let started = Instant::now();
        let (status, body) =
            h.call("GET", &format!("/projections/{projection}/kv?limit=1&min_position={position}"), None).await;
        (status, body["error"]["code"].clone(), body["error"]["message"].as_str().unwrap_or("").to_owned(), started)
    };

    // Never handed out: at once.
    let (status, code, message, started) = answer("echo", at + 1_000_000).await;
    assert_eq!((status, code), (StatusCode::BAD_REQUEST, json!("position_unknown")), "{message}");
    assert!(message.contains(&format!("the log's last position is {at}")), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Running and behind (its call loops until the CPU deadline, then it is
    // retried): the read waits, then 504.
    let fault = json!([{ "event_type": "fault", "data": { "target": "echo", "action": "loop" } }]);
    let poison = h.append("f", None, fault).await["positions"][0].as_i64().unwrap();
    let (status, code, message, started) = answer("echo", poison).await;
    assert_eq!((status, code), (StatusCode::GATEWAY_TIMEOUT, json!("timeout")), "{message}");
    assert!(started.elapsed() >= Duration::from_secs(2));

    // Stopped at it: at once, naming the event and why.
    h.wait_status("echo", PATIENCE, |s| s["state"] == "stopped").await;
    let (status, code, message, started) = answer("echo", poison).await;
    assert_eq!((status, code), (StatusCode::CONFLICT, json!("projection_stopped")), "{message}");
    assert!(message.contains(&format!("stopped at event {poison}")) && message.contains("timed out"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Paused: at once.
    h.wait_status("chatter", PATIENCE, |s| s["position"] == poison).await;
    let (status, _) = h.call("POST", "/projections/chatter/pause", None).await;
    assert_eq!(status, StatusCode::OK);
    h.wait_status("chatter", PATIENCE, |s| s["state"] == "paused").await;
    let later =
        h.append("s", None, json!([{ "event_type": "tick", "data": {} }])).await["positions"][0].as_i64().unwrap();
    let (status, code, message, started) = answer("chatter", later).await;
    assert_eq!((status, code), (StatusCode::CONFLICT, json!("projection_paused")), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));
    h.finish().await;
}
