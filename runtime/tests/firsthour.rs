//! What a new user sees in their first hour (issue 20's second probe): reel
//! shows a module it is compiling at once, and other files do not wait
//! behind it.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Backend, Harness, language_guest};
use serde_json::Value;

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
