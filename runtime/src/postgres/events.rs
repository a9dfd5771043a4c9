//! The production event log: the classic `events` table on PostgreSQL, plus
//! a `transaction_id xid8` column.
//!
//! Ids are drawn before commit, so under concurrent writers they commit out
//! of order and a plain `id > last` reader skips events. reel reads only rows
//! of transactions below its horizon (all of which have finished: the
//! snapshot's `xmin`, but for transactions that cannot write events, ADR 39),
//! in `(transaction_id, id)` order, and keeps that pair as the cursor: nothing
//! committed later can sort before it.
//!
//! Consequences (see docs/postgres.md): a long transaction in this database
//! that may write events delays delivery until it ends ([`PgSource::lag_cause`]
//! names it); per-stream order holds for appends at REPEATABLE READ or whose event
//! insert is the transaction's first write; a restore into a new cluster makes
//! transaction ids go backwards, which [`PgSource::open`] detects and refuses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use sqlx::ConnectOptions;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use reel_model::time::format_micros;
use reel_model::{Cursor, Event, Value};

use super::client as pg;
use super::reader::{HORIZON, PgReader};
use super::value::column;
use crate::source::{
    AppendRequest, Appended, EventLog, EventReader, LagCause, LogFuture, SinkHold, SourceError, TimersFired,
};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The channel the events table's trigger notifies.
const CHANNEL: &str = "reel_events";
/// Connections reel's API may hold for appends and status reads.
const POOL_SIZE: usize = 32;
/// Pooled connections a request may find dead before it gives up: a server
/// restart or `pg_terminate_backend` closes every idle one at once, and the
/// pool hands them out until their end has been read (each fails at once).
pub(super) const DEAD_CONNECTIONS: usize = POOL_SIZE + 1;

/// `(connection, value)` of `$work`, a future using the pooled connection
/// `$client`, run again on another connection when that one turns out dead.
/// Only for work that is safe to repeat: reads, and preparing a statement
/// (nothing runs). Returns from the calling function on other errors.
macro_rules! on_a_live_connection {
    ($source:expr, |$client:ident| $work:expr) => {{
        let mut dead = 0;
        loop {
            let $client = $source.client().await?;
            match $work.await {
                Ok(value) => break ($client, value),
                Err(e) if connection_lost(&e) && dead < DEAD_CONNECTIONS => {
                    dead += 1;
                    tracing::debug!(
                        "a pooled connection to the events database is gone ({}); taking another",
                        pg_error(&e)
                    );
                    drop(deadpool_postgres::Object::take($client));
                }
                Err(e) => return Err(pg_error(&e)),
            }
        }
    }};
}
pub(super) use on_a_live_connection;

