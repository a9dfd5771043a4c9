//! Embedded SQLite, all of it: the event log (`events.db`, `events.rs`) and
//! the read models, one file per namespace (`store.rs`: opening, listing,
//! the authorizer; `namespace.rs`: a namespace's connection and its roles;
//! `convert.rs`: rusqlite's values and errors as reel's), with the thread
//! that runs a batch's statements while the guest goes on (`writer.rs`) and
//! WAL checkpoints off the writer's thread (`wal.rs`), and what a write that
//! failed says of the disk (`disk.rs`).

mod commands;
mod convert;
mod disk;
mod events;
mod forward;
mod namespace;
mod store;
pub mod wal;
mod writer;

pub use events::SqliteSource;
pub use store::SqliteStore;

/// Bytes SQLite's allocations hold in this process now: every connection's
/// page cache (a namespace's writer keeps up to 256 MiB), statements and
/// schemas, whichever backend the events are on.
#[allow(unsafe_code)]
pub(crate) fn memory_used() -> i64 {
    // SAFETY: takes nothing and reads a counter SQLite keeps under its own
    // mutex (memory statistics are on in the bundled build's defaults).
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}
