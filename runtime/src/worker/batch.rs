//! A batch: read after the cursor, handed to the guest in calls of bounded
//! size, committed with the checkpoint (in the foreground, or behind the
//! next batch), and the next batch sized from how long this one took.

use std::time::{Duration, Instant};

use reel_model::{Cursor, Event};

use super::{
    ATTEMPTS, Behind, Forwarding, Halt, MIN_BATCH, PERSIST_SKIPS_EVERY, State, Worker, WorkerError, backoff, open_caps,
};
use crate::config::BatchConfig;
use crate::host::GuestFailure;
use crate::source::Batch;
use crate::store::StoreError;

impl Worker {
    /// One read and, if it found events, one batch. `Ok(false)`: nothing new.
    pub(super) fn step(&mut self) -> Result<bool, Halt> {
        if self.connection_closed() {
            return Err(Halt::Reconnect);
        }
        if self.hold.is_some_and(|at| self.cursor >= at) {
            self.reach_hold();
            return Ok(false);
        }
        let limit = self.batch_limit;
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => match self.ctx.source.prefetching_reader() {
                Ok(reader) => self.reader.insert(reader),
                Err(e) => return self.read_failed(&e),
            },
        };
        let started = Instant::now();
        let batch = match reader.read_batch(self.cursor, &self.filter, limit) {
            Ok(batch) => match self.hold {
                Some(at) => held(batch, at),
                None => batch,
            },
            // The reader's connection may be what failed: the next read
            // gets a new reader.
            Err(e) => {
                self.reader = None;
                return self.read_failed(&e);
            }
        };
        let at_head = batch.events.len() < limit;
        self.status.set_at_head(at_head);
        if batch.events.is_empty() {
            if !self.settle_behind() {
                return Ok(true);
            }
            if batch.next > self.cursor {
                self.cursor = batch.next;
                self.status.advanced(self.cursor);
                if self.last_persist.elapsed() >= PERSIST_SKIPS_EVERY && self.persist().is_err() {
                    return Ok(false);
                }
            }
            self.start_capture(false);
            return Ok(false);
        }
        let read = started.elapsed();
        // A full batch has more behind it: commit it without waiting, and
        // apply the next one meanwhile.
        let behind = batch.events.len() == limit && !self.careful;
        // The batch that reached the head is the catch-up's last: captured
        // only if the read model is empty before it (then the history holds
        // every change from empty).
        if at_head {
            self.start_capture(true);
        }
        self.process(&batch.events, &batch.cursors, batch.next, ATTEMPTS, behind)?;
        if at_head {
            self.start_capture(false);
        }
        tracing::debug!(
            projection = %self.ns,
            events = batch.events.len(),
            read_ms = read.as_secs_f64() * 1e3,
            apply_ms = (started.elapsed() - read).as_secs_f64() * 1e3,
            "batch"
        );
        Ok(true)
    }

    /// Once the version has reached the head of the log: its changes, if
    /// captured, are captured from here on (ADR 30); with `only_if_empty`,
    /// only if its read model is empty. A failure is retried at the next
    /// read that finds the head.
    fn start_capture(&mut self, only_if_empty: bool) {
        // Before a batch, a batch committed behind stays pending (the batch
        // settles it, and a failure of it is the batch's); after one, or
        // after an empty read, nothing is pending.
        if self.capture_started || (only_if_empty && self.behind.is_some()) || !self.settle_behind() {
            return;
        }
        let at = self.persisted;
        let Some(caps) = open_caps(&mut self.guest, &mut self.spare) else { return };
        match caps.writer().and_then(|ns| ns.start_capture(at, only_if_empty)) {
            Ok(started) => self.capture_started = started,
            Err(e) => tracing::warn!(projection = %self.ns, "starting change capture: {e}"),
        }
    }

    /// Held and there: the checkpoint committed at the hold, and whoever
    /// waits for it told.
    pub(super) fn reach_hold(&mut self) {
        let Some(at) = self.hold.filter(|at| self.cursor >= *at) else { return };
        if self.hold_reply.is_none() {
            return;
        }
        self.settle_forward();
        let reached = if !self.settle_behind() {
            // The batch committed behind failed: the cursor went back.
            return;
        } else if self.persisted < self.cursor {
            self.persist().map_err(WorkerError::Guest)
        } else {
            Ok(())
        };
        let reply = self.hold_reply.take().expect("checked");
        let _ = reply.send(reached.map(|()| at));
    }

    pub(super) fn read_failed(&mut self, e: &dyn std::fmt::Display) -> Result<bool, Halt> {
        tracing::warn!(projection = %self.ns, "reading events: {e}");
        self.status.failed(State::Retrying, format!("reading events: {e}"), None, 1);
        self.wait(backoff(4))?;
        Ok(true)
    }

    /// Whether the namespace's connection is gone for good.
    pub(super) fn connection_closed(&mut self) -> bool {
        match (self.guest.as_mut(), self.spare.as_mut()) {
            (Some(guest), _) => guest.caps().namespace().is_closed(),
            (None, Some(caps)) => caps.namespace().is_closed(),
            (None, None) => false,
        }
    }

    /// Commit a cursor that only moved past unsubscribed events.
    pub(super) fn persist(&mut self) -> Result<(), GuestFailure> {
        let to = self.cursor;
        let Some(caps) = open_caps(&mut self.guest, &mut self.spare) else { return Ok(()) };
        caps.begin()?;
        match caps.commit(self.persisted, to) {
            Ok(()) => {
                self.persisted = to;
                self.last_persist = Instant::now();
                Ok(())
            }
            Err(e) => {
                let _ = caps.rollback();
                Err(e.into())
            }
        }
    }

    /// Wait for the batch committed behind, if any, and count it applied.
    /// `false`: it failed, so none of it is applied: the worker goes back to
    /// its start and commits the next batch in the foreground, where a
    /// failure is retried, narrowed down and reported as its own.
    pub(super) fn settle_behind(&mut self) -> bool {
        let Some(behind) = self.behind.take() else { return true };
        let outcome = match (self.guest.as_mut(), self.spare.as_mut()) {
            (Some(guest), _) => guest.caps().settle(),
            (None, Some(caps)) => caps.settle(),
            (None, None) => Err(StoreError::Database("the namespace's connection is gone".into())),
        };
        match outcome {
            Ok(()) => {
                self.status.committed(behind.events, behind.end);
                behind.line.log(&self.ns, Ok(()));
                // What its emissions appended, now that it has committed.
                if let Some(f) = open_caps(&mut self.guest, &mut self.spare).and_then(|caps| caps.take_appended()) {
                    self.status.forwarded(f.emitted, f.dropped);
                }
                true
            }
            Err(e) => {
                behind.line.log(&self.ns, Err(&e));
                tracing::warn!(projection = %self.ns, "a batch committed behind failed; applying it again: {e}");
                self.cursor = behind.from;
                self.persisted = behind.from;
                self.careful = true;
                false
            }
        }
    }

    /// Apply `events` as one transaction ending at `end`; `behind`: without
    /// waiting for its commit.
    pub(super) fn apply(
        &mut self,
        events: &[Event],
        cursors: &[Cursor],
        end: Cursor,
        behind: bool,
    ) -> Result<(), GuestFailure> {
        let from = self.persisted;
        let batch = self.ctx.batch;
        let mut line = BatchLine::new(events, end);
        // What the guest logs while it handles the batch, and reel's own
        // lines about it, carry the projection and the batch's positions.
        let span = tracing::info_span!(
            "batch",
            projection = %self.ns.name,
            version = %self.ns.version,
            from = line.from,
            to = line.to,
            events = line.events
        );
        let guest = self.guest()?;
        guest.caps().begin()?;
        guest.caps().begin_batch(events, cursors);
        let started = Instant::now();
        let handled = span.in_scope(|| calls(&batch, events).try_for_each(|call| guest.handle(call)));
        let handle_time = started.elapsed();
        line.handled = handle_time;
        // This batch stands on the one committed behind: that one first.
        // (A failure of the guest's own stays what it is: it may have left
        // the instance unusable.)
        let result = if self.settle_behind() {
            handled
        } else {
            handled
                .and(Err(GuestFailure::Store(StoreError::Database("the batch before this one did not commit".into()))))
        };
        let caps = self.guest.as_mut().expect("instantiated above").caps();
        let result = span.in_scope(|| {
            result.and_then(|()| {
                Ok(if behind { caps.commit_behind(from, end)? } else { caps.commit(from, end).map(|()| false)? })
            })
        });
        match result {
            Ok(pending) => {
                self.cursor = end;
                self.persisted = end;
                self.last_persist = Instant::now();
                self.forward();
                if pending {
                    self.behind = Some(Behind { from, end, events: events.len(), line });
                } else {
                    self.careful = false;
                    self.status.committed(events.len(), end);
                    line.log(&self.ns, Ok(()));
                }
                self.tune(events.len(), started.elapsed());
                Ok(())
            }
            Err(e) => {
                line.log(&self.ns, Err(&e));
                self.discard(&e);
                Err(e)
            }
        }
    }

    /// A reactor's committed emissions: count what the batch's transaction
    /// appended (PostgreSQL), or append what waits in the namespace's outbox
    /// (SQLite). The entry the last commit left, when it is the outbox's
    /// only one, is appended while the worker goes on with the next batch
    /// (see [`Self::settle_forward`]); otherwise every entry, in order, here.
    /// A failed forward stays in the outbox for the next try; the log's keys
    /// make a second forward append nothing twice (ADR 23).
    pub(super) fn forward(&mut self) {
        self.settle_forward();
        let Some(caps) = open_caps(&mut self.guest, &mut self.spare) else { return };
        if !caps.is_reactor() {
            return;
        }
        // Appended in the batch's transaction (PostgreSQL): counted once
        // committed, here or when a batch committed behind is settled. Its
        // appends go on while the worker handles the next batch, like a
        // forward: the batches are kept as small.
        if caps.appends_in_log() {
            if let Some(f) = caps.take_appended() {
                self.status.forwarded(f.emitted, f.dropped);
            }
            return self.appending_behind();
        }
        // The entry just committed, when it is the outbox's only one: no
        // need to read back and parse what was just written, nor to wait.
        if let Some((id, handled, emissions)) = caps.take_committed_entry() {
            self.status.outbox(1);
            let (source, namespace) = (self.ctx.source.clone(), self.ns.slug());
            let task = self.ctx.handle.spawn(async move { source.forward(namespace, handled, emissions).await });
            self.forwarding = Some(Forwarding { id, task });
            return self.appending_behind();
        }
        let pending = match caps.writer().and_then(|ns| ns.outbox()) {
            Ok(pending) => pending,
            Err(e) => {
                caps.set_outbox_empty(false);
                return tracing::warn!(projection = %self.ns, "reading the outbox: {e}");
            }
        };
        let mut left = pending.len() as u64;
        self.status.outbox(left);
        for (id, handled, emissions) in pending {
            let forwarded = self.ctx.handle.block_on(self.ctx.source.forward(self.ns.slug(), handled, emissions));
            match forwarded.map_err(|e| e.to_string()).and_then(|f| {
                caps.writer().and_then(|ns| ns.outbox_done(id)).map_err(|e| e.to_string())?;
                Ok(f)
            }) {
                Ok(f) => {
                    left -= 1;
                    self.status.outbox(left);
                    self.status.forwarded(f.emitted, f.dropped);
                }
                Err(e) => {
                    caps.set_outbox_empty(false);
                    return tracing::warn!(projection = %self.ns, "forwarding the outbox: {e}");
                }
            }
        }
        caps.set_outbox_empty(true);
    }

    /// Wait for the outbox entry being appended while the worker went on
    /// (SQLite), and remove it from the outbox once appended. Before the
    /// next forward, before the worker waits or lets its capabilities go:
    /// entries are appended in order, one at a time. An entry whose append
    /// failed, or whose outcome is not known (the capabilities went), stays
    /// in the outbox: the next forward reads the outbox and appends what it
    /// holds, and the log's keys skip what was appended already.
    pub(super) fn settle_forward(&mut self) {
        let Some(Forwarding { id, task }) = self.forwarding.take() else { return };
        let forwarded = self.ctx.handle.block_on(task);
        let Some(caps) = open_caps(&mut self.guest, &mut self.spare) else { return };
        let done = forwarded.map_err(|e| e.to_string()).and_then(|f| f.map_err(|e| e.to_string())).and_then(|f| {
            caps.writer().and_then(|ns| ns.outbox_done(id)).map_err(|e| e.to_string())?;
            Ok(f)
        });
        match done {
            // The outbox held this entry alone when its forward started
            // (`empty`); what was committed since says for itself.
            Ok(f) => {
                self.status.outbox(0);
                self.status.forwarded(f.emitted, f.dropped);
            }
            Err(e) => {
                caps.set_outbox_empty(false);
                tracing::warn!(projection = %self.ns, "forwarding the outbox: {e}");
            }
        }
    }

    /// The reactor's emissions are appended while it handles the next
    /// batch: its batches are kept smaller from now on.
    fn appending_behind(&mut self) {
        self.forwards_behind = true;
        self.batch_limit = self.batch_limit.min(self.max_batch());
    }

    /// Most events in a batch: the configured most, or fewer for a reactor
    /// whose emissions are appended while it goes on.
    fn max_batch(&self) -> usize {
        let max = self.ctx.batch.max_events;
        if self.forwards_behind { max.min(FORWARDED_BATCH) } else { max }
    }

    /// Size the next batch from how long a full one took: about the target
    /// time (and well inside the batch's deadline), at most twice the last
    /// size, within [`MIN_BATCH`] and the maximum. Smaller batches (live
    /// traffic, narrowing down) say nothing, and a change of less than a
    /// quarter is not worth the read ahead it discards.
    pub(super) fn tune(&mut self, events: usize, took: Duration) {
        if events < self.batch_limit {
            return;
        }
        let batch = &self.ctx.batch;
        let target = batch.target.min(self.ctx.limits.batch_timeout / 2);
        let fitting = events as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-4);
        let max = self.max_batch();
        let next = (fitting as usize).min(self.batch_limit.saturating_mul(2)).clamp(MIN_BATCH.min(max), max.max(1));
        if next.abs_diff(self.batch_limit) * 4 >= self.batch_limit || next == max {
            self.batch_limit = next;
        }
    }
}

