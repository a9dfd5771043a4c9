//! One worker thread per projection version: read a batch after the cursor,
//! hand it to the guest, commit its writes and the new checkpoint in one
//! transaction. Failures roll back; persistent ones are narrowed down to the
//! poison event, which the projection's policy stops at or skips, recorded
//! first for a replay (ADR 49).

mod batch;
mod failures;
pub mod record;
mod recording;
pub mod status;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

pub use batch::calls;
pub use status::{Admin, State, Status};

use reel_model::{Cursor, Event, OnError};

use crate::config::{BatchConfig, Limits};
use crate::host::emitter::Emitter;
use crate::host::{Access, Capabilities, Guest, GuestFailure};
use crate::modules::Program;
use crate::source::{EventReader, Filter, Source};
use crate::store::{NamespaceId, Store, StoreError};

/// Attempts at a failing batch before narrowing it down.
const ATTEMPTS: u32 = 3;
/// First retry delay; doubles per attempt.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often a cursor moved only past unsubscribed events is persisted.
const PERSIST_SKIPS_EVERY: Duration = Duration::from_secs(1);
/// How often a standby checks whether the owner of its projection is gone.
const STANDBY_CHECK: Duration = Duration::from_secs(2);
/// How long a fenced worker waits before trying to own the projection again.
const FENCED_PAUSE: Duration = Duration::from_secs(5);
/// How often a running reactor looks for due timers at most, when none is
/// known to be due sooner (another version or process may schedule one).
const TIMER_CHECK: Duration = Duration::from_millis(500);

/// What a worker can be told between batches.
pub enum Control {
    /// Run new code of the same name and version from the checkpoint.
    Swap(Program),
    /// Stop taking batches; answered once the worker is paused, so a read
    /// right after sees the state the request asked for.
    Pause {
        /// Answered when done.
        reply: tokio::sync::oneshot::Sender<Result<(), WorkerError>>,
    },
    /// Take batches again (also retries a stopped projection); answered once
    /// the worker runs again.
    Resume {
        /// Answered when done.
        reply: tokio::sync::oneshot::Sender<Result<(), WorkerError>>,
    },
    /// Apply a dead-lettered event again; it leaves the table on success.
    RetryDeadLetter {
        /// The event's position.
        position: i64,
        /// The outcome.
        reply: tokio::sync::oneshot::Sender<Result<(), WorkerError>>,
    },
    /// Skip the event a stopped projection halted at (it goes to the dead
    /// letters), or discard a dead letter; recorded in the status.
    Admin {
        /// Which.
        action: Admin,
        /// The event's position.
        position: i64,
        /// Who asked.
        by: Option<String>,
        /// The outcome.
        reply: tokio::sync::oneshot::Sender<Result<(), WorkerError>>,
    },
    /// Read no event past `at` (`None`: past where the worker is now);
    /// answered with the checkpoint, committed, once the worker is there. A
    /// shadow run compares two versions at one position this way (ADR 48).
    Hold {
        /// The last position to apply.
        at: Option<Cursor>,
        /// The committed checkpoint, exactly `at`; refused if the worker is
        /// past it already.
        reply: tokio::sync::oneshot::Sender<Result<Cursor, WorkerError>>,
    },
    /// Go on past a hold.
    Release,
    /// Finish the current batch and exit.
    Exit,
}

/// Why a worker could not do what it was told (a dead letter's retry).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No such dead letter.
    #[error("{0}")]
    NotFound(String),
    /// Not possible in the worker's state.
    #[error("{0}")]
    Conflict(String),
    /// A skip of an event the projection is not stopped at.
    #[error("{0}")]
    NotStoppedAt(String),
    /// The projection failed on it.
    #[error("{0}")]
    Guest(GuestFailure),
    /// Read-model storage failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Everything a worker needs to run.
#[derive(Clone)]
pub struct WorkerContext {
    /// The event log.
    pub source: Source,
    /// Read-model storage.
    pub store: Store,
    /// Limits of the projection.
    pub limits: Limits,
    /// Batch sizes.
    pub batch: BatchConfig,
    /// Polling when no wake-up arrives.
    pub poll_interval: Duration,
    /// Overrides the manifest's `on-error` policy.
    pub on_error: Option<OnError>,
    /// The tokio runtime that drives connections and timers (a multi-threaded one).
    pub handle: tokio::runtime::Handle,
    /// The data folder: records of poison events go to its `replays/` (ADR 49).
    pub data_dir: std::path::PathBuf,
}

