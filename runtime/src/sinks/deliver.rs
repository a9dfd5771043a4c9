//! A sink's delivery task: claim the sink, read the events after its
//! checkpoint, publish their messages, and move the checkpoint once the
//! broker confirmed them all; again and again, waiting for new events.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use reel_model::time::{format_micros, now_micros};
use reel_model::{Cursor, Event};

use super::broker::{InFlight, Publisher};
use super::messages::{self, Outgoing};
use crate::config::Limits;
use crate::host::sink::{Broker, WasmSink};
use crate::modules::SinkModule;
use crate::source::{Filter, SinkHold, Source};

/// How long a claim on a sink lasts unless renewed (every third of it,
/// while delivering; each renewal also tells the owner whether another
/// process took the sink). Whoever takes the sink's hold claims it at once
/// (ADR 31); without the hold, a sink is claimed once its lease ran out.
const LEASE: Duration = Duration::from_secs(10);
/// How often a standby tries to take the sink's hold (free once the
/// process holding it is gone).
const STANDBY_CHECK: Duration = Duration::from_secs(2);
/// The longest wait between two attempts after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// Where a sink's delivery is, as its status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkState {
    /// `starting`, `running` (delivering, or waiting for events),
    /// `standby` (another reel process holds the sink), `retrying` (the
    /// broker or the database is unavailable: retried with backoff), or
    /// `stopped` (an event cannot be made into messages: the sink waits at
    /// it for a new module; nothing after it is published).
    pub state: &'static str,
    /// Position of the last event the broker confirmed (the checkpoint).
    pub position: i64,
    /// The checkpoint itself.
    #[serde(skip)]
    pub checkpoint: Option<Cursor>,
    /// Events delivered (confirmed) by this process.
    pub delivered_events: u64,
    /// Messages the broker confirmed as stored.
    pub published_messages: u64,
    /// Messages the broker confirmed as already stored (sent again after a
    /// failure or restart, dropped by their dedup id).
    pub duplicate_messages: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Whether the broker connection is up.
    pub connected: bool,
    /// The last failure (kept after recovery, with its time).
    pub last_error: Option<String>,
    /// When the last failure happened (RFC 3339).
    pub last_error_at: Option<String>,
    /// Events per second over the last batch.
    pub events_per_second: f64,
}

impl SinkState {
    /// A sink not yet claimed.
    pub fn starting() -> Self {
        SinkState {
            state: "starting",
            position: 0,
            checkpoint: None,
            delivered_events: 0,
            published_messages: 0,
            duplicate_messages: 0,
            retries: 0,
            connected: false,
            last_error: None,
            last_error_at: None,
            events_per_second: 0.0,
        }
    }
}

/// What a delivery task needs.
pub struct Job {
    pub module: Arc<SinkModule>,
    pub url: String,
    pub source: Source,
    pub limits: Limits,
    pub batch_events: usize,
    pub poll_interval: Duration,
    pub owner: String,
    pub state: Arc<Mutex<SinkState>>,
    pub stop: watch::Receiver<bool>,
    /// The tasks of the code this one replaces: they end first.
    pub previous: Vec<tokio::task::JoinHandle<()>>,
}

/// A batch of events and its messages.
struct Prepared {
    batch: crate::source::Batch,
    outgoing: Vec<Outgoing>,
}

/// A batch published, its confirmations awaited.
struct Sent {
    /// When it was published.
    started: Instant,
    batch: crate::source::Batch,
    outgoing: Vec<Outgoing>,
    pending: InFlight,
}

/// Why a delivery round ended.
enum Ended {
    /// Asked to stop.
    Stopped,
    /// The hold ended: claim again.
    Fenced,
    /// Another process owns the sink now (this one was stuck past its
    /// lease): stand by.
    Taken,
}

impl Job {
    fn name(&self) -> &str {
        &self.module.manifest.name
    }

