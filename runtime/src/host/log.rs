//! `reel:projection/log` for component instances.

use super::bindings::reel::projection::log::{Host, Level};
use super::instance::InstanceState;

impl Host for InstanceState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => guest_sdk::Level::Trace,
            Level::Debug => guest_sdk::Level::Debug,
            Level::Info => guest_sdk::Level::Info,
            Level::Warn => guest_sdk::Level::Warn,
            Level::Error => guest_sdk::Level::Error,
        };
        match self.caps() {
            Ok(caps) => caps.log(level, &message),
            Err(_) => tracing::info!(target: "reel::guest", "{message}"),
        }
        Ok(())
    }
}

impl super::bindings::types::Host for InstanceState {}
