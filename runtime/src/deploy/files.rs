//! Module files: the folder loaded at start and watched, each file loaded
//! (compiled off the hot path) and deployed, or refused with its reason.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use super::{Deployments, cutover::stopped};
use crate::modules::{DeciderModule, Loaded, ModuleError, Program, SinkModule, watch::is_module};

/// What became of a module file.
#[derive(Debug, Clone, Serialize)]
pub struct FileStatus {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of its content when last read.
    pub hash: Option<String>,
    /// `name@version` it provides, when loaded.
    pub provides: Option<String>,
    /// What kind of module it is, when loaded: `projection`, `decider` or `sink`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Why it is not in use, when it failed.
    pub error: Option<String>,
    /// Compile (or cache load) time in milliseconds.
    pub compile_ms: Option<f64>,
    /// Being read and compiled now (seconds for big components): the other
    /// fields still describe the file's previous content, if any.
    pub compiling: bool,
    /// Whether the compiled code came from the cache.
    pub cached: Option<bool>,
    /// Projections this file provided before and provides no more (its
    /// manifest's name changed): unloaded, deletable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<String>,
}

impl FileStatus {
    /// A file seen, nothing known of it yet.
    fn seen(path: &Path) -> Self {
        FileStatus {
            path: path.to_owned(),
            hash: None,
            provides: None,
            kind: None,
            error: None,
            compile_ms: None,
            cached: None,
            compiling: false,
            released: Vec::new(),
        }
    }

    /// A file loaded as a module of `kind`, providing `name@version`.
    pub(super) fn loaded(
        path: &Path,
        kind: &'static str,
        provides: String,
        hash: &str,
        compile_time: Duration,
        cached: bool,
    ) -> Self {
        FileStatus {
            hash: Some(hash.to_owned()),
            provides: Some(provides),
            kind: Some(kind),
            compile_ms: Some(compile_time.as_secs_f64() * 1000.0),
            cached: Some(cached),
            ..FileStatus::seen(path)
        }
    }
}

