//! Pages of the log for outside consumers (`GET /events`, the live feed's
//! catch-up): the workers' own [`EventReader`]s, so a consumer sees the log
//! in the same gap-free delivery order, kept in a small pool because a
//! reader holds a connection (on PostgreSQL, one connect per page would cost
//! more than the page).

use std::sync::{Arc, Mutex};

use reel_model::Cursor;

use super::{Batch, EventLog, EventReader, Filter, SourceError};

/// Idle readers kept between requests; more are opened under load and
/// closed when returned to a full pool.
const IDLE_READERS: usize = 4;

/// Readers for requests, opened on demand.
#[derive(Default)]
pub(super) struct ReaderPool {
    idle: Mutex<Vec<Box<dyn EventReader>>>,
}

impl ReaderPool {
    /// Up to `limit` events matching `filter` after `after`, read on a
    /// blocking thread by a pooled reader.
    pub(super) async fn read(
        self: &Arc<Self>,
        log: &Arc<dyn EventLog>,
        after: Cursor,
        filter: Filter,
        limit: usize,
    ) -> Result<Batch, SourceError> {
        let taken = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let pool = Arc::clone(self);
        let log = Arc::clone(log);
        tokio::task::spawn_blocking(move || {
            let mut reader = match taken {
                Some(reader) => reader,
                None => log.reader()?,
            };
            // A reader that failed may hold a broken connection: it is dropped.
            let batch = reader.read_batch(after, &filter, limit)?;
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_READERS {
                idle.push(reader);
            }
            Ok(batch)
        })
        .await
        .map_err(|e| SourceError::Internal(format!("a page read died: {e}")))?
    }
}
