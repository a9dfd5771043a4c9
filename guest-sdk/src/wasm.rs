//! The component side: bindings to the `reel:projection` world and the glue
//! the [`export!`](crate::export) macro expands to.

use crate::{Host, Level, Projection, RawEvent, Rows, SqlError, Value};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "projection",
        pub_export_macro: true,
        export_macro_name: "__export_projection",
        default_bindings_module: "reel_guest_sdk::wasm::bindings",
        runtime_path: "::reel_guest_sdk::wasm::wit_bindgen::rt",
        with: {
            "reel:projection/types@0.1.1/event": crate::RawEvent,
            "reel:projection/types@0.1.1/manifest": crate::Manifest,
            "reel:projection/types@0.1.1/on-error": crate::OnError,
            "reel:projection/types@0.1.1/error": crate::Error,
            "reel:projection/types@0.1.1/handle-error": crate::HandleError,
            "reel:projection/sql@0.1.1/value": crate::Value,
            "reel:projection/sql@0.1.1/rows": crate::Rows,
            "reel:projection/sql@0.1.1/sql-error": crate::SqlError,
            "reel:projection/log@0.1.1/level": crate::Level,
        },
    });
}

/// Bindings to the `reel:projection/decider` world: its own types, and the
/// `types` and `log` interfaces shared with the projection bindings above.
#[doc(hidden)]
pub mod decider_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "decider",
        pub_export_macro: true,
        export_macro_name: "__export_decider",
        default_bindings_module: "reel_guest_sdk::wasm::decider_bindings",
        runtime_path: "::reel_guest_sdk::wasm::wit_bindgen::rt",
        with: {
            "reel:projection/types@0.1.1/event": crate::RawEvent,
            "reel:projection/types@0.1.1/manifest": crate::Manifest,
            "reel:projection/types@0.1.1/on-error": crate::OnError,
            "reel:projection/types@0.1.1/error": crate::Error,
            "reel:projection/types@0.1.1/handle-error": crate::HandleError,
            "reel:projection/log@0.1.1/level": crate::Level,
            "reel:projection/decider-types@0.1.1/decider-manifest": crate::DeciderManifest,
            "reel:projection/decider-types@0.1.1/command": crate::RawCommand,
            "reel:projection/decider-types@0.1.1/new-event": crate::NewEvent,
            "reel:projection/decider-types@0.1.1/rejection": crate::Rejection,
        },
    });
}

/// Bindings to the `reel:projection/sink` world: its own types (converted
/// from the SDK's in [`sink`]), and `types` and `log` shared with the
/// projection bindings above.
#[doc(hidden)]
pub mod sink_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sink",
        pub_export_macro: true,
        export_macro_name: "__export_sink",
        default_bindings_module: "reel_guest_sdk::wasm::sink_bindings",
        runtime_path: "::reel_guest_sdk::wasm::wit_bindgen::rt",
        with: {
            "reel:projection/types@0.1.1/event": crate::RawEvent,
            "reel:projection/types@0.1.1/manifest": crate::Manifest,
            "reel:projection/types@0.1.1/on-error": crate::OnError,
            "reel:projection/types@0.1.1/error": crate::Error,
            "reel:projection/types@0.1.1/handle-error": crate::HandleError,
            "reel:projection/log@0.1.1/level": crate::Level,
        },
    });
}

/// The sink world's glue: the SDK's types as the bindings'.
#[doc(hidden)]
pub mod sink {
    use super::sink_bindings::reel::projection::sink_types as wit;
    use crate::sink::{Broker, Message, Sink, SinkManifest};

    #[doc(hidden)]
    pub fn describe<S: Sink>() -> wit::SinkManifest {
        let SinkManifest { name, version, event_types, stream_prefixes, broker, subject, exchange, transform } =
            S::describe();
        let broker = match broker {
            Broker::Nats => wit::Broker::Nats,
            Broker::Amqp => wit::Broker::Amqp,
        };
        wit::SinkManifest { name, version, event_types, stream_prefixes, broker, subject, exchange, transform }
    }

    #[doc(hidden)]
    pub fn transform<S: Sink>(event: crate::RawEvent) -> Result<Vec<wit::Message>, crate::Error> {
        let made = S::transform(&event)?;
        Ok(made
            .into_iter()
            .map(|Message { subject, headers, body }| wit::Message {
                subject,
                headers: headers.into_iter().map(|(name, value)| wit::Header { name, value }).collect(),
                body,
            })
            .collect())
    }
}

pub use bindings::Guest;
#[doc(hidden)]
pub use wit_bindgen;

use bindings::reel::projection::{kv, log, sql};

/// Manifest type of the world's `describe`.
pub type WitManifest = crate::Manifest;
/// Error type of the world's `init` and `query`.
pub type WitError = crate::Error;
/// Event type of the world's `handle`.
pub type WitEvent = crate::RawEvent;
/// Error type of the world's `handle`.
pub type WitHandleError = crate::HandleError;

/// The world's imports as a [`Host`].
struct Imports;