impl Deployments {
    pub(super) async fn load_folder(&self) -> anyhow::Result<()> {
        let dir = &self.inner.config.modules_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_module(p))
            .collect();
        files.sort();
        for file in files {
            self.reload_file(file).await;
        }
        // Once all are in: a file not loaded yet is not in use yet.
        self.prune_compiled().await;
        Ok(())
    }

    pub(super) fn spawn_watcher(&self) -> anyhow::Result<()> {
        let dir = &self.inner.config.modules_dir;
        let (watch, mut changes) = crate::modules::watch::watch(dir, self.inner.config.watch_debounce)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        let deployments = self.clone();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            let _watch = watch;
            // Files load side by side, so a slow compile holds up no other
            // file; one file's changes load one after the other.
            let busy: Arc<Mutex<HashMap<PathBuf, bool>>> = Arc::default();
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Some(path) => deployments.reload_in_turn(&busy, path),
                        None => return,
                    },
                    () = stopped(&mut stop) => return,
                }
            }
        });
        Ok(())
    }

    /// Reload `path` on a task of its own, or once more after the reload of
    /// it already running (`busy`: the paths loading, and whether they
    /// changed again since).
    fn reload_in_turn(&self, busy: &Arc<Mutex<HashMap<PathBuf, bool>>>, path: PathBuf) {
        {
            let mut loading = busy.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(again) = loading.get_mut(&path) {
                *again = true;
                return;
            }
            loading.insert(path.clone(), false);
        }
        let (deployments, busy) = (self.clone(), busy.clone());
        tokio::spawn(async move {
            loop {
                if !*deployments.inner.stop.borrow() {
                    deployments.reload(path.clone()).await;
                }
                let mut loading = busy.lock().unwrap_or_else(PoisonError::into_inner);
                if loading.get(&path) == Some(&true) {
                    loading.insert(path.clone(), false);
                } else {
                    loading.remove(&path);
                    return;
                }
            }
        });
    }

    /// A module file appeared, changed or disappeared.
    pub async fn reload(&self, path: PathBuf) {
        self.reload_file(path).await;
        self.prune_compiled().await;
    }

    /// [`reload`](Self::reload), leaving the compile cache as it is.
    async fn reload_file(&self, path: PathBuf) {
        if !path.exists() {
            if let Some(name) = self.inner.deciders.unload(&path) {
                tracing::info!("{} removed: decider `{name}` leaves service", path.display());
            }
            if let Some(name) = self.inner.sinks.unload(&path) {
                tracing::info!("{} removed: sink `{name}` stops; its checkpoint stays", path.display());
            }
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
        } else {
            self.load(path).await;
        }
    }

    /// Drop the compiled code of module files no longer in use (replaced,
    /// removed, refused) from the cache.
    async fn prune_compiled(&self) {
        let keep: HashSet<String> = self.registry().files.values().filter_map(|f| f.hash.clone()).collect();
        let loader = self.inner.loader.clone();
        let removed = tokio::task::spawn_blocking(move || loader.prune_cache(&keep)).await.unwrap_or(0);
        if removed > 0 {
            tracing::debug!("removed the compiled code of {removed} modules no longer in use");
        }
    }

    /// Load the module file at `path` and deploy it, unless it is what
    /// already runs.
    async fn load(&self, path: PathBuf) {
        self.compiling(&path, true);
        let loader = self.inner.loader.clone();
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || loader.load(&file)).await;
        let loaded = loaded.unwrap_or_else(|e| {
            Err(ModuleError::Io { path: path.display().to_string(), message: format!("loader crashed: {e}") })
        });
        match loaded {
            Ok(Loaded::Decider(module)) => {
                self.inner.sinks.unload(&path);
                self.deploy_decider(path, module).await
            }
            Ok(Loaded::Sink(module)) => self.deploy_sink(path, module).await,
            Ok(Loaded::Projection(module)) => {
                // A file that provided a decider or a sink now provides a projection.
                self.inner.deciders.unload(&path);
                self.inner.sinks.unload(&path);
                let unchanged = self.registry().files.get(&path).and_then(|f| f.hash.clone())
                    == Some(module.hash.clone())
                    && self.registry().files.get(&path).is_some_and(|f| f.error.is_none());
                if unchanged {
                    self.compiling(&path, false);
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
                let name = module.manifest.name.clone();
                let provides = format!("{}@{}", module.manifest.name, module.manifest.version);
                let mut status =
                    FileStatus::loaded(&path, "projection", provides, &module.hash, module.compile_time, module.cached);
                if self.swap_waits_for_shadow(&module) {
                    // Listed first: the shadow's verdict is written into it.
                    self.registry().files.insert(path.clone(), status);
                    if let Err(error) = self.swap_after_shadow(&path, module).await {
                        self.file_failed(&path, None, error);
                    }
                    return;
                }
                match self.deploy(Program::Wasm(module), Some(path.clone())) {
                    Ok(cleanup) => {
                        let (released, names) = self.release(&path, Some(&name));
                        status.released = names;
                        self.registry().files.insert(path, status);
                        self.clean_up(cleanup).await;
                        self.clean_up(released).await;
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

    /// Serve a decider from `path`, or say why not. A file that provided a
    /// projection before stops it.
    async fn deploy_decider(&self, path: PathBuf, module: std::sync::Arc<DeciderModule>) {
        let unchanged = self
            .registry()
            .files
            .get(&path)
            .is_some_and(|f| f.error.is_none() && f.hash.as_deref() == Some(module.hash.as_str()));
        if unchanged {
            return;
        }
        let m = &module.manifest;
        let provides = format!("{}@{}", m.name, m.version);
        let status = FileStatus::loaded(&path, "decider", provides, &module.hash, module.compile_time, module.cached);
        let reactor = self.reactor_overlapping(&m.stream_prefix, "");
        let deployed = match reactor {
            Some((name, theirs)) => Err(format!(
                "decider `{}` would own streams `{}*`, which overlap reactor `{name}`'s `{theirs}*`: \
                 a stream has one writer",
                m.name, m.stream_prefix
            )),
            None => self.inner.deciders.deploy(module.clone()),
        };
        match deployed {
            Ok(()) => {
                tracing::info!(
                    "loaded {} as decider {}@{} (streams `{}*`)",
                    path.display(),
                    m.name,
                    m.version,
                    m.stream_prefix
                );
                let (released, _) = self.release(&path, None);
                self.registry().files.insert(path, status);
                self.clean_up(released).await;
            }
            Err(error) => {
                tracing::error!("{}: {error}", path.display());
                self.file_failed(&path, None, error);
            }
        }
    }

    /// Deliver with the sink of `path`, or say why not. A file that
    /// provided a projection or a decider before stops it.
    async fn deploy_sink(&self, path: PathBuf, module: std::sync::Arc<SinkModule>) {
        let unchanged = self
            .registry()
            .files
            .get(&path)
            .is_some_and(|f| f.error.is_none() && f.hash.as_deref() == Some(module.hash.as_str()));
        if unchanged {
            self.compiling(&path, false);
            return;
        }
        let m = &module.manifest;
        let provides = format!("{}@{}", m.name, m.version);
        let status = FileStatus::loaded(&path, "sink", provides, &module.hash, module.compile_time, module.cached);
        match self.inner.sinks.deploy(module.clone()) {
            Ok(()) => {
                tracing::info!(
                    "loaded {} as sink {}@{} (to {} `{}`)",
                    path.display(),
                    m.name,
                    m.version,
                    crate::sinks::broker_name(m.broker),
                    m.subject
                );
                self.inner.deciders.unload(&path);
                let (released, _) = self.release(&path, None);
                self.registry().files.insert(path, status);
                self.clean_up(released).await;
            }
            Err(error) => {
                tracing::error!("{}: {error}", path.display());
                self.file_failed(&path, None, error);
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
        let entry = registry.files.entry(path.to_owned()).or_insert_with(|| FileStatus::seen(path));
        entry.hash = hash;
        entry.error = Some(error);
        entry.compiling = false;
    }

    /// Mark `path` as being compiled (listed at once, even the first time it
    /// is seen), or no longer.
    fn compiling(&self, path: &Path, now: bool) {
        let mut registry = self.registry();
        if let Some(entry) = registry.files.get_mut(path) {
            entry.compiling = now;
        } else if now {
            registry.files.insert(path.to_owned(), FileStatus { compiling: true, ..FileStatus::seen(path) });
        }
    }

    /// What became of each module file.
    pub fn files(&self) -> Vec<FileStatus> {
        self.registry().files.values().cloned().collect()
    }
}
