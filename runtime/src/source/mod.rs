//! The event log: reading committed events after a cursor, appending with an
//! expected version, and waking workers when new events may exist.
//!
//! This module holds what every backend shares: the [`EventLog`] a backend
//! implements (embedded SQLite in `crate::sqlite`, PostgreSQL in
//! `crate::postgres`), the [`Source`] reel holds, batches, subscription
//! filters and append requests. Both backends deliver each committed event
//! exactly once, in an order that keeps every stream's versions ascending.

mod commands;
mod feed;
mod filter;
mod pages;
mod prefetch;
mod tail;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use reel_model::{Cursor, Emissions, Event, Forwarded};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use commands::{CommandStore, KeptAnswer, Keyed, Outcome, Snapshot};
pub use feed::{Feed, FeedItem};
pub use filter::Filter;
pub use pages::LOG_READERS;
pub use prefetch::Prefetcher;
pub use tail::{LIVE_BUFFER, Span};

/// Events read after a cursor.
#[derive(Debug, Default)]
pub struct Batch {
    /// Matching events, in delivery order.
    pub events: Vec<Event>,
    /// The cursor just after each event of `events` (same length).
    pub cursors: Vec<Cursor>,
    /// Where the next read starts: past `events` and past any non-matching
    /// events the read covered.
    pub next: Cursor,
}

impl Batch {
    /// The first `limit` events of the batch, as a read of `limit` would
    /// have returned them.
    pub fn truncated(mut self, limit: usize) -> Self {
        if self.events.len() > limit {
            self.events.truncate(limit);
            self.cursors.truncate(limit);
            self.next = *self.cursors.last().unwrap_or(&self.next);
        }
        self
    }

    /// This batch and then `rest`, read after it: one batch, as one read
    /// of both their limits would have returned it.
    pub fn followed_by(mut self, rest: Batch) -> Self {
        self.events.extend(rest.events);
        self.cursors.extend(rest.cursors);
        self.next = rest.next;
        self
    }
}

/// One event to append.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Type name, e.g. `order.placed`.
    pub event_type: String,
    /// The payload, kept as sent: read into numbers, a number past what an
    /// `f64` holds exactly would change.
    pub data: Box<serde_json::value::RawValue>,
    /// Metadata (defaults to `{}`), kept as sent.
    #[serde(default)]
    pub metadata: Option<Box<serde_json::value::RawValue>>,
}

/// Append events to one stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendRequest {
    /// The stream to append to.
    pub stream_id: String,
    /// The stream's current version the caller expects: 0 for a new stream,
    /// omitted to append whatever the version.
    #[serde(default)]
    pub expected_version: Option<i64>,
    /// Events to append, in order (1 to 10,000).
    #[serde(deserialize_with = "objects")]
    pub events: Vec<NewEvent>,
}

/// `T` read from a JSON object only: serde's derive also takes an array of
/// the fields in order (`["order-1", 0, [...]]`), which no client means.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Fields(std::marker::PhantomData)).map(Object)
    }
}

/// A list of `T`, each read from a JSON object only.
fn objects<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Ok(Vec::<Object<T>>::deserialize(deserializer)?.into_iter().map(|o| o.0).collect())
}

/// What an append stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Position of each appended event.
    pub positions: Vec<i64>,
    /// The stream's version after the append.
    pub version: i64,
}

/// Largest number of events in one append.
pub const MAX_APPEND_EVENTS: usize = 10_000;
/// Longest stream id or event type.
pub const MAX_NAME_BYTES: usize = 512;

