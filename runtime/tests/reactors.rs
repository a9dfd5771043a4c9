//! Reactors: modules that emit events exactly once (wit/reactor.wit,
//! docs/adr/23-reactors-exactly-once.md).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, Harness};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);

/// Every event of the log, through `GET /events`.
async fn log(h: &Harness) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = String::new();
    loop {
        let page = h.get(&format!("/events?limit=10000{after}")).await;
        let got = page["events"].as_array().unwrap().clone();
        let done = got.len() < 10_000;
        events.extend(got);
        if done {
            return events;
        }
        after = format!("&after={}", common::urlencode(page["next"].as_str().unwrap()));
    }
}

/// The log once it shows `count` relay emissions: on PostgreSQL `GET /events`
/// shows a commit once no transaction that began before it is still open
/// anywhere on the server (ADRs 07, 29), so a status that counted an emission can
/// come a moment before the page that lists it.
async fn log_with(h: &Harness, count: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let events = log(h).await;
        let seen = events.iter().filter(|e| e["event_type"] == "relay.relayed").count();
        if seen >= count || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The relay's emissions by their key (cause, and the version that made it):
/// panics on a key seen twice.
fn relayed(events: &[Value]) -> BTreeMap<i64, String> {
    let mut by_cause = BTreeMap::new();
    for e in events.iter().filter(|e| e["event_type"] == "relay.relayed") {
        let cause = e["metadata"]["causation_id"].as_i64().expect("causation_id");
        let by = e["metadata"]["emitted_by"].as_str().unwrap().to_owned();
        assert!(by_cause.insert(cause, by).is_none(), "emitted twice for cause {cause}: {events:#?}");
    }
    by_cause
}

both_backends!(a_reactor_emits_once_per_cause_across_restarts_and_a_new_version);

/// relay emits one event per `order.placed`: with reel's metadata, under its
/// prefix, once; a restart emits nothing again, and a new version replays
/// history without emitting it again (its emissions there are dropped and
/// counted) and goes on emitting for new events.
async fn a_reactor_emits_once_per_cause_across_restarts_and_a_new_version(backend: Backend) {
    let h = Harness::start(backend, &["fixture_relay"]).await;
    let mut placed = Vec::new();
    for i in 0..10 {
        let body =
            h.append(&format!("order-{i}"), Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
        placed.push(body["positions"][0].as_i64().unwrap());
    }
    h.append("order-silent", Some(0), json!([{ "event_type": "order.placed", "data": { "silent": true } }])).await;
    let status = h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == 10).await;
    assert_eq!(status["reactor"]["stream_prefix"], "relay-", "{status:#}");

    let events = log(&h).await;
    let by_cause = relayed(&events);
    assert_eq!(
        by_cause.keys().copied().collect::<Vec<_>>(),
        placed,
        "one emission per order.placed, none for the silent one"
    );
    let first = events.iter().find(|e| e["event_type"] == "relay.relayed").unwrap();
    let cause = &events.iter().find(|e| e["position"] == first["metadata"]["causation_id"]).unwrap();
    assert_eq!(first["stream_id"], format!("relay-{}", cause["stream_id"].as_str().unwrap()));
    assert_eq!(first["version"], 1, "reel assigns the version");
    assert_eq!(first["metadata"]["emitted_by"], "relay@1");
    assert_eq!(first["metadata"]["correlation_id"], cause["position"], "a cause without one starts a correlation");
    assert_eq!(first["metadata"]["causation_depth"], 1);
    assert_eq!(first["data"], json!({ "from": cause["position"], "by": "1" }));

    // A restart replays nothing.
    let h = h.restart().await;
    let last = h.append("order-10", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    placed.push(last["positions"][0].as_i64().unwrap());
    h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == 1).await;
    assert_eq!(relayed(&log_with(&h, placed.len()).await).keys().copied().collect::<Vec<_>>(), placed);

    // Version 2 rebuilds from position 0: history wins.
    h.install("fixture_relay_v2", "fixture_relay.wasm");
    let done = h.wait_status("relay", PATIENCE, |s| s["version"] == "2" && s["rebuild"].is_null()).await;
    let after = h.append("order-11", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    placed.push(after["positions"][0].as_i64().unwrap());
    let status = h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == 1).await;
    assert_eq!(status["reactor"]["dropped"], 11, "version 2's emissions for handled causes: {done:#} {status:#}");
    let by_cause = relayed(&log_with(&h, placed.len()).await);
    assert_eq!(by_cause.keys().copied().collect::<Vec<_>>(), placed, "nothing emitted again, nothing missing");
    assert_eq!(by_cause.values().filter(|by| *by == "relay@2").count(), 1, "{by_cause:?}");
    h.finish().await;
}

both_backends!(an_event_set_aside_keeps_nothing_its_failed_attempts_emitted);

/// A flood past the per-event limit (100) fails after its first 100 emits:
/// the reactor stops at that event, an administrator skips it, and nothing
/// the failed attempts emitted reaches the log (they rode on the skip's
/// commit before the emitter was cleared on rollback).
async fn an_event_set_aside_keeps_nothing_its_failed_attempts_emitted(backend: Backend) {
    let h = Harness::start(backend, &["fixture_relay"]).await;
    h.append("order-1", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    let body = h.append("order-2", Some(0), json!([{ "event_type": "order.placed", "data": { "flood": 101 } }])).await;
    let flood = body["positions"][0].as_i64().unwrap();
    h.wait_status("relay", PATIENCE, |s| s["stopped_at"] == flood).await;
    let (code, answer) = h.call("POST", &format!("/projections/relay/skip/{flood}"), None).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let body = h.append("order-3", Some(0), json!([{ "event_type": "order.placed", "data": {} }])).await;
    let last = body["positions"][0].as_i64().unwrap();
    let status = h.wait_status("relay", PATIENCE, |s| s["position"].as_i64() >= Some(last)).await;
    let relayed = relayed(&log(&h).await);
    assert!(!relayed.contains_key(&flood), "the skipped event's emissions reached the log: {relayed:?}");
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    assert_eq!(status["reactor"]["emitted"], 2, "{status:#}");
}

/// A function the module's SQL creates (past the text checks, which do not
/// look inside function bodies) that calls `reel.emit` with the signatures
/// before ADR 23's fix (the handled cursor from the caller) and before ADR
/// 47's arrays, and with the current one, each in its own block so that one
/// refusal does not hide the other: forged metadata, a stream outside any
/// prefix and one inside the reactor's, and a handled cursor at the end of
/// time.
fn forging_function(namespace: &str) -> String {
    let forged = |stream: &str| {
        json!([{ "cause": 1, "cause_tx": 0, "index": 7, "stream_id": stream, "event_type": "forged",
                 "data": {}, "metadata": { "emitted_by": "payment@1", "causation_id": 1 } }])
        .to_string()
    };
    let arrays = |stream: &str| {
        format!(
            "'{namespace}', ARRAY[1]::bigint[], ARRAY[0]::bigint[], ARRAY[7], ARRAY[1], ARRAY['{stream}'], ARRAY['forged'], \
             ARRAY['{{}}'], ARRAY['{{\"emitted_by\": \"payment@1\", \"causation_id\": 1}}'], '[]'::jsonb"
        )
    };
    format!(
        "CREATE FUNCTION forge() RETURNS text LANGUAGE plpgsql AS $f$ \
         DECLARE r text := ''; \
         BEGIN \
           BEGIN PERFORM reel.emit('{namespace}', 9000000000000, 9000000000000, '{outside}'::jsonb, '[]'::jsonb); \
             r := r || 'oldest signature ran; '; \
           EXCEPTION WHEN others THEN r := r || SQLERRM || '; '; END; \
           BEGIN PERFORM reel.emit('{namespace}', '{inside}'::jsonb, '[]'::jsonb); \
             r := r || 'old signature ran; '; \
           EXCEPTION WHEN others THEN r := r || SQLERRM || '; '; END; \
           BEGIN PERFORM reel.emit({outside_arrays}); \
             r := r || 'outside ran; '; \
           EXCEPTION WHEN others THEN r := r || SQLERRM || '; '; END; \
           BEGIN PERFORM reel.emit({inside_arrays}); \
             r := r || 'inside ran; '; \
           EXCEPTION WHEN others THEN r := r || SQLERRM || '; '; END; \
           RETURN r; \
         END $f$",
        outside = forged("order-forged"),
        inside = forged("relay-forged"),
        outside_arrays = arrays("order-forged"),
        inside_arrays = arrays("relay-forged"),
    )
}

/// No event of type `forged` in the log.
async fn assert_nothing_forged(h: &Harness) {
    let forged: Vec<Value> = log(h).await.into_iter().filter(|e| e["event_type"] == "forged").collect();
    assert!(forged.is_empty(), "a module's SQL appended: {forged:#?}");
}

/// A module's own SQL cannot reach `reel.emit`: a projection's role may not
/// execute it at all; a reactor's role may, but the host's own call in the
/// same batch then fails (once per transaction), so the batch rolls back and
/// the reactor stops, naming why. Nothing forged reaches the log, and the
/// reactor's handled cursor stays where its checkpoint is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modules_sql_cannot_call_reel_emit() {
    let h = Harness::start(Backend::Postgres, &["fixture_skipper", "fixture_relay"]).await;
    let statements = [forging_function("skipper@1"), "SELECT forge()".to_owned()];
    let data = json!({ "target": "skipper", "action": "sql", "statements": statements });
    let body = h.append("attack-1", Some(0), json!([{ "event_type": "fault", "data": data }])).await;
    let attack = body["positions"][0].as_i64().unwrap();
    h.wait_status("skipper", PATIENCE, |s| s["position"].as_i64() >= Some(attack)).await;
    assert_nothing_forged(&h).await;
    assert!(h.kv_bytes("skipper", "seen/").await.contains_key(&format!("seen/{attack:020}")), "the event applied");

    let statements = [forging_function("relay@1"), "SELECT forge()".to_owned()];
    let body =
        h.append("order-1", Some(0), json!([{ "event_type": "order.placed", "data": { "sql": statements } }])).await;
    let attack = body["positions"][0].as_i64().unwrap();
    let status = h.wait_status("relay", PATIENCE, |s| s["stopped_at"] == attack).await;
    let error = status["last_error"]["message"].as_str().unwrap();
    assert!(error.contains("reel.emit was called twice in one transaction"), "{status:#}");
    assert_nothing_forged(&h).await;
    let pg = h.postgres().await;
    let handled: i64 =
        pg.query_one("SELECT position FROM reel.reactor_handled WHERE reactor = 'relay'", &[]).await.unwrap().get(0);
    assert!(handled < attack, "the handled cursor moved to {handled}, past the checkpoint");
    let grantees: Vec<String> = pg
        .query(
            "SELECT DISTINCT grantee::regrole::text FROM pg_proc, aclexplode(proacl) \
             WHERE oid = 'reel.emit(text, bigint[], bigint[], integer[], integer[], text[], text[], text[], text[], jsonb)'::regprocedure",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let roles: Vec<(String, String)> = pg
        .query("SELECT name, role_name FROM reel.namespaces", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, role) in &roles {
        let granted = grantees.iter().any(|g| g.trim_matches('"') == role);
        assert_eq!(granted, name == "relay", "EXECUTE on reel.emit for {name}'s role: {grantees:?}");
    }
    h.finish().await;
}

/// An outside writer appending to a reactor's stream at the same time (SQL
/// straight into the events table, each row in a transaction held open a
/// while) makes `reel.emit` pick a version the writer holds: it waits for
/// the writer and takes the next one. The reactor runs SQL in each batch, so
/// a conflict would be blamed on it and stop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_to_a_stream_written_concurrently_takes_the_next_version() {
    const CAUSES: usize = 20;
    let h = Harness::start(Backend::Postgres, &["fixture_relay"]).await;
    let url = h.config.database_url.clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tx = client.transaction().await.unwrap();
                let inserted = tx
                    .execute(
                        "INSERT INTO events (stream_id, version, event_type, data) \
                         SELECT 'relay-order-c', coalesce(max(version), 0) + 1, 'outside', '{}' \
                           FROM events WHERE stream_id = 'relay-order-c'",
                        &[],
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                if inserted.is_ok() && tx.commit().await.is_ok() {
                    written += 1;
                }
            }
            written
        }
    });
    for _ in 0..CAUSES {
        let events = json!([{ "event_type": "order.placed", "data": { "sql": ["SELECT 1"] } }]);
        h.append("order-c", None, events).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status =
        h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == CAUSES || s["state"] == "stopped").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert_eq!(status["state"], "running", "{status:#}");
    assert!(status["last_error"].is_null(), "{status:#}");
    let events = log_with(&h, CAUSES).await;
    assert_eq!(relayed(&events).len(), CAUSES);
    let versions: Vec<i64> =
        events.iter().filter(|e| e["stream_id"] == "relay-order-c").map(|e| e["version"].as_i64().unwrap()).collect();
    let mut sorted = versions.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=(CAUSES + written) as i64).collect::<Vec<_>>(), "one event per version, no gap");
    h.finish().await;
}

