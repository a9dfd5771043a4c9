//! Change capture on SQLite (ADR 28). Triggers reel installs on the writer's
//! connection (`TEMP`: they live in the connection, not in the file, and see
//! tables `WITHOUT ROWID` as well as the others) note each key a batch's
//! statements touch, and whether it was first inserted, in a temporary
//! table; the commit reads, for each key, what the batch left (the whole
//! row, or nothing: a delete) with the same conversion as table reads, and
//! writes it to `_reel_changes` stamped with the batch's cursor, in the
//! batch's transaction. A rolled-back batch leaves nothing noted.
//!
//! Capture starts when the version first reaches the head of the log (ADR
//! 30): the triggers go on then, and a marker starts the history. A client
//! that needs the read model from empty gets it as a snapshot, read a step
//! at a time here.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use reel_model::time::now_micros;
use reel_model::{Cursor, Value};

use super::SqliteNamespace;
use crate::sqlite::convert::{Param, db, to_value};
use crate::store::sql_text::quote_ident;
use crate::store::{
    Change, ChangePage, ChangeReads, HistoryStart, START, START_EMPTY, SnapshotAt, SnapshotStep, StoreError,
};

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
            .query_row(rusqlite::params_from_iter(key.iter().map(Param)), |r| {
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
        let key_json = object(&shape.keys, key);
        let row_json = row.as_ref().map(|row| object(&shape.columns, row));
        insert.execute(params![to.tx, to.id, at, kind, table, key_json, row_json, None::<Vec<u8>>]).map_err(db)?;
    }
    conn.execute("DELETE FROM temp._reel_touched", []).map_err(db)?;
    Ok(())
}

/// A row (or a key) as a JSON object of `names`, as the feed sends it.
fn object(names: &[String], values: &[Value]) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        names.iter().cloned().zip(values.iter().map(Value::to_json)).collect();
    serde_json::Value::Object(map).to_string()
}

/// Whether capture has started in this file: its history has a row, or had.
pub(in crate::sqlite) fn capture_started(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM _reel_changes) OR EXISTS (SELECT 1 FROM _reel_changes_pruned)",
        [],
        |r| r.get(0),
    )
}

/// The tables a snapshot sends, in its order: `""` (the KV entries), then
/// each captured table (a primary key of at most 8 columns) by name.
fn snapshot_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let names: Vec<String> = conn
        .prepare_cached(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_reel\\_%' ESCAPE '\\' \
             AND sql NOT LIKE 'CREATE VIRTUAL%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut tables = vec![String::new()];
    for name in names {
        let keys = key_columns(conn, &name)?.len();
        if (1..=MAX_KEY_COLUMNS).contains(&keys) {
            tables.push(name);
        }
    }
    tables.sort();
    Ok(tables)
}

/// A key of a table as a snapshot point holds it: the values, tagged by
/// storage class (a real by its bits, a blob in hex), so that the next step
/// reads on from exactly there.
fn encode_key(values: &[Value]) -> String {
    let tagged: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => serde_json::json!({ "i": i }),
            Value::Real(f) => serde_json::json!({ "r": f.to_bits() }),
            Value::Text(t) => serde_json::json!({ "t": t }),
            Value::Blob(b) => serde_json::json!({ "b": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
        })
        .collect();
    serde_json::Value::Array(tagged).to_string()
}

fn decode_key(text: &str, width: usize) -> Result<Vec<Value>, StoreError> {
    let bad = || StoreError::Invalid("not a snapshot point reel handed out".into());
    let tagged: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|_| bad())?;
    if tagged.len() != width {
        return Err(bad());
    }
    tagged
        .iter()
        .map(|v| {
            if v.is_null() {
                return Ok(Value::Null);
            }
            let (tag, inner) = v.as_object().and_then(|o| o.iter().next()).ok_or_else(bad)?;
            Ok(match (tag.as_str(), inner) {
                ("i", serde_json::Value::Number(n)) => Value::Integer(n.as_i64().ok_or_else(bad)?),
                ("r", serde_json::Value::Number(n)) => Value::Real(f64::from_bits(n.as_u64().ok_or_else(bad)?)),
                ("t", serde_json::Value::String(t)) => Value::Text(t.clone()),
                ("b", serde_json::Value::String(h)) if h.len() % 2 == 0 => Value::Blob(
                    (0..h.len())
                        .step_by(2)
                        .map(|i| h.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok()))
                        .collect::<Option<_>>()
                        .ok_or_else(bad)?,
                ),
                _ => return Err(bad()),
            })
        })
        .collect()
}