impl Host for Imports {
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        kv::get(key)
    }

    fn kv_set(&mut self, key: &str, value: Vec<u8>) {
        kv::set(key, &value);
    }

    fn kv_delete(&mut self, key: &str) {
        kv::delete(key);
    }

    fn kv_scan(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, Vec<u8>)> {
        kv::scan(prefix, after, limit).into_iter().map(|e| (e.key, e.value)).collect()
    }

    fn sql_execute(&mut self, statement: &str, params: Vec<Value>) {
        sql::execute(statement, &params);
    }

    fn sql_query(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
        sql::query(statement, &params)
    }

    fn sql_dialect(&mut self) -> String {
        sql::dialect()
    }

    fn log(&mut self, level: Level, message: &str) {
        log::log(level, message);
    }
}

#[doc(hidden)]
pub fn describe<P: Projection>() -> crate::Manifest {
    crate::native::describe::<P>()
}

#[doc(hidden)]
pub fn init<P: Projection>() -> Result<(), crate::Error> {
    crate::native::init::<P>(&mut Imports)
}

#[doc(hidden)]
pub fn handle<P: Projection>(events: Vec<RawEvent>) -> Result<(), crate::HandleError> {
    crate::native::handle::<P, _>(&mut Imports, &events)
}

#[doc(hidden)]
pub fn query<P: Projection>(name: &str, args: &str) -> Result<String, crate::Error> {
    crate::native::query::<P>(&mut Imports, name, args)
}

/// The `reactor` world: the projection's imports and exports plus `emit`,
/// `timers` and `describe-emits`. Its own bindings (generated with the
/// export macro public, so a projection's component carries only the
/// imports of this world, which wit-component drops when unused).
#[doc(hidden)]
pub mod reactor {
    use crate::{Emitted, Host, Level, Projection, RawEvent, Rows, SqlError, Timer, Value};

    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "reactor",
            pub_export_macro: true,
            export_macro_name: "__export_reactor",
            default_bindings_module: "reel_guest_sdk::wasm::reactor::bindings",
            runtime_path: "::reel_guest_sdk::wasm::wit_bindgen::rt",
            with: {
                "reel:projection/types@0.1.1/event": crate::RawEvent,
                "reel:projection/types@0.1.1/manifest": crate::Manifest,
                "reel:projection/types@0.1.1/on-error": crate::OnError,
                "reel:projection/types@0.1.1/error": crate::Error,
                "reel:projection/types@0.1.1/handle-error": crate::HandleError,
                "reel:projection/kv@0.1.1": crate::wasm::bindings::reel::projection::kv,
                "reel:projection/sql@0.1.1": crate::wasm::bindings::reel::projection::sql,
                "reel:projection/log@0.1.1": crate::wasm::bindings::reel::projection::log,
                "reel:projection/emit@0.1.1/emitted": crate::Emitted,
                "reel:projection/emit@0.1.1/emits": crate::Emits,
                "reel:projection/timers@0.1.1/timer": crate::Timer,
            },
        });
    }

    pub use bindings::Guest;
    use bindings::reel::projection::{emit, timers};

    /// The reactor world's imports as a [`Host`]: the projection's, plus
    /// `emit` and `timers`.
    struct Imports;

    impl Host for Imports {
        fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
            super::Imports.kv_get(key)
        }

        fn kv_set(&mut self, key: &str, value: Vec<u8>) {
            super::Imports.kv_set(key, value);
        }

        fn kv_delete(&mut self, key: &str) {
            super::Imports.kv_delete(key);
        }

        fn kv_scan(&mut self, prefix: &str, after: Option<&str>, limit: u32) -> Vec<(String, Vec<u8>)> {
            super::Imports.kv_scan(prefix, after, limit)
        }

        fn sql_execute(&mut self, statement: &str, params: Vec<Value>) {
            super::Imports.sql_execute(statement, params);
        }

        fn sql_query(&mut self, statement: &str, params: Vec<Value>) -> Result<Rows, SqlError> {
            super::Imports.sql_query(statement, params)
        }

        fn sql_dialect(&mut self) -> String {
            super::Imports.sql_dialect()
        }

        fn log(&mut self, level: Level, message: &str) {
            super::Imports.log(level, message);
        }

        fn emit(&mut self, event: Emitted) {
            emit::emit(&event);
        }

        fn schedule(&mut self, timer: Timer) {
            timers::schedule(&timer);
        }

        fn cancel_timer(&mut self, key: &str) {
            timers::cancel(key);
        }
    }

    #[doc(hidden)]
    pub fn init<P: Projection>() -> Result<(), crate::Error> {
        crate::native::init::<P>(&mut Imports)
    }

    #[doc(hidden)]
    pub fn handle<P: Projection>(events: Vec<RawEvent>) -> Result<(), crate::HandleError> {
        crate::native::handle::<P, _>(&mut Imports, &events)
    }

    #[doc(hidden)]
    pub fn query<P: Projection>(name: &str, args: &str) -> Result<String, crate::Error> {
        crate::native::query::<P>(&mut Imports, name, args)
    }
}
