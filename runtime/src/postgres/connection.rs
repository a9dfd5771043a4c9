//! One namespace's connection: operations pipelined, writes batched.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::client::{block_on_cancelling_past, block_on_with_deadline, database_error, statement_error};
use super::execs::{EXEC_QUERY_BYTES, EXECS_PER_QUERY};
use super::value::{Param, RawSize, write_literal};
use crate::store::sql_text::{Checked, refusal, reserved_name};
use crate::store::{SqlBounds, StoreError};

use super::emit::{Counts, EMIT};
use super::pipeline::{Blame, Flight, Message, Op, SyncReply, failure_error, own_error, pipeline_stopped, unsendable};
use super::store::NamespaceInfo;

/// The transaction committed behind the current one on a connection.
pub(super) enum Behind {
    /// None, or one that committed.
    Clear,
    /// Its commit is sent: the answer, when it began (its deadline runs
    /// from then), and where its `reel.emit` leaves what it appended.
    Pending(tokio::sync::oneshot::Receiver<SyncReply>, Instant, Option<Counts>),
    /// It failed, and [`Namespace::settle`] has not reported it yet.
    Failed(StoreError),
}

/// Operations queued since the last sync past which the worker waits for
/// the server (bounds the memory held by requests in flight).
pub(super) const MAX_IN_FLIGHT: usize = 8192;

/// One namespace through a connection logged in as its role.
pub struct PgNamespace {
    pub(super) client: Arc<Client>,
    pub(super) handle: Handle,
    pub(super) info: NamespaceInfo,
    pub(super) read_only: bool,
    /// Prepared statements of this connection, by text.
    pub(super) statements: HashMap<String, Statement>,
    pub(super) pipeline: tokio::sync::mpsc::UnboundedSender<Message>,
    /// Operations sent since the last sync.
    pub(super) in_flight: usize,
    pub(super) in_tx: bool,
    /// The first failure of this transaction: it is aborted, and so is the batch.
    pub(super) failed: Option<StoreError>,
    /// The transaction committed behind this one.
    pub(super) behind: Behind,
    pub(super) deadline: Duration,
    pub(super) started: Instant,
    /// Projection statements that passed the checks.
    pub(super) checked: Checked<()>,
    /// The SQL-level name of each projection write prepared for `EXECUTE`
    /// (`None`: sent on its own), by text; see [`PgNamespace::prepare_exec`].
    pub(super) exec_names: HashMap<String, Option<String>>,
    /// `EXECUTE`s not sent yet, and how many.
    pub(super) execs: String,
    pub(super) exec_count: usize,
    /// The projection's SQL ran since reel last reset the session: settings
    /// it changed (`set_config`) may be in force, so reel's next statement
    /// goes after a `RESET ALL` (ADR 20).
    pub(super) guest_ran: bool,
    /// The projection's SQL ran in this transaction: a failure of reel's own
    /// statements may be its doing (ADR 20).
    pub(super) guest_in_tx: bool,
    /// The projection's SQL ran since reel last released what it may leave
    /// in the session past a transaction (temporary tables, advisory locks):
    /// released before the commit, or after a rollback (ADR 20).
    pub(super) guest_session: bool,
    /// What the projection's SQL may hold and make.
    pub(super) bounds: SqlBounds,
    /// Change capture, when on for the projection (ADR 28).
    pub(super) capture: Option<crate::store::Capture>,
    /// reel's own connections, for what a capture's start does as reel's
    /// user (ADR 30); set on a writer whose changes are captured.
    pub(super) admin: Option<deadpool_postgres::Pool>,
    /// A batch failed at the storage quota: the pages it wrote stay in the
    /// files, rolled back but counted, until a `VACUUM` after the rollback.
    pub(super) vacuum_due: bool,
    /// reel wrote KV values in this transaction (the projection's SQL
    /// running is `guest_in_tx`): with either, the batch may have grown the
    /// read model, and may need the storage quota's check.
    pub(super) kv_in_tx: bool,
    /// When this connection last sent the storage quota's check; `None`
    /// since it opened and after each rollback, so that the next writing
    /// batch checks (ADR 20).
    pub(super) storage_checked: Option<Instant>,
    /// The end of the batch that failed at the quota most recently: every
    /// writing batch ending at or before it is checked, so that narrowing
    /// down finds the event that crossed the quota (ADR 20).
    pub(super) over_quota_through: Option<reel_model::Cursor>,
    /// What the open transaction's `reel.emit` appended, once it answers.
    pub(super) emitting: Option<Counts>,
    /// What the emissions of the transactions committed since the last
    /// [`Commits::take_appended`](crate::store::Commits::take_appended)
    /// appended and dropped.
    pub(super) appended: Option<reel_model::Forwarded>,
}

