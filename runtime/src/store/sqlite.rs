//! Embedded read models: one SQLite file per namespace,
//! `{data_dir}/projections/{name}@{version}.db`.
//!
//! The projection's statements run under an authorizer: they cannot touch
//! reel's own tables (`_reel_*`), attach other files, change pragmas or
//! control the transaction. The file holds nothing of other projections or of
//! the events, so a projection sees only its own data.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};

use super::sql_text::{Checked, refusal, sqlite_placeholders};
use super::wal;
use super::writer::{self, Statement, Writer};
use super::{Checkpoint, DeadLetter, KvWrite, Namespace, NamespaceId, Rows, StoreError, TableRead, Value};
use crate::source::time::{format_micros, now_micros};
use crate::source::{Cursor, Event};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _reel_checkpoint (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    tx          INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    initialized INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
);
INSERT OR IGNORE INTO _reel_checkpoint (id, tx, position, initialized, updated_at) VALUES (1, 0, 0, 0, '');
CREATE TABLE IF NOT EXISTS _reel_kv (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _reel_dead_letters (
    position    INTEGER PRIMARY KEY,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    event_type  TEXT    NOT NULL,
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    occurred_at TEXT    NOT NULL,
    error       TEXT    NOT NULL,
    failed_at   TEXT    NOT NULL
);
";

/// Namespaces as files in one folder.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    dir: PathBuf,
}

