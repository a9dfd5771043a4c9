//! What a worker reports: state, cursor, throughput, the last error. Shared
//! with the HTTP API; the applied cursor is also a watch channel so reads can
//! wait for their own writes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use reel_model::Cursor;
use reel_model::time::{format_micros, now_micros};

/// Lifecycle of a projection version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Opening its namespace, instantiating, running `init`.
    Starting,
    /// Applying events (or waiting for new ones).
    Running,
    /// A batch failed; retrying with backoff.
    Retrying,
    /// Halted at a poison event (policy `stop`); a fixed module resumes it.
    Stopped,
    /// Paused through the API.
    Paused,
    /// Another runtime moved the checkpoint: this one stepped back.
    Fenced,
    /// Another runtime runs this projection; this one takes over if it goes.
    Standby,
    /// Its module file was removed: the read model stays readable.
    Unloaded,
}

/// The last failure of a projection.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// What happened.
    pub message: String,
    /// The event it happened on, when known.
    pub position: Option<i64>,
    /// When (RFC 3339).
    pub at: String,
    /// Consecutive failed attempts.
    pub attempts: u32,
}

/// What an administrator may do to a projection's poison events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Admin {
    /// The event a stopped projection halted at, set aside as a dead letter.
    Skip,
    /// A dead letter deleted for good.
    Discard,
}

/// An admin action done (`reel skip`, `reel discard`).
#[derive(Debug, Clone, Serialize)]
pub struct AdminAction {
    /// What was done.
    pub action: Admin,
    /// The event's position.
    pub position: i64,
    /// Who asked, as far as reel knows (the client's address).
    pub by: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// Admin actions a status keeps, newest first (all of them go to the log).
const ADMIN_ACTIONS: usize = 10;

/// A snapshot of a worker's status.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// State.
    pub state: State,
    /// Everything at or before this cursor is applied.
    pub cursor: Cursor,
    /// True when the last read found no more events than it could take (the
    /// projection is at the head of the log).
    pub at_head: bool,
    /// Events applied by this worker since it started.
    pub events_applied: u64,
    /// Batches committed since it started.
    pub batches: u64,
    /// Events per second over the last few seconds.
    pub events_per_second: f64,
    /// Last failure, cleared by the next success.
    pub last_error: Option<ErrorReport>,
    /// Position of the event it stopped at (state `stopped`).
    pub stopped_at: Option<i64>,
    /// Events set aside in the dead-letter table by this worker.
    pub dead_lettered: u64,
    /// Events an administrator skipped since the worker started.
    pub skipped: u64,
    /// Dead letters an administrator discarded since the worker started.
    pub discarded: u64,
    /// The last admin actions, newest first.
    pub admin_actions: Vec<AdminAction>,
    /// A reactor's events appended to the log by this worker.
    pub emitted: u64,
    /// A reactor's emissions dropped because an earlier version had handled
    /// their cause (history wins, ADR 23).
    pub emissions_dropped: u64,
    /// A reactor's timers fired by this worker.
    pub timers_fired: u64,
    /// A reactor's timers pending, as last seen.
    pub timers_pending: u64,
    /// A reactor's outbox entries not forwarded yet, as last seen.
    pub outbox: u64,
}

/// Shared status of one worker.
pub struct Status {
    inner: Mutex<Inner>,
    applied: watch::Sender<Cursor>,
}

struct Inner {
    snapshot: Snapshot,
    /// (when, total events applied) samples of the last few seconds.
    samples: VecDeque<(Instant, u64)>,
}

