//! The read service the API calls: reads of read models (KV, tables,
//! custom queries, dead letters), status (`status.rs`), a stream's events
//! (`streams.rs`) and a projection's change history (`changes.rs`). Reads
//! never go through a worker's transaction; `min_position` makes them wait until the projection has applied an event
//! (a stream read: until the event is committed).

mod changes;
mod status;
mod streams;

use std::sync::Arc;

use reel_model::DeadLetter;

pub use changes::{ChangePoint, ChangeRead};
pub use status::{ProjectionInfo, ReactorInfo, ShadowInfo};

use crate::config::Config;
use crate::deploy::{Deployments, POOL_SIZE, Pool, View};
use crate::host::{Access, Capabilities, GuestFailure};
use crate::source::{Source, SourceError};
use crate::store::{Checksum, ReadModelSum, Reader, Store, StoreError};
use crate::worker::State;

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
    /// `min_position` will not be reached: the projection is stopped at a
    /// poison event.
    #[error("{0}")]
    Stopped(String),
    /// `min_position` will not be reached: the projection is paused.
    #[error("{0}")]
    Paused(String),
    /// Every read connection (or query instance) of the projection stayed
    /// in use for the read wait.
    #[error("{0}")]
    Busy(String),
    /// `min_position` names a position the log never handed out.
    #[error("{0}")]
    PositionUnknown(String),
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

/// The least time a checksum may take: the query deadline (5 s by
/// default) is for reads of a few rows, a checksum reads them all.
pub const CHECKSUM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// The log's head as last read, for the status while the log's
    /// database does not answer (ADR 43).
    last_head: std::sync::atomic::AtomicI64,
    /// Change-history reads in flight, shared by the feed's clients.
    history_reads: changes::HistoryReads,
}

