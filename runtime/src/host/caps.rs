//! What a projection instance can reach: its own namespace through the
//! batch's transaction, within its limits.

use reel_model::{Cursor, Emissions, Emitted, Event, Rows, Timer, Value};

use super::emitter::Emitter;
use super::tape::{HostCall, Tape};
use crate::config::Limits;
use crate::store::kv_cache::KvCache;
use crate::store::{Forwarded, Reader, StoreError, Stored, Writer};

/// Most log lines a projection may write per call; the rest are counted.
const LOG_LINES_PER_CALL: u32 = 1000;
/// Longest log line kept.
const LOG_LINE_BYTES: usize = 4096;
/// Bytes of committed KV values a worker caches.
pub(crate) const KV_CACHE_BYTES: usize = 256 << 20;

/// The namespace an instance reaches, and whether it builds the read model
/// or serves reads of it.
pub enum Access {
    /// The worker's instance: reads and writes inside the batch transaction.
    Write(Box<dyn Writer>),
    /// A query instance: reads committed data; writes are refused.
    Read(Box<dyn Reader>),
}

/// Why a call cannot go on: the instance traps (component) or the call's
/// result is discarded (native), and the worker fails the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Fault {
    /// The read-model database failed.
    #[error("{0}")]
    Store(StoreError),
    /// The projection broke a limit or a rule.
    #[error("{0}")]
    Refused(String),
}

/// Per-instance state behind the `kv`, `sql` and `log` imports.
pub struct Capabilities {
    projection: String,
    access: Access,
    kv: KvCache,
    limits: Limits,
    /// The fault that ended the current call, if any (reported to the worker).
    fault: Option<Fault>,
    /// A refused `execute` of this batch: it fails the batch at the end.
    sql_failed: Option<StoreError>,
    log_lines: u32,
    /// A reactor's emissions; `None` for a projection (whose batches then
    /// cost nothing for emitting).
    emitter: Option<Emitter>,
    /// The backend appends the emissions in the batch's transaction
    /// ([`Stored::Sent`]): there is no outbox to forward.
    appends_in_log: bool,
    /// The outbox (SQLite) as the worker knows it: the entry the current
    /// batch sent and, once committed, what it holds, so that a forward
    /// need not read back and parse what was just written.
    outbox: Outbox,
    /// Host calls recorded for a replay, or answered from one (ADR 49);
    /// `None` on the normal path, which then costs one test a call.
    tape: Option<Box<Tape>>,
}

impl Capabilities {
    /// Capabilities over `access`. A writer whose KV table is empty starts
    /// with a complete KV cache (a rebuild never reads KV from the database).
    pub fn new(projection: &str, mut access: Access, limits: Limits) -> Result<Self, StoreError> {
        let kv = match &mut access {
            Access::Write(ns) => KvCache::new(KV_CACHE_BYTES, ns.kv_is_empty()?),
            Access::Read(_) => KvCache::new(0, false),
        };
        Ok(Self {
            projection: projection.to_owned(),
            access,
            kv,
            limits,
            fault: None,
            sql_failed: None,
            log_lines: 0,
            emitter: None,
            appends_in_log: false,
            outbox: Outbox::default(),
            tape: None,
        })
    }

    /// Record the guest's host calls from now on, or answer them from a
    /// recording (ADR 49); `None`: neither.
    pub fn set_tape(&mut self, tape: Option<Tape>) {
        self.tape = tape.map(Box::new);
    }

    /// The tape, done with.
    pub fn take_tape(&mut self) -> Option<Tape> {
        self.tape.take().map(|t| *t)
    }

    /// The recorded answer to `asked`, when playing a tape back; a call the
    /// recording does not have is refused (the call ends).
    fn played(&mut self, asked: impl FnOnce() -> HostCall) -> Option<Result<HostCall, Fault>> {
        let tape = self.tape.as_mut().filter(|t| t.is_playing())?;
        Some(tape.answer(&asked()).or_else(|why| self.fail(Fault::Refused(why))))
    }

