//! One SQLite namespace: its connection and the [`Namespace`] operations.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use reel_model::time::{format_micros, now_micros};
use reel_model::{Cursor, Rows, Value};

use super::writer::{self, Statement, Writer};
use super::{disk, wal};
use crate::store::sql_text::{Checked, refusal, sqlite_placeholders};
use crate::store::{
    Checkpoint, Commits, KvReads, KvWrite, KvWrites, Snapshot, SqlReads, SqlWrites, StoreError, TableRead, TableReads,
    scan_range,
};
use crate::store::{Emissions, Stored};

use super::convert::{Guest, Param, as_guest, db, to_value};

mod changes;
mod dead_letters;
mod dump;

pub(super) use changes::{capture_started, watch_tables};

/// One namespace through one connection.
pub struct SqliteNamespace {
    /// Started at the first checkpoint; declared before `home` so that it
    /// is closed first.
    pub(super) checkpointer: Option<wal::Checkpointer>,
    pub(super) path: PathBuf,
    /// The connection, unless it is on the writer's thread.
    pub(super) home: Option<Connection>,
    /// Runs a big batch's statements alongside the guest (store/writer.rs).
    pub(super) writer: Option<Writer>,
    /// Statements of this transaction not yet run.
    pub(super) pending: Vec<Statement>,
    /// True while a projection's statement is prepared or stepped: the
    /// authorizer applies only then.
    pub(super) guest: Arc<Guest>,
    pub(super) read_only: bool,
    pub(super) in_tx: bool,
    /// The first failed `execute` of this transaction; later statements are
    /// not run (as on PostgreSQL, where the transaction is aborted).
    pub(super) failed: Option<StoreError>,
    /// Projection statements already checked, with SQLite placeholders.
    pub(super) checked: Checked<Arc<str>>,
    /// How long a transaction's statements may run.
    pub(super) deadline: Duration,
    /// When the progress handler interrupts (set during a transaction).
    pub(super) interrupt_at: Arc<Mutex<Option<Instant>>>,
    /// The storage quota (`max_page_count` on a writer's connection).
    pub(super) storage_bytes: u64,
    /// Most bytes of one query's result.
    pub(super) result_bytes: usize,
    /// Change capture, when on for the projection (ADR 28).
    pub(super) capture: Option<crate::store::Capture>,
}

impl SqliteNamespace {
    /// Arm (or disarm) the statement deadline.
    fn interrupt(&self, at: Option<Instant>) {
        if let Ok(mut slot) = self.interrupt_at.lock() {
            *slot = at;
        }
    }