/// The handle on a worker thread.
pub struct WorkerHandle {
    control: mpsc::UnboundedSender<Control>,
    /// Its status.
    pub status: Arc<Status>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Send a control message (ignored if the worker has exited).
    pub fn send(&self, control: Control) {
        let _ = self.control.send(control);
    }

    /// Tell the worker to exit and wait for it (blocking).
    pub fn stop(mut self) {
        self.send(Control::Exit);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Start a worker for `program` in namespace `ns`.
pub fn spawn(ctx: WorkerContext, ns: NamespaceId, program: Program) -> WorkerHandle {
    let (control, control_rx) = mpsc::unbounded_channel();
    let status = Arc::new(Status::new(Cursor::START));
    let batch_limit = first_batch(&ctx.batch);
    let worker = Worker {
        filter: filter_of(&program),
        wake: ctx.source.wakeups(),
        ctx,
        ns,
        program,
        status: Arc::clone(&status),
        control: control_rx,
        guest: None,
        spare: None,
        reader: None,
        cursor: Cursor::START,
        persisted: Cursor::START,
        last_persist: Instant::now(),
        batch_limit,
        behind: None,
        forwarding: None,
        forwards_behind: false,
        careful: false,
        capture_started: false,
        paused: false,
        halted: false,
        poisoned: None,
        swapped: false,
        timer_check: Instant::now(),
        hold: None,
        hold_reply: None,
        busy_at: Some(Instant::now()),
        dead_letter_failures: 0,
    };
    let thread = std::thread::Builder::new()
        .name(format!("reel-{}", worker.ns))
        .spawn(move || worker.run())
        .expect("spawning a worker thread");
    WorkerHandle { control, status, thread: Some(thread) }
}

fn filter_of(program: &Program) -> Filter {
    let m = program.manifest();
    Filter::new(&m.event_types, &m.stream_prefixes)
}

/// Why processing stopped short.
enum Halt {
    /// Told to exit.
    Exit,
    /// Stopped at a poison event.
    Stopped,
    /// Another runtime moved the checkpoint.
    Fenced,
    /// The namespace's connection is gone: open it again.
    Reconnect,
    /// A write of reel's own failed where the batch cannot be retried in
    /// place (a dead letter): open the namespace again and go on from the
    /// committed checkpoint.
    Retry,
}

struct Worker {
    ctx: WorkerContext,
    ns: NamespaceId,
    program: Program,
    filter: Filter,
    status: Arc<Status>,
    control: mpsc::UnboundedReceiver<Control>,
    wake: watch::Receiver<u64>,
    /// The instance, when one is alive.
    guest: Option<Box<dyn Guest>>,
    /// Capabilities waiting for a new instance.
    spare: Option<Capabilities>,
    reader: Option<Box<dyn EventReader>>,
    /// Everything at or before it is applied (in memory).
    cursor: Cursor,
    /// The committed checkpoint (`cursor` may be ahead of it by events the
    /// projection does not subscribe to).
    persisted: Cursor,
    last_persist: Instant,
    /// Events to read for the next batch (see [`BatchConfig`]).
    batch_limit: usize,
    /// The last batch, if its commit was sent without waiting for it.
    behind: Option<Behind>,
    /// A reactor's outbox entry being appended to the log meanwhile (SQLite).
    forwarding: Option<Forwarding>,
    /// Its emissions are appended while it goes on (an outbox forwarded, a
    /// commit behind): its batches are kept smaller (`batch::FORWARDED_BATCH`).
    forwards_behind: bool,
    /// A batch committed behind failed: commit the next one in the
    /// foreground, so that its failure is retried and narrowed down.
    careful: bool,
    /// The namespace was told the version reached the head, so that its
    /// changes (if captured) are captured from there on (ADR 30).
    capture_started: bool,
    paused: bool,
    halted: bool,
    /// The event it stopped at (policy `stop`) and the cursor after it, for
    /// an administrator's skip.
    poisoned: Option<(Event, Cursor)>,
    /// Its code was swapped for new code of the same version, whose `init`
    /// did not run: a poison event then says so.
    swapped: bool,
    /// When a reactor looks for due timers next.
    timer_check: Instant,
    /// The last position to apply, while held ([`Control::Hold`]).
    hold: Option<Cursor>,
    /// Who waits for the worker to reach its hold.
    hold_reply: Option<tokio::sync::oneshot::Sender<Result<Cursor, WorkerError>>>,
    /// When it last applied a batch, if it has not given back the memory it
    /// freed since (`IDLE_GIVE_BACK`).
    busy_at: Option<Instant>,
    /// Dead letters the database refused in a row: each wait before trying
    /// again is longer (`Halt::Retry`).
    dead_letter_failures: u32,
}

/// How long a worker is idle before it gives the memory it freed back to
/// the system: longer than the gaps between a live feed's batches, so that
/// a busy worker does not pay for it.
const IDLE_GIVE_BACK: Duration = Duration::from_secs(2);

/// The open namespace's capabilities, with the instance or without it.
fn open_caps<'a>(
    guest: &'a mut Option<Box<dyn Guest>>,
    spare: &'a mut Option<Capabilities>,
) -> Option<&'a mut Capabilities> {
    match (guest, spare) {
        (Some(guest), _) => Some(guest.caps()),
        (None, spare) => spare.as_mut(),
    }
}

