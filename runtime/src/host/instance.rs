//! Running a projection: the [`Guest`] interface the worker calls, and its
//! component implementation with CPU deadlines and memory limits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use reel_model::{Event, Manifest};

use super::bindings::{self, ProjectionPre};
use super::caps::{Capabilities, Fault};
use super::engine::ticks;
use super::wasi;
use crate::config::Limits;
use crate::store::StoreError;

/// Why a call into a projection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuestFailure {
    /// The projection returned an error (for the event at `position`, when
    /// handling a batch).
    #[error("{}{message}", position.map(|p| format!("event {p}: ")).unwrap_or_default())]
    Rejected {
        /// The event it failed on.
        position: Option<i64>,
        /// Its message.
        message: String,
    },
    /// The projection trapped (panic, unreachable, stack overflow, ...).
    #[error("trapped: {0}")]
    Trapped(String),
    /// The call ran past its CPU deadline.
    #[error("timed out: still running after {0:?} (the batch deadline)")]
    Timeout(Duration),
    /// The instance grew past its memory limit.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// The projection broke one of reel's limits or rules.
    #[error("refused: {0}")]
    Refused(String),
    /// The read-model database failed; not the projection's fault.
    #[error("{0}")]
    Store(StoreError),
}

impl GuestFailure {
    /// True when the projection itself is to blame (retrying the same events
    /// will fail the same way); false for database trouble.
    pub fn is_projection_fault(&self) -> bool {
        match self {
            GuestFailure::Store(e) => e.is_projection_fault(),
            _ => true,
        }
    }

    /// True when the call ran out of time (its CPU deadline, or its SQL's):
    /// the projection may be too slow, or the machine or the database stalled.
    pub fn is_deadline(&self) -> bool {
        matches!(self, GuestFailure::Timeout(_) | GuestFailure::Store(StoreError::Deadline(_)))
    }

    /// True when the instance must be discarded (its state is unknown).
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, GuestFailure::Rejected { .. } | GuestFailure::Store(_))
    }
}

impl GuestFailure {
    /// The projection returned `error` (for the event at `position`).
    pub fn rejected(position: Option<i64>, error: reel_model::Error) -> Self {
        GuestFailure::Rejected { position, message: error.to_string() }
    }
}

impl From<StoreError> for GuestFailure {
    fn from(e: StoreError) -> Self {
        GuestFailure::Store(e)
    }
}

/// A projection the worker can call: a component instance or native code.
pub trait Guest: Send {
    /// The manifest it declared.
    fn manifest(&self) -> &Manifest;
    /// Create tables (inside the open transaction).
    fn init(&mut self) -> Result<(), GuestFailure>;
    /// Apply a batch (inside the open transaction).
    fn handle(&mut self, events: &[Event]) -> Result<(), GuestFailure>;
    /// Run a custom read.
    fn query(&mut self, name: &str, args: &str) -> Result<String, GuestFailure>;
    /// Its capabilities (for the worker's begin/commit/rollback).
    fn caps(&mut self) -> &mut Capabilities;
    /// Give the capabilities back (to build a fresh instance on them).
    fn into_caps(self: Box<Self>) -> Capabilities;
}

/// An instance that failed to start, and the capabilities it was given.
pub type Unstarted = Box<(GuestFailure, Capabilities)>;

/// A compiled component ready to instantiate.
#[derive(Clone)]
pub struct Code {
    pre: ProjectionPre<InstanceState>,
    /// The same component as a reactor, when it exports `describe-emits`
    /// (it runs through `pre`: a reactor has the projection's exports).
    reactor: Option<bindings::reactor::ReactorPre<InstanceState>>,
}

impl Code {
    /// Link `component` against reel's imports; fails when it needs
    /// something reel does not provide (a component for another world).
    pub fn link(engine: &super::Engine, component: &wasmtime::component::Component) -> wasmtime::Result<Self> {
        let pre = engine.linker().instantiate_pre(component)?;
        let reactor = bindings::reactor::ReactorPre::new(pre.clone()).ok();
        Ok(Self { pre: ProjectionPre::new(pre)?, reactor })
    }

