//! A read model as a snapshot's stable JSON: tables by name, each a list of
//! rows (objects, columns in the table's order) sorted by their values, then
//! the KV entries by key, then the queries' answers in the fixture's order.
//! Values as the checksum sees them (ADR 37): an integral real is its
//! integer, a blob is `{"hex": ...}`; a KV value is its JSON if it is JSON,
//! else its text, else `{"hex": ...}`. JSON from the module (KV values,
//! answers) has its objects' keys sorted: languages write them in different
//! orders, the snapshot holds the values.

use std::cmp::Ordering;

use serde_json::{Map, Value as Json};

use reel_model::Value;

use super::fixture::Query;
use crate::store::{Checkpoint, DumpSink};

/// A [`DumpSink`] that keeps everything, for a snapshot.
#[derive(Debug, Default)]
pub struct JsonDump {
    /// Tables by name: columns, rows.
    tables: Vec<(String, Vec<String>, Vec<Vec<Value>>)>,
    /// KV entries, in key order.
    kv: Vec<(String, Vec<u8>)>,
}

impl DumpSink for JsonDump {
    fn checkpoint(&mut self, _: Checkpoint) {}

    fn table(&mut self, name: &str, columns: &[String]) {
        self.tables.push((name.to_owned(), columns.to_vec(), Vec::new()));
    }

    fn row(&mut self, values: &[Value]) {
        if let Some((_, _, rows)) = self.tables.last_mut() {
            rows.push(values.iter().map(canonical).collect());
        }
    }

    fn kv(&mut self, key: &str, value: &[u8]) {
        self.kv.push((key.to_owned(), value.to_vec()));
    }
}

/// The snapshot's text: pretty JSON, two spaces, a newline at the end.
pub fn snapshot(dump: &JsonDump, queries: &[(Query, Json)]) -> String {
    let mut tables = Map::new();
    for (name, columns, rows) in &dump.tables {
        let mut rows = rows.clone();
        rows.sort_by(|a, b| compare_rows(a, b));
        let rows = rows
            .iter()
            .map(|row| Json::Object(columns.iter().cloned().zip(row.iter().map(value_json)).collect()))
            .collect();
        tables.insert(name.clone(), Json::Array(rows));
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

/// An integral real an `i64` holds is that integer (ADR 37).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Real(r) if r.fract() == 0.0 && *r >= -9.223_372_036_854_776e18 && *r < 9.223_372_036_854_776e18 => {
            Value::Integer(*r as i64)
        }
        other => other.clone(),
    }
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::Blob(bytes) => serde_json::json!({ "hex": hex(bytes) }),
        other => other.to_json(),
    }
}

fn kv_json(bytes: &[u8]) -> Json {
    if let Ok(json) = serde_json::from_slice::<Json>(bytes) {
        return sorted(json);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Json::String(text.to_owned()),
        Err(_) => serde_json::json!({ "hex": hex(bytes) }),
    }
}

/// `json` with every object's keys in order.
fn sorted(json: Json) -> Json {
    match json {
        Json::Object(map) => {
            let mut entries: Vec<(String, Json)> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows by their values, column by column: NULL, then numbers, text
/// (bytewise), blobs, as SQLite orders them.
fn compare_rows(a: &[Value], b: &[Value]) -> Ordering {
    a.iter().zip(b).map(|(x, y)| compare(x, y)).find(|o| o.is_ne()).unwrap_or(a.len().cmp(&b.len()))
}

fn compare(a: &Value, b: &Value) -> Ordering {
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Integer(_) | Value::Real(_) => 1,
        Value::Text(_) => 2,
        Value::Blob(_) => 3,
    };
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Integer(x), Value::Real(y)) => (*x as f64).total_cmp(y),
        (Value::Real(x), Value::Integer(y)) => x.total_cmp(&(*y as f64)),
        (Value::Real(x), Value::Real(y)) => x.total_cmp(y),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sorted_and_values_written_as_the_checksum_sees_them() {
        let mut dump = JsonDump::default();
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
