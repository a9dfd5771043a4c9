//! The ground floor of reel: the types every part of it shares, on the host
//! and in guests.
//!
//! - [`Event`]: one committed event, as a projection receives it, as a dead
//!   letter keeps it ([`DeadLetter`]) and as every HTTP route returns it.
//! - [`Cursor`]: how far a reader has read the log, and its opaque token
//!   form for resume tokens.
//! - [`time`]: timestamps as reel hands them out (RFC 3339, UTC, µs).
//! - [`Value`], [`Rows`], [`SqlError`]: what crosses the `sql` interface.
//! - [`Manifest`], [`OnError`]: what a projection declares, and its checks.
//! - [`Error`], [`HandleError`]: what a projection reports.
//! - [`Emitted`], [`Emits`], [`Timer`]: what a reactor emits and declares;
//!   [`Emissions`]: a reactor batch's output as storage and the log take it.
//!
//! It depends on serde alone, so it compiles for `wasm32` as well (the guest
//! SDK re-exports it). With the `host` feature, the types of the `types`
//! interface also derive wasmtime's component traits: the host's generated
//! bindings use them as they are (ADR 18).
#![deny(missing_docs)]

mod cursor;
mod emission;
mod emit;
mod error;
mod event;
mod manifest;
pub mod time;
mod value;

pub use cursor::{Cursor, CursorTokenError};
pub use emission::{Emission, Emissions, Forwarded, TimerChange};
pub use emit::{Emits, Emitted, Timer};
pub use error::{Error, HandleError, Result, SqlError};
pub use event::{DeadLetter, Event};
pub use manifest::{Manifest, OnError, PROJECTION_NAME_RULE, is_projection_name};
pub use value::{FromValue, Row, Rows, Value};