impl Reads {
    /// Reads of `deployments`' read models (in `store`) and of the log.
    pub fn new(config: Config, deployments: Deployments, source: Source, store: Store) -> Self {
        let inner = Inner {
            config,
            deployments,
            source,
            store,
            last_head: Default::default(),
            history_reads: Default::default(),
        };
        Self { inner: Arc::new(inner) }
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
    /// `position` (bounded by the configured read wait). Only a running
    /// projection that is behind waits: a position the log never handed out
    /// is `PositionUnknown`, and a stopped or paused projection answers at
    /// once, saying why.
    pub async fn wait_for(&self, name: &str, position: i64) -> Result<(), ReadError> {
        let wait = self.config().read_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let view = self.view(name);
        // A position at or before one the projection has applied was handed
        // out: only a position past it needs the log asked (a read per call).
        if !view.as_ref().is_ok_and(|v| v.status.cursor().id >= position) {
            // On PostgreSQL the sequence's last value, not the committed head: an
            // id drawn by a transaction still committing is a position to wait for.
            let issued = self.source().last_issued().await?;
            if position > issued {
                return Err(ReadError::PositionUnknown(format!(
                    "position {position} was never handed out: the log's last position is {issued}"
                )));
            }
        }
        let status = view?.status;
        let mut applied = status.applied();
        loop {
            let target = self.source().cursor_of(position).await?;
            if target.is_some_and(|t| *applied.borrow() >= t) {
                return Ok(());
            }
            let now = status.snapshot();
            let at = now.cursor.id;
            match now.state {
                State::Stopped => {
                    let (event, why) =
                        now.last_error.map(|e| (e.position.unwrap_or(at), e.message)).unwrap_or_default();
                    return Err(ReadError::Stopped(format!(
                        "projection `{name}` is stopped at event {event} and has not applied position {position} \
                         (it is at {at}): {why}; it tries the event again with `reel resume {name}` (after a \
                         fix, or with `on-error` set to `skip`)"
                    )));
                }
                State::Paused => {
                    return Err(ReadError::Paused(format!(
                        "projection `{name}` is paused at {at} and has not applied position {position}; \
                         `reel resume {name}` resumes it"
                    )));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReadError::Timeout(match target {
                    None => format!("no event at position {position} was committed within {wait:?}"),
                    Some(_) => {
                        format!(
                            "projection `{name}` has not applied position {position} within {wait:?} (it is at {at})"
                        )
                    }
                }));
            }
            // Wake on progress, and look at the state again now and then.
            let step = (tokio::time::Instant::now() + std::time::Duration::from_millis(50)).min(deadline);
            match target {
                Some(t) => {
                    let _ = tokio::time::timeout_at(step, applied.wait_for(|c| *c >= t)).await;
                }
                None => tokio::time::sleep_until(step).await,
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
            if view.status.state() != State::Starting {
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
        let (view, turn) = self.serving_at(name, min_position).await?;
        self.on_reader(view, turn, f).await
    }

    /// A read of one key by `f`, as [`read`](Self::read); where the
    /// backend reads in process and an idle reader is at hand, on this
    /// thread: a keyed read there takes microseconds, less than the
    /// hand-over to a blocking thread and back (two thread wake-ups). An
    /// open SQLite reader in WAL mode waits for no writer and no (passive)
    /// checkpoint; a page no cache holds is a disk read here.
    pub async fn read_key<T, F>(&self, name: &str, min_position: Option<i64>, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Reader) -> Result<T, StoreError> + Send + 'static,
    {
        let (view, turn) = self.serving_at(name, min_position).await?;
        if self.store().reads_in_process()
            && let Some(reader) = view.readers.take()
        {
            let _turn = turn;
            return read_with(&view, reader, f);
        }
        self.on_reader(view, turn, f).await
    }

    /// The serving version of `name` once it has applied `min_position`
    /// (if given), and a turn to read it.
    async fn serving_at(
        &self,
        name: &str,
        min_position: Option<i64>,
    ) -> Result<(View, tokio::sync::OwnedSemaphorePermit), ReadError> {
        if let Some(position) = min_position {
            self.wait_for(name, position).await?;
        }
        self.serving(name).await
    }

    /// The serving version of `name` and a turn to read it (at most so many
    /// readers at once). A version retired meanwhile (a cut-over) has no
    /// turns left: the read goes to the version that replaced it.
    async fn serving(&self, name: &str) -> Result<(View, tokio::sync::OwnedSemaphorePermit), ReadError> {
        self.turn_on(name, |view| &view.readers, "read connections").await
    }

    /// The serving version of `name` and a turn on its `pool`, waiting for
    /// one at most the read wait: past it, [`ReadError::Busy`] (the server
    /// is not asked for more connections than the pool's turns).
    async fn turn_on<T>(
        &self,
        name: &str,
        pool: impl Fn(&View) -> &Arc<Pool<T>>,
        what: &str,
    ) -> Result<(View, tokio::sync::OwnedSemaphorePermit), ReadError> {
        let wait = self.config().read_wait;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let view = self.started_view(name).await?;
            match tokio::time::timeout_at(deadline, pool(&view).turn()).await {
                Ok(Some(turn)) => return Ok((view, turn)),
                Ok(None) => continue,
                Err(_) => {
                    return Err(ReadError::Busy(format!(
                        "projection `{name}`: all {POOL_SIZE} of its {what} stayed in use for {wait:?}; \
                         try again in a moment"
                    )));
                }
            }
        }
    }

    /// Run `f` on a reader of `view` in its `turn`: an idle one, else a new one.
    async fn on_reader<T, F>(&self, view: View, turn: tokio::sync::OwnedSemaphorePermit, f: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Reader) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store().clone();
        let deadline = self.config().limits_for(&view.ns.name).query_timeout;
        run_blocking(move || {
            let _turn = turn;
            let reader = match view.readers.take() {
                Some(reader) => reader,
                None => store
                    .open_reader(&view.ns, deadline)?
                    .ok_or_else(|| StoreError::NotFound(format!("projection `{}` has no data yet", view.ns.name)))?,
            };
            read_with(&view, reader, f)
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
        // Each instance holds a connection of its own: as many at once as
        // the version's query turns.
        let (view, turn) = self.turn_on(name, |view| &view.queries, "query instances").await?;
        let Some(program) = view.program.clone() else {
            return Err(ReadError::Conflict(format!("projection `{name}` has no module loaded to run queries")));
        };
        let store = self.store().clone();
        let mut limits = self.config().limits_for(name);
        limits.batch_timeout = limits.query_timeout;
        run_blocking(move || {
            let _turn = turn;
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

    /// The checksum of the serving version's whole read model, read in one
    /// snapshot (ADR 37). Its own connection, with a deadline of at least
    /// [`CHECKSUM_DEADLINE`]: it reads every row.
    pub async fn checksum(&self, name: &str, min_position: Option<i64>) -> Result<ReadModelSum, ReadError> {
        if let Some(position) = min_position {
            self.wait_for(name, position).await?;
        }
        let view = self.started_view(name).await?;
        let store = self.store().clone();
        let deadline = self.config().limits_for(name).query_timeout.max(CHECKSUM_DEADLINE);
        run_blocking(move || {
            let mut reader = store
                .open_reader(&view.ns, deadline)?
                .ok_or_else(|| StoreError::NotFound(format!("projection `{}` has no data yet", view.ns.name)))?;
            let mut sum = Checksum::default();
            reader.dump(&mut sum)?;
            Ok(sum.finish())
        })
        .await
    }

    /// Dead letters of the serving version.
    pub async fn dead_letters(&self, name: &str, after: i64, limit: usize) -> Result<Vec<DeadLetter>, ReadError> {
        self.read(name, None, move |ns| ns.dead_letters(after, limit.min(MAX_DEAD_LETTERS))).await
    }
}

/// `f` on `reader` of `view`, which goes back to the view's pool unless the
/// read failed in the database or past its deadline: after a deadline the
/// server may still act on the cancel it was sent and cancel the next
/// statement, so a fresh reader is safer.
fn read_with<T>(
    view: &View,
    mut reader: Box<dyn Reader>,
    f: impl FnOnce(&mut dyn Reader) -> Result<T, StoreError>,
) -> Result<T, ReadError> {
    let result = f(&mut *reader);
    if !matches!(result, Err(StoreError::Database(_) | StoreError::Deadline(_))) {
        view.readers.put(reader);
    }
    Ok(result?)
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ReadError::Internal(e.to_string()))?
}