impl AppendRequest {
    /// Check the request before touching the database.
    pub fn validate(&self) -> Result<(), SourceError> {
        let invalid = |m: String| Err(SourceError::Invalid(m));
        if self.stream_id.is_empty() || self.stream_id.len() > MAX_NAME_BYTES {
            return invalid(format!("stream_id must be 1 to {MAX_NAME_BYTES} bytes"));
        }
        if self.stream_id.contains('\0') {
            return invalid(format!("stream_id {NUL}"));
        }
        if self.events.is_empty() || self.events.len() > MAX_APPEND_EVENTS {
            return invalid(format!("events must hold 1 to {MAX_APPEND_EVENTS} events"));
        }
        if let Some(v) = self.expected_version
            && v < 0
        {
            return invalid(format!("expected_version must be 0 (new stream) or more, not {v}"));
        }
        for (i, e) in self.events.iter().enumerate() {
            if e.event_type.is_empty() || e.event_type.len() > MAX_NAME_BYTES {
                return invalid(format!("events[{i}].event_type must be 1 to {MAX_NAME_BYTES} bytes"));
            }
            if let Some(m) = &e.metadata
                && !m.get().starts_with('{')
            {
                return invalid(format!("events[{i}].metadata must be a JSON object"));
            }
            if e.event_type.contains('\0') {
                return invalid(format!("events[{i}].event_type {NUL}"));
            }
            for (field, raw) in [("data", Some(&e.data)), ("metadata", e.metadata.as_ref())] {
                // Only an escape (`\u0000`) can put a NUL in JSON text.
                if let Some(raw) = raw
                    && raw.get().contains("u0000")
                    && serde_json::from_str::<serde_json::Value>(raw.get()).is_ok_and(|v| holds_nul(&v))
                {
                    return invalid(format!("events[{i}].{field} {NUL}"));
                }
            }
        }
        Ok(())
    }
}

/// Why a NUL character is refused: PostgreSQL's `text` and `jsonb` cannot hold
/// one, and an event log that could not move to PostgreSQL is refused it on
/// SQLite too.
const NUL: &str = "holds a NUL character (\\u0000), which PostgreSQL cannot store; reel refuses it on every backend";

/// Whether a JSON value has a NUL character in a string or an object key.
fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Errors of the event log.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The stream is not at the version the caller expected.
    #[error("stream `{stream}` is at version {actual}, expected {expected}")]
    VersionConflict {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: i64,
        /// What it is.
        actual: i64,
    },
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// SQLite failed.
    #[error("events database (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations failed.
    #[error("migrating the events database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// sqlx failed (only used at start-up).
    #[error("events database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The database is unreachable or failed.
    #[error("events database: {0}")]
    Unavailable(String),
    /// The connection was lost after an append was sent and before its
    /// answer came: it may have committed or not (ADR 43). Sending it again
    /// without an idempotency key could append it twice.
    #[error("events database: the connection was lost while the append was committing: {0}")]
    OutcomeUnknown(String),
    /// No connection could be made to the database (it is down, starting or
    /// recovering): reel starts anyway and retries (ADR 43).
    #[error("events database unreachable: {0}")]
    Unreachable(String),
    /// Nothing can be written: the disk is full or the data folder
    /// read-only (named in the message).
    #[error("{0}")]
    Storage(String),
    /// Every log reader stayed in use for the read wait
    /// ([`Source::read_page_within`]).
    #[error("{0}")]
    Busy(String),
    /// A blocking task died.
    #[error("internal: {0}")]
    Internal(String),
}

/// Reads batches for one worker (owns its own connection).
pub trait EventReader: Send {
    /// Up to `limit` events matching `filter` after `after`.
    fn read_batch(&mut self, after: Cursor, filter: &Filter, limit: usize) -> Result<Batch, SourceError>;
}

/// A future an [`EventLog`] returns.
pub type LogFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SourceError>> + Send + 'a>>;

/// What the owner of a sink keeps while it delivers (see
/// [`EventLog::claim_sink`]): dropped, the hold is free for another process.
pub struct SinkHold {
    keep: Box<dyn Keep>,
}

/// What holds a sink's hold: a locked file, a session holding a lock.
pub trait Keep: Send + Sync {
    /// Whether it still holds it (a session can end under its owner).
    fn alive(&self) -> bool {
        true
    }
}

impl Keep for std::fs::File {}

impl SinkHold {
    /// A hold kept by `keep`.
    pub fn new(keep: impl Keep + 'static) -> Self {
        Self { keep: Box::new(keep) }
    }

