//! The contract across versions: a component built against an earlier
//! `reel:projection` version keeps loading and building its read model
//! (docs/adr/22-one-contract-version.md).

mod common;

use std::time::Duration;

use common::{Backend, Harness};
use serde_json::json;

both_backends!(a_component_built_against_0_1_0_loads_and_builds_its_read_model);

/// `fixture_compat_0_1_0` is built from `wit/compat/0.1.0` (bindings of its
/// own, not the SDK's): its imports name `reel:projection/kv@0.1.0`, ...,
/// which reel serves from the 0.1.1 definitions.
async fn a_component_built_against_0_1_0_loads_and_builds_its_read_model(backend: Backend) {
    let h = Harness::start(backend, &["fixture_compat_0_1_0"]).await;
    let modules = h.get("/modules").await;
    let file = &modules.as_array().unwrap()[0];
    assert_eq!(file["provides"], "compat@1", "loaded as itself: {modules:#}");
    assert!(file["error"].is_null(), "{modules:#}");

    let mut last = 0;
    for (i, event_type) in ["thing.added", "thing.added", "thing.removed"].iter().enumerate() {
        let appended =
            h.append(&format!("thing-{i}"), Some(0), json!([{ "event_type": event_type, "data": {} }])).await;
        last = appended["positions"][0].as_i64().unwrap();
    }
    let kv = h.get(&format!("/projections/compat/kv/count/thing.added?min_position={last}")).await;
    assert_eq!(kv, json!(2), "KV through the 0.1.0 imports");
    let rows = h.get("/projections/compat/tables/counts?order=event_type").await;
    assert_eq!(rows, json!([{ "event_type": "thing.added", "n": 2 }, { "event_type": "thing.removed", "n": 1 }]));
    let dialect = h.get("/projections/compat/query/dialect").await;
    assert_eq!(dialect, json!(if backend == Backend::Sqlite { "sqlite" } else { "postgres" }));
    let status = h.wait_status("compat", Duration::from_secs(30), |s| s["position"] == last).await;
    assert_eq!(status["state"], "running", "{status:#}");
    h.finish().await;
}
