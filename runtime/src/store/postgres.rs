//! Read models on PostgreSQL: one schema per namespace, owned by a login role
//! of its own.
//!
//! A projection's transaction runs on a connection logged in as its role, so
//! its SQL cannot read `events`, reel's tables or another projection's schema,
//! and cannot escape with `SET ROLE` (it is nobody else). The checkpoint and
//! dead letters live in `reel.*`, reached only through `SECURITY DEFINER`
//! functions that act on the caller's own namespace. KV is `_reel_kv` in the
//! projection's schema (byte-ordered keys).
//!
//! Statements are pipelined: each write is sent as soon as the projection
//! issues it and the server works while the guest goes on; the worker waits
//! only at the next query or the commit, where the first error surfaces.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::runtime::Handle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Statement};

use super::sql_text::{Checked, is_plain_write, quote_ident, refusal, reserved_name};
use super::{Checkpoint, DeadLetter, KvWrite, Namespace, NamespaceId, Rows, StoreError, TableRead, Value};
use crate::pg::value::{ArrayParam, Param, column, unfit, write_literal};
use crate::pg::{
    block_on, block_on_cancelling_past, block_on_with_deadline, connect_blocking, database_error, statement_error,
};
use crate::source::{Cursor, Event};

/// SQLSTATE `reel.advance` raises when the checkpoint moved underneath.
const FENCED: &str = "RL409";
const UNIQUE_VIOLATION: &str = "23505";

/// How a namespace is reached.
#[derive(Debug, Clone)]
struct NamespaceInfo {
    slug: String,
    schema: String,
    role: String,
    password: String,
}

/// Namespaces as schemas of one database.
#[derive(Clone)]
pub struct PgStore {
    config: Config,
    pool: Pool,
    handle: Handle,
}

impl PgStore {
    /// Namespaces in the database of `config`, managed through `pool`
    /// (whose user needs CREATEROLE).
    pub fn new(config: Config, pool: Pool, handle: Handle) -> Self {
        Self { config, pool, handle }
    }

    fn admin<T>(
        &self,
        f: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        block_on(&self.handle, async {
            let mut client = self.pool.get().await.map_err(|e| StoreError::Database(e.to_string()))?;
            f(&mut client).await.map_err(|e| database_error(&e))
        })
    }

    fn info(&self, ns: &NamespaceId) -> Result<Option<NamespaceInfo>, StoreError> {
        let slug = ns.slug();
        self.admin(async |c| {
            let row = c
                .query_opt(
                    "SELECT schema_name, role_name, role_password FROM reel.namespaces WHERE namespace = $1",
                    &[&slug],
                )
                .await?;
            Ok(row.map(|r| NamespaceInfo { slug: slug.clone(), schema: r.get(0), role: r.get(1), password: r.get(2) }))
        })
    }

