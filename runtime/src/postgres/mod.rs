//! PostgreSQL, all of it: the event log (the classic `events` table plus a
//! `transaction_id xid8` column: `events.rs`; a worker's reader: `reader.rs`)
//! and the read models, one schema and login role per namespace (`store.rs`:
//! creating, listing, dropping; `connection.rs`: a namespace's connection and
//! the statements reel sends on it; `execs.rs`: its writes sent as
//! `EXECUTE`s; `pipeline.rs`: the task that keeps its requests flowing;
//! `emit.rs`: a reactor batch's emissions;
//! `quota.rs`: its storage quota; `namespace.rs`: its roles; `changes.rs`:
//! its change capture and history), over shared
//! connection plumbing (`client.rs`) and values in PostgreSQL's text format
//! (`value.rs`).
mod changes;
mod client;
mod commands;
mod connection;
mod dump;
mod emit;
mod events;
mod execs;
mod namespace;
mod pipeline;
mod quota;
mod reader;
mod store;
mod value;

pub use events::PgSource;
pub use store::PgStore;