    /// Keep `call` when recording.
    fn recorded(&mut self, call: impl FnOnce() -> HostCall) {
        if let Some(tape) = &mut self.tape {
            tape.record(call);
        }
    }

    /// Make these a reactor's capabilities: `emit` and `timers` go to `emitter`.
    pub fn set_emitter(&mut self, emitter: Emitter) {
        self.emitter = Some(emitter);
    }

    /// Whether these are a reactor's.
    pub fn is_reactor(&self) -> bool {
        self.emitter.is_some()
    }

    /// A reactor's batch of `events` at `cursors` starts (an emit must name
    /// one of them as its cause).
    pub fn begin_batch(&mut self, events: &[Event], cursors: &[Cursor]) {
        if let Some(emitter) = &mut self.emitter {
            emitter.begin(events, cursors);
        }
    }

    /// What the commits since the last call appended, on a backend that
    /// appends in the batch's transaction (taken once).
    pub fn take_appended(&mut self) -> Option<Forwarded> {
        let Access::Write(ns) = &mut self.access else { return None };
        ns.take_appended()
    }

    /// Whether the backend appends the emissions in the batch's
    /// transaction, so that there is no outbox to forward.
    pub fn appends_in_log(&self) -> bool {
        self.appends_in_log
    }

    /// The namespace, to read (the worker's checkpoint, dead letters).
    pub fn namespace(&mut self) -> &mut dyn Reader {
        match &mut self.access {
            Access::Write(ns) => &mut **ns,
            Access::Read(ns) => &mut **ns,
        }
    }

    /// The namespace, to write (the worker's dead letters); a query
    /// instance's is refused.
    pub fn writer(&mut self) -> Result<&mut dyn Writer, StoreError> {
        match &mut self.access {
            Access::Write(ns) => Ok(&mut **ns),
            Access::Read(_) => Err(StoreError::Refused("a query instance's namespace is read-only".into())),
        }
    }

    /// Open the batch transaction.
    pub fn begin(&mut self) -> Result<(), StoreError> {
        self.fault = None;
        self.sql_failed = None;
        self.log_lines = 0;
        self.drop_emissions();
        self.namespace().begin()
    }

    /// Forget what a reactor emitted since its batch began: an abandoned
    /// attempt's emissions must not ride on a later commit (a dead letter's
    /// set-aside, a skip, a discard).
    fn drop_emissions(&mut self) {
        if let Some(emitter) = &mut self.emitter {
            emitter.take();
        }
    }