/// The events table on PostgreSQL.
pub struct PgSource {
    config: Config,
    pool: Pool,
    handle: Handle,
    /// Bumped on every notification; the listener holds it weakly and stops
    /// when the source is dropped.
    pub(super) wake: Arc<watch::Sender<u64>>,
    /// Transaction ids of recent appends through reel, by position, so a
    /// read with `min_position` right after an append needs no query.
    pub(super) recent: std::sync::Mutex<RecentAppends>,
    /// Set by [`PgSource::close`]: the listener stops.
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// A bounded map of position to transaction id.
#[derive(Default)]
pub(super) struct RecentAppends {
    order: std::collections::VecDeque<i64>,
    tx: HashMap<i64, i64>,
}

/// Appended positions remembered for `cursor_of`.
const RECENT_APPENDS: usize = 65_536;

impl RecentAppends {
    pub(super) fn remember(&mut self, position: i64, tx: i64) {
        if self.order.len() == RECENT_APPENDS
            && let Some(old) = self.order.pop_front()
        {
            self.tx.remove(&old);
        }
        self.order.push_back(position);
        self.tx.insert(position, tx);
    }
}

impl PgSource {
    /// Connect, migrate, check transaction ids, and start listening for
    /// appends. Must run inside a multi-threaded tokio runtime.
    pub async fn open(url: &str) -> Result<Self, SourceError> {
        let config: Config = url.parse().map_err(|e| SourceError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        let handle = Handle::current();
        let admin = pg::connect(&config, &handle).await.map_err(|e| match connection_lost(&e) {
            true => SourceError::Unreachable(pg::with_cause(&e)),
            false => pg_error(&e),
        })?;
        admin.batch_execute("CREATE SCHEMA IF NOT EXISTS reel").await.map_err(|e| pg_error(&e))?;
        let options: sqlx::postgres::PgConnectOptions =
            url.parse().map_err(|e| SourceError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        // sqlx keeps its bookkeeping table in reel's schema, not beside the user's.
        let mut conn = options.options([("search_path", "reel")]).connect().await?;
        MIGRATIONS.run(&mut conn).await?;
        sqlx::Connection::close(conn).await?;
        check_transaction_ids(&admin).await?;

        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| SourceError::Internal(format!("building the connection pool: {e}")))?;
        let wake = Arc::new(watch::channel(0).0);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(listen(config.clone(), Arc::downgrade(&wake), Arc::clone(&closed)));
        Ok(Self { config, pool, handle, wake, recent: Default::default(), closed })
    }

    /// Stop listening for notifications.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The connection settings (the store connects its roles to the same server).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The pool of admin connections.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A reader with its own connection (blocking; for worker threads).
    pub fn reader(&self) -> Result<PgReader, SourceError> {
        let client =
            pg::connect_blocking(&self.config, &self.handle).map_err(|e| SourceError::Internal(e.to_string()))?;
        PgReader::new(client, self.handle.clone())
    }

    /// Changes on every notification (and after reconnecting the listener).
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, SourceError> {
        self.pool.get().await.map_err(|e| SourceError::Unavailable(e.to_string()))
    }

    /// Append in one statement: the version check and the insert share a
    /// snapshot, and the insert is the transaction's first write, so
    /// per-stream order holds (docs/postgres.md). Without an expected
    /// version, a concurrent append to the same stream is retried.
    ///
    /// The statement is prepared first, on its own: a connection the server
    /// closed fails there, before anything could be written, and the append
    /// moves to another connection. Once the insert is sent, a lost
    /// connection is [`SourceError::OutcomeUnknown`]: it may have committed
    /// (the statement commits on its own), and sending it again could append
    /// twice (ADR 43).
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, SourceError> {
        let (client, statement) = on_a_live_connection!(self, |client| client.prepare(APPEND));
        let mut attempts = 0;
        let (appended, tx) = loop {
            attempts += 1;
            match append(&**client, &statement, &request).await {
                Ok(Ok(appended)) => break appended,
                Ok(Err(actual)) => return Err(conflict(&request, actual)),
                Err(e) if is_conflict(&e) && request.expected_version.is_none() && attempts < 10 => continue,
                Err(e) if is_conflict(&e) => {
                    let actual: i64 = client
                        .query_one(
                            "SELECT coalesce(max(version), 0)::bigint FROM public.events WHERE stream_id = $1",
                            &[&request.stream_id],
                        )
                        .await
                        .map_err(|e| pg_error(&e))?
                        .get(0);
                    return Err(conflict(&request, actual));
                }
                Err(e) => return Err(outcome_unknown_if_lost(&e)),
            }
        };
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        for position in &appended.positions {
            recent.remember(*position, tx);
        }
        Ok(appended)
    }

    /// Events of one stream after a version, by the `(stream_id, version)`
    /// index. Versions of a stream commit in order (the unique index makes a
    /// later version wait for the earlier one's transaction), so a read never
    /// sees a gap that fills in later.
    pub async fn read_stream(&self, stream: &str, after_version: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let sql = "SELECT id, stream_id, version::bigint, event_type, data::text, metadata::text, occurred_at \
                     FROM public.events WHERE stream_id = $1 AND version > $2::bigint ORDER BY version LIMIT $3";
        let (_, rows) =
            on_a_live_connection!(self, |c| query_cached(&c, sql, &[&stream, &after_version, &(limit as i64)]));
        Ok(rows
            .iter()
            .map(|row| Event {
                position: row.get(0),
                stream_id: row.get(1),
                version: row.get(2),
                event_type: row.get(3),
                data: row.get(4),
                metadata: row.get(5),
                occurred_at: match column(row, 6) {
                    Ok(Value::Text(t)) => t,
                    _ => format_micros(0),
                },
            })
            .collect())
    }

    /// Largest event id.
    pub async fn head(&self) -> Result<i64, SourceError> {
        let row = on_a_live_connection!(self, |c| c.query_one("SELECT coalesce(max(id), 0) FROM public.events", &[])).1;
        Ok(row.get(0))
    }

    /// The id sequence's last value: ids handed out to transactions that may
    /// still be committing count.
    pub async fn last_issued(&self) -> Result<i64, SourceError> {
        let sql = "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('public.events', 'id')::regclass), 0)";
        let row = on_a_live_connection!(self, |c| c.query_one(sql, &[])).1;
        Ok(row.get(0))
    }

    /// The cursor of the committed event at `position`.
    pub async fn cursor_of(&self, position: i64) -> Result<Option<Cursor>, SourceError> {
        let known = self.recent.lock().unwrap_or_else(|p| p.into_inner()).tx.get(&position).copied();
        if let Some(tx) = known {
            return Ok(Some(Cursor { tx, id: position }));
        }
        let sql = "SELECT transaction_id::text FROM public.events WHERE id = $1";
        let row = on_a_live_connection!(self, |c| c.query_opt(sql, &[&position])).1;
        Ok(row.map(|r| Cursor { tx: parse_xid(r.get(0)), id: position }))
    }

    /// Committed events after `cursor`.
    pub async fn count_after(&self, cursor: Cursor) -> Result<i64, SourceError> {
        let sql = "SELECT count(*) FROM public.events WHERE (transaction_id, id) > ($1::text::xid8, $2)";
        let row = on_a_live_connection!(self, |c| c.query_one(sql, &[&cursor.tx.to_string(), &cursor.id])).1;
        Ok(row.get(0))
    }

    /// `occurred_at` of the first committed event after `cursor`.
    pub async fn oldest_after(&self, cursor: Cursor) -> Result<Option<String>, SourceError> {
        let sql = "SELECT occurred_at FROM public.events WHERE (transaction_id, id) > ($1::text::xid8, $2) \
                   ORDER BY transaction_id, id LIMIT 1";
        let row = on_a_live_connection!(self, |c| c.query_opt(sql, &[&cursor.tx.to_string(), &cursor.id])).1;
        Ok(row.and_then(|r| match column(&r, 0) {
            Ok(Value::Text(t)) => Some(t),
            _ => None,
        }))
    }

    /// When committed events after `cursor` are held back by an open
    /// transaction, the backend holding it.
    pub async fn lag_cause(&self, cursor: Cursor) -> Result<Option<LagCause>, SourceError> {
        let held = format!(
            "WITH {HORIZON} SELECT EXISTS (SELECT 1 FROM public.events, snap \
              WHERE (transaction_id, id) > ($1::text::xid8, $2) AND transaction_id >= snap.xmin)"
        );
        // The transaction at the horizon, else the oldest that may write here.
        let holder = format!(
            "WITH {HORIZON} SELECT pid, backend_xid::text, age(backend_xid), state, \
                    extract(epoch FROM now() - xact_start)::float8, usename::text, application_name, \
                    left(query, 200) \
               FROM pg_stat_activity, snap \
              WHERE backend_xid IS NOT NULL AND datname = current_database() \
                AND usename::text NOT IN (SELECT role_name FROM reel.namespaces WHERE coalesce(emit_prefix, '') = '') \
              ORDER BY backend_xid = snap.xmin::xid DESC, age(backend_xid) DESC LIMIT 1"
        );
        let tx = cursor.tx.to_string();
        let (_, row) = on_a_live_connection!(self, |c| async {
            let held: bool = c.query_one(&held, &[&tx, &cursor.id]).await?.get(0);
            if !held {
                return Ok(None);
            }
            c.query_opt(&holder, &[]).await
        });
        Ok(row.map(|r| LagCause {
            pid: r.get(0),
            xid: r.get(1),
            xid_age: r.get(2),
            state: r.get(3),
            seconds: r.get(4),
            user: r.get(5),
            application: r.get(6),
            query: r.get(7),
        }))
    }
}

impl EventLog for PgSource {
    fn reader(&self) -> Result<Box<dyn EventReader>, SourceError> {
        Ok(Box::new(PgSource::reader(self)?))
    }

