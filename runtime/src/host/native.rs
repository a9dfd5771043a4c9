//! Rust projections compiled into the host: the same SDK calls a component
//! makes, against the same capabilities (used to measure what WebAssembly
//! costs, and to embed projections).

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

use guest_sdk::Projection;

use reel_model::{Event, Manifest};

use super::caps::{Capabilities, Fault};
use super::instance::{Guest, GuestFailure};

/// A [`Projection`] running natively.
pub struct NativeGuest<P> {
    caps: Capabilities,
    manifest: Manifest,
    projection: PhantomData<fn() -> P>,
}

impl<P: Projection> NativeGuest<P> {
    /// `P` over `caps`.
    pub fn new(caps: Capabilities) -> Self {
        Self { caps, manifest: guest_sdk::native::describe::<P>(), projection: PhantomData }
    }

    fn call<T>(&mut self, f: impl FnOnce(&mut Capabilities) -> T) -> Result<T, GuestFailure> {
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut self.caps)));
        if let Some(fault) = self.caps.take_fault() {
            return Err(match fault {
                Fault::Store(e) => GuestFailure::Store(e),
                Fault::Refused(m) => GuestFailure::Refused(m),
            });
        }
        result.map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            GuestFailure::Trapped(format!("panicked: {message}"))
        })
    }
}

impl<P: Projection> Guest for NativeGuest<P> {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn init(&mut self) -> Result<(), GuestFailure> {
        self.call(|caps| guest_sdk::native::init::<P>(caps))?.map_err(|e| GuestFailure::rejected(None, e))
    }

    fn handle(&mut self, events: &[Event]) -> Result<(), GuestFailure> {
        self.call(|caps| guest_sdk::native::handle::<P, Event>(caps, events))?
            .map_err(|e| GuestFailure::rejected(Some(e.position), e.error))
    }

    fn query(&mut self, name: &str, args: &str) -> Result<String, GuestFailure> {
        self.call(|caps| guest_sdk::native::query::<P>(caps, name, args))?.map_err(|e| GuestFailure::rejected(None, e))
    }

    fn caps(&mut self) -> &mut Capabilities {
        &mut self.caps
    }

    fn into_caps(self: Box<Self>) -> Capabilities {
        self.caps
    }
}
