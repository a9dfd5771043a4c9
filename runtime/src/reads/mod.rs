//! The read service the API calls: reads of read models (KV, tables,
//! custom queries, dead letters) and status (`status.rs`). Reads never go
//! through a worker's transaction; `min_position` makes them wait until the
//! projection has applied an event.

mod status;

use std::sync::Arc;

use reel_model::DeadLetter;

pub use status::{ModuleInfo, ProjectionInfo, RebuildInfo};

use crate::config::Config;
use crate::deploy::{Deployments, View};
use crate::host::{Access, Capabilities, GuestFailure};
use crate::source::{Source, SourceError};
use crate::store::{Reader, Store, StoreError};

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
    fn unknown(name: &str) -> Self {
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

/// Dead letters read per call at most.
pub const MAX_DEAD_LETTERS: usize = 1000;

/// The read service: what the API reads, from the deployments' serving
/// versions, never through a worker's transaction.
#[derive(Clone)]
pub struct Reads {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    deployments: Deployments,
    source: Source,
    store: Store,
}

impl Reads {
    /// Reads of `deployments`' read models (in `store`) and of the log.
    pub fn new(config: Config, deployments: Deployments, source: Source, store: Store) -> Self {
        Self { inner: Arc::new(Inner { config, deployments, source, store }) }
    }

    fn config(&self) -> &Config {
        &self.inner.config
    }

    fn source(&self) -> &Source {
        &self.inner.source
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn view(&self, name: &str) -> Result<View, ReadError> {
        self.inner.deployments.views(name).map(|(active, _)| active).ok_or_else(|| ReadError::unknown(name))
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

    /// The serving version of `name`, once it has started: a read right after
    /// a deploy waits (up to the read wait) for its `setup` to have committed,
    /// instead of finding none of its tables yet.
    async fn started_view(&self, name: &str) -> Result<View, ReadError> {
        let wait = self.config().read_wait;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let view = self.view(name)?;
            if view.status.state() != crate::worker::State::Starting {
                return Ok(view);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReadError::Timeout(format!("projection `{name}` is still starting after {wait:?}")));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Run `f` on a read-only view of the serving version of `name`.
    pub async fn read<T, F>(&self, name: &str, min_position: Option<i64>, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Reader) -> Result<T, StoreError> + Send + 'static,
    {
        if let Some(position) = min_position {
            self.wait_for(name, position).await?;
        }
        let view = self.started_view(name).await?;
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
        let view = self.started_view(name).await?;
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
                    let caps = Capabilities::new(&view.ns.name, Access::Read(reader), limits.clone())?;
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