/// The history's bounds: how far it is pruned, its last seq, where it starts.
fn bounds(conn: &Connection) -> Result<(i64, i64, HistoryStart), StoreError> {
    let pruned_through: i64 = conn
        .query_row("SELECT coalesce((SELECT through FROM _reel_changes_pruned WHERE id = 1), 0)", [], |r| r.get(0))
        .map_err(db)?;
    let last: i64 = conn
        .query_row("SELECT coalesce(max(seq), ?1) FROM _reel_changes", [pruned_through], |r| r.get(0))
        .map_err(db)?;
    let first: Option<(i64, String, String)> = conn
        .query_row("SELECT seq, kind, key FROM _reel_changes ORDER BY seq LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .map_err(db)?;
    let start = HistoryStart::of(first.as_ref().map(|(s, k, key)| (*s, k.as_str(), key.as_str())), pruned_through);
    Ok((pruned_through, last, start))
}

/// Up to `limit` changes after `after` (the start marker left out).
fn history(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
    let mut page = conn
        .prepare_cached(
            "SELECT seq, tx, position, kind, tbl, key, row, value FROM _reel_changes \
             WHERE seq > ?1 AND kind <> 'start' ORDER BY seq LIMIT ?2",
        )
        .map_err(db)?;
    page.query_map(params![after, limit as i64], |r| {
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
    .map_err(db)
}

/// Up to `limit` rows of the point's table (`""`: KV) after its key, as
/// `insert`s (`set`s) stamped `position`, each with its key as a point
/// holds it and whether it changed since the snapshot began (through
/// `through`): such a row goes to the client as its changes instead.
fn chunk(
    conn: &Connection,
    point: &SnapshotAt,
    limit: usize,
    position: Cursor,
    through: i64,
) -> Result<Vec<(Change, String, bool)>, StoreError> {
    let mut changed = conn
        .prepare_cached("SELECT 1 FROM _reel_changes WHERE tbl IS ?1 AND key = ?2 AND seq > ?3 AND seq <= ?4 LIMIT 1")
        .map_err(db)?;
    let mut is_changed =
        |table: Option<&str>, key: &str| changed.exists(params![table, key, point.from, through]).map_err(db);
    let mut out = Vec::new();
    if point.table.is_empty() {
        let mut select =
            conn.prepare_cached("SELECT key, value FROM _reel_kv WHERE key > ?1 ORDER BY key LIMIT ?2").map_err(db)?;
        let after = point.key.clone().unwrap_or_default();
        let entries: Vec<(String, Vec<u8>)> = select
            .query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(db)?;
        for (key, value) in entries {
            let changed = is_changed(None, &key)?;
            let change = Change {
                seq: 0,
                cursor: position,
                kind: "set".into(),
                table: None,
                key: key.clone(),
                row: None,
                value: Some(value),
            };
            out.push((change, key, changed));
        }
        return Ok(out);
    }
    let table = &point.table;
    let shape = shape(conn, table).map_err(db)?;
    let width = shape.keys.len();
    let positions: Vec<usize> =
        shape.keys.iter().map(|k| shape.columns.iter().position(|c| c == k).unwrap_or(0)).collect();
    let keys: Vec<String> = shape.keys.iter().map(|k| quote_ident(k)).collect();
    let order = keys.join(", ");
    let after = match &point.key {
        None => String::new(),
        Some(_) => {
            let marks: Vec<String> = (1..=width).map(|i| format!("?{i}")).collect();
            format!("WHERE ({order}) > ({})", marks.join(", "))
        }
    };
    let sql = format!("SELECT * FROM main.{} {after} ORDER BY {order} LIMIT {limit}", quote_ident(table));
    let params: Vec<Value> = match &point.key {
        None => Vec::new(),
        Some(key) => decode_key(key, width)?,
    };
    let mut select = conn.prepare_cached(&sql).map_err(db)?;
    let columns = select.column_count();
    let rows: Vec<Vec<Value>> = select
        .query_map(rusqlite::params_from_iter(params.iter().map(Param)), |r| {
            (0..columns).map(|i| r.get_ref(i).map(to_value)).collect()
        })
        .and_then(|rows| rows.collect::<Result<_, _>>())
        .map_err(db)?;
    for row in rows {
        let key: Vec<Value> = positions.iter().map(|&i| row[i].clone()).collect();
        let key_json = object(&shape.keys, &key);
        let changed = is_changed(Some(table), &key_json)?;
        let change = Change {
            seq: 0,
            cursor: position,
            kind: "insert".into(),
            table: Some(table.clone()),
            key: key_json,
            row: Some(object(&shape.columns, &row)),
            value: None,
        };
        out.push((change, encode_key(&key), changed));
    }
    Ok(out)
}

/// A step of the snapshot at `at` (see [`ChangeReads::snapshot`]), in the
/// read transaction the caller opened.
fn snapshot_step(conn: &Connection, at: &SnapshotAt, limit: usize) -> Result<SnapshotStep, StoreError> {
    let (pruned_through, last, _) = bounds(conn)?;
    let mut step = SnapshotStep { pruned_through, at: at.at, ..SnapshotStep::default() };
    let mut point = at.clone();
    let changes = history(conn, at.at, limit)?;
    let full = changes.len() == limit;
    for change in changes {
        point.at = change.seq;
        step.items.push((change, point.clone()));
    }
    if full {
        step.at = point.at;
        step.next = Some(point);
        return Ok(step);
    }
    // Every change through `last` is sent: rows read now are as of there.
    point.at = point.at.max(last);
    step.at = point.at;
    let position: Cursor = conn
        .query_row("SELECT tx, position FROM _reel_checkpoint WHERE id = 1", [], |r| {
            Ok(Cursor { tx: r.get(0)?, id: r.get(1)? })
        })
        .map_err(db)?;
    step.position = Some(position);
    let tables = snapshot_tables(conn).map_err(db)?;
    loop {
        // The point's table, or the next one (a table dropped meanwhile).
        let Some(table) = tables.iter().find(|t| **t >= point.table) else { return Ok(step) };
        if *table != point.table {
            (point.table, point.key) = (table.clone(), None);
        }
        let rows = chunk(conn, &point, limit, position, point.at)?;
        let read = rows.len();
        for (change, key, changed) in rows {
            point.key = Some(key);
            if !changed {
                step.items.push((change, point.clone()));
            }
        }
        if read == limit {
            step.next = Some(point);
            return Ok(step);
        }
        // The table is sent: the next one, in this step if this one had
        // nothing left.
        let Some(next) = tables.iter().find(|t| **t > point.table) else { return Ok(step) };
        (point.table, point.key) = (next.clone(), None);
        if read > 0 {
            step.next = Some(point);
            return Ok(step);
        }
    }
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
        let Some(capture) = self.capture.as_mut().filter(|c| c.started) else { return Ok(()) };
        let prune_before = capture.prune_before();
        let conn = self.conn()?;
        record(conn, to)?;
        if let Some(before) = prune_before {
            prune(conn, before)?;
        }
        Ok(())
    }
}

impl SqliteNamespace {
    /// Start capture (ADR 30), between batches, at checkpoint `at`: the
    /// triggers, and the marker the history starts with, saying whether
    /// the read model is empty, in a transaction of their own (none of it
    /// with `only_if_empty` on a read model that is not).
    pub(super) fn start_capture_here(&mut self, at: Cursor, only_if_empty: bool) -> Result<bool, StoreError> {
        if self.capture.is_none_or(|c| c.started) {
            return Ok(true);
        }
        let conn = self.conn()?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
        let started = (|| {
            let mut empty = true;
            for table in snapshot_tables(conn)? {
                let from =
                    if table.is_empty() { "_reel_kv".to_owned() } else { format!("main.{}", quote_ident(&table)) };
                empty &=
                    conn.query_row(&format!("SELECT NOT EXISTS (SELECT 1 FROM {from})"), [], |r| r.get::<_, bool>(0))?;
            }
            if only_if_empty && !empty {
                return Ok(None);
            }
            watch_tables(conn)?;
            let key = if empty { START_EMPTY } else { "snapshot" };
            conn.execute(
                "INSERT INTO _reel_changes (tx, position, at, kind, key) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![at.tx, at.id, now_micros(), START, key],
            )?;
            Ok::<_, rusqlite::Error>(Some(empty))
        })();
        let empty = match started {
            Ok(Some(empty)) => {
                conn.execute_batch("COMMIT").map_err(db)?;
                empty
            }
            Ok(None) => {
                conn.execute_batch("ROLLBACK").map_err(db)?;
                return Ok(false);
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(db(e));
            }
        };
        tracing::info!(path = %self.path.display(), empty, "change capture starts at {at}");
        if let Some(capture) = self.capture.as_mut() {
            capture.started = true;
        }
        self.guest.capture.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }
}

impl ChangeReads for SqliteNamespace {
    fn changes(&mut self, after: i64, limit: usize) -> Result<ChangePage, StoreError> {
        let conn = self.conn()?;
        // A file from before change capture has no history.
        if conn.prepare_cached("SELECT 1 FROM _reel_changes").is_err() {
            return Ok(ChangePage::default());
        }
        let changes = history(conn, after, limit)?;
        // Read after the page: a pruning in between shows here.
        let (pruned_through, last, start) = bounds(conn)?;
        Ok(ChangePage { changes, pruned_through, last, start })
    }

    fn snapshot(&mut self, at: &SnapshotAt, limit: usize) -> Result<SnapshotStep, StoreError> {
        self.bounded(|ns| {
            let conn = ns.conn()?;
            // One read transaction: the rows and the history's end agree.
            conn.execute_batch("BEGIN").map_err(db)?;
            let step = snapshot_step(conn, at, limit);
            let ended = conn.execute_batch("COMMIT").map_err(db);
            let step = step?;
            ended.map(|()| step)
        })
    }
}