impl SqliteStore {
    /// Store namespaces under `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(format!("creating {}: {e}", dir.display())))?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn path(&self, ns: &NamespaceId) -> PathBuf {
        self.dir.join(format!("{}.db", ns.slug()))
    }

    /// Whether the namespace's file exists.
    pub fn exists(&self, ns: &NamespaceId) -> bool {
        self.path(ns).exists()
    }

    /// Open a namespace (created when opening for writing); statements of
    /// a transaction are interrupted past `deadline`.
    pub fn open(&self, ns: &NamespaceId, read_only: bool, deadline: Duration) -> Result<SqliteNamespace, StoreError> {
        let path = self.path(ns);
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = Connection::open_with_flags(&path, flags).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        if read_only {
            conn.pragma_update(None, "cache_size", -16_384).map_err(db)?; // 16 MiB
        } else {
            // A rebuild dirties pages all over the B-trees (random keys), and
            // each commit writes every dirty page to the WAL: bigger pages
            // hold more of a batch's rows per page written, and a big cache
            // keeps them between batches (docs/benchmarks.md). The page size
            // only applies to a new file. Checkpoints copy the WAL into the
            // file on another thread, not inside a commit (store/wal.rs).
            conn.pragma_update(None, "page_size", 16_384).map_err(db)?;
            conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
            conn.pragma_update(None, "cache_size", -262_144).map_err(db)?; // 256 MiB
            conn.execute_batch(SCHEMA).map_err(db)?;
            // Checkpoints run on a thread of their own (store/wal.rs).
            conn.wal_hook(Some(wal::note_wal_pages));
        }
        conn.set_prepared_statement_cache_capacity(256);
        let guest = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&guest);
        conn.authorizer(Some(
            move |ctx: AuthContext<'_>| {
                if flag.load(Ordering::Relaxed) { authorize_guest(&ctx) } else { Authorization::Allow }
            },
        ))
        .map_err(db)?;
        // The CPU deadline of the guest does not reach into SQLite: a
        // progress handler interrupts a statement past the batch's deadline.
        let interrupt_at = Arc::new(Mutex::new(None::<Instant>));
        let at = Arc::clone(&interrupt_at);
        conn.progress_handler(
            10_000,
            Some(move || at.lock().is_ok_and(|at| at.is_some_and(|at| Instant::now() >= at))),
        )
        .map_err(db)?;
        Ok(SqliteNamespace {
            checkpointer: None,
            path,
            home: Some(conn),
            writer: None,
            pending: Vec::new(),
            guest,
            read_only,
            in_tx: false,
            failed: None,
            checked: Checked::default(),
            deadline,
            interrupt_at,
        })
    }

    /// Delete a namespace's files.
    pub fn drop_namespace(&self, ns: &NamespaceId) -> Result<(), StoreError> {
        let path = self.path(ns);
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Database(format!("removing {}: {e}", file.display()))),
            }
        }
        Ok(())
    }

    /// Namespaces found in the folder.
    pub fn namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| StoreError::Database(format!("{}: {e}", self.dir.display())))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(ns) = file.strip_suffix(".db").and_then(NamespaceId::from_slug) {
                found.push(ns);
            }
        }
        found.sort_by(|a, b| (&a.name, &a.version, a.generation).cmp(&(&b.name, &b.version, b.generation)));
        Ok(found)
    }

    fn registry(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(self.dir.join("reel.db")).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS active_namespaces (name TEXT PRIMARY KEY, slug TEXT NOT NULL)")
            .map_err(db)?;
        Ok(conn)
    }

    /// The namespace serving reads of each projection.
    pub fn active_namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
        let conn = self.registry()?;
        let mut stmt = conn.prepare("SELECT slug FROM active_namespaces ORDER BY name").map_err(db)?;
        let slugs: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(db)?.collect::<Result<_, _>>().map_err(db)?;
        Ok(slugs.iter().filter_map(|s| NamespaceId::from_slug(s)).collect())
    }

    /// Record the namespace serving reads of its projection.
    pub fn set_active(&self, ns: &NamespaceId) -> Result<(), StoreError> {
        self.registry()?
            .execute(
                "INSERT INTO active_namespaces (name, slug) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET slug = excluded.slug",
                params![ns.name, ns.slug()],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Forget a projection.
    pub fn forget(&self, name: &str) -> Result<(), StoreError> {
        self.registry()?.execute("DELETE FROM active_namespaces WHERE name = ?1", [name]).map_err(db)?;
        Ok(())
    }
}

/// The authorizer for projection statements.
fn authorize_guest(ctx: &AuthContext<'_>) -> Authorization {
    let reserved = |table: &str| {
        let t = table.to_ascii_lowercase();
        t.starts_with("_reel_") || (t.starts_with("sqlite_") && t != "sqlite_master" && t != "sqlite_schema")
    };
    match ctx.action {
        AuthAction::Attach { .. }
        | AuthAction::Detach { .. }
        | AuthAction::Pragma { .. }
        | AuthAction::Transaction { .. }
        | AuthAction::Savepoint { .. } => Authorization::Deny,
        AuthAction::Read { table_name, .. } if table_name.eq_ignore_ascii_case("sqlite_master") => Authorization::Allow,
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::CreateTable { table_name }
        | AuthAction::CreateTempTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::DropTempTable { table_name }
        | AuthAction::AlterTable { table_name, .. }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::CreateTempIndex { table_name, .. }
        | AuthAction::DropIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
        | AuthAction::CreateTempTrigger { table_name, .. }
        | AuthAction::DropTrigger { table_name, .. }
        | AuthAction::CreateVtable { table_name, .. }
        | AuthAction::DropVtable { table_name, .. }
        | AuthAction::Analyze { table_name }
            if reserved(table_name) =>
        {
            Authorization::Deny
        }
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

/// One namespace through one connection.
pub struct SqliteNamespace {
    /// Started at the first checkpoint; declared before `home` so that it
    /// is closed first.
    checkpointer: Option<wal::Checkpointer>,
    path: PathBuf,
    /// The connection, unless it is on the writer's thread.
    home: Option<Connection>,
    /// Runs a big batch's statements alongside the guest (store/writer.rs).
    writer: Option<Writer>,
    /// Statements of this transaction not yet run.
    pending: Vec<Statement>,
    /// True while a projection's statement is prepared or stepped: the
    /// authorizer applies only then.
    guest: Arc<AtomicBool>,
    read_only: bool,
    in_tx: bool,
    /// The first failed `execute` of this transaction; later statements are
    /// not run (as on PostgreSQL, where the transaction is aborted).
    failed: Option<StoreError>,
    /// Projection statements already checked, with SQLite placeholders.
    checked: Checked<Arc<str>>,
    /// How long a transaction's statements may run.
    deadline: Duration,
    /// When the progress handler interrupts (set during a transaction).
    interrupt_at: Arc<Mutex<Option<Instant>>>,
}

/// An error of reel's own statements. The deadline interrupts them too (a
/// batch's KV writes and checkpoint, a table read over HTTP): that is the
/// limit, not an outage of the database.
fn db(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::OperationInterrupted => sql_error(e),
        e => StoreError::Database(e.to_string()),
    }
}

/// A projection statement's error: the database's code and message.
fn sql_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(err, _) if err.code == rusqlite::ErrorCode::OperationInterrupted => {
            StoreError::Deadline("the statement ran past its deadline and was interrupted".into())
        }
        rusqlite::Error::SqliteFailure(err, message) => StoreError::Sql {
            code: result_code_name(err.extended_code),
            message: message.unwrap_or_else(|| err.to_string()),
        },
        rusqlite::Error::MultipleStatement => {
            StoreError::Refused("one statement per call: split the text at `;` into several calls".into())
        }
        other => StoreError::Sql { code: "SQLITE_MISUSE".into(), message: other.to_string() },
    }
}