pub(super) const BEGIN_WRITE: &str = "BEGIN";
pub(super) const BEGIN_READ: &str = "BEGIN READ ONLY";
pub(super) const COMMIT: &str = "COMMIT";
pub(super) const KV_UPSERT: &str = "INSERT INTO _reel_kv (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value";
// Keys the worker knows absent skip the upsert's conflict check (ADR 14).
pub(super) const KV_INSERT: &str = "INSERT INTO _reel_kv (key, value) SELECT * FROM unnest($1::text[], $2::bytea[])";
pub(super) const KV_DELETE: &str = "DELETE FROM _reel_kv WHERE key = ANY($1::text[])";
pub(super) const ADVANCE: &str = "SELECT reel.advance($1, $2, $3, $4, $5)";
pub(super) const DEAD_LETTER: &str = "SELECT reel.add_dead_letter($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// Back to the settings the connection opened with (which pin what reel
/// relies on: `store.rs`), whatever the projection's SQL set.
pub(super) const RESET: &str = "RESET ALL";
pub(super) const CHECK_STORAGE: &str = "SELECT reel.check_storage($1, $2)";
/// What `RESET ALL` leaves of the projection's doing in the session: its
/// temporary objects and session-level advisory locks (migration 0021).
pub(super) const RELEASE: &str = "SELECT reel.release_session($1)";
/// Watch the tables of the namespace not watched yet (ADR 28).
pub(super) const WATCH: &str = "SELECT reel.capture_tables()";
/// The batch's changes, before its checkpoint (ADR 28).
pub(super) const CAPTURE: &str = "SELECT reel.capture_commit($1, $2, $3, $4)";
/// reel's own statements, prepared when the connection opens.
const OWN_STATEMENTS: [&str; 13] = [
    BEGIN_WRITE,
    BEGIN_READ,
    COMMIT,
    KV_UPSERT,
    KV_INSERT,
    KV_DELETE,
    ADVANCE,
    DEAD_LETTER,
    RESET,
    CHECK_STORAGE,
    RELEASE,
    WATCH,
    CAPTURE,
];