    /// Every cursor past the start names a transaction (`xid8` is never 0).
    fn could_have_issued(&self, cursor: Cursor) -> bool {
        cursor.tx != 0 || cursor.id == 0
    }

    fn append(&self, request: AppendRequest) -> LogFuture<'_, Appended> {
        Box::pin(PgSource::append(self, request))
    }

    fn read_stream(&self, stream: &str, after_version: i64, limit: usize) -> LogFuture<'_, Vec<Event>> {
        let stream = stream.to_owned();
        Box::pin(async move { PgSource::read_stream(self, &stream, after_version, limit).await })
    }

    fn head(&self) -> LogFuture<'_, i64> {
        Box::pin(PgSource::head(self))
    }

    fn last_issued(&self) -> LogFuture<'_, i64> {
        Box::pin(PgSource::last_issued(self))
    }

    fn cursor_of(&self, position: i64) -> LogFuture<'_, Option<Cursor>> {
        Box::pin(PgSource::cursor_of(self, position))
    }

    fn count_after(&self, cursor: Cursor) -> LogFuture<'_, i64> {
        Box::pin(PgSource::count_after(self, cursor))
    }

    fn oldest_after(&self, cursor: Cursor) -> LogFuture<'_, Option<String>> {
        Box::pin(PgSource::oldest_after(self, cursor))
    }

    fn lag_cause(&self, cursor: Cursor) -> LogFuture<'_, Option<LagCause>> {
        Box::pin(PgSource::lag_cause(self, cursor))
    }

    /// `reel.fire_timers`, as reel's user (no namespace role may run it).
    fn fire_timers(&self, reactor: String, now_micros: i64) -> LogFuture<'_, TimersFired> {
        Box::pin(async move {
            let sql = "SELECT fired, pending, next_due FROM reel.fire_timers($1, $2)";
            let (_, row) = on_a_live_connection!(self, |c| c.query_one(sql, &[&reactor, &now_micros]));
            let fired = TimersFired {
                fired: row.get::<_, i32>(0) as u64,
                pending: row.get::<_, i32>(1) as u64,
                next_due: row.get(2),
            };
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
        Box::pin(async move {
            // The hold: an advisory lock of a session of its own, which the
            // owner keeps open while it delivers; PostgreSQL lets the lock go
            // when the session ends, however its process ended.
            let failed = |e: tokio_postgres::Error| match connection_lost(&e) {
                true => SourceError::Unreachable(pg::with_cause(&e)),
                false => pg_error(&e),
            };
            let session = pg::connect(&self.config, &self.handle).await.map_err(failed)?;
            let lock = "SELECT pg_try_advisory_lock(hashtextextended('reel.sink/' || $1, 0))";
            let locked: bool = session.query_one(lock, &[&name]).await.map_err(failed)?.get(0);
            let insert = "INSERT INTO reel.sinks (name) VALUES ($1) ON CONFLICT DO NOTHING";
            session.execute(insert, &[&name]).await.map_err(failed)?;
            // Held: whatever the lease says. Not: its owner's own, or once
            // the lease ran out.
            let claim = "UPDATE reel.sinks SET owner = $2, lease_until = $4 \
                         WHERE name = $1 AND ($5 OR owner IS NULL OR owner = $2 OR lease_until < $3) RETURNING tx, position";
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&name, &owner, &now_micros, &until_micros, &locked];
            let rows = session.query(claim, &params).await.map_err(failed)?;
            let hold = locked.then(|| SinkHold::new(session));
            Ok(rows.first().map(|r| (Cursor { tx: r.get(0), id: r.get(1) }, hold)))
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
        Box::pin(async move {
            let sql = "UPDATE reel.sinks SET tx = $5, position = $6, lease_until = $7 \
                       WHERE name = $1 AND owner = $2 AND tx = $3 AND position = $4";
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&name, &owner, &from.tx, &from.id, &to.tx, &to.id, &until_micros];
            let (_, moved) = on_a_live_connection!(self, |c| c.execute(sql, &params));
            Ok(moved == 1)
        })
    }

    fn release_sink(&self, name: String, owner: String) -> LogFuture<'_, ()> {
        Box::pin(async move {
            let sql = "UPDATE reel.sinks SET owner = NULL, lease_until = 0 WHERE name = $1 AND owner = $2";
            let _ = on_a_live_connection!(self, |c| c.execute(sql, &[&name, &owner]));
            Ok(())
        })
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        PgSource::wakeups(self)
    }

    fn close(&self) {
        PgSource::close(self)
    }
}

