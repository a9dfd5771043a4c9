//! Projection lifecycle on both backends: blue/green rebuilds under read
//! load, module files that must never replace a working version, poison
//! events and dead letters, hostile projections stopped by their limits,
//! and control through the API.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, Harness, expected_rows};
use reel::config::ProjectionSettings;
use reel::testing::workload::{OrderWorkload, fold, generate};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

both_backends!(
    a_new_version_is_rebuilt_beside_the_old_and_reads_switch_atomically,
    a_new_version_that_fails_to_initialise_never_takes_over,
    a_file_still_being_written_is_not_loaded_half_done,
    removing_a_file_stops_the_projection_and_keeps_its_read_model,
    a_file_renamed_in_its_manifest_releases_the_old_name,
    skipped_poison_events_are_dead_letters_and_can_be_retried_after_a_fix,
    configuration_overrides_the_modules_policy,
    database_errors_found_after_the_commit_was_sent_lose_and_double_nothing,
    hostile_projections_are_stopped_by_their_limits,
    pause_resume_and_rebuild_through_the_api,
);

/// Append `count` ticks in appends of 100 events; the last position.
async fn ticks(h: &Harness, stream: &str, count: usize) -> i64 {
    let mut last = 0;
    for chunk in 0..count.div_ceil(100) {
        let n = 100.min(count - chunk * 100);
        let events: Vec<Value> = (0..n).map(|_| json!({ "event_type": "tick", "data": {} })).collect();
        let body = h.append(&format!("{stream}-{chunk}"), Some(0), json!(events)).await;
        last = body["positions"].as_array().unwrap().last().unwrap().as_i64().unwrap();
    }
    last
}

/// Positions recorded under `seen/` by a fixture, with their variant.
async fn seen(h: &Harness, name: &str) -> BTreeMap<i64, String> {
    h.kv_bytes(name, "seen/").await.into_iter().map(|(k, v)| (k["seen/".len()..].parse().unwrap(), v)).collect()
}

async fn a_new_version_is_rebuilt_beside_the_old_and_reads_switch_atomically(backend: Backend) {
    // Small batches stretch the rebuild so the readers overlap it.
    let h = Harness::start_with(backend, &[], |c| c.batch.max_events = 100).await;
    h.install("fixture_echo_a", "echo.wasm");
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    let last = ticks(&h, "t", 20_000).await;
    assert_eq!(h.get(&format!("/projections/echo/query/seen?min_position={last}")).await, json!(last));

    // Readers hammer the read endpoints while version 2 rebuilds.
    let stop = Arc::new(AtomicBool::new(false));
    let crossed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (app, stop, crossed) = (h.app.clone(), Arc::clone(&stop), Arc::clone(&crossed));
        readers.push(tokio::spawn(async move {
            let (mut reads, mut failures, mut switched) = (0u64, Vec::new(), false);
            let mut position = 1 + r * 997;
            while !stop.load(Ordering::Relaxed) {
                position = position % last + 1;
                for uri in
                    [format!("/projections/echo/kv/seen/{position:020}"), "/projections/echo/query/seen".to_owned()]
                {
                    let (status, body) = common::oneshot(&app, "GET", &uri, None).await;
                    reads += 1;
                    match (status, &body) {
                        (StatusCode::OK, Value::String(v)) if v == "a" && !switched => {}
                        (StatusCode::OK, Value::String(v)) if v == "c" => {
                            if !switched {
                                crossed.fetch_add(1, Ordering::Relaxed);
                            }
                            switched = true
                        }
                        (StatusCode::OK, Value::Number(n)) if n.as_i64() == Some(last) => {}
                        _ => failures.push(format!("{uri}: {status} {body} (after switch: {switched})")),
                    }
                }
            }
            (reads, failures)
        }));
    }
    h.install("fixture_echo_v2", "echo.wasm");
    let rebuilding = h.wait_status("echo", PATIENCE, |s| s["rebuild"]["version"] == "2").await;
    assert_eq!(rebuilding["version"], "1", "the old version serves reads during the rebuild: {rebuilding:#}");
    assert!(rebuilding["rebuild"]["lag"].as_i64().is_some(), "{rebuilding:#}");
    let done = h.wait_status("echo", PATIENCE, |s| s["version"] == "2" && s["rebuild"].is_null()).await;
    assert_eq!(done["position"], last);
    // Every reader goes on until it has read the new version too.
    let waited = std::time::Instant::now();
    while crossed.load(Ordering::Relaxed) < 3 && waited.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(crossed.load(Ordering::Relaxed), 3, "every reader read across the switch");
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for reader in readers {
        let (reads, failures) = reader.await.unwrap();
        assert!(failures.is_empty(), "failed or partial reads: {:?}", &failures[..failures.len().min(5)]);
        total += reads;
    }
    assert!(total >= 20, "the readers ran ({total} reads)");
    // After the switch the read model is the fold for the new logic.
    let after = seen(&h, "echo").await;
    assert_eq!(after.len() as i64, last);
    assert!(after.values().all(|v| v == "c"));
    assert!(!h.server.store().exists(&reel::testing::NamespaceId::new("echo", "1")), "the old namespace is dropped");
    h.finish().await;
}

