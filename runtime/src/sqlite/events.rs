//! The embedded event log: `events.db`, SQLite in WAL mode.
//!
//! SQLite has one writer at a time and `AUTOINCREMENT` ids, so ids commit in
//! order and `id > cursor` never skips an event. Writers (reel's own append
//! and any other process) must use `BEGIN IMMEDIATE` transactions. Commits by
//! other processes are noticed within milliseconds (`PRAGMA data_version`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params_from_iter};
use sqlx::ConnectOptions;
use tokio::sync::watch;

use reel_model::time::{format_micros, now_micros};
use reel_model::{Cursor, Event};

use crate::source::{
    AppendRequest, Appended, Batch, EventLog, EventReader, Filter, LagCause, LogFuture, SinkHold, SourceError,
    TimersFired,
};
use reel_model::{Emissions, Forwarded};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a connection waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often another process's commits to `events.db` are looked for.
const WATCH_EVERY: Duration = Duration::from_millis(5);

/// The events database of embedded mode.
pub struct SqliteSource {
    pub(super) path: PathBuf,
    /// reel's own appends go through this one connection, one at a time.
    pub(super) writer: Arc<Mutex<Connection>>,
    /// Read-only connections kept between reads (at most
    /// [`IDLE_READERS`]): opening one costs more than most reads
    /// (`min_position` asks the head on every read).
    readers: Arc<Mutex<Vec<Connection>>>,
    pub(super) wake: watch::Sender<u64>,
    /// Stops the thread that watches for commits by other processes.
    watching: Arc<std::sync::atomic::AtomicBool>,
}

impl SqliteSource {
    /// Stop watching for other writers' commits.
    pub fn close(&self) {
        self.watching.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for SqliteSource {
    fn drop(&mut self) {
        self.close();
    }
}

/// Wake workers when another connection commits to `events.db`:
/// `PRAGMA data_version` changes then, and reading it costs no table access.
fn watch_commits(
    path: &Path,
    wake: watch::Sender<u64>,
    watching: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), SourceError> {
    let conn = open_connection(path, true)?;
    std::thread::Builder::new()
        .name("reel-events-watch".into())
        .spawn(move || {
            let mut last: Option<i64> = None;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(version) = conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)) {
                    if last.is_some_and(|l| l != version) {
                        wake.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    last = Some(version);
                }
                std::thread::sleep(WATCH_EVERY);
            }
        })
        .map_err(|e| SourceError::Internal(format!("spawning the events watcher: {e}")))?;
    Ok(())
}

impl SqliteSource {
    /// Open (creating and migrating if needed) the events database at `path`.
    pub async fn open(path: &Path) -> Result<Self, SourceError> {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        let mut conn = options.connect().await?;
        MIGRATIONS.run(&mut conn).await?;
        sqlx::Connection::close(conn).await?;

        let writer = open_connection(path, false)?;
        let (wake, _) = watch::channel(0);
        let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
        watch_commits(path, wake.clone(), Arc::clone(&watching))?;
        Ok(Self {
            path: path.to_owned(),
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::default(),
            wake,
            watching,
        })
    }

    /// A reader with its own connection.
    pub fn reader(&self) -> Result<SqliteReader, SourceError> {
        Ok(SqliteReader { conn: open_connection(&self.path, true)?, sql: None })
    }

