//! Reads of read models for the HTTP API: status, KV, tables, custom
//! queries, dead letters. Reads never go through a worker's transaction;
//! `min_position` makes them wait until the projection has applied an event.

use serde::Serialize;

use reel_model::{Cursor, DeadLetter};

use super::Runtime;
use super::deployment::View;
use crate::host::{Capabilities, GuestFailure, Mode};
use crate::source::SourceError;
use crate::store::{Namespace, StoreError};
use crate::worker::State;
use crate::worker::status::ErrorReport;
use reel_model::time::{now_micros, parse_micros};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such projection (or key, table, ...).
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Not possible in the projection's current state.
    #[error("{0}")]
    Conflict(String),
    /// `min_position` was not reached in time.
    #[error("{0}")]
    Timeout(String),
    /// Read-model storage failed.
    #[error("{0}")]
    Store(StoreError),
    /// The event log failed.
    #[error("{0}")]
    Source(#[from] SourceError),
    /// The projection's `query` failed.
    #[error("{0}")]
    Guest(GuestFailure),
    /// A blocking task died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ReadError {
    pub(super) fn unknown(name: &str) -> Self {
        ReadError::NotFound(format!("no projection named `{name}`"))
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ReadError::NotFound(m),
            other => ReadError::Store(other),
        }
    }
}

/// Status of a projection, as `GET /projections/{name}` shows it.
#[derive(Debug, Serialize)]
pub struct ProjectionInfo {
    /// Name.
    pub name: String,
    /// Version serving reads.
    pub version: String,
    /// Its namespace (file or schema).
    pub namespace: String,
    /// State of the serving version.
    pub state: State,
    /// Last event position it has applied (or moved past).
    pub position: i64,
    /// Full cursor (with the transaction id on PostgreSQL).
    pub cursor: Cursor,
    /// Last event position in the log.
    pub head: i64,
    /// Events in the log it has not applied yet.
    pub lag: i64,
    /// Age of the oldest event not applied yet, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// When committed events are held back by a transaction still open
    /// elsewhere in the cluster (PostgreSQL): that transaction.
    pub blocked_by: Option<crate::source::postgres::LagCause>,
    /// Throughput over the last seconds.
    pub events_per_second: f64,
    /// Events applied since the worker started.
    pub events_applied: u64,
    /// Last failure.
    pub last_error: Option<ErrorReport>,
    /// Where it stopped (state `stopped`).
    pub stopped_at: Option<i64>,
    /// Events in its dead-letter table.
    pub dead_letters: usize,
    /// Where its code comes from.
    pub module: Option<ModuleInfo>,
    /// Why the latest module file for it was refused (it keeps running the
    /// previous code).
    pub module_error: Option<String>,
    /// A new version being built beside it.
    pub rebuild: Option<RebuildInfo>,
}

/// The code of a projection version.
#[derive(Debug, Serialize)]
pub struct ModuleInfo {
    /// The module file (absent for projections compiled into reel).
    pub file: Option<String>,
    /// SHA-256 of the file.
    pub hash: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Event types it subscribes to (empty: all).
    pub event_types: Vec<String>,
    /// Stream prefixes it subscribes to (empty: all).
    pub stream_prefixes: Vec<String>,
    /// Its failure policy.
    pub on_error: reel_model::OnError,
}

/// Progress of a version being rebuilt.
#[derive(Debug, Serialize)]
pub struct RebuildInfo {
    /// The version.
    pub version: String,
    /// Its namespace.
    pub namespace: String,
    /// Its state.
    pub state: State,
    /// Its position.
    pub position: i64,
    /// Events left.
    pub lag: i64,
    /// Its throughput.
    pub events_per_second: f64,
    /// Estimated seconds to catch up.
    pub eta_seconds: Option<f64>,
    /// Its last failure.
    pub last_error: Option<ErrorReport>,
}

/// Dead letters read per call at most.
pub const MAX_DEAD_LETTERS: usize = 1000;

impl Runtime {
    fn view(&self, name: &str) -> Result<View, ReadError> {
        self.deployments(name).map(|(active, _)| active).ok_or_else(|| ReadError::unknown(name))
    }