/// A reactor's outbox entry being appended to the log (SQLite) while the
/// worker handles the next batch (ADR 23).
struct Forwarding {
    /// The entry's id in the outbox.
    id: i64,
    /// Its append.
    task: tokio::task::JoinHandle<Result<reel_model::Forwarded, crate::source::SourceError>>,
}

/// A batch whose commit was sent and not yet answered: the worker applies
/// the next batch meanwhile, on the connection behind it, so the guest runs
/// while the database commits (see `docs/adr/13-commit-behind.md`).
struct Behind {
    /// The checkpoint before it (committed).
    from: Cursor,
    /// The checkpoint it moves to.
    end: Cursor,
    /// Its events.
    events: usize,
    /// Logged once its commit is known.
    line: batch::BatchLine,
}

/// The first batch's size, before the worker knows how fast the projection
/// is: small enough for a slow guest to handle well within its deadline.
fn first_batch(batch: &BatchConfig) -> usize {
    FIRST_BATCH.min(batch.call_events).min(batch.max_events).max(1)
}

/// The first batch's size at most.
const FIRST_BATCH: usize = 20_000;

/// Smallest batch a projection is tuned down to.
const MIN_BATCH: usize = 100;

fn backoff(attempt: u32) -> Duration {
    BACKOFF_START.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(BACKOFF_MAX)
}

impl Worker {
    fn run(mut self) {
        tracing::info!(projection = %self.ns, "worker starting");
        if !self.start() {
            return self.exit();
        }
        loop {
            if self.drain_control().is_err() {
                break;
            }
            if self.paused || self.halted {
                if self.wait(Duration::from_secs(3600)).is_err() {
                    break;
                }
                continue;
            }
            self.fire_timers();
            match self.step() {
                Ok(true) => self.busy_at = Some(Instant::now()),
                Ok(false) => {
                    if self.busy_at.is_some_and(|at| at.elapsed() >= IDLE_GIVE_BACK) {
                        crate::give_back_freed_memory();
                        self.busy_at = None;
                    }
                    if self.wait(self.idle_wait()).is_err() {
                        break;
                    }
                }
                Err(Halt::Exit) => break,
                Err(Halt::Stopped) => self.halted = true,
                Err(Halt::Fenced) => {
                    // Someone else committed: step back, then start over from
                    // the database's checkpoint (or stand by).
                    if !self.start_over(FENCED_PAUSE) {
                        break;
                    }
                }
                Err(Halt::Reconnect) => {
                    // The server closed the connection (a restart, a failover,
                    // an administrator).
                    tracing::warn!(projection = %self.ns, "the read-model connection is closed; reconnecting");
                    if !self.start_over(Duration::ZERO) {
                        break;
                    }
                }
                Err(Halt::Retry) => {
                    // A dead letter could not be written (after its backoff).
                    tracing::warn!(projection = %self.ns, "going on again from the committed checkpoint");
                    if !self.start_over(Duration::ZERO) {
                        break;
                    }
                }
            }
        }
        self.exit();
    }

    /// Drop the instance, the connections and the reader, wait `pause`, and
    /// open the namespace again, going on from its committed checkpoint (or
    /// standing by); false when told to exit meanwhile.
    fn start_over(&mut self, pause: Duration) -> bool {
        // Its outcome waited for, but the outbox left as it is: the worker
        // may have been fenced, and the next start forwards what it holds.
        if let Some(forwarding) = self.forwarding.take() {
            let _ = self.ctx.handle.block_on(forwarding.task);
        }
        self.guest = None;
        self.spare = None;
        self.reader = None;
        (pause.is_zero() || self.wait(pause).is_ok()) && self.start()
    }