/// Most events in a batch of a reactor whose emissions are appended while it
/// handles the next batch (SQLite's forward, PostgreSQL's commit behind):
/// the last batch's appends have nothing to go on beside, and a catch-up
/// waits for them (docs/benchmarks.md, reactors).
const FORWARDED_BATCH: usize = 10_000;

/// `batch` without its events past `at` (a hold): the read goes no further.
fn held(batch: Batch, at: Cursor) -> Batch {
    if batch.next <= at {
        return batch;
    }
    let keep = batch.cursors.iter().take_while(|c| **c <= at).count();
    Batch { next: at, ..batch.truncated(keep) }
}

/// The line reel logs for each batch it applies, committed or not (target
/// `reel::batch`, ADR 46): which projection, which events, how long, and how
/// it ended. A batch committed behind the next one is logged when its commit
/// is known.
pub(super) struct BatchLine {
    /// Position of its first event.
    from: i64,
    /// Position of its last event.
    to: i64,
    /// The checkpoint it moves to (a resume token: `tx.id` on PostgreSQL).
    end: Cursor,
    events: usize,
    started: Instant,
    /// Time in the guest's `handle` calls.
    handled: Duration,
}

impl BatchLine {
    fn new(events: &[Event], end: Cursor) -> Self {
        let position = |e: Option<&Event>| e.map_or(0, |e| e.position);
        BatchLine {
            from: position(events.first()),
            to: position(events.last()),
            end,
            events: events.len(),
            started: Instant::now(),
            handled: Duration::ZERO,
        }
    }

