//! Reactors: modules that emit events exactly once (wit/reactor.wit,
//! docs/adr/23-reactors-exactly-once.md).

mod common;

use common::{Backend, Harness};

/// A component of the `reactor` world (Rust SDK, `export_reactor!`) links
/// and describes itself beside a projection.
#[tokio::test]
async fn a_reactor_component_loads_beside_a_projection() {
    let h = Harness::start(Backend::Sqlite, &["fixture_relay", "fixture_echo_a"]).await;
    let modules = h.get("/modules").await;
    let mut provides: Vec<String> =
        modules.as_array().unwrap().iter().map(|m| m["provides"].as_str().unwrap_or("").to_owned()).collect();
    provides.sort();
    assert_eq!(provides, ["echo@1", "relay@1"], "{modules:#}");
    assert!(modules.as_array().unwrap().iter().all(|m| m["error"].is_null()), "{modules:#}");
    h.finish().await;
}
