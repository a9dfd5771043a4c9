//! What a new user sees in their first hour (issue 20's second probe): reel
//! shows a module it is compiling at once, and other files do not wait
//! behind it; a poison event after a same-version swap says why setup did
//! not run.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Backend, Harness, language_guest};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(120);

/// `file`'s entry in GET /modules, once it has one.
async fn module(h: &Harness, file: &str) -> Option<Value> {
    let modules = h.get("/modules").await;
    modules.as_array().unwrap().iter().find(|m| m["path"].as_str().unwrap().ends_with(file)).cloned()
}

/// Poll GET /modules until `check` holds for `file`'s entry.
async fn wait_module(h: &Harness, file: &str, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        if let Some(entry) = module(h, file).await.filter(&check) {
            return entry;
        }
        assert!(started.elapsed() < PATIENCE, "{file}: {:#}", h.get("/modules").await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The bytes of `wasm` with a custom section appended that no other copy
/// has: the same component under a new hash, so the compile cache misses.
fn never_compiled(wasm: &[u8]) -> Vec<u8> {
    let nonce = format!("{:?}-{}", SystemTime::now(), std::process::id());
    let name = b"reel-test-nonce";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(nonce.as_bytes());
    let mut bytes = wasm.to_vec();
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(section.len()).unwrap()); // LEB128 size, < 128
    bytes.extend_from_slice(&section);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compiling_module_is_listed_at_once_and_holds_up_no_other_file() {
    let h = Harness::start(Backend::Sqlite, &[]).await;
    // An 18 MB Python component: seconds to compile even on a quiet machine.
    let slow = never_compiled(&std::fs::read(language_guest("customer-stats-py")).unwrap());
    let tmp = h.dir.path().join("slow.tmp");
    std::fs::write(&tmp, slow).unwrap();
    std::fs::rename(&tmp, h.config.modules_dir.join("customer-stats-py.wasm")).unwrap();

    // Listed as compiling before it is loaded (the first thing GET /modules says of it).
    let first = wait_module(&h, "customer-stats-py.wasm", |_| true).await;
    assert_eq!(first["compiling"], true, "{first:#}");
    assert!(first["provides"].is_null(), "{first:#}");

    // A file dropped meanwhile is refused while the big one still compiles.
    std::fs::write(h.config.modules_dir.join("junk.wasm"), b"not wasm!").unwrap();
    let junk = wait_module(&h, "junk.wasm", |m| m["error"].is_string()).await;
    assert!(junk["error"].as_str().unwrap().contains("no WebAssembly header (9 bytes)"), "{junk:#}");
    assert_eq!(junk["compiling"], false, "{junk:#}");
    let meanwhile = module(&h, "customer-stats-py.wasm").await.unwrap();
    assert_eq!(meanwhile["compiling"], true, "junk.wasm waited for the compile: {meanwhile:#}");

    let loaded = wait_module(&h, "customer-stats-py.wasm", |m| m["compiling"] == false).await;
    assert_eq!(loaded["provides"], "customer-stats-py@1", "{loaded:#}");
    assert_eq!(loaded["cached"], false, "{loaded:#}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_after_a_same_version_swap_says_setup_did_not_run() {
    let h = Harness::start(Backend::Sqlite, &["fixture_faulty"]).await;
    h.wait_status("faulty", PATIENCE, |s| s["state"] == "running").await;
    let fault = json!([{ "event_type": "fault", "data": { "target": "faulty", "action": "error" } }]);
    let before = h.append("fault-1", None, fault).await["positions"][0].as_i64().unwrap();
    let status = h.wait_status("faulty", PATIENCE, |s| s["stopped_at"] == before).await;
    let plain = status["last_error"]["message"].as_str().unwrap().to_owned();
    assert!(!plain.contains("bump the version"), "no swap, no hint: {status:#}");

    // New bytes, same name and version: swapped in, setup not run again.
    let tmp = h.dir.path().join("faulty.tmp");
    std::fs::write(&tmp, never_compiled(&std::fs::read(common::guest("fixture_faulty")).unwrap())).unwrap();
    std::fs::rename(&tmp, h.config.modules_dir.join("fixture_faulty.wasm")).unwrap();
    // It runs the event again with the new code, which fails the same way.
    let status = h
        .wait_status("faulty", PATIENCE, |s| {
            s["last_error"]["message"].as_str().is_some_and(|m| m.contains("bump the version"))
        })
        .await;
    assert_eq!((&status["state"], &status["stopped_at"]), (&json!("stopped"), &json!(before)), "{status:#}");
    let message = status["last_error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "{plain} (this code replaced version 1's earlier code without a rebuild, so its setup did not run: \
             if the change needs new tables or setup, bump the version)"
        ),
        "{status:#}"
    );
    h.finish().await;
}
