//! What a worker runs: a component module, or a Rust projection compiled
//! into the host.

use std::sync::Arc;

use guest_sdk::Projection;

use reel_model::{Emits, Manifest};

use super::Module;
use crate::config::Limits;
use crate::host::Capabilities;
use crate::host::instance::{Guest, Unstarted, WasmGuest};
use crate::host::native::NativeGuest;

/// The code of a projection.
#[derive(Clone)]
pub enum Program {
    /// A component loaded from the modules folder.
    Wasm(Arc<Module>),
    /// A Rust projection compiled into this binary.
    Native {
        /// Its manifest.
        manifest: Manifest,
        /// Builds an instance over capabilities.
        make: fn(Capabilities) -> Box<dyn Guest>,
        /// Its stream prefix, when it is a reactor.
        emits: Option<Emits>,
    },
}

impl Program {
    /// A Rust projection run natively.
    pub fn native<P: Projection + 'static>() -> Self {
        fn make<P: Projection + 'static>(caps: Capabilities) -> Box<dyn Guest> {
            Box::new(NativeGuest::<P>::new(caps))
        }
        Program::Native { manifest: guest_sdk::native::describe::<P>(), make: make::<P>, emits: None }
    }

    /// A Rust reactor run natively.
    pub fn native_reactor<R: guest_sdk::Reactor + 'static>() -> Self {
        fn make<P: Projection + 'static>(caps: Capabilities) -> Box<dyn Guest> {
            Box::new(NativeGuest::<P>::new(caps))
        }
        Program::Native {
            manifest: guest_sdk::native::describe::<R>(),
            make: make::<R>,
            emits: Some(guest_sdk::native::describe_emits::<R>()),
        }
    }

    /// The stream prefix it emits under, when it is a reactor.
    pub fn emits(&self) -> Option<&Emits> {
        match self {
            Program::Wasm(module) => module.emits.as_ref(),
            Program::Native { emits, .. } => emits.as_ref(),
        }
    }

    /// What it declared.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Program::Wasm(module) => &module.manifest,
            Program::Native { manifest, .. } => manifest,
        }
    }

    /// The module behind it, if it is a component.
    pub fn module(&self) -> Option<&Arc<Module>> {
        match self {
            Program::Wasm(module) => Some(module),
            Program::Native { .. } => None,
        }
    }

    /// A fresh instance over `caps` (given back on failure).
    pub fn instantiate(&self, caps: Capabilities, limits: &Limits) -> Result<Box<dyn Guest>, Unstarted> {
        match self {
            Program::Wasm(module) => WasmGuest::new(&module.code, module.manifest.clone(), caps, limits)
                .map(|g| Box::new(g) as Box<dyn Guest>),
            Program::Native { make, .. } => Ok(make(caps)),
        }
    }
}