    /// Whether the hold is still held.
    pub fn alive(&self) -> bool {
        self.keep.alive()
    }
}

/// What a backend's event log does (`sqlite::SqliteSource`,
/// `postgres::PgSource`); reel holds it as a [`Source`].
pub trait EventLog: Send + Sync {
    /// A reader with its own connection, for one worker.
    fn reader(&self) -> Result<Box<dyn EventReader>, SourceError>;
    /// Append a validated request, checking the expected version.
    fn append(&self, request: AppendRequest) -> LogFuture<'_, Appended>;
    /// Up to `limit` committed events of `stream` with a version above
    /// `after_version`, in version order (empty when there are none).
    fn read_stream(&self, stream: &str, after_version: i64, limit: usize) -> LogFuture<'_, Vec<Event>>;
    /// Position of the last committed event (0 when empty).
    fn head(&self) -> LogFuture<'_, i64>;
    /// The largest position ever handed out, committed or not (on PostgreSQL
    /// the id sequence's last value; 0 when none).
    fn last_issued(&self) -> LogFuture<'_, i64>;
    /// The cursor a reader must have passed to have seen event `position`
    /// (`None` when no such event is committed).
    fn cursor_of(&self, position: i64) -> LogFuture<'_, Option<Cursor>>;
    /// Number of committed events after `cursor`.
    fn count_after(&self, cursor: Cursor) -> LogFuture<'_, i64>;
    /// `occurred_at` of the first committed event after `cursor`.
    fn oldest_after(&self, cursor: Cursor) -> LogFuture<'_, Option<String>>;
    /// Why events after `cursor` are held back, if an open transaction
    /// holds them (a log with a single writer has no such cause).
    fn lag_cause(&self, cursor: Cursor) -> LogFuture<'_, Option<LagCause>>;
    /// Changes whenever new events may have been committed.
    fn wakeups(&self) -> watch::Receiver<u64>;
    /// Append a reactor batch's emissions kept in namespace `namespace`'s
    /// outbox, handled through `handled`, skipping those already appended
    /// (ADR 23). Only a log in another database than the namespaces needs it.
    fn forward(&self, namespace: String, handled: Cursor, emissions: Emissions) -> LogFuture<'_, Forwarded> {
        let _ = (namespace, handled, emissions);
        Box::pin(async { Err(SourceError::Internal("this event log has no outboxes to forward".into())) })
    }
    /// Fire reactor `reactor`'s timers due at `now_micros` (Unix µs): each
    /// is removed and its event appended in one transaction, keyed like an
    /// emission, so it fires once however many callers race (ADR 24).
    fn fire_timers(&self, reactor: String, now_micros: i64) -> LogFuture<'_, TimersFired>;
    /// Claim sink `name` for `owner`, its lease until `until_micros` (Unix
    /// µs) (ADR 31). First it tries to take the sink's hold, a lock that its
    /// owner keeps while it lives (an advisory lock of a session of its own
    /// on PostgreSQL, a file lock on SQLite): taken, no live process owns
    /// the sink, and the claim ignores the lease a dead owner left behind.
    /// Not taken, the sink is claimed only when the row has no owner or its
    /// lease ran out before `now_micros` (an owner stuck, or whose host is
    /// gone without its session ending yet). The sink's checkpoint when
    /// claimed (the start for a new sink) and the hold if taken, to keep
    /// while delivering; `None` when another process holds the sink.
    fn claim_sink(
        &self,
        name: String,
        owner: String,
        now_micros: i64,
        until_micros: i64,
    ) -> LogFuture<'_, Option<(Cursor, Option<SinkHold>)>>;
    /// Move sink `name`'s checkpoint from `from` to `to` and extend the
    /// lease to `until_micros`, if `owner` still holds it there. `false`:
    /// it no longer does, and nothing moved.
    fn advance_sink(
        &self,
        name: String,
        owner: String,
        from: Cursor,
        to: Cursor,
        until_micros: i64,
    ) -> LogFuture<'_, bool>;
    /// Give up `owner`'s claim on sink `name` (another process may take it
    /// at once).
    fn release_sink(&self, name: String, owner: String) -> LogFuture<'_, ()>;
    /// Stop background work (a LISTEN connection, a commit watcher).
    fn close(&self);
    /// Whether `cursor` could be a token this log handed out (a bare
    /// position is not one on PostgreSQL, whose tokens name a transaction).
    fn could_have_issued(&self, _cursor: Cursor) -> bool {
        true
    }
}

