//! Modules: `.wasm` files in the modules folder, compiled (with an on-disk
//! cache), checked against their world (a projection, a decider or a sink) and
//! asked for their manifest before anything runs them.

mod cache;
mod program;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use reel_model::{Emits, Manifest};

use crate::config::Limits;
use crate::host::Engine;
use crate::host::decider::{DeciderCode, DeciderManifest, WasmDecider};
use crate::host::instance::{Code, WasmGuest};
use crate::host::sink::{Broker, SinkCode, SinkManifest, WasmSink};

pub use program::Program;

/// A loaded, validated module.
pub struct Module {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// What it declared.
    pub manifest: Manifest,
    /// The stream prefix it emits under, when it is a reactor.
    pub emits: Option<Emits>,
    /// Linked code, ready to instantiate.
    pub code: Code,
    /// File size in bytes.
    pub size: u64,
    /// Time to compile (or load from the cache).
    pub compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub cached: bool,
}

/// A loaded, validated decider (`reel:projection/decider`).
pub struct DeciderModule {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// What it declared.
    pub manifest: DeciderManifest,
    /// Linked code, ready to instantiate.
    pub code: DeciderCode,
    /// Time to compile (or load from the cache).
    pub compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub cached: bool,
}

/// A loaded, validated sink (`reel:projection/sink`).
pub struct SinkModule {
    /// The file it came from.
    pub path: PathBuf,
    /// SHA-256 of the file, hex.
    pub hash: String,
    /// What it declared.
    pub manifest: SinkManifest,
    /// Linked code, ready to instantiate.
    pub code: SinkCode,
    /// Time to compile (or load from the cache).
    pub compile_time: Duration,
    /// Whether the compiled code came from the cache.
    pub cached: bool,
}

/// A module file of any kind, loaded.
pub enum Loaded {
    /// A projection (or any component of the `projection` world).
    Projection(Arc<Module>),
    /// A decider.
    Decider(Arc<DeciderModule>),
    /// A sink.
    Sink(Arc<SinkModule>),
}

/// Checks of a sink's manifest: what reel needs to read its events and to
/// publish them.
fn validate_sink(m: &SinkManifest) -> Result<(), String> {
    if !reel_model::is_projection_name(&m.name) {
        return Err(format!("sink name `{}`: {}", m.name, reel_model::PROJECTION_NAME_RULE));
    }
    if m.version.is_empty() || m.version.len() > 64 {
        return Err("version must be 1 to 64 characters".into());
    }
    let mut names = m.event_types.iter().chain(&m.stream_prefixes);
    if let Some(bad) = names.find(|t| t.len() > 512 || t.contains('\0')) {
        return Err(format!("event type or stream prefix `{bad}`: at most 512 characters, with no NUL"));
    }
    if m.subject.is_empty() && !m.transform && matches!(m.broker, Broker::Nats) {
        return Err("subject is empty: name the NATS subject to publish to".into());
    }
    crate::host::sink::check_template(&m.subject).map_err(|e| format!("subject `{}`: {e}", m.subject))?;
    if matches!(m.broker, Broker::Nats) && !m.exchange.is_empty() {
        return Err(format!("exchange `{}` is set, but the broker is NATS: exchanges are RabbitMQ's", m.exchange));
    }
    Ok(())
}

/// Checks of a decider's manifest: what reel needs to route commands to it
/// and to keep its streams to it.
fn validate_decider(m: &DeciderManifest) -> Result<(), String> {
    if !reel_model::is_projection_name(&m.name) {
        return Err(format!("decider name `{}`: {}", m.name, reel_model::PROJECTION_NAME_RULE));
    }
    if m.version.is_empty() || m.version.len() > 64 {
        return Err("version must be 1 to 64 characters".into());
    }
    if m.stream_prefix.is_empty() || m.stream_prefix.len() > 256 || m.stream_prefix.contains('\0') {
        return Err("stream-prefix must be 1 to 256 characters, with no NUL: the streams the decider owns".into());
    }
    if m.command_types.is_empty() {
        return Err("command-types is empty: a decider decides at least one command type".into());
    }
    if let Some(bad) = m.command_types.iter().find(|t| t.is_empty() || t.len() > 512 || t.contains('\0')) {
        return Err(format!("command type `{bad}`: 1 to 512 characters, with no NUL"));
    }
    Ok(())
}

