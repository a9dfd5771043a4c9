//! Running a decider component (the `decider` world): `describe`, `evolve`
//! and `decide` with the same CPU deadline and memory limit as a
//! projection's calls. A decider imports only `log` (and the inert WASI):
//! it has no capabilities, so its instances need no namespace.

use wasmtime::Store;
use wasmtime::component::Component;

use reel_model::Event;

use super::bindings::decider::{Decider, DeciderPre};
use super::engine::ticks;
use super::instance::{GuestFailure, InstanceState, classify, new_store};
use crate::config::Limits;

pub use super::bindings::decider::reel::projection::decider_types::{Command, DeciderManifest, NewEvent, Rejection};

/// A compiled decider component, linked and ready to instantiate.
#[derive(Clone)]
pub struct DeciderCode {
    pre: DeciderPre<InstanceState>,
}

impl DeciderCode {
    /// Whether `component` is a decider: it exports `decide` (a projection
    /// exports `handle`).
    pub fn is_decider(engine: &super::Engine, component: &Component) -> bool {
        component.component_type().exports(engine.wasmtime()).any(|(name, _)| name == "decide")
    }

    /// Link `component` against reel's imports as a decider.
    pub fn link(engine: &super::Engine, component: &Component) -> wasmtime::Result<Self> {
        let pre = engine.linker().instantiate_pre(component)?;
        Ok(Self { pre: DeciderPre::new(pre)? })
    }
}

/// A decider instance. After a failure other than a rejection it must be
/// dropped: its memory may be in any state.
pub struct WasmDecider {
    store: Store<InstanceState>,
    bindings: Decider,
    /// `batch_timeout` is each call's CPU deadline.
    limits: Limits,
}

impl WasmDecider {
    /// Instantiate `code` (named `name` in its log lines).
    pub fn new(code: &DeciderCode, name: &str, limits: &Limits) -> Result<Self, GuestFailure> {
        let mut store = new_store(code.pre.engine(), name, None, limits);
        store.set_epoch_deadline(ticks(limits.batch_timeout));
        match code.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Self { store, bindings, limits: limits.clone() }),
            Err(e) => Err(classify(&e, &mut store, limits.batch_timeout)),
        }
    }

    /// Ask a fresh instance of `code` for its manifest.
    pub fn describe(code: &DeciderCode, name_hint: &str, limits: &Limits) -> Result<DeciderManifest, GuestFailure> {
        let mut decider = Self::new(code, name_hint, limits)?;
        decider.call(|b, s| b.call_describe(s))
    }

    fn call<T>(
        &mut self,
        f: impl FnOnce(&Decider, &mut Store<InstanceState>) -> wasmtime::Result<T>,
    ) -> Result<T, GuestFailure> {
        self.store.set_epoch_deadline(ticks(self.limits.batch_timeout));
        f(&self.bindings, &mut self.store).map_err(|e| classify(&e, &mut self.store, self.limits.batch_timeout))
    }

    /// The state (JSON text) after `events`, from `state`.
    pub fn evolve(&mut self, state: Option<&str>, events: &[Event]) -> Result<String, GuestFailure> {
        self.call(|b, s| b.call_evolve(s, state, events))?.map_err(|e| {
            let at = events.first().map(|e| format!("events from version {} of `{}`: ", e.version, e.stream_id));
            GuestFailure::Rejected { position: None, message: format!("evolve: {}{e}", at.unwrap_or_default()) }
        })
    }

    /// The events `command` produces in `state`, or the decider's rejection.
    pub fn decide(
        &mut self,
        command: &Command,
        state: Option<&str>,
    ) -> Result<Result<Vec<NewEvent>, Rejection>, GuestFailure> {
        self.call(|b, s| b.call_decide(s, command, state))
    }
}