    /// Open the namespace until it works (or the worker is told to exit).
    fn start(&mut self) -> bool {
        let mut attempt = 0;
        loop {
            match self.open() {
                Ok(true) => break,
                Ok(false) => {
                    self.status.set_state(State::Standby);
                    if self.wait(STANDBY_CHECK).is_err() {
                        return false;
                    }
                }
                Err(e) => {
                    attempt += 1;
                    // Retried with backoff either way (a fixed file replaces
                    // the program): the state says so, the message says where.
                    let message = if e.is_projection_fault() {
                        format!("setup (init) failed: {e}")
                    } else {
                        format!("starting: {e}")
                    };
                    tracing::warn!(projection = %self.ns, "cannot start, retrying: {message}");
                    self.status.failed(State::Retrying, message, None, attempt);
                    if self.wait(backoff(attempt)).is_err() {
                        return false;
                    }
                }
            }
        }
        self.status.set_state(State::Running);
        true
    }

    fn exit(mut self) {
        self.settle_behind();
        self.settle_forward();
        if self.cursor > self.persisted {
            let _ = self.persist();
        }
        tracing::info!(projection = %self.ns, "worker stopped");
    }

    /// Claim and open the namespace, instantiate, run `init` once.
    /// `Ok(false)`: another runtime owns the projection.
    fn open(&mut self) -> Result<bool, GuestFailure> {
        // After a failed start, keep the claimed connection: opening another
        // would find our own claim in the way.
        let mut caps = match (self.guest.take(), self.spare.take()) {
            (Some(guest), _) => guest.into_caps(),
            (None, Some(caps)) => caps,
            (None, None) => {
                let mut writer = self.ctx.store.open_writer(&self.ns, self.ctx.limits.batch_timeout)?;
                if !writer.try_claim()? {
                    return Ok(false);
                }
                let mut caps = Capabilities::new(&self.ns.name, Access::Write(writer), self.ctx.limits.clone())?;
                if let Some(emits) = self.program.emits() {
                    self.ctx.store.declare_emits(&self.ns, &emits.stream_prefix)?;
                    caps.set_emitter(Emitter::new(&self.ns.name, &self.ns.version, emits, self.ctx.limits.emit));
                }
                caps
            }
        };
        let checkpoint = caps.namespace().checkpoint()?;
        self.spare = Some(caps);
        if !checkpoint.initialized {
            let guest = self.guest()?;
            guest.caps().begin()?;
            let result = guest.init().and_then(|()| Ok(guest.caps().commit(Cursor::START, Cursor::START)?));
            if let Err(e) = result {
                self.discard(&e);
                return Err(e);
            }
        }
        // What a crash left in a reactor's outbox goes first.
        self.forward();
        self.cursor = checkpoint.cursor;
        self.persisted = checkpoint.cursor;
        self.behind = None;
        self.careful = false;
        self.capture_started = false;
        self.status.advanced(self.cursor);
        self.reader = Some(self.ctx.source.prefetching_reader().map_err(|e| StoreError::Database(e.to_string()))?);
        Ok(true)
    }

    /// A reactor's timers due by reel's wall clock: their events are
    /// appended to the log (where the reactor receives them like any other
    /// event), once. Only the worker that owns the namespace gets here
    /// (ADR 24).
    fn fire_timers(&mut self) {
        if self.program.emits().is_none() || Instant::now() < self.timer_check {
            return;
        }
        // What the last batch scheduled or cancelled reaches the timers
        // with its forward: a timer it cancelled must not fire meanwhile.
        self.settle_forward();
        let now = reel_model::time::now_micros();
        let fired = self.ctx.handle.block_on(self.ctx.source.fire_timers(self.ns.name.clone(), now));
        let next = match fired {
            Ok(fired) => {
                self.status.timers(fired.fired, fired.pending);
                let until_due = |due: i64| Duration::from_micros(due.saturating_sub(now).max(0) as u64);
                fired.next_due.map_or(TIMER_CHECK, |due| until_due(due).min(TIMER_CHECK))
            }
            Err(e) => {
                tracing::warn!(projection = %self.ns, "firing timers: {e}");
                TIMER_CHECK
            }
        };
        self.timer_check = Instant::now() + next;
    }

