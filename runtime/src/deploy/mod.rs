//! Wiring: opens the backends, loads modules, runs a worker per projection
//! version, watches the modules folder and switches reads to a rebuilt
//! version once it has caught up (blue/green).

mod deployment;
mod reads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

pub use deployment::Deployment;
pub use reads::{ModuleInfo, ProjectionInfo, ReadError, RebuildInfo};

use crate::config::Config;
use crate::host::{Engine, EpochTicker, Program};
use crate::modules::{Loader, ModuleError, watch::is_module};
use crate::source::{Source, postgres::PgSource, sqlite::SqliteSource};
use crate::store::{NamespaceId, Store, postgres::PgStore, sqlite::SqliteStore};
use crate::worker::{Control, State, WorkerContext, WorkerHandle};

/// How often rebuilding versions are checked for cutover.
const SUPERVISE_EVERY: Duration = Duration::from_millis(50);

/// Run reel until `shutdown` resolves: backends, modules, workers, HTTP.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let runtime = Runtime::start(config).await?;
    serve(runtime, listener, shutdown).await
}

/// Serve the HTTP API of `runtime` on `listener` until `shutdown` resolves,
/// then stop the runtime.
pub async fn serve(
    runtime: Runtime,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!("reel is serving http://{}", listener.local_addr()?);
    let app = crate::api::app(runtime.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    runtime.shutdown().await;
    Ok(served?)
}

/// A running reel: shared by the HTTP API, the folder watcher and tests.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    source: Source,
    store: Store,
    loader: Loader,
    workers: WorkerContext,
    registry: Mutex<Registry>,
    stop: watch::Sender<bool>,
    _ticker: EpochTicker,
}

#[derive(Default)]
struct Registry {
    projections: BTreeMap<String, Projection>,
    files: BTreeMap<PathBuf, FileStatus>,
}

/// A projection: the version serving reads, and maybe a version rebuilding.
struct Projection {
    active: Deployment,
    next: Option<Deployment>,
}

/// What became of a module file.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of its content when last read.
    pub hash: Option<String>,
    /// `name@version` it provides, when loaded.
    pub provides: Option<String>,
    /// Why it is not in use, when it failed.
    pub error: Option<String>,
    /// Compile (or cache load) time in milliseconds.
    pub compile_ms: Option<f64>,
    /// Whether the compiled code came from the cache.
    pub cached: Option<bool>,
}

/// Work to do after the registry lock is released (stopping a worker joins
/// its thread).
#[derive(Default)]
#[must_use]
struct Cleanup {
    stop: Vec<WorkerHandle>,
    drop: Vec<NamespaceId>,
}

impl Runtime {
    /// Open the backends, load the modules folder and start the workers.
    pub async fn start(mut config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
        std::fs::create_dir_all(&config.modules_dir)
            .with_context(|| format!("cannot create the modules folder {}", config.modules_dir.display()))?;
        // The watcher reports absolute paths; the folder's listing at start
        // must name the same files the same way.
        config.modules_dir = std::fs::canonicalize(&config.modules_dir)
            .with_context(|| format!("cannot resolve the modules folder {}", config.modules_dir.display()))?;
        let (source, store) = match &config.database_url {
            None => {
                let events = config.data_dir.join("events.db");
                let source = SqliteSource::open(&events)
                    .await
                    .with_context(|| format!("cannot open the events database {}", events.display()))?;
                let store = SqliteStore::new(&config.data_dir.join("projections"))?;
                (Source::Sqlite(Arc::new(source)), Store::Sqlite(store))
            }
            Some(url) => {
                let source = PgSource::open(url).await.context("cannot use the PostgreSQL database")?;
                let store =
                    PgStore::new(source.config().clone(), source.pool().clone(), tokio::runtime::Handle::current());
                (Source::Postgres(Arc::new(source)), Store::Postgres(Box::new(store)))
            }
        };
        let engine = Engine::new().map_err(|e| anyhow::anyhow!("{e:#}")).context("cannot set up wasmtime")?;
        let ticker = engine.start_ticker();
        let cache_dir = config.cache_dir.clone().unwrap_or_else(|| config.data_dir.join("compiled"));
        let loader = Loader::new(engine, &cache_dir, config.limits.clone());
        let workers = WorkerContext {
            source: source.clone(),
            store: store.clone(),
            limits: config.limits.clone(),
            batch: config.batch,
            poll_interval: config.poll_interval,
            on_error: None,
            handle: tokio::runtime::Handle::current(),
        };
        let runtime = Runtime {
            inner: Arc::new(Inner {
                config,
                source,
                store,
                loader,
                workers,
                registry: Mutex::new(Registry::default()),
                stop: watch::channel(false).0,
                _ticker: ticker,
            }),
        };
        runtime.restore()?;
        runtime.load_folder().await?;
        runtime.spawn_watcher()?;
        runtime.spawn_supervisor();
        Ok(runtime)
    }

