//! A SQLite namespace read whole, in one read transaction (ADR 37).

use rusqlite::Connection;

use super::{SqliteNamespace, table_columns};
use crate::sqlite::convert::{db, to_value};
use crate::store::{DumpSink, Dumps, Snapshot, StoreError};

impl Dumps for SqliteNamespace {
    fn dump(&mut self, sink: &mut dyn DumpSink) -> Result<(), StoreError> {
        if self.in_tx {
            return Err(StoreError::Database("a namespace is read whole outside a transaction".into()));
        }
        // A deferred transaction takes its snapshot at its first read, the
        // checkpoint's; under WAL the worker's commits do not touch it.
        self.begin()?;
        let result = self.checkpoint().and_then(|checkpoint| {
            sink.checkpoint(checkpoint);
            walk(self.conn()?, sink)
        });
        let ended = self.rollback();
        result.and(ended)
    }
}

/// Every table (by name, bytewise) and its rows, then the KV entries.
fn walk(conn: &Connection, sink: &mut dyn DumpSink) -> Result<(), StoreError> {
    let mut tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_reel\\_%' ESCAPE '\\' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(db)?;
    tables.sort_unstable();
    for table in &tables {
        let columns = table_columns(conn, table)?;
        sink.table(table, &columns);
        let key: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")
            .and_then(|mut s| s.query_map([table], |r| r.get(0))?.collect())
            .map_err(db)?;
        if !key.is_empty() {
            sink.key(&key);
        }
        let quoted: Vec<String> = columns.iter().map(|c| crate::store::sql_text::quote_ident(c)).collect();
        let sql = format!("SELECT {} FROM {}", quoted.join(", "), crate::store::sql_text::quote_ident(table));
        let mut stmt = conn.prepare(&sql).map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        let mut values = Vec::with_capacity(columns.len());
        while let Some(row) = rows.next().map_err(db)? {
            values.clear();
            for i in 0..columns.len() {
                values.push(row.get_ref(i).map(to_value).map_err(db)?);
            }
            sink.row(&values);
        }
    }
    let mut stmt = conn.prepare("SELECT key, value FROM _reel_kv ORDER BY key").map_err(db)?;
    let mut rows = stmt.query([]).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let key: String = row.get(0).map_err(db)?;
        let value: Vec<u8> = row.get(1).map_err(db)?;
        sink.kv(&key, &value);
    }
    Ok(())
}