async fn a_new_version_that_fails_to_initialise_never_takes_over(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    h.install("fixture_echo_a", "echo.wasm");
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    for (fixture, message) in
        [("fixture_echo_bad_init", "echo refuses to initialise"), ("fixture_echo_trap_init", "echo traps in init")]
    {
        h.install(fixture, "echo.wasm");
        let status = h
            .wait_status("echo", PATIENCE, |s| {
                s["rebuild"]["last_error"]["message"].as_str().is_some_and(|m| m.contains(message))
            })
            .await;
        assert_eq!(status["version"], "1", "{status:#}");
        // It is retried (a fixed file is picked up), and the error says it was setup.
        let rebuild = &status["rebuild"];
        assert_eq!(rebuild["state"], "retrying", "{status:#}");
        assert!(rebuild["last_error"]["message"].as_str().unwrap().starts_with("setup (init) failed: "), "{status:#}");
        let at = ticks(&h, &format!("{fixture}-s"), 1).await;
        assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}?min_position={at}")).await, json!("a"));
    }
    h.install("fixture_echo_v2", "echo.wasm");
    h.wait_status("echo", PATIENCE, |s| s["version"] == "2" && s["rebuild"].is_null()).await;
    let at = ticks(&h, "after", 1).await;
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}?min_position={at}")).await, json!("c"));
    h.finish().await;
}

