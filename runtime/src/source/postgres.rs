//! The production event log: the classic `events` table on PostgreSQL, plus
//! a `transaction_id xid8` column.
//!
//! Ids are drawn before commit, so under concurrent writers they commit out
//! of order and a plain `id > last` reader skips events. reel reads only rows
//! of transactions below its snapshot's `xmin` (all of which have finished),
//! in `(transaction_id, id)` order, and keeps that pair as the cursor: nothing
//! committed later can sort before it.
//!
//! Consequences (see docs/postgres.md): a long writing transaction anywhere in
//! the cluster delays delivery until it ends ([`PgSource::lag_cause`] names
//! it); per-stream order holds for appends at REPEATABLE READ or whose event
//! insert is the transaction's first write; a restore into a new cluster makes
//! transaction ids go backwards, which [`PgSource::open`] detects and refuses.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use sqlx::ConnectOptions;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, IsolationLevel, NoTls, Statement};

use super::{AppendRequest, Appended, Batch, Cursor, Event, EventReader, Filter, SourceError};
use crate::pg;
use crate::source::time::format_micros;
use crate::store::Value;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The channel the events table's trigger notifies.
const CHANNEL: &str = "reel_events";
/// Connections reel's API may hold for appends and status reads.
const POOL_SIZE: usize = 16;

/// The events table on PostgreSQL.
pub struct PgSource {
    config: Config,
    pool: Pool,
    handle: Handle,
    wake: watch::Sender<u64>,
}

/// Why a projection is behind although events are committed: a transaction
/// that started before them is still open somewhere in the cluster.
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

impl PgSource {
    /// Connect, migrate, check transaction ids, and start listening for
    /// appends. Must run inside a multi-threaded tokio runtime.
    pub async fn open(url: &str) -> Result<Self, SourceError> {
        let config: Config = url.parse().map_err(|e| SourceError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        let handle = Handle::current();
        let admin = pg::connect(&config, &handle).await.map_err(|e| pg_error(&e))?;
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
        let (wake, _) = watch::channel(0);
        tokio::spawn(listen(config.clone(), wake.clone()));
        Ok(Self { config, pool, handle, wake })
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
        Ok(PgReader { client, handle: self.handle.clone(), statements: HashMap::new() })
    }

    /// Changes on every notification (and after reconnecting the listener).
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SourceError> {
        self.pool.get().await.map_err(|e| SourceError::Unavailable(e.to_string()))
    }

    /// Append at REPEATABLE READ, with the version check as the first
    /// statement and the insert as the first write: per-stream order holds.
    /// Without an expected version, a concurrent append is retried.
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, SourceError> {
        let mut client = self.client().await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match append(&mut client, &request).await {
                Ok(Ok(appended)) => return Ok(appended),
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
                Err(e) => return Err(pg_error(&e)),
            }
        }
    }

    /// Largest event id.
    pub async fn head(&self) -> Result<i64, SourceError> {
        let client = self.client().await?;
        let row =
            client.query_one("SELECT coalesce(max(id), 0) FROM public.events", &[]).await.map_err(|e| pg_error(&e))?;
        Ok(row.get(0))
    }

    /// The cursor of the committed event at `position`.
    pub async fn cursor_of(&self, position: i64) -> Result<Option<Cursor>, SourceError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT transaction_id::text FROM public.events WHERE id = $1", &[&position])
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(row.map(|r| Cursor { tx: parse_xid(r.get(0)), id: position }))
    }

    /// Committed events after `cursor`.
    pub async fn count_after(&self, cursor: Cursor) -> Result<i64, SourceError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM public.events WHERE (transaction_id, id) > ($1::text::xid8, $2)",
                &[&cursor.tx.to_string(), &cursor.id],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(row.get(0))
    }

    /// `occurred_at` of the first committed event after `cursor`.
    pub async fn oldest_after(&self, cursor: Cursor) -> Result<Option<String>, SourceError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT occurred_at FROM public.events WHERE (transaction_id, id) > ($1::text::xid8, $2) \
                 ORDER BY transaction_id, id LIMIT 1",
                &[&cursor.tx.to_string(), &cursor.id],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(row.and_then(|r| match pg::value::column(&r, 0) {
            Ok(Value::Text(t)) => Some(t),
            _ => None,
        }))
    }

    /// When committed events after `cursor` are held back by an open
    /// transaction, the backend holding it.
    pub async fn lag_cause(&self, cursor: Cursor) -> Result<Option<LagCause>, SourceError> {
        let client = self.client().await?;
        let held: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM public.events WHERE (transaction_id, id) > ($1::text::xid8, $2) \
                 AND transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))",
                &[&cursor.tx.to_string(), &cursor.id],
            )
            .await
            .map_err(|e| pg_error(&e))?
            .get(0);
        if !held {
            return Ok(None);
        }
        let row = client
            .query_opt(
                "SELECT pid, backend_xid::text, age(backend_xid), state, \
                        extract(epoch FROM now() - xact_start)::float8, usename::text, application_name, \
                        left(query, 200) \
                   FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
                  ORDER BY age(backend_xid) DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(|e| pg_error(&e))?;
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

fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

fn conflict(request: &AppendRequest, actual: i64) -> SourceError {
    SourceError::VersionConflict {
        stream: request.stream_id.clone(),
        expected: request.expected_version.unwrap_or(actual),
        actual,
    }
}

/// One append transaction. `Ok(Err(actual))`: the stream is at `actual`, not
/// the expected version; a concurrent append shows as a unique violation.
async fn append(
    client: &mut deadpool_postgres::Object,
    request: &AppendRequest,
) -> Result<Result<Appended, i64>, tokio_postgres::Error> {
    let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start().await?;
    let current: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM public.events WHERE stream_id = $1",
            &[&request.stream_id],
        )
        .await?
        .get(0);
    if let Some(expected) = request.expected_version
        && expected != current
    {
        return Ok(Err(current));
    }
    let versions: Vec<i32> = (1..=request.events.len() as i64).map(|i| (current + i) as i32).collect();
    let types: Vec<&str> = request.events.iter().map(|e| e.event_type.as_str()).collect();
    let data: Vec<String> = request.events.iter().map(|e| e.data.to_string()).collect();
    let metadata: Vec<String> =
        request.events.iter().map(|e| e.metadata.as_ref().map_or_else(|| "{}".to_owned(), |m| m.to_string())).collect();
    let rows = tx
        .query(
            "INSERT INTO public.events (stream_id, version, event_type, data, metadata) \
             SELECT $1, v, t, d::jsonb, m::jsonb FROM unnest($2::int4[], $3::text[], $4::text[], $5::text[]) AS u(v, t, d, m) \
             RETURNING id, version",
            &[&request.stream_id, &versions, &types, &data, &metadata],
        )
        .await?;
    tx.commit().await?;
    let mut ids: Vec<(i32, i64)> = rows.iter().map(|r| (r.get(1), r.get(0))).collect();
    ids.sort_unstable();
    Ok(Ok(Appended {
        positions: ids.into_iter().map(|(_, id)| id).collect(),
        version: current + request.events.len() as i64,
    }))
}

