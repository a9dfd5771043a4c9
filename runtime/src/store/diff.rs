//! The differences between two read models read whole (ADR 48): rows by
//! primary key, KV entries by key, values as the checksum sees them (ADR
//! 37). A shadow run compares the serving version's read model with the
//! shadow's, both at the same position.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value as Json;

use reel_model::Value;

use super::whole::{WholeModel, WholeTable, compare_rows, kv_json};

/// One difference between the serving read model and the shadow's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// `row` (a table's row), `key` (a KV entry) or `table` (a table only
    /// one side has, or whose columns differ).
    pub kind: &'static str,
    /// The table, for `row` and `table`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Which row or entry: the primary key's columns and values (every
    /// column, for a table without one), or the KV key.
    #[serde(skip_serializing_if = "Json::is_null")]
    pub key: Json,
    /// `only_serving`, `only_shadow` or `changed`.
    pub change: &'static str,
    /// The serving version's row, value or columns (absent: none).
    pub serving: Option<Json>,
    /// The shadow's.
    pub shadow: Option<Json>,
}

/// The differences between `serving` and `shadow`: tables by name, then KV
/// entries; rows in the order of their keys' values, entries by key.
pub fn diff(serving: &WholeModel, shadow: &WholeModel) -> Vec<Difference> {
    let mut out = Vec::new();
    let theirs: BTreeMap<&str, &WholeTable> = shadow.tables.iter().map(|t| (t.name.as_str(), t)).collect();
    let ours: BTreeMap<&str, &WholeTable> = serving.tables.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut names: Vec<&str> = ours.keys().chain(theirs.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        tables(ours.get(name).copied(), theirs.get(name).copied(), &mut out);
    }
    keys(&serving.kv, &shadow.kv, &mut out);
    out
}

/// A table's differences: the table itself when one side lacks it or the
/// columns differ, then its rows.
fn tables(serving: Option<&WholeTable>, shadow: Option<&WholeTable>, out: &mut Vec<Difference>) {
    let empty = WholeTable::default();
    let name = serving.or(shadow).map(|t| t.name.clone()).unwrap_or_default();
    let columns = |t: &WholeTable| Json::from(t.columns.clone());
    let table = |change, serving: Option<&WholeTable>, shadow: Option<&WholeTable>| Difference {
        kind: "table",
        table: Some(name.clone()),
        key: Json::Null,
        change,
        serving: serving.map(columns),
        shadow: shadow.map(columns),
    };
    match (serving, shadow) {
        (Some(_), None) => out.push(table("only_serving", serving, None)),
        (None, Some(_)) => out.push(table("only_shadow", None, shadow)),
        (Some(a), Some(b)) if a.columns != b.columns => out.push(table("changed", serving, shadow)),
        _ => {}
    }
    rows(serving.unwrap_or(&empty), shadow.unwrap_or(&empty), &name, out);
}

/// Rows keyed by the primary key both sides share, else by all their
/// columns (then a row only differs by being on one side, and a row held
/// twice counts twice).
fn rows(serving: &WholeTable, shadow: &WholeTable, name: &str, out: &mut Vec<Difference>) {
    let key: Vec<String> = if !serving.key.is_empty() && (shadow.key == serving.key || shadow.columns.is_empty()) {
        serving.key.clone()
    } else if !shadow.key.is_empty() && serving.columns.is_empty() {
        shadow.key.clone()
    } else {
        // No key in common: every column both sides have.
        let columns = if serving.columns.is_empty() { &shadow.columns } else { &serving.columns };
        columns.iter().filter(|c| shadow.columns.is_empty() || shadow.columns.contains(c)).cloned().collect()
    };
    let key_of = |table: &WholeTable, row: &[Value]| -> Vec<Value> {
        key.iter().map(|k| table.columns.iter().position(|c| c == k).map_or(Value::Null, |i| row[i].clone())).collect()
    };
    let mut theirs: HashMap<String, Vec<&Vec<Value>>> = HashMap::new();
    for row in &shadow.rows {
        theirs.entry(identity(&key_of(shadow, row))).or_default().push(row);
    }
    let mut found = Vec::new();
    for row in &serving.rows {
        let values = key_of(serving, row);
        let ours = serving.row_json(row);
        let matched = theirs.get_mut(&identity(&values)).and_then(Vec::pop);
        match matched {
            None => found.push((values, "only_serving", Some(ours), None)),
            Some(other) => {
                let other = shadow.row_json(other);
                if other != ours {
                    found.push((values, "changed", Some(ours), Some(other)));
                }
            }
        }
    }
    for rows in theirs.into_values() {
        for row in rows {
            found.push((key_of(shadow, row), "only_shadow", None, Some(shadow.row_json(row))));
        }
    }
    found.sort_by(|a, b| compare_rows(&a.0, &b.0).then_with(|| a.1.cmp(b.1)));
    out.extend(found.into_iter().map(|(values, change, serving, shadow)| Difference {
        kind: "row",
        table: Some(name.to_owned()),
        key: Json::Object(key.iter().cloned().zip(values.iter().map(super::whole::value_json)).collect()),
        change,
        serving,
        shadow,
    }));
}