/// `due` seconds from now, in RFC 3339.
fn in_seconds(seconds: u64) -> String {
    reel_model::time::format_micros(reel_model::time::now_micros() + seconds as i64 * 1_000_000)
}

/// The relay's timer events in `events`, and the relays of each (by the
/// timer event's position).
fn fired(events: &[Value]) -> (Vec<Value>, BTreeMap<i64, usize>) {
    let timers: Vec<Value> = events.iter().filter(|e| e["event_type"] == "relay.relayed.timer").cloned().collect();
    let mut relays = BTreeMap::new();
    for e in events.iter().filter(|e| e["event_type"] == "relay.relayed") {
        let cause = e["metadata"]["causation_id"].as_i64().unwrap();
        if timers.iter().any(|t| t["position"] == cause) {
            *relays.entry(cause).or_default() += 1;
        }
    }
    (timers, relays)
}

/// The timer event fired once, after its due time, with reel's metadata,
/// and the reactor received it (it relayed it, once).
fn assert_fired_once(events: &[Value], cause: i64, due: &str) {
    let (timers, relays) = fired(events);
    assert_eq!(timers.len(), 1, "the timer fired once: {timers:#?}");
    let timer = &timers[0];
    assert_eq!(timer["stream_id"], "relay-timers");
    assert_eq!(timer["metadata"]["timer"], "payment-timeout");
    assert_eq!(timer["metadata"]["causation_id"], cause);
    assert_eq!(timer["metadata"]["emitted_by"], "relay@1");
    assert_eq!(timer["data"], json!({ "from": cause, "by": "1" }));
    let occurred = reel_model::time::parse_micros(timer["occurred_at"].as_str().unwrap()).unwrap();
    assert!(occurred >= reel_model::time::parse_micros(due).unwrap(), "fired at {occurred}, due {due}");
    assert_eq!(relays.into_iter().collect::<Vec<_>>(), [(timer["position"].as_i64().unwrap(), 1)]);
}