    /// Run a read under the deadline: a transaction's, or outside one (an
    /// HTTP read) a whole deadline of its own.
    fn bounded<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        if self.in_tx {
            return read(self);
        }
        self.interrupt(Some(Instant::now() + self.deadline));
        let result = read(self);
        self.interrupt(None);
        result
    }

    /// Run `f` with the authorizer on, as a projection statement.
    /// Call only once the queued statements have run ([`Self::settle`]).
    fn as_guest<T>(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.home.as_ref().ok_or_else(writer::lost)?;
        as_guest(conn, &self.guest, f)
    }

    /// The connection, once the statements queued so far have run (their
    /// first error is kept for the next query or the commit).
    fn conn(&mut self) -> Result<&Connection, StoreError> {
        self.settle()?;
        self.home.as_ref().ok_or_else(writer::lost)
    }

    /// Run the queued statements: wait for the writer thread if the
    /// connection is there, else run them here.
    fn settle(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.pending);
        // The connection is away exactly when the writer thread has it.
        match self.writer.as_mut().filter(|_| self.home.is_none()) {
            Some(writer) => {
                if !pending.is_empty() {
                    writer.run(None, pending)?;
                }
                let (conn, failed) = writer.give_back()?;
                self.home = Some(conn);
                if self.failed.is_none() {
                    self.failed = failed;
                }
            }
            None if !pending.is_empty() && self.failed.is_none() => {
                let conn = self.home.as_ref().ok_or_else(writer::lost)?;
                self.failed = writer::run(conn, &self.guest, &pending).err();
            }
            None => {}
        }
        Ok(())
    }

    /// Hand the queued statements to the writer thread, with the connection
    /// if it is here.
    fn ship(&mut self) -> Result<(), StoreError> {
        if self.writer.is_none() {
            self.writer = Some(Writer::start(Arc::clone(&self.guest))?);
        }
        let statements = std::mem::replace(&mut self.pending, Vec::with_capacity(writer::CHUNK));
        let writer = self.writer.as_mut().expect("started above");
        writer.run(self.home.take(), statements)
    }

    /// Keep the WAL bounded: past a threshold, a checkpoint on the
    /// checkpointer's thread; far past it, one here.
    fn after_commit(&mut self) {
        let pages = wal::take_wal_pages();
        if pages >= wal::FOREGROUND_PAGES {
            if let Some(conn) = self.home.as_ref() {
                wal::checkpoint_here(conn, &self.path);
            }
        } else if pages >= wal::MIN_BACKGROUND_PAGES
            && pages >= wal::background_pages(std::fs::metadata(&self.path).map_or(u64::MAX, |m| m.len()))
        {
            if self.checkpointer.is_none() {
                match wal::Checkpointer::start(&self.path) {
                    Ok(checkpointer) => self.checkpointer = Some(checkpointer),
                    Err(e) => tracing::warn!("no background checkpoints for {}: {e}", self.path.display()),
                }
            }
            if let Some(checkpointer) = &self.checkpointer {
                checkpointer.request();
            }
        }
    }

    /// A write SQLite could not make: the host's disk full or the data
    /// folder read-only (an outage: retried until it can write again, and
    /// named), else, for SQLITE_FULL on a writer, the storage quota
    /// (`max_page_count`) reached, the projection's doing (ADR 20, ADR 42).
    fn over_quota(&self, e: StoreError) -> StoreError {
        let message = match &e {
            StoreError::Sql { message, .. } | StoreError::Database(message) => message.clone(),
            _ => return e,
        };
        if !disk::cannot_write(&message) {
            return e;
        }
        let full = message.contains("database or disk is full");
        if let Some(why) = self.path.parent().and_then(disk::unwritable) {
            return StoreError::Database(format!("{why}: the batch waits and is retried ({message})"));
        }
        if !full || self.read_only {
            return e;
        }
        let size =
            |pragma: &str| -> Option<i64> { self.home.as_ref()?.pragma_query_value(None, pragma, |r| r.get(0)).ok() };
        let held = size("page_count")
            .zip(size("page_size"))
            .map_or(String::new(), |(n, page)| format!(": the read model holds {} MiB", (n * page) >> 20));
        StoreError::Limit(format!("storage quota of {} MiB reached (storage-mib){held}", self.storage_bytes >> 20))
    }

    /// Check a projection statement (once per distinct text) and return it
    /// with SQLite placeholders.
    fn check(&mut self, statement: &str) -> Result<Arc<str>, StoreError> {
        if !self.in_tx {
            return Err(StoreError::Database("statement outside a transaction".into()));
        }
        if let Some(rewritten) = self.checked.get(statement) {
            return Ok(Arc::clone(rewritten));
        }
        if let Some(why) = refusal(statement) {
            return Err(StoreError::Refused(why));
        }
        let rewritten: Arc<str> = Arc::from(sqlite_placeholders(statement));
        self.checked.remember(statement, Arc::clone(&rewritten));
        Ok(rewritten)
    }
}

impl Snapshot for SqliteNamespace {
    fn checkpoint(&mut self) -> Result<Checkpoint, StoreError> {
        self.conn()?
            .query_row("SELECT tx, position, initialized FROM _reel_checkpoint WHERE id = 1", [], |r| {
                Ok(Checkpoint { cursor: Cursor { tx: r.get(0)?, id: r.get(1)? }, initialized: r.get(2)? })
            })
            .map_err(db)
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        let sql = if self.read_only { "BEGIN DEFERRED" } else { "BEGIN IMMEDIATE" };
        let begun = self.conn()?.execute_batch(sql);
        begun.map_err(|e| self.over_quota(db(e)))?;
        self.in_tx = true;
        self.failed = None;
        self.interrupt(Some(Instant::now() + self.deadline));
        Ok(())
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.pending.clear();
        self.settle()?;
        self.failed = None;
        self.interrupt(None);
        if self.in_tx {
            self.in_tx = false;
            let conn = self.conn()?;
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK").map_err(db)?;
            }
        }
        Ok(())
    }
}

impl KvReads for SqliteNamespace {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn()?
            .prepare_cached("SELECT value FROM _reel_kv WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .map_err(db)
    }

