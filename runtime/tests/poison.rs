//! What an administrator does about poison events, on both backends: skip
//! the event a projection (policy `stop`) halted at, which goes to the dead
//! letters while the projection goes on after it, and discard a dead letter
//! for good; both refused with a clear error otherwise, and recorded in the
//! projection's status (ADR 21).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, Harness};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

both_backends!(an_administrator_skips_the_event_a_projection_stopped_at_and_discards_dead_letters);

/// Append `count` ticks to `stream`; the last position.
async fn ticks(h: &Harness, stream: &str, count: usize) -> i64 {
    let events: Vec<Value> = (0..count).map(|_| json!({ "event_type": "tick", "data": {} })).collect();
    h.append(stream, None, json!(events)).await["positions"].as_array().unwrap().last().unwrap().as_i64().unwrap()
}

async fn an_administrator_skips_the_event_a_projection_stopped_at_and_discards_dead_letters(backend: Backend) {
    let h = Harness::start(backend, &["fixture_faulty"]).await;
    let mut poison = Vec::new();
    for i in 0..2 {
        ticks(&h, &format!("before-{i}"), 40).await;
        let fault = json!([{ "event_type": "fault", "data": { "target": "faulty", "action": "error" } }]);
        poison.push(h.append(&format!("fault-{i}"), None, fault).await["positions"][0].as_i64().unwrap());
    }
    let last = ticks(&h, "after", 40).await;
    let (first, second) = (poison[0], poison[1]);
    let status = h.wait_status("faulty", PATIENCE, |s| s["state"] == "stopped").await;
    assert_eq!((&status["stopped_at"], &status["position"]), (&json!(first), &json!(first - 1)), "{status:#}");

    // Refused: a projection reel does not know, an event it is not stopped at.
    let (code, body) = h.call("POST", &format!("/projections/nope/skip/{first}"), None).await;
    assert_eq!((code, &body["error"]["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{body}");
    let (code, body) = h.call("POST", &format!("/projections/faulty/skip/{second}"), None).await;
    assert_eq!((code, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("not_stopped_at")), "{body}");
    let expected = format!("projection `faulty` is stopped at event {first}, not {second}");
    assert_eq!(body["error"]["message"], expected);
    assert_eq!(h.status("faulty").await["stopped_at"], first, "a refused skip changes nothing");

    // The event it stopped at: set aside, and the projection goes on after it
    // (here to the next poison event, where it stops again).
    let (code, body) = h.call("POST", &format!("/projections/faulty/skip/{first}"), None).await;
    assert_eq!((code, body), (StatusCode::OK, json!({ "projection": "faulty", "skipped": first })));
    let status = h.wait_status("faulty", PATIENCE, |s| s["stopped_at"] == second).await;
    assert_eq!((&status["state"], &status["position"]), (&json!("stopped"), &json!(second - 1)), "{status:#}");
    assert_eq!((&status["skipped"], &status["dead_letters"]), (&json!(1), &json!(1)), "{status:#}");
    assert_eq!(
        (&status["admin_actions"][0]["action"], &status["admin_actions"][0]["position"]),
        (&json!("skip"), &json!(first))
    );
    assert!(status["admin_actions"][0]["at"].is_string(), "{status:#}");

    let (code, _) = h.call("POST", &format!("/projections/faulty/skip/{second}"), None).await;
    assert_eq!(code, StatusCode::OK);
    let status = h.wait_status("faulty", PATIENCE, |s| s["position"] == last).await;
    assert_eq!((&status["state"], &status["last_error"]), (&json!("running"), &Value::Null), "{status:#}");
    let (code, body) = h.call("POST", &format!("/projections/faulty/skip/{second}"), None).await;
    assert_eq!((code, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("not_stopped_at")), "{body}");
    let expected = format!(
        "projection `faulty` is running, not stopped at event {second}: only the event a stopped projection \
         halted at can be skipped"
    );
    assert_eq!(body["error"]["message"], expected);

    // Both are dead letters, saying why; nothing else is missing or doubled.
    let letters = h.get("/projections/faulty/dead-letters").await;
    let positions: Vec<i64> = letters.as_array().unwrap().iter().map(|l| l["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, poison, "{letters:#}");
    for letter in letters.as_array().unwrap() {
        let error = letter["error"].as_str().unwrap();
        assert!(error.starts_with("skipped by an administrator; it had failed with: "), "{error}");
        assert!(error.contains(&format!("fault event {} asked faulty to fail", letter["position"])), "{error}");
        assert_eq!(letter["data"], json!({ "target": "faulty", "action": "error" }));
    }
    let seen: BTreeSet<i64> =
        h.kv_bytes("faulty", "seen/").await.into_keys().map(|k| k["seen/".len()..].parse().unwrap()).collect();
    assert_eq!(seen, (1..=last).filter(|p| !poison.contains(p)).collect::<BTreeSet<i64>>());
    assert!(h.kv_bytes("faulty", "duplicate/").await.is_empty(), "no event handled twice");
    // A skipped event can be retried later (with this code it still fails, and stays).
    let (code, body) = h.call("POST", &format!("/projections/faulty/dead-letters/{first}/retry"), None).await;
    assert_eq!((code, &body["error"]["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &json!("still_failing")), "{body}");

    // Discarded: gone for good; a second discard finds nothing.
    let (code, body) = h.call("DELETE", &format!("/projections/faulty/dead-letters/{first}"), None).await;
    assert_eq!((code, body), (StatusCode::OK, json!({ "projection": "faulty", "discarded": first })));
    let letters = h.get("/projections/faulty/dead-letters").await;
    assert_eq!(letters.as_array().unwrap().iter().map(|l| l["position"].clone()).collect::<Vec<_>>(), [json!(second)]);
    let (code, body) = h.call("DELETE", &format!("/projections/faulty/dead-letters/{first}"), None).await;
    assert_eq!(
        (code, &body["error"]["message"]),
        (StatusCode::NOT_FOUND, &json!(format!("no dead letter at position {first}")))
    );
    let (code, body) = h.call("DELETE", "/projections/nope/dead-letters/1", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");

    // The status records both kinds, newest first.
    let status = h.status("faulty").await;
    assert_eq!((&status["skipped"], &status["discarded"], &status["dead_letters"]), (&json!(2), &json!(1), &json!(1)));
    let actions: Vec<(Value, Value)> = status["admin_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].clone(), a["position"].clone()))
        .collect();
    assert_eq!(
        actions,
        [(json!("discard"), json!(first)), (json!("skip"), json!(second)), (json!("skip"), json!(first))]
    );

    // A rebuild (policy stop) halts at each event the serving version
    // skipped: a skip of that position reaches it, and reads switch to it
    // once it has caught up.
    let (code, body) = h.call("POST", "/projections/faulty/rebuild", None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let rebuilt = body["rebuilding"].clone();
    let status = h.wait_status("faulty", PATIENCE, |s| s["rebuild"]["stopped_at"] == first).await;
    assert_eq!(status["state"], "running", "the serving version runs on: {status:#}");
    let (code, body) = h.call("POST", &format!("/projections/faulty/skip/{second}"), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let refusal = format!("the version being rebuilt: projection `faulty` is stopped at event {first}, not {second}");
    assert!(body["error"]["message"].as_str().unwrap().contains(&refusal), "{body}");
    for p in &poison {
        h.wait_status("faulty", PATIENCE, |s| s["rebuild"]["stopped_at"] == *p).await;
        let (code, body) = h.call("POST", &format!("/projections/faulty/skip/{p}"), None).await;
        assert_eq!((code, body), (StatusCode::OK, json!({ "projection": "faulty", "skipped": p })));
    }
    let status = h.wait_status("faulty", PATIENCE, |s| s["namespace"] == rebuilt && s["position"] == last).await;
    assert_eq!((&status["state"], &status["skipped"]), (&json!("running"), &json!(2)), "{status:#}");
    let letters = h.get("/projections/faulty/dead-letters").await;
    let positions: Vec<i64> = letters.as_array().unwrap().iter().map(|l| l["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, poison, "the rebuilt version's own dead letters");
    h.finish().await;
}
