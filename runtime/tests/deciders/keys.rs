//! Idempotency keys (ADR 25): a command sent again with its key gets its
//! first answer and appends nothing, after a restart too, and from another
//! reel process on the same PostgreSQL; a key sent with another request is
//! refused; answers expire and are forgotten. The same for `POST /events`
//! (ADR 43): an append sent again with its key, after a lost answer or a
//! `503 outcome_unknown`, gets its first answer and is appended once.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::common::{self, Backend, Harness};
use super::{event_count, place};
use crate::both_backends;

both_backends!(
    a_command_sent_again_with_its_key_gets_its_first_answer_and_appends_nothing,
    answers_kept_under_keys_expire_and_are_forgotten,
    an_append_sent_again_with_its_key_gets_its_first_answer_and_appends_nothing,
);

/// `POST /events` with `Idempotency-Key: key`: the status, the body, and
/// whether the answer says it was given before.
async fn append(h: &Harness, key: Option<&str>, body: &Value) -> (StatusCode, Value, bool) {
    post_keyed(h, "/events", key, body).await
}

/// `POST uri` with `Idempotency-Key: key`: the status, the body, and
/// whether the answer says it was given before.
async fn post_keyed(h: &Harness, uri: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value, bool) {
    let mut request = Request::builder().method("POST").uri(uri).header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = h.app.clone().oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = response.status();
    let replayed = response.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap(), replayed)
}

fn placed(stream: &str, expected: Option<i64>, n: i64) -> Value {
    let mut body = json!({ "stream_id": stream, "events": [
        { "event_type": "order.placed", "data": { "n": n } },
        { "event_type": "order.paid", "data": { "n": n }, "metadata": { "by": "test" } },
    ] });
    if let Some(expected) = expected {
        body["expected_version"] = json!(expected);
    }
    body
}

async fn an_append_sent_again_with_its_key_gets_its_first_answer_and_appends_nothing(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    let first = append(&h, Some("a-1"), &placed("s-1", Some(0), 1)).await;
    assert_eq!((first.0, first.2), (StatusCode::CREATED, false), "{}", first.1);
    assert_eq!(first.1["version"], 2);
    let again = append(&h, Some("a-1"), &placed("s-1", Some(0), 1)).await;
    assert_eq!(again, (StatusCode::CREATED, first.1.clone(), true), "the first answer, not a 409");
    // Without an expected version: the version before it is kept too.
    assert_eq!(append(&h, None, &placed("s-2", None, 0)).await.0, StatusCode::CREATED);
    let loose = append(&h, Some("a-2"), &placed("s-2", None, 2)).await;
    assert_eq!((loose.0, &loose.1["version"]), (StatusCode::CREATED, &json!(4)), "{}", loose.1);
    assert_eq!(append(&h, Some("a-2"), &placed("s-2", None, 2)).await, (StatusCode::CREATED, loose.1.clone(), true));
    assert_eq!(event_count(&h).await, 6, "sent twice each, appended once");

    // A key stands for one request: another stream, version or payload is refused.
    for body in [placed("s-3", Some(0), 1), placed("s-1", Some(2), 1), placed("s-1", Some(0), 9)] {
        let (status, answer, _) = append(&h, Some("a-1"), &body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")),
            "{answer}"
        );
    }
    // A conflict is not kept: the key stays free.
    let conflict = append(&h, Some("a-3"), &placed("s-1", Some(0), 3)).await;
    assert_eq!((conflict.0, conflict.1["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("version_conflict")));
    let (status, answer, replayed) = append(&h, Some("a-3"), &placed("s-1", Some(2), 3)).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{answer}");
    let (status, answer, _) = append(&h, Some(""), &placed("s-4", Some(0), 1)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));

    // After a restart, the same answers.
    let h = h.restart().await;
    assert_eq!(append(&h, Some("a-1"), &placed("s-1", Some(0), 1)).await, (StatusCode::CREATED, first.1, true));
    assert_eq!(append(&h, Some("a-2"), &placed("s-2", None, 2)).await, (StatusCode::CREATED, loose.1, true));
    assert_eq!(event_count(&h).await, 8);
    h.finish().await;
}

/// A connection to PostgreSQL lost while an append commits (here its own
/// backend ended by a deferred trigger at the commit, after the insert) is
/// `503 outcome_unknown`, not `unavailable` ("nothing was appended"): the
/// append might have committed. Sent again with its key, it is appended once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_commit_loses_its_connection_is_answered_outcome_unknown() {
    let h = Harness::start(Backend::Postgres, &[]).await;
    let db = h.postgres().await;
    db.batch_execute(
        "CREATE FUNCTION public.doom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.stream_id LIKE 'doomed%' THEN \
             PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER doom AFTER INSERT ON public.events DEFERRABLE INITIALLY DEFERRED \
           FOR EACH ROW EXECUTE FUNCTION public.doom();",
    )
    .await
    .unwrap();
    for (stream, key) in [("doomed-1", None), ("doomed-2", Some("d-2"))] {
        let (status, answer, _) = append(&h, key, &placed(stream, Some(0), 1)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("outcome_unknown")),
            "{stream}: {answer}"
        );
        assert!(answer["error"]["message"].as_str().unwrap().contains("Idempotency-Key"), "{answer}");
    }
    assert_eq!(event_count(&h).await, 0, "the backend ended before its commit");
    db.batch_execute("DROP TRIGGER doom ON public.events").await.unwrap();
    let (status, answer, replayed) = append(&h, Some("d-2"), &placed("doomed-2", Some(0), 1)).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, false), "{answer}");
    assert_eq!(append(&h, Some("d-2"), &placed("doomed-2", Some(0), 1)).await, (StatusCode::CREATED, answer, true));
    assert_eq!(event_count(&h).await, 2);
    h.finish().await;
}

