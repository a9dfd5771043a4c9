//! reel: a projection runtime for event-sourced systems.
//!
//! reel tails an append-only `events` table, feeds each event to projection
//! modules compiled to WebAssembly components, and those modules build read
//! models through a key-value and an SQL API the host provides. The read
//! models are served over HTTP.
//!
//! # Layout
//!
//! The data flows `source -> worker -> host -> store -> api`, but that is not
//! the order of the layers: the worker uses the source, the host and the
//! store. Each module below uses only modules on lines above its own (two on
//! one line use neither the other); `tests/architecture.rs` checks every
//! `crate::` path against this list, from the floor up:
//!
//! 1. `config`, `text`: what a server is asked to run ([`Config`]: backend,
//!    limits, batch sizes, per-projection settings); text from database bytes.
//! 2. `source`, `store`: what every backend implements: the event log
//!    (committed events after a cursor, appends, wake-ups), and read-model
//!    storage (a namespace per projection version, its KV table, its
//!    checkpoint, the roles a namespace plays).
//! 3. `sqlite`, `postgres`: each backend in one place (its event log,
//!    namespaces, connections); neither knows the other.
//! 4. `host`: the wasmtime engine and the capabilities a guest imports (`kv`,
//!    `sql`, `log`, and an inert WASI), bound to the worker's transaction;
//!    also runs projections compiled natively.
//! 5. `modules`: loads `.wasm` files from the modules folder, compiles them
//!    (with an on-disk cache), validates them against the world, and watches
//!    the folder for changes.
//! 6. `worker`, `decide`, `sinks`: one thread per projection: batch -> guest ->
//!    commit (writes and checkpoint in one transaction), with retries,
//!    bisection and status; deciders, the write side: a command decided on a
//!    stream's state and appended with the stream's version; sinks, the log
//!    delivered to message brokers (NATS JetStream, RabbitMQ) at least once,
//!    the checkpoint moved once the broker confirmed.
//! 7. `deploy`: the registry of deployments: a worker per projection
//!    version, module files deployed as they come and go, blue/green cut-over.
//! 8. `reads`: the read service the API calls: reads and status.
//! 9. `api`: the HTTP API (axum): append, status, reads, control, and the
//!    dashboard page at `/`.
//! 10. `server`: start-up: [`run`] opens the backends, starts everything for
//!     a [`Config`] and serves HTTP (or HTTPS) in its own connection loop:
//!     header, body and idle timeouts, a connection cap, TLS.
//! 11. `client`: a small HTTP client (the control subcommands, tests).
//! 12. `cli`, `scaffold`: the subcommands of the `reel` command other than
//!     `serve`, with `cli::workload`, the deterministic order workload of
//!     `reel generate` (and of the tests and benchmarks), and
//!     `cli::snapshot`, `reel test` (a read model built from a fixture on a
//!     scratch store, compared with a snapshot), `cli::replay`, `reel replay`
//!     (a poison event's record run again, with no database); `reel new`, a projection
//!     folder in Rust, JavaScript, Python or C.
//! 13. `testing`: what reel's own tests and benchmarks reach inside the
//!     library (hidden from the docs; not an API).
//!
//! Below them all, [`model`] (the `reel-model` crate, shared with the guest
//! SDK): the one event shape, the cursor, timestamps, SQL values, the manifest.

/// mimalloc for every binary that links reel (the server, its tests and
/// benchmarks): events, parameters and KV values are allocated on one thread
/// and freed on another, which glibc's allocator serves with locks. Without
/// transparent huge pages (`no_thp`): the kernel zeroing fresh 2 MiB pages
/// cost more than they saved. Figures in ADR 12.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Giving memory that reel freed back to the system once a worker is idle
/// (ADR 12): mimalloc keeps a thread's freed pages for that thread's next
/// allocations and purges them only as it allocates, so a thread that goes
/// quiet after a burst (a catch-up, the start's loading) would hold them for
/// as long as it stays quiet.
#[allow(unsafe_code)]
pub(crate) fn give_back_freed_memory() {
    unsafe extern "C" {
        /// mimalloc's `mi_collect`: with `force`, the calling thread's freed
        /// pages, pages abandoned by threads that ended, and the arenas'
        /// free ranges go back to the system.
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes no pointer and may be called from any thread
    // at any time; it only frees memory no allocation holds.
    unsafe { mi_collect(true) }
}

// A library user needs what is `pub` here: `run`/`serve`/`Server` with a
// `Config`, and the shared `model`. `cli` and `scaffold` serve src/main.rs;
// reel's own tests and benchmarks reach further in through `testing` alone.
mod api;
pub mod cli;
mod client;
pub mod config;
mod decide;
mod deploy;
mod host;
mod modules;
mod postgres;
mod reads;
pub mod scaffold;
mod server;
mod sinks;
mod source;
mod sqlite;
mod store;
#[doc(hidden)]
pub mod testing;
mod text;
mod worker;

pub use config::Config;
/// The types every part of reel shares (events, cursors, values, manifests).
pub use reel_model as model;
pub use server::{Server, run, serve};