    /// How long to wait for a wake-up at the head of the log: the poll
    /// interval, or less when a reactor's next look for due timers comes
    /// sooner. (A projection has no timers: bounded by its never-updated
    /// `timer_check` too, it read the log in a loop while idle: docs/benchmarks.md, "Idle".)
    fn idle_wait(&self) -> Duration {
        let poll = self.ctx.poll_interval;
        match self.program.emits() {
            Some(_) => poll.min(self.timer_check.saturating_duration_since(Instant::now())),
            None => poll,
        }
    }

    /// The live instance, creating one if needed.
    fn guest(&mut self) -> Result<&mut Box<dyn Guest>, GuestFailure> {
        if self.guest.is_none() {
            let caps = self.spare.take().expect("capabilities are either spare or in the instance");
            match self.program.instantiate(caps, &self.ctx.limits) {
                Ok(guest) => self.guest = Some(guest),
                Err(unstarted) => {
                    let (e, caps) = *unstarted;
                    self.spare = Some(caps);
                    return Err(e);
                }
            }
        }
        Ok(self.guest.as_mut().expect("set above"))
    }

    /// Roll back, and drop the instance if the failure left it unusable.
    fn discard(&mut self, failure: &GuestFailure) {
        let Some(mut guest) = self.guest.take() else { return };
        if let Err(e) = guest.caps().rollback() {
            tracing::warn!(projection = %self.ns, "rollback failed: {e}");
        }
        if failure.poisons_instance() {
            self.spare = Some(guest.into_caps());
        } else {
            self.guest = Some(guest);
        }
    }

    /// Handle queued control messages.
    fn drain_control(&mut self) -> Result<(), Halt> {
        while let Ok(control) = self.control.try_recv() {
            self.on_control(control)?;
        }
        Ok(())
    }

    fn on_control(&mut self, control: Control) -> Result<(), Halt> {
        self.settle_behind();
        match control {
            Control::Exit => return Err(Halt::Exit),
            Control::Pause { reply } => {
                self.paused = true;
                self.status.set_state(State::Paused);
                let _ = reply.send(Ok(()));
            }
            Control::Resume { reply } => {
                self.paused = false;
                self.halted = false;
                self.poisoned = None;
                self.status.set_state(State::Running);
                let _ = reply.send(Ok(()));
            }
            Control::RetryDeadLetter { position, reply } => {
                let _ = reply.send(self.retry_dead_letter(position));
            }
            Control::Admin { action, position, by, reply } => {
                let _ = reply.send(self.admin(action, position, by));
            }
            Control::Hold { at, reply } => {
                let at = at.unwrap_or(self.cursor);
                if self.cursor > at {
                    let _ = reply.send(Err(WorkerError::Conflict(format!(
                        "{} is at {} already, past {at}",
                        self.ns, self.cursor
                    ))));
                } else {
                    self.hold = Some(at);
                    self.hold_reply = Some(reply);
                    self.reach_hold();
                }
            }
            Control::Release => {
                self.hold = None;
                self.hold_reply = None;
            }
            Control::Swap(program) => {
                tracing::info!(
                    projection = %self.ns,
                    "new code, same version: continuing from the checkpoint (setup runs once per version, \
                     not again for this code: bump the version to rebuild with it)"
                );
                self.swapped = true;
                if let Some(guest) = self.guest.take() {
                    self.spare = Some(guest.into_caps());
                }
                self.filter = filter_of(&program);
                self.program = program;
                self.halted = false;
                self.poisoned = None;
                if !self.paused {
                    self.status.set_state(State::Running);
                }
            }
        }
        Ok(())
    }

    /// Sleep up to `timeout`, waking early for new events or control
    /// messages. `Err` when told to exit.
    fn wait(&mut self, timeout: Duration) -> Result<(), Halt> {
        self.settle_behind();
        self.settle_forward();
        let deadline = tokio::time::Instant::now() + timeout;
        let handle = self.ctx.handle.clone();
        let message = handle.block_on(async {
            tokio::select! {
                message = self.control.recv() => Some(message),
                changed = self.wake.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(deadline).await;
                    }
                    None
                }
                () = tokio::time::sleep_until(deadline) => None,
            }
        });
        match message {
            Some(Some(control)) => self.on_control(control),
            Some(None) => Err(Halt::Exit),
            None => Ok(()),
        }
    }
}