    /// Changes after every append through reel.
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Append with an optimistic concurrency check.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, SourceError> {
        let writer = Arc::clone(&self.writer);
        let folder = self.path.parent().map(Path::to_owned).unwrap_or_default();
        let appended = tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            append_blocking(&mut conn, &request).map_err(|e| unwritable(e, &folder))
        })
        .await
        .map_err(|e| SourceError::Internal(e.to_string()))??;
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
        Ok(appended)
    }

    /// Largest event id.
    pub async fn head(&self) -> Result<i64, SourceError> {
        self.with_reader(|conn| Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)).await
    }

    /// `occurred_at` of the first event after `cursor`.
    pub async fn oldest_after(&self, cursor: Cursor) -> Result<Option<String>, SourceError> {
        self.with_reader(move |conn| {
            Ok(conn
                .query_row("SELECT occurred_at FROM events WHERE id > ?1 ORDER BY id LIMIT 1", [cursor.id], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }

    /// Events of one stream after a version, by the `(stream_id, version)` index.
    pub async fn read_stream(&self, stream: &str, after_version: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let stream = stream.to_owned();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, stream_id, version, event_type, data, metadata, occurred_at FROM events \
                 WHERE stream_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3",
            )?;
            let rows = stmt.query_map(rusqlite::params![stream, after_version, limit as i64], event)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// `f` on reel's writing connection, off the async threads.
    fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, SourceError> + Send + 'static,
    ) -> LogFuture<'_, T> {
        let writer = Arc::clone(&self.writer);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                f(&mut conn)
            })
            .await
            .map_err(|e| SourceError::Internal(e.to_string()))?
        })
    }

    pub(super) async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let path = self.path.clone();
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let idle = readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => open_connection(&path, true)?,
            };
            let result = f(&conn);
            // Each read is one statement in autocommit, so a kept connection
            // holds no snapshot; one whose read failed is not kept.
            if result.is_ok() {
                let mut idle = readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if idle.len() < IDLE_READERS {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| SourceError::Internal(e.to_string()))?
    }
}

/// Read-only connections to the events database kept for the next read.
const IDLE_READERS: usize = 8;

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, SourceError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !read_only {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "journal_size_limit", super::wal::WAL_KEPT_BYTES)?;
    }
    Ok(conn)
}

/// An append SQLite could not write, named by what the data folder says:
/// its disk full or the folder read-only (ADR 42).
pub(super) fn unwritable(e: SourceError, folder: &Path) -> SourceError {
    match &e {
        SourceError::Sqlite(sqlite) if super::disk::cannot_write(&sqlite.to_string()) => {
            match super::disk::unwritable(folder) {
                Some(why) => SourceError::Storage(format!("{why}: nothing was appended")),
                None => e,
            }
        }
        _ => e,
    }
}

fn append_blocking(conn: &mut Connection, request: &AppendRequest) -> Result<Appended, SourceError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let appended = append_in(&tx, request)?;
    tx.commit()?;
    Ok(appended)
}