pub(super) fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

pub(super) fn conflict(request: &AppendRequest, actual: i64) -> SourceError {
    SourceError::VersionConflict {
        stream: request.stream_id.clone(),
        expected: request.expected_version.unwrap_or(actual),
        actual,
    }
}

/// One append statement, and the transaction id it got. `Ok(Err(actual))`:
/// the stream is at `actual`, not the expected version; a concurrent append
/// shows as a unique violation.
/// The append: the version check and the insert in one statement.
pub(super) const APPEND: &str = "WITH current AS (SELECT coalesce(max(version), 0) AS version FROM public.events WHERE stream_id = $1) \
     INSERT INTO public.events (stream_id, version, event_type, data, metadata) \
     SELECT $1, current.version + u.n, u.t, u.d::jsonb, u.m::jsonb \
       FROM current, unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(t, d, m, n) \
      WHERE $2::bigint IS NULL OR current.version = $2 \
     RETURNING id, version::bigint, transaction_id::text";

/// `sql`'s rows, its statement prepared once per pooled connection: one
/// round trip to the server instead of two (a statement given as text is
/// prepared, then run). For reads, which a lost connection repeats
/// elsewhere; an append prepares its statement anew, to find a dead
/// connection before anything is written ([`PgSource::append`]).
pub(super) async fn query_cached(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

/// Whether `e` says the connection is gone: closed, broken, or its session
/// ended by the server (class 57P: a shutdown, `pg_terminate_backend`;
/// class 08: connection exceptions).
pub(super) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    let io = std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>());
    let ended = e.code().is_some_and(|c| c.code().starts_with("57P") || c.code().starts_with("08"));
    e.is_closed() || io || ended
}