fn result_code_name(code: i32) -> String {
    use rusqlite::ffi::*;
    let name = match code {
        SQLITE_CONSTRAINT_UNIQUE => "SQLITE_CONSTRAINT_UNIQUE",
        SQLITE_CONSTRAINT_PRIMARYKEY => "SQLITE_CONSTRAINT_PRIMARYKEY",
        SQLITE_CONSTRAINT_NOTNULL => "SQLITE_CONSTRAINT_NOTNULL",
        SQLITE_CONSTRAINT_FOREIGNKEY => "SQLITE_CONSTRAINT_FOREIGNKEY",
        SQLITE_CONSTRAINT_CHECK => "SQLITE_CONSTRAINT_CHECK",
        SQLITE_AUTH => "SQLITE_AUTH",
        SQLITE_READONLY => "SQLITE_READONLY",
        SQLITE_BUSY => "SQLITE_BUSY",
        SQLITE_FULL => "SQLITE_FULL",
        SQLITE_TOOBIG => "SQLITE_TOOBIG",
        SQLITE_MISMATCH => "SQLITE_MISMATCH",
        SQLITE_RANGE => "SQLITE_RANGE",
        SQLITE_ERROR => "SQLITE_ERROR",
        _ => return format!("SQLITE_{code}"),
    };
    name.to_owned()
}

/// Run `f` on `conn` as a projection statement: `guest` switches the
/// authorizer on for the time of it (on whichever thread holds `conn`).
pub(super) fn as_guest<T>(
    conn: &Connection,
    guest: &AtomicBool,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    guest.store(true, Ordering::Relaxed);
    let result = f(conn);
    guest.store(false, Ordering::Relaxed);
    result.map_err(sql_error)
}

