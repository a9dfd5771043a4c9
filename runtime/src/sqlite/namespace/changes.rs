//! Change capture on SQLite (ADR 28). Triggers reel installs on the writer's
//! connection (`TEMP`: they live in the connection, not in the file, and see
//! tables `WITHOUT ROWID` as well as the others) note each key a batch's
//! statements touch, and whether it was first inserted, in a temporary
//! table; the commit reads, for each key, what the batch left (the whole
//! row, or nothing: a delete) with the same conversion as table reads, and
//! writes it to `_reel_changes` stamped with the batch's cursor, in the
//! batch's transaction. A rolled-back batch leaves nothing noted.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use reel_model::time::now_micros;
use reel_model::{Cursor, Value};

use super::SqliteNamespace;
use crate::sqlite::convert::{db, to_value};
use crate::store::sql_text::quote_ident;
use crate::store::{Change, ChangePage, ChangeReads, StoreError};

/// Most primary-key columns of a table whose changes are captured.
const MAX_KEY_COLUMNS: usize = 8;

/// The keys a batch touched (in the connection's temporary schema).
const TOUCHED: &str = "CREATE TEMP TABLE IF NOT EXISTS _reel_touched \
    (tbl TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, k0, k1, k2, k3, k4, k5, k6, k7, PRIMARY KEY (tbl, key))";

/// Watch every table of the file that has a primary key, and reel's KV
/// table, that is not watched yet: after opening and after each schema
/// change of the projection's (a trigger is gone with its table).
pub(in crate::sqlite) fn watch_tables(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TOUCHED)?;
    let tables: Vec<String> = conn
        .prepare_cached(
            "SELECT name FROM main.sqlite_master m WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND (name NOT LIKE '\\_reel\\_%' ESCAPE '\\' OR name = '_reel_kv') \
             AND sql NOT LIKE 'CREATE VIRTUAL%' \
             AND NOT EXISTS (SELECT 1 FROM temp.sqlite_master t WHERE t.type = 'trigger' AND t.name = '_reel_ci_' || m.name)",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for table in tables {
        let keys = key_columns(conn, &table)?;
        if keys.is_empty() || keys.len() > MAX_KEY_COLUMNS {
            tracing::debug!("table `{table}` has no primary key of at most {MAX_KEY_COLUMNS} columns: not captured");
            continue;
        }
        conn.execute_batch(&triggers(&table, &keys))?;
    }
    Ok(())
}

/// The primary-key columns of `table`, in key order.
fn key_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT name FROM pragma_table_info(?1, 'main') WHERE pk > 0 ORDER BY pk")?
        .query_map([table], |r| r.get(0))?
        .collect()
}

/// The three triggers of `table`: an insert notes its new key as inserted
/// (`i`), updates and deletes note old and new keys as existing (`u`); a key
/// keeps the first note of the batch.
fn triggers(table: &str, keys: &[String]) -> String {
    let literal = format!("'{}'", table.replace('\'', "''"));
    let columns: Vec<String> = (0..keys.len()).map(|i| format!("k{i}")).collect();
    let note = |row: &str, kind: &str| {
        let values: Vec<String> = keys.iter().map(|k| format!("{row}.{}", quote_ident(k))).collect();
        let text = values.iter().map(|v| format!("quote({v})")).collect::<Vec<_>>().join(" || ',' || ");
        // Not INSERT OR IGNORE: a statement's own ON CONFLICT overrides a
        // trigger's, and an upsert would fail on the second note of a key.
        format!(
            "INSERT INTO _reel_touched (tbl, key, kind, {columns}) SELECT {literal}, {text}, '{kind}', {values} \
             WHERE NOT EXISTS (SELECT 1 FROM _reel_touched WHERE tbl = {literal} AND key = {text});",
            columns = columns.join(", "),
            values = values.join(", "),
        )
    };
    let name = |op: &str| quote_ident(&format!("_reel_c{op}_{table}"));
    let on = format!("main.{}", quote_ident(table));
    format!(
        "CREATE TEMP TRIGGER IF NOT EXISTS {} AFTER INSERT ON {on} BEGIN {} END;
         CREATE TEMP TRIGGER IF NOT EXISTS {} AFTER UPDATE ON {on} BEGIN {} {} END;
         CREATE TEMP TRIGGER IF NOT EXISTS {} AFTER DELETE ON {on} BEGIN {} END;",
        name("i"),
        note("NEW", "i"),
        name("u"),
        note("OLD", "u"),
        note("NEW", "u"),
        name("d"),
        note("OLD", "u"),
    )
}

/// A table's columns and the `SELECT` of one row by its key.
struct Shape {
    columns: Vec<String>,
    keys: Vec<String>,
    select: String,
}

fn shape(conn: &Connection, table: &str) -> rusqlite::Result<Shape> {
    let columns: Vec<String> = conn
        .prepare_cached("SELECT name FROM pragma_table_info(?1, 'main') ORDER BY cid")?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let keys = key_columns(conn, table)?;
    let filter: Vec<String> =
        keys.iter().enumerate().map(|(i, k)| format!("{} IS ?{}", quote_ident(k), i + 1)).collect();
    let select = format!("SELECT * FROM main.{} WHERE {}", quote_ident(table), filter.join(" AND "));
    Ok(Shape { columns, keys, select })
}