    fn update(&self, f: impl FnOnce(&mut SinkState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn failed(&self, state: &'static str, error: String) {
        tracing::warn!("sink `{}`: {error}", self.name());
        self.update(|s| {
            s.state = state;
            s.retries += 1;
            s.last_error = Some(error);
            s.last_error_at = Some(format_micros(now_micros()));
        });
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleep `d`, or less if asked to stop. Whether to go on.
    async fn pause(&mut self, d: Duration) -> bool {
        let _ = tokio::time::timeout(d, self.stop.wait_for(|s| *s)).await;
        !self.stopping()
    }

    /// Deliver until asked to stop.
    pub async fn run(mut self) {
        for previous in std::mem::take(&mut self.previous) {
            let _ = tokio::time::timeout(Duration::from_secs(30), previous).await;
        }
        let mut backoff = Backoff::default();
        // The hold on the sink while this task delivers it (dropped when it
        // is fenced, and after the sink is given up at the end).
        let mut held = None;
        while !self.stopping() {
            held = None;
            let now = now_micros();
            let until = now + LEASE.as_micros() as i64;
            let cursor = match self.source.claim_sink(self.name(), &self.owner, now, until).await {
                Ok(Some((cursor, hold))) => {
                    held = hold;
                    cursor
                }
                Ok(None) => {
                    self.update(|s| s.state = "standby");
                    if !self.pause(STANDBY_CHECK).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    self.failed("retrying", format!("claiming the sink: {e}"));
                    let wait = backoff.wait();
                    if !self.pause(wait).await {
                        break;
                    }
                    continue;
                }
            };
            backoff = Backoff::default();
            self.update(|s| {
                s.checkpoint = Some(cursor);
                s.position = cursor.id;
            });
            match self.deliver_from(cursor, &mut held).await {
                Ended::Stopped => break,
                Ended::Fenced => continue,
                Ended::Taken => {
                    // Let the hold go and give the new owner time to take it,
                    // rather than take the sink straight back with it.
                    held = None;
                    self.update(|s| s.state = "standby");
                    if !self.pause(2 * STANDBY_CHECK).await {
                        break;
                    }
                }
            }
        }
        self.update(|s| s.connected = false);
        let _ = self.source.release_sink(self.name(), &self.owner).await;
        drop(held);
    }

    /// Deliver from `cursor` while this process holds the sink.
    ///
    /// Batches go out back to back: batch n+1 is published on the
    /// connection while batch n's confirmations come in, and batch n+2 is
    /// read and made into messages meanwhile. The checkpoint moves past a
    /// batch only once every message of it is confirmed, in log order; a
    /// failure drops what is in flight and publishes again from the
    /// checkpoint, on a new connection.
    async fn deliver_from(&mut self, mut cursor: Cursor, hold: &mut Option<SinkHold>) -> Ended {
        let module = Arc::clone(&self.module);
        let m = &module.manifest;
        let filter = Filter::new(&m.event_types, &m.stream_prefixes);
        let mut wakeups = self.source.wakeups();
        let mut publisher: Option<Publisher> = None;
        let mut transform: Option<WasmSink> = None;
        let mut backoff = Backoff::default();
        let mut renewed = Instant::now();
        let mut hold_tried = Instant::now();
        // The batch read and made into messages ahead, after its cursor.
        let mut prepared: Option<(Cursor, Prepared)> = None;
        // The batch published and not confirmed yet.
        let mut in_flight: Option<Sent> = None;
        loop {
            if self.stopping() {
                // The batch in flight is seen through first (a RabbitMQ
                // queue would otherwise get it again from the next task).
                if let Some(Sent { batch, outgoing, pending, .. }) = in_flight.take()
                    && pending.confirmed(&outgoing).await.is_ok()
                {
                    let _ = self.advance(cursor, batch.next).await;
                }
                return Ended::Stopped;
            }
            if hold.as_ref().is_some_and(|h| !h.alive()) {
                // Another process may take the sink now: claim it again.
                self.failed("retrying", "the sink's hold ended (its database session closed)".into());
                return Ended::Fenced;
            }
            if hold.is_none() && hold_tried.elapsed() > STANDBY_CHECK {
                // Delivering on the lease alone (the hold was someone
                // else's when this process claimed): take the hold once it is
                // free, so that no standby takes the sink over with it.
                hold_tried = Instant::now();
                let now = now_micros();
                let until = now + LEASE.as_micros() as i64;
                match self.source.claim_sink(self.name(), &self.owner, now, until).await {
                    Ok(Some((_, taken))) => {
                        *hold = taken;
                        renewed = Instant::now();
                    }
                    Ok(None) => return Ended::Taken,
                    Err(_) => {}
                }
            }
            if renewed.elapsed() > LEASE / 3 {
                match self.advance(cursor, cursor).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => return Ended::Taken,
                    Err(()) => {}
                }
            }
            // Connected first: a broker that is away shows in the status even
            // while there is nothing to publish.
            if publisher.is_none() {
                in_flight = None;
                match Publisher::connect(m.broker, &self.url, &m.exchange).await {
                    Ok(p) => {
                        publisher = Some(p);
                        self.update(|s| s.connected = true);
                    }
                    Err(e) => {
                        self.failed("retrying", e);
                        self.update(|s| s.connected = false);
                        if !self.pause(backoff.wait()).await {
                            return Ended::Stopped;
                        }
                        continue;
                    }
                }
            }
            // The next batch starts where the one in flight ends.
            let after = in_flight.as_ref().map_or(cursor, |sent| sent.batch.next);
            let ready = match prepared.take() {
                Some((from, ready)) if from == after => Some(ready),
                _ => None,
            };
            let (batch, ready) = match ready {
                Some(ready) => (ready.batch, Some(ready.outgoing)),
                None => match self.source.read_page(after, filter.clone(), self.batch_events).await {
                    Ok(batch) => (batch, None),
                    Err(e) => {
                        self.failed("retrying", format!("reading the log: {e}"));
                        if !self.pause(backoff.wait()).await {
                            return Ended::Stopped;
                        }
                        continue;
                    }
                },
            };
            if batch.events.is_empty() && in_flight.is_none() {
                // Past events it does not take.
                if batch.next != cursor {
                    match self.advance(cursor, batch.next).await {
                        Ok(true) => {
                            cursor = batch.next;
                            renewed = Instant::now();
                        }
                        Ok(false) => return Ended::Taken,
                        Err(()) => {
                            if !self.pause(backoff.wait()).await {
                                return Ended::Stopped;
                            }
                            continue;
                        }
                    }
                }
                self.update(|s| s.state = "running");
                let wait = self.poll_interval.min(LEASE / 3);
                let closed = tokio::select! {
                    changed = wakeups.changed() => changed.is_err(),
                    () = tokio::time::sleep(wait) => false,
                    _ = self.stop.wait_for(|s| *s) => return Ended::Stopped,
                };
                if closed {
                    // No more wake-ups (the log is closing): poll.
                    tokio::time::sleep(wait).await;
                }
                continue;
            }
            // A batch to publish (none when the log has nothing more yet, or
            // this one cannot be made into messages: the one in flight is
            // confirmed first, and the failure met again after it).
            let made = match ready {
                _ if batch.events.is_empty() => None,
                Some(outgoing) => Some(Ok(outgoing)),
                None => Some(self.messages(&batch.events, &mut transform).await),
            };
            let next = match made {
                Some(Ok(outgoing)) => Some(Prepared { batch, outgoing }),
                Some(Err(error)) if in_flight.is_none() => {
                    // The module cannot make this event into messages: wait
                    // at it (holding the lease), and try again now and then
                    // (a time-out under load passes) until new code replaces it.
                    self.failed("stopped", error);
                    if !self.pause(LEASE / 3).await {
                        return Ended::Stopped;
                    }
                    continue;
                }
                _ => None,
            };
            let Some(connection) = publisher.as_mut() else { continue };
            let sent = match next {
                Some(next) => match connection.send(&next.outgoing).await {
                    Ok(pending) => {
                        Some(Sent { started: Instant::now(), batch: next.batch, outgoing: next.outgoing, pending })
                    }
                    Err(e) => {
                        publisher = None;
                        self.failed("retrying", e);
                        self.update(|s| s.connected = false);
                        if !self.pause(backoff.wait()).await {
                            return Ended::Stopped;
                        }
                        continue;
                    }
                },
                None => None,
            };
            let Some(confirming) = std::mem::replace(&mut in_flight, sent) else {
                continue;
            };
            // While the broker confirms, the batch after the one just sent
            // is read and made into messages.
            let ahead = in_flight.as_ref().map(|sent| sent.batch.next);
            let Sent { started, batch, outgoing, pending } = confirming;
            let (confirmed, next) = tokio::join!(pending.confirmed(&outgoing), async {
                match ahead {
                    Some(after) => self.prepare(after, &filter, &mut transform).await.map(|p| (after, p)),
                    None => None,
                }
            });
            prepared = next;
            match confirmed {
                Ok(confirmed) => match self.advance(cursor, batch.next).await {
                    Ok(true) => {
                        cursor = batch.next;
                        renewed = Instant::now();
                        backoff = Backoff::default();
                        let seconds = started.elapsed().as_secs_f64().max(1e-6);
                        let events = batch.events.len();
                        self.update(|s| {
                            s.state = "running";
                            s.delivered_events += events as u64;
                            s.published_messages += confirmed.stored;
                            s.duplicate_messages += confirmed.duplicates;
                            s.events_per_second = events as f64 / seconds;
                        });
                    }
                    Ok(false) => return Ended::Taken,
                    Err(()) => {
                        // Published, not recorded: published again (same
                        // ids) from the checkpoint once the database answers.
                        in_flight = None;
                        if !self.pause(backoff.wait()).await {
                            return Ended::Stopped;
                        }
                    }
                },
                Err(e) => {
                    // Reconnect: a connection that failed once may be
                    // half-closed. What was sent after it goes again.
                    publisher = None;
                    in_flight = None;
                    self.failed("retrying", e);
                    self.update(|s| s.connected = false);
                    if !self.pause(backoff.wait()).await {
                        return Ended::Stopped;
                    }
                }
            }
        }
    }

    /// The batch after `after` and its messages, when there is one and
    /// nothing fails (a failure is met again, and reported, when the batch
    /// is read in turn).
    async fn prepare(&self, after: Cursor, filter: &Filter, transform: &mut Option<WasmSink>) -> Option<Prepared> {
        let batch = self.source.read_page(after, filter.clone(), self.batch_events).await.ok()?;
        if batch.events.is_empty() {
            return None;
        }
        let outgoing = self.messages(&batch.events, transform).await.ok()?;
        Some(Prepared { batch, outgoing })
    }

    /// Move the checkpoint (renewing the lease). `Ok(false)`: fenced.
    async fn advance(&self, from: Cursor, to: Cursor) -> Result<bool, ()> {
        let until = now_micros() + LEASE.as_micros() as i64;
        match self.source.advance_sink(self.name(), &self.owner, from, to, until).await {
            Ok(true) => {
                self.update(|s| {
                    s.checkpoint = Some(to);
                    s.position = to.id;
                });
                Ok(true)
            }
            Ok(false) => {
                tracing::info!("sink `{}`: another reel process took it over", self.name());
                Ok(false)
            }
            Err(e) => {
                self.failed("retrying", format!("moving the checkpoint: {e}"));
                Err(())
            }
        }
    }

    /// The messages of `events`, through the module's transform if it has one.
    async fn messages(&self, events: &[Event], transform: &mut Option<WasmSink>) -> Result<Vec<Outgoing>, String> {
        let manifest = &self.module.manifest;
        let nats = matches!(manifest.broker, Broker::Nats);
        let outgoing = if manifest.transform {
            let module = Arc::clone(&self.module);
            let limits = self.limits.clone();
            let events = events.to_vec();
            let instance = transform.take();
            let (instance, made) = tokio::task::spawn_blocking(move || {
                let mut instance = match instance {
                    Some(i) => i,
                    None => match WasmSink::new(&module.code, &module.manifest.name, &limits) {
                        Ok(i) => i,
                        Err(e) => return (None, Err(format!("instantiating the module: {e}"))),
                    },
                };
                let mut out = Vec::with_capacity(events.len());
                for event in &events {
                    match instance.transform(event) {
                        Ok(made) => out.extend(messages::transformed(&module.manifest, event, made, nats)),
                        // Its memory may be in any state: not kept.
                        Err(e) => return (None, Err(e.to_string())),
                    }
                }
                (Some(instance), Ok(out))
            })
            .await
            .map_err(|e| format!("transform task: {e}"))?;
            *transform = instance;
            made?
        } else {
            events.iter().map(|e| messages::plain(manifest, e, nats)).collect()
        };
        for message in &outgoing {
            messages::check(message, nats).map_err(|e| format!("message {}: {e}", message.id))?;
        }
        Ok(outgoing)
    }
}

/// Exponential backoff from 100 ms to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(100))
    }
}

impl Backoff {
    fn wait(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        now
    }
}