/// A [`Value`] as a SQLite parameter.
pub(super) struct Param<'a>(pub(super) &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn to_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(crate::text::lossy(t)),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The smallest string greater than every string starting with `prefix`
/// (`None` if there is none, i.e. the prefix is empty).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=0x10FFFF).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
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
        } else if pages >= wal::BACKGROUND_PAGES {
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

impl Namespace for SqliteNamespace {
    fn dialect(&self) -> &'static str {
        "sqlite"
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, StoreError> {
        self.conn()?
            .query_row("SELECT tx, position, initialized FROM _reel_checkpoint WHERE id = 1", [], |r| {
                Ok(Checkpoint { cursor: Cursor { tx: r.get(0)?, id: r.get(1)? }, initialized: r.get(2)? })
            })
            .map_err(db)
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        let sql = if self.read_only { "BEGIN DEFERRED" } else { "BEGIN IMMEDIATE" };
        self.conn()?.execute_batch(sql).map_err(db)?;
        self.in_tx = true;
        self.failed = None;
        self.interrupt(Some(Instant::now() + self.deadline));
        Ok(())
    }

    fn commit(&mut self, from: Cursor, to: Cursor) -> Result<(), StoreError> {
        self.settle()?;
        if let Some(failed) = self.failed.take() {
            return Err(failed);
        }
        if !self.read_only {
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
        self.conn()?.execute_batch("COMMIT").map_err(db)?;
        self.in_tx = false;
        self.interrupt(None);
        if !self.read_only {
            self.after_commit();
        }
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
        let upper = prefix_upper_bound(prefix);
        let lower = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        let strict = after.is_some_and(|a| a >= prefix);
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

    fn kv_write(&mut self, writes: &[KvWrite<'_>]) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let mut upsert = conn
            .prepare_cached(
                "INSERT INTO _reel_kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .map_err(db)?;
        let mut delete = conn.prepare_cached("DELETE FROM _reel_kv WHERE key = ?1").map_err(db)?;
        // New keys are upserted too: the plain insert is PostgreSQL's saving.
        for w in writes {
            match w.value {
                Some(value) => upsert.execute(params![w.key, value]),
                None => delete.execute([w.key]),
            }
            .map_err(db)?;
        }
        Ok(())
    }

    fn kv_is_empty(&mut self) -> Result<bool, StoreError> {
        self.conn()?.query_row("SELECT NOT EXISTS (SELECT 1 FROM _reel_kv)", [], |r| r.get(0)).map_err(db)
    }

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

    fn query(&mut self, statement: &str, params: Vec<Value>, max_rows: usize) -> Result<Rows, StoreError> {
        let statement = self.check(statement)?;
        self.settle()?;
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        let read_only = self.read_only;
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
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                if out.len() == max_rows {
                    return Ok(Err(max_rows));
                }
                out.push((0..width).map(|i| row.get_ref(i).map(to_value)).collect::<Result<Vec<_>, _>>()?);
            }
            Ok(Ok(Rows { columns, rows: out }))
        });
        match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(max)) => {
                let e = StoreError::Limit(format!("query returned more than {max} rows (the row limit)"));
                self.failed = Some(e.clone());
                Err(e)
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.settle()?;
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn read_table(&mut self, read: &TableRead) -> Result<Rows, StoreError> {
        // Past the read's deadline the progress handler interrupts it (a view
        // can run for ever; a filter on a column without an index scans the table).
        self.bounded(|ns| {
            let columns = table_columns(ns.conn()?, &read.table)?;
            let (sql, values) = read.statement(&columns, "?")?;
            let mut stmt = ns.conn()?.prepare(&sql).map_err(db)?;
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

    fn dead_letter(&mut self, event: &Event, error: &str) -> Result<(), StoreError> {
        self.conn()?
            .prepare_cached(
                "INSERT OR REPLACE INTO _reel_dead_letters \
                 (position, stream_id, version, event_type, data, metadata, occurred_at, error, failed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    event.position,
                    event.stream_id,
                    event.version,
                    event.event_type,
                    event.data,
                    event.metadata,
                    event.occurred_at,
                    error,
                    format_micros(now_micros()),
                ])
            })
            .map_err(db)?;
        Ok(())
    }

    fn dead_letters(&mut self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = self
            .conn()?
            .prepare_cached(
                "SELECT position, stream_id, version, event_type, data, metadata, occurred_at, error, failed_at \
                 FROM _reel_dead_letters WHERE position > ?1 ORDER BY position LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok(DeadLetter {
                    position: r.get(0)?,
                    stream_id: r.get(1)?,
                    version: r.get(2)?,
                    event_type: r.get(3)?,
                    data: r.get(4)?,
                    metadata: r.get(5)?,
                    occurred_at: r.get(6)?,
                    error: r.get(7)?,
                    failed_at: r.get(8)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn remove_dead_letter(&mut self, position: i64) -> Result<bool, StoreError> {
        let removed = self
            .conn()?
            .prepare_cached("DELETE FROM _reel_dead_letters WHERE position = ?1")
            .and_then(|mut s| s.execute([position]))
            .map_err(db)?;
        Ok(removed == 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds_cover_exactly_the_prefixed_keys() {
        assert_eq!(prefix_upper_bound("customer/"), Some("customer0".into()));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("a\u{10FFFF}"), Some("b".into()));
    }

    #[test]
    fn slugs_round_trip() {
        let ns = NamespaceId::new("orders", "2 beta/1+g");
        let slug = ns.slug();
        assert_eq!(slug, "orders@2~20beta~2f1~2bg");
        assert_eq!(NamespaceId::from_slug(&slug).unwrap(), ns);
        let next = ns.next_generation();
        assert_eq!(next.slug(), "orders@2~20beta~2f1~2bg+g1");
        assert_eq!(NamespaceId::from_slug(&next.slug()).unwrap(), next);
    }
}