    fn kv_scan(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (lower, strict, upper) = scan_range(prefix, after);
        let sql = match (strict, upper.is_some()) {
            (false, false) => "SELECT key, value FROM _reel_kv WHERE key >= ?1 ORDER BY key LIMIT ?3",
            (true, false) => "SELECT key, value FROM _reel_kv WHERE key > ?1 ORDER BY key LIMIT ?3",
            (false, true) => "SELECT key, value FROM _reel_kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
            (true, true) => "SELECT key, value FROM _reel_kv WHERE key > ?1 AND key < ?2 ORDER BY key LIMIT ?3",
        };
        let mut stmt = self.conn()?.prepare_cached(sql).map_err(db)?;
        let upper = upper.unwrap_or_default();
        let rows = stmt
            .query_map(params![lower, upper, limit as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }
}

impl SqlReads for SqliteNamespace {
    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    fn query(&mut self, statement: &str, params: Vec<Value>, max_rows: usize) -> Result<Rows, StoreError> {
        let statement = self.check(statement)?;
        self.settle()?;
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        let (read_only, result_bytes) = (self.read_only, self.result_bytes);
        let result = self.as_guest(|conn| {
            let mut stmt = conn.prepare_cached(&statement)?;
            if read_only && !stmt.readonly() {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                    Some("queries over HTTP are read-only".into()),
                ));
            }
            let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
            let width = columns.len();
            let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(Param)))?;
            let (mut out, mut bytes) = (Vec::new(), 0);
            while let Some(row) = rows.next()? {
                if out.len() == max_rows {
                    return Ok(Err(format!("query returned more than {max_rows} rows (the row limit)")));
                }
                let row = (0..width).map(|i| row.get_ref(i).map(to_value)).collect::<Result<Vec<_>, _>>()?;
                // Rows are bounded, and so are the bytes handed to the guest.
                bytes += row.iter().map(value_bytes).sum::<usize>();
                if bytes > result_bytes {
                    let mib = result_bytes >> 20;
                    return Ok(Err(format!("query result over {mib} MiB (the module's memory, memory-mib)")));
                }
                out.push(row);
            }
            Ok(Ok(Rows { columns, rows: out }))
        });
        if self.capture.is_some_and(|c| c.started) && crate::store::is_ddl(&statement) {
            let watched = self.conn().and_then(|conn| watch_tables(conn).map_err(db));
            if let Err(e) = watched {
                self.failed = Some(e.clone());
                return Err(e);
            }
        }
        match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(limit)) => {
                let e = StoreError::Limit(limit);
                self.failed = Some(e.clone());
                Err(e)
            }
            Err(e) => {
                let e = self.over_quota(e);
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }
}

impl TableReads for SqliteNamespace {
    fn read_table(&mut self, read: &TableRead) -> Result<Rows, StoreError> {
        // Past the read's deadline the progress handler interrupts it (a view
        // can run for ever; a filter on a column without an index scans the table).
        // Values bounded as for the projection's own SQL: a view it made runs here.
        let guest = Arc::clone(&self.guest);
        self.bounded(|ns| {
            let conn = ns.conn()?;
            guest.bounded(conn, || read_table(conn, read))
        })
    }

    fn tables(&mut self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn()?
            .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE '\\_reel\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
            .map_err(db)?;
        let names = stmt.query_map([], |r| r.get(0)).map_err(db)?;
        names.collect::<Result<_, _>>().map_err(db)
    }
}

/// A value's size, as the guest will hold it.
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        _ => 8,
    }
}

/// A table read over HTTP, on `conn`.
fn read_table(conn: &Connection, read: &TableRead) -> Result<Rows, StoreError> {
    let columns = table_columns(conn, &read.table)?;
    let (sql, values) = read.statement(&columns, "?")?;
    let mut stmt = conn.prepare(&sql).map_err(db)?;
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let width = names.len();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values.iter().map(Param)), |row| {
            (0..width).map(|i| row.get_ref(i).map(to_value)).collect::<Result<Vec<_>, _>>()
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    Ok(Rows { columns: names, rows })
}

impl SqlWrites for SqliteNamespace {
    fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::Refused("sql.execute is not allowed in a query: reads are read-only".into()));
        }
        let statement = self.check(statement)?;
        if self.failed.is_some() {
            return Ok(()); // the batch already failed; its error surfaces at the next query or the commit
        }
        self.pending.push((statement, params));
        if self.pending.len() >= writer::CHUNK {
            self.ship()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.settle()?;
        match &self.failed {
            Some(e) => Err(self.over_quota(e.clone())),
            None => Ok(()),
        }
    }
}

impl Commits for SqliteNamespace {
    fn start_capture(&mut self, at: Cursor, only_if_empty: bool) -> Result<bool, StoreError> {
        self.start_capture_here(at, only_if_empty)
    }

