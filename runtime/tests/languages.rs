//! The same projections written in Rust, JavaScript, Python and C: the same
//! randomized history must give byte-identical read models, on both backends.

mod common;

use std::collections::BTreeMap;

use common::{Backend, Harness, language_guest};
use reel::store::{TableRead, Value};
use reel::workload::{OrderWorkload, generate};
use serde_json::json;

const LANGUAGES: [&str; 3] = ["js", "py", "c"];

both_backends!(every_language_builds_the_same_read_models);

/// A table's rows, by their first column.
async fn rows(h: &Harness, projection: &str) -> BTreeMap<String, Vec<Value>> {
    let read = TableRead { table: "order_summaries".into(), limit: 100_000, ..TableRead::default() };
    let rows = h.runtime.read(projection, None, move |ns| ns.read_table(&read)).await.unwrap();
    rows.rows
        .into_iter()
        .map(|row| match &row[0] {
            Value::Text(id) => (id.clone(), row),
            other => panic!("order_id is {other:?}"),
        })
        .collect()
}

/// Every KV entry, bytes as stored.
async fn kv(h: &Harness, projection: &str) -> Vec<(String, Vec<u8>)> {
    h.runtime.read(projection, None, |ns| ns.kv_scan("", None, 1_000_000)).await.unwrap()
}

async fn every_language_builds_the_same_read_models(backend: Backend) {
    let h = Harness::start(backend, &["order_summaries", "customer_stats"]).await;
    for lang in LANGUAGES {
        for name in ["order-summaries", "customer-stats"] {
            let name = format!("{name}-{lang}");
            std::fs::copy(language_guest(&name), h.config.modules_dir.join(format!("{name}.wasm"))).unwrap();
        }
    }
    for lang in LANGUAGES {
        h.wait_status(&format!("customer-stats-{lang}"), std::time::Duration::from_secs(120), |s| {
            s["state"] == "running"
        })
        .await;
    }
    // A randomized history, plus payloads that are easy to get wrong: quotes,
    // backslashes and non-ASCII in ids, totals that are not exact in binary.
    let mut events = generate(&OrderWorkload { orders: 600, customers: 25, follow_up_window: 150, seed: 77 });
    for (i, (customer, total)) in
        [("c-\"quoted\"", 0.1 + 0.2), ("c-back\\slash", 19.99), ("c-ümlaut-😀", 1e-7), ("c-tab\t", 123456789.01)]
            .into_iter()
            .enumerate()
    {
        events.push(reel::workload::OrderEvent {
            stream_id: format!("order-edge-{i}"),
            version: 1,
            event_type: "order.placed",
            data: json!({ "orderId": format!("edge-{i}"), "customerId": customer, "total": total,
                          "items": [{ "productId": "p-1", "quantity": i + 1, "price": total }] }),
        });
    }
    let last = h.append_workload(&events).await;
    let mut projections = vec!["order-summaries".to_owned(), "customer-stats".to_owned()];
    for lang in LANGUAGES {
        projections.push(format!("order-summaries-{lang}"));
        projections.push(format!("customer-stats-{lang}"));
    }
    for name in &projections {
        let status = h
            .wait_status(name, std::time::Duration::from_secs(120), |s| {
                s["position"] == last || s["state"] == "stopped"
            })
            .await;
        assert_eq!(status["position"], last, "{name}: {status:#}");
        assert!(status["last_error"].is_null(), "{name}: {status:#}");
    }

    let reference_rows = rows(&h, "order-summaries").await;
    let reference_kv = kv(&h, "customer-stats").await;
    assert_eq!(reference_rows.len(), 604);
    assert!(reference_kv.len() > 600);
    // Queries for the customers with awkward ids, and a few ordinary ones.
    let edge = reference_rows.iter().filter(|(id, _)| id.starts_with("edge-")).map(|(_, r)| r);
    let customers: Vec<String> = edge
        .chain(reference_rows.values().take(5))
        .map(|r| match &r[1] {
            Value::Text(customer) => customer.clone(),
            other => panic!("customer_id is text: {other:?}"),
        })
        .collect();
    assert_eq!(customers.len(), 9, "the four awkward customers are among the rows");
    for lang in LANGUAGES {
        let name = format!("order-summaries-{lang}");
        let got = rows(&h, &name).await;
        for (id, row) in &reference_rows {
            assert_eq!(got.get(id), Some(row), "{name}: row {id}");
        }
        assert_eq!(got.len(), reference_rows.len(), "{name}");
        let name = format!("customer-stats-{lang}");
        assert_eq!(kv(&h, &name).await, reference_kv, "{name}: KV entries and bytes");
        // Custom queries answer with the same JSON text.
        for customer in &customers {
            let args = common::urlencode(&json!({ "customerId": customer }).to_string());
            for (projection, query) in [("order-summaries", "customer-orders"), ("customer-stats", "customer")] {
                let (status, want) =
                    h.call("GET", &format!("/projections/{projection}/query/{query}?args={args}"), None).await;
                let (got_status, got) =
                    h.call("GET", &format!("/projections/{projection}-{lang}/query/{query}?args={args}"), None).await;
                assert_eq!(status, axum::http::StatusCode::OK);
                assert_eq!(got_status, axum::http::StatusCode::OK, "{projection}-{lang} {query}: {got}");
                assert_eq!(got, want, "{projection}-{lang} {query} for {customer}");
            }
        }
    }
    h.finish().await;
}
