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