both_backends!(a_timer_fires_once_after_a_restart);

/// A timer set 2 s ahead, reel restarted before it is due: it fires once,
/// after its time, and the reactor receives its event; another restart
/// fires nothing again.
async fn a_timer_fires_once_after_a_restart(backend: Backend) {
    let h = Harness::start(backend, &["fixture_relay"]).await;
    let due = in_seconds(2);
    let data = json!({ "timer": { "key": "payment-timeout", "due": due } });
    let body = h.append("order-t", Some(0), json!([{ "event_type": "order.placed", "data": data }])).await;
    let cause = body["positions"][0].as_i64().unwrap();
    // Recorded (on a loaded machine it may even have fired already).
    h.wait_status("relay", PATIENCE, |s| s["reactor"]["timers_pending"] == 1 || s["reactor"]["timers_fired"] == 1)
        .await;
    let h = h.restart().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let timer = loop {
        let (timers, relays) = fired(&log(&h).await);
        if let Some(timer) = timers.first().filter(|_| !relays.is_empty()) {
            break timer.clone();
        }
        assert!(std::time::Instant::now() < deadline, "the timer did not fire: {:#}", h.status("relay").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    h.wait_status("relay", PATIENCE, |s| s["reactor"]["timers_pending"] == 0).await;
    let h = h.restart().await;
    let last =
        h.append("order-u", Some(0), json!([{ "event_type": "order.placed", "data": { "silent": true } }])).await;
    h.wait_status("relay", PATIENCE, |s| s["position"] == last["positions"][0]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_fired_once(&log(&h).await, cause, &due);
    assert!(timer["position"].as_i64() > Some(cause));
    h.finish().await;
}

/// Two reel processes on one PostgreSQL database: the owner of the reactor
/// records a timer and is killed (SIGKILL) before it is due; the other takes
/// the reactor over and fires it, once.
#[test]
fn a_timer_fires_once_when_its_owner_is_killed() {
    use common::process::Process;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(common::create_database());
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir.path().join("modules")).unwrap();
        std::fs::copy(common::guest("fixture_relay"), dir.path().join("modules/fixture_relay.wasm")).unwrap();
    }
    let state = |p: &Process| {
        let (code, status) = p.call("GET", "/projections/relay", None);
        assert_eq!(code, 200, "{status}");
        status
    };
    let wait = |p: &Process, check: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let status = state(p);
            if check(&status) {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "timed out; last status: {status:#}");
            std::thread::sleep(Duration::from_millis(25));
        }
    };
    let owner = Process::start(dirs[0].path(), Some(&url), &[]);
    wait(&owner, &|s| s["state"] == "running");
    let other = Process::start(dirs[1].path(), Some(&url), &[]);
    wait(&other, &|s| s["state"] == "standby");

    let due = in_seconds(2);
    let data = json!({ "timer": { "key": "payment-timeout", "due": due } });
    let append = json!({ "stream_id": "order-t", "events": [{ "event_type": "order.placed", "data": data }] });
    let (code, body) = owner.call("POST", "/events", Some(&append));
    assert_eq!(code, 201, "{body}");
    let cause = body["positions"][0].as_i64().unwrap();
    wait(&owner, &|s| s["reactor"]["timers_pending"] == 1);
    owner.kill();

    let status = wait(&other, &|s| s["reactor"]["timers_fired"] == 1);
    assert_eq!(status["state"], "running", "{status:#}");
    let events = loop {
        let (code, page) = other.call("GET", "/events?limit=1000", None);
        assert_eq!(code, 200, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        if !fired(&events).1.is_empty() {
            break events;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(1));
    let (_, page) = other.call("GET", "/events?limit=1000", None);
    assert_eq!(page["events"].as_array().unwrap().len(), events.len(), "nothing appended since");
    assert_fired_once(&events, cause, &due);
    other.kill();
    rt.block_on(common::drop_database(&url));
}

/// `file`'s entry in GET /modules, once `check` holds for it.
async fn wait_module(h: &Harness, file: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let modules = h.get("/modules").await;
        let entry = modules.as_array().unwrap().iter().find(|m| m["path"].as_str().unwrap().ends_with(file)).cloned();
        if let Some(entry) = entry.filter(&check) {
            return entry;
        }
        assert!(std::time::Instant::now() < deadline, "{file}: {modules:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One writer kind per stream: `POST /events` into a reactor's prefix is
/// `409 owned_stream`; a reactor whose prefix overlaps a decider's is
/// refused at load with the reason in GET /modules, and so is a decider
/// whose prefix overlaps a reactor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactors_prefix_has_no_other_writer() {
    let h = Harness::start(Backend::Sqlite, &["order", "fixture_relay"]).await;
    wait_module(&h, "order.wasm", |m| m["kind"] == "decider").await;
    h.wait_status("relay", PATIENCE, |s| s["state"] == "running").await;
    let body = json!({ "stream_id": "relay-x", "events": [{ "event_type": "relay.relayed", "data": {} }] });
    let (code, answer) = h.call("POST", "/events", Some(&body.to_string())).await;
    assert_eq!((code, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("owned_stream")), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("belongs to reactor `relay`"), "{message}");
    assert!(log(&h).await.is_empty(), "nothing appended");

    h.install("fixture_overlap", "overlap.wasm");
    let entry = wait_module(&h, "overlap.wasm", |m| m["error"].is_string()).await;
    assert_eq!(
        entry["error"],
        "reactor `overlap` would emit to streams `order-*`, which overlap decider `order`'s `order-*`: \
         a stream has one writer"
    );
    let (code, _) = h.call("GET", "/projections/overlap", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "the refused reactor does not run");

    // The other way round: the reactor first, then the decider.
    std::fs::remove_file(h.config.modules_dir.join("order.wasm")).unwrap();
    std::fs::remove_file(h.config.modules_dir.join("overlap.wasm")).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !h.get("/deciders").await.as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the decider stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.install("fixture_overlap", "overlap.wasm");
    h.wait_status("overlap", PATIENCE, |s| s["state"] == "running").await;
    h.install("order", "order.wasm");
    let entry = wait_module(&h, "order.wasm", |m| m["error"].is_string()).await;
    assert_eq!(
        entry["error"],
        "decider `order` would own streams `order-*`, which overlap reactor `overlap`'s `order-*`: \
         a stream has one writer"
    );
    assert!(h.get("/deciders").await.as_array().unwrap().is_empty(), "the refused decider does not serve");
    h.finish().await;
}

both_backends!(a_retried_dead_letter_emits_once);

/// An event a reactor failed on (its SQL reads a table not there yet) is set
/// aside; once the table exists, retrying it applies it and appends what it
/// emits, once; a second retry finds no dead letter.
async fn a_retried_dead_letter_emits_once(backend: Backend) {
    let h = Harness::start(backend, &["fixture_relay"]).await;
    let body = h
        .append(
            "order-1",
            Some(0),
            json!([{ "event_type": "order.placed", "data": { "sql": ["SELECT x FROM later"] } }]),
        )
        .await;
    let failed = body["positions"][0].as_i64().unwrap();
    h.wait_status("relay", PATIENCE, |s| s["stopped_at"] == failed).await;
    let (code, answer) = h.call("POST", &format!("/projections/relay/skip/{failed}"), None).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let body = h
        .append(
            "order-2",
            Some(0),
            json!([{ "event_type": "order.placed", "data": { "sql": ["CREATE TABLE later (x INTEGER)"] } }]),
        )
        .await;
    let created = body["positions"][0].as_i64().unwrap();
    h.wait_status("relay", PATIENCE, |s| s["position"].as_i64() >= Some(created)).await;
    assert!(!relayed(&log(&h).await).contains_key(&failed), "nothing emitted for the event set aside");

    let retry = format!("/projections/relay/dead-letters/{failed}/retry");
    let (code, answer) = h.call("POST", &retry, None).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let status = h.wait_status("relay", PATIENCE, |s| s["reactor"]["emitted"] == 2).await;
    assert_eq!(status["state"], "running", "{status:#}");
    let by_cause = relayed(&log_with(&h, 2).await);
    assert_eq!(by_cause.keys().copied().collect::<Vec<_>>(), [failed, created], "the retry emitted, once");
    let (code, answer) = h.call("POST", &retry, None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(relayed(&log(&h).await).len(), 2);
    let (_, metrics) = h.call("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    for line in [
        "reel_reactor_emitted_total{reactor=\"relay\"} 2",
        "reel_reactor_emissions_dropped_total{reactor=\"relay\"} 0",
        "reel_reactor_timers_pending{reactor=\"relay\"} 0",
        "reel_reactor_outbox{reactor=\"relay\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    h.finish().await;
}

/// Two reactors answering each other (ping, pong) stop at the causation
/// depth set by `--emit-depth`, the emitting one naming the limit in its
/// status; a flood past `--emit-per-event` stops its reactor at the event;
/// a projection reading everything keeps up.
#[test]
fn loops_and_floods_stop_at_the_limits_the_flags_set() {
    use common::process::Process;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    for module in ["fixture_ping", "fixture_pong", "fixture_relay", "fixture_echo_a"] {
        std::fs::copy(common::guest(module), dir.path().join(format!("modules/{module}.wasm"))).unwrap();
    }
    let p = Process::start(dir.path(), None, &["--emit-depth", "6", "--emit-per-event", "5"]);
    let wait = |name: &str, check: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let (code, status) = p.call("GET", &format!("/projections/{name}"), None);
            if code == 200 && check(&status) {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {status:#}");
            std::thread::sleep(Duration::from_millis(25));
        }
    };
    for name in ["ping", "pong", "relay", "echo"] {
        wait(name, &|s| s["state"] == "running");
    }
    let append = |stream: &str, event_type: &str, data: Value| {
        let body = json!({ "stream_id": stream, "events": [{ "event_type": event_type, "data": data }] });
        let (code, answer) = p.call("POST", "/events", Some(&body));
        assert_eq!(code, 201, "{answer}");
        answer["positions"][0].as_i64().unwrap()
    };
    append("court-1", "serve", json!({}));
    let flood = append("order-1", "order.placed", json!({ "flood": 6 }));

    let ping = wait("ping", &|s| s["state"] == "stopped");
    let error = ping["last_error"]["message"].as_str().unwrap();
    assert!(
        error.contains("causation depth limit") && error.contains("7 emissions deep (limit 6, --emit-depth)"),
        "{error}"
    );
    let relay = wait("relay", &|s| s["stopped_at"] == flood);
    let error = relay["last_error"]["message"].as_str().unwrap();
    assert!(error.contains("caused 6 events") && error.contains("limits: 5 events"), "{error}");

    let head = append("order-2", "order.placed", json!({ "silent": true }));
    wait("echo", &|s| s["position"] == head);
    let (_, page) = p.call("GET", "/events?limit=1000", None);
    let events = page["events"].as_array().unwrap();
    let hits: Vec<i64> = events
        .iter()
        .filter(|e| e["event_type"] == "ping.hit" || e["event_type"] == "pong.hit")
        .map(|e| e["metadata"]["causation_depth"].as_i64().unwrap())
        .collect();
    assert_eq!(hits, [1, 2, 3, 4, 5, 6], "the rally stopped at the limit");
    assert!(!events.iter().any(|e| e["event_type"] == "relay.relayed"), "the flood appended nothing");
    assert_eq!(wait("pong", &|_| true)["state"], "running", "pong has nothing more to answer");
    p.kill();
}

/// reel killed with SIGKILL at random moments while a reactor catches up
/// (small batches: many a kill lands between a batch's commit and the
/// forward of its outbox on SQLite): in the end every cause emitted once,
/// none missing, none doubled.
#[test]
fn a_reactor_killed_mid_catch_up_emits_each_event_once() {
    use common::process::Process;
    const ORDERS: i64 = 5000;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("modules")).unwrap();
    std::fs::copy(common::guest("fixture_relay"), dir.path().join("modules/fixture_relay.wasm")).unwrap();
    let args = ["--batch-size", "10"];
    let position = |p: &Process| {
        let (code, status) = p.call("GET", "/projections/relay", None);
        if code == 200 { status["position"].as_i64().unwrap_or(0) } else { 0 }
    };
    // The backlog, appended before the reactor is installed.
    let modules = dir.path().join("modules");
    let parked = dir.path().join("fixture_relay.wasm");
    std::fs::rename(modules.join("fixture_relay.wasm"), &parked).unwrap();
    let p = Process::start(dir.path(), None, &args);
    for chunk in 0..ORDERS / 100 {
        let events: Vec<Value> = (0..100).map(|_| json!({ "event_type": "order.placed", "data": {} })).collect();
        let body = json!({ "stream_id": format!("order-{chunk}"), "events": events });
        let (code, answer) = p.call("POST", "/events", Some(&body));
        assert_eq!(code, 201, "{answer}");
    }
    p.kill();
    std::fs::rename(&parked, modules.join("fixture_relay.wasm")).unwrap();

    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0;
    let mut last = 0;
    while kills < 5 {
        let p = Process::start(dir.path(), None, &args);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Killed only once this run has moved the reactor on: each kill lands mid catch-up.
        let deadline = std::time::Instant::now() + PATIENCE;
        while position(&p) <= last && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(seed % 40));
        let at = position(&p);
        last = at;
        p.kill();
        if at >= ORDERS {
            break;
        }
        kills += 1;
    }
    let p = Process::start(dir.path(), None, &args);
    let deadline = std::time::Instant::now() + PATIENCE;
    while position(&p) < ORDERS {
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut events = Vec::new();
    let mut after = String::new();
    loop {
        let (code, page) = p.call("GET", &format!("/events?limit=10000{after}"), None);
        assert_eq!(code, 200, "{page}");
        let got = page["events"].as_array().unwrap().clone();
        let done = got.len() < 10_000;
        events.extend(got);
        if done {
            break;
        }
        after = format!("&after={}", common::urlencode(page["next"].as_str().unwrap()));
    }
    let by_cause = relayed(&events);
    assert_eq!(by_cause.len() as i64, ORDERS, "every order relayed once ({kills} kills)");
    assert!(kills >= 3, "killed mid catch-up only {kills} times; make the backlog bigger");
    p.kill();
}