/// Window for `events_per_second`.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Status {
    /// A worker about to start at `cursor`.
    pub fn new(cursor: Cursor) -> Self {
        let snapshot = Snapshot {
            state: State::Starting,
            cursor,
            at_head: false,
            events_applied: 0,
            batches: 0,
            events_per_second: 0.0,
            last_error: None,
            stopped_at: None,
            dead_lettered: 0,
            skipped: 0,
            discarded: 0,
            admin_actions: Vec::new(),
            emitted: 0,
            emissions_dropped: 0,
            timers_fired: 0,
            timers_pending: 0,
            outbox: 0,
        };
        // A sample at the start, so the first batch already gives a rate (and a
        // rebuild an ETA) instead of 0 until the second one commits.
        let samples = VecDeque::from([(Instant::now(), 0)]);
        Self { inner: Mutex::new(Inner { snapshot, samples }), applied: watch::channel(cursor).0 }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner)
    }

    /// The current status.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|i| {
            let mut s = i.snapshot.clone();
            s.events_per_second = rate(&i.samples, s.events_applied);
            s
        })
    }

    /// Watch the applied cursor.
    pub fn applied(&self) -> watch::Receiver<Cursor> {
        self.applied.subscribe()
    }

    /// The applied cursor now.
    pub fn cursor(&self) -> Cursor {
        *self.applied.borrow()
    }

    /// Set the state.
    pub fn set_state(&self, state: State) {
        self.with(|i| i.snapshot.state = state);
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.with(|i| i.snapshot.state)
    }

    /// A batch of `events` committed, moving the cursor to `cursor`.
    pub fn committed(&self, events: usize, cursor: Cursor) {
        self.with(|i| {
            let s = &mut i.snapshot;
            s.events_applied += events as u64;
            s.batches += 1;
            s.cursor = cursor;
            s.last_error = None;
            s.stopped_at = None;
            if matches!(s.state, State::Retrying | State::Starting | State::Stopped) {
                s.state = State::Running;
            }
            let now = Instant::now();
            i.samples.push_back((now, s.events_applied));
            while i.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW) {
                i.samples.pop_front();
            }
        });
        self.advanced(cursor);
    }

    /// The cursor moved past events the projection does not subscribe to.
    pub fn advanced(&self, cursor: Cursor) {
        self.with(|i| i.snapshot.cursor = cursor);
        self.applied.send_if_modified(|c| {
            let moved = cursor > *c;
            if moved {
                *c = cursor;
            }
            moved
        });
    }

    /// Whether the last read reached the head of the log.
    pub fn set_at_head(&self, at_head: bool) {
        self.with(|i| i.snapshot.at_head = at_head);
    }

    /// A failure (the state says what happens next).
    pub fn failed(&self, state: State, message: String, position: Option<i64>, attempts: u32) {
        self.with(|i| {
            i.snapshot.state = state;
            i.snapshot.last_error = Some(ErrorReport { message, position, at: format_micros(now_micros()), attempts });
            if state == State::Stopped {
                i.snapshot.stopped_at = position;
            }
        });
    }

    /// A reactor's batch appended `emitted` events and dropped `dropped`.
    pub fn forwarded(&self, emitted: u64, dropped: u64) {
        self.with(|i| {
            i.snapshot.emitted += emitted;
            i.snapshot.emissions_dropped += dropped;
        });
    }

    /// A reactor's worker fired `fired` timers; `pending` are left.
    pub fn timers(&self, fired: u64, pending: u64) {
        self.with(|i| {
            i.snapshot.timers_fired += fired;
            i.snapshot.timers_pending = pending;
        });
    }

    /// `entries` of a reactor's outbox wait to be forwarded.
    pub fn outbox(&self, entries: u64) {
        self.with(|i| i.snapshot.outbox = entries);
    }

    /// An event went to the dead-letter table.
    pub fn dead_lettered(&self) {
        self.with(|i| i.snapshot.dead_lettered += 1);
    }

    /// An administrator's `action` on event `position` succeeded.
    pub fn admin(&self, action: Admin, position: i64, by: Option<String>) {
        self.with(|i| {
            let s = &mut i.snapshot;
            match action {
                Admin::Skip => s.skipped += 1,
                Admin::Discard => s.discarded += 1,
            }
            s.admin_actions.insert(0, AdminAction { action, position, by, at: format_micros(now_micros()) });
            s.admin_actions.truncate(ADMIN_ACTIONS);
        });
    }
}

fn rate(samples: &VecDeque<(Instant, u64)>, total: u64) -> f64 {
    match samples.front() {
        Some((first, first_total)) => {
            let span = first.elapsed().as_secs_f64().max(0.001);
            if first.elapsed() > RATE_WINDOW { 0.0 } else { (total - first_total) as f64 / span }
        }
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_batch_already_gives_a_rate() {
        let status = Status::new(Cursor { tx: 0, id: 0 });
        std::thread::sleep(Duration::from_millis(20));
        status.committed(20_000, Cursor { tx: 0, id: 20_000 });
        let rate = status.snapshot().events_per_second;
        assert!(rate > 0.0 && rate <= 20_000.0 / 0.02, "{rate}");
    }
}
