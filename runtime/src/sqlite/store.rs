//! Embedded read models: one SQLite file per namespace,
//! `{data_dir}/projections/{name}@{version}.db`.
//!
//! The projection's statements run under an authorizer: they cannot touch
//! reel's own tables (`_reel_*`), attach other files, change pragmas or
//! control the transaction. The file holds nothing of other projections or of
//! the events, so a projection sees only its own data.
//!
//! This file: the store (opening, listing and dropping namespace files) and
//! the authorizer of projection statements.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags, params};

use super::convert::{Guest, db};
use super::namespace::SqliteNamespace;
use super::wal;
use crate::store::sql_text::Checked;
use crate::store::{BoundsFor, NamespaceId, Namespaces, Reader, StoreError, Writer, default_bounds};

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
CREATE TABLE IF NOT EXISTS _reel_changes (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    tx       INTEGER NOT NULL,
    position INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    tbl      TEXT,
    key      TEXT    NOT NULL,
    row      TEXT,
    value    BLOB
);
CREATE INDEX IF NOT EXISTS _reel_changes_at ON _reel_changes (at);
CREATE INDEX IF NOT EXISTS _reel_changes_key ON _reel_changes (tbl, key);
CREATE TABLE IF NOT EXISTS _reel_changes_pruned (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    through INTEGER NOT NULL
);
";

/// Namespaces as files in one folder.
#[derive(Clone)]
pub struct SqliteStore {
    dir: PathBuf,
    bounds: BoundsFor,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Store namespaces under `dir` (created if missing).
    pub fn new(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(format!("creating {}: {e}", dir.display())))?;
        Ok(Self { dir: dir.to_owned(), bounds: default_bounds() })
    }

    /// Bound each projection's SQL by `bounds` (the default: [`Limits`](crate::config::Limits)'s).
    pub fn with_bounds(self, bounds: BoundsFor) -> Self {
        Self { bounds, ..self }
    }

    fn path(&self, ns: &NamespaceId) -> PathBuf {
        self.dir.join(format!("{}.db", ns.slug()))
    }

    /// Open a namespace (created when opening for writing); statements of
    /// a transaction are interrupted past `deadline`.
    pub fn open(&self, ns: &NamespaceId, read_only: bool, deadline: Duration) -> Result<SqliteNamespace, StoreError> {
        let path = self.path(ns);
        let bounds = (self.bounds)(&ns.name);
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
            conn.pragma_update(None, "journal_size_limit", wal::WAL_KEPT_BYTES).map_err(db)?;
            conn.pragma_update(None, "cache_size", -262_144).map_err(db)?; // 256 MiB
            conn.execute_batch(SCHEMA).map_err(db)?;
            // The storage quota: past it a write fails with SQLITE_FULL
            // (`SqliteNamespace::over_quota`).
            let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).map_err(db)?;
            let quota = i64::try_from(bounds.storage_bytes).unwrap_or(i64::MAX);
            conn.pragma_update(None, "max_page_count", (quota / page_size.max(1)).max(1)).map_err(db)?;
            // Checkpoints run on a thread of their own (store/wal.rs).
            conn.wal_hook(Some(wal::note_wal_pages));
        }
        conn.set_prepared_statement_cache_capacity(256);
        let capture = match bounds.changes {
            Some(retention) if !read_only => {
                // A REPLACE deleting a row under another unique key fires
                // the delete trigger only with recursive triggers on.
                conn.pragma_update(None, "recursive_triggers", true).map_err(db)?;
                let mut capture = crate::store::Capture::new(retention);
                // Capture that started goes on from the first batch; else
                // it starts at the head (ADR 30).
                capture.started = super::namespace::capture_started(&conn).map_err(db)?;
                if capture.started {
                    super::namespace::watch_tables(&conn).map_err(db)?;
                }
                Some(capture)
            }
            _ => None,
        };
        let guest = Arc::new(Guest::new(bounds.value_bytes));
        guest.capture.store(capture.is_some_and(|c| c.started), Ordering::Relaxed);
        let flag = Arc::clone(&guest);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            if flag.on.load(Ordering::Relaxed) { authorize_guest(&ctx) } else { Authorization::Allow }
        }))
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
            storage_bytes: bounds.storage_bytes,
            result_bytes: bounds.result_bytes,
            capture,
        })
    }

    /// `reel.db`: which namespace serves reads of each projection.
    fn registry(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(self.dir.join("reel.db")).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS active_namespaces (name TEXT PRIMARY KEY, slug TEXT NOT NULL)")
            .map_err(db)?;
        Ok(conn)
    }
}

impl Namespaces for SqliteStore {
    fn reads_in_process(&self) -> bool {
        true
    }

    fn open_writer(&self, ns: &NamespaceId, deadline: Duration) -> Result<Box<dyn Writer>, StoreError> {
        Ok(Box::new(self.open(ns, false, deadline)?))
    }

    fn open_reader(&self, ns: &NamespaceId, deadline: Duration) -> Result<Option<Box<dyn Reader>>, StoreError> {
        if !self.exists(ns) {
            return Ok(None);
        }
        Ok(Some(Box::new(self.open(ns, true, deadline)?)))
    }

    /// Whether the namespace's file exists.
    fn exists(&self, ns: &NamespaceId) -> bool {
        self.path(ns).exists()
    }

    /// Delete a namespace's files.
    fn drop_namespace(&self, ns: &NamespaceId) -> Result<(), StoreError> {
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
    fn namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
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

    /// The namespace serving reads of each projection.
    fn active_namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
        let conn = self.registry()?;
        let mut stmt = conn.prepare("SELECT slug FROM active_namespaces ORDER BY name").map_err(db)?;
        let slugs: Vec<String> = stmt.query_map([], |r| r.get(0)).map_err(db)?.collect::<Result<_, _>>().map_err(db)?;
        Ok(slugs.iter().filter_map(|s| NamespaceId::from_slug(s)).collect())
    }

    /// Record the namespace serving reads of its projection.
    fn set_active(&self, ns: &NamespaceId) -> Result<(), StoreError> {
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
    fn forget(&self, name: &str) -> Result<(), StoreError> {
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
    // reel's capture triggers write its table of touched keys (ADR 28); no
    // trigger or view of the projection's can bear their names (below).
    if ctx.accessor.is_some_and(|a| a.starts_with("_reel_c")) {
        return Authorization::Allow;
    }
    match ctx.action {
        AuthAction::CreateTrigger { trigger_name: name, .. }
        | AuthAction::CreateTempTrigger { trigger_name: name, .. }
        | AuthAction::DropTrigger { trigger_name: name, .. }
        | AuthAction::DropTempTrigger { trigger_name: name, .. }
        | AuthAction::CreateView { view_name: name }
        | AuthAction::CreateTempView { view_name: name }
            if reserved(name) =>
        {
            Authorization::Deny
        }
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
        // fts3_tokenizer reads and sets pointers to C code (ADR 20).
        AuthAction::Function { function_name }
            if ["load_extension", "fts3_tokenizer"].iter().any(|f| function_name.eq_ignore_ascii_case(f)) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}