/// Write what the batch left of each key it touched, stamped `to`, and
/// forget the keys.
pub(in crate::sqlite) fn record(conn: &Connection, to: Cursor) -> Result<(), StoreError> {
    let touched: Vec<(String, String, Vec<Value>)> = conn
        .prepare_cached("SELECT tbl, kind, k0, k1, k2, k3, k4, k5, k6, k7 FROM temp._reel_touched ORDER BY rowid")
        .and_then(|mut s| {
            s.query_map([], |r| {
                let values = (2..2 + MAX_KEY_COLUMNS).map(|i| r.get_ref(i).map(to_value)).collect::<Result<_, _>>()?;
                Ok((r.get(0)?, r.get(1)?, values))
            })?
            .collect::<Result<_, _>>()
        })
        .map_err(db)?;
    if touched.is_empty() {
        return Ok(());
    }
    let at = now_micros();
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO _reel_changes (tx, position, at, kind, tbl, key, row, value) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(db)?;
    let mut shapes: HashMap<String, Option<Shape>> = HashMap::new();
    for (table, first, key) in touched {
        if table == "_reel_kv" {
            let Value::Text(k) = &key[0] else { continue };
            let value: Option<Vec<u8>> = conn
                .prepare_cached("SELECT value FROM _reel_kv WHERE key = ?1")
                .and_then(|mut s| s.query_row([k], |r| r.get(0)).optional())
                .map_err(db)?;
            let kind = match (&value, first.as_str()) {
                (Some(_), _) => "set",
                (None, "i") => continue, // set and unset within the batch
                (None, _) => "unset",
            };
            insert.execute(params![to.tx, to.id, at, kind, None::<String>, k, None::<String>, value]).map_err(db)?;
            continue;
        }
        let shape = shapes.entry(table.clone()).or_insert_with(|| shape(conn, &table).ok());
        // A table the batch dropped again: its rows are not in the feed.
        let Some(shape) = shape.as_ref().filter(|s| !s.keys.is_empty()) else { continue };
        let key = &key[..shape.keys.len()];
        let Ok(mut select) = conn.prepare_cached(&shape.select) else { continue };
        let width = shape.columns.len();
        let row: Option<Vec<Value>> = select
            .query_row(rusqlite::params_from_iter(key.iter().map(crate::sqlite::convert::Param)), |r| {
                (0..width).map(|i| r.get_ref(i).map(to_value)).collect()
            })
            .optional()
            .map_err(db)?;
        let kind = match (&row, first.as_str()) {
            (Some(_), "i") => "insert",
            (Some(_), _) => "update",
            (None, "i") => continue, // inserted and deleted within the batch
            (None, _) => "delete",
        };
        let object = |names: &[String], values: &[Value]| {
            let map: serde_json::Map<String, serde_json::Value> =
                names.iter().cloned().zip(values.iter().map(Value::to_json)).collect();
            serde_json::Value::Object(map).to_string()
        };
        let key_json = object(&shape.keys, key);
        let row_json = row.as_ref().map(|row| object(&shape.columns, row));
        insert.execute(params![to.tx, to.id, at, kind, table, key_json, row_json, None::<Vec<u8>>]).map_err(db)?;
    }
    conn.execute("DELETE FROM temp._reel_touched", []).map_err(db)?;
    Ok(())
}

/// Drop changes from before `before` (Unix microseconds), noting how far.
fn prune(conn: &Connection, before: i64) -> Result<(), StoreError> {
    let through: Option<i64> = conn
        .prepare_cached("SELECT max(seq) FROM _reel_changes WHERE at < ?1")
        .and_then(|mut s| s.query_row([before], |r| r.get(0)))
        .map_err(db)?;
    if let Some(through) = through {
        conn.execute("DELETE FROM _reel_changes WHERE seq <= ?1", [through]).map_err(db)?;
        conn.execute(
            "INSERT INTO _reel_changes_pruned (id, through) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET through = max(through, excluded.through)",
            [through],
        )
        .map_err(db)?;
    }
    Ok(())
}

impl SqliteNamespace {
    /// In the batch's transaction, before the checkpoint moves to `to`: its
    /// changes, and now and then the pruning of old ones.
    pub(super) fn record_changes(&mut self, to: Cursor) -> Result<(), StoreError> {
        let Some(capture) = self.capture.as_mut() else { return Ok(()) };
        let prune_before = capture.prune_before();
        let conn = self.conn()?;
        record(conn, to)?;
        if let Some(before) = prune_before {
            prune(conn, before)?;
        }
        Ok(())
    }
}

impl ChangeReads for SqliteNamespace {
    fn changes(&mut self, after: i64, limit: usize) -> Result<ChangePage, StoreError> {
        let conn = self.conn()?;
        let page = conn.prepare_cached(
            "SELECT seq, tx, position, kind, tbl, key, row, value FROM _reel_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        );
        // A file from before change capture has no history.
        let Ok(mut page) = page else { return Ok(ChangePage::default()) };
        let changes = page
            .query_map(params![after, limit as i64], |r| {
                Ok(Change {
                    seq: r.get(0)?,
                    cursor: Cursor { tx: r.get(1)?, id: r.get(2)? },
                    kind: r.get(3)?,
                    table: r.get(4)?,
                    key: r.get(5)?,
                    row: r.get(6)?,
                    value: r.get(7)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db)?;
        drop(page);
        // Read after the page: a pruning in between shows here.
        let pruned_through: i64 = conn
            .query_row("SELECT coalesce((SELECT through FROM _reel_changes_pruned WHERE id = 1), 0)", [], |r| r.get(0))
            .map_err(db)?;
        let last: i64 = conn
            .query_row("SELECT coalesce(max(seq), ?1) FROM _reel_changes", [pruned_through], |r| r.get(0))
            .map_err(db)?;
        Ok(ChangePage { changes, pruned_through, last })
    }
}
