//! The same projections written in Rust, JavaScript, Python and C: the same
//! randomized history must give byte-identical read models, on both backends.

mod common;

use std::collections::BTreeMap;

use common::{Backend, Harness, language_guest};
use reel::model::Value;
use reel::testing::TableRead;
use reel::testing::workload::{OrderWorkload, generate};
use serde_json::json;

const LANGUAGES: [&str; 3] = ["js", "py", "c"];

/// customer-stats' checksum after the history below, on either backend.
const CUSTOMER_STATS_CHECKSUM: &str = "sha256:36ff9e3304f981c0d640a3c82029e9a43921a301c6f62b8d14989f730af78272";

both_backends!(every_language_builds_the_same_read_models);

/// A table's rows, by their first column.
async fn rows(h: &Harness, projection: &str) -> BTreeMap<String, Vec<Value>> {
    let read = TableRead { table: "order_summaries".into(), limit: 100_000, ..TableRead::default() };
    let rows = h.server.reads().read(projection, None, move |ns| ns.read_table(&read)).await.unwrap();
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
    h.server.reads().read(projection, None, |ns| ns.kv_scan("", None, 1_000_000)).await.unwrap()
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
        events.push(reel::testing::workload::OrderEvent {
            stream_id: format!("order-edge-{i}"),
            version: 1,
            event_type: "order.placed",
            data: json!({ "orderId": format!("edge-{i}"), "customerId": customer, "total": total,
                          "items": [{ "productId": "p-1", "quantity": i + 1, "price": total }] }),
        });
    }
    let mut projections = vec!["order-summaries".to_owned(), "customer-stats".to_owned()];
    for lang in LANGUAGES {
        projections.push(format!("order-summaries-{lang}"));
        projections.push(format!("customer-stats-{lang}"));
    }
    let caught_up = async |last: i64| {
        for name in &projections {
            let status = h
                .wait_status(name, std::time::Duration::from_secs(120), |s| {
                    s["position"] == last || s["state"] == "stopped"
                })
                .await;
            assert_eq!(status["position"], last, "{name}: {status:#}");
            assert!(status["last_error"].is_null(), "{name}: {status:#}");
        }
    };
    caught_up(h.append_workload(&events).await).await;
    // Sequences the Rust version's fold (PostgreSQL) could get wrong; the other
    // languages apply events one by one. Each part is appended in one
    // transaction after every projection caught up, so a worker reading at
    // the head gets it in one call; the second part works on rows the first
    // wrote. (Checked to fail with the fold dropping a tracking number.)
    let (first, second) = fold_sequences();
    caught_up(append_at_once(&h, &first, 0).await).await;
    let last = append_at_once(&h, &second, first.len() as i64).await;
    caught_up(last).await;

    let reference_rows = rows(&h, "order-summaries").await;
    let reference_kv = kv(&h, "customer-stats").await;
    assert_eq!(reference_rows.len(), 610);
    let summary = |id: &str| {
        let row = reference_rows.get(id).unwrap_or_else(|| panic!("no row {id}"));
        let text = |v: &Value| match v {
            Value::Text(t) => Some(t.clone()),
            Value::Null => None,
            other => panic!("{id}: {other:?}"),
        };
        let total = match row[3] {
            Value::Real(total) => total,
            ref other => panic!("{id}: total {other:?}"),
        };
        (text(&row[4]).unwrap(), total, text(&row[6]))
    };
    // What applying the events one by one gives (and the other languages do).
    let expect =
        |status: &str, total: f64, tracking: Option<&str>| (status.to_owned(), total, tracking.map(str::to_owned));
    assert_eq!(summary("seq-1"), expect("cancelled", 11.0, Some("T1")));
    assert_eq!(summary("seq-2"), expect("shipped", 12.0, Some("T2")));
    assert_eq!(summary("seq-3"), expect("placed", 13.0, None));
    assert_eq!(summary("seq-4"), expect("placed", 14.5, Some("T4")));
    assert_eq!(summary("seq-5"), expect("placed", 15.0, Some("T5")));
    assert!(!reference_rows.contains_key("seq-6"), "shipping an order never placed writes nothing");
    assert_eq!(summary("seq-7"), expect("cancelled", 17.0, None));
    assert!(reference_kv.len() > 600);
    // customer-stats: cancellations of orders placed in the same batch and in
    // an earlier one, twice; reel's KV cache answers both from the batch.
    let stats = |customer: &str| {
        let key = format!("customer/{customer}");
        let (_, value) = reference_kv.iter().find(|(k, _)| *k == key).unwrap_or_else(|| panic!("no {key}"));
        String::from_utf8(value.clone()).unwrap()
    };
    assert_eq!(stats("c-seq-1"), r#"{"orders":2,"cancelled":1,"total_spent":10.00}"#);
    assert_eq!(stats("c-seq-2"), r#"{"orders":2,"cancelled":1,"total_spent":12.00}"#);
    assert_eq!(stats("c-seq-4"), r#"{"orders":2,"cancelled":0,"total_spent":28.50}"#);
    assert_eq!(stats("c-seq-7"), r#"{"orders":1,"cancelled":1,"total_spent":0.00}"#);
    if backend == Backend::Postgres {
        // Every language asked `sql.dialect()` and created the PostgreSQL
        // table: bytewise keys, pages with room for HOT updates.
        let tables = h
            .postgres()
            .await
            .query(
                "SELECT ns.name, c.reloptions::text, a.attcollation::regcollation::text \
                   FROM reel.namespaces ns JOIN pg_namespace n ON n.nspname = ns.schema_name \
                   JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'order_summaries' \
                   JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'order_id' ORDER BY ns.name",
                &[],
            )
            .await
            .unwrap();
        let got: Vec<(String, Option<String>, String)> =
            tables.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let want: Vec<(String, Option<String>, String)> = ["", "-c", "-js", "-py"]
            .iter()
            .map(|lang| (format!("order-summaries{lang}"), Some("{fillfactor=60}".to_owned()), "\"C\"".to_owned()))
            .collect();
        assert_eq!(got, want);
    }
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

    // Each read model's checksum (ADR 37): the same in every language, part
    // by part; customer-stats' (KV alone, no clock in it) the same on both
    // backends. (order-summaries holds `occurred_at`: tests/checksum.rs
    // compares tables across backends.)
    for base in ["order-summaries", "customer-stats"] {
        let want = h.get(&format!("/projections/{base}/checksum")).await;
        assert_eq!(want["position"], last, "{want:#}");
        for lang in LANGUAGES {
            let got = h.get(&format!("/projections/{base}-{lang}/checksum")).await;
            for part in ["position", "checksum", "tables", "kv"] {
                assert_eq!(got[part], want[part], "{base}-{lang}: {part}");
            }
        }
        if base == "customer-stats" {
            assert_eq!(want["checksum"], CUSTOMER_STATS_CHECKSUM, "{want:#}");
        }
    }

    // A payload of the wrong shape deep inside: every language's decoder names
    // the path to the value, in the Rust SDK's words (Rust and C add serde_json's
    // position).
    let bad = json!({ "orderId": "bad-1", "customerId": "c-bad", "total": 1.0,
                      "items": [{ "productId": "p-1", "quantity": 1, "price": 1.0 },
                                { "productId": "p-2", "quantity": "two", "price": 1.0 }] });
    let at =
        h.append("order-bad-1", Some(0), json!([{ "event_type": "order.placed", "data": bad }])).await["positions"][0]
            .as_i64()
            .unwrap();
    let reason = "`order.placed` event: items[1].quantity: invalid type: string \"two\", expected i64";
    for name in ["order-summaries", "order-summaries-js", "order-summaries-py", "order-summaries-c"] {
        let status = h.wait_status(name, std::time::Duration::from_secs(60), |s| s["state"] == "stopped").await;
        assert_eq!(status["stopped_at"], at, "{name}: {status:#}");
        let message = status["last_error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{name}: {message}");
    }
    h.finish().await;
}

/// Two parts of one history, each to be one batch: orders placed, shipped,
/// cancelled and placed again, within a batch and across the two.
fn fold_sequences() -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let placed = |id: &str, total: f64| {
        json!({ "event_type": "order.placed", "data": { "orderId": id, "customerId": format!("c-{id}"),
                "total": total, "items": [{ "productId": "p-1", "quantity": 2, "price": total }] } })
    };
    let shipped = |id: &str, tracking: &str| json!({ "event_type": "order.shipped", "data": { "orderId": id, "trackingNumber": tracking } });
    let cancelled = |id: &str| json!({ "event_type": "order.cancelled", "data": { "orderId": id } });
    let first = vec![
        placed("seq-1", 10.0),
        placed("seq-2", 10.0),
        shipped("seq-7", "T7"), // before its order exists: nothing
        shipped("seq-2", "T0"),
        placed("seq-5", 10.0),
        placed("seq-7", 17.0),
        shipped("seq-5", "T5"),
    ];
    let second = vec![
        shipped("seq-1", "T1"), // an existing row, before the batch places it again
        cancelled("seq-2"),
        shipped("seq-3", "T3"), // no row yet: nothing
        placed("seq-4", 14.0),
        placed("seq-1", 11.0), // placed again: tracking kept
        placed("seq-2", 12.0),
        shipped("seq-4", "T4"),
        placed("seq-3", 13.0),
        shipped("seq-6", "T6"), // never placed
        placed("seq-4", 14.5),  // placed again in the batch that shipped it
        cancelled("seq-1"),
        shipped("seq-2", "T2"),
        placed("seq-5", 15.0),
        cancelled("seq-7"), // placed in the first part
        cancelled("seq-7"), // again: nothing
        cancelled("seq-1"), // again, in the batch that cancelled it: nothing
    ];
    (first, second)
}

/// Append `events` to the stream `order-seq` in one call (one transaction),
/// `version` events being in it already. Returns the last position.
async fn append_at_once(h: &Harness, events: &[serde_json::Value], version: i64) -> i64 {
    let body = h.append("order-seq", Some(version), serde_json::Value::from(events.to_vec())).await;
    body["positions"][events.len() - 1].as_i64().unwrap()
}
