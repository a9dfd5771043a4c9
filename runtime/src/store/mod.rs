//! Read-model storage: one namespace per projection version.
//!
//! A namespace holds the projection's SQL tables, its key-value table and its
//! checkpoint. On SQLite it is a file of its own; on PostgreSQL a schema owned
//! by a role of its own. The worker writes through a [`Writer`] inside one
//! transaction per batch and commits the checkpoint with a compare-and-set in
//! that same transaction. Reads (HTTP, queries) use separate read-only
//! connections, [`Reader`]s.
//!
//! This module holds what every backend shares: the roles a namespace plays
//! (`namespace.rs`), the [`Namespaces`] a backend implements (`crate::sqlite`,
//! `crate::postgres`), the [`Store`] reel holds, the KV write buffer and
//! cache, the checks of projection SQL text, and a whole namespace read at
//! once with its checksum (`dump.rs`), kept in memory (`whole.rs`) and
//! compared with another (`diff.rs`).

mod changes;
pub mod diff;
mod dump;
pub mod kv_cache;
mod namespace;
pub mod sql_text;
pub mod whole;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reel_model::{Cursor, SqlError, Value};

pub use changes::{
    Capture, Change, ChangePage, ChangeReads, HistoryStart, START, START_EMPTY, SnapshotAt, SnapshotStep, is_ddl,
};
pub use dump::{Checksum, DumpSink, Dumps, ReadModelSum};
pub use namespace::{
    Commits, DeadLetterReads, DeadLetterWrites, KvReads, KvWrites, Reader, Snapshot, SqlReads, SqlWrites, Stored,
    TableReads, Writer,
};
pub use reel_model::{Emission, Emissions, Forwarded, TimerChange};

/// A projection version's storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespaceId {
    /// Projection name (manifest `name`).
    pub name: String,
    /// Projection version (manifest `version`).
    pub version: String,
    /// Rebuilds of the same version get a new generation (0 first).
    pub generation: u32,
}

impl NamespaceId {
    /// The first namespace of `name` at `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self { name: name.into(), version: version.into(), generation: 0 }
    }

    /// The namespace a rebuild of the same version writes into.
    pub fn next_generation(&self) -> Self {
        Self { generation: self.generation + 1, ..self.clone() }
    }

    /// A file-name safe rendering: `name@version` (plus `+gN` for a later
    /// generation), with unusual version characters hex-escaped.
    pub fn slug(&self) -> String {
        let mut version = String::new();
        for c in self.version.chars() {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                version.push(c);
            } else {
                for b in c.to_string().bytes() {
                    version.push_str(&format!("~{b:02x}"));
                }
            }
        }
        match self.generation {
            0 => format!("{}@{}", self.name, version),
            n => format!("{}@{}+g{n}", self.name, version),
        }
    }

    /// Parse a [`slug`](Self::slug).
    pub fn from_slug(slug: &str) -> Option<Self> {
        let (name, rest) = slug.split_once('@')?;
        let (version, generation) = match rest.rsplit_once("+g") {
            Some((version, n)) => (version, n.parse().ok()?),
            None => (rest, 0),
        };
        let mut bytes = Vec::new();
        let mut chars = version.bytes();
        while let Some(b) = chars.next() {
            if b == b'~' {
                let hex = [chars.next()?, chars.next()?];
                bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            } else {
                bytes.push(b);
            }
        }
        Some(Self { name: name.to_owned(), version: String::from_utf8(bytes).ok()?, generation })
    }
}

impl fmt::Display for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)?;
        if self.generation > 0 {
            write!(f, " (generation {})", self.generation)?;
        }
        Ok(())
    }
}

/// What the checkpoint row says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Everything at or before this cursor has been applied.
    pub cursor: Cursor,
    /// `init` ran (and committed) in this namespace.
    pub initialized: bool,
}

