//! Write [reel](https://github.com/reel-rs/reel) projections in Rust.
//!
//! A projection folds events into a read model. With this crate it is a type
//! implementing [`Projection`]: typed events decoded with serde, an `init` that
//! creates tables, a `handle` per event, and optional custom `query` reads. The
//! [`export!`] macro turns it into a WebAssembly component for reel's
//! `reel:projection` world; the same type also runs natively through
//! [`native`] (reel's benchmarks compare the two with identical logic).
//!
//! Projections keep no state of their own: everything lives in the key-value
//! store and SQL tables reached through [`Context`], which commit atomically with
//! reel's checkpoint. An instance may be discarded and recreated at any batch.
//!
//! # Example
//!
//! ```
//! use reel_guest_sdk::{Context, Envelope, Manifest, Projection, Result};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! #[serde(tag = "type", content = "data")]
//! enum Event {
//!     #[serde(rename = "counter.added")]
//!     Added { amount: i64 },
//! }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Total {
//!     sum: i64,
//! }
//!
//! struct Counter;
//!
//! impl Projection for Counter {
//!     type Event = Event;
//!
//!     fn manifest() -> Manifest {
//!         Manifest::new("counter", "1").event_types(["counter.added"])
//!     }
//!
//!     fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Event>) -> Result<()> {
//!         let Event::Added { amount } = event.data;
//!         let key = format!("total/{}", event.stream_id);
//!         let mut total: Total = ctx.kv().get_json(&key)?.unwrap_or_default();
//!         total.sum += amount;
//!         ctx.kv().set_json(&key, &total)
//!     }
//! }
//!
//! // In the projection's crate (built with `--target wasm32-wasip2`):
//! // reel_guest_sdk::export!(Counter);
//!
//! // The same logic runs natively against any `Host`, here an in-memory one:
//! let mut host = reel_guest_sdk::native::MemoryHost::default();
//! let events = vec![reel_guest_sdk::RawEvent {
//!     position: 1,
//!     stream_id: "c-1".into(),
//!     version: 1,
//!     event_type: "counter.added".into(),
//!     data: r#"{"amount": 5}"#.into(),
//!     metadata: "{}".into(),
//!     occurred_at: "2026-11-27T10:00:00.000000Z".into(),
//! }];
//! reel_guest_sdk::native::handle::<Counter, _>(&mut host, &events).unwrap();
//! assert_eq!(host.kv.get("total/c-1").unwrap(), br#"{"sum":5}"#);
//! ```
#![deny(missing_docs)]

// Lets generated bindings name this crate the same way inside it and in users.
#[cfg(target_arch = "wasm32")]
extern crate self as reel_guest_sdk;

mod context;
pub mod decider;
mod event;
pub mod native;
pub mod sink;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

pub use context::{Context, Host, Kv, Level, Sql};
pub use decider::{Command, Decider, DeciderManifest, NewEvent, RawCommand, Rejection};
pub use event::{Envelope, EventFields, RawEvent};
pub use sink::{Broker, Message, Sink, SinkManifest};
// The types reel shares with its projections (events, values, manifests).
pub use reel_model::{
    Emits, Emitted, Error, FromValue, HandleError, Manifest, OnError, Result, Row, Rows, SqlError, Timer, Value,
};

/// Re-exported so projections need not depend on serde_json themselves.
pub use serde_json;

/// A projection: folds events into a read model kept in kv and sql.
///
/// All methods are associated functions: a projection has no in-memory state
/// that would be lost when reel discards an instance.
pub trait Projection {
    /// The events this projection understands, decoded with serde from the
    /// event type and its JSON payload as if they were the adjacently tagged
    /// object `{"type": <event type>, "data": <payload>}`. Use an enum with
    /// `#[serde(tag = "type", content = "data")]` and a `rename` per event
    /// type, or `serde_json::Value` for untyped access.
    type Event: serde::de::DeserializeOwned;

    /// Name, version and subscriptions.
    fn manifest() -> Manifest;

