//! A read model kept whole in memory, and its values as JSON: what `reel
//! test` writes as a snapshot (ADR 38) and what a shadow run compares (ADR
//! 48). Values as the checksum sees them (ADR 37): an integral real is its
//! integer, a blob is `{"hex": ...}`; a KV value is its JSON if it is JSON
//! (objects' keys sorted: languages write them in different orders), else
//! its text, else `{"hex": ...}`.

use std::cmp::Ordering;

use serde_json::Value as Json;

use reel_model::Value;

use super::{Checkpoint, DumpSink};

/// A [`DumpSink`] that keeps everything.
#[derive(Debug, Default)]
pub struct WholeModel {
    /// The checkpoint the read saw.
    pub checkpoint: Checkpoint,
    /// Tables by name.
    pub tables: Vec<WholeTable>,
    /// KV entries, in key order.
    pub kv: Vec<(String, Vec<u8>)>,
}

/// A table of a [`WholeModel`].
#[derive(Debug, Default)]
pub struct WholeTable {
    /// Its name.
    pub name: String,
    /// Its columns, in the table's order.
    pub columns: Vec<String>,
    /// Its primary key's columns (empty: none).
    pub key: Vec<String>,
    /// Its rows, values canonical (an integral real is its integer).
    pub rows: Vec<Vec<Value>>,
}

impl DumpSink for WholeModel {
    fn checkpoint(&mut self, checkpoint: Checkpoint) {
        self.checkpoint = checkpoint;
    }

    fn table(&mut self, name: &str, columns: &[String]) {
        self.tables.push(WholeTable { name: name.to_owned(), columns: columns.to_vec(), ..WholeTable::default() });
    }

    fn key(&mut self, columns: &[String]) {
        if let Some(table) = self.tables.last_mut() {
            table.key = columns.to_vec();
        }
    }

    fn row(&mut self, values: &[Value]) {
        if let Some(table) = self.tables.last_mut() {
            table.rows.push(values.iter().map(canonical).collect());
        }
    }

    fn kv(&mut self, key: &str, value: &[u8]) {
        self.kv.push((key.to_owned(), value.to_vec()));
    }
}

impl WholeTable {
    /// A row as a JSON object, columns in the table's order.
    pub fn row_json(&self, row: &[Value]) -> Json {
        Json::Object(self.columns.iter().cloned().zip(row.iter().map(value_json)).collect())
    }
}

/// An integral real an `i64` holds is that integer (ADR 37).
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Real(r) if r.fract() == 0.0 && *r >= -9.223_372_036_854_776e18 && *r < 9.223_372_036_854_776e18 => {
            Value::Integer(*r as i64)
        }
        other => other.clone(),
    }
}

/// A value as JSON: a blob is `{"hex": ...}`.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Blob(bytes) => serde_json::json!({ "hex": hex(bytes) }),
        other => other.to_json(),
    }
}

/// A KV value as JSON: its JSON if it is JSON, else its text, else
/// `{"hex": ...}`.
pub fn kv_json(bytes: &[u8]) -> Json {
    if let Ok(json) = serde_json::from_slice::<Json>(bytes) {
        return sorted(json);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Json::String(text.to_owned()),
        Err(_) => serde_json::json!({ "hex": hex(bytes) }),
    }
}

/// `json` with every object's keys in order.
pub fn sorted(json: Json) -> Json {
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
pub fn compare_rows(a: &[Value], b: &[Value]) -> Ordering {
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
