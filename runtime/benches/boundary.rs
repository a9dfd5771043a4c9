//! The cost of crossing into a guest, per event, by batch size.
//!
//! ```sh
//! cargo bench -p reel --bench boundary
//! cargo test  -p reel --bench boundary -- --smoke
//! ```
//!
//! `fixture-noop` receives each batch and returns without decoding anything,
//! so the time is the host lowering the events (strings copied into guest
//! memory), the call, and the guest lifting them into Rust values. The events
//! are ~200-byte order payloads.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use reel::config::Limits;
use reel::model::Event;
use reel::testing::SqliteStore;
use reel::testing::{Access, Capabilities, Engine, Guest};
use reel::testing::{Code, WasmGuest};
use reel::testing::{NamespaceId, Store};

fn events(n: usize) -> Vec<Event> {
    (0..n as i64)
        .map(|i| Event {
            position: i + 1,
            stream_id: format!("order-{:016x}", i * 7919),
            version: 1,
            event_type: "order.placed".into(),
            data: format!(
                r#"{{"orderId":"{:016x}","customerId":"c-{:06}","items":[{{"productId":"p-0042","quantity":2,"price":19.99}}],"total":39.98}}"#,
                i * 7919,
                i % 5000
            ),
            metadata: "{}".into(),
            occurred_at: "2026-11-27T17:45:11.123456Z".into(),
        })
        .collect()
}

fn guest(engine: &Engine, crate_name: &str, store: &Store) -> WasmGuest {
    let bytes = std::fs::read(common::guest(crate_name)).unwrap();
    let component = engine.compile(&bytes).unwrap();
    let code = Code::link(engine, &component).unwrap();
    let limits = Limits { batch_timeout: Duration::from_secs(60), ..Limits::default() };
    let manifest = WasmGuest::describe(&code, crate_name, &limits).unwrap();
    let ns = NamespaceId::new(&manifest.name, &manifest.version);
    let caps = Capabilities::new(
        &manifest.name,
        Access::Write(store.open_writer(&ns, std::time::Duration::from_secs(10)).unwrap()),
        limits.clone(),
    )
    .unwrap();
    let mut guest = WasmGuest::new(&code, manifest, caps, &limits).map_err(|e| e.0).unwrap();
    guest.caps().begin().unwrap();
    guest.init().unwrap();
    guest
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let budget = if smoke { Duration::from_millis(50) } else { Duration::from_secs(2) };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(SqliteStore::new(dir.path()).unwrap());
    let engine = Engine::new().unwrap();
    let _ticker = engine.start_ticker();
    let all = events(1000);
    println!(
        "guest boundary: ns per event by batch size ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<22} {:>8} {:>8} {:>8} {:>8} {:>8}", "projection", "1", "10", "100", "500", "1000");
    for crate_name in ["fixture_noop"] {
        let mut guest = guest(&engine, crate_name, &store);
        let mut row = format!("{crate_name:<22}");
        for n in [1usize, 10, 100, 500, 1000] {
            let batch = &all[..n];
            guest.handle(batch).unwrap(); // warm
            let started = Instant::now();
            let mut calls = 0u64;
            while started.elapsed() < budget {
                guest.handle(batch).unwrap();
                calls += 1;
            }
            let per_event = started.elapsed().as_nanos() as f64 / (calls as f64 * n as f64);
            row.push_str(&format!(" {per_event:>8.0}"));
        }
        println!("{row}");
        let _ = guest.caps().rollback();
    }
}