pub(super) async fn append(
    client: &impl tokio_postgres::GenericClient,
    statement: &tokio_postgres::Statement,
    request: &AppendRequest,
) -> Result<Result<(Appended, i64), i64>, tokio_postgres::Error> {
    let types: Vec<&str> = request.events.iter().map(|e| e.event_type.as_str()).collect();
    let data: Vec<String> = request.events.iter().map(|e| e.data.to_string()).collect();
    let metadata: Vec<String> =
        request.events.iter().map(|e| e.metadata.as_ref().map_or_else(|| "{}".to_owned(), |m| m.to_string())).collect();
    let rows =
        client.query(statement, &[&request.stream_id, &request.expected_version, &types, &data, &metadata]).await?;
    if rows.is_empty() {
        let actual: i64 = client
            .query_one(
                "SELECT coalesce(max(version), 0)::bigint FROM public.events WHERE stream_id = $1",
                &[&request.stream_id],
            )
            .await?
            .get(0);
        return Ok(Err(actual));
    }
    let tx = parse_xid(rows[0].get(2));
    let mut ids: Vec<(i64, i64)> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    ids.sort_unstable();
    let version = ids.last().map_or(0, |(v, _)| *v);
    Ok(Ok((Appended { positions: ids.into_iter().map(|(_, id)| id).collect(), version }, tx)))
}