/// Errors of read-model storage.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database refused a projection's statement.
    #[error("SQL error {code}: {message}")]
    Sql {
        /// SQLSTATE or SQLite result code name.
        code: String,
        /// The database's message.
        message: String,
    },
    /// reel refused a projection's statement before running it.
    #[error("{0}")]
    Refused(String),
    /// A result or value is over a configured limit.
    #[error("{0}")]
    Limit(String),
    /// A statement ran past its deadline and was cancelled: the projection's
    /// SQL is too slow, or the database or the machine stalled.
    #[error("{0}")]
    Deadline(String),
    /// Another process advanced the checkpoint first: this worker no longer
    /// owns the projection.
    #[error(
        "checkpoint moved underneath us (expected {expected:?}, found {found:?}): another runtime owns this projection"
    )]
    Fenced {
        /// What this worker last committed.
        expected: Cursor,
        /// What the database holds.
        found: Option<Cursor>,
    },
    /// No such table (reads over HTTP).
    #[error("{0}")]
    NotFound(String),
    /// A malformed read: unknown column, bad order (reads over HTTP).
    #[error("{0}")]
    Invalid(String),
    /// The database failed (connection, disk, ...): not the projection's fault.
    #[error("read-model database: {0}")]
    Database(String),
    /// A KV key the worker took for new was in the table: its KV cache does
    /// not match the database (another writer, or a bug). Not the
    /// projection's fault; the cache is dropped.
    #[error("read-model database: {0}")]
    KvStale(String),
}

impl StoreError {
    /// Errors caused by the projection's own statements, as opposed to the
    /// database being unavailable.
    pub fn is_projection_fault(&self) -> bool {
        self.is_sql_error() || matches!(self, StoreError::Deadline(_))
    }

    /// The database refused the projection's statement: the guest gets it
    /// back as an `sql-error` (a deadline instead ends the call).
    pub fn is_sql_error(&self) -> bool {
        matches!(self, StoreError::Sql { .. } | StoreError::Refused(_) | StoreError::Limit(_))
    }

    /// The error as the guest sees it (`sql-error`).
    pub fn to_sql_error(&self) -> SqlError {
        match self {
            StoreError::Sql { code, message } => SqlError { code: code.clone(), message: message.clone() },
            StoreError::Refused(m) => SqlError { code: "reel:refused".into(), message: m.clone() },
            StoreError::Limit(m) => SqlError { code: "reel:limit".into(), message: m.clone() },
            other => SqlError { code: "reel:unavailable".into(), message: other.to_string() },
        }
    }
}

/// A read over HTTP of a projection's table.
#[derive(Debug, Clone, Default)]
pub struct TableRead {
    /// Table name (checked against the namespace's tables).
    pub table: String,
    /// `column = value` filters (columns checked).
    pub filters: Vec<(String, String)>,
    /// Sort column and whether descending.
    pub order: Option<(String, bool)>,
    /// Most rows to return.
    pub limit: usize,
}

impl TableRead {
    /// The `SELECT` of this read from a table with `columns`, the `n`-th
    /// filter value written as `{placeholder}{n}` (`$1`, `?1`), and the
    /// values. Column names must be among `columns`.
    pub(crate) fn statement(&self, columns: &[String], placeholder: &str) -> Result<(String, Vec<Value>), StoreError> {
        let known = |c: &str| {
            if columns.iter().any(|k| k == c) {
                Ok(sql_text::quote_ident(c))
            } else {
                Err(StoreError::Invalid(format!(
                    "table `{}` has no column `{c}`; columns: {}",
                    self.table,
                    columns.join(", ")
                )))
            }
        };
        let mut sql = format!("SELECT * FROM {}", sql_text::quote_ident(&self.table));
        let mut values = Vec::new();
        for (i, (column, value)) in self.filters.iter().enumerate() {
            sql.push_str(if i == 0 { " WHERE " } else { " AND " });
            sql.push_str(&format!("{} = {placeholder}{}", known(column)?, i + 1));
            if value.contains('\0') {
                // PostgreSQL's text cannot hold one; the same answer on SQLite.
                return Err(StoreError::Invalid(format!(
                    "the filter on `{column}` holds a NUL character (\\u0000), which PostgreSQL cannot store; \
                     refused on every backend"
                )));
            }
            values.push(Value::Text(value.clone()));
        }
        if let Some((column, desc)) = &self.order {
            sql.push_str(&format!(" ORDER BY {}{}", known(column)?, if *desc { " DESC" } else { "" }));
        }
        sql.push_str(&format!(" LIMIT {}", self.limit));
        Ok((sql, values))
    }
}

/// One buffered KV write, as a batch hands it to the database.
#[derive(Debug, Clone, Copy)]
pub struct KvWrite<'a> {
    pub key: &'a str,
    /// `None`: delete.
    pub value: Option<&'a [u8]>,
    /// The key holds no value in the open transaction, as far as the worker
    /// knows for sure: a plain insert will do. If that were wrong, the write
    /// fails and with it the batch.
    pub new: bool,
}

