//! The registry of deployments: a worker per projection version, module
//! files deployed as they appear, change and go (`files.rs`), a new version
//! rebuilt beside the serving one and reads switched to it once it has
//! caught up (blue/green, `cutover.rs`), a module built beside the serving
//! version and compared with it (a shadow run, `shadow.rs`), and the control
//! of each worker.

mod cutover;
mod deployment;
mod files;
mod shadow;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

pub use deployment::{Deployment, POOL_SIZE, Pool, View};
pub use files::FileStatus;
pub use shadow::{DiffPage, ShadowView, Stage};

use crate::config::Config;
use crate::decide::Deciders;
use crate::modules::Loader;
use crate::modules::Program;
use crate::sinks::Sinks;
use crate::source::Source;
use crate::store::{NamespaceId, Store, StoreError};
use crate::worker::{Admin, Control, WorkerContext, WorkerError, WorkerHandle};

use cutover::Cleanup;

/// Why a deployment could not be controlled as asked.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// No projection of that name.
    #[error("no projection named `{0}`")]
    Unknown(String),
    /// Not possible in the projection's current state.
    #[error("{0}")]
    Conflict(String),
    /// What was sent cannot be used (a module that is not a projection's).
    #[error("{0}")]
    Invalid(String),
    /// Read-model storage failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The worker's answer.
    #[error("{0}")]
    Worker(WorkerError),
}

/// The registry of deployments: every projection's serving version and the
/// version rebuilding beside it, the module files they come from, and the
/// control of their workers. Shared by the API, the folder watcher, the
/// cut-over supervisor and tests.
#[derive(Clone)]
pub struct Deployments {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    loader: Loader,
    /// What every worker is given; limits and policy per projection.
    workers: WorkerContext,
    registry: Mutex<Registry>,
    /// The deciders the module files provide.
    deciders: Deciders,
    /// The sinks the module files provide.
    sinks: Sinks,
    /// Set at shutdown: the watcher and the supervisor end.
    stop: watch::Sender<bool>,
}

#[derive(Default)]
struct Registry {
    projections: BTreeMap<String, Projection>,
    files: BTreeMap<PathBuf, FileStatus>,
}

/// A projection: the version serving reads, maybe a version rebuilding,
/// and maybe a shadow built to be compared with it.
struct Projection {
    active: Deployment,
    next: Option<Deployment>,
    shadow: Option<shadow::Shadow>,
}

impl Deployments {
    /// Deploy the projections of the modules folder (and restore those
    /// known from a previous run), then watch the folder and cut rebuilt
    /// versions over as they catch up.
    pub async fn start(config: Config, source: Source, store: Store, loader: Loader) -> anyhow::Result<Self> {
        let deciders = Deciders::new(&config, source.clone());
        let sinks = Sinks::new(&config, source.clone());
        let workers = WorkerContext {
            source,
            store: store.clone(),
            limits: config.limits.clone(),
            batch: config.batch,
            poll_interval: config.poll_interval,
            on_error: None,
            handle: tokio::runtime::Handle::current(),
            data_dir: config.data_dir.clone(),
        };
        let deployments = Deployments {
            inner: Arc::new(Inner {
                config,
                store,
                loader,
                workers,
                registry: Mutex::new(Registry::default()),
                deciders,
                sinks,
                stop: watch::channel(false).0,
            }),
        };
        deployments.restore()?;
        deployments.load_folder().await?;
        deployments.restore_shadows().await;
        deployments.spawn_watcher()?;
        deployments.spawn_supervisor();
        Ok(deployments)
    }

