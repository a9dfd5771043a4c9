//! A SQLite namespace's projection statements, run on a thread of their own
//! while the guest goes on.
//!
//! `sql.execute` returns nothing to the guest (ADR 01), so its statements
//! need not run before the guest's next event. A batch's statements are
//! queued; every [`CHUNK`] of them, the connection moves to a [`Writer`]
//! thread that runs them while the guest computes the next events, and it
//! comes back when the namespace needs it again (a query, a KV read, the
//! commit). The guest's handling and SQLite's B-tree work then use both
//! cores instead of taking turns. A batch of fewer statements runs them on
//! the caller's thread and never wakes the writer (live traffic).
//!
//! The statements run in the order the guest issued them, in the batch's
//! transaction, under the same authorizer and deadline; the first error
//! stops the rest and surfaces when the connection comes back, as a deferred
//! error does on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;

use reel_model::Value;

use super::convert::{Guest, Param, as_guest};
use crate::store::StoreError;

/// Queued statements from which the connection goes to the writer thread.
pub const CHUNK: usize = 128;

/// A checked statement (SQLite placeholders) and its parameters.
pub type Statement = (Arc<str>, Vec<Value>);

/// Run `statements` on `conn` as the projection's, stopping at the first
/// error.
///
/// A batch repeats a few statement texts many times, and the namespace hands
/// out one `Arc` per distinct text: each text is taken from rusqlite's cache
/// once per run and then found by pointer, instead of hashing and trimming
/// the whole text per statement (docs/benchmarks.md, item 9).
///
/// With change capture on, a statement that changes the schema is followed
/// by a look for new tables to watch (ADR 28), with reel's own rights.
pub fn run(conn: &Connection, guest: &Guest, statements: &[Statement]) -> Result<(), StoreError> {
    let capture = guest.capture.load(Ordering::Relaxed);
    as_guest(conn, guest, |conn| {
        let mut prepared: Vec<(&Arc<str>, rusqlite::CachedStatement<'_>, bool)> = Vec::new();
        statements.iter().try_for_each(|(statement, params)| {
            let at = match prepared.iter().position(|(text, _, _)| Arc::ptr_eq(text, statement)) {
                Some(at) => at,
                None => {
                    let ddl = capture && crate::store::is_ddl(statement);
                    prepared.push((statement, conn.prepare_cached(statement)?, ddl));
                    prepared.len() - 1
                }
            };
            prepared[at].1.execute(rusqlite::params_from_iter(params.iter().map(Param)))?;
            if prepared[at].2 {
                guest.on.store(false, Ordering::Relaxed);
                let watched = super::namespace::watch_tables(conn);
                guest.on.store(true, Ordering::Relaxed);
                watched?;
            }
            Ok(())
        })
    })
}

enum Job {
    /// The connection, for the statements that follow.
    Take(Connection),
    Run(Vec<Statement>),
    /// Send the connection back, with the first error.
    Give,
}

/// The thread, started at a namespace's first big batch.
pub struct Writer {
    jobs: Option<SyncSender<Job>>,
    back: Receiver<(Connection, Option<StoreError>)>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start the thread; `guest` is the namespace's authorizer switch.
    pub fn start(guest: Arc<Guest>) -> Result<Self, StoreError> {
        // A few chunks in flight: the guest runs ahead, not unboundedly.
        let (jobs, queue) = sync_channel::<Job>(4);
        let (give, back) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("reel-sqlite-writer".into())
            .spawn(move || {
                let mut conn = None;
                let mut failed = None;
                while let Ok(job) = queue.recv() {
                    match job {
                        Job::Take(c) => {
                            conn = Some(c);
                            failed = None;
                        }
                        Job::Run(statements) => {
                            if let (Some(c), None) = (&conn, &failed) {
                                failed = run(c, &guest, &statements).err();
                            }
                        }
                        Job::Give => {
                            if let Some(c) = conn.take()
                                && give.send((c, failed.take())).is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Database(format!("cannot start a SQLite writer thread: {e}")))?;
        Ok(Self { jobs: Some(jobs), back, thread: Some(thread) })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.as_ref().and_then(|jobs| jobs.send(job).ok()).ok_or_else(lost)
    }

    /// Hand over the connection (`None`: it is on the thread already) and
    /// queue `statements` after what it is running.
    pub fn run(&mut self, conn: Option<Connection>, statements: Vec<Statement>) -> Result<(), StoreError> {
        if let Some(conn) = conn {
            self.send(Job::Take(conn))?;
        }
        self.send(Job::Run(statements))
    }

    /// Wait for the queued statements and take the connection back, with
    /// the first statement error. Only while the thread has the connection.
    pub fn give_back(&mut self) -> Result<(Connection, Option<StoreError>), StoreError> {
        self.send(Job::Give)?;
        self.back.recv().map_err(|_| lost())
    }
}

/// The error when the connection did not come back from the thread.
pub fn lost() -> StoreError {
    StoreError::Database("the SQLite writer thread of this namespace stopped; its connection is lost".into())
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
