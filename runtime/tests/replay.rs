//! Replayable poison events (ADR 49), on both backends: an event that stops
//! a projection (policy stop) or goes to its dead letters (policy skip) is
//! recorded; the record exported over HTTP replays with the server gone and
//! its database dropped, printing the server's error and the guest's log
//! lines byte for byte; a fixed module passes on the record's read model.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, Harness};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

both_backends!(a_poison_event_replays_from_its_exported_record_without_the_database);

/// A guest that calls `kv.get` in a loop until its deadline makes millions
/// of calls: its record keeps them up to the tape's bound and counts the
/// rest, and a replay that runs past that cut says so (exit 2), instead of
/// calling the module not deterministic. Without the bound the record held
/// every call, hundreds of MiB in memory and on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_looping_on_host_calls_leaves_a_cut_record() {
    let h =
        Harness::start_with(Backend::Sqlite, &["fixture_chatter"], |c| c.limits.batch_timeout = Duration::from_secs(1))
            .await;
    let fault = json!([{ "event_type": "fault", "data": { "target": "chatter", "action": "host-calls" } }]);
    let poison = h.append("fault", None, fault).await["positions"][0].as_i64().unwrap();
    let stopped = h.wait_status("chatter", PATIENCE, |s| s["state"] == "stopped").await;
    assert_eq!(stopped["stopped_at"], poison, "{stopped:#}");
    let (code, record) = h.call("GET", &format!("/projections/chatter/replays/{poison}"), None).await;
    assert_eq!(code, StatusCode::OK, "{record}");
    h.finish().await;
    let text = record.to_string();
    let calls = record["calls"].as_array().unwrap();
    let (kept, dropped) = (calls.len(), record["calls_dropped"].as_u64().unwrap());
    // The fixture looks its event up, then asks for `seen/0` until its
    // deadline; each get kept weighs 64 bytes and its key: 16 MiB of them.
    let first = format!("seen/{poison:020}");
    assert_eq!(calls[0]["kv_get"]["key"], first.as_str(), "{}", &text[..text.len().min(2000)]);
    let other = calls[1..].iter().find(|c| c["kv_get"]["key"] != "seen/0");
    assert!(other.is_none(), "{other:?}");
    assert_eq!(kept, 1 + ((16 << 20) - (64 + first.len())) / (64 + 6));
    assert!(dropped > 0, "the loop went on past the bound");
    assert!(text.len() < 64 << 20, "the record is {} bytes", text.len());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chatter.json");
    std::fs::write(&file, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_reel")).args(["replay", "--file"]).arg(&file).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "replay: the module called kv.get(\"seen/0\") after the {kept} host calls and log lines the record \
             kept; the record was cut there ({dropped} more were made when it was recorded)"
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "reel replay: the record cannot be replayed to its end: its host calls were cut at 16777216 bytes \
             when it was recorded ({dropped} more were made), and the module ran past the cut"
        )),
        "{stderr}"
    );
}

/// `reel replay ARGS`: exit code and standard output.
fn replay(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_reel")).arg("replay").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap(), String::from_utf8(output.stdout).unwrap())
}

async fn a_poison_event_replays_from_its_exported_record_without_the_database(backend: Backend) {
    let h = Harness::start(backend, &["fixture_faulty", "fixture_skipper"]).await;
    let ticks: Vec<Value> = (0..5).map(|_| json!({ "event_type": "tick", "data": {} })).collect();
    h.append("before", None, json!(ticks)).await;
    // The query's rows and the database's refusal are answers the replay
    // gives from the record; the line logged first is the guest's own.
    let fault = json!([{ "event_type": "fault", "data": {
        "target": "*", "action": "sql", "say": "about to ask twice",
        "statements": ["SELECT 41 + 1 AS answer", "SELECT * FROM no_such_table"],
    } }]);
    let poison = h.append("fault", None, fault).await["positions"][0].as_i64().unwrap();
    let last = h.append("after", None, json!(ticks)).await["positions"][4].as_i64().unwrap();

    let stopped = h.wait_status("faulty", PATIENCE, |s| s["state"] == "stopped").await;
    assert_eq!(stopped["stopped_at"], poison, "{stopped:#}");
    let error = stopped["last_error"]["message"].as_str().unwrap().to_owned();
    let skipped = h.wait_status("skipper", PATIENCE, |s| s["position"] == last).await;
    assert_eq!(skipped["dead_letters"], 1, "{skipped:#}");
    let letters = h.get("/projections/skipper/dead-letters").await;
    let dead_letter_error = letters[0]["error"].as_str().unwrap().to_owned();

    // Exported, as the files a bug report carries.
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["faulty", "skipper"] {
        let (code, record) = h.call("GET", &format!("/projections/{name}/replays/{poison}"), None).await;
        assert_eq!(code, StatusCode::OK, "{record}");
        assert_eq!((&record["format"], &record["event"]["position"]), (&json!("reel-replay/1"), &json!(poison)));
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, record.to_string()).unwrap();
        files.push(file);
    }
    let (code, body) = h.call("GET", &format!("/projections/faulty/replays/{}", poison - 1), None).await;
    assert_eq!((code, &body["error"]["code"]), (StatusCode::NOT_FOUND, &json!("not_found")), "{body}");
    h.finish().await;

    let error_line = format!("error: {error}");
    for (file, error) in [(&files[0], &error), (&files[1], &dead_letter_error)] {
        let (code, out) = replay(&["--file", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"INFO about to ask twice"), "{out}");
        assert!(lines.contains(&format!("error: {error}").as_str()), "{out}");
        assert!(out.contains("reproduced: the same error and the same 1 log line as recorded"), "{out}");
    }
    assert!(error_line.contains("no_such_table"), "{error_line}");

    // A record whose answers were changed: the replay says how it differs.
    let mut record: Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let calls = record["calls"].as_array_mut().unwrap();
    let query = calls.iter_mut().find(|c| c["sql_query"]["statement"] == "SELECT * FROM no_such_table").unwrap();
    query["sql_query"]["result"] = json!({ "columns": ["x"], "rows": [] });
    let changed = dir.path().join("changed.json");
    std::fs::write(&changed, record.to_string()).unwrap();
    let (code, out) = replay(&["--file", changed.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("- {error_line}")) && out.contains("+ error: (none)"), "{out}");

    // The fixed module on the read model as it was before the event.
    let fixed = common::guest("fixture_skipper_fixed");
    let (code, out) = replay(&["--file", files[1].to_str().unwrap(), "--module", fixed.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("passes: the module applies event {poison}")), "{out}");
    let unfixed = common::guest("fixture_skipper");
    let (code, out) = replay(&["--file", files[1].to_str().unwrap(), "--module", unfixed.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l.starts_with("error: event ") && l.contains("no_such_table")), "{out}");

    let (code, _) = replay(&["--file", Path::new("/nonexistent/record.json").to_str().unwrap()]);
    assert_eq!(code, 2);
}