/// Append in `tx` (an immediate transaction), checking the expected version.
pub(super) fn append_in(tx: &rusqlite::Transaction<'_>, request: &AppendRequest) -> Result<Appended, SourceError> {
    let current: i64 =
        tx.query_row("SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?1", [&request.stream_id], |r| {
            r.get(0)
        })?;
    if let Some(expected) = request.expected_version
        && expected != current
    {
        return Err(SourceError::VersionConflict { stream: request.stream_id.clone(), expected, actual: current });
    }
    let occurred_at = format_micros(now_micros());
    let mut positions = Vec::with_capacity(request.events.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (stream_id, version, event_type, data, metadata, occurred_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?;
        for (i, event) in request.events.iter().enumerate() {
            let metadata = event.metadata.as_ref().map_or_else(|| "{}".to_owned(), |m| m.to_string());
            let id: i64 = insert.query_row(
                rusqlite::params![
                    request.stream_id,
                    current + 1 + i as i64,
                    event.event_type,
                    event.data.to_string(),
                    metadata,
                    occurred_at,
                ],
                |r| r.get(0),
            )?;
            positions.push(id);
        }
    }
    Ok(Appended { version: current + request.events.len() as i64, positions })
}

impl EventLog for SqliteSource {
    fn reader(&self) -> Result<Box<dyn EventReader>, SourceError> {
        Ok(Box::new(SqliteSource::reader(self)?))
    }

    fn append(&self, request: AppendRequest) -> LogFuture<'_, Appended> {
        Box::pin(SqliteSource::append(self, request))
    }

    fn read_stream(&self, stream: &str, after_version: i64, limit: usize) -> LogFuture<'_, Vec<Event>> {
        let stream = stream.to_owned();
        Box::pin(async move { SqliteSource::read_stream(self, &stream, after_version, limit).await })
    }

    fn head(&self) -> LogFuture<'_, i64> {
        Box::pin(SqliteSource::head(self))
    }

    /// One writer at a time: an id is handed out and committed together, so
    /// the last handed out is the head.
    fn last_issued(&self) -> LogFuture<'_, i64> {
        Box::pin(SqliteSource::head(self))
    }

    /// One writer at a time: ids commit in order, so the cursor of an event
    /// is its position.
    fn cursor_of(&self, position: i64) -> LogFuture<'_, Option<Cursor>> {
        Box::pin(async move { Ok(Some(Cursor { tx: 0, id: position })) })
    }

    fn count_after(&self, cursor: Cursor) -> LogFuture<'_, i64> {
        Box::pin(async move { Ok((SqliteSource::head(self).await? - cursor.id).max(0)) })
    }

    fn oldest_after(&self, cursor: Cursor) -> LogFuture<'_, Option<String>> {
        Box::pin(SqliteSource::oldest_after(self, cursor))
    }

    /// A single writer holds nothing back.
    fn lag_cause(&self, _cursor: Cursor) -> LogFuture<'_, Option<LagCause>> {
        Box::pin(async { Ok(None) })
    }

    fn forward(&self, namespace: String, handled: Cursor, emissions: Emissions) -> LogFuture<'_, Forwarded> {
        Box::pin(async move {
            let writer = Arc::clone(&self.writer);
            let forwarded = tokio::task::spawn_blocking(move || {
                let mut conn = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                super::forward::forward(&mut conn, &namespace, handled, &emissions)
            })
            .await
            .map_err(|e| SourceError::Internal(e.to_string()))??;
            if forwarded.emitted > 0 {
                self.wake.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(forwarded)
        })
    }

    fn fire_timers(&self, reactor: String, now_micros: i64) -> LogFuture<'_, TimersFired> {
        Box::pin(async move {
            let writer = Arc::clone(&self.writer);
            let fired = tokio::task::spawn_blocking(move || {
                let mut conn = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                super::forward::fire_timers(&mut conn, &reactor, now_micros)
            })
            .await
            .map_err(|e| SourceError::Internal(e.to_string()))??;
            if fired.fired > 0 {
                self.wake.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(fired)
        })
    }

    fn claim_sink(
        &self,
        name: String,
        owner: String,
        now_micros: i64,
        until_micros: i64,
    ) -> LogFuture<'_, Option<(Cursor, Option<SinkHold>)>> {
        let locks = self.path.with_file_name("sinks");
        self.with_writer(move |conn| {
            // The hold: a lock on a file of the sink's, which the kernel
            // lets go when its process ends, however it ends.
            let hold = sink_lock(&locks, &name)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("INSERT INTO reel_sinks (name) VALUES (?1) ON CONFLICT DO NOTHING", [&name])?;
            // Held: whatever the lease says. Not: its owner's own, or once
            // the lease ran out.
            let claim = "UPDATE reel_sinks SET owner = ?2, lease_until = ?4 \
                         WHERE name = ?1 AND (?5 OR owner IS NULL OR owner = ?2 OR lease_until < ?3) RETURNING tx, position";
            let params = rusqlite::params![name, owner, now_micros, until_micros, hold.is_some()];
            let cursor = tx.query_row(claim, params, |r| Ok(Cursor { tx: r.get(0)?, id: r.get(1)? })).optional()?;
            tx.commit()?;
            Ok(cursor.map(|cursor| (cursor, hold.map(SinkHold::new))))
        })
    }

    fn advance_sink(
        &self,
        name: String,
        owner: String,
        from: Cursor,
        to: Cursor,
        until_micros: i64,
    ) -> LogFuture<'_, bool> {
        self.with_writer(move |conn| {
            let moved = conn.execute(
                "UPDATE reel_sinks SET tx = ?5, position = ?6, lease_until = ?7 \
                 WHERE name = ?1 AND owner = ?2 AND tx = ?3 AND position = ?4",
                rusqlite::params![name, owner, from.tx, from.id, to.tx, to.id, until_micros],
            )?;
            Ok(moved == 1)
        })
    }

    fn release_sink(&self, name: String, owner: String) -> LogFuture<'_, ()> {
        self.with_writer(move |conn| {
            conn.execute(
                "UPDATE reel_sinks SET owner = NULL, lease_until = 0 WHERE name = ?1 AND owner = ?2",
                rusqlite::params![name, owner],
            )?;
            Ok(())
        })
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        SqliteSource::wakeups(self)
    }

    fn close(&self) {
        SqliteSource::close(self)
    }
}

