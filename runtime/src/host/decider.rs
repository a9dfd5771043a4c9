//! Running a decider component (the `decider` world): `describe`, `evolve`
//! and `decide` with the same CPU deadline and memory limit as a
//! projection's calls. A decider imports only `log` (and the inert WASI):
//! it has no capabilities, so its instances need no namespace. A Rust
//! decider can also be compiled into reel ([`DeciderCode::native`]): the
//! benchmarks' baseline, the same calls without WebAssembly.

use wasmtime::Store;
use wasmtime::component::Component;

use reel_model::Event;

use super::bindings::decider::{Decider, DeciderPre};
use super::engine::ticks;
use super::instance::{GuestFailure, InstanceState, classify, new_store};
use crate::config::Limits;

pub use super::bindings::decider::reel::projection::decider_types::{Command, DeciderManifest, NewEvent, Rejection};

/// A compiled decider component, linked and ready to instantiate, or a Rust
/// decider compiled into reel.
#[derive(Clone)]
pub enum DeciderCode {
    /// A component.
    Component(DeciderPre<InstanceState>),
    /// Native code.
    Native(NativeDecider),
}

/// The decider world's calls on a Rust [`guest_sdk::Decider`] compiled into
/// reel, as `export_decider!` makes them in a component.
#[derive(Clone, Copy)]
pub struct NativeDecider {
    describe: fn() -> guest_sdk::DeciderManifest,
    evolve: fn(Option<&str>, &[Event]) -> guest_sdk::Result<String>,
    decide: fn(&guest_sdk::RawCommand, Option<&str>) -> Result<Vec<guest_sdk::NewEvent>, guest_sdk::Rejection>,
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
        Ok(Self::Component(DeciderPre::new(pre)?))
    }

    /// `D` compiled into reel.
    pub fn native<D: guest_sdk::Decider>() -> Self {
        use guest_sdk::decider::run;
        Self::Native(NativeDecider {
            describe: run::describe::<D>,
            evolve: run::evolve::<D, Event>,
            decide: run::decide::<D>,
        })
    }

    /// What a native decider declares (a component's is asked of an
    /// instance: [`WasmDecider::describe`]).
    pub fn native_manifest(native: &NativeDecider) -> DeciderManifest {
        let m = (native.describe)();
        DeciderManifest {
            name: m.name,
            version: m.version,
            stream_prefix: m.stream_prefix,
            command_types: m.command_types,
        }
    }
}

/// A decider instance. After a failure other than a rejection it must be
/// dropped: its memory may be in any state.
pub enum WasmDecider {
    /// A component's instance.
    Component(Box<ComponentDecider>),
    /// Native code: nothing to instantiate.
    Native(NativeDecider),
}

/// A component decider's instance.
pub struct ComponentDecider {
    store: Store<InstanceState>,
    bindings: Decider,
    /// `batch_timeout` is each call's CPU deadline.
    limits: Limits,
}

impl WasmDecider {
    /// Instantiate `code` (named `name` in its log lines).
    pub fn new(code: &DeciderCode, name: &str, limits: &Limits) -> Result<Self, GuestFailure> {
        let pre = match code {
            DeciderCode::Component(pre) => pre,
            DeciderCode::Native(native) => return Ok(Self::Native(*native)),
        };
        let mut store = new_store(pre.engine(), name, None, limits);
        store.set_epoch_deadline(ticks(limits.batch_timeout));
        match pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Self::Component(Box::new(ComponentDecider { store, bindings, limits: limits.clone() }))),
            Err(e) => Err(classify(&e, &mut store, limits.batch_timeout)),
        }
    }

    /// Ask a fresh instance of `code` for its manifest.
    pub fn describe(code: &DeciderCode, name_hint: &str, limits: &Limits) -> Result<DeciderManifest, GuestFailure> {
        if let DeciderCode::Native(native) = code {
            return Ok(DeciderCode::native_manifest(native));
        }
        let mut decider = Self::new(code, name_hint, limits)?;
        decider.call(|b, s| b.call_describe(s))
    }

    fn call<T>(
        &mut self,
        f: impl FnOnce(&Decider, &mut Store<InstanceState>) -> wasmtime::Result<T>,
    ) -> Result<T, GuestFailure> {
        let Self::Component(component) = self else { unreachable!("native deciders are called directly") };
        let ComponentDecider { store, bindings, limits } = &mut **component;
        store.set_epoch_deadline(ticks(limits.batch_timeout));
        f(bindings, store).map_err(|e| classify(&e, store, limits.batch_timeout))
    }

    /// The state (JSON text) after `events`, from `state`.
    pub fn evolve(&mut self, state: Option<&str>, events: &[Event]) -> Result<String, GuestFailure> {
        let evolved = match self {
            Self::Native(native) => native_call(|| (native.evolve)(state, events))?.map_err(|e| e.to_string()),
            Self::Component(_) => self.call(|b, s| b.call_evolve(s, state, events))?.map_err(|e| e.to_string()),
        };
        evolved.map_err(|e| {
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
        let Self::Native(native) = self else {
            return self.call(|b, s| b.call_decide(s, command, state));
        };
        let raw = guest_sdk::RawCommand {
            command_type: command.command_type.clone(),
            stream_id: command.stream_id.clone(),
            data: command.data.clone(),
            metadata: command.metadata.clone(),
        };
        Ok(match native_call(|| (native.decide)(&raw, state))? {
            Ok(events) => Ok(events
                .into_iter()
                .map(|e| NewEvent { event_type: e.event_type, data: e.data, metadata: e.metadata })
                .collect()),
            Err(guest_sdk::Rejection::Rejected(reason)) => Err(Rejection::Rejected(reason)),
            Err(guest_sdk::Rejection::InvalidCommand(reason)) => Err(Rejection::InvalidCommand(reason)),
        })
    }
}

/// A native call; a panic is a trap.
fn native_call<T>(f: impl FnOnce() -> T) -> Result<T, GuestFailure> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        GuestFailure::Trapped(format!("panicked: {message}"))
    })
}
