//! Pages of the log for outside consumers (`GET /events`, the live feed's
//! catch-up, the live tail, sinks): the workers' own [`EventReader`]s, so a
//! consumer sees the log in the same gap-free delivery order, kept in a
//! small pool because a reader holds a connection (on PostgreSQL, one
//! connect per page would cost more than the page).
//!
//! The pool has [`LOG_READERS`] turns and never holds more readers than
//! that: a burst of page reads queues for a turn instead of opening a
//! connection each (64 concurrent `GET /events` opened 64 connections and
//! met the server's connection limit with `503 unavailable`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reel_model::Cursor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Batch, EventLog, EventReader, Filter, SourceError};

/// Page readers at most, in use or idle (each a connection on PostgreSQL).
pub const LOG_READERS: usize = 8;

/// Readers for requests, opened on demand and kept.
pub(super) struct ReaderPool {
    /// Readers not in use. A reader is opened only when none is idle, so
    /// the readers in use and idle together never outnumber the turns.
    idle: Mutex<Vec<Box<dyn EventReader>>>,
    /// One per reader in use.
    turns: Arc<Semaphore>,
}

impl Default for ReaderPool {
    fn default() -> Self {
        Self { idle: Mutex::default(), turns: Arc::new(Semaphore::new(LOG_READERS)) }
    }
}

impl ReaderPool {
    /// Up to `limit` events matching `filter` after `after`, read on a
    /// blocking thread by a pooled reader, once one of the turns is free:
    /// waiting for one at most `wait` (then [`SourceError::Busy`]), or as
    /// long as it takes when `None`.
    pub(super) async fn read(
        self: &Arc<Self>,
        log: &Arc<dyn EventLog>,
        after: Cursor,
        filter: Filter,
        limit: usize,
        wait: Option<Duration>,
    ) -> Result<Batch, SourceError> {
        let turn = self.turn(wait).await?;
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let pool = Arc::clone(self);
        let log = Arc::clone(log);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let mut reader = match taken {
                Some(reader) => reader,
                None => log.reader()?,
            };
            // A reader that failed may hold a broken connection: it is dropped.
            let batch = reader.read_batch(after, &filter, limit)?;
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(reader);
            Ok(batch)
        })
        .await
        .map_err(|e| SourceError::Internal(format!("a page read died: {e}")))?
    }

    async fn turn(&self, wait: Option<Duration>) -> Result<OwnedSemaphorePermit, SourceError> {
        let turn = Arc::clone(&self.turns).acquire_owned();
        let turn = match wait {
            None => turn.await,
            Some(wait) => tokio::time::timeout(wait, turn).await.map_err(|_| {
                SourceError::Busy(format!(
                    "all {LOG_READERS} log readers stayed in use for {wait:?}; try again in a moment"
                ))
            })?,
        };
        Ok(turn.expect("the turns are never closed"))
    }
}