/// One worker's reader.
pub struct SqliteReader {
    conn: Connection,
    /// The batch query of the last filter used, and that filter.
    sql: Option<(Filter, String, Vec<String>)>,
}

impl EventReader for SqliteReader {
    fn read_batch(&mut self, after: Cursor, filter: &Filter, limit: usize) -> Result<Batch, SourceError> {
        if self.sql.as_ref().is_none_or(|(f, _, _)| f != filter) {
            let condition = filter.condition(2, |n| format!("?{n}"));
            let sql = format!(
                "SELECT id, stream_id, version, event_type, data, metadata, occurred_at FROM events \
                 WHERE id > ?1{} ORDER BY id LIMIT ?{}",
                condition.sql,
                2 + condition.params.len(),
            );
            self.sql = Some((filter.clone(), sql, condition.params));
        }
        let (_, sql, filter_params) = self.sql.as_ref().expect("set above");
        let tx = self.conn.transaction()?;
        let mut batch = Batch::default();
        {
            let mut stmt = tx.prepare_cached(sql)?;
            let params = std::iter::once(rusqlite::types::Value::Integer(after.id))
                .chain(filter_params.iter().map(|p| rusqlite::types::Value::Text(p.clone())))
                .chain(std::iter::once(rusqlite::types::Value::Integer(limit as i64)));
            let mut rows = stmt.query(params_from_iter(params))?;
            while let Some(row) = rows.next()? {
                let event = event(row)?;
                batch.cursors.push(Cursor { tx: 0, id: event.position });
                batch.events.push(event);
            }
        }
        batch.next = match batch.cursors.last() {
            Some(last) if batch.events.len() == limit => *last,
            last => {
                // The read covered everything up to the head of this snapshot.
                let head: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
                Cursor { tx: 0, id: head.max(last.map_or(after.id, |c| c.id)).max(after.id) }
            }
        };
        tx.commit()?;
        Ok(batch)
    }
}

/// An event from a row of `id, stream_id, version, event_type, data,
/// metadata, occurred_at`.
fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        position: row.get(0)?,
        stream_id: text(row.get_ref(1)?),
        version: row.get(2)?,
        event_type: text(row.get_ref(3)?),
        data: text(row.get_ref(4)?),
        metadata: text(row.get_ref(5)?),
        occurred_at: text(row.get_ref(6)?),
    })
}

/// Column text as written, whatever its storage class (bad UTF-8 replaced).
fn text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Text(t) | ValueRef::Blob(t) => crate::text::lossy(t),
    }
}

/// Lock sink `name`'s file in `dir` (made if missing), without waiting: the
/// open file holding the lock, `None` when another open file holds it (a
/// live process delivering the sink).
fn sink_lock(dir: &Path, name: &str) -> Result<Option<std::fs::File>, SourceError> {
    let failed =
        |e: std::io::Error| SourceError::Internal(format!("locking sink `{name}`'s file in {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    // A sink's name is a module name; anything outside [A-Za-z0-9._-] is
    // written as its code, so that no name reaches outside the folder.
    let file: String = name
        .chars()
        .map(
            |c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c.to_string() } else { format!("%{:x}", c as u32) },
        )
        .collect();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{file}.lock")))
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e)),
    }
}
