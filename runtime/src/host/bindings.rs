//! The `projection` world's bindings, generated from `wit/` by wasmtime's
//! `bindgen!`, for the host alone. The `types` interface is reel-model's own
//! types (their component traits derived under its `host` feature), so an
//! event goes to a guest as the worker holds it, without a copy; `kv`, `sql`
//! and `log` are generated here and converted at the host's edge (`kv.rs`,
//! `sql.rs`, `log.rs`).

#![allow(unsafe_code, missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "projection",
    imports: { default: trappable },
    with: { "reel:projection/types": crate::host::bindings::types },
});

/// `reel:projection/types`, written as `bindgen!` would write it, over
/// reel-model's types. A type added to the WIT interface is added here (and
/// derives the component traits in reel-model); a mismatch fails when a
/// component is linked.
pub mod types {
    pub use reel_model::{Error, Event, HandleError, Manifest};
    use wasmtime::component::{HasData, Linker};

    pub trait HostWithStore<T>: HasData {}
    impl<H: ?Sized + HasData, T> HostWithStore<T> for H {}

    /// The interface has no functions: nothing to implement.
    pub trait Host {}
    impl<T: Host + ?Sized> Host for &mut T {}

    /// The interface's (empty) instance, which components import.
    pub fn add_to_linker<T, D>(linker: &mut Linker<T>, _host_getter: fn(&mut T) -> D::Data<'_>) -> wasmtime::Result<()>
    where
        D: HostWithStore<T>,
        for<'a> D::Data<'a>: Host,
        T: 'static,
    {
        linker.instance("reel:projection/types@0.1.1")?;
        Ok(())
    }
}

/// The `reactor` world (wit/reactor.wit): the projection's interfaces are
/// the ones above; `emit` and `timers` are generated here, over
/// reel-model's types.
pub mod reactor {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "reactor",
        imports: { default: trappable },
        with: {
            "reel:projection/types": crate::host::bindings::types,
            "reel:projection/kv": crate::host::bindings::reel::projection::kv,
            "reel:projection/sql": crate::host::bindings::reel::projection::sql,
            "reel:projection/log": crate::host::bindings::reel::projection::log,
        },
    });
}

/// The `decider` world's bindings: its own types (`decider-types`) generated
/// here, converted at the edge (`decider.rs`); `types` and `log` are the
/// projection world's.
pub mod decider {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "decider",
        imports: { default: trappable },
        with: {
            "reel:projection/types": crate::host::bindings::types,
            "reel:projection/log": crate::host::bindings::reel::projection::log,
        },
    });
}

/// The `sink` world's bindings (wit/sink.wit): its own types (`sink-types`)
/// generated here; `types` and `log` are the projection world's.
pub mod sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sink",
        imports: { default: trappable },
        with: {
            "reel:projection/types": crate::host::bindings::types,
            "reel:projection/log": crate::host::bindings::reel::projection::log,
        },
    });
}
