//! Deciders: the write side. A decider module owns the streams under its
//! prefix; a command sent to it loads the stream's state (`state.rs`: cached,
//! else folded from the log through `evolve`), asks `decide`, and appends the
//! events with the stream's version as the expected version, reloading and
//! asking again on a conflict (`command.rs`). A command sent with an
//! idempotency key is answered once; the same key again gets that answer
//! (`keys.rs`, ADR 25). States are also snapshotted in the database, so a
//! long stream is not folded from its first event after a restart
//! (`snapshots.rs`, ADR 26).
//!
//! Deciders are served by any reel process: a command needs no owner, the
//! expected version on the append is what keeps two deciding processes apart.

mod appends;
mod command;
mod keys;
mod snapshots;
mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

pub use command::{CommandError, CommandRequest};

use crate::config::{Config, Limits};
use crate::host::GuestFailure;
use crate::host::decider::{DeciderCode, WasmDecider};
use crate::modules::DeciderModule;
use crate::source::Source;
use state::StateCache;

/// The deciders in service, by name.
#[derive(Clone)]
pub struct Deciders {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    limits: Limits,
    registry: Mutex<BTreeMap<String, Arc<Deployed>>>,
    states: StateCache,
    /// How long an answer is kept under its idempotency key.
    answers_ttl: Duration,
    /// Events folded past a stream's last snapshot before the next is
    /// saved (0: none are).
    snapshot_every: i64,
    /// When expired answers were last forgotten (Unix µs).
    last_purge: AtomicI64,
}

/// A decider in service.
struct Deployed {
    module: Arc<DeciderModule>,
    /// Idle instances; a call takes one (or makes one) and gives it back
    /// unless the call failed.
    idle: Mutex<Vec<WasmDecider>>,
    counts: Counts,
}

/// What `/metrics` counts per decider.
#[derive(Default)]
struct Counts {
    commands: AtomicU64,
    rejections: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    replays: AtomicU64,
    events_folded: AtomicU64,
    snapshots_loaded: AtomicU64,
    snapshots_saved: AtomicU64,
}

/// A decider as `GET /deciders` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeciderInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The streams it owns.
    pub stream_prefix: String,
    /// The command types it decides.
    pub command_types: Vec<String>,
    /// The module file.
    pub file: PathBuf,
    /// Commands answered (accepted, rejected or failed).
    pub commands: u64,
    /// Commands the decider rejected.
    pub rejections: u64,
    /// Appends that found the stream moved on (each retried or answered 409).
    pub conflicts: u64,
    /// Decisions taken again after a conflict.
    pub retries: u64,
    /// Commands that failed in the decider (trap, time-out, bad output).
    pub failures: u64,
    /// Commands answered again under their idempotency key (not counted in
    /// `commands`).
    pub replays: u64,
    /// Events folded into states by `evolve` (ADR 26: a cached state or a
    /// snapshot spares folding a stream from its first event).
    pub events_folded: u64,
    /// States read from a snapshot in the database.
    pub snapshots_loaded: u64,
    /// Snapshots written.
    pub snapshots_saved: u64,
}