/// Why a module file cannot be used. Nothing running is replaced by it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModuleError {
    /// Reading the file failed.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The file is not a component.
    #[error("{path} is not a WebAssembly component: {message}")]
    NotAComponent {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The component does not fit the world.
    #[error("{path} does not match the reel:projection@0.1.1 world: {message}")]
    WrongWorld {
        /// The file.
        path: String,
        /// What does not match.
        message: String,
    },
    /// `describe` failed or declared something unusable.
    #[error("{path}: describe() failed: {message}")]
    Describe {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// Compiles and validates modules.
#[derive(Clone)]
pub struct Loader {
    engine: Engine,
    cache: cache::CompileCache,
    limits: Limits,
}

/// Magic and version of a core module (`\0asm`, version 1).
const CORE_MODULE: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];

impl Loader {
    /// A loader caching compiled code in `cache_dir`.
    pub fn new(engine: Engine, cache_dir: &Path, limits: Limits) -> Self {
        Self { cache: cache::CompileCache::new(cache_dir, &engine), engine, limits }
    }

    /// The engine modules are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Remove the cached compiled code of modules other than `keep` (SHA-256
    /// hashes of the module files in use), but for code compiled or used
    /// within the time a load of another file takes to finish (its link and
    /// `describe` calls, each bounded by the CPU deadline). How many went.
    pub fn prune_cache(&self, keep: &std::collections::HashSet<String>) -> usize {
        self.cache.retain(keep, self.limits.batch_timeout * 2 + Duration::from_secs(5))
    }

    /// Read, compile, link and describe the module at `path`. Blocking (and
    /// seconds long for big components): call it off the async threads.
    pub fn load(&self, path: &Path) -> Result<Loaded, ModuleError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ModuleError::Io { path: shown.clone(), message: e.to_string() })?;
        self.load_bytes(path, &bytes)
    }

    /// Like [`load`](Self::load), from bytes already read.
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Loaded, ModuleError> {
        let shown = path.display().to_string();
        let not_component = |message: String| ModuleError::NotAComponent { path: shown.clone(), message };
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(not_component(format!("no WebAssembly header ({} bytes)", bytes.len())));
        }
        if bytes[..8] == CORE_MODULE {
            return Err(not_component(
                "it is a core module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`".into(),
            ));
        }
        let hash = hex(&Sha256::digest(bytes));
        let started = Instant::now();
        // A big component compiles for seconds (minutes on a loaded machine):
        // say so when it starts.
        let compiling = || tracing::info!("compiling {shown} ({:.1} MB)", bytes.len() as f64 / 1e6);
        let (component, cached) = self
            .cache
            .get_or_compile(&self.engine, &hash, bytes, compiling)
            .map_err(|e| not_component(format!("{e:#}")))?;
        let compile_time = started.elapsed();
        if SinkCode::is_sink(&self.engine, &component) {
            let wrong_world =
                |e: wasmtime::Error| ModuleError::WrongWorld { path: shown.clone(), message: format!("{e:#}") };
            let code = SinkCode::link(&self.engine, &component).map_err(wrong_world)?;
            let name_hint = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let describe = |message: String| ModuleError::Describe { path: shown.clone(), message };
            let manifest = WasmSink::describe(&code, &name_hint, &self.limits).map_err(|e| describe(e.to_string()))?;
            validate_sink(&manifest).map_err(describe)?;
            let module = SinkModule { path: path.to_owned(), hash, manifest, code, compile_time, cached };
            return Ok(Loaded::Sink(Arc::new(module)));
        }
        if DeciderCode::is_decider(&self.engine, &component) {
            let wrong_world =
                |e: wasmtime::Error| ModuleError::WrongWorld { path: shown.clone(), message: format!("{e:#}") };
            let code = DeciderCode::link(&self.engine, &component).map_err(wrong_world)?;
            let name_hint = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let describe = |message: String| ModuleError::Describe { path: shown.clone(), message };
            let manifest =
                WasmDecider::describe(&code, &name_hint, &self.limits).map_err(|e| describe(e.to_string()))?;
            validate_decider(&manifest).map_err(describe)?;
            let module = DeciderModule { path: path.to_owned(), hash, manifest, code, compile_time, cached };
            return Ok(Loaded::Decider(Arc::new(module)));
        }
        let code = Code::link(&self.engine, &component)
            .map_err(|e| ModuleError::WrongWorld { path: shown.clone(), message: format!("{e:#}") })?;
        let name_hint = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let manifest = WasmGuest::describe(&code, &name_hint, &self.limits)
            .map_err(|e| ModuleError::Describe { path: shown.clone(), message: e.to_string() })?;
        manifest.validate().map_err(|message| ModuleError::Describe { path: shown.clone(), message })?;
        let emits = WasmGuest::describe_emits(&code, &name_hint, &self.limits)
            .map_err(|e| ModuleError::Describe { path: shown.clone(), message: format!("describe-emits: {e}") })?;
        if let Some(emits) = &emits
            && emits.stream_prefix.is_empty()
        {
            let message =
                "describe-emits declared an empty stream prefix: a reactor emits under a prefix of its own".into();
            return Err(ModuleError::Describe { path: shown.clone(), message });
        }
        Ok(Loaded::Projection(Arc::new(Module {
            path: path.to_owned(),
            hash,
            manifest,
            emits,
            code,
            size: bytes.len() as u64,
            compile_time,
            cached,
        })))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