    /// Send buffered writes and surface deferred SQL errors.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let flushed = self.send_writes().and_then(|()| self.writer()?.flush());
        self.watch(flushed)
    }

    /// A stale KV cache found by the database drops the cache.
    fn watch<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::KvStale(_)) = &result {
            self.kv.forget();
        }
        result
    }

    /// Surface a deferred SQL error, then hand the buffered KV writes to the
    /// namespace.
    fn send_writes(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.sql_failed.clone() {
            return Err(e);
        }
        let Access::Write(ns) = &mut self.access else { return Ok(()) };
        self.kv.flush(&mut **ns)
    }

    /// A reactor's emissions go into the transaction (appended, or to the
    /// outbox) before its checkpoint; every batch, so that the reactor's
    /// handled position is known even where it emitted nothing (ADR 23).
    fn send_emissions(&mut self, to: Cursor) -> Result<(), StoreError> {
        let Some(emitter) = &mut self.emitter else { return Ok(()) };
        let emissions = emitter.take();
        let Access::Write(ns) = &mut self.access else { return Ok(()) };
        match ns.emit(&emissions, to)? {
            Stored::Sent => self.appends_in_log = true,
            Stored::Outbox(id) => self.outbox.sent(id, to, emissions),
        }
        Ok(())
    }

    /// The one entry in the outbox (its id, the cursor it was handled
    /// through, its emissions), when that is known: the outbox was empty
    /// before the last commit, which left it (taken once). `None`: read the
    /// outbox.
    pub fn take_committed_entry(&mut self) -> Option<(i64, Cursor, Emissions)> {
        self.outbox.take()
    }

    /// The outbox was found empty (`true`, after a forward of all it held)
    /// or may hold what is not known (`false`, after a failed forward).
    pub fn set_outbox_empty(&mut self, empty: bool) {
        if empty { self.outbox.empty = true } else { self.outbox.lost_track() }
    }

    /// Flush, move the checkpoint `from` -> `to` and commit.
    pub fn commit(&mut self, from: Cursor, to: Cursor) -> Result<(), StoreError> {
        self.flush()?;
        let sent = self.send_emissions(to);
        self.watch(sent)?;
        let committed = self.writer().and_then(|ns| ns.commit(from, to));
        if committed.is_err() {
            // Committed or not, the outbox is not known now.
            self.outbox.lost_track();
        }
        self.watch(committed)?;
        self.outbox.committed();
        self.kv.committed();
        Ok(())
    }

    /// Commit like [`Self::commit`] without waiting for the database where
    /// it pipelines (see [`Commits::commit_behind`](crate::store::Commits::commit_behind)); the batch's values
    /// serve the next batch at once. `Ok(true)`: the outcome is pending
    /// until [`Self::settle`].
    pub fn commit_behind(&mut self, from: Cursor, to: Cursor) -> Result<bool, StoreError> {
        let sent = self
            .send_writes()
            .and_then(|()| self.send_emissions(to))
            .and_then(|()| self.writer()?.commit_behind(from, to));
        if sent.is_err() {
            self.outbox.lost_track();
        }
        let pending = self.watch(sent)?;
        if pending {
            // PostgreSQL appends in the transaction: it has no outbox.
            self.kv.committed_behind();
        } else {
            self.outbox.committed();
            self.kv.committed();
        }
        Ok(pending)
    }

    /// The outcome of the last pending [`Self::commit_behind`]. When it
    /// failed, the KV cache goes back to what it held before that batch.
    pub fn settle(&mut self) -> Result<(), StoreError> {
        let outcome = self.writer().and_then(|ns| ns.settle());
        self.kv.settled(outcome.is_ok());
        self.watch(outcome)
    }

    /// Abandon the batch.
    pub fn rollback(&mut self) -> Result<(), StoreError> {
        self.kv.rolled_back();
        self.sql_failed = None;
        self.drop_emissions();
        self.outbox.sent = None;
        self.outbox.lost_track();
        self.namespace().rollback()
    }

    /// The fault that ended the last call, if any.
    pub fn take_fault(&mut self) -> Option<Fault> {
        self.fault.take()
    }

    fn fail<T>(&mut self, fault: Fault) -> Result<T, Fault> {
        self.fault.get_or_insert(fault.clone());
        Err(fault)
    }

    fn store<T>(&mut self, result: Result<T, StoreError>) -> Result<T, Fault> {
        let result = self.watch(result);
        result.or_else(|e| self.fail(Fault::Store(e)))
    }

    fn writable(&mut self, what: &str) -> Result<(), Fault> {
        match self.access {
            Access::Write(_) => Ok(()),
            Access::Read(_) => {
                self.fail(Fault::Refused(format!("{what} is not allowed in a query: reads are read-only")))
            }
        }
    }

    /// Hand the buffered KV writes to a writer (reads see them); nothing to
    /// do for a query instance.
    fn flush_kv(&mut self) -> Result<(), Fault> {
        let Access::Write(ns) = &mut self.access else { return Ok(()) };
        let flushed = self.kv.flush(&mut **ns);
        self.store(flushed)
    }

    fn check_key(&mut self, key: &str) -> Result<(), Fault> {
        self.check_text("key", key)?;
        if key.len() > self.limits.kv_key_bytes {
            let limit = self.limits.kv_key_bytes;
            return self.fail(Fault::Refused(format!("kv key of {} bytes is over the {limit}-byte limit", key.len())));
        }
        Ok(())
    }

    /// A NUL in a key: PostgreSQL's text cannot hold one (it would fail the
    /// batch as if the database were down), so no backend takes it.
    fn check_text(&mut self, what: &str, text: &str) -> Result<(), Fault> {
        if text.contains('\0') {
            let shown = truncate(text, 100).escape_default().to_string();
            return self.fail(Fault::Refused(format!("kv {what} `{shown}` contains a NUL character")));
        }
        Ok(())
    }

    /// `kv.get`.
    pub fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Fault> {
        self.check_text("key", key)?;
        if self.tape.is_some() {
            return self.kv_get_taped(key);
        }
        let result = match &mut self.access {
            Access::Write(ns) => self.kv.get(key, &mut **ns),
            Access::Read(ns) => ns.kv_get(key),
        };
        self.store(result)
    }

    /// `kv.get`, recorded or played back.
    fn kv_get_taped(&mut self, key: &str) -> Result<Option<Vec<u8>>, Fault> {
        if let Some(answer) = self.played(|| HostCall::KvGet { key: key.to_owned(), value: None }) {
            let HostCall::KvGet { value, .. } = answer? else { unreachable!("answers match their calls") };
            return Ok(value);
        }
        let tape = self.tape.take();
        let value = self.kv_get(key);
        self.tape = tape;
        let value = value?;
        self.recorded(|| HostCall::KvGet { key: key.to_owned(), value: value.clone() });
        Ok(value)
    }

    /// `kv.set`.
    pub fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), Fault> {
        self.writable("kv.set")?;
        self.check_key(&key)?;
        if value.len() > self.limits.kv_value_bytes {
            let limit = self.limits.kv_value_bytes;
            return self.fail(Fault::Refused(format!(
                "kv value of {} bytes for key `{}` is over the {limit}-byte limit",
                value.len(),
                truncate(&key, 100)
            )));
        }
        self.kv.set(key, value);
        Ok(())
    }

    /// `kv.delete`.
    pub fn kv_delete(&mut self, key: String) -> Result<(), Fault> {
        self.writable("kv.delete")?;
        self.check_key(&key)?;
        self.kv.delete(key);
        Ok(())
    }

    /// `kv.scan` (at most the row limit per call).
    pub fn kv_scan(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<(String, Vec<u8>)>, Fault> {
        self.check_text("prefix", prefix)?;
        if let Some(after) = after {
            self.check_text("key", after)?;
        }
        let asked = || HostCall::KvScan {
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            limit,
            entries: Vec::new(),
        };
        if let Some(answer) = self.played(asked) {
            let HostCall::KvScan { entries, .. } = answer? else { unreachable!("answers match their calls") };
            return Ok(entries);
        }
        let max = (limit as usize).min(self.limits.query_rows);
        self.flush_kv()?;
        let result = self.namespace().kv_scan(prefix, after, max);
        let entries = self.store(result)?;
        self.recorded(|| {
            let HostCall::KvScan { prefix, after, limit, .. } = asked() else { unreachable!("asked a scan") };
            HostCall::KvScan { prefix, after, limit, entries: entries.clone() }
        });
        Ok(entries)
    }

    /// `sql.dialect`.
    pub fn sql_dialect(&self) -> &'static str {
        match &self.access {
            Access::Write(ns) => ns.dialect(),
            Access::Read(ns) => ns.dialect(),
        }
    }

    /// `sql.execute`: errors are kept for the end of the batch; past the
    /// batch's deadline the call ends, as at its CPU deadline.
    pub fn sql_execute(&mut self, statement: &str, params: Vec<Value>) -> Result<(), Fault> {
        let Access::Write(ns) = &mut self.access else { return self.writable("sql.execute") };
        match ns.execute(statement, params) {
            Ok(()) => Ok(()),
            Err(e) if e.is_sql_error() => {
                self.sql_failed.get_or_insert(e);
                Ok(())
            }
            Err(e) => self.fail(Fault::Store(e)),
        }
    }

    /// `sql.query`: the database's error goes back to the projection (and
    /// fails the batch); an unavailable database, or the batch's deadline
    /// passed, is a fault that ends the call.
    pub fn sql_query(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Result<Rows, guest_sdk::SqlError>, Fault> {
        if self.tape.is_none() {
            return self.sql_query_untaped(statement, params);
        }
        let asked = || HostCall::SqlQuery {
            statement: statement.to_owned(),
            params: params.clone(),
            result: Ok(Rows::default()),
        };
        if let Some(answer) = self.played(asked) {
            let HostCall::SqlQuery { result, .. } = answer? else { unreachable!("answers match their calls") };
            return Ok(result);
        }
        let result = self.sql_query_untaped(statement, params.clone())?;
        self.recorded(|| HostCall::SqlQuery { statement: statement.to_owned(), params, result: result.clone() });
        Ok(result)
    }

    fn sql_query_untaped(
        &mut self,
        statement: &str,
        params: Vec<Value>,
    ) -> Result<Result<Rows, guest_sdk::SqlError>, Fault> {
        if let Some(e) = &self.sql_failed {
            return Ok(Err(e.to_sql_error()));
        }
        self.flush_kv()?;
        let max_rows = self.limits.query_rows;
        match self.namespace().query(statement, params, max_rows) {
            Ok(rows) => Ok(Ok(rows)),
            Err(e) if e.is_sql_error() => {
                let error = e.to_sql_error();
                self.sql_failed.get_or_insert(e);
                Ok(Err(error))
            }
            Err(e) => self.fail(Fault::Store(e)),
        }
    }

    /// The emitter, or the refusal a projection gets for calling `what`.
    fn emitter(&mut self, what: &str) -> Result<&mut Emitter, Fault> {
        if self.emitter.is_none() || matches!(self.access, Access::Read(_)) {
            let why = if self.emitter.is_none() {
                format!("{what}: only a reactor may emit (it exports `describe-emits`)")
            } else {
                format!("{what} is not allowed in a query: reads are read-only")
            };
            return self.fail(Fault::Refused(why));
        }
        Ok(self.emitter.as_mut().expect("checked above"))
    }

    /// `emit.emit`: checked now, appended when the batch commits.
    pub fn emit(&mut self, event: Emitted) -> Result<(), Fault> {
        let result = self.emitter("emit")?.emit(event);
        result.or_else(|why| self.fail(Fault::Refused(why)))
    }

    /// `timers.schedule`.
    pub fn schedule(&mut self, timer: Timer) -> Result<(), Fault> {
        let result = self.emitter("timers.schedule")?.schedule(timer);
        result.or_else(|why| self.fail(Fault::Refused(why)))
    }

    /// `timers.cancel`.
    pub fn cancel_timer(&mut self, key: String) -> Result<(), Fault> {
        let result = self.emitter("timers.cancel")?.cancel(key);
        result.or_else(|why| self.fail(Fault::Refused(why)))
    }

    /// `log.log`: to the host's log, tagged with the projection.
    pub fn log(&mut self, level: guest_sdk::Level, message: &str) {
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            if self.log_lines == LOG_LINES_PER_CALL + 1 {
                tracing::warn!(projection = %self.projection, "more than {LOG_LINES_PER_CALL} log lines in one call; dropping the rest");
            }
            return;
        }
        let message = truncate(message, LOG_LINE_BYTES);
        if let Some(tape) = &mut self.tape {
            tape.log(level, message);
        }
        let projection = &self.projection;
        match level {
            guest_sdk::Level::Trace => tracing::trace!(target: "reel::guest", projection, "{message}"),
            guest_sdk::Level::Debug => tracing::debug!(target: "reel::guest", projection, "{message}"),
            guest_sdk::Level::Info => tracing::info!(target: "reel::guest", projection, "{message}"),
            guest_sdk::Level::Warn => tracing::warn!(target: "reel::guest", projection, "{message}"),
            guest_sdk::Level::Error => tracing::error!(target: "reel::guest", projection, "{message}"),
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Capabilities as the Rust SDK's [`guest_sdk::Host`], for projections
/// compiled natively: a fault is recorded (the worker fails the batch) and
/// the call returns an empty result.
impl guest_sdk::Host for Capabilities {
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        Capabilities::kv_get(self, key).unwrap_or_default()
    }

    fn kv_set(&mut self, key: &str, value: Vec<u8>) {
        let _ = Capabilities::kv_set(self, key.to_owned(), value);
    }

    fn kv_delete(&mut self, key: &str) {
        let _ = Capabilities::kv_delete(self, key.to_owned());
    }

    fn kv_scan(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, Vec<u8>)> {
        Capabilities::kv_scan(self, prefix, after, limit).unwrap_or_default()
    }

    fn sql_execute(&mut self, statement: &str, params: Vec<Value>) {
        let _ = Capabilities::sql_execute(self, statement, params);
    }

    fn sql_query(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, guest_sdk::SqlError> {
        match Capabilities::sql_query(self, statement, params) {
            Ok(result) => result,
            Err(fault) => Err(guest_sdk::SqlError { code: "reel:fault".into(), message: fault.to_string() }),
        }
    }

    fn sql_dialect(&mut self) -> String {
        Capabilities::sql_dialect(self).to_owned()
    }

    fn log(&mut self, level: guest_sdk::Level, message: &str) {
        Capabilities::log(self, level, message);
    }

    fn emit(&mut self, event: Emitted) {
        let _ = Capabilities::emit(self, event);
    }

    fn schedule(&mut self, timer: Timer) {
        let _ = Capabilities::schedule(self, timer);
    }

    fn cancel_timer(&mut self, key: &str) {
        let _ = Capabilities::cancel_timer(self, key.to_owned());
    }
}

/// What the worker knows of a reactor's outbox (SQLite, ADR 23).
#[derive(Default)]
struct Outbox {
    /// It held nothing after the last forward, and at most the entry in
    /// `committed` since.
    empty: bool,
    /// The entry the open batch sent (not committed yet): its id, the
    /// cursor it was handled through and its emissions.
    sent: Option<(i64, Cursor, Emissions)>,
    /// The entry the last commit left.
    committed: Option<(i64, Cursor, Emissions)>,
}

impl Outbox {
    /// A batch sent its entry: an entry sent before it and not committed,
    /// or committed and not forwarded, leaves the outbox unknown.
    fn sent(&mut self, id: i64, handled: Cursor, emissions: Emissions) {
        if self.sent.is_some() || self.committed.take().is_some() {
            self.lost_track();
        }
        self.sent = Some((id, handled, emissions));
    }

    /// What it holds is no longer known: the next forward reads it.
    fn lost_track(&mut self) {
        self.empty = false;
    }

    fn committed(&mut self) {
        if let Some(entry) = self.sent.take() {
            self.committed = Some(entry);
        }
    }

    /// The committed entry, when it is the only one.
    fn take(&mut self) -> Option<(i64, Cursor, Emissions)> {
        self.committed.take().filter(|_| self.empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entry `id` sent, and committed when `commit`.
    fn send(outbox: &mut Outbox, id: i64, commit: bool) {
        outbox.sent(id, Cursor { tx: 0, id: id * 10 }, Emissions { reactor: "r".into(), ..Emissions::default() });
        if commit {
            outbox.committed();
        }
    }

    #[test]
    fn the_outbox_s_entry_is_given_back_only_when_it_is_the_only_one() {
        let mut outbox = Outbox::default();
        // Not known at start: the worker reads the outbox.
        send(&mut outbox, 1, true);
        assert!(outbox.take().is_none());
        // Read and forwarded in full: the next committed entry is the only one.
        outbox.empty = true;
        send(&mut outbox, 2, true);
        assert_eq!(outbox.take().map(|(id, at, _)| (id, at.id)), Some((2, 20)));
        // An entry committed and not forwarded (a checkpoint's own commit),
        // then another: two in the outbox, so it is read.
        send(&mut outbox, 3, true);
        send(&mut outbox, 4, true);
        assert!(outbox.take().is_none());
        // A sent entry whose commit was never seen: the same.
        outbox.empty = true;
        send(&mut outbox, 5, false);
        send(&mut outbox, 6, true);
        assert!(outbox.take().is_none());
    }
}
