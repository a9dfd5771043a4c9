//! reel: a projection runtime for event-sourced systems.
//!
//! reel tails an append-only `events` table, feeds each event to projection
//! modules compiled to WebAssembly components, and those modules build read
//! models through a key-value and an SQL API the host provides. The read
//! models are served over HTTP.
//!
//! # Layout
//!
//! The folders follow the data flow, `source -> worker -> host -> store -> api`:
//!
//! - [`model`] (the `reel-model` crate, shared with the guest SDK): the one
//!   event shape, the cursor, timestamps, SQL values, the manifest.
//! - [`source`]: the event log every backend implements: committed events
//!   after a cursor, appends, wake-ups.
//! - [`modules`]: loads `.wasm` files from the modules folder, compiles them
//!   (with an on-disk cache), validates them against the world, and watches
//!   the folder for changes.
//! - [`worker`]: one thread per projection: batch -> guest -> commit (writes
//!   and checkpoint in one transaction), with retries, bisection and status.
//! - [`host`]: the wasmtime engine and the capabilities a guest imports
//!   (`kv`, `sql`, `log`, and an inert WASI), bound to the worker's
//!   transaction; also runs projections compiled natively.
//! - [`store`]: read-model storage: a namespace per projection version, its
//!   KV table, its checkpoint; the roles a backend's namespace plays.
//! - [`sqlite`] and [`postgres`]: each backend in one place (its event log,
//!   namespaces, connections).
//! - [`api`]: the HTTP API (axum): append, status, reads, control, and the
//!   dashboard page at `/`.
//! - [`deploy`]: the registry of deployments: a worker per projection
//!   version, module files deployed as they come and go, blue/green cut-over.
//! - [`reads`]: the read service the API calls: reads and status.
//! - [`server`]: start-up: [`run`] opens the backends, starts everything for
//!   a [`Config`] and serves HTTP.
//! - [`cli`] and [`client`]: the control subcommands of the `reel` command,
//!   over a small HTTP client.
//! - [`scaffold`]: `reel new`, a projection folder in Rust, JavaScript, Python or C.
//! - [`workload`]: a deterministic order workload and the read models it must
//!   produce (tests, benchmarks).

/// mimalloc for every binary that links reel (the server, its tests and
/// benchmarks). Events, statement parameters and KV values are allocated on
/// one thread and freed on another (reader -> worker -> SQLite writer), which
/// glibc's allocator serves with locks and arena consolidation (~13% of the
/// worker thread's samples); with mimalloc a 1M-event SQLite rebuild of
/// `order-summaries` ran at 254-276k events/s against 203-213k (three
/// alternating runs each; docs/benchmarks.md).
///
/// Built without transparent huge pages (`no_thp`: mimalloc does not ask the
/// kernel for them): with them, 18.7% of the samples in a PostgreSQL
/// `customer-stats` rebuild were the kernel zeroing fresh 2 MiB pages
/// (`clear_page_erms`, `perf record`). Alternating 1M-event runs, 2026-11-28
/// about 15:35-15:53 UTC: `customer-stats` on PostgreSQL 197,300 / 190,132 against
/// 170,379 / 165,033 events/s (reel 4.9 against 5.8-6.2 µs CPU per event),
/// `order-summaries` on SQLite 202,758 / 204,345 against 186,376 / 199,798.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod deploy;
pub mod host;
pub mod modules;
pub mod postgres;
pub mod reads;
pub mod scaffold;
pub mod server;
pub mod source;
pub mod sqlite;
pub mod store;
mod text;
pub mod worker;
pub mod workload;

pub use config::Config;
/// The types every part of reel shares (events, cursors, values, manifests).
pub use reel_model as model;
pub use server::{Server, run, serve};
