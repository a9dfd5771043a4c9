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