    /// Log it, now that its outcome is known.
    fn log(&self, ns: &crate::store::NamespaceId, outcome: Result<(), &dyn std::fmt::Display>) {
        let took = self.started.elapsed();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let (outcome, error) = match outcome {
            Ok(()) => ("committed", None),
            Err(e) => ("failed", Some(tracing::field::display(e))),
        };
        tracing::info!(
            target: "reel::batch",
            projection = %ns.name,
            version = %ns.version,
            namespace = %ns.slug(),
            from = self.from,
            to = self.to,
            cursor = %self.end,
            events = self.events,
            duration_ms = ms(took),
            handle_ms = ms(self.handled),
            commit_ms = ms(took.saturating_sub(self.handled)),
            outcome,
            error,
            "batch {outcome}"
        );
    }
}

/// `events` in `handle` calls: at most `call_events` events and, past a
/// call's first event, `call_bytes` bytes of event text.
pub fn calls<'e>(batch: &BatchConfig, events: &'e [Event]) -> impl Iterator<Item = &'e [Event]> + use<'e> {
    let (max_events, max_bytes) = (batch.call_events.max(1), batch.call_bytes);
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let over = rest.iter().take(max_events).position(|e| {
            bytes += e.text_bytes();
            bytes > max_bytes
        });
        let n = over.map_or(rest.len().min(max_events), |i| i.max(1));
        let (call, later) = rest.split_at(n);
        rest = later;
        Some(call)
    })
}

