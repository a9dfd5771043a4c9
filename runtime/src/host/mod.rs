//! The guest side of a worker: the wasmtime engine, the capabilities a
//! projection imports, and the projections it runs (components, or Rust
//! projections compiled natively).
//!
//! - [`caps`]: per-instance state bound to the projection's namespace; every
//!   import goes through it, so limits and read-only mode hold for both
//!   component and native guests.
//! - `kv`, `sql`, `log`: the generated import traits, one file each.
//! - [`wasi`]: the inert WASI a toolchain's output may import.
//! - [`instance`]: a component instance and its calls, with CPU deadlines and
//!   memory limits; [`native`]: the same calls on a natively compiled projection.

pub mod caps;
mod engine;
pub mod instance;
mod kv;
mod log;
pub mod native;
mod program;
mod sql;
pub mod wasi;

#[allow(unsafe_code, missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "projection",
        imports: { default: trappable },
    });
}

pub use bindings::reel::projection::types::Event;
pub use caps::{Capabilities, Mode};
pub use engine::{Engine, EpochTicker};
pub use instance::{Guest, GuestFailure, Manifest, OnError};
pub use program::Program;

impl guest_sdk::EventFields for Event {
    fn position(&self) -> i64 {
        self.position
    }
    fn stream_id(&self) -> &str {
        &self.stream_id
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn data(&self) -> &str {
        &self.data
    }
    fn metadata(&self) -> &str {
        &self.metadata
    }
    fn occurred_at(&self) -> &str {
        &self.occurred_at
    }
}