/// A key's values as one string: equal exactly when the values are.
fn identity(values: &[Value]) -> String {
    serde_json::to_string(&values.iter().map(super::whole::value_json).collect::<Vec<_>>()).unwrap_or_default()
        + &values.iter().map(|v| tag(v).to_string()).collect::<String>()
}

/// The kind of a value, so text `"1"` and the integer 1 stay apart.
fn tag(value: &Value) -> char {
    match value {
        Value::Null => 'n',
        Value::Integer(_) => 'i',
        Value::Real(_) => 'r',
        Value::Text(_) => 't',
        Value::Blob(_) => 'b',
    }
}

/// KV entries: both lists are in key order, merged.
fn keys(serving: &[(String, Vec<u8>)], shadow: &[(String, Vec<u8>)], out: &mut Vec<Difference>) {
    let entry = |key: &str, change, a: Option<&[u8]>, b: Option<&[u8]>| Difference {
        kind: "key",
        table: None,
        key: Json::String(key.to_owned()),
        change,
        serving: a.map(kv_json),
        shadow: b.map(kv_json),
    };
    let (mut a, mut b) = (serving.iter().peekable(), shadow.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some((ka, va)), Some((kb, vb))) if ka == kb => {
                if va != vb {
                    out.push(entry(ka, "changed", Some(va), Some(vb)));
                }
                a.next();
                b.next();
            }
            (Some((ka, va)), Some((kb, _))) if ka.as_bytes() < kb.as_bytes() => {
                out.push(entry(ka, "only_serving", Some(va), None));
                a.next();
            }
            (Some((ka, va)), None) => {
                out.push(entry(ka, "only_serving", Some(va), None));
                a.next();
            }
            (_, Some((kb, vb))) => {
                out.push(entry(kb, "only_shadow", None, Some(vb)));
                b.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DumpSink;

    fn model(rows: &[(&str, &str)], kv: &[(&str, &str)]) -> WholeModel {
        let mut m = WholeModel::default();
        m.table("orders", &["id".into(), "status".into()]);
        m.key(&["id".into()]);
        for (id, status) in rows {
            m.row(&[Value::Text((*id).into()), Value::Text((*status).into())]);
        }
        for (k, v) in kv {
            m.kv(k, v.as_bytes());
        }
        m
    }

    #[test]
    fn rows_are_matched_by_key_and_entries_by_key() {
        let a = model(&[("o-1", "placed"), ("o-2", "cancelled"), ("o-3", "shipped")], &[("a", "1"), ("b", "2")]);
        let b = model(&[("o-3", "shipped"), ("o-2", "canceled"), ("o-4", "placed")], &[("b", "3"), ("c", "4")]);
        let found: Vec<(&str, &str, String)> =
            diff(&a, &b).iter().map(|d| (d.kind, d.change, d.key.to_string())).collect();
        assert_eq!(
            found,
            [
                ("row", "only_serving", r#"{"id":"o-1"}"#.to_owned()),
                ("row", "changed", r#"{"id":"o-2"}"#.to_owned()),
                ("row", "only_shadow", r#"{"id":"o-4"}"#.to_owned()),
                ("key", "only_serving", r#""a""#.to_owned()),
                ("key", "changed", r#""b""#.to_owned()),
                ("key", "only_shadow", r#""c""#.to_owned()),
            ]
        );
        let changed = &diff(&a, &b)[1];
        assert_eq!(changed.serving, Some(serde_json::json!({ "id": "o-2", "status": "cancelled" })));
        assert_eq!(changed.shadow, Some(serde_json::json!({ "id": "o-2", "status": "canceled" })));
        assert!(
            diff(&a, &model(&[("o-3", "shipped"), ("o-1", "placed"), ("o-2", "cancelled")], &[("a", "1"), ("b", "2")]))
                .is_empty()
        );
    }

    #[test]
    fn an_integral_real_is_its_integer_and_text_is_not_a_number() {
        let one = |v: Value| {
            let mut m = WholeModel::default();
            m.table("t", &["v".into()]);
            m.row(&[v]);
            m
        };
        assert!(diff(&one(Value::Real(3.0)), &one(Value::Integer(3))).is_empty());
        assert_eq!(diff(&one(Value::Text("3".into())), &one(Value::Integer(3))).len(), 2);
    }
}
