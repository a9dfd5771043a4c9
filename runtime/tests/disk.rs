//! The embedded store on a full disk (issue 30 item 3, ADR 42): appends
//! answer 507 naming the disk and append nothing, a projection that cannot
//! write says so and waits (its events neither applied nor set aside), and
//! everything goes on once space returns, with nothing lost or doubled and
//! every file intact. The data folder is a 24 MiB tmpfs mounted by the test
//! (it needs root, as on the machines reel's CI runs on).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Backend, Harness};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(90);

/// A small file system mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a {size} tmpfs at {} (this test needs root)", path.display());
        Self { path: path.to_owned() }
    }

    /// Fill the disk with a file, leaving about `spare` bytes free.
    fn fill(&self, spare: u64) {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let written = std::fs::metadata(&filler).unwrap().len();
        file.set_len(written.saturating_sub(spare)).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Append events that make the skipper fixture run `statements`.
async fn sql_event(h: &Harness, stream: &str, statements: &[&str]) -> i64 {
    let data = json!({ "target": "skipper", "action": "sql", "statements": statements });
    let body = h.append(stream, Some(0), json!([{ "event_type": "fault", "data": data }])).await;
    body["positions"][0].as_i64().unwrap()
}

async fn applied(h: &Harness) -> BTreeSet<i64> {
    h.kv_bytes("skipper", "seen/").await.into_keys().map(|k| k["seen/".len()..].parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_named_stops_the_writes_and_all_resumes_when_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let disk = SmallDisk::mount(&data, "24m");
    let h = Harness::start_with(Backend::Sqlite, &["fixture_skipper"], |c| c.data_dir = data.clone()).await;
    let first = h.append("before", Some(0), json!([{ "event_type": "tick", "data": {} }])).await;
    let first = first["positions"][0].as_i64().unwrap();
    h.wait_status("skipper", PATIENCE, |s| s["position"] == first).await;

    // Appends: 201 while the log's files have room, then 507, nothing appended.
    disk.fill(0);
    let padding = "x".repeat(4096);
    let mut accepted = 0;
    let refusal = loop {
        let body = json!({ "stream_id": "full", "expected_version": accepted,
                           "events": [{ "event_type": "tick", "data": { "padding": padding } }] });
        let (status, body) = h.call("POST", "/events", Some(&body.to_string())).await;
        match status {
            StatusCode::CREATED => accepted += 1,
            _ => break (status, body),
        }
        assert!(accepted < 20_000, "appends never failed on a full disk");
    };
    let (status, body) = refusal;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("the disk holding the data folder {} is full", data.display())), "{message}");

    // A projection that cannot write waits, named, and sets nothing aside
    // (it is under `on-error: skip`, and the disk is not its doing).
    disk.free();
    disk.fill(2 << 20);
    let big =
        sql_event(&h, "big", &["CREATE TABLE IF NOT EXISTS big (b BLOB)", "INSERT INTO big SELECT zeroblob(8000000)"])
            .await;
    let waiting = h
        .wait_status("skipper", PATIENCE, |s| {
            s["state"] == "retrying" && s["last_error"]["message"].as_str().is_some_and(|m| m.contains("is full"))
        })
        .await;
    assert!(waiting["position"].as_i64().unwrap() < big, "{waiting:#}");

    // Space returns: the batch goes through, appends too.
    disk.free();
    h.wait_status("skipper", PATIENCE, |s| s["position"] == big).await;
    let after = h.append("after", Some(0), json!([{ "event_type": "tick", "data": {} }])).await;
    let after = after["positions"][0].as_i64().unwrap();
    let status = h.wait_status("skipper", PATIENCE, |s| s["position"] == after).await;
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(h.get("/projections/skipper/dead-letters").await, json!([]));
    assert_eq!(applied(&h).await, (1..=after).collect::<BTreeSet<_>>(), "every event applied once");
    h.finish().await;
    // Every accepted append stored once, in order; the refused one nowhere.
    let events = rusqlite::Connection::open(data.join("events.db")).unwrap();
    let mut versions = events.prepare("SELECT version FROM events WHERE stream_id = 'full' ORDER BY id").unwrap();
    let full: Vec<i64> = versions.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(full, (1..=accepted).collect::<Vec<_>>());
    for file in std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .chain(std::fs::read_dir(data.join("projections")).unwrap().flatten())
    {
        let path = file.path();
        if path.extension().is_some_and(|e| e == "db") {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
            assert_eq!(check, "ok", "{}", path.display());
        }
    }
    drop(disk);
}