/// What a namespace's SQL may hold and make (ADR 20), by projection: the
/// stores look them up when they open a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlBounds {
    /// Largest string or blob the projection's SQL may make or read.
    pub value_bytes: usize,
    /// Most bytes of one query's result handed to the projection.
    pub result_bytes: usize,
    /// Most bytes the namespace may hold on disk.
    pub storage_bytes: u64,
    /// Capture the namespace's changes, kept this long (ADR 28); `None`:
    /// no capture.
    pub changes: Option<Duration>,
}

/// The bounds of each projection, by name.
pub type BoundsFor = Arc<dyn Fn(&str) -> SqlBounds + Send + Sync>;

impl SqlBounds {
    /// The bounds `limits` set.
    pub fn of(limits: &crate::config::Limits) -> Self {
        Self {
            value_bytes: limits.sql_value_bytes,
            // A result bigger than the module's memory could not reach it anyway.
            result_bytes: limits.memory_bytes,
            storage_bytes: limits.storage_bytes,
            changes: None,
        }
    }
}

/// The bounds of [`Limits`](crate::config::Limits)' defaults for every projection.
pub fn default_bounds() -> BoundsFor {
    let bounds = SqlBounds::of(&crate::config::Limits::default());
    Arc::new(move |_| bounds)
}

/// What a backend's read-model storage does (`sqlite::SqliteStore`,
/// `postgres::PgStore`); reel holds it as a [`Store`].
pub trait Namespaces: Send + Sync {
    /// Open `ns` for writing, creating it (empty, checkpoint at the start) if
    /// it does not exist. Statements of a transaction stop at `deadline`.
    fn open_writer(&self, ns: &NamespaceId, deadline: Duration) -> Result<Box<dyn Writer>, StoreError>;
    /// Open `ns` read-only; `None` if it does not exist.
    fn open_reader(&self, ns: &NamespaceId, deadline: Duration) -> Result<Option<Box<dyn Reader>>, StoreError>;
    /// Whether `ns` exists.
    fn exists(&self, ns: &NamespaceId) -> bool;
    /// Delete `ns` and everything in it.
    fn drop_namespace(&self, ns: &NamespaceId) -> Result<(), StoreError>;
    /// The namespaces that exist.
    fn namespaces(&self) -> Result<Vec<NamespaceId>, StoreError>;
    /// The namespace serving reads of each projection.
    fn active_namespaces(&self) -> Result<Vec<NamespaceId>, StoreError>;
    /// Record `ns` as the one serving reads of its projection.
    fn set_active(&self, ns: &NamespaceId) -> Result<(), StoreError>;
    /// Forget a projection (after its namespaces are dropped).
    fn forget(&self, name: &str) -> Result<(), StoreError>;
    /// Whether an idle reader answers a read of one key in microseconds,
    /// without a server to wait for (SQLite: a file read in this process).
    fn reads_in_process(&self) -> bool {
        false
    }
    /// Record `ns` as a reactor's, emitting under `prefix`: only such a
    /// namespace may append, and only under it (ADR 23). Where the log is
    /// in another database than the namespaces, nothing to do.
    fn declare_emits(&self, ns: &NamespaceId, prefix: &str) -> Result<(), StoreError> {
        let _ = (ns, prefix);
        Ok(())
    }
}

/// The read-model storage of the configured backend.
#[derive(Clone)]
pub struct Store {
    namespaces: Arc<dyn Namespaces>,
}

impl Store {
    /// The storage `namespaces`.
    pub fn new(namespaces: impl Namespaces + 'static) -> Self {
        Self { namespaces: Arc::new(namespaces) }
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Namespaces;

    fn deref(&self) -> &Self::Target {
        &*self.namespaces
    }
}

/// The key range of a KV scan of `prefix` after `after`: from `lower` (past
/// it when `strict`) to before `upper` (`None`: to the end).
pub(crate) fn scan_range<'a>(prefix: &'a str, after: Option<&'a str>) -> (&'a str, bool, Option<String>) {
    let lower = after.filter(|a| *a >= prefix).unwrap_or(prefix);
    let strict = after.is_some_and(|a| a >= prefix);
    (lower, strict, prefix_upper_bound(prefix))
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
