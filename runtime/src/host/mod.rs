//! The guest side of a worker: the wasmtime engine, the capabilities a
//! projection imports, and the projections it runs (components, or Rust
//! projections compiled natively).
//!
//! - [`caps`]: per-instance state bound to the projection's namespace; every
//!   import goes through it, so limits and read-only mode hold for both
//!   component and native guests.
//! - `kv`, `sql`, `log`, `emit`: the generated import traits, one file each;
//!   [`emitter`]: a reactor's emissions and timers within a batch.
//! - [`tape`]: a guest's host-call answers, recorded for a replay of a poison
//!   event or answered from one (ADR 49).
//! - [`wasi`]: the inert WASI a toolchain's output may import.
//! - [`instance`]: a component instance and its calls, with CPU deadlines and
//!   memory limits; [`native`]: the same calls on a natively compiled projection.
//! - [`decider`]: a decider component's calls (`evolve`, `decide`), under
//!   the same limits; [`sink`]: a sink component's (`describe-sink`,
//!   `transform`).

mod bindings;
pub mod caps;
pub mod decider;
mod emit;
pub mod emitter;
mod engine;
pub mod instance;
mod kv;
mod log;
pub mod native;
pub mod sink;
mod sql;
pub mod tape;
pub mod wasi;

pub use caps::{Access, Capabilities};
pub use engine::{Engine, EpochTicker};
pub use instance::{Guest, GuestFailure};
