//! The live tail of the log: one reader per process follows the head and
//! hands each new span of events to every live-feed client at once, so a
//! hundred clients cost one read per commit, not a hundred. It runs while
//! someone listens and stops when the last one leaves.
//!
//! Each client has a queue of spans bounded in events: a client whose queue
//! passes [`LIVE_BUFFER`] events is cut, its queue emptied at once. Queues
//! hold shared spans and each ends at the newest one, so all of them
//! together hold at most the last `LIVE_BUFFER` events: memory stays flat
//! however many clients stall (ADR 28).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use reel_model::{Cursor, Event};
use tokio::sync::Notify;

use super::{Filter, Source};

/// Events a client may have waiting before it is cut (it then resumes from
/// the log, at its own pace).
pub const LIVE_BUFFER: usize = 10_000;
/// Most events in one span.
const SPAN_EVENTS: usize = 1_000;
/// How often the tail looks without a wake-up: on PostgreSQL, events held
/// back by an open transaction anywhere in the cluster are released by its
/// end, which notifies nobody.
const POLL: Duration = Duration::from_millis(100);

/// Events the tail read in one go: everything committed in `(from, next]`.
#[derive(Debug)]
pub struct Span {
    /// Where the read started.
    pub from: Cursor,
    /// The events, in delivery order.
    pub events: Vec<Event>,
    /// The cursor of each event.
    pub cursors: Vec<Cursor>,
    /// Where the read ended.
    pub next: Cursor,
}

/// The process's tail, started on demand.
#[derive(Default)]
pub(super) struct Tail {
    clients: Mutex<Clients>,
    /// Spans read since start (for tests and metrics).
    spans: AtomicU64,
    /// Set when the source closes: the tail stops, clients end.
    closed: AtomicBool,
}

impl Tail {
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Clients {
    queues: Vec<Weak<Queue>>,
    /// A tail task runs (it stops when it finds no queue left).
    running: bool,
}

/// One client's spans, not yet taken.
#[derive(Default)]
struct Queue {
    state: Mutex<Waiting>,
    ready: Notify,
}

#[derive(Default)]
struct Waiting {
    spans: VecDeque<Arc<Span>>,
    /// Events in `spans`.
    events: usize,
    /// The client fell [`LIVE_BUFFER`] events behind and was cut.
    cut: bool,
    /// The tail stopped (reel is stopping).
    closed: bool,
}

/// What [`Subscription::recv`] got.
#[derive(Debug)]
pub enum Received {
    /// The next span.
    Span(Arc<Span>),
    /// The client was more than [`LIVE_BUFFER`] events behind: cut.
    Cut,
    /// reel is stopping.
    Closed,
}

/// A client's place in the tail; dropping it leaves.
pub struct Subscription {
    queue: Arc<Queue>,
}

impl Subscription {
    /// The next span, waiting for one.
    pub async fn recv(&self) -> Received {
        loop {
            {
                let mut waiting = self.queue.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(span) = waiting.spans.pop_front() {
                    waiting.events -= span.events.len();
                    return Received::Span(span);
                }
                if waiting.cut {
                    return Received::Cut;
                }
                if waiting.closed {
                    return Received::Closed;
                }
            }
            self.queue.ready.notified().await;
        }
    }
}

impl Source {
    /// Spans of events committed from now on. A tail started by this call
    /// starts at `from` (a head the caller has read to); a running one goes
    /// on from where it is, and a client that finds a span starting past
    /// its own cursor reads the gap from the log.
    pub fn follow(&self, from: Cursor) -> Subscription {
        let queue = Arc::new(Queue::default());
        let mut clients = self.tail.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.running {
            clients.running = true;
            tokio::spawn(follow(self.clone(), from));
        }
        clients.queues.push(Arc::downgrade(&queue));
        Subscription { queue }
    }

    /// Spans the live tail has read since start.
    pub fn live_spans(&self) -> u64 {
        self.tail.spans.load(Ordering::Relaxed)
    }
}

/// Hand `span` to every client still there; false when none is.
fn hand_out(tail: &Tail, span: Option<Arc<Span>>) -> bool {
    let closed = tail.closed.load(Ordering::Relaxed);
    let mut clients = tail.clients.lock().unwrap_or_else(|p| p.into_inner());
    clients.queues.retain(|client| {
        let Some(queue) = client.upgrade() else { return false };
        let mut waiting = queue.state.lock().unwrap_or_else(|p| p.into_inner());
        if closed {
            waiting.closed = true;
        } else if let Some(span) = &span
            && !waiting.cut
        {
            waiting.events += span.events.len();
            waiting.spans.push_back(Arc::clone(span));
            if waiting.events > LIVE_BUFFER {
                (waiting.spans, waiting.events, waiting.cut) = (VecDeque::new(), 0, true);
            }
        }
        drop(waiting);
        queue.ready.notify_one();
        !closed
    });
    clients.running = !clients.queues.is_empty();
    clients.running
}

async fn follow(source: Source, mut at: Cursor) {
    let mut wake = source.wakeups();
    loop {
        let mut span = None;
        match source.read_page(at, Filter::default(), SPAN_EVENTS).await {
            Ok(batch) if batch.next != at => {
                source.tail.spans.fetch_add(1, Ordering::Relaxed);
                span =
                    Some(Arc::new(Span { from: at, events: batch.events, cursors: batch.cursors, next: batch.next }));
                at = batch.next;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("the live tail cannot read the log: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let full = span.as_ref().is_some_and(|s| s.events.len() == SPAN_EVENTS);
        if !hand_out(&source.tail, span) {
            return;
        }
        if !full {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}