    /// Create tables and indexes; runs once per version, before the first event.
    fn init(ctx: &mut Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    /// Apply one event. Returning an error fails the whole batch.
    fn handle(ctx: &mut Context<'_>, event: Envelope<'_, Self::Event>) -> Result<()>;

    /// Apply a batch of events, in position order. The default decodes each
    /// event and calls [`handle`](Self::handle), stopping at the first error.
    ///
    /// Override it to fold the batch before writing: a row that several events
    /// of the batch touch is then written once, and many rows go in one
    /// multi-row statement, which on PostgreSQL costs the server a fraction of
    /// a statement per event (see `projections/order-summaries`). Decode with
    /// [`EventFields::envelope`], which names the failing event's position.
    /// The batch's writes still commit with the checkpoint, and a write that
    /// fails the batch is narrowed down to its event by reel's bisection.
    /// The fold must give the read model `handle` would give for any split of
    /// the events into batches: reel sizes batches as it sees fit (one event
    /// when it narrows down a failure).
    fn handle_batch<E: EventFields>(ctx: &mut Context<'_>, events: &[E]) -> Result<(), HandleError> {
        for raw in events {
            let event = raw.envelope::<Self::Event>()?;
            Self::handle(ctx, event).map_err(|error| HandleError { position: raw.position(), error })?;
        }
        Ok(())
    }

    /// A custom read: `name` from the URL, `args` parsed from the `args` query
    /// parameter (`null` when absent). Runs on a read-only view.
    fn query(ctx: &mut Context<'_>, name: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        let _ = (ctx, args);
        Err(Error::Failed(format!("unknown query `{name}`")))
    }
}

/// A reactor: a [`Projection`] that also emits events
/// ([`Context::emit`]) and sets timers ([`Context::schedule`]) while it
/// handles a batch. reel appends what it emits when the batch commits,
/// exactly once, keyed by (name, cause position, index); a replay, a rebuild
/// or a new version does not append it again. Export it with
/// [`export_reactor!`].
pub trait Reactor: Projection {
    /// The stream prefix every emitted event's stream starts with.
    fn emits() -> Emits;
}

/// Export a [`Projection`] as the component's `reel:projection` world.
///
/// Use it once, at the top level of a crate built with
/// `cargo build --target wasm32-wasip2` and `crate-type = ["cdylib"]`.
/// Outside wasm it expands to nothing, so the crate also builds natively.
#[macro_export]
macro_rules! export {
    ($projection:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ReelExport;
            impl $crate::wasm::Guest for ReelExport {
                fn describe() -> $crate::wasm::WitManifest {
                    $crate::wasm::describe::<$projection>()
                }
                fn setup() -> ::core::result::Result<(), $crate::wasm::WitError> {
                    $crate::wasm::init::<$projection>()
                }
                fn handle(
                    events: ::std::vec::Vec<$crate::wasm::WitEvent>,
                ) -> ::core::result::Result<(), $crate::wasm::WitHandleError> {
                    $crate::wasm::handle::<$projection>(events)
                }
                fn query(
                    name: ::std::string::String,
                    args: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, $crate::wasm::WitError> {
                    $crate::wasm::query::<$projection>(&name, &args)
                }
            }
    $crate::wasm::bindings::__export_projection!(ReelExport with_types_in $crate::wasm::bindings);
        };
    };
}

/// Export a [`Reactor`] as the component's `reel:projection` `reactor` world.
/// Use it instead of [`export!`], once per crate.
#[macro_export]
macro_rules! export_reactor {
    ($reactor:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ReelExport;
            impl $crate::wasm::reactor::Guest for ReelExport {
                fn describe() -> $crate::wasm::WitManifest {
                    $crate::wasm::describe::<$reactor>()
                }
                fn describe_emits() -> $crate::Emits {
                    $crate::native::describe_emits::<$reactor>()
                }
                fn setup() -> ::core::result::Result<(), $crate::wasm::WitError> {
                    $crate::wasm::reactor::init::<$reactor>()
                }
                fn handle(
                    events: ::std::vec::Vec<$crate::wasm::WitEvent>,
                ) -> ::core::result::Result<(), $crate::wasm::WitHandleError> {
                    $crate::wasm::reactor::handle::<$reactor>(events)
                }
                fn query(
                    name: ::std::string::String,
                    args: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, $crate::wasm::WitError> {
                    $crate::wasm::reactor::query::<$reactor>(&name, &args)
                }
            }
    $crate::wasm::reactor::bindings::__export_reactor!(ReelExport with_types_in $crate::wasm::reactor::bindings);
        };
    };
}

/// Export a [`Decider`] as the component's `reel:projection/decider` world.
///
/// Use it once, at the top level of a crate built with
/// `cargo build --target wasm32-wasip2` and `crate-type = ["cdylib"]`;
/// outside wasm it expands to nothing.
#[macro_export]
macro_rules! export_decider {
    ($decider:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ReelDecider;
            impl $crate::wasm::decider_bindings::Guest for ReelDecider {
                fn describe() -> $crate::DeciderManifest {
                    $crate::decider::run::describe::<$decider>()
                }
                fn evolve(
                    state: ::core::option::Option<::std::string::String>,
                    events: ::std::vec::Vec<$crate::RawEvent>,
                ) -> ::core::result::Result<::std::string::String, $crate::Error> {
                    $crate::decider::run::evolve::<$decider, $crate::RawEvent>(state.as_deref(), &events)
                }
                fn decide(
                    command: $crate::RawCommand,
                    state: ::core::option::Option<::std::string::String>,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::NewEvent>, $crate::Rejection> {
                    $crate::decider::run::decide::<$decider>(&command, state.as_deref())
                }
            }
    $crate::wasm::decider_bindings::__export_decider!(ReelDecider with_types_in $crate::wasm::decider_bindings);
        };
    };
}

/// Export a [`Sink`] as the component's `reel:projection/sink` world.
///
/// Use it once, at the top level of a crate built with
/// `cargo build --target wasm32-wasip2` and `crate-type = ["cdylib"]`;
/// outside wasm it expands to nothing.
#[macro_export]
macro_rules! export_sink {
    ($sink:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ReelSink;
            impl $crate::wasm::sink_bindings::Guest for ReelSink {
                fn describe_sink() -> $crate::wasm::sink_bindings::reel::projection::sink_types::SinkManifest {
                    $crate::wasm::sink::describe::<$sink>()
                }
                fn transform(
                    event: $crate::RawEvent,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::wasm::sink_bindings::reel::projection::sink_types::Message>,
                    $crate::Error,
                > {
                    $crate::wasm::sink::transform::<$sink>(event)
                }
            }
    $crate::wasm::sink_bindings::__export_sink!(ReelSink with_types_in $crate::wasm::sink_bindings);
        };
    };
}

/// Build a parameter list (a `Vec<Value>`): `params![order_id, 3, 9.5, None::<i64>]`.
#[macro_export]
macro_rules! params {
    () => { ::std::vec::Vec::<$crate::Value>::new() };
    ($($value:expr),+ $(,)?) => { ::std::vec![$($crate::Value::from($value)),+] };
}
