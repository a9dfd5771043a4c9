//! A failing batch: retried with backoff, narrowed down to the event that
//! fails on its own (by the projection's error, else by halves), which the
//! projection's policy stops at or sets aside in the dead-letter table
//! (ADR 02); an administrator may skip the one it stopped at and discard
//! dead letters (ADR 21). A guest out of memory in a call of several events
//! gets smaller calls first (ADR 11).

use reel_model::{Cursor, Event, OnError};

use crate::host::GuestFailure;
use crate::store::StoreError;

use super::{ATTEMPTS, Admin, Halt, State, Worker, WorkerError, backoff, open_caps};

impl Worker {
    /// Apply `events` (with `cursors[i]` the cursor after `events[i]`),
    /// retrying, narrowing down and applying the poison policy.
    pub(super) fn process(
        &mut self,
        events: &[Event],
        cursors: &[Cursor],
        end: Cursor,
        attempts: u32,
        behind: bool,
    ) -> Result<(), Halt> {
        let mut failures = 0;
        let mut outages = 0;
        let from = self.persisted;
        loop {
            let failure = match self.apply(events, cursors, end, behind && failures + outages == 0) {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            // Whatever failed, the batch behind this one is settled first:
            // if it failed, this one stood on it and is void.
            self.settle_behind();
            if self.persisted != from {
                return Ok(()); // went back to the failed batch's start: read again from there
            }
            if let GuestFailure::Store(StoreError::Fenced { .. }) = failure {
                tracing::warn!(projection = %self.ns, "fenced: {failure}; stepping back");
                self.status.failed(State::Fenced, failure.to_string(), None, 1);
                return Err(Halt::Fenced);
            }
            if !failure.is_projection_fault() {
                outages += 1;
                tracing::warn!(projection = %self.ns, "batch failed (database): {failure}");
                self.status.failed(State::Retrying, failure.to_string(), None, outages);
                if self.connection_closed() {
                    return Err(Halt::Reconnect);
                }
                self.wait(backoff(outages))?;
                continue;
            }
            // Out of memory in a call of several events: the guest may hold
            // fewer at a time. Calls shrink for the rest of the worker's life
            // (until every call is one event) and the batch is retried whole.
            if let GuestFailure::OutOfMemory(_) = failure
                && let Some(call_bytes) = super::batch::smaller_calls(&self.ctx.batch, events)
            {
                tracing::warn!(
                    projection = %self.ns, call_bytes,
                    "out of memory in a call of several events; calls now hold at most {call_bytes} bytes of event text"
                );
                self.status.failed(State::Retrying, failure.to_string(), None, failures + 1);
                self.ctx.batch.call_bytes = call_bytes;
                continue;
            }
            failures += 1;
            let position = match &failure {
                GuestFailure::Rejected { position, .. } => *position,
                _ => None,
            };
            tracing::warn!(projection = %self.ns, events = events.len(), "batch failed: {failure}");
            self.status.failed(State::Retrying, failure.to_string(), position, failures);
            // Running out of time may be the load's doing as much as the
            // projection's: an event alone gets every attempt before it is poison.
            let attempts = if events.len() == 1 && failure.is_deadline() { attempts.max(ATTEMPTS) } else { attempts };
            if failures < attempts {
                self.wait(backoff(failures))?;
                continue;
            }
            if events.len() == 1 {
                return self.poison(&events[0], end, &failure, failures);
            }
            // Narrow down: commit what precedes the failing event (known from
            // the projection's error, else by halves), then go on from it.
            let split = position
                .and_then(|p| events.iter().position(|e| e.position == p))
                .map_or(events.len() / 2, |i| i.max(1));
            self.process(&events[..split], &cursors[..split], cursors[split - 1], 1, false)?;
            return self.process(&events[split..], &cursors[split..], end, 1, false);
        }
    }

    /// `event` keeps failing (`attempts` in a row): stop at it, or set it
    /// aside and move on.
    fn poison(&mut self, event: &Event, end: Cursor, failure: &GuestFailure, attempts: u32) -> Result<(), Halt> {
        self.record(event, end, failure);
        let policy = self.ctx.on_error.unwrap_or(self.program.manifest().on_error);
        let mut message = failure.to_string();
        if self.swapped {
            message.push_str(&format!(
                " (this code replaced version {}'s earlier code without a rebuild, so its setup did not run: \
                 if the change needs new tables or setup, bump the version)",
                self.ns.version
            ));
        }
        if policy == OnError::Stop {
            tracing::error!(projection = %self.ns, position = event.position, "stopped at a poison event: {message}");
            self.status.failed(State::Stopped, message, Some(event.position), attempts);
            self.poisoned = Some((event.clone(), end));
            return Err(Halt::Stopped);
        }
        tracing::warn!(projection = %self.ns, position = event.position, "dead-lettering: {message}");
        match self.set_aside(event, end, &message) {
            Ok(()) => {
                self.dead_letter_failures = 0;
                Ok(())
            }
            Err(e) => {
                self.dead_letter_failures += 1;
                let failures = self.dead_letter_failures;
                self.status.failed(
                    State::Retrying,
                    format!("dead-lettering event {}: {e}", event.position),
                    Some(event.position),
                    failures,
                );
                self.wait(backoff(2 + failures))?;
                // The database's fault, not the event's: start over from the
                // committed checkpoint, which narrows down to the event and
                // sets it aside again.
                Err(Halt::Retry)
            }
        }
    }

    /// Put `event` in the dead-letter table and move the checkpoint to
    /// `end`, the cursor after it, in one transaction.
    fn set_aside(&mut self, event: &Event, end: Cursor, message: &str) -> Result<(), StoreError> {
        // PostgreSQL's text takes no NUL, which a projection's error may hold.
        let message = message.replace('\0', "\u{FFFD}");
        let from = self.persisted;
        let caps = match self.guest() {
            Ok(guest) => guest.caps(),
            Err(_) => self.spare.as_mut().expect("capabilities are spare when no instance exists"),
        };
        let result = caps
            .begin()
            .and_then(|()| caps.writer()?.dead_letter(event, &message))
            .and_then(|()| caps.commit(from, end));
        if let Err(e) = result {
            let _ = caps.rollback();
            return Err(e);
        }
        self.cursor = end;
        self.persisted = end;
        self.status.dead_lettered();
        self.status.committed(0, end);
        Ok(())
    }

    /// An administrator's skip or discard (ADR 21).
    pub(super) fn admin(&mut self, action: Admin, position: i64, by: Option<String>) -> Result<(), WorkerError> {
        match action {
            Admin::Skip => self.skip(position)?,
            Admin::Discard => self.discard_dead_letter(position)?,
        }
        let by_whom = by.as_deref().unwrap_or("a client reel cannot name");
        match action {
            Admin::Skip => tracing::warn!(
                projection = %self.ns, position,
                "event skipped by {by_whom}: set aside as a dead letter; going on after it"
            ),
            Admin::Discard => tracing::warn!(projection = %self.ns, position, "dead letter discarded by {by_whom}"),
        }
        self.status.admin(action, position, by);
        Ok(())
    }

    /// Set aside the event the projection stopped at, as the `skip` policy
    /// would have, and go on after it. Only that event: skipping another
    /// would lose events no one looked at.
    fn skip(&mut self, position: i64) -> Result<(), WorkerError> {
        let stopped_at = self.poisoned.as_ref().filter(|_| self.halted).map(|(event, _)| event.position);
        if stopped_at != Some(position) {
            let name = &self.ns.name;
            return Err(WorkerError::NotStoppedAt(match stopped_at {
                Some(at) => format!("projection `{name}` is stopped at event {at}, not {position}"),
                None => format!(
                    "projection `{name}` is {}, not stopped at event {position}: only the event a stopped \
                     projection halted at can be skipped",
                    format!("{:?}", self.status.state()).to_lowercase()
                ),
            }));
        }
        let (event, end) = self.poisoned.take().expect("checked above");
        let reason = self.status.snapshot().last_error.map_or_else(String::new, |e| e.message);
        let message = format!("skipped by an administrator; it had failed with: {reason}");
        if let Err(e) = self.set_aside(&event, end, &message) {
            self.poisoned = Some((event, end));
            return Err(WorkerError::Store(e));
        }
        self.halted = false;
        Ok(())
    }

    /// Delete dead letter `position` for good. The checkpoint does not move.
    fn discard_dead_letter(&mut self, position: i64) -> Result<(), WorkerError> {
        if self.reader.is_none() {
            return Err(WorkerError::Conflict("the projection has not started yet".into()));
        }
        let at = self.persisted;
        let Some(caps) = open_caps(&mut self.guest, &mut self.spare) else {
            return Err(WorkerError::Conflict("the projection has not started yet".into()));
        };
        caps.begin()?;
        let result = (|| {
            if !caps.writer()?.remove_dead_letter(position)? {
                return Ok(false);
            }
            caps.commit(at, at)?;
            Ok(true)
        })();
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                let _ = caps.rollback();
                Err(WorkerError::NotFound(format!("no dead letter at position {position}")))
            }
            Err(e) => {
                let _ = caps.rollback();
                Err(WorkerError::Store(e))
            }
        }
    }

    /// Apply dead letter `position` with the current code, removing it from
    /// the table in the same transaction. The checkpoint does not move.
    pub(super) fn retry_dead_letter(&mut self, position: i64) -> Result<(), WorkerError> {
        if self.reader.is_none() {
            return Err(WorkerError::Conflict("the projection has not started yet".into()));
        }
        let at = self.persisted;
        // A reactor's emits name the event as their cause: where it is in the log.
        let cursor = self
            .ctx
            .handle
            .block_on(self.ctx.source.cursor_of(position))
            .map_err(|e| WorkerError::Store(StoreError::Database(format!("finding event {position}: {e}"))))?;
        let guest = self.guest().map_err(WorkerError::Guest)?;
        guest.caps().begin()?;
        let result = (|| {
            let letter = guest.caps().namespace().dead_letters(position - 1, 1)?;
            let Some(letter) = letter.into_iter().find(|l| l.event.position == position) else {
                return Err(WorkerError::NotFound(format!("no dead letter at position {position}")));
            };
            let cursor = cursor.unwrap_or(Cursor { tx: 0, id: position });
            guest.caps().begin_batch(std::slice::from_ref(&letter.event), &[cursor]);
            guest.handle(std::slice::from_ref(&letter.event)).map_err(WorkerError::Guest)?;
            guest.caps().writer()?.remove_dead_letter(position)?;
            guest.caps().commit(at, at)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                tracing::info!(projection = %self.ns, position, "dead letter applied");
                self.forward();
                Ok(())
            }
            Err(e) => {
                let failure = match &e {
                    WorkerError::Guest(f) => f.clone(),
                    other => GuestFailure::Refused(other.to_string()),
                };
                self.discard(&failure);
                Err(e)
            }
        }
    }
}
