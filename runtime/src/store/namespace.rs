//! One namespace through one connection, by role. A reader (HTTP reads,
//! guest queries, status) is a [`Reader`]: a snapshot, and the reads of
//! KV, SQL, tables and dead letters. The worker's writer is a [`Writer`]:
//! a reader that also commits, claims the namespace and writes. A backend
//! implements each role it serves; the two bundles come with them.

use reel_model::{Cursor, DeadLetter, Event, Rows, Value};

use super::{ChangeReads, Checkpoint, Dumps, Emissions, Forwarded, KvWrite, StoreError, TableRead};

/// Transactions and the checkpoint, as a reader sees them.
pub trait Snapshot {
    /// The committed checkpoint.
    fn checkpoint(&mut self) -> Result<Checkpoint, StoreError>;
    /// The connection is gone for good (the server closed it): nothing more
    /// can run on it; open the namespace again.
    fn is_closed(&self) -> bool {
        false
    }
    /// Start a transaction (a write transaction for writers, a snapshot for
    /// readers).
    fn begin(&mut self) -> Result<(), StoreError>;
    /// Abandon the transaction.
    fn rollback(&mut self) -> Result<(), StoreError>;
}

/// Reads of the namespace's KV table.
pub trait KvReads {
    /// A KV value.
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// KV entries with `prefix`, after `after`, in key order.
    fn kv_scan(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// A projection's queries.
pub trait SqlReads {
    /// The database, as `sql.dialect` names it: `sqlite` or `postgres`.
    fn dialect(&self) -> &'static str;
    /// Run a statement and return at most `max_rows` rows.
    fn query(&mut self, statement: &str, params: Vec<Value>, max_rows: usize) -> Result<Rows, StoreError>;
}

/// Table reads over HTTP.
pub trait TableReads {
    /// Read a table for HTTP, validating names.
    fn read_table(&mut self, read: &TableRead) -> Result<Rows, StoreError>;
    /// The tables a projection created (for status and errors).
    fn tables(&mut self) -> Result<Vec<String>, StoreError>;
}

/// The dead-letter table, read.
pub trait DeadLetterReads {
    /// Dead letters after position `after`, oldest first.
    fn dead_letters(&mut self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
}

/// A projection's writes. They may be deferred until [`flush`](Self::flush),
/// a query or the commit; an error there fails the batch.
pub trait SqlWrites {
    /// Run (or queue) a statement whose rows are not needed.
    fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<(), StoreError>;
    /// Run queued statements.
    fn flush(&mut self) -> Result<(), StoreError>;
}

/// Where a reactor batch's emissions went in its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Sent to be appended in the transaction (the backend shares it with
    /// the log); what it appended is known once the transaction has
    /// committed ([`Commits::take_appended`]).
    Sent,
    /// Into the namespace's outbox, as the entry of this id.
    Outbox(i64),
}

/// Owning and committing the namespace: the worker's side of a transaction.
pub trait Commits: SqlWrites {
    /// Try to become the one writer of this namespace among all runtimes
    /// (held until the connection closes). False: another runtime holds it.
    fn try_claim(&mut self) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Commit the transaction, moving the checkpoint from `from` to `to`
    /// (compare-and-set: fails with [`StoreError::Fenced`] if it is not at
    /// `from`).
    fn commit(&mut self, from: Cursor, to: Cursor) -> Result<(), StoreError>;
    /// Commit like [`commit`](Commits::commit), without waiting for the
    /// database where it can: the next transaction queues behind this one on
    /// the connection while the worker goes on. `Ok(true)`: the outcome is
    /// pending until [`settle`](Commits::settle); `Ok(false)`: it is
    /// committed already.
    fn commit_behind(&mut self, from: Cursor, to: Cursor) -> Result<bool, StoreError> {
        self.flush()?;
        self.commit(from, to).map(|()| false)
    }
    /// The outcome of the last pending [`commit_behind`](Commits::commit_behind)
    /// (`Ok` when none is pending). Every wait for the database waits for it
    /// first, and an operation waiting on a failed one fails too, until this
    /// reports the failure.
    fn settle(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A reactor's batch, handled through `to`: record what it emitted in
    /// the open transaction, so that it commits with the checkpoint. On a
    /// backend whose namespace and event log share the transaction the
    /// events are appended here; otherwise they wait in the namespace's
    /// outbox for [`outbox`](Commits::outbox) (ADR 23).
    fn emit(&mut self, emissions: &Emissions, to: Cursor) -> Result<Stored, StoreError> {
        let _ = (emissions, to);
        Err(StoreError::Refused("this backend cannot store a reactor's emissions yet".into()))
    }
    /// What the emissions sent by transactions committed since the last
    /// call appended and dropped ([`Stored::Sent`]); `None`: nothing.
    fn take_appended(&mut self) -> Option<Forwarded> {
        None
    }
    /// Committed batches waiting in the outbox, oldest first: their outbox
    /// id, the cursor they were handled through, and their emissions.
    fn outbox(&mut self) -> Result<Vec<(i64, Cursor, Emissions)>, StoreError> {
        Ok(Vec::new())
    }
    /// Start capturing the namespace's changes if they are captured and
    /// capture has not started (ADR 30). Called between batches once the
    /// version has reached the head of the log, with its checkpoint `at`:
    /// a catch-up is not captured; a client that needs the read model gets
    /// it as a snapshot. With `only_if_empty` (before the batch that reached
    /// the head), capture starts only on an empty read model: its history
    /// then holds every change from empty. `Ok(true)`: capture is on (or
    /// not asked for).
    fn start_capture(&mut self, at: Cursor, only_if_empty: bool) -> Result<bool, StoreError> {
        let _ = (at, only_if_empty);
        Ok(true)
    }
    /// Remove outbox entries up to `id` (forwarded to the log).
    fn outbox_done(&mut self, id: i64) -> Result<(), StoreError> {
        let _ = id;
        Ok(())
    }
}

/// Writes to the namespace's KV table.
pub trait KvWrites {
    /// Apply KV writes, in one go: each key once, in key order.
    fn kv_write(&mut self, writes: &[KvWrite<'_>]) -> Result<(), StoreError>;
    /// Whether the KV table is empty.
    fn kv_is_empty(&mut self) -> Result<bool, StoreError>;
}

/// The dead-letter table, written inside the open transaction.
pub trait DeadLetterWrites {
    /// Record a poison event.
    fn dead_letter(&mut self, event: &Event, error: &str) -> Result<(), StoreError>;
    /// Remove a dead letter; false if absent.
    fn remove_dead_letter(&mut self, position: i64) -> Result<bool, StoreError>;
}

/// A read-only view of a namespace: HTTP reads, guest queries, status,
/// the whole read model at once, its change history.
pub trait Reader: Snapshot + KvReads + SqlReads + TableReads + DeadLetterReads + Dumps + ChangeReads + Send {}

impl<T: Snapshot + KvReads + SqlReads + TableReads + DeadLetterReads + Dumps + ChangeReads + Send> Reader for T {}

/// The worker's writer: reads, writes and commits inside one transaction
/// per batch (begin, reads and writes, commit or rollback).
pub trait Writer: Reader + Commits + KvWrites + DeadLetterWrites {}

impl<T: Reader + Commits + KvWrites + DeadLetterWrites> Writer for T {}