    /// Stop the workers and background tasks.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        self.inner.source.close();
        let handles: Vec<WorkerHandle> = {
            let mut registry = self.registry();
            registry
                .projections
                .values_mut()
                .flat_map(|p| [p.active.worker.take(), p.next.as_mut().and_then(|n| n.worker.take())])
                .flatten()
                .collect()
        };
        let _ = tokio::task::spawn_blocking(move || handles.into_iter().for_each(WorkerHandle::stop)).await;
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The event log.
    pub fn source(&self) -> &Source {
        &self.inner.source
    }

    /// The read-model storage.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The worker context of projection `name`: its limits and policy.
    fn workers_for(&self, name: &str) -> WorkerContext {
        let mut ctx = self.inner.workers.clone();
        ctx.limits = self.inner.config.limits_for(name);
        ctx.on_error = self.inner.config.on_error_for(name);
        ctx
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Projections known from a previous run: readable, not running until
    /// their module is loaded.
    fn restore(&self) -> anyhow::Result<()> {
        let deployments: Vec<Deployment> = self
            .inner
            .store
            .active_namespaces()?
            .into_iter()
            .map(|ns| Deployment::unloaded(&self.inner.store, ns))
            .collect();
        let mut registry = self.registry();
        for deployment in deployments {
            registry.projections.insert(deployment.ns.name.clone(), Projection { active: deployment, next: None });
        }
        Ok(())
    }

    async fn load_folder(&self) -> anyhow::Result<()> {
        let dir = &self.inner.config.modules_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_module(p))
            .collect();
        files.sort();
        for file in files {
            self.reload(file).await;
        }
        Ok(())
    }