/// `POST /commands/order/{stream}` with `Idempotency-Key: key`: the status,
/// the body, and whether the answer says it was given before.
async fn send(h: &Harness, stream: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value, bool) {
    post_keyed(h, &format!("/commands/order/{stream}"), key, body).await
}

fn items() -> Value {
    json!([{ "productId": "p-1", "quantity": 2, "price": 9.99 }])
}

fn ship(tracking: &str) -> Value {
    json!({ "command_type": "ship", "data": { "trackingNumber": tracking } })
}

async fn a_command_sent_again_with_its_key_gets_its_first_answer_and_appends_nothing(backend: Backend) {
    let h = Harness::start(backend, &["order"]).await;
    let placed = send(&h, "order-1", Some("key-place"), &place("c-1", items())).await;
    assert_eq!((placed.0, placed.2), (StatusCode::CREATED, false), "{}", placed.1);
    let again = send(&h, "order-1", Some("key-place"), &place("c-1", items())).await;
    assert_eq!(again, (StatusCode::CREATED, placed.1.clone(), true), "the first answer, events and all");
    assert_eq!(event_count(&h).await, 1, "sent twice, appended once");

    // A refusal is an answer too: given again, even once the stream would
    // decide otherwise.
    let early = send(&h, "order-2", Some("key-early-ship"), &ship("T-0")).await;
    assert_eq!((early.0, early.1["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("rejected")));
    assert_eq!(send(&h, "order-2", Some("key-place-2"), &place("c-2", items())).await.0, StatusCode::CREATED);
    let shipped = send(&h, "order-1", Some("key-ship"), &ship("T-1")).await;
    assert_eq!(shipped.0, StatusCode::CREATED, "{}", shipped.1);
    let refused = send(&h, "order-1", Some("key-ship-again"), &ship("T-2")).await;
    assert_eq!(refused.1["error"]["message"], "cannot ship order 1: it is already shipped");
    // Without a key, the same command is decided again.
    let unkeyed = send(&h, "order-2", None, &ship("T-3")).await;
    assert_eq!((unkeyed.0, unkeyed.2), (StatusCode::CREATED, false));
    let count = event_count(&h).await;
    assert_eq!(count, 4);

    // A key stands for one request: another decider, stream or payload is refused.
    for (stream, body) in [("order-1", place("c-1", json!([]))), ("order-3", place("c-1", items()))] {
        let (status, answer, _) = send(&h, stream, Some("key-place"), &body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")),
            "{answer}"
        );
        assert!(answer["error"]["message"].as_str().unwrap().contains("`key-place`"), "{answer}");
    }
    for key in ["", "k".repeat(256).as_str()] {
        let (status, answer, _) = send(&h, "order-9", Some(key), &place("c-9", items())).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    }

    // After a restart (a new process: nothing in memory), the same answers.
    let h = h.restart().await;
    for (stream, key, body, first) in [
        ("order-1", "key-place", place("c-1", items()), &placed.1),
        ("order-2", "key-early-ship", ship("T-0"), &early.1),
        ("order-1", "key-ship", ship("T-1"), &shipped.1),
        ("order-1", "key-ship-again", ship("T-2"), &refused.1),
    ] {
        let (status, answer, replayed) = send(&h, stream, Some(key), &body).await;
        assert_eq!((&answer, replayed), (first, true), "{key} after a restart");
        assert_eq!(status.as_u16(), first.get("error").map_or(201, |e| e["status"].as_u64().unwrap() as u16));
    }
    assert_eq!(event_count(&h).await, count, "nothing appended again");
    let deciders = h.get("/deciders").await;
    assert_eq!((deciders[0]["replays"].as_u64(), deciders[0]["commands"].as_u64()), (Some(4), Some(0)));
    let (_, metrics) = h.call("GET", "/metrics", None).await;
    assert!(
        metrics.as_str().unwrap().contains("reel_decider_replays_total{decider=\"order\",version=\"1\"} 4"),
        "{metrics}"
    );
    h.finish().await;
}

async fn answers_kept_under_keys_expire_and_are_forgotten(backend: Backend) {
    let ttl = Duration::from_millis(1500);
    let h = Harness::start_with(backend, &["order"], |c| c.deciders.answers_ttl = ttl).await;
    assert_eq!(send(&h, "order-1", Some("key-1"), &place("c-1", items())).await.0, StatusCode::CREATED);
    assert_eq!(send(&h, "order-2", Some("key-2"), &place("c-2", items())).await.0, StatusCode::CREATED);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    // Expired: the key is free again, and the command decided anew.
    let (status, answer, replayed) = send(&h, "order-1", Some("key-1"), &place("c-1", items())).await;
    assert_eq!(
        (status, answer["error"]["message"].as_str(), replayed),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("order 1 exists: it is placed"), false)
    );
    // Expired answers are deleted (by a task a keyed command starts).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let keys = kept_keys(&h).await;
        if keys == ["key-1"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "expired answers still kept: {keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.finish().await;
}

/// The keys the events database keeps answers under.
async fn kept_keys(h: &Harness) -> Vec<String> {
    match &h.config.database_url {
        None => {
            let conn = rusqlite::Connection::open(h.config.data_dir.join("events.db")).unwrap();
            let mut stmt = conn.prepare("SELECT key FROM reel_command_answers ORDER BY key").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        }
        Some(_) => {
            let rows = h.postgres().await.query("SELECT key FROM reel.command_answers ORDER BY key", &[]).await;
            rows.unwrap().iter().map(|r| r.get(0)).collect()
        }
    }
}

/// Two reel processes on one PostgreSQL database, sent the same keyed
/// command at once, 8 times: one appends, every other answer is that one
/// given again; a key answered by one is answered by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reel_processes_on_one_postgres_answer_a_key_once() {
    let a = std::sync::Arc::new(Harness::start(Backend::Postgres, &["order"]).await);
    let url = a.config.database_url.clone();
    let b = std::sync::Arc::new(Harness::start_with(Backend::Postgres, &["order"], |c| c.database_url = url).await);
    for round in 0..3 {
        let stream = format!("order-{round}");
        let key = format!("key-{round}");
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..8 {
            let h = std::sync::Arc::clone(if i % 2 == 0 { &a } else { &b });
            let (stream, key) = (stream.clone(), key.clone());
            sends.spawn(async move { send(&h, &stream, Some(&key), &place("c-1", items())).await });
        }
        let answers: Vec<_> = sends.join_all().await;
        assert!(
            answers.iter().all(|(status, body, _)| *status == StatusCode::CREATED && *body == answers[0].1),
            "{answers:?}"
        );
        assert_eq!(answers.iter().filter(|(_, _, replayed)| !replayed).count(), 1, "one appended: {answers:?}");
        let other = send(if round % 2 == 0 { &b } else { &a }, &stream, Some(&key), &place("c-1", items())).await;
        assert_eq!((other.0, other.1, other.2), (StatusCode::CREATED, answers[0].1.clone(), true));
    }
    assert_eq!(event_count(&a).await, 3, "one event per key");
    let b = std::sync::Arc::into_inner(b).unwrap();
    b.server.shutdown().await;
    std::sync::Arc::into_inner(a).unwrap().finish().await;
}