fn pg_error(e: &tokio_postgres::Error) -> SourceError {
    SourceError::Unavailable(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    })
}

fn parse_xid(text: &str) -> i64 {
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
async fn listen(config: Config, wake: watch::Sender<u64>) {
    use futures_util::StreamExt;
    loop {
        if wake.is_closed() {
            return;
        }
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
                    std::future::pending::<Result<(), tokio_postgres::Error>>().await
                };
                tokio::pin!(listening);
                wake.send_modify(|n| *n = n.wrapping_add(1));
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(_))) => wake.send_modify(|n| *n = n.wrapping_add(1)),
                            Some(Ok(_)) => {}
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
                        () = wake.closed() => return,
                    }
                }
            }
            Err(e) => tracing::warn!("cannot connect for LISTEN: {e}; polling meanwhile"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One worker's reader.
pub struct PgReader {
    client: Client,
    handle: Handle,
    /// Prepared batch queries by filter.
    statements: HashMap<Filter, (Statement, Vec<String>)>,
}

impl EventReader for PgReader {
    fn read_batch(&mut self, after: Cursor, filter: &Filter, limit: usize) -> Result<Batch, SourceError> {
        let client = &self.client;
        let statements = &mut self.statements;
        pg::block_on(&self.handle, async {
            if !statements.contains_key(filter) {
                let condition = filter.condition(4, |n| format!("${n}"));
                let sql = format!(
                    "WITH snap AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), \
                     head AS (SELECT e.transaction_id, e.id FROM public.events e, snap \
                              WHERE e.transaction_id < snap.xmin ORDER BY e.transaction_id DESC, e.id DESC LIMIT 1) \
                     SELECT (SELECT transaction_id::text FROM head), (SELECT id FROM head), \
                            e.transaction_id::text, e.id, e.stream_id, e.version::bigint, e.event_type, \
                            e.data::text, e.metadata::text, e.occurred_at \
                     FROM snap LEFT JOIN LATERAL ( \
                         SELECT * FROM public.events \
                          WHERE (transaction_id, id) > ($1::text::xid8, $2) AND transaction_id < snap.xmin{} \
                          ORDER BY transaction_id, id LIMIT $3) e ON true \
                     ORDER BY e.transaction_id, e.id",
                    condition.sql
                );
                let statement = client.prepare(&sql).await.map_err(|e| pg_error(&e))?;
                statements.insert(filter.clone(), (statement, condition.params));
            }
            let (statement, filter_params) = &statements[filter];
            let tx = after.tx.to_string();
            let limit = limit as i64;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tx, &after.id, &limit];
            params.extend(filter_params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)));
            let rows = client.query(statement, &params).await.map_err(|e| pg_error(&e))?;
            let mut batch = Batch::default();
            let mut head = after;
            for row in &rows {
                if let (Some(tx), Some(id)) = (row.get::<_, Option<&str>>(0), row.get::<_, Option<i64>>(1)) {
                    head = head.max(Cursor { tx: parse_xid(tx), id });
                }
                let Some(tx) = row.get::<_, Option<&str>>(2) else { continue };
                let cursor = Cursor { tx: parse_xid(tx), id: row.get(3) };
                let occurred_at = match pg::value::column(row, 9) {
                    Ok(Value::Text(t)) => t,
                    _ => format_micros(0),
                };
                batch.events.push(Event {
                    position: cursor.id,
                    stream_id: row.get(4),
                    version: row.get(5),
                    event_type: row.get(6),
                    data: row.get(7),
                    metadata: row.get(8),
                    occurred_at,
                });
                batch.cursors.push(cursor);
            }
            batch.next = match batch.cursors.last() {
                Some(last) if batch.events.len() as i64 == limit => *last,
                _ => head,
            };
            Ok(batch)
        })
    }
}