/// What firing a reactor's due timers did (ADR 24).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimersFired {
    /// Timer events appended.
    pub fired: u64,
    /// Timers still pending.
    pub pending: u64,
    /// When the next one is due (Unix µs), if any.
    pub next_due: Option<i64>,
}

/// Why a projection is behind although events are committed: a transaction
/// that started before them is still open somewhere (PostgreSQL's cluster).
#[derive(Debug, Clone, Serialize)]
pub struct LagCause {
    /// Backend holding the oldest running transaction id.
    pub pid: i32,
    /// Its transaction id.
    pub xid: String,
    /// How many transactions ago it started.
    pub xid_age: i32,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// Seconds since its transaction started.
    pub seconds: Option<f64>,
    /// Its database user.
    pub user: Option<String>,
    /// Its application name.
    pub application: Option<String>,
    /// The start of its current or last statement.
    pub query: Option<String>,
}

/// The event log of the configured backend.
#[derive(Clone)]
pub struct Source {
    log: Arc<dyn EventLog>,
    /// The same backend, as it keeps commands' answers (ADR 25).
    commands: Arc<dyn CommandStore>,
    /// Readers serving pages to consumers ([`Source::read_page`]).
    pages: Arc<pages::ReaderPool>,
    /// The live tail feeds follow ([`Source::follow`]).
    tail: Arc<tail::Tail>,
}

impl Source {
    /// The event log `log`.
    pub fn new(log: impl EventLog + CommandStore + 'static) -> Self {
        let log = Arc::new(log);
        Self { log: Arc::clone(&log) as _, commands: log, pages: Arc::default(), tail: Arc::default() }
    }

    /// Commands' answers kept under idempotency keys (ADR 25).
    pub fn commands(&self) -> &dyn CommandStore {
        &*self.commands
    }

    /// Refuses a cursor this log could not have handed out as a token.
    pub fn check_token(&self, after: Cursor) -> Result<(), SourceError> {
        if self.log.could_have_issued(after) {
            return Ok(());
        }
        Err(SourceError::Invalid(format!(
            "`{after}` is not a resume token this log handed out: on PostgreSQL a token names a transaction \
             and a position (pass back `next` or `Last-Event-ID` as it came; `0` is the start)"
        )))
    }

    /// Up to `limit` events matching `filter` after `after`, in delivery
    /// order, as a worker reads them (for consumers: `GET /events`, feeds).
    /// It waits for one of the [`LOG_READERS`] as long as it takes.
    pub async fn read_page(&self, after: Cursor, filter: Filter, limit: usize) -> Result<Batch, SourceError> {
        self.check_token(after)?;
        self.pages.read(&self.log, after, filter, limit, None).await
    }

    /// [`Source::read_page`] for a request, waiting at most `wait` for one
    /// of the [`LOG_READERS`]: past it, [`SourceError::Busy`].
    pub async fn read_page_within(
        &self,
        after: Cursor,
        filter: Filter,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<Batch, SourceError> {
        self.check_token(after)?;
        self.pages.read(&self.log, after, filter, limit, Some(wait)).await
    }

    /// A reader with its own connection, for one worker.
    pub fn reader(&self) -> Result<Box<dyn EventReader>, SourceError> {
        self.log.reader()
    }

    /// A reader that reads the next batch while the current one is applied.
    pub fn prefetching_reader(&self) -> Result<Box<dyn EventReader>, SourceError> {
        Ok(Box::new(Prefetcher::new(self.reader()?)))
    }

    /// Append to a stream, checking the expected version.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, SourceError> {
        request.validate()?;
        self.log.append(request).await
    }

