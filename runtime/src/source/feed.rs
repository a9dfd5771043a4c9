//! One client's live feed of the log: what it missed, read from the log
//! page by page at its own pace, then the live tail's spans. Every committed
//! event after the client's cursor comes once, in delivery order, whichever
//! way it arrives: a span starting past the cursor has its gap read from the
//! log, and events at or before the cursor are dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tail::{Received, Subscription};
use super::{Filter, Source, SourceError, Span};
use reel_model::{Cursor, Event};

/// Events per read while catching up.
const CATCH_UP_PAGE: usize = 500;
/// How often a client whose filter lets nothing through is told how far
/// the log has been read for it (so a reconnect does not read it again).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a feed hands its client next.
#[derive(Debug)]
pub enum FeedItem {
    /// An event and the cursor just after it (its resume token).
    Event(Cursor, Event),
    /// Nothing the client wants, but the log has been read up to here.
    Progress(Cursor),
    /// The client fell more than [`LIVE_BUFFER`](super::LIVE_BUFFER) events
    /// behind the tail: the feed ends here; the client resumes after this
    /// cursor.
    Cut(Cursor),
}

/// A client's feed, from a cursor on.
pub struct Feed {
    source: Source,
    filter: Filter,
    /// Everything committed at or before it has been handed out (or
    /// filtered out).
    at: Cursor,
    /// Read but not yet handed out.
    ready: VecDeque<(Cursor, Event)>,
    live: Option<Subscription>,
    /// A span that starts past `at`, waiting for the gap to be read.
    pending: Option<Arc<Span>>,
    reported: Cursor,
    reported_at: Instant,
    ended: bool,
}

impl Feed {
    /// The events matching `filter` after `after`.
    pub fn new(source: Source, after: Cursor, filter: Filter) -> Self {
        Self {
            source,
            filter,
            at: after,
            ready: VecDeque::new(),
            live: None,
            pending: None,
            reported: after,
            reported_at: Instant::now(),
            ended: false,
        }
    }

    /// The next item; `None` after a cut.
    pub async fn next(&mut self) -> Option<Result<FeedItem, SourceError>> {
        loop {
            if let Some((cursor, event)) = self.ready.pop_front() {
                self.reported = cursor;
                return Some(Ok(FeedItem::Event(cursor, event)));
            }
            if self.ended {
                return None;
            }
            if self.at != self.reported && self.reported_at.elapsed() >= PROGRESS_EVERY {
                self.reported = self.at;
                self.reported_at = Instant::now();
                return Some(Ok(FeedItem::Progress(self.at)));
            }
            let Some(live) = self.live.as_mut() else {
                // Catching up: page after page until a short one (the head).
                match self.catch_up().await {
                    Ok(true) => self.live = Some(self.source.follow(self.at)),
                    Ok(false) => {}
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            let span = match self.pending.take() {
                Some(span) => span,
                None => match live.recv().await {
                    Received::Span(span) => span,
                    Received::Cut => {
                        self.ended = true;
                        return Some(Ok(FeedItem::Cut(self.at)));
                    }
                    Received::Closed => return None,
                },
            };
            if span.next <= self.at {
                continue;
            }
            if span.from > self.at {
                // Events between the cursor and the span: read them first.
                let before = self.at;
                if let Err(e) = self.catch_up().await {
                    return Some(Err(e));
                }
                if self.at == before {
                    // The span's snapshot is ahead of ours for a moment.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                self.pending = Some(span);
                continue;
            }
            for (cursor, event) in span.cursors.iter().zip(&span.events) {
                if *cursor > self.at && self.filter.matches(&event.event_type, &event.stream_id) {
                    self.ready.push_back((*cursor, event.clone()));
                }
            }
            self.at = span.next;
        }
    }

    /// Reads one page after the cursor into `ready`; whether it reached the
    /// head (a short page).
    async fn catch_up(&mut self) -> Result<bool, SourceError> {
        let batch = self.source.read_page(self.at, self.filter.clone(), CATCH_UP_PAGE).await?;
        let done = batch.events.len() < CATCH_UP_PAGE;
        self.ready.extend(batch.cursors.into_iter().zip(batch.events));
        self.at = batch.next;
        Ok(done)
    }
}
