//! Reads of the log itself: one stream's events, in version order
//! (`GET /streams/{id}`), and pages of the whole log (`GET /events`),
//! straight from the event log, no projection between.

use reel_model::{Cursor, Event};

use super::{ReadError, Reads};
use crate::source::{Batch, Filter};

/// A page of one stream's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    /// Events with a version above the one asked for, in version order.
    pub events: Vec<Event>,
    /// The version to pass as `from_version` for the next page, when there
    /// are more events.
    pub next: Option<i64>,
}

impl Reads {
    /// Up to `limit` events of `stream` with a version above `from_version`,
    /// after waiting (bounded) for the event at `min_position` to be committed.
    /// `NotFound` for a stream with no events.
    pub async fn stream(
        &self,
        stream: &str,
        from_version: i64,
        limit: usize,
        min_position: Option<i64>,
    ) -> Result<StreamPage, ReadError> {
        if let Some(position) = min_position {
            self.wait_committed(position).await?;
        }
        // One more than asked tells whether there is a next page.
        let mut events = self.source().read_stream(stream, from_version, limit + 1).await?;
        if events.is_empty() && (from_version == 0 || self.source().read_stream(stream, 0, 1).await?.is_empty()) {
            return Err(ReadError::NotFound(format!("no stream `{stream}`: no event was appended to it")));
        }
        let next = (events.len() > limit).then(|| {
            events.truncate(limit);
            events.last().map_or(from_version, |e| e.version)
        });
        Ok(StreamPage { events, next })
    }

    /// Up to `limit` events matching `filter` after `after`, in delivery
    /// order, once one of the log readers is free: after the read wait,
    /// `busy` ([`crate::source::SourceError::Busy`]: the server is not asked for more
    /// connections).
    pub async fn log_page(&self, after: Cursor, filter: Filter, limit: usize) -> Result<Batch, ReadError> {
        Ok(self.source().read_page_within(after, filter, limit, self.config().read_wait).await?)
    }

    /// Wait (bounded by the read wait) until the event at `position` is
    /// committed: a read of the log that must see a write it was told of. A
    /// position the log never handed out is `PositionUnknown`, at once.
    pub async fn wait_committed(&self, position: i64) -> Result<(), ReadError> {
        let wait = self.config().read_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let issued = self.source().last_issued().await?;
        if position > issued {
            return Err(ReadError::PositionUnknown(format!(
                "position {position} was never handed out: the log's last position is {issued}"
            )));
        }
        let mut wakeups = self.source().wakeups();
        loop {
            if self.source().cursor_of(position).await?.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReadError::Timeout(format!(
                    "no event at position {position} was committed within {wait:?}"
                )));
            }
            // Wake on an append, and look again now and then (another process's
            // commit may come with no notification).
            let step = (tokio::time::Instant::now() + std::time::Duration::from_millis(50)).min(deadline);
            let _ = tokio::time::timeout_at(step, wakeups.changed()).await;
        }
    }
}