    /// The record of projection `name`'s poison event at `position`, kept
    /// for a replay (ADR 49): its JSON text, `None` when there is none.
    pub async fn replay_record(&self, name: &str, position: i64) -> std::io::Result<Option<String>> {
        if !reel_model::is_projection_name(name) {
            return Ok(None);
        }
        let path = crate::worker::record::path(&self.inner.config.data_dir, name, position);
        match tokio::fs::read_to_string(path).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The deciders the module files provide.
    pub fn deciders(&self) -> &Deciders {
        &self.inner.deciders
    }

    /// The sinks the module files provide.
    pub fn sinks(&self) -> &Sinks {
        &self.inner.sinks
    }

    /// Stop the watcher, the supervisor and the workers.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        self.inner.sinks.shutdown().await;
        let handles: Vec<WorkerHandle> = {
            let mut registry = self.registry();
            registry
                .projections
                .values_mut()
                .flat_map(|p| {
                    [
                        p.active.worker.take(),
                        p.next.as_mut().and_then(|n| n.worker.take()),
                        p.shadow.as_mut().and_then(|s| s.deployment.worker.take()),
                    ]
                })
                .flatten()
                .collect()
        };
        let _ = tokio::task::spawn_blocking(move || handles.into_iter().for_each(WorkerHandle::stop)).await;
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
            registry
                .projections
                .insert(deployment.ns.name.clone(), Projection { active: deployment, next: None, shadow: None });
        }
        Ok(())
    }

    /// A loaded reactor other than `except` whose prefix overlaps `prefix`
    /// (one starts with the other): its name and prefix.
    pub fn reactor_overlapping(&self, prefix: &str, except: &str) -> Option<(String, String)> {
        let registry = self.registry();
        registry.projections.iter().filter(|(name, _)| name.as_str() != except).find_map(|(name, p)| {
            std::iter::once(&p.active).chain(p.next.as_ref()).find_map(|d| {
                let theirs = &d.program.as_ref()?.emits()?.stream_prefix;
                (theirs.starts_with(prefix) || prefix.starts_with(theirs.as_str()))
                    .then(|| (name.clone(), theirs.clone()))
            })
        })
    }

    /// The loaded reactor that emits to `stream`, and its prefix.
    pub fn emitter_of(&self, stream: &str) -> Option<(String, String)> {
        let registry = self.registry();
        registry.projections.iter().find_map(|(name, p)| {
            std::iter::once(&p.active).chain(p.next.as_ref()).find_map(|d| {
                let prefix = &d.program.as_ref()?.emits()?.stream_prefix;
                stream.starts_with(prefix.as_str()).then(|| (name.clone(), prefix.clone()))
            })
        })
    }

    /// Run `program` (from `file`, if any): a new projection, new code for a
    /// running version, or a new version rebuilt beside the serving one.
    ///
    /// The registry lock is never held across database calls (they block,
    /// and a runtime thread waiting on the lock could be the one that would
    /// drive the connection).
    fn deploy(&self, program: Program, file: Option<PathBuf>) -> Result<Cleanup, String> {
        let manifest = program.manifest().clone();
        if let Some(emits) = program.emits() {
            let prefix = &emits.stream_prefix;
            let overlap = self
                .inner
                .deciders
                .overlapping(prefix)
                .map(|(name, theirs)| format!("decider `{name}`'s `{theirs}*`"))
                .or_else(|| {
                    self.reactor_overlapping(prefix, &manifest.name)
                        .map(|(name, theirs)| format!("reactor `{name}`'s `{theirs}*`"))
                });
            if let Some(overlap) = overlap {
                return Err(format!(
                    "reactor `{}` would emit to streams `{prefix}*`, which overlap {overlap}: \
                     a stream has one writer",
                    manifest.name
                ));
            }
        }
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
            registry.projections.insert(manifest.name, Projection { active: deployment, next: None, shadow: None });
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
        self.registry().files.remove(path);
        self.release(path, None).0
    }

    /// Unload what `path` provided, but for the projection `keep` (the name it
    /// provides now): a file whose manifest was renamed lets its old name go,
    /// stopped and deletable, its read model readable until deleted. The names
    /// let go.
    fn release(&self, path: &Path, keep: Option<&str>) -> (Cleanup, Vec<String>) {
        let mut registry = self.registry();
        let mut cleanup = Cleanup::default();
        let mut released = Vec::new();
        for (name, projection) in registry.projections.iter_mut().filter(|(name, _)| Some(name.as_str()) != keep) {
            if projection.next.as_ref().is_some_and(|n| n.file.as_deref() == Some(path)) {
                cleanup.retire(projection.next.take().expect("checked"));
            }
            if projection.active.file.as_deref() == Some(path) && projection.active.program.is_some() {
                match keep {
                    None => tracing::info!(
                        "{} removed: stopping {}; its read model stays readable",
                        path.display(),
                        projection.active.ns
                    ),
                    Some(now) => tracing::info!(
                        "{} now provides `{now}`, not `{name}`: stopping {}; its read model stays readable \
                         until deleted (reel delete {name})",
                        path.display(),
                        projection.active.ns
                    ),
                }
                cleanup.stop.extend(projection.active.unload());
                released.push(name.clone());
            }
        }
        (cleanup, released)
    }

    /// Send a control message to the serving version's worker.
    /// Pause the serving version: answered once its worker has stopped
    /// taking batches (after the batch it is running, if any).
    pub async fn pause(&self, name: &str) -> Result<(), DeployError> {
        self.ask(name, false, |reply| Control::Pause { reply }).await
    }

    /// Resume the serving version (also retries a stopped projection):
    /// answered once its worker runs again, so a read that waits for a later
    /// position right after it does not find it paused.
    pub async fn resume(&self, name: &str) -> Result<(), DeployError> {
        self.ask(name, false, |reply| Control::Resume { reply }).await
    }

    /// Send a control message to the serving version's worker, or (with
    /// `rebuilding`) to the worker of the version being rebuilt beside it.
    fn control_version(&self, name: &str, rebuilding: bool, control: Control) -> Result<(), DeployError> {
        let registry = self.registry();
        let projection = registry.projections.get(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?;
        let version = if rebuilding { projection.next.as_ref() } else { Some(&projection.active) };
        let Some(version) = version else {
            return Err(DeployError::Conflict(format!("projection `{name}` has no version being rebuilt")));
        };
        match &version.worker {
            Some(worker) => {
                worker.send(control);
                Ok(())
            }
            None => Err(DeployError::Conflict(format!("projection `{name}` is not running: its module is not loaded"))),
        }
    }

    /// Apply a dead-lettered event again with the current code (through the
    /// serving version's worker); on success it leaves the dead-letter table.
    pub async fn retry_dead_letter(&self, name: &str, position: i64) -> Result<(), DeployError> {
        self.ask(name, false, |reply| Control::RetryDeadLetter { position, reply }).await
    }

    /// Skip the event the serving version stopped at (to the dead letters),
    /// or discard a dead letter, through its worker (ADR 21).
    /// A skip the serving version is not stopped at goes to the version being
    /// rebuilt, if that one is stopped there (a rebuild under policy `stop`
    /// halts at every event the serving version had skipped).
    pub async fn admin(&self, name: &str, action: Admin, position: i64, by: Option<String>) -> Result<(), DeployError> {
        let asked = by.clone();
        let serving = self.ask(name, false, |reply| Control::Admin { action, position, by: asked, reply }).await;
        let Err(DeployError::Worker(WorkerError::NotStoppedAt(refusal))) = serving else { return serving };
        if action != Admin::Skip || self.views(name).is_none_or(|(_, next)| next.is_none()) {
            return Err(DeployError::Worker(WorkerError::NotStoppedAt(refusal)));
        }
        match self.ask(name, true, |reply| Control::Admin { action, position, by, reply }).await {
            Err(DeployError::Worker(WorkerError::NotStoppedAt(other))) => Err(DeployError::Worker(
                WorkerError::NotStoppedAt(format!("{refusal}; the version being rebuilt: {other}")),
            )),
            rebuilt => rebuilt,
        }
    }

    /// Send the serving version's worker (or the rebuilding one's) a request
    /// and wait for its answer.
    async fn ask(
        &self,
        name: &str,
        rebuilding: bool,
        request: impl FnOnce(tokio::sync::oneshot::Sender<Result<(), WorkerError>>) -> Control,
    ) -> Result<(), DeployError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.control_version(name, rebuilding, request(reply))?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DeployError::Worker(e)),
            Err(_) => Err(DeployError::Conflict(format!("projection `{name}` stopped before answering"))),
        }
    }

    /// Rebuild the serving version from position 0 into a fresh namespace;
    /// reads stay on the current one until the rebuild catches up.
    pub async fn rebuild(&self, name: &str) -> Result<NamespaceId, DeployError> {
        let active = self.views(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?.0.ns;
        let mut ns = active.next_generation();
        while self.inner.store.exists(&ns) {
            ns = ns.next_generation();
        }
        let (ns, cleanup) = {
            let mut registry = self.registry();
            let projection = registry.projections.get_mut(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?;
            let Some(program) = projection.active.program.clone() else {
                return Err(DeployError::Conflict(format!("projection `{name}` has no module loaded to rebuild with")));
            };
            if projection.active.ns != active {
                return Err(DeployError::Conflict(format!("projection `{name}` changed version meanwhile; try again")));
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
    pub async fn delete(&self, name: &str) -> Result<(), DeployError> {
        let cleanup = {
            let mut registry = self.registry();
            let projection = registry.projections.get(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?;
            if let Some(file) =
                projection.active.file.as_ref().filter(|f| f.exists() && projection.active.program.is_some())
            {
                return Err(DeployError::Conflict(format!(
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
            if let Some(shadow) = projection.shadow {
                cleanup.shadows.push(shadow.module);
                cleanup.retire(shadow.deployment);
            }
            cleanup
        };
        let mut cleanup = cleanup;
        for ns in self.inner.store.namespaces()? {
            if ns.name == name && !cleanup.drop.contains(&ns) {
                cleanup.drop.push(ns);
            }
        }
        self.inner.store.forget(name)?;
        self.clean_up(cleanup).await;
        Ok(())
    }

    /// Names of the known projections.
    pub fn names(&self) -> Vec<String> {
        self.registry().projections.keys().cloned().collect()
    }

    /// The serving and rebuilding deployments of `name`.
    pub fn views(&self, name: &str) -> Option<(View, Option<View>)> {
        let registry = self.registry();
        let p = registry.projections.get(name)?;
        Some((p.active.view(), p.next.as_ref().map(Deployment::view)))
    }
}
