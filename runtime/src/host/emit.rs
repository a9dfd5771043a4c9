//! `reel:projection/emit` and `reel:projection/timers` for component
//! instances (the `reactor` world).

use super::bindings::reactor::reel::projection::{emit, timers};
use super::instance::InstanceState;

/// The generated record as reel-model's.
pub(super) fn emitted(e: emit::Emitted) -> reel_model::Emitted {
    let emit::Emitted { cause, stream_id, event_type, data, metadata } = e;
    reel_model::Emitted { cause, stream_id, event_type, data, metadata }
}

impl emit::Host for InstanceState {
    fn emit(&mut self, event: emit::Emitted) -> wasmtime::Result<()> {
        Ok(self.caps()?.emit(emitted(event))?)
    }
}

impl timers::Host for InstanceState {
    fn schedule(&mut self, timer: timers::Timer) -> wasmtime::Result<()> {
        let timer = reel_model::Timer { key: timer.key, due: timer.due, event: emitted(timer.event) };
        Ok(self.caps()?.schedule(timer)?)
    }

    fn cancel(&mut self, key: String) -> wasmtime::Result<()> {
        Ok(self.caps()?.cancel_timer(key)?)
    }
}