    fn commit(&mut self, from: Cursor, to: Cursor) -> Result<(), StoreError> {
        self.settle()?;
        if let Some(failed) = self.failed.take() {
            return Err(self.over_quota(failed));
        }
        if !self.read_only {
            self.record_changes(to)?;
            let moved = self
                .conn()?
                .prepare_cached(
                    "UPDATE _reel_checkpoint SET tx = ?1, position = ?2, initialized = 1, updated_at = ?3 \
                     WHERE id = 1 AND tx = ?4 AND position = ?5",
                )
                .and_then(|mut s| s.execute(params![to.tx, to.id, format_micros(now_micros()), from.tx, from.id]))
                .map_err(db)?;
            if moved != 1 {
                let found = self.checkpoint().ok().map(|c| c.cursor);
                return Err(StoreError::Fenced { expected: from, found });
            }
        }
        let committed = self.conn()?.execute_batch("COMMIT");
        committed.map_err(|e| self.over_quota(db(e)))?;
        self.in_tx = false;
        self.interrupt(None);
        if !self.read_only {
            self.after_commit();
        }
        Ok(())
    }

    /// The events file is another database: the batch's emissions wait in
    /// this namespace's outbox, committed with the checkpoint, until the
    /// worker forwards them (ADR 23).
    fn emit(&mut self, emissions: &Emissions, to: Cursor) -> Result<Stored, StoreError> {
        let text = serde_json::to_string(emissions).map_err(|e| StoreError::Database(e.to_string()))?;
        let conn = self.conn()?;
        conn.execute_batch(OUTBOX).map_err(db)?;
        let id = conn
            .prepare_cached("INSERT INTO _reel_outbox (handled, emissions) VALUES (?1, ?2) RETURNING id")
            .and_then(|mut s| s.query_row(params![to.id, text], |r| r.get(0)))
            .map_err(db)?;
        Ok(Stored::Outbox(id))
    }

    fn outbox(&mut self) -> Result<Vec<(i64, Cursor, Emissions)>, StoreError> {
        let conn = self.conn()?;
        conn.execute_batch(OUTBOX).map_err(db)?;
        let mut select =
            conn.prepare_cached("SELECT id, handled, emissions FROM _reel_outbox ORDER BY id").map_err(db)?;
        let rows = select
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db)?;
        rows.into_iter()
            .map(|(id, handled, text)| {
                let emissions = serde_json::from_str(&text).map_err(|e| StoreError::Database(e.to_string()))?;
                Ok((id, Cursor { tx: 0, id: handled }, emissions))
            })
            .collect()
    }

    fn outbox_done(&mut self, id: i64) -> Result<(), StoreError> {
        self.conn()?.execute("DELETE FROM _reel_outbox WHERE id <= ?1", [id]).map_err(db)?;
        Ok(())
    }
}

/// A reactor's outbox (in its namespace file).
const OUTBOX: &str = "CREATE TABLE IF NOT EXISTS _reel_outbox \
    (id INTEGER PRIMARY KEY, handled INTEGER NOT NULL, emissions TEXT NOT NULL)";

impl KvWrites for SqliteNamespace {
    fn kv_write(&mut self, writes: &[KvWrite<'_>]) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO _reel_kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .map_err(db)?;
        let mut delete = conn.prepare_cached("DELETE FROM _reel_kv WHERE key = ?1").map_err(db)?;
        // New keys are upserted too: the plain insert is PostgreSQL's saving.
        let written = writes.iter().try_for_each(|w| {
            match w.value {
                Some(value) => upsert.execute(params![w.key, value]),
                None => delete.execute([w.key]),
            }
            .map(drop)
        });
        drop((upsert, delete));
        written.map_err(|e| self.over_quota(db(e)))
    }

    fn kv_is_empty(&mut self) -> Result<bool, StoreError> {
        self.conn()?.query_row("SELECT NOT EXISTS (SELECT 1 FROM _reel_kv)", [], |r| r.get(0)).map_err(db)
    }
}

/// Columns of a projection's table; an error naming the tables if it has none.
fn table_columns(conn: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
    let reserved =
        table.to_ascii_lowercase().starts_with("_reel_") || table.to_ascii_lowercase().starts_with("sqlite_");
    let mut columns = Vec::new();
    if !reserved {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)").map_err(db)?;
        columns = stmt.query_map([table], |r| r.get(0)).map_err(db)?.collect::<Result<_, _>>().map_err(db)?;
    }
    if columns.is_empty() {
        return Err(StoreError::NotFound(format!("no table `{table}` in this projection")));
    }
    Ok(columns)
}
