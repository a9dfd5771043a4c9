//! The task that keeps a namespace connection's requests flowing.

use tokio_postgres::Statement;

use reel_model::{Cursor, Event, Value};

use super::client::{database_error, statement_error};
use super::value::{ArrayParam, unfit};
use crate::store::StoreError;

/// SQLSTATE `reel.advance` raises when the checkpoint moved underneath.
const FENCED: &str = "RL409";
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE `reel.advance` and `reel.emit` raise when called twice in one
/// transaction: the projection's SQL called them (ADR 23).
const CALLED_TWICE: &str = "RL403";
/// SQLSTATE `reel.check_storage` raises past the quota.
const OVER_QUOTA: &str = "RL413";

/// An operation of a batch, sent to the server as soon as it is queued.
pub(super) enum Op {
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
    /// The storage quota, checked before the checkpoint moves to `to`, in
    /// the writing batches `PgNamespace::check_storage` picks (ADR 20).
    CheckStorage {
        to: Cursor,
    },
    /// Release what the projection's SQL left in the session (temporary
    /// objects, advisory locks): sent before the commit when it ran.
    Release,
    /// Watch new tables for change capture (after a schema change).
    Watch,
    /// Write the batch's captured changes, stamped `to` (ADR 28).
    Capture {
        to: Cursor,
        prune_before: Option<i64>,
    },
    Advance {
        from: Cursor,
        to: Cursor,
    },
    DeadLetter {
        event: Box<Event>,
        error: String,
    },
    /// A reactor batch's emissions, appended by `reel.emit` (ADR 23, 47);
    /// what it appended and dropped goes to `counts` when it answers.
    Emit {
        columns: Box<super::emit::EmitColumns>,
        counts: super::emit::Counts,
    },
    Commit,
}

/// How to read an operation's failure.
#[derive(Debug, Clone, Copy)]
pub(super) enum Blame {
    /// The projection's own statement: its fault.
    Guest,
    /// The checkpoint compare-and-set (fenced when it fails with `RL409`).
    Advance(Cursor),
    /// reel's own statements: the database's fault, unless the
    /// projection's SQL ran before them in the transaction and the database
    /// refused them (its functions, triggers or deferred constraints ran, or
    /// it dropped what reel writes to): then the projection's (ADR 20).
    Host { after_guest: bool },
    /// The insert of KV keys taken for new.
    KvInsert { after_guest: bool },
    /// The storage quota's check (`RL413` past it) in the batch that ends
    /// at `to`.
    Storage { after_guest: bool, to: Cursor },
}

pub(super) type Flight =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// The first failure since the last sync, if any.
pub(super) type SyncReply = Option<(Blame, tokio_postgres::Error)>;

/// Messages to the pipeline task.
pub(super) enum Message {
    Send(Blame, Flight),
    /// Report the first failure since the last sync, once everything sent so
    /// far has been answered.
    Sync(tokio::sync::oneshot::Sender<SyncReply>),
}

/// Keeps a connection's requests flowing: operations are polled (and so
/// sent) in the order they were queued, while the worker goes on with the
/// guest; the worker waits only at a sync (a query, the commit).
pub(super) async fn pipeline(mut messages: tokio::sync::mpsc::UnboundedReceiver<Message>) {
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
pub(super) fn unsendable(statement: &Statement, params: &[Value]) -> Option<String> {
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

pub(super) fn pipeline_stopped() -> StoreError {
    StoreError::Database("the connection's pipeline stopped".into())
}

/// What a failure the pipeline reported means for the batch.
pub(super) fn failure_error(blame: Blame, e: &tokio_postgres::Error) -> StoreError {
    match (blame, e.code().map(|c| c.code())) {
        (Blame::Advance(from), Some(FENCED)) => StoreError::Fenced { expected: from, found: None },
        (Blame::Advance(_), Some(CALLED_TWICE)) => own_error(e, true),
        (Blame::Guest, _) => statement_error(e),
        (Blame::KvInsert { .. }, Some(UNIQUE_VIOLATION)) => StoreError::KvStale(format!(
            "a KV key taken for new is in the table already ({}): another writer, or a stale cache; \
             the cache is dropped and the batch's next attempt upserts every key",
            e.as_db_error().map_or("", |db| db.message())
        )),
        (Blame::Storage { .. }, Some(OVER_QUOTA)) => {
            StoreError::Limit(e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned()))
        }
        (Blame::Host { after_guest } | Blame::KvInsert { after_guest } | Blame::Storage { after_guest, .. }, _) => {
            own_error(e, after_guest)
        }
        _ => database_error(e),
    }
}

/// A failure of reel's own statement: the database's fault, or, when the
/// projection's SQL ran before it in the transaction and the database
/// refused it, the projection's (bisected like any error of its SQL).
pub(super) fn own_error(e: &tokio_postgres::Error, after_guest: bool) -> StoreError {
    if !after_guest {
        return database_error(e);
    }
    match statement_error(e) {
        StoreError::Sql { code, message } => StoreError::Sql {
            code,
            message: format!("reel's own statement failed after the projection's SQL in this batch: {message}"),
        },
        other => other,
    }
}