    fn spawn_watcher(&self) -> anyhow::Result<()> {
        let dir = &self.inner.config.modules_dir;
        let (watch, mut changes) = crate::modules::watch::watch(dir, self.inner.config.watch_debounce)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        let runtime = self.clone();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            let _watch = watch;
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Some(path) => runtime.reload(path).await,
                        None => return,
                    },
                    () = stopped(&mut stop) => return,
                }
            }
        });
        Ok(())
    }

    fn spawn_supervisor(&self) {
        let runtime = self.clone();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SUPERVISE_EVERY) => {
                        let cleanup = runtime.cut_over_caught_up();
                        runtime.clean_up(cleanup).await;
                    }
                    () = stopped(&mut stop) => return,
                }
            }
        });
    }

    /// A module file appeared, changed or disappeared.
    pub async fn reload(&self, path: PathBuf) {
        if !path.exists() {
            let cleanup = self.unload(&path);
            self.clean_up(cleanup).await;
            // A file refused because this one provided the same projection
            // may be wanted now: every refused file gets another look.
            let refused: Vec<PathBuf> = self
                .registry()
                .files
                .values()
                .filter(|f| f.error.is_some() && f.path != path && f.path.exists())
                .map(|f| f.path.clone())
                .collect();
            for file in refused {
                self.load(file).await;
            }
            return;
        }
        self.load(path).await;
    }

    /// Load the module file at `path` and deploy it, unless it is what
    /// already runs.
    async fn load(&self, path: PathBuf) {
        let loader = self.inner.loader.clone();
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || loader.load(&file)).await;
        let loaded = loaded.unwrap_or_else(|e| {
            Err(ModuleError::Io { path: path.display().to_string(), message: format!("loader crashed: {e}") })
        });
        match loaded {
            Ok(module) => {
                let unchanged = self.registry().files.get(&path).and_then(|f| f.hash.clone())
                    == Some(module.hash.clone())
                    && self.registry().files.get(&path).is_some_and(|f| f.error.is_none());
                if unchanged {
                    return;
                }
                tracing::info!(
                    "loaded {} as {}@{} ({} bytes, compiled in {:?}{})",
                    path.display(),
                    module.manifest.name,
                    module.manifest.version,
                    module.size,
                    module.compile_time,
                    if module.cached { ", from cache" } else { "" }
                );
                let status = FileStatus {
                    path: path.clone(),
                    hash: Some(module.hash.clone()),
                    provides: Some(format!("{}@{}", module.manifest.name, module.manifest.version)),
                    error: None,
                    compile_ms: Some(module.compile_time.as_secs_f64() * 1000.0),
                    cached: Some(module.cached),
                };
                match self.deploy(Program::Wasm(module), Some(path.clone())) {
                    Ok(cleanup) => {
                        self.registry().files.insert(path, status);
                        self.clean_up(cleanup).await;
                    }
                    Err(error) => self.file_failed(&path, None, error),
                }
            }
            Err(error) => {
                tracing::error!("{error}");
                self.file_failed(&path, None, error.to_string());
            }
        }
    }

    fn file_failed(&self, path: &Path, hash: Option<String>, error: String) {
        let mut registry = self.registry();
        // The projection this file provided keeps running its old code; say why.
        for projection in registry.projections.values_mut() {
            for d in std::iter::once(&mut projection.active).chain(projection.next.as_mut()) {
                if d.file.as_deref() == Some(path) {
                    d.module_error = Some(error.clone());
                }
            }
        }
        let entry = registry.files.entry(path.to_owned()).or_insert_with(|| FileStatus {
            path: path.to_owned(),
            hash: None,
            provides: None,
            error: None,
            compile_ms: None,
            cached: None,
        });
        entry.hash = hash;
        entry.error = Some(error);
    }

    /// Run `program` (from `file`, if any): a new projection, new code for a
    /// running version, or a new version rebuilt beside the serving one.
    ///
    /// The registry lock is never held across database calls (they block,
    /// and a runtime thread waiting on the lock could be the one that would
    /// drive the connection).
    fn deploy(&self, program: Program, file: Option<PathBuf>) -> Result<Cleanup, String> {
        let manifest = program.manifest().clone();
        if !self.registry().projections.contains_key(&manifest.name) {
            let ns = NamespaceId::new(&manifest.name, &manifest.version);
            self.inner.store.set_active(&ns).map_err(|e| e.to_string())?;
        }
        let workers = self.workers_for(&manifest.name);
        let mut registry = self.registry();
        let mut cleanup = Cleanup::default();
        let Some(projection) = registry.projections.get_mut(&manifest.name) else {
            let ns = NamespaceId::new(&manifest.name, &manifest.version);
            let deployment = Deployment::start(&workers, ns, program, file);
            registry.projections.insert(manifest.name, Projection { active: deployment, next: None });
            return Ok(cleanup);
        };
        for d in std::iter::once(&projection.active).chain(projection.next.as_ref()) {
            if let Some(owner) = &d.file
                && Some(owner) != file.as_ref()
                && d.program.is_some()
                && owner.exists()
            {
                return Err(format!(
                    "projection `{}` is already provided by {}; remove one of the two files",
                    manifest.name,
                    owner.display()
                ));
            }
        }
        if projection.active.ns.version == manifest.version {
            if let Some(next) = projection.next.take() {
                tracing::info!("abandoning the rebuild of {}: its version was replaced", next.ns);
                cleanup.retire(next);
            }
            projection.active.swap(&workers, program, file);
        } else if let Some(next) = projection.next.as_mut().filter(|n| n.ns.version == manifest.version) {
            next.swap(&workers, program, file);
        } else {
            if let Some(next) = projection.next.take() {
                tracing::info!("abandoning the rebuild of {}: a newer version arrived", next.ns);
                cleanup.retire(next);
            }
            let ns = NamespaceId::new(&manifest.name, &manifest.version);
            tracing::info!("rebuilding {} from the start while {} serves reads", ns, projection.active.ns);
            projection.next = Some(Deployment::start(&workers, ns, program, file));
        }
        Ok(cleanup)
    }

    /// Run a Rust projection compiled into this binary.
    pub async fn deploy_native<P: guest_sdk::Projection + 'static>(&self) -> Result<(), String> {
        let cleanup = self.deploy(Program::native::<P>(), None)?;
        self.clean_up(cleanup).await;
        Ok(())
    }

    /// A module file was removed: stop what it ran, keep the read model.
    fn unload(&self, path: &Path) -> Cleanup {
        let mut registry = self.registry();
        let mut cleanup = Cleanup::default();
        registry.files.remove(path);
        for projection in registry.projections.values_mut() {
            if projection.next.as_ref().is_some_and(|n| n.file.as_deref() == Some(path)) {
                cleanup.retire(projection.next.take().expect("checked"));
            }
            if projection.active.file.as_deref() == Some(path) {
                tracing::info!(
                    "{} removed: stopping {}; its read model stays readable",
                    path.display(),
                    projection.active.ns
                );
                cleanup.stop.extend(projection.active.unload());
            }
        }
        cleanup
    }

    /// Switch reads to rebuilt versions that caught up.
    fn cut_over_caught_up(&self) -> Cleanup {
        let caught_up: Vec<NamespaceId> = self
            .registry()
            .projections
            .values()
            .filter_map(|projection| {
                let next = projection.next.as_ref()?;
                let snapshot = next.status.snapshot();
                let caught_up = snapshot.state == State::Running
                    && snapshot.at_head
                    && snapshot.cursor >= projection.active.status.cursor();
                caught_up.then(|| next.ns.clone())
            })
            .collect();
        let mut cleanup = Cleanup::default();
        for ns in caught_up {
            if let Err(e) = self.inner.store.set_active(&ns) {
                tracing::warn!("cannot record the cutover to {ns}: {e}");
                continue;
            }
            let mut registry = self.registry();
            let Some(projection) = registry.projections.get_mut(&ns.name) else { continue };
            if projection.next.as_ref().is_none_or(|next| next.ns != ns) {
                continue; // replaced meanwhile
            }
            let next = projection.next.take().expect("checked");
            tracing::info!("{} caught up: reads switch to it from {}", next.ns, projection.active.ns);
            let mut old = std::mem::replace(&mut projection.active, next);
            if self.inner.config.keep_old {
                tracing::info!("keeping {} (--keep-old)", old.ns);
                cleanup.stop.extend(old.worker.take());
            } else {
                cleanup.retire(old);
            }
        }
        cleanup
    }

    async fn clean_up(&self, cleanup: Cleanup) {
        if cleanup.stop.is_empty() && cleanup.drop.is_empty() {
            return;
        }
        let store = self.inner.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            cleanup.stop.into_iter().for_each(WorkerHandle::stop);
            for ns in cleanup.drop {
                if let Err(e) = store.drop_namespace(&ns) {
                    tracing::warn!("cannot drop {ns}: {e}");
                }
            }
        })
        .await;
        if let Err(e) = result {
            tracing::error!("cleanup crashed: {e}");
        }
    }

    /// Send a control message to the serving version's worker.
    pub fn control(&self, name: &str, control: Control) -> Result<(), ReadError> {
        let registry = self.registry();
        let projection = registry.projections.get(name).ok_or_else(|| ReadError::unknown(name))?;
        match &projection.active.worker {
            Some(worker) => {
                worker.send(control);
                Ok(())
            }
            None => Err(ReadError::Conflict(format!("projection `{name}` is not running: its module is not loaded"))),
        }
    }

    /// Apply a dead-lettered event again with the current code (through the
    /// serving version's worker); on success it leaves the dead-letter table.
    pub async fn retry_dead_letter(&self, name: &str, position: i64) -> Result<(), ReadError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.control(name, Control::RetryDeadLetter { position, reply })?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ReadError::Conflict(format!("projection `{name}` stopped before retrying"))),
        }
    }

    /// Rebuild the serving version from position 0 into a fresh namespace;
    /// reads stay on the current one until the rebuild catches up.
    pub async fn rebuild(&self, name: &str) -> Result<NamespaceId, ReadError> {
        let active = self.deployments(name).ok_or_else(|| ReadError::unknown(name))?.0.ns;
        let mut ns = active.next_generation();
        while self.inner.store.exists(&ns) {
            ns = ns.next_generation();
        }
        let (ns, cleanup) = {
            let mut registry = self.registry();
            let projection = registry.projections.get_mut(name).ok_or_else(|| ReadError::unknown(name))?;
            let Some(program) = projection.active.program.clone() else {
                return Err(ReadError::Conflict(format!("projection `{name}` has no module loaded to rebuild with")));
            };
            if projection.active.ns != active {
                return Err(ReadError::Conflict(format!("projection `{name}` changed version meanwhile; try again")));
            }
            let mut cleanup = Cleanup::default();
            if let Some(next) = projection.next.take() {
                cleanup.retire(next);
            }
            let file = projection.active.file.clone();
            projection.next = Some(Deployment::start(&self.workers_for(name), ns.clone(), program, file));
            (ns, cleanup)
        };
        self.clean_up(cleanup).await;
        Ok(ns)
    }

    /// Stop a projection and delete every namespace it has.
    pub async fn delete(&self, name: &str) -> Result<(), ReadError> {
        let cleanup = {
            let mut registry = self.registry();
            let projection = registry.projections.get(name).ok_or_else(|| ReadError::unknown(name))?;
            if let Some(file) =
                projection.active.file.as_ref().filter(|f| f.exists() && projection.active.program.is_some())
            {
                return Err(ReadError::Conflict(format!(
                    "projection `{name}` is still deployed from {}: remove the file first (or rebuild it)",
                    file.display()
                )));
            }
            let projection = registry.projections.remove(name).expect("checked");
            let mut cleanup = Cleanup::default();
            cleanup.retire(projection.active);
            if let Some(next) = projection.next {
                cleanup.retire(next);
            }
            cleanup
        };
        let mut cleanup = cleanup;
        for ns in self.inner.store.namespaces().map_err(ReadError::Store)? {
            if ns.name == name && !cleanup.drop.contains(&ns) {
                cleanup.drop.push(ns);
            }
        }
        self.inner.store.forget(name).map_err(ReadError::Store)?;
        self.clean_up(cleanup).await;
        Ok(())
    }

    /// What became of each module file.
    pub fn files(&self) -> Vec<FileStatus> {
        self.registry().files.values().cloned().collect()
    }

    /// Names of the known projections.
    pub fn names(&self) -> Vec<String> {
        self.registry().projections.keys().cloned().collect()
    }

    /// The serving and rebuilding deployments of `name`.
    pub fn deployments(&self, name: &str) -> Option<(deployment::View, Option<deployment::View>)> {
        let registry = self.registry();
        let p = registry.projections.get(name)?;
        Some((p.active.view(), p.next.as_ref().map(Deployment::view)))
    }
}

/// Resolves once the runtime is shutting down.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Cleanup {
    /// Stop a deployment's worker and drop its namespace.
    fn retire(&mut self, mut deployment: Deployment) {
        self.stop.extend(deployment.worker.take());
        self.drop.push(deployment.ns);
    }
}