    /// Create the schema, role, KV table and checkpoint of `ns`.
    fn create(&self, ns: &NamespaceId) -> Result<NamespaceInfo, StoreError> {
        let slug = ns.slug();
        let suffix = random_hex(8);
        let info = NamespaceInfo {
            schema: format!("rp_{}_{suffix}", ns.name.replace('-', "_")),
            role: format!("reel_{}_{}", ns.name.replace('-', "_"), random_hex(6)),
            password: random_hex(24),
            slug: slug.clone(),
        };
        let (schema, role) = (quote_ident(&info.schema), quote_ident(&info.role));
        // `_reel_kv` leaves half of each page free, so a batch that rewrites
        // a key can update it in place (HOT: no new index entry, no bloat).
        // Rewriting 27,777 keys: 63 ms a round, against 118-180 ms and
        // growing with full pages; customer-stats' mix per 100,000 events
        // (55,000 new keys, 27,777 rewritten): 335 ms against 420 ms, for a
        // table 1.4x the size.
        let ddl = format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION; \
             CREATE SCHEMA {schema} AUTHORIZATION {role}; \
             ALTER ROLE {role} SET search_path = {schema}; \
             GRANT USAGE ON SCHEMA reel TO {role}; \
             GRANT EXECUTE ON FUNCTION reel.owns(text), reel.read_checkpoint(text), \
                 reel.advance(text, bigint, bigint, bigint, bigint), \
                 reel.add_dead_letter(text, bigint, text, bigint, text, text, text, text, text), \
                 reel.list_dead_letters(text, bigint, integer), reel.remove_dead_letter(text, bigint) TO {role}; \
             CREATE TABLE {schema}._reel_kv (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL) \
                 WITH (fillfactor = 50); \
             ALTER TABLE {schema}._reel_kv OWNER TO {role};",
            password = info.password,
        );
        let (name, version, generation) = (ns.name.clone(), ns.version.clone(), ns.generation as i32);
        self.admin(async |c| {
            let tx = c.transaction().await?;
            tx.batch_execute(CATALOG_LOCK).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO reel.namespaces (namespace, name, version, generation, schema_name, role_name, role_password) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (namespace) DO NOTHING",
                    &[&slug, &name, &version, &generation, &info.schema, &info.role, &info.password],
                )
                .await?;
            if inserted == 1 {
                tx.batch_execute(&ddl).await?;
                tx.execute("INSERT INTO reel.checkpoints (namespace) VALUES ($1)", &[&slug]).await?;
            }
            tx.commit().await
        })?;
        // Someone else may have created it first: use what is recorded.
        self.info(ns)?.ok_or_else(|| StoreError::Database(format!("namespace {ns} vanished while being created")))
    }

    /// Open `ns` (created when opening for writing); a transaction's
    /// statements are cancelled past `deadline`.
    pub fn open(
        &self,
        ns: &NamespaceId,
        read_only: bool,
        deadline: Duration,
    ) -> Result<Option<PgNamespace>, StoreError> {
        let info = match (self.info(ns)?, read_only) {
            (Some(info), _) => info,
            (None, true) => return Ok(None),
            (None, false) => self.create(ns)?,
        };
        let mut config = self.config.clone();
        config.user(&info.role).password(info.password.as_bytes()).application_name(format!("reel {}", info.slug));
        let client = connect_blocking(&config, &self.handle)?;
        Ok(Some(PgNamespace::new(client, self.handle.clone(), info, read_only, deadline)?))
    }

    /// Whether `ns` exists.
    pub fn exists(&self, ns: &NamespaceId) -> bool {
        matches!(self.info(ns), Ok(Some(_)))
    }

    /// Drop the schema and role of `ns` and its rows in `reel.*`.
    pub fn drop_namespace(&self, ns: &NamespaceId) -> Result<(), StoreError> {
        let Some(info) = self.info(ns)? else { return Ok(()) };
        let (schema, role) = (quote_ident(&info.schema), quote_ident(&info.role));
        let slug = info.slug;
        self.admin(async |c| {
            c.batch_execute(&format!(
                "{CATALOG_LOCK}; \
                 DROP SCHEMA IF EXISTS {schema} CASCADE; \
                 REVOKE ALL ON SCHEMA reel FROM {role}; \
                 REVOKE ALL ON ALL FUNCTIONS IN SCHEMA reel FROM {role}"
            ))
            .await?;
            c.execute("DELETE FROM reel.namespaces WHERE namespace = $1", &[&slug]).await?;
            c.execute("DELETE FROM reel.active WHERE namespace = $1", &[&slug]).await?;
            Ok(())
        })?;
        // Its connections may still be closing; a role with sessions cannot go yet.
        for attempt in 0..20 {
            let role = role.clone();
            match self.admin(async |c| c.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 19 => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Ok(())
    }

    /// Namespaces recorded in `reel.namespaces`.
    pub fn namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
        self.admin(async |c| {
            let rows = c.query("SELECT namespace FROM reel.namespaces ORDER BY namespace", &[]).await?;
            Ok(rows.iter().filter_map(|r| NamespaceId::from_slug(r.get(0))).collect())
        })
    }

    /// The namespace serving reads of each projection.
    pub fn active_namespaces(&self) -> Result<Vec<NamespaceId>, StoreError> {
        self.admin(async |c| {
            let rows = c.query("SELECT namespace FROM reel.active ORDER BY name", &[]).await?;
            Ok(rows.iter().filter_map(|r| NamespaceId::from_slug(r.get(0))).collect())
        })
    }

    /// Record `ns` as serving reads.
    pub fn set_active(&self, ns: &NamespaceId) -> Result<(), StoreError> {
        let (name, slug) = (ns.name.clone(), ns.slug());
        self.admin(async |c| {
            c.execute(
                "INSERT INTO reel.active (name, namespace) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET namespace = excluded.namespace",
                &[&name, &slug],
            )
            .await
            .map(drop)
        })
    }

    /// Forget a projection.
    pub fn forget(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.admin(async |c| c.execute("DELETE FROM reel.active WHERE name = $1", &[&name]).await.map(drop))
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// An operation of a batch, sent to the server as soon as it is queued.
enum Op {
    Begin,
    Statement {
        sql: String,
        params: Vec<Value>,
    },
    /// KV values: inserted when every key is new, upserted otherwise.
    KvPut {
        insert: bool,
        keys: ArrayParam,
        values: ArrayParam,
    },
    KvDelete {
        keys: ArrayParam,
    },
    Advance {
        from: Cursor,
        to: Cursor,
    },
    DeadLetter {
        event: Box<Event>,
        error: String,
    },
    Commit,
}

/// How to read an operation's failure.
#[derive(Debug, Clone, Copy)]
enum Blame {
    /// The projection's own statement: its fault.
    Guest,
    /// The checkpoint compare-and-set (fenced when it fails with `RL409`).
    Advance(Cursor),
    /// reel's own statements: the database's fault.
    Host,
    /// The insert of KV keys taken for new.
    KvInsert,
}

type Flight = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// The first failure since the last sync, if any.
type SyncReply = Option<(Blame, tokio_postgres::Error)>;

/// Messages to the pipeline task.
enum Message {
    Send(Blame, Flight),
    /// Report the first failure since the last sync, once everything sent so
    /// far has been answered.
    Sync(tokio::sync::oneshot::Sender<SyncReply>),
}

/// Keeps a connection's requests flowing: operations are polled (and so
/// sent) in the order they were queued, while the worker goes on with the
/// guest; the worker waits only at a sync (a query, the commit).
async fn pipeline(mut messages: tokio::sync::mpsc::UnboundedReceiver<Message>) {
    use futures_util::StreamExt;
    let mut flying = futures_util::stream::FuturesOrdered::new();
    let mut failure = None;
    let mut waiting: Option<tokio::sync::oneshot::Sender<_>> = None;
    loop {
        if flying.is_empty()
            && let Some(reply) = waiting.take()
        {
            let _ = reply.send(failure.take());
        }
        tokio::select! {
            biased;
            message = messages.recv(), if waiting.is_none() => match message {
                Some(Message::Send(blame, flight)) => flying.push_back(async move { (blame, flight.await) }),
                Some(Message::Sync(reply)) => waiting = Some(reply),
                None => {
                    while flying.next().await.is_some() {}
                    return;
                }
            },
            Some((blame, result)) = flying.next(), if !flying.is_empty() => {
                if let Err(e) = result {
                    failure.get_or_insert((blame, e));
                }
            }
        }
    }
}

/// Why `params` cannot be sent with `statement`: what tokio-postgres and
/// [`Param`] would refuse before sending.
fn unsendable(statement: &Statement, params: &[Value]) -> Option<String> {
    let types = statement.params();
    if types.len() != params.len() {
        return Some(format!("the statement takes {} parameters; {} given", types.len(), params.len()));
    }
    types
        .iter()
        .zip(params)
        .enumerate()
        .find_map(|(n, (ty, value))| Some(format!("parameter ${}: {}", n + 1, unfit(value, ty)?)))
}

fn pipeline_stopped() -> StoreError {
    StoreError::Database("the connection's pipeline stopped".into())
}

/// What a failure the pipeline reported means for the batch.
fn failure_error(blame: Blame, e: &tokio_postgres::Error) -> StoreError {
    match (blame, e.code().map(|c| c.code())) {
        (Blame::Advance(from), Some(FENCED)) => StoreError::Fenced { expected: from, found: None },
        (Blame::Guest, _) => statement_error(e),
        (Blame::KvInsert, Some(UNIQUE_VIOLATION)) => StoreError::KvStale(format!(
            "a KV key taken for new is in the table already ({}): another writer, or a stale cache; \
             the cache is dropped and the batch's next attempt upserts every key",
            e.as_db_error().map_or("", |db| db.message())
        )),
        _ => database_error(e),
    }
}

/// Creating and dropping namespaces grant and revoke on the same catalog rows
/// (schema `reel` and its functions); run at once, PostgreSQL fails one with
/// "XX000: tuple concurrently updated" (seen when several projections start
/// together), so each takes this lock first. (The two-key form: apart from
/// the one-key locks that claim namespaces.)
const CATALOG_LOCK: &str = "SELECT pg_advisory_xact_lock(1919251820, 1)";

/// The transaction committed behind the current one on a connection.
enum Behind {
    /// None, or one that committed.
    Clear,
    /// Its commit is sent: the answer, and when it began (its deadline runs
    /// from then).
    Pending(tokio::sync::oneshot::Receiver<SyncReply>, Instant),
    /// It failed, and [`Namespace::settle`] has not reported it yet.
    Failed(StoreError),
}

/// Operations queued since the last sync past which the worker waits for
/// the server (bounds the memory held by requests in flight).
const MAX_IN_FLIGHT: usize = 8192;

/// Projection writes that go as `EXECUTE`s of one simple query, at most
/// this many, or about this many bytes, per query; a write whose `EXECUTE`
/// alone is longer goes on its own (its values, escaped or in hex, would
/// take up to twice their size).
const EXECS_PER_QUERY: usize = 1000;
const EXEC_QUERY_BYTES: usize = 256 * 1024;
/// Most parameters a statement may have to go as `EXECUTE`s. The server lexes
/// and parses each literal of an `EXECUTE` as SQL, while Bind hands it the
/// values; and a statement with many (a multi-row `INSERT`) writes many rows
/// per Sync anyway. `order-summaries` folded per batch (128-row upserts of 1,024
/// parameters), 1M events, three alternating pairs 2026-11-28 12:01-12:10 UTC:
/// server CPU per event 20.8, 23.1, 21.1 µs as `EXECUTE`s; 18.2, 17.9, 20.8 µs
/// with those bound (ADR 16).
const EXEC_MAX_PARAMS: usize = 16;

/// One namespace through a connection logged in as its role.
pub struct PgNamespace {
    client: Arc<Client>,
    handle: Handle,
    info: NamespaceInfo,
    read_only: bool,
    /// Prepared statements of this connection, by text.
    statements: HashMap<String, Statement>,
    pipeline: tokio::sync::mpsc::UnboundedSender<Message>,
    /// Operations sent since the last sync.
    in_flight: usize,
    in_tx: bool,
    /// The first failure of this transaction: it is aborted, and so is the batch.
    failed: Option<StoreError>,
    /// The transaction committed behind this one.
    behind: Behind,
    deadline: Duration,
    started: Instant,
    /// Projection statements that passed the checks.
    checked: Checked<()>,
    /// The SQL-level name of each projection write prepared for `EXECUTE`
    /// (`None`: sent on its own), by text; see [`PgNamespace::prepare_exec`].
    exec_names: HashMap<String, Option<String>>,
    /// `EXECUTE`s not sent yet, and how many.
    execs: String,
    exec_count: usize,
}

const BEGIN_WRITE: &str = "BEGIN";
const BEGIN_READ: &str = "BEGIN READ ONLY";
const COMMIT: &str = "COMMIT";
const KV_UPSERT: &str = "INSERT INTO _reel_kv (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value";
// Keys the worker knows absent skip the upsert's conflict check (55,000 new
// keys of 83,000 per 100,000 events of customer-stats: 165-201 ms of server
// time as inserts, 255-295 ms as upserts, psql, 2026-11-28).
const KV_INSERT: &str = "INSERT INTO _reel_kv (key, value) SELECT * FROM unnest($1::text[], $2::bytea[])";
const KV_DELETE: &str = "DELETE FROM _reel_kv WHERE key = ANY($1::text[])";
const ADVANCE: &str = "SELECT reel.advance($1, $2, $3, $4, $5)";
const DEAD_LETTER: &str = "SELECT reel.add_dead_letter($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// reel's own statements, prepared when the connection opens.
const OWN_STATEMENTS: [&str; 8] =
    [BEGIN_WRITE, BEGIN_READ, COMMIT, KV_UPSERT, KV_INSERT, KV_DELETE, ADVANCE, DEAD_LETTER];

impl PgNamespace {
    fn new(
        client: Client,
        handle: Handle,
        info: NamespaceInfo,
        read_only: bool,
        deadline: Duration,
    ) -> Result<Self, StoreError> {
        let (pipeline, messages) = tokio::sync::mpsc::unbounded_channel();
        handle.spawn(self::pipeline(messages));
        let mut ns = Self {
            client: Arc::new(client),
            handle,
            info,
            read_only,
            statements: HashMap::new(),
            pipeline,
            in_flight: 0,
            in_tx: false,
            failed: None,
            behind: Behind::Clear,
            deadline,
            started: Instant::now(),
            checked: Checked::default(),
            exec_names: HashMap::new(),
            execs: String::new(),
            exec_count: 0,
        };
        ns.prepare_all(OWN_STATEMENTS.iter().map(|s| s.to_string()).collect(), false)?;
        Ok(ns)
    }

    /// Time left: of the transaction's deadline inside one, a whole
    /// deadline for a single read outside.
    fn remaining(&self) -> Option<Duration> {
        if !self.in_tx {
            return Some(self.deadline);
        }
        Some(self.deadline.saturating_sub(self.started.elapsed()).max(Duration::from_millis(1)))
    }

    /// Prepare the statements of `texts` not prepared yet, pipelined.
    fn prepare_all(&mut self, texts: Vec<String>, guest: bool) -> Result<(), StoreError> {
        let missing: Vec<String> = {
            let mut seen = std::collections::HashSet::new();
            texts.into_iter().filter(|t| !self.statements.contains_key(t) && seen.insert(t.clone())).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let client = &self.client;
        let prepared = block_on_with_deadline(&self.handle, client, self.remaining(), async {
            let futures = missing.iter().map(|t| client.prepare(t));
            Ok(futures_util::future::join_all(futures).await)
        })?;
        for (text, result) in missing.into_iter().zip(prepared) {
            match result {
                Ok(statement) => {
                    self.statements.insert(text, statement);
                }
                Err(e) => return Err(if guest { statement_error(&e) } else { database_error(&e) }),
            }
        }
        Ok(())
    }

    /// Send an operation now, without waiting for its answer.
    fn dispatch(&mut self, op: Op) -> Result<(), StoreError> {
        if self.failed.is_some() {
            return Ok(()); // the transaction is aborted; the error surfaces at the next sync
        }
        if let Op::Statement { sql, .. } = &op
            && !self.statements.contains_key(sql)
        {
            // A new statement may name what earlier ones (DDL) create: let
            // them run first, then prepare it.
            self.sync()?;
            let sql = sql.clone();
            if let Err(e) = self.prepare_all(vec![sql.clone()], true).and_then(|()| self.prepare_exec(&sql)) {
                self.failed = Some(e);
                return Ok(());
            }
        }
        if let Op::Statement { sql, params } = &op
            && let Some(Some(name)) = self.exec_names.get(sql)
            && unsendable(&self.statements[sql], params).is_none()
        {
            let start = self.execs.len();
            self.execs.push_str("EXECUTE ");
            self.execs.push_str(name);
            let written = params.iter().enumerate().all(|(n, value)| {
                self.execs.push_str(if n == 0 { "(" } else { ", " });
                write_literal(value, &mut self.execs)
            });
            if written && self.execs.len() - start <= EXEC_QUERY_BYTES {
                self.execs.push_str(if params.is_empty() { ";\n" } else { ");\n" });
                self.exec_count += 1;
                if self.exec_count < EXECS_PER_QUERY && self.execs.len() < EXEC_QUERY_BYTES {
                    return Ok(());
                }
                return self.send_execs();
            }
            self.execs.truncate(start); // sent on its own, below
        }
        self.send_execs()?;
        let client = Arc::clone(&self.client);
        let statement = |text: &str| self.statements[text].clone();
        let (blame, flight): (Blame, Flight) = match op {
            Op::Begin => {
                let s = statement(if self.read_only { BEGIN_READ } else { BEGIN_WRITE });
                (Blame::Host, Box::pin(async move { client.execute(&s, &[]).await }))
            }
            Op::Commit => {
                let s = statement(COMMIT);
                (Blame::Host, Box::pin(async move { client.execute(&s, &[]).await }))
            }
            Op::Statement { sql, params } => {
                let s = statement(&sql);
                // What the client library would refuse without sending it
                // fails the transaction here: a commit may follow down the
                // pipeline before its answer, and the server, which never
                // saw the statement, would commit the rest.
                if let Some(refusal) = unsendable(&s, &params) {
                    self.failed = Some(StoreError::Refused(refusal));
                    return Ok(());
                }
                let flight = async move {
                    let values: Vec<Param<'_>> = params.iter().map(Param).collect();
                    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                    client.execute(&s, &refs).await
                };
                (Blame::Guest, Box::pin(flight))
            }
            Op::KvPut { insert, keys, values } => {
                let (s, blame) = if insert { (KV_INSERT, Blame::KvInsert) } else { (KV_UPSERT, Blame::Host) };
                let s = statement(s);
                (blame, Box::pin(async move { client.execute(&s, &[&keys, &values]).await }))
            }
            Op::KvDelete { keys } => {
                let s = statement(KV_DELETE);
                (Blame::Host, Box::pin(async move { client.execute(&s, &[&keys]).await }))
            }
            Op::Advance { from, to } => {
                let s = statement(ADVANCE);
                let slug = self.info.slug.clone();
                let flight = async move { client.execute(&s, &[&slug, &from.tx, &from.id, &to.tx, &to.id]).await };
                (Blame::Advance(from), Box::pin(flight))
            }
            Op::DeadLetter { event, error } => {
                let s = statement(DEAD_LETTER);
                let slug = self.info.slug.clone();
                let flight = async move {
                    let e = &*event;
                    client
                        .execute(
                            &s,
                            &[
                                &slug,
                                &e.position,
                                &e.stream_id,
                                &e.version,
                                &e.event_type,
                                &e.data,
                                &e.metadata,
                                &e.occurred_at,
                                &error,
                            ],
                        )
                        .await
                };
                (Blame::Host, Box::pin(flight))
            }
        };
        self.pipeline.send(Message::Send(blame, flight)).map_err(|_| pipeline_stopped())?;
        self.in_flight += 1;
        if self.in_flight >= MAX_IN_FLIGHT { self.sync() } else { Ok(()) }
    }

    /// Prepare a projection write also under a name of its own for
    /// `EXECUTE`, when it is a plain `INSERT`, `UPDATE` or `DELETE` returning
    /// no rows, with at most [`EXEC_MAX_PARAMS`] parameters. Such writes then
    /// go as `EXECUTE`s of one simple query, which the server answers once:
    /// sent as prepared statements, each would end with its own Sync, and the
    /// server would answer and flush each on its own (`order-summaries`' 1M
    /// events one statement each, from a Python client, one run each,
    /// 2026-11-28: 40.1-46.1 µs of server CPU per event with a Sync per
    /// statement, 27.0-28.2 µs with one per 1,000, 29.7 µs as `EXECUTE`s).
    /// A statement `PREPARE` refuses is sent on its own, as before.
    fn prepare_exec(&mut self, sql: &str) -> Result<(), StoreError> {
        if self.exec_names.contains_key(sql) {
            return Ok(());
        }
        let statement = &self.statements[sql];
        let plain = is_plain_write(sql) && statement.columns().is_empty();
        let name = if plain && statement.params().len() <= EXEC_MAX_PARAMS {
            let name = format!("reel_exec_{}", self.exec_names.len());
            let client = &self.client;
            let prepare = format!("PREPARE {name} AS {sql}");
            let prepared = block_on_with_deadline(&self.handle, client, self.remaining(), async {
                let run = async |text: &str| client.batch_execute(text).await.map_err(|e| database_error(&e));
                // In a savepoint: a refusal must not abort the transaction.
                run("SAVEPOINT reel_exec").await?;
                let prepared = client.batch_execute(&prepare).await.is_ok();
                run(if prepared { "RELEASE reel_exec" } else { "ROLLBACK TO reel_exec; RELEASE reel_exec" }).await?;
                Ok(prepared)
            })?;
            prepared.then_some(name)
        } else {
            None
        };
        self.exec_names.insert(sql.to_owned(), name);
        Ok(())
    }

    /// Send the `EXECUTE`s queued, as one simple query.
    fn send_execs(&mut self) -> Result<(), StoreError> {
        if self.exec_count == 0 {
            return Ok(());
        }
        let text = std::mem::take(&mut self.execs);
        let count = std::mem::take(&mut self.exec_count);
        if self.failed.is_some() {
            return Ok(());
        }
        let client = Arc::clone(&self.client);
        let flight = async move { client.batch_execute(&text).await.map(|()| 0) };
        self.pipeline.send(Message::Send(Blame::Guest, Box::pin(flight))).map_err(|_| pipeline_stopped())?;
        self.in_flight += count; // the bound counts statements, as before
        if self.in_flight >= MAX_IN_FLIGHT { self.sync() } else { Ok(()) }
    }

    /// Wait until everything sent has been answered, the transaction
    /// committed behind first; the first failure since the last sync fails
    /// the transaction.
    fn sync(&mut self) -> Result<(), StoreError> {
        let behind = self.await_behind();
        let own = self.sync_own();
        behind.and(own)
    }

    fn sync_own(&mut self) -> Result<(), StoreError> {
        self.send_execs()?;
        if let Some(failed) = &self.failed {
            return Err(failed.clone());
        }
        if self.in_flight == 0 {
            return Ok(());
        }
        self.in_flight = 0;
        let answer = self.send_sync()?;
        let failure = block_on_with_deadline(&self.handle, &self.client, self.remaining(), async {
            answer.await.map_err(|_| pipeline_stopped())
        })?;
        match failure {
            None => Ok(()),
            Some((blame, e)) => {
                let error = failure_error(blame, &e);
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Ask the pipeline for the first failure of what was sent so far.
    fn send_sync(&mut self) -> Result<tokio::sync::oneshot::Receiver<SyncReply>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pipeline.send(Message::Sync(reply)).map_err(|_| pipeline_stopped())?;
        Ok(answer)
    }

    /// Wait for the transaction committed behind, if one is; its failure
    /// fails every wait until [`Namespace::settle`] reports it.
    fn await_behind(&mut self) -> Result<(), StoreError> {
        self.behind = match std::mem::replace(&mut self.behind, Behind::Clear) {
            Behind::Pending(answer, began) => {
                let left = self.deadline.saturating_sub(began.elapsed()).max(Duration::from_millis(1));
                // Past the deadline the batch is cancelled, and its outcome
                // is still the server's answer: a COMMIT that landed before
                // the cancel counts as committed, not as failed.
                let (reply, _) = block_on_cancelling_past(&self.handle, &self.client, left, answer);
                match reply {
                    Ok(None) => Behind::Clear,
                    Ok(Some((blame, e))) => Behind::Failed(failure_error(blame, &e)),
                    Err(_) => Behind::Failed(pipeline_stopped()),
                }
            }
            other => other,
        };
        match &self.behind {
            Behind::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn check(&mut self, statement: &str) -> Result<(), StoreError> {
        if !self.in_tx {
            return Err(StoreError::Database("statement outside a transaction".into()));
        }
        if self.checked.get(statement).is_some() {
            return Ok(());
        }
        if let Some(why) = refusal(statement) {
            return Err(StoreError::Refused(why));
        }
        if let Some(name) = reserved_name(statement) {
            return Err(StoreError::Refused(format!("`{name}` belongs to reel; projections cannot use it")));
        }
        self.checked.remember(statement, ());
        Ok(())
    }

    /// Run a query now (after everything queued) and return its rows.
    fn fetch(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        guest: bool,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.fetch_at_most(sql, params, guest, usize::MAX).map(|(rows, _)| rows)
    }

    /// Run a query now, reading at most `max_rows + 1` rows from the server
    /// (so a huge result never sits in memory); also returns the column names.
    fn fetch_at_most(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        guest: bool,
        max_rows: usize,
    ) -> Result<(Vec<tokio_postgres::Row>, Vec<String>), StoreError> {
        use futures_util::StreamExt;
        self.sync()?;
        self.prepare_all(vec![sql.to_owned()], guest)?;
        let statement = self.statements[sql].clone();
        let columns = statement.columns().iter().map(|c| c.name().to_owned()).collect();
        let client = &self.client;
        let classify = |e: &tokio_postgres::Error| if guest { statement_error(e) } else { database_error(e) };
        let rows = block_on_with_deadline(&self.handle, client, self.remaining(), async {
            let stream = client.query_raw(&statement, params.iter().copied()).await.map_err(|e| classify(&e))?;
            tokio::pin!(stream);
            let mut rows = Vec::new();
            while let Some(row) = stream.next().await {
                rows.push(row.map_err(|e| classify(&e))?);
                if rows.len() > max_rows {
                    break;
                }
            }
            Ok(rows)
        })?;
        Ok((rows, columns))
    }
}

impl Namespace for PgNamespace {
    fn dialect(&self) -> &'static str {
        "postgres"
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, StoreError> {
        let slug = self.info.slug.clone();
        let was_in_tx = self.in_tx;
        let rows = if was_in_tx {
            self.fetch("SELECT tx, position, initialized FROM reel.read_checkpoint($1)", &[&slug], false)?
        } else {
            let client = &self.client;
            block_on(
                &self.handle,
                client.query("SELECT tx, position, initialized FROM reel.read_checkpoint($1)", &[&slug]),
            )
            .map_err(|e| database_error(&e))?
        };
        let row = rows.first().ok_or_else(|| StoreError::Database(format!("no checkpoint for {slug}")))?;
        Ok(Checkpoint { cursor: Cursor { tx: row.get(0), id: row.get(1) }, initialized: row.get(2) })
    }

    fn try_claim(&mut self) -> Result<bool, StoreError> {
        let client = &self.client;
        let slug = self.info.slug.clone();
        let row =
            block_on(&self.handle, client.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&slug]))
                .map_err(|e| database_error(&e))?;
        Ok(row.get(0))
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.failed = None;
        self.execs.clear();
        self.exec_count = 0;
        self.in_tx = true;
        self.started = Instant::now();
        self.dispatch(Op::Begin)
    }

    fn commit(&mut self, from: Cursor, to: Cursor) -> Result<(), StoreError> {
        if !self.read_only {
            self.dispatch(Op::Advance { from, to })?;
        }
        self.dispatch(Op::Commit)?;
        let result = self.sync();
        if result.is_err() {
            let _ = self.rollback();
        } else {
            self.in_tx = false;
        }
        result
    }

    fn commit_behind(&mut self, from: Cursor, to: Cursor) -> Result<bool, StoreError> {
        if self.read_only || self.failed.is_some() {
            return self.commit(from, to).map(|()| false);
        }
        // One transaction behind at a time: this one waits for the last.
        self.await_behind()?;
        self.dispatch(Op::Advance { from, to })?;
        self.dispatch(Op::Commit)?;
        let answer = self.send_sync()?;
        self.in_flight = 0;
        self.in_tx = false;
        self.behind = Behind::Pending(answer, self.started);
        Ok(true)
    }

    fn settle(&mut self) -> Result<(), StoreError> {
        let outcome = self.await_behind();
        self.behind = Behind::Clear;
        outcome
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.execs.clear(); // never sent: nothing to undo
        self.exec_count = 0;
        let _ = self.sync();
        self.failed = None;
        if self.in_tx {
            self.in_tx = false;
            let client = &self.client;
            block_on(&self.handle, client.batch_execute("ROLLBACK")).map_err(|e| database_error(&e))?;
        }
        Ok(())
    }

    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        let rows = self.fetch("SELECT value FROM _reel_kv WHERE key = $1", &[&key], false)?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn kv_scan(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let lower = after.filter(|a| *a >= prefix).unwrap_or(prefix).to_owned();
        let strict = after.is_some_and(|a| a >= prefix);
        let upper = super::sqlite::prefix_upper_bound(prefix);
        let sql = match (strict, upper.is_some()) {
            (false, false) => {
                "SELECT key, value FROM _reel_kv WHERE key >= $1 AND $2::text IS NULL ORDER BY key LIMIT $3"
            }
            (true, false) => {
                "SELECT key, value FROM _reel_kv WHERE key > $1 AND $2::text IS NULL ORDER BY key LIMIT $3"
            }
            (false, true) => "SELECT key, value FROM _reel_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3",
            (true, true) => "SELECT key, value FROM _reel_kv WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3",
        };
        let limit = limit as i64;
        let rows = self.fetch(sql, &[&lower, &upper, &limit], false)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn kv_write(&mut self, writes: &[KvWrite<'_>]) -> Result<(), StoreError> {
        let arrays = || (ArrayParam::new(Type::TEXT), ArrayParam::new(Type::BYTEA));
        let (mut inserts, mut upserts, mut deletes) = (arrays(), arrays(), ArrayParam::new(Type::TEXT));
        for w in writes {
            match w.value {
                None => deletes.push(w.key.as_bytes()),
                Some(value) => {
                    let (keys, values) = if w.new { &mut inserts } else { &mut upserts };
                    keys.push(w.key.as_bytes());
                    values.push(value);
                }
            }
        }
        for (insert, (keys, values)) in [(true, inserts), (false, upserts)] {
            if !keys.is_empty() {
                self.dispatch(Op::KvPut { insert, keys, values })?;
            }
        }
        if !deletes.is_empty() {
            self.dispatch(Op::KvDelete { keys: deletes })?;
        }
        Ok(())
    }

    fn kv_is_empty(&mut self) -> Result<bool, StoreError> {
        let client = &self.client;
        let row = block_on(&self.handle, client.query_one("SELECT NOT EXISTS (SELECT 1 FROM _reel_kv)", &[]))
            .map_err(|e| database_error(&e))?;
        Ok(row.get(0))
    }

    fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::Refused("sql.execute is not allowed in a query: reads are read-only".into()));
        }
        self.check(statement)?;
        self.dispatch(Op::Statement { sql: statement.to_owned(), params })
    }

    fn query(&mut self, statement: &str, params: Vec<Value>, max_rows: usize) -> Result<Rows, StoreError> {
        self.check(statement)?;
        let values: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self
            .fetch_at_most(statement, &refs, true, max_rows)
            .and_then(|(rows, columns)| to_rows(&rows, columns, max_rows));
        if let Err(e) = &result {
            self.failed.get_or_insert(e.clone());
        }
        result
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.sync()
    }

    fn read_table(&mut self, read: &TableRead) -> Result<Rows, StoreError> {
        let client = &self.client;
        let table = read.table.clone();
        let columns: Vec<String> = block_on(
            &self.handle,
            client.query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            ),
        )
        .map_err(|e| database_error(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
        if columns.is_empty() || reserved_name(&quote_ident(&read.table)).is_some() {
            return Err(StoreError::NotFound(format!("no table `{}` in this projection", read.table)));
        }
        let (sql, values) = read.statement(&columns, "$")?;
        let params: Vec<Param<'_>> = values.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        // Past the read's deadline the server cancels it (a view can run for
        // ever; a filter on a column without an index scans the table).
        let rows = block_on_with_deadline(&self.handle, client, self.remaining(), async {
            client.query(&sql, &refs).await.map_err(|e| match e.code() {
                Some(code) if code.code().starts_with("22") => {
                    StoreError::Invalid("a filter value does not fit its column's type".into())
                }
                _ => database_error(&e),
            })
        })?;
        let columns =
            rows.first().map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect()).unwrap_or_default();
        to_rows(&rows, columns, read.limit)
    }

    fn tables(&mut self) -> Result<Vec<String>, StoreError> {
        let client = &self.client;
        let rows = block_on(
            &self.handle,
            client.query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_reel\\_%' ORDER BY table_name",
                &[],
            ),
        )
        .map_err(|e| database_error(&e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn dead_letter(&mut self, event: &Event, error: &str) -> Result<(), StoreError> {
        self.dispatch(Op::DeadLetter { event: Box::new(event.clone()), error: error.to_owned() })
    }

    fn dead_letters(&mut self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let slug = self.info.slug.clone();
        let limit = limit as i32;
        let sql = "SELECT position, stream_id, version, event_type, data, metadata, occurred_at, error, \
                   failed_at::text FROM reel.list_dead_letters($1, $2, $3)";
        let client = &self.client;
        let rows = if self.in_tx {
            self.fetch(sql, &[&slug, &after, &limit], false)?
        } else {
            block_on(&self.handle, client.query(sql, &[&slug, &after, &limit])).map_err(|e| database_error(&e))?
        };
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                position: r.get(0),
                stream_id: r.get(1),
                version: r.get(2),
                event_type: r.get(3),
                data: r.get(4),
                metadata: r.get(5),
                occurred_at: r.get(6),
                error: r.get(7),
                failed_at: r.get(8),
            })
            .collect())
    }

    fn remove_dead_letter(&mut self, position: i64) -> Result<bool, StoreError> {
        let slug = self.info.slug.clone();
        let rows = self.fetch("SELECT reel.remove_dead_letter($1, $2)", &[&slug, &position], false)?;
        Ok(rows.first().is_some_and(|r| r.get(0)))
    }
}

/// Rows as values, at most `max_rows` (more is a limit error).
fn to_rows(rows: &[tokio_postgres::Row], columns: Vec<String>, max_rows: usize) -> Result<Rows, StoreError> {
    if rows.len() > max_rows {
        return Err(StoreError::Limit(format!("query returned more than {max_rows} rows (the row limit)")));
    }
    let rows = rows
        .iter()
        .map(|row| (0..row.len()).map(|i| column(row, i)).collect::<Result<Vec<_>, _>>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| StoreError::Sql { code: "reel:type".into(), message: m })?;
    Ok(Rows { columns, rows })
}
