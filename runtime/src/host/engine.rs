//! The wasmtime engine reel runs every component on, and its epoch clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};

use super::bindings;
use super::instance::InstanceState;

/// How often the epoch advances: the granularity of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine plus the linker with every import a projection may use.
#[derive(Clone)]
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<InstanceState>>,
}

impl Engine {
    /// An engine configured for projections: component model, epoch
    /// interruption for deadlines, no async machinery (synchronous calls are
    /// about twice as fast).
    pub fn new() -> wasmtime::Result<Self> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .concurrency_support(false)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .parallel_compilation(true);
        if std::env::var_os("REEL_PERF_MAP").is_some_and(|v| v == "1") {
            // `/tmp/perf-<pid>.map` names the guests' compiled functions for `perf report`.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = wasmtime::Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Projection::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |s| s)?;
        // A reactor's imports; a projection that does not import them never sees them.
        use bindings::reactor::reel::projection::{emit, timers};
        emit::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |s| s)?;
        timers::add_to_linker::<InstanceState, HasSelf<InstanceState>>(&mut linker, |s| s)?;
        // The decider world's types-only interface (its only other import, `log`, is above).
        linker.instance("reel:projection/decider-types@0.1.1")?;
        // The sink world's, likewise.
        linker.instance("reel:projection/sink-types@0.1.1")?;
        Ok(Self { engine, linker: Arc::new(linker) })
    }

    /// The wasmtime engine.
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// The linker holding reel's imports and the inert WASI.
    pub(crate) fn linker(&self) -> &Linker<InstanceState> {
        &self.linker
    }

    /// Compile a component from its bytes.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        Component::new(&self.engine, bytes)
    }

    /// A hex digest that changes whenever compiled code from this engine
    /// would not load in another (wasmtime version, settings, CPU features).
    pub fn compatibility_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    /// Start advancing the epoch every [`EPOCH_TICK`]; stops when dropped.
    pub fn start_ticker(&self) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = self.engine.clone();
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("reel-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop }
    }
}

/// Keeps the epoch advancing while alive.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Epoch ticks in `timeout` (at least one).
pub fn ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