impl PgNamespace {
    pub(super) fn new(
        client: Client,
        handle: Handle,
        info: NamespaceInfo,
        read_only: bool,
        deadline: Duration,
        bounds: SqlBounds,
    ) -> Result<Self, StoreError> {
        let (pipeline, messages) = tokio::sync::mpsc::unbounded_channel();
        handle.spawn(super::pipeline::pipeline(messages));
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
            guest_ran: false,
            guest_in_tx: false,
            guest_session: false,
            capture: bounds.changes.filter(|_| !read_only).map(crate::store::Capture::new),
            admin: None,
            bounds,
            vacuum_due: false,
            kv_in_tx: false,
            storage_checked: None,
            over_quota_through: None,
            emitting: None,
            appended: None,
        };
        ns.prepare_all(OWN_STATEMENTS.iter().map(|s| s.to_string()).collect(), false)?;
        Ok(ns)
    }

    /// Time left: of the transaction's deadline inside one, a whole
    /// deadline for a single read outside.
    pub(super) fn remaining(&self) -> Option<Duration> {
        if !self.in_tx {
            return Some(self.deadline);
        }
        Some(self.deadline.saturating_sub(self.started.elapsed()).max(Duration::from_millis(1)))
    }

    /// Prepare the statements of `texts` not prepared yet, pipelined.
    pub(super) fn prepare_all(&mut self, texts: Vec<String>, guest: bool) -> Result<(), StoreError> {
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
    pub(super) fn dispatch(&mut self, op: Op) -> Result<(), StoreError> {
        if self.failed.is_some() {
            return Ok(()); // the transaction is aborted; the error surfaces at the next sync
        }
        if let Op::Statement { sql, .. } = &op
            && !self.statements.contains_key(sql)
        {
            // A new statement may name what earlier ones (DDL) create: let
            // them run first, then prepare it (reel's statements on the way
            // run in a reset session).
            self.reset_session()?;
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
                self.guest_runs();
                if self.exec_count < EXECS_PER_QUERY && self.execs.len() < EXEC_QUERY_BYTES {
                    return Ok(());
                }
                return self.send_execs();
            }
            self.execs.truncate(start); // sent on its own, below
        }
        self.send_execs()?;
        match op {
            Op::Statement { .. } => self.guest_runs(),
            Op::Begin => {}
            _ => self.reset_session()?,
        }
        if matches!(op, Op::Release) {
            self.guest_session = false;
        }
        let after_guest = self.guest_in_tx;
        let client = Arc::clone(&self.client);
        let statement = |text: &str| self.statements[text].clone();
        let (blame, flight): (Blame, Flight) = match op {
            Op::Begin => {
                let s = statement(if self.read_only { BEGIN_READ } else { BEGIN_WRITE });
                (Blame::Host { after_guest }, Box::pin(async move { client.execute(&s, &[]).await }))
            }
            Op::Commit => {
                let s = statement(COMMIT);
                (Blame::Host { after_guest }, Box::pin(async move { client.execute(&s, &[]).await }))
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
                self.kv_in_tx = true;
                let (s, blame) = if insert {
                    (KV_INSERT, Blame::KvInsert { after_guest })
                } else {
                    (KV_UPSERT, Blame::Host { after_guest })
                };
                let s = statement(s);
                (blame, Box::pin(async move { client.execute(&s, &[&keys, &values]).await }))
            }
            Op::KvDelete { keys } => {
                self.kv_in_tx = true;
                let s = statement(KV_DELETE);
                (Blame::Host { after_guest }, Box::pin(async move { client.execute(&s, &[&keys]).await }))
            }
            Op::CheckStorage { to } => {
                let s = statement(CHECK_STORAGE);
                let (schema, quota) =
                    (self.info.schema.clone(), i64::try_from(self.bounds.storage_bytes).unwrap_or(i64::MAX));
                let flight = async move { client.execute(&s, &[&schema, &quota]).await };
                (Blame::Storage { after_guest, to }, Box::pin(flight))
            }
            Op::Watch => {
                let s = statement(WATCH);
                (Blame::Host { after_guest }, Box::pin(async move { client.execute(&s, &[]).await }))
            }
            Op::Capture { to, prune_before } => {
                let s = statement(CAPTURE);
                let at = reel_model::time::now_micros();
                let flight = async move { client.execute(&s, &[&to.tx, &to.id, &at, &prune_before]).await };
                (Blame::Host { after_guest }, Box::pin(flight))
            }
            Op::Release => {
                let s = statement(RELEASE);
                let slug = self.info.slug.clone();
                (Blame::Host { after_guest }, Box::pin(async move { client.execute(&s, &[&slug]).await }))
            }
            Op::Advance { from, to } => {
                let s = statement(ADVANCE);
                let slug = self.info.slug.clone();
                let flight = async move { client.execute(&s, &[&slug, &from.tx, &from.id, &to.tx, &to.id]).await };
                (Blame::Advance(from), Box::pin(flight))
            }
            Op::Emit { columns, counts } => {
                let s = statement(EMIT);
                // Refused before it is sent, the emissions would be missing
                // from a transaction that goes on to commit: it fails here.
                if let Some(refusal) = columns.unfit(&s) {
                    // Prepared again, after a reset, by the next attempt.
                    self.statements.remove(EMIT);
                    self.failed = Some(StoreError::Database(refusal));
                    return Ok(());
                }
                (Blame::Host { after_guest }, columns.flight(client, s, self.info.slug.clone(), counts))
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
                (Blame::Host { after_guest }, Box::pin(flight))
            }
        };
        self.pipeline.send(Message::Send(blame, flight)).map_err(|_| pipeline_stopped())?;
        self.in_flight += 1;
        if self.in_flight >= MAX_IN_FLIGHT { self.sync() } else { Ok(()) }
    }

    /// The projection's SQL is about to run.
    fn guest_runs(&mut self) {
        (self.guest_ran, self.guest_in_tx, self.guest_session) = (true, true, true);
    }

    /// After a rollback, release what the projection's SQL may have left in
    /// the session (what `Op::Release` does before a commit).
    pub(super) fn release_after_rollback(&mut self) {
        if !self.guest_session {
            return;
        }
        self.guest_session = false;
        let client = &self.client;
        let slug = self.info.slug.clone();
        let released = block_on_with_deadline(&self.handle, client, Some(self.deadline), async {
            client.execute(RELEASE, &[&slug]).await.map_err(|e| database_error(&e))
        });
        if let Err(e) = released {
            tracing::warn!(namespace = %self.info.slug, "releasing the projection's session state failed: {e}");
        }
    }

    /// Send `RESET ALL` if the projection's SQL ran since the last one: what
    /// it set with `set_config` ends before reel's own next statement, and
    /// so never outlives its batch (the commit is one of reel's). Pipelined:
    /// no round trip of its own.
    pub(super) fn reset_session(&mut self) -> Result<(), StoreError> {
        if !self.guest_ran || !self.in_tx || self.failed.is_some() {
            return Ok(());
        }
        self.guest_ran = false;
        self.send_execs()?;
        let client = Arc::clone(&self.client);
        let s = self.statements[RESET].clone();
        let flight = async move { client.execute(&s, &[]).await };
        let blame = Blame::Host { after_guest: true };
        self.pipeline.send(Message::Send(blame, Box::pin(flight))).map_err(|_| pipeline_stopped())?;
        self.in_flight += 1;
        Ok(())
    }

    /// Wait until everything sent has been answered, the transaction
    /// committed behind first; the first failure since the last sync fails
    /// the transaction.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        let behind = self.await_behind();
        let own = self.sync_own();
        behind.and(own)
    }

    pub(super) fn sync_own(&mut self) -> Result<(), StoreError> {
        self.send_execs()?;
        // Waited for even when the transaction has failed already (a
        // statement refused before it was sent): what is queued may not
        // have reached the server yet, and a `ROLLBACK` sent past it would
        // end nothing, then the queued `BEGIN` and writes would run after it
        // and land in the next batch's commit (ADR 7).
        if self.in_flight > 0 {
            self.in_flight = 0;
            let answer = self.send_sync()?;
            let failure = block_on_with_deadline(&self.handle, &self.client, self.remaining(), async {
                answer.await.map_err(|_| pipeline_stopped())
            })?;
            if let Some((blame, e)) = failure {
                let error = failure_error(blame, &e);
                self.note_failure(blame, &error);
                self.failed.get_or_insert(error);
            }
        }
        match &self.failed {
            Some(failed) => Err(failed.clone()),
            None => Ok(()),
        }
    }

    /// Ask the pipeline for the first failure of what was sent so far.
    pub(super) fn send_sync(&mut self) -> Result<tokio::sync::oneshot::Receiver<SyncReply>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pipeline.send(Message::Sync(reply)).map_err(|_| pipeline_stopped())?;
        Ok(answer)
    }

    /// Wait for the transaction committed behind, if one is; its failure
    /// fails every wait until [`Namespace::settle`] reports it.
    pub(super) fn await_behind(&mut self) -> Result<(), StoreError> {
        self.behind = match std::mem::replace(&mut self.behind, Behind::Clear) {
            Behind::Pending(answer, began, emitted) => {
                let left = self.deadline.saturating_sub(began.elapsed()).max(Duration::from_millis(1));
                // Past the deadline the batch is cancelled, and its outcome
                // is still the server's answer: a COMMIT that landed before
                // the cancel counts as committed, not as failed.
                let (reply, _) = block_on_cancelling_past(&self.handle, &self.client, left, answer);
                match reply {
                    Ok(None) => {
                        self.count_appended(emitted);
                        Behind::Clear
                    }
                    Ok(Some((blame, e))) => {
                        let error = failure_error(blame, &e);
                        self.note_failure(blame, &error);
                        Behind::Failed(error)
                    }
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

    /// A transaction whose `reel.emit` left `counts` has committed: count
    /// what it appended.
    pub(super) fn count_appended(&mut self, counts: Option<Counts>) {
        let Some(f) = counts.and_then(|c| c.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()) else {
            return;
        };
        let total = self.appended.get_or_insert_default();
        total.emitted += f.emitted;
        total.dropped += f.dropped;
    }

    pub(super) fn check(&mut self, statement: &str) -> Result<(), StoreError> {
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
    pub(super) fn fetch(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        guest: bool,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.fetch_at_most(sql, params, guest, usize::MAX).map(|(rows, _)| rows)
    }

    /// Run a query now, reading at most `max_rows + 1` rows from the server
    /// (so a huge result never sits in memory); also returns the column names.
    pub(super) fn fetch_at_most(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        guest: bool,
        max_rows: usize,
    ) -> Result<(Vec<tokio_postgres::Row>, Vec<String>), StoreError> {
        use futures_util::StreamExt;
        if guest {
            self.guest_runs();
        } else {
            self.reset_session()?;
        }
        self.sync()?;
        self.prepare_all(vec![sql.to_owned()], guest)?;
        let statement = self.statements[sql].clone();
        let columns = statement.columns().iter().map(|c| c.name().to_owned()).collect();
        let client = &self.client;
        let after_guest = self.guest_in_tx;
        let classify = |e: &tokio_postgres::Error| if guest { statement_error(e) } else { own_error(e, after_guest) };
        let rows = block_on_with_deadline(&self.handle, client, self.remaining(), async {
            let stream = client.query_raw(&statement, params.iter().copied()).await.map_err(|e| classify(&e))?;
            tokio::pin!(stream);
            let mut rows = Vec::new();
            let mut bytes = 0;
            while let Some(row) = stream.next().await {
                let row = row.map_err(|e| classify(&e))?;
                // Rows are bounded, and so are the bytes handed to the guest.
                if guest {
                    bytes += (0..row.len()).map(|i| row.get::<_, RawSize>(i).0).sum::<usize>();
                    if bytes > self.bounds.result_bytes {
                        return Err(StoreError::Limit(format!(
                            "query result over {} MiB (the module's memory, memory-mib)",
                            self.bounds.result_bytes >> 20
                        )));
                    }
                }
                rows.push(row);
                if rows.len() > max_rows {
                    break;
                }
            }
            Ok(rows)
        })?;
        Ok((rows, columns))
    }
}