impl Deciders {
    /// No deciders yet, over `source`.
    pub fn new(config: &Config, source: Source) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                limits: config.limits.clone(),
                registry: Mutex::default(),
                states: StateCache::new(config.deciders.state_cache_bytes),
                answers_ttl: config.deciders.answers_ttl,
                snapshot_every: config.deciders.snapshot_every,
                last_purge: AtomicI64::new(0),
            }),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Deployed>>> {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve `module` (from its file): new, or new code for a decider. Refused
    /// when another file provides the same name, or owns an overlapping prefix.
    pub fn deploy(&self, module: Arc<DeciderModule>) -> Result<(), String> {
        let m = &module.manifest;
        let mut registry = self.registry();
        for (name, other) in registry.iter() {
            let theirs = &other.module;
            if theirs.path == module.path || !theirs.path.exists() {
                continue;
            }
            if *name == m.name {
                return Err(format!(
                    "decider `{}` is already provided by {}; remove one of the two files",
                    m.name,
                    theirs.path.display()
                ));
            }
            let p = &theirs.manifest.stream_prefix;
            if p.starts_with(&m.stream_prefix) || m.stream_prefix.starts_with(p.as_str()) {
                return Err(format!(
                    "decider `{}` would own streams `{}*`, which overlap decider `{name}`'s `{p}*` ({}): \
                     a stream has one decider",
                    m.name,
                    m.stream_prefix,
                    theirs.path.display()
                ));
            }
        }
        // The same file may now provide another name: the old one goes.
        registry.retain(|_, d| d.module.path != module.path);
        let deployed = Deployed { module: Arc::clone(&module), idle: Mutex::default(), counts: Counts::default() };
        registry.insert(m.name.clone(), Arc::new(deployed));
        // New code, even at the same version, folds states afresh.
        self.inner.states.forget(&m.name);
        Ok(())
    }

    /// Serve a Rust decider compiled into reel (the benchmarks' baseline):
    /// as if from a file named `native:{name}`, which [`Deciders::unload`]
    /// takes to end it.
    pub fn deploy_native<D: guest_sdk::Decider>(&self) -> Result<(), String> {
        let code = DeciderCode::native::<D>();
        let DeciderCode::Native(native) = &code else { unreachable!("native code") };
        let manifest = DeciderCode::native_manifest(native);
        let module = DeciderModule {
            path: PathBuf::from(format!("native:{}", manifest.name)),
            hash: String::new(),
            manifest,
            code,
            compile_time: Duration::ZERO,
            cached: false,
        };
        self.deploy(Arc::new(module))
    }

    /// The file at `path` is gone: the decider it provided leaves service.
    /// Returns its name.
    pub fn unload(&self, path: &Path) -> Option<String> {
        let mut registry = self.registry();
        let name = registry.iter().find(|(_, d)| d.module.path == path).map(|(n, _)| n.clone())?;
        registry.remove(&name);
        self.inner.states.forget(&name);
        Some(name)
    }

    /// A decider whose prefix overlaps `prefix` (one starts with the
    /// other): its name and prefix.
    pub fn overlapping(&self, prefix: &str) -> Option<(String, String)> {
        self.registry().iter().find_map(|(name, d)| {
            let p = &d.module.manifest.stream_prefix;
            (p.starts_with(prefix) || prefix.starts_with(p.as_str())).then(|| (name.clone(), p.clone()))
        })
    }

    /// The decider owning `stream`, and its prefix.
    pub fn owner_of(&self, stream: &str) -> Option<(String, String)> {
        self.registry()
            .iter()
            .find(|(_, d)| stream.starts_with(d.module.manifest.stream_prefix.as_str()))
            .map(|(name, d)| (name.clone(), d.module.manifest.stream_prefix.clone()))
    }

    /// Every decider in service.
    pub fn list(&self) -> Vec<DeciderInfo> {
        self.registry()
            .iter()
            .map(|(name, d)| {
                let m = &d.module.manifest;
                let c = &d.counts;
                DeciderInfo {
                    name: name.clone(),
                    version: m.version.clone(),
                    stream_prefix: m.stream_prefix.clone(),
                    command_types: m.command_types.clone(),
                    file: d.module.path.clone(),
                    commands: c.commands.load(Ordering::Relaxed),
                    rejections: c.rejections.load(Ordering::Relaxed),
                    conflicts: c.conflicts.load(Ordering::Relaxed),
                    retries: c.retries.load(Ordering::Relaxed),
                    failures: c.failures.load(Ordering::Relaxed),
                    replays: c.replays.load(Ordering::Relaxed),
                    events_folded: c.events_folded.load(Ordering::Relaxed),
                    snapshots_loaded: c.snapshots_loaded.load(Ordering::Relaxed),
                    snapshots_saved: c.snapshots_saved.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    fn get(&self, name: &str) -> Result<Arc<Deployed>, CommandError> {
        self.registry().get(name).cloned().ok_or_else(|| CommandError::UnknownDecider(name.to_owned()))
    }
}

impl Deployed {
    /// Run `f` on an idle instance (or a new one), in a blocking thread; the
    /// instance goes back unless `f` failed (its memory is then suspect).
    async fn with_instance<T: Send + 'static>(
        self: &Arc<Self>,
        limits: &Limits,
        f: impl FnOnce(&mut WasmDecider) -> Result<T, GuestFailure> + Send + 'static,
    ) -> Result<T, CommandError> {
        let this = Arc::clone(self);
        let limits = limits.clone();
        tokio::task::spawn_blocking(move || {
            let idle = this.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut instance = match idle {
                Some(instance) => instance,
                None => WasmDecider::new(&this.module.code, &this.module.manifest.name, &limits)?,
            };
            let result = f(&mut instance)?;
            this.idle.lock().unwrap_or_else(|p| p.into_inner()).push(instance);
            Ok(result)
        })
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?
        .map_err(CommandError::Decider)
    }
}