    /// Up to `limit` committed events of `stream` with a version above
    /// `after_version`, in version order.
    pub async fn read_stream(&self, stream: &str, after_version: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        self.log.read_stream(stream, after_version, limit).await
    }

    /// Position of the last committed event (0 when empty).
    pub async fn head(&self) -> Result<i64, SourceError> {
        self.log.head().await
    }

    /// The largest position ever handed out, committed or not.
    pub async fn last_issued(&self) -> Result<i64, SourceError> {
        self.log.last_issued().await
    }

    /// The cursor a projection must have passed to have seen event `position`
    /// (`None` when no such event is committed).
    pub async fn cursor_of(&self, position: i64) -> Result<Option<Cursor>, SourceError> {
        self.log.cursor_of(position).await
    }

    /// Number of committed events after `cursor`.
    pub async fn count_after(&self, cursor: Cursor) -> Result<i64, SourceError> {
        self.log.count_after(cursor).await
    }

    /// `occurred_at` of the first committed event after `cursor`.
    pub async fn oldest_after(&self, cursor: Cursor) -> Result<Option<String>, SourceError> {
        self.log.oldest_after(cursor).await
    }

    /// Append a reactor's outbox entry (see [`EventLog::forward`]).
    pub async fn forward(
        &self,
        namespace: String,
        handled: Cursor,
        emissions: Emissions,
    ) -> Result<Forwarded, SourceError> {
        self.log.forward(namespace, handled, emissions).await
    }

    /// Fire a reactor's due timers (see [`EventLog::fire_timers`]).
    pub async fn fire_timers(&self, reactor: String, now_micros: i64) -> Result<TimersFired, SourceError> {
        self.log.fire_timers(reactor, now_micros).await
    }

    /// Claim a sink (see [`EventLog::claim_sink`]).
    pub async fn claim_sink(
        &self,
        name: &str,
        owner: &str,
        now_micros: i64,
        until_micros: i64,
    ) -> Result<Option<(Cursor, Option<SinkHold>)>, SourceError> {
        self.log.claim_sink(name.to_owned(), owner.to_owned(), now_micros, until_micros).await
    }

    /// Move a sink's checkpoint (see [`EventLog::advance_sink`]).
    pub async fn advance_sink(
        &self,
        name: &str,
        owner: &str,
        from: Cursor,
        to: Cursor,
        until_micros: i64,
    ) -> Result<bool, SourceError> {
        self.log.advance_sink(name.to_owned(), owner.to_owned(), from, to, until_micros).await
    }

    /// Give a sink up (see [`EventLog::release_sink`]).
    pub async fn release_sink(&self, name: &str, owner: &str) -> Result<(), SourceError> {
        self.log.release_sink(name.to_owned(), owner.to_owned()).await
    }

    /// Stop background work (the LISTEN connection, the commit watcher).
    pub fn close(&self) {
        self.tail.close();
        self.log.close()
    }

    /// Changes whenever new events may have been committed.
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.log.wakeups()
    }

    /// Why events after `cursor` are held back, if an open transaction holds
    /// them (PostgreSQL only; SQLite has a single writer).
    pub async fn lag_cause(&self, cursor: Cursor) -> Result<Option<LagCause>, SourceError> {
        self.log.lag_cause(cursor).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_batch_is_what_a_smaller_read_returns() {
        let at = |id| Cursor { tx: 0, id };
        let event = |id| Event {
            position: id,
            stream_id: format!("s-{id}"),
            version: 1,
            event_type: "t".into(),
            data: "{}".into(),
            metadata: "{}".into(),
            occurred_at: String::new(),
        };
        let batch = Batch { events: (1..=5).map(event).collect(), cursors: (1..=5).map(at).collect(), next: at(9) };
        let cut = batch.truncated(3);
        assert_eq!(cut.events.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(cut.cursors, [at(1), at(2), at(3)]);
        assert_eq!(cut.next, at(3), "the next read starts after the last event kept");
        let whole = Batch { events: vec![event(1)], cursors: vec![at(1)], next: at(9) }.truncated(3);
        assert_eq!(whole.next, at(9), "a batch within the limit is unchanged");
    }
}