/// An error of a statement that commits on its own, or of a `COMMIT`: when
/// the connection was lost, the server may have committed before it went
/// (a crash after the commit record was flushed, a network cut), so the
/// outcome is unknown; any other error is the server's refusal.
pub(super) fn outcome_unknown_if_lost(e: &tokio_postgres::Error) -> SourceError {
    match connection_lost(e) {
        true => SourceError::OutcomeUnknown(pg_error(e).to_string()),
        false => pg_error(e),
    }
}

pub(super) fn pg_error(e: &tokio_postgres::Error) -> SourceError {
    SourceError::Unavailable(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => pg::with_cause(e),
    })
}

pub(super) fn parse_xid(text: &str) -> i64 {
    text.parse().unwrap_or(0)
}

/// Refuse to start when transaction ids went backwards (a dump restored
/// into a new cluster): new events would sort before old ones and be missed.
async fn check_transaction_ids(client: &Client) -> Result<(), SourceError> {
    let row = client
        .query_one(
            "SELECT (SELECT transaction_id::text FROM public.events ORDER BY transaction_id DESC LIMIT 1), \
                    (SELECT max(tx) FROM reel.checkpoints)::text, \
                    pg_snapshot_xmax(pg_current_snapshot())::text",
            &[],
        )
        .await
        .map_err(|e| pg_error(&e))?;
    let events: Option<i64> = row.get::<_, Option<&str>>(0).map(parse_xid);
    let checkpoints: Option<i64> = row.get::<_, Option<&str>>(1).map(parse_xid);
    let now = parse_xid(row.get(2));
    let highest = events.max(checkpoints).unwrap_or(0);
    if highest >= now {
        return Err(SourceError::Invalid(format!(
            "transaction ids went backwards: the events table or reel's checkpoints hold transaction id {highest}, \
             but this PostgreSQL cluster is only at {now}. This happens when a dump is restored into a new cluster. \
             New events would sort before old ones and projections would miss them, so reel refuses to start. \
             To reset, in one transaction: `UPDATE public.events SET transaction_id = '3';` (old events keep their \
             id order) and `UPDATE reel.checkpoints SET tx = 0, position = 0, initialized = false;` then rebuild \
             the projections (or drop their schemas with DELETE /projections/{{name}}). See docs/postgres.md."
        )));
    }
    Ok(())
}

/// Keep a LISTEN connection; every notification (and every reconnect,
/// since notifications are lost while disconnected) wakes the workers.
async fn listen(config: Config, wake: std::sync::Weak<watch::Sender<u64>>, closed: Arc<std::sync::atomic::AtomicBool>) {
    use futures_util::StreamExt;
    let bump = |wake: &std::sync::Weak<watch::Sender<u64>>| match wake.upgrade() {
        Some(_) if closed.load(std::sync::atomic::Ordering::Relaxed) => false,
        Some(wake) => {
            wake.send_modify(|n| *n = n.wrapping_add(1));
            true
        }
        None => false,
    };
    loop {
        if wake.strong_count() == 0 || closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    // Notifications sent while disconnected are lost: wake
                    // everyone once, now that new ones will arrive.
                    if !bump(&wake) {
                        return Ok(());
                    }
                    std::future::pending::<Result<(), tokio_postgres::Error>>().await
                };
                tokio::pin!(listening);
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => {
                                if !bump(&wake) {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) if closed.load(std::sync::atomic::Ordering::Relaxed) => return,
                            Some(Err(e)) => {
                                tracing::warn!("LISTEN connection lost: {e}; polling until it is back");
                                break;
                            }
                            None => break,
                        },
                        result = &mut listening => {
                            if let Err(e) = result {
                                tracing::warn!("LISTEN failed: {e}");
                            }
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot connect for LISTEN: {e}; polling meanwhile"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl crate::source::Keep for Client {
    fn alive(&self) -> bool {
        !self.is_closed()
    }
}