    /// Whether the component is a reactor (exports `describe-emits`).
    pub fn is_reactor(&self) -> bool {
        self.reactor.is_some()
    }
}

/// Recent lines a guest wrote to stderr (panic messages end up here).
type RecentStderr = Arc<Mutex<VecDeque<String>>>;

/// The data of a component instance's store.
pub struct InstanceState {
    /// `None` while only `describe` may run.
    caps: Option<Capabilities>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    stderr: RecentStderr,
}

impl InstanceState {
    pub(super) fn caps(&mut self) -> Result<&mut Capabilities, Fault> {
        self.caps.as_mut().ok_or_else(|| Fault::Refused("`describe` must not use kv or sql".into()))
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A component instance.
pub struct WasmGuest {
    store: Store<InstanceState>,
    bindings: bindings::Projection,
    manifest: Manifest,
    code: Code,
    /// Its limits; `batch_timeout` is each call's CPU deadline.
    limits: Limits,
    /// A host call ended the last call (a fault, e.g. the database gone or
    /// the batch's deadline passed): the instance cannot be entered again,
    /// so the next call runs on a fresh one over the same capabilities.
    spent: bool,
}

impl WasmGuest {
    /// Instantiate `code` and ask it for its manifest (no capabilities yet).
    pub fn describe(code: &Code, name_hint: &str, limits: &Limits) -> Result<Manifest, GuestFailure> {
        let (mut store, bindings) = start(code, name_hint, None, limits).map_err(|failed| failed.0)?;
        bindings.call_describe(&mut store).map_err(|e| classify(&e, &mut store, limits.batch_timeout))
    }

    /// A reactor's `describe-emits` (`None` for a projection).
    pub fn describe_emits(
        code: &Code,
        name_hint: &str,
        limits: &Limits,
    ) -> Result<Option<reel_model::Emits>, GuestFailure> {
        let Some(reactor) = &code.reactor else { return Ok(None) };
        let mut store = new_store(code.pre.engine(), name_hint, None, limits);
        store.set_epoch_deadline(ticks(limits.batch_timeout));
        let emits = reactor
            .instantiate(&mut store)
            .and_then(|bindings| bindings.call_describe_emits(&mut store))
            .map_err(|e| classify(&e, &mut store, limits.batch_timeout))?;
        Ok(Some(reel_model::Emits { stream_prefix: emits.stream_prefix }))
    }

    /// Instantiate `code` over `caps`.
    pub fn new(code: &Code, manifest: Manifest, caps: Capabilities, limits: &Limits) -> Result<Self, Unstarted> {
        match start(code, &manifest.name, Some(caps), limits) {
            Ok((store, bindings)) => {
                Ok(Self { store, bindings, manifest, code: code.clone(), limits: limits.clone(), spent: false })
            }
            Err(failed) => {
                let (e, caps) = *failed;
                Err(Box::new((e, caps.expect("given above"))))
            }
        }
    }

    fn call<T>(
        &mut self,
        f: impl FnOnce(&bindings::Projection, &mut Store<InstanceState>) -> wasmtime::Result<T>,
    ) -> Result<T, GuestFailure> {
        if self.spent {
            self.renew()?;
        }
        self.store.set_epoch_deadline(ticks(self.limits.batch_timeout));
        let result = f(&self.bindings, &mut self.store);
        let fault = self.store.data_mut().caps.as_mut().and_then(Capabilities::take_fault);
        match (result, fault) {
            (result, Some(fault)) => {
                self.spent = result.is_err();
                Err(fault_failure(fault))
            }
            (Ok(value), None) => Ok(value),
            (Err(e), None) => Err(classify(&e, &mut self.store, self.limits.batch_timeout)),
        }
    }

    /// Replace the spent instance with a fresh one over its capabilities.
    fn renew(&mut self) -> Result<(), GuestFailure> {
        let caps = self.store.data_mut().caps.take();
        match start(&self.code, &self.manifest.name, caps, &self.limits) {
            Ok((store, bindings)) => {
                (self.store, self.bindings, self.spent) = (store, bindings, false);
                Ok(())
            }
            Err(failed) => {
                let (e, caps) = *failed;
                self.store.data_mut().caps = caps;
                Err(e)
            }
        }
    }
}

pub(super) fn new_store(
    engine: &wasmtime::Engine,
    projection: &str,
    caps: Option<Capabilities>,
    limits: &Limits,
) -> Store<InstanceState> {
    let stderr = RecentStderr::default();
    let state = InstanceState {
        caps,
        wasi: wasi::inert_ctx(projection, Arc::clone(&stderr)),
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .instances(64)
            .tables(64)
            .memories(16)
            .trap_on_grow_failure(true)
            .build(),
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    store
}

/// A store and the instance in it.
type Started = (Store<InstanceState>, bindings::Projection);

/// A fresh store over `caps` with `code` instantiated in it (within the
/// CPU deadline); if that fails, the capabilities come back with the error.
fn start(
    code: &Code,
    projection: &str,
    caps: Option<Capabilities>,
    limits: &Limits,
) -> Result<Started, Box<(GuestFailure, Option<Capabilities>)>> {
    let mut store = new_store(code.pre.engine(), projection, caps, limits);
    store.set_epoch_deadline(ticks(limits.batch_timeout));
    match code.pre.instantiate(&mut store) {
        Ok(bindings) => Ok((store, bindings)),
        Err(e) => {
            let failure = classify(&e, &mut store, limits.batch_timeout);
            Err(Box::new((failure, store.into_data().caps)))
        }
    }
}

fn fault_failure(fault: Fault) -> GuestFailure {
    match fault {
        Fault::Store(e) => GuestFailure::Store(e),
        Fault::Refused(m) => GuestFailure::Refused(m),
    }
}

/// Turn a wasmtime error into what happened, with the guest's last words.
pub(super) fn classify(error: &wasmtime::Error, store: &mut Store<InstanceState>, timeout: Duration) -> GuestFailure {
    if let Some(fault) = store.data_mut().caps.as_mut().and_then(Capabilities::take_fault) {
        return fault_failure(fault);
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return GuestFailure::Timeout(timeout);
    }
    let text = format!("{error:#}");
    let stderr: Vec<String> = store.data().stderr.lock().map(|l| l.iter().cloned().collect()).unwrap_or_default();
    let said = if stderr.is_empty() { String::new() } else { format!(" (stderr: {})", stderr.join(" | ")) };
    if text.contains("growing memory") || stderr.iter().any(|l| l.contains("memory allocation of")) {
        return GuestFailure::OutOfMemory(format!("{text}{said}"));
    }
    GuestFailure::Trapped(format!("{text}{said}"))
}

impl Guest for WasmGuest {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn init(&mut self) -> Result<(), GuestFailure> {
        self.call(|b, s| b.call_setup(s))?.map_err(|e| GuestFailure::rejected(None, e))
    }

    fn handle(&mut self, events: &[Event]) -> Result<(), GuestFailure> {
        self.call(|b, s| b.call_handle(s, events))?.map_err(|e| GuestFailure::rejected(Some(e.position), e.error))
    }

    fn query(&mut self, name: &str, args: &str) -> Result<String, GuestFailure> {
        self.call(|b, s| b.call_query(s, name, args))?.map_err(|e| GuestFailure::rejected(None, e))
    }

    fn caps(&mut self) -> &mut Capabilities {
        self.store.data_mut().caps.as_mut().expect("a worker instance has capabilities")
    }

    fn into_caps(self: Box<Self>) -> Capabilities {
        self.store.into_data().caps.expect("a worker instance has capabilities")
    }
}