async fn a_file_still_being_written_is_not_loaded_half_done(backend: Backend) {
    // A debounce far longer than the pause in the middle of the write.
    let h = Harness::start_with(backend, &[], |c| c.watch_debounce = Duration::from_secs(1)).await;
    let bytes = std::fs::read(common::guest("fixture_echo_a")).unwrap();
    let file = h.config.modules_dir.join("slow.wasm");
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    std::fs::write(&file, first).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // well inside the debounce
    let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
    std::io::Write::write_all(&mut f, rest).unwrap();
    drop(f);
    // A load of the half file would show as an error on it until the whole
    // file loads; watch for one on every poll, not only at the end.
    let waited = std::time::Instant::now();
    loop {
        let modules = h.get("/modules").await;
        assert!(
            modules.as_array().unwrap().iter().all(|m| m["error"].is_null()),
            "the half-written file was never tried: {modules:#}"
        );
        let (status, body) = h.call("GET", "/projections/echo", None).await;
        if status == StatusCode::OK && body["state"] == "running" {
            assert!(body["module_error"].is_null(), "{body:#}");
            break;
        }
        assert!(waited.elapsed() < PATIENCE, "echo never ran: {body:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.finish().await;
}

async fn removing_a_file_stops_the_projection_and_keeps_its_read_model(backend: Backend) {
    let h = Harness::start(backend, &["fixture_echo_a"]).await;
    let at = ticks(&h, "r", 10).await;
    h.get(&format!("/projections/echo/kv?limit=1&min_position={at}")).await;
    let (status, body) = h.call("DELETE", "/projections/echo", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "deleting a deployed projection: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("remove the file first"), "{body}");

    std::fs::remove_file(h.config.modules_dir.join("fixture_echo_a.wasm")).unwrap();
    h.wait_status("echo", PATIENCE, |s| s["state"] == "unloaded").await;
    let later = ticks(&h, "later", 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = h.status("echo").await;
    assert_eq!(status["position"], at, "a stopped projection applies nothing: {status:#}");
    assert_eq!(status["lag"], later - at);
    assert_eq!(
        h.get(&format!("/projections/echo/kv/seen/{at:020}")).await,
        json!("a"),
        "its read model stays readable"
    );

    let (status, _) = h.call("DELETE", "/projections/echo", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h.call("GET", &format!("/projections/echo/kv/seen/{at:020}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!h.server.store().exists(&reel::testing::NamespaceId::new("echo", "1")));
    h.finish().await;
}

async fn a_file_renamed_in_its_manifest_releases_the_old_name(backend: Backend) {
    let h = Harness::start(backend, &[]).await;
    h.install("fixture_echo_a", "mine.wasm");
    let at = ticks(&h, "r", 5).await;
    h.wait_status("echo", PATIENCE, |s| s["position"] == at).await;
    // The same file now provides `chatter`: `echo` is let go, not forked.
    h.install("fixture_chatter", "mine.wasm");
    h.wait_status("chatter", PATIENCE, |s| s["state"] == "running").await;
    h.wait_status("echo", PATIENCE, |s| s["state"] == "unloaded").await;
    let modules = h.get("/modules").await;
    let file = &modules.as_array().unwrap()[0];
    assert_eq!((&file["provides"], &file["released"]), (&json!("chatter@1"), &json!(["echo"])), "{modules:#}");
    assert_eq!(h.get(&format!("/projections/echo/kv/seen/{at:020}")).await, json!("a"), "its model stays readable");
    let (status, body) = h.call("DELETE", "/projections/echo", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the old name is deletable: {body}");
    // And back: `echo` from the start, `chatter` let go.
    h.install("fixture_echo_a", "mine.wasm");
    h.wait_status("echo", PATIENCE, |s| s["position"] == at).await;
    h.wait_status("chatter", PATIENCE, |s| s["state"] == "unloaded").await;
    let (status, body) = h.call("DELETE", "/projections/chatter", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    h.finish().await;
}

/// Append ticks and fault events aimed at `target`; the fault positions.
async fn with_poison(h: &Harness, target: &str) -> (i64, Vec<i64>) {
    let mut poison = Vec::new();
    for (i, action) in ["error", "error", "trap"].iter().enumerate() {
        ticks(h, &format!("p{i}"), 150).await;
        let body = h
            .append(
                &format!("fault-{i}"),
                Some(0),
                json!([{ "event_type": "fault", "data": { "target": target, "action": action } }]),
            )
            .await;
        poison.push(body["positions"][0].as_i64().unwrap());
    }
    (ticks(h, "tail", 150).await, poison)
}

async fn skipped_poison_events_are_dead_letters_and_can_be_retried_after_a_fix(backend: Backend) {
    // Calls of 16 events: a batch catching up is several calls in one
    // transaction, and narrowing down works across them.
    let h = Harness::start_with(backend, &["fixture_skipper", "order_summaries"], |c| c.batch.call_events = 16).await;
    let orders = generate(&OrderWorkload { orders: 200, customers: 10, follow_up_window: 50, seed: 8 });
    h.append_workload(&orders).await;
    let (last, poison) = with_poison(&h, "skipper").await;
    let status = h.wait_status("skipper", PATIENCE, |s| s["position"] == last).await;
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(status["dead_letters"], 3);

    let letters = h.get("/projections/skipper/dead-letters").await;
    let positions: Vec<i64> = letters.as_array().unwrap().iter().map(|l| l["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, poison, "exactly the poison events are dead letters");
    // Each is an event in reel's one JSON shape: the payload as sent, not a string of it.
    assert_eq!(letters[2]["data"], json!({ "target": "skipper", "action": "trap" }), "{letters:#}");
    assert_eq!((&letters[2]["stream_id"], &letters[2]["metadata"]), (&json!("fault-2"), &json!({})));
    assert!(letters[0]["error"].as_str().unwrap().contains("asked skipper to fail"), "{letters:#}");
    assert!(letters[2]["error"].as_str().unwrap().contains("trapped"), "{letters:#}");
    // The read model is the fold over the good events: every position but the poison ones.
    let applied: BTreeSet<i64> = seen(&h, "skipper").await.into_keys().collect();
    let expected: BTreeSet<i64> = (1..=last).filter(|p| !poison.contains(p)).collect();
    assert_eq!(applied, expected);
    // The healthy projection alongside is unaffected.
    let expected_orders = fold(&h.stored_events().await);
    assert_eq!(h.order_rows().await, expected_rows(&expected_orders));

    // Retried with the same code, it fails again and stays.
    let (code, body) = h.call("POST", &format!("/projections/skipper/dead-letters/{}/retry", poison[0]), None).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "still_failing", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("event {} still fails, and stays a dead letter: ", poison[0])), "{message}");
    assert_eq!(h.get("/projections/skipper/dead-letters").await.as_array().unwrap().len(), poison.len());

    // Deploy the fix (same version), then retry the dead letters.
    h.install("fixture_skipper_fixed", "fixture_skipper.wasm");
    h.wait_status("skipper", PATIENCE, |s| s["module"]["hash"] != status["module"]["hash"]).await;
    let (code, body) = h.call("POST", "/projections/skipper/dead-letters/999999/retry", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    for p in &poison {
        let (code, body) = h.call("POST", &format!("/projections/skipper/dead-letters/{p}/retry"), None).await;
        assert_eq!(code, StatusCode::OK, "{body}");
    }
    assert_eq!(h.get("/projections/skipper/dead-letters").await, json!([]));
    let applied = seen(&h, "skipper").await;
    assert_eq!(applied.len() as i64, last);
    assert!(poison.iter().all(|p| applied[p] == "b"), "the fixed code applied them");
    h.finish().await;
}

async fn configuration_overrides_the_modules_policy(backend: Backend) {
    let h = Harness::start_with(backend, &["fixture_faulty"], |c| {
        let mut settings = ProjectionSettings::default();
        settings.set("on-error", "skip").unwrap();
        c.projections.insert("faulty".into(), settings);
    })
    .await;
    let (last, poison) = with_poison(&h, "faulty").await;
    let status = h.wait_status("faulty", PATIENCE, |s| s["position"] == last).await;
    assert_eq!(status["module"]["on_error"], "stop", "the module says stop");
    let letters = h.get("/projections/faulty/dead-letters").await;
    let positions: Vec<i64> = letters.as_array().unwrap().iter().map(|l| l["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, poison, "the configuration says skip");
    h.finish().await;
}

async fn database_errors_found_after_the_commit_was_sent_lose_and_double_nothing(backend: Backend) {
    // Catching up in full batches, a worker sends each batch's commit and
    // applies the next batch before the answer (on PostgreSQL). A statement
    // the database refuses only when it runs it fails a batch whose commit
    // is already on its way: that batch and the one after must be applied
    // again, the poison event narrowed down and set aside.
    let h = Harness::start_with(backend, &[], |c| {
        c.batch.call_events = 16;
        c.batch.max_events = 64;
    })
    .await;
    let mut poison = Vec::new();
    for (i, action) in ["sql-error", "bad-params", "sql-error", "bad-params"].iter().enumerate() {
        ticks(&h, &format!("t{i}"), 300).await;
        let fault = json!([{ "event_type": "fault", "data": { "target": "skipper", "action": action } }]);
        let body = h.append(&format!("fault-{i}"), Some(0), fault).await;
        poison.push(body["positions"][0].as_i64().unwrap());
    }
    let last = ticks(&h, "tail", 300).await;
    h.install("fixture_skipper", "skipper.wasm");
    let status = h.wait_status("skipper", PATIENCE, |s| s["position"] == last).await;
    assert_eq!(status["state"], "running", "{status:#}");

    let letters = h.get("/projections/skipper/dead-letters").await;
    let positions: Vec<i64> = letters.as_array().unwrap().iter().map(|l| l["position"].as_i64().unwrap()).collect();
    assert_eq!(positions, poison, "exactly the poison events are dead letters: {letters:#}");
    let error = letters[0]["error"].as_str().unwrap();
    assert!(error.contains("out of range") || error.contains("integer overflow"), "the database's own error: {error}");
    let error = letters[1]["error"].as_str().unwrap();
    assert!(error.contains("parameter"), "the parameters do not fit: {error}");
    let applied: BTreeSet<i64> = seen(&h, "skipper").await.into_keys().collect();
    let expected: BTreeSet<i64> = (1..=last).filter(|p| !poison.contains(p)).collect();
    assert_eq!(applied, expected, "every other event applied");
    assert_eq!(h.kv_bytes("skipper", "duplicate/").await.len(), 0, "no event applied twice");
    assert_eq!(status["events_applied"], json!(last - poison.len() as i64), "{status:#}");
    h.finish().await;
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// One backend's hostile projections at a time: the memory they may take
/// is measured for the whole test process.
static HOSTILE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn hostile_projections_are_stopped_by_their_limits(backend: Backend) {
    let _alone = HOSTILE.lock().await;
    let hostile = [
        ("bomb", "alloc", "out of memory"),
        ("hog", "big-value", "kv value of 4194304 bytes for key `big` is over the 1048576-byte limit"),
        ("flood", "huge-query", "more than 100000 rows"),
        ("chatter", "host-calls", "timed out"),
        ("spin", "loop", "timed out"),
    ];
    let mut modules: Vec<String> = hostile.iter().map(|(n, _, _)| format!("fixture_{n}")).collect();
    modules.push("order_summaries".into());
    let modules: Vec<&str> = modules.iter().map(String::as_str).collect();
    let h = Harness::start_with(backend, &modules, |c| c.limits.batch_timeout = Duration::from_secs(1)).await;
    let before = rss();
    let orders = generate(&OrderWorkload { orders: 300, customers: 10, follow_up_window: 50, seed: 4 });
    let (first, second) = orders.split_at(orders.len() / 2);
    h.append_workload(first).await;
    let mut fault_at = BTreeMap::new();
    for (name, action, _) in &hostile {
        let body = h
            .append(
                &format!("fault-{name}"),
                Some(0),
                json!([{ "event_type": "fault", "data": { "target": name, "action": action } }]),
            )
            .await;
        fault_at.insert(*name, body["positions"][0].as_i64().unwrap());
    }
    let last = h.append_workload(second).await;
    // The healthy projection keeps up with the log while the others misbehave.
    h.get(&format!("/projections/order-summaries/tables/order_summaries?limit=1&min_position={last}")).await;
    let expected = fold(&h.stored_events().await);
    assert_eq!(h.order_rows().await, expected_rows(&expected));
    for (name, _, message) in &hostile {
        let status = h.wait_status(name, PATIENCE, |s| s["state"] == "stopped").await;
        assert_eq!(status["stopped_at"], fault_at[name], "{name}: {status:#}");
        let error = status["last_error"]["message"].as_str().unwrap();
        // Under load the flood's query may reach the batch deadline before its
        // row cap: cancelled either way, by one limit or the other.
        let cut_by_deadline = *name == "flood" && error.contains("ran past its deadline and was cancelled");
        assert!(error.contains(message) || cut_by_deadline, "{name}: {error}");
        if message == &"timed out" {
            // Load can make a healthy event run out of time: alone, it gets every attempt.
            assert_eq!(status["last_error"]["attempts"], 3, "{name}: {status:#}");
        }
    }
    let grown = rss().saturating_sub(before);
    let (_, metrics) = h.call("GET", "/metrics", None).await;
    let mib = |name| common::gauge(metrics.as_str().unwrap_or_default(), name).unwrap_or(0.0) / (1 << 20) as f64;
    eprintln!(
        "{backend:?}: the test process grew by {} MiB; SQLite holds {:.0} MiB, KV caches {:.0} MiB",
        grown >> 20,
        mib("reel_sqlite_memory_bytes"),
        mib("reel_kv_cache_bytes")
    );
    // 640-965 MiB on SQLite when a replay recording kept every host call of
    // `chatter` (ADR 49, the tape bound).
    assert!(grown < 384 << 20, "host memory stays bounded: grew by {} MiB", grown >> 20);
    h.finish().await;
}

async fn pause_resume_and_rebuild_through_the_api(backend: Backend) {
    let h = Harness::start(backend, &["fixture_echo_a"]).await;
    let at = ticks(&h, "a", 10).await;
    h.get(&format!("/projections/echo/kv?limit=1&min_position={at}")).await;
    let (status, _) = h.call("POST", "/projections/echo/pause", None).await;
    assert_eq!(status, StatusCode::OK);
    h.wait_status("echo", PATIENCE, |s| s["state"] == "paused").await;
    let later = ticks(&h, "b", 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.status("echo").await["position"], at, "paused: nothing applied");
    let (status, _) = h.call("POST", "/projections/echo/resume", None).await;
    assert_eq!(status, StatusCode::OK);
    h.get(&format!("/projections/echo/kv?limit=1&min_position={later}")).await;

    let (status, body) = h.call("POST", "/projections/echo/rebuild", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["rebuilding"], "echo@1+g1");
    h.wait_status("echo", PATIENCE, |s| s["namespace"] == "echo@1+g1" && s["rebuild"].is_null()).await;
    let after = seen(&h, "echo").await;
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), (1..=later).collect::<Vec<_>>());
    for (method, uri) in
        [("POST", "/projections/nope/pause"), ("POST", "/projections/nope/rebuild"), ("DELETE", "/projections/nope")]
    {
        let (status, _) = h.call(method, uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}");
    }
    h.finish().await;
}

/// `--projections mods`, relative to where reel runs (the default is
/// relative too): a file there can still be replaced and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_modules_folder_sees_files_change_and_leave() {
    let h = Harness::start_with(Backend::Sqlite, &["fixture_echo_a"], |c| {
        let cwd = std::env::current_dir().unwrap();
        let up: std::path::PathBuf = cwd.components().skip(1).map(|_| "..").collect();
        c.modules_dir = up.join(c.modules_dir.strip_prefix("/").unwrap());
        assert!(c.modules_dir.is_relative());
    })
    .await;
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    // A new version in place of the file that provided the old one.
    h.install("fixture_echo_v2", "fixture_echo_a.wasm");
    h.wait_status("echo", PATIENCE, |s| s["version"] == "2" && s["module_error"].is_null()).await;
    std::fs::remove_file(h.config.modules_dir.join("fixture_echo_a.wasm")).unwrap();
    h.wait_status("echo", PATIENCE, |s| s["state"] == "unloaded").await;
    h.finish().await;
}

/// Two files providing one projection: the second is refused; once the first
/// is removed, the second takes over without being touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_refused_as_a_duplicate_is_loaded_when_the_other_goes() {
    let h = Harness::start(Backend::Sqlite, &["fixture_echo_a"]).await;
    h.wait_status("echo", PATIENCE, |s| s["state"] == "running").await;
    h.install("fixture_echo_v2", "echo-v2.wasm");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let modules = h.get("/modules").await;
        let refused =
            modules.as_array().unwrap().iter().find(|m| m["path"].as_str().unwrap().ends_with("echo-v2.wasm"));
        if let Some(error) = refused.and_then(|m| m["error"].as_str()) {
            assert!(error.contains("already provided by"), "{error}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "echo-v2.wasm was not refused: {modules:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(h.config.modules_dir.join("fixture_echo_a.wasm")).unwrap();
    h.wait_status("echo", PATIENCE, |s| s["version"] == "2" && s["state"] == "running").await;
    h.finish().await;
}
