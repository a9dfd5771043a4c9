//! A read model as a snapshot's stable JSON: tables by name, each a list of
//! rows (objects, columns in the table's order) sorted by their values, then
//! the KV entries by key, then the queries' answers in the fixture's order.
//! Values as the checksum sees them (ADR 37): an integral real is its
//! integer, a blob is `{"hex": ...}`; a KV value is its JSON if it is JSON,
//! else its text, else `{"hex": ...}`. JSON from the module (KV values,
//! answers) has its objects' keys sorted: languages write them in different
//! orders, the snapshot holds the values.

use serde_json::{Map, Value as Json};

use super::fixture::Query;
use crate::store::whole::{WholeModel, compare_rows, kv_json, sorted};

/// The snapshot's text: pretty JSON, two spaces, a newline at the end.
pub fn snapshot(dump: &WholeModel, queries: &[(Query, Json)]) -> String {
    let mut tables = Map::new();
    for table in &dump.tables {
        let mut rows: Vec<&Vec<reel_model::Value>> = table.rows.iter().collect();
        rows.sort_by(|a, b| compare_rows(a, b));
        let rows = rows.iter().map(|row| table.row_json(row)).collect();
        tables.insert(table.name.clone(), Json::Array(rows));
    }
    let kv: Map<String, Json> = dump.kv.iter().map(|(k, v)| (k.clone(), kv_json(v))).collect();
    let mut top = Map::new();
    top.insert("tables".into(), Json::Object(tables));
    top.insert("kv".into(), Json::Object(kv));
    if !queries.is_empty() {
        let answers = queries
            .iter()
            .map(|(query, answer)| {
                let args = query.args.as_deref().map_or(Json::Null, |a| serde_json::from_str(a).unwrap_or(Json::Null));
                serde_json::json!({ "query": query.name, "args": args, "answer": sorted(answer.clone()) })
            })
            .collect();
        top.insert("queries".into(), Json::Array(answers));
    }
    let mut text = serde_json::to_string_pretty(&Json::Object(top)).expect("JSON values serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DumpSink;
    use reel_model::Value;

    #[test]
    fn rows_are_sorted_and_values_written_as_the_checksum_sees_them() {
        let mut dump = WholeModel::default();
        dump.table("t", &["id".into(), "total".into(), "raw".into()]);
        dump.row(&[Value::Text("b".into()), Value::Real(2.0), Value::Null]);
        dump.row(&[Value::Text("a".into()), Value::Real(0.5), Value::Blob(vec![0, 255])]);
        dump.kv("k", br#"{"n": 1, "a": [{"z": 0, "y": 1}]}"#);
        dump.kv("raw", &[0xff]);
        let query = Query { name: "q".into(), args: Some("{\"x\":1}".into()) };
        let text = snapshot(&dump, &[(query, serde_json::json!([1]))]);
        let want = serde_json::json!({
            "tables": { "t": [
                { "id": "a", "total": 0.5, "raw": { "hex": "00ff" } },
                { "id": "b", "total": 2, "raw": null },
            ] },
            "kv": { "k": { "a": [{ "y": 1, "z": 0 }], "n": 1 }, "raw": { "hex": "ff" } },
            "queries": [{ "query": "q", "args": { "x": 1 }, "answer": [1] }],
        });
        assert_eq!(text, serde_json::to_string_pretty(&want).unwrap() + "\n");
    }
}