    /// Wait until the serving version of `name` has applied the event at
    /// `position` (bounded by the configured read wait).
    pub async fn wait_for(&self, name: &str, position: i64) -> Result<(), ReadError> {
        let wait = self.config().read_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let target = loop {
            if let Some(cursor) = self.source().cursor_of(position).await? {
                break cursor;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReadError::Timeout(format!(
                    "no event at position {position} was committed within {wait:?}"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let mut applied = self.view(name)?.status.applied();
        let reached = tokio::time::timeout_at(deadline, applied.wait_for(|c| *c >= target)).await.map(|r| r.is_ok());
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err(ReadError::Conflict(format!("projection `{name}` stopped before reaching {position}"))),
            Err(_) => {
                let at = applied.borrow().id;
                Err(ReadError::Timeout(format!(
                    "projection `{name}` has not applied position {position} within {wait:?} (it is at {at})"
                )))
            }
        }
    }

    /// Run `f` on a read-only view of the serving version of `name`.
    pub async fn read<T, F>(&self, name: &str, min_position: Option<i64>, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Namespace) -> Result<T, StoreError> + Send + 'static,
    {
        if let Some(position) = min_position {
            self.wait_for(name, position).await?;
        }
        let view = self.view(name)?;
        let store = self.store().clone();
        let deadline = self.config().limits_for(name).query_timeout;
        run_blocking(move || {
            let mut reader = match view.readers.take() {
                Some(reader) => reader,
                None => store
                    .open_reader(&view.ns, deadline)?
                    .ok_or_else(|| StoreError::NotFound(format!("projection `{}` has no data yet", view.ns.name)))?,
            };
            let result = f(&mut *reader);
            // After a deadline the server may still act on the cancel it was
            // sent and cancel the next statement: a fresh reader is safer.
            if !matches!(result, Err(StoreError::Database(_) | StoreError::Deadline(_))) {
                view.readers.put(reader);
            }
            Ok(result?)
        })
        .await
    }

    /// Run the projection's `query` export on committed data.
    pub async fn query(
        &self,
        name: &str,
        query: String,
        args: String,
        min_position: Option<i64>,
    ) -> Result<String, ReadError> {
        if let Some(position) = min_position {
            self.wait_for(name, position).await?;
        }
        let view = self.view(name)?;
        let Some(program) = view.program.clone() else {
            return Err(ReadError::Conflict(format!("projection `{name}` has no module loaded to run queries")));
        };
        let store = self.store().clone();
        let mut limits = self.config().limits_for(name);
        limits.batch_timeout = limits.query_timeout;
        run_blocking(move || {
            let mut guest = match view.queries.take() {
                Some(guest) => guest,
                None => {
                    let reader = store
                        .open_reader(&view.ns, limits.query_timeout)?
                        .ok_or_else(|| ReadError::NotFound(format!("projection `{}` has no data yet", view.ns.name)))?;
                    let caps = Capabilities::new(&view.ns.name, reader, limits.clone(), Mode::Read)?;
                    program.instantiate(caps, &limits).map_err(|unstarted| ReadError::Guest(unstarted.0))?
                }
            };
            guest.caps().begin()?;
            let result = guest.query(&query, &args);
            let _ = guest.caps().rollback();
            match result {
                Ok(json) => {
                    view.queries.put(guest);
                    Ok(json)
                }
                Err(e) => {
                    if !e.poisons_instance() {
                        view.queries.put(guest);
                    }
                    Err(ReadError::Guest(e))
                }
            }
        })
        .await
    }

    /// Status of every projection.
    pub async fn list(&self) -> Result<Vec<ProjectionInfo>, ReadError> {
        let mut all = Vec::new();
        for name in self.names() {
            match self.info(&name).await {
                Ok(info) => all.push(info),
                Err(ReadError::NotFound(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    /// Status of one projection.
    pub async fn info(&self, name: &str) -> Result<ProjectionInfo, ReadError> {
        let (active, next) = self.deployments(name).ok_or_else(|| ReadError::unknown(name))?;
        let head = self.source().head().await?;
        let status = active.status.snapshot();
        let lag = self.source().count_after(status.cursor).await?;
        let lag_seconds = match self.source().oldest_after(status.cursor).await? {
            Some(occurred_at) if lag > 0 => {
                parse_micros(&occurred_at).map_or(0.0, |t| ((now_micros() - t).max(0)) as f64 / 1e6)
            }
            _ => 0.0,
        };
        let blocked_by = if lag > 0 { self.source().lag_cause(status.cursor).await? } else { None };
        let dead_letters =
            self.read(name, None, |ns| ns.dead_letters(0, MAX_DEAD_LETTERS)).await.map_or(0, |d| d.len());
        let rebuild = match next {
            Some(next) => {
                let s = next.status.snapshot();
                let lag = self.source().count_after(s.cursor).await?;
                Some(RebuildInfo {
                    version: next.ns.version.clone(),
                    namespace: next.ns.slug(),
                    state: s.state,
                    position: s.cursor.id,
                    lag,
                    events_per_second: s.events_per_second,
                    eta_seconds: (s.events_per_second > 0.0).then(|| lag as f64 / s.events_per_second),
                    last_error: s.last_error,
                })
            }
            None => None,
        };
        Ok(ProjectionInfo {
            name: name.to_owned(),
            version: active.ns.version.clone(),
            namespace: active.ns.slug(),
            state: status.state,
            position: status.cursor.id,
            cursor: status.cursor,
            head,
            lag,
            lag_seconds,
            blocked_by,
            events_per_second: status.events_per_second,
            events_applied: status.events_applied,
            last_error: status.last_error,
            stopped_at: status.stopped_at,
            dead_letters,
            module: active.program.as_ref().map(|p| {
                let m = p.manifest();
                let module = p.module();
                ModuleInfo {
                    file: active.file.as_ref().map(|f| f.display().to_string()),
                    hash: module.map(|m| m.hash.clone()),
                    size: module.map(|m| m.size),
                    event_types: m.event_types.clone(),
                    stream_prefixes: m.stream_prefixes.clone(),
                    on_error: m.on_error,
                }
            }),
            module_error: active.module_error.clone(),
            rebuild,
        })
    }

    /// Dead letters of the serving version.
    pub async fn dead_letters(&self, name: &str, after: i64, limit: usize) -> Result<Vec<DeadLetter>, ReadError> {
        self.read(name, None, move |ns| ns.dead_letters(after, limit.min(MAX_DEAD_LETTERS))).await
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ReadError::Internal(e.to_string()))?
}