/// A `call_bytes` that cuts in two the biggest of the calls `events` go in
/// that hold more than one event (half its bytes of event text), for a guest
/// that ran out of memory in one; `None` when every call holds a single event
/// already. It is always below `call_bytes`: a call of several events holds
/// at most that many bytes.
pub(super) fn smaller_calls(batch: &BatchConfig, events: &[Event]) -> Option<usize> {
    let biggest =
        calls(batch, events).filter(|c| c.len() > 1).map(|c| c.iter().map(Event::text_bytes).sum::<usize>()).max()?;
    Some(biggest / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event whose text is `bytes` long in all.
    fn event(position: i64, bytes: usize) -> Event {
        Event {
            position,
            stream_id: "s".into(),
            version: position,
            event_type: "t".into(),
            data: "d".repeat(bytes - 3),
            metadata: String::new(),
            occurred_at: "z".into(),
        }
    }

    /// The sizes of the calls `events` go in, checking each event is in one.
    fn sizes(events: &[Event], call_events: usize, call_bytes: usize) -> Vec<usize> {
        let batch = BatchConfig { call_events, call_bytes, ..BatchConfig::default() };
        let calls: Vec<&[Event]> = calls(&batch, events).collect();
        let positions: Vec<i64> = calls.iter().flat_map(|c| c.iter().map(|e| e.position)).collect();
        assert_eq!(positions, (0..events.len() as i64).collect::<Vec<_>>(), "every event once, in order");
        calls.iter().map(|c| c.len()).collect()
    }

    #[test]
    fn a_hold_cuts_a_read_at_its_cursor() {
        let at = |id| Cursor { tx: 0, id };
        let read = || Batch {
            events: vec![event(2, 10), event(5, 10), event(9, 10)],
            cursors: vec![at(2), at(5), at(9)],
            next: at(12),
        };
        let cut = held(read(), at(6));
        assert_eq!(cut.events.iter().map(|e| e.position).collect::<Vec<_>>(), [2, 5]);
        assert_eq!((cut.cursors, cut.next), (vec![at(2), at(5)], at(6)), "the read goes to the hold, no further");
        let cut = held(read(), at(1));
        assert!(cut.events.is_empty());
        assert_eq!(cut.next, at(1));
        let whole = held(read(), at(12));
        assert_eq!((whole.events.len(), whole.next), (3, at(12)));
    }

    #[test]
    fn calls_hold_at_most_their_events_and_bytes() {
        let small: Vec<_> = (0..10).map(|i| event(i, 100)).collect();
        assert_eq!(sizes(&small, 100, 1 << 20), [10], "a batch is one call");
        assert_eq!(sizes(&small, 4, 1 << 20), [4, 4, 2]);
        assert_eq!(sizes(&small, 100, 300), [3, 3, 3, 1], "300 bytes: three events of 100");
        assert_eq!(sizes(&small, 100, 299), [2, 2, 2, 2, 2]);
        // An event bigger than a call's bytes goes alone, never left out.
        let mixed = vec![event(0, 100), event(1, 5_000), event(2, 100), event(3, 100)];
        assert_eq!(sizes(&mixed, 100, 1_000), [1, 1, 2]);
        assert_eq!(sizes(&[], 100, 1_000), Vec::<usize>::new());
        assert_eq!(sizes(&small, 0, 0), [1; 10], "limits of zero still make progress");
    }

    #[test]
    fn smaller_calls_cut_the_biggest_call_until_each_holds_one_event() {
        let mixed = vec![event(0, 100), event(1, 100), event(2, 1_000), event(3, 1_000), event(4, 100)];
        let mut batch = BatchConfig { call_events: 100, call_bytes: 10_000, ..BatchConfig::default() };
        let mut seen = vec![];
        while let Some(call_bytes) = smaller_calls(&batch, &mixed) {
            assert!(call_bytes < batch.call_bytes, "{call_bytes} shrinks");
            batch.call_bytes = call_bytes;
            seen.push((call_bytes, sizes(&mixed, batch.call_events, call_bytes)));
        }
        assert_eq!(seen, [(1_150, vec![2, 1, 2]), (550, vec![2, 1, 1, 1]), (100, vec![1; 5])]);
        // A batch of calls cut by count is cut further by bytes.
        let small: Vec<_> = (0..10).map(|i| event(i, 100)).collect();
        let by_count = BatchConfig { call_events: 4, call_bytes: 1 << 20, ..BatchConfig::default() };
        assert_eq!(smaller_calls(&by_count, &small), Some(200));
        assert_eq!(smaller_calls(&BatchConfig { call_events: 1, ..by_count }, &small), None);
    }
}
