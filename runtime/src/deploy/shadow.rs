//! Shadow runs (ADR 48): a module built into a namespace of its own beside
//! the serving version, which keeps serving; once it has caught up, the two
//! read models are compared at one position; then the shadow is promoted
//! (reads switch to it, as at a cut-over) or discarded (nothing of it
//! stays). A hot swap of the same version under `swap=shadow` waits for a
//! shadow run of the new code and is taken only when its diff is empty.
//!
//! The same position: the shadow is held where it is (it reads no further),
//! the serving version's read model is read in one snapshot once its
//! checkpoint is at or past the shadow's, at position P; the shadow then
//! applies the events up to exactly P and its read model is read. The
//! serving version never stops.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use reel_model::Cursor;

use super::cutover::Cleanup;
use super::{DeployError, Deployment, Deployments, FileStatus, View};
use crate::modules::{Loaded, Module, Program};
use crate::store::diff::{Difference, diff};
use crate::store::whole::WholeModel;
use crate::store::{NamespaceId, StoreError};
use crate::worker::{Control, State};

/// How often a shadow is checked for having caught up.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Longest wait for the serving version to reach the shadow's position.
const SERVING_PATIENCE: Duration = Duration::from_secs(60);

/// The least time a read of a whole read model may take (the query
/// deadline is for reads of a few rows).
const READ_DEADLINE: Duration = Duration::from_secs(60);

/// A module built beside the serving version, for comparison.
pub(super) struct Shadow {
    pub(super) deployment: Deployment,
    /// Its module, kept at `{data_dir}/shadows/{slug}.wasm` while it runs
    /// (it is run again after a restart).
    pub(super) module: PathBuf,
    /// The modules folder's file whose hot swap waits for it (`swap=shadow`).
    pub(super) swap: Option<PathBuf>,
    pub(super) stage: Arc<Mutex<Stage>>,
}

/// Where a shadow run's comparison is.
#[derive(Debug, Clone)]
pub enum Stage {
    /// The shadow builds up to the head.
    Building,
    /// Held at a position, the two read models being read and compared.
    Comparing,
    /// Compared.
    Compared(Arc<Compared>),
    /// The comparison could not be made.
    Failed(String),
}

/// The two read models compared at one position.
#[derive(Debug)]
pub struct Compared {
    /// The position both had applied.
    pub cursor: Cursor,
    /// What differs, in order (tables by name, rows by key, then KV keys).
    pub differences: Vec<Difference>,
}

/// What the API shows of a shadow run.
#[derive(Clone)]
pub struct ShadowView {
    /// The shadow's deployment.
    pub view: View,
    /// The file whose hot swap waits for it, if any.
    pub swap: Option<PathBuf>,
    /// Its comparison.
    pub stage: Stage,
}

/// A page of a shadow run's differences.
#[derive(Debug, Serialize)]
pub struct DiffPage {
    /// The position both read models were read at.
    pub position: i64,
    /// The full cursor (with the transaction id on PostgreSQL).
    pub cursor: Cursor,
    /// How many differences there are in all.
    pub differences: usize,
    /// This page's.
    pub items: Vec<Difference>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<usize>,
}

impl Deployments {
    /// `{data_dir}/shadows/`: the modules shadows run.
    fn shadows_dir(&self) -> PathBuf {
        self.inner.config.data_dir.join("shadows")
    }

    /// Build the module `bytes` into a shadow of projection `name`, beside
    /// its serving version; an earlier shadow of it is discarded.
    pub async fn shadow(&self, name: &str, bytes: Vec<u8>) -> Result<NamespaceId, DeployError> {
        let dir = self.shadows_dir();
        let loader = self.inner.loader.clone();
        let path = dir.join(format!("{name}.upload.wasm"));
        let loaded = tokio::task::spawn_blocking(move || loader.load_bytes(&path, &bytes).map(|l| (l, bytes)))
            .await
            .map_err(|e| DeployError::Conflict(format!("loading the module crashed: {e}")))?;
        let (module, bytes) = match loaded {
            Ok((Loaded::Projection(module), bytes)) => (module, bytes),
            Ok(_) => {
                return Err(DeployError::Invalid(
                    "the module is not a projection: shadow runs build read models".into(),
                ));
            }
            Err(e) => return Err(DeployError::Invalid(e.to_string())),
        };
        self.start_shadow(name, module, Some(bytes), None).await
    }

    /// Start a shadow of `name` running `module`: its file written from
    /// `bytes` (else copied from the module's own path); `swap`: the modules
    /// folder's file whose hot swap waits for it.
    async fn start_shadow(
        &self,
        name: &str,
        module: Arc<Module>,
        bytes: Option<Vec<u8>>,
        swap: Option<PathBuf>,
    ) -> Result<NamespaceId, DeployError> {
        let manifest = &module.manifest;
        if manifest.name != name {
            return Err(DeployError::Invalid(format!(
                "the module provides projection `{}`, not `{name}`",
                manifest.name
            )));
        }
        if module.emits.is_some() {
            return Err(DeployError::Invalid(format!(
                "`{name}` is a reactor: a shadow of it would append events; shadow runs are for projections"
            )));
        }
        let (active, next) = self.views(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?;
        let mut ns = if manifest.version == active.ns.version {
            active.ns.next_generation()
        } else {
            NamespaceId::new(name, &manifest.version)
        };
        let taken = |ns: &NamespaceId| next.as_ref().is_some_and(|n| n.ns == *ns) || self.inner.store.exists(ns);
        while taken(&ns) {
            ns = ns.next_generation();
        }
        let file = self.shadows_dir().join(format!("{}.wasm", ns.slug()));
        let write = {
            let (file, source) = (file.clone(), module.path.clone());
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(file.parent().expect("in a folder"))?;
                match bytes {
                    Some(bytes) => std::fs::write(&file, bytes),
                    None => std::fs::copy(&source, &file).map(|_| ()),
                }
            })
        };
        write.await.map_err(|e| DeployError::Conflict(e.to_string()))?.map_err(|e| {
            DeployError::Conflict(format!("cannot keep the shadow's module at {}: {e}", file.display()))
        })?;
        let stage = Arc::new(Mutex::new(Stage::Building));
        let cleanup = {
            let mut registry = self.registry();
            let Some(projection) = registry.projections.get_mut(name) else {
                let _ = std::fs::remove_file(&file);
                return Err(DeployError::Unknown(name.to_owned()));
            };
            if projection.active.ns != active.ns {
                let _ = std::fs::remove_file(&file);
                return Err(DeployError::Conflict(format!("projection `{name}` changed version meanwhile; try again")));
            }
            let mut cleanup = Cleanup::default();
            if let Some(old) = projection.shadow.take() {
                tracing::info!("discarding the shadow {} of {name}: a new shadow replaces it", old.deployment.ns);
                cleanup.shadows.push(old.module.clone());
                cleanup.retire(old.deployment);
            }
            tracing::info!("building the shadow {ns} beside {}, which keeps serving", active.ns);
            let deployment = Deployment::start(&self.workers_for(name), ns.clone(), Program::Wasm(module), None);
            projection.shadow = Some(Shadow { deployment, module: file, swap, stage: Arc::clone(&stage) });
            cleanup
        };
        self.clean_up(cleanup).await;
        self.spawn_comparison(name.to_owned(), ns.clone(), stage);
        Ok(ns)
    }

    /// Compare the shadow `ns` of `name` with the serving version once it
    /// has caught up; then take or refuse the hot swap waiting for it.
    fn spawn_comparison(&self, name: String, ns: NamespaceId, stage: Arc<Mutex<Stage>>) {
        let deployments = self.clone();
        tokio::spawn(async move {
            let mut stop = deployments.inner.stop.subscribe();
            loop {
                if *stop.borrow_and_update() {
                    return;
                }
                let Some(shadow) = deployments.shadow_view(&name).filter(|s| s.view.ns == ns) else { return };
                let status = shadow.view.status.snapshot();
                if status.state == State::Stopped {
                    let message = format!(
                        "the shadow stopped at event {}: {}",
                        status.stopped_at.unwrap_or_default(),
                        status.last_error.map(|e| e.message).unwrap_or_default()
                    );
                    set(&stage, Stage::Failed(message));
                    break;
                }
                if status.state == State::Running && status.at_head {
                    deployments.compare_shadow(&name).await.ok();
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
            deployments.decide_swap(&name, &ns).await;
        });
    }

    /// Compare the shadow of `name` with the serving version, both at one
    /// position (see the module's documentation): the outcome is its stage.
    pub async fn compare_shadow(&self, name: &str) -> Result<Arc<Compared>, DeployError> {
        let shadow = self.shadow_view(name).ok_or_else(|| no_shadow(name))?;
        let stage = {
            let registry = self.registry();
            let s = registry.projections.get(name).and_then(|p| p.shadow.as_ref()).ok_or_else(|| no_shadow(name))?;
            let mut now = s.stage.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*now, Stage::Comparing) {
                return Err(DeployError::Conflict(format!("the shadow of `{name}` is being compared already")));
            }
            *now = Stage::Comparing;
            Arc::clone(&s.stage)
        };
        let outcome = self.compare(name, &shadow.view.ns).await;
        self.control_shadow(name, &shadow.view.ns, Control::Release);
        match outcome {
            Ok(compared) => {
                let compared = Arc::new(compared);
                tracing::info!(
                    "shadow {} of {name} compared at {}: {} differences",
                    shadow.view.ns,
                    compared.cursor,
                    compared.differences.len()
                );
                set(&stage, Stage::Compared(Arc::clone(&compared)));
                Ok(compared)
            }
            Err(e) => {
                tracing::warn!("shadow {} of {name}: {e}", shadow.view.ns);
                set(&stage, Stage::Failed(e.to_string()));
                Err(e)
            }
        }
    }

    /// Hold the shadow `ns`, read the serving version at its position P (at
    /// or past the shadow's), let the shadow reach P, read it, compare.
    async fn compare(&self, name: &str, ns: &NamespaceId) -> Result<Compared, DeployError> {
        let held = self.hold_at(name, ns, None).await?;
        let serving = self.views(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?.0;
        self.serving_reaches(name, &serving, held).await?;
        let ours = self.read_whole(&serving.ns).await?;
        let at = ours.checkpoint.cursor;
        let reached = self.hold_at(name, ns, Some(at)).await?;
        let theirs = self.read_whole(ns).await?;
        if reached != at || theirs.checkpoint.cursor != at {
            return Err(DeployError::Conflict(format!(
                "the shadow was read at {} and the serving version at {at}: not the same position; compare again",
                theirs.checkpoint.cursor
            )));
        }
        let differences = tokio::task::spawn_blocking(move || diff(&ours, &theirs))
            .await
            .map_err(|e| DeployError::Conflict(format!("the comparison crashed: {e}")))?;
        Ok(Compared { cursor: at, differences })
    }

    /// Send the shadow `ns` of `name` a control message; false when it is
    /// gone.
    fn control_shadow(&self, name: &str, ns: &NamespaceId, control: Control) -> bool {
        let registry = self.registry();
        let worker = registry
            .projections
            .get(name)
            .and_then(|p| p.shadow.as_ref())
            .filter(|s| s.deployment.ns == *ns)
            .and_then(|s| s.deployment.worker.as_ref());
        match worker {
            Some(worker) => {
                worker.send(control);
                true
            }
            None => false,
        }
    }

    /// Hold the shadow at `at` (where it is, for `None`) and wait until it
    /// is there: its committed checkpoint.
    async fn hold_at(&self, name: &str, ns: &NamespaceId, at: Option<Cursor>) -> Result<Cursor, DeployError> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        if !self.control_shadow(name, ns, Control::Hold { at, reply }) {
            return Err(DeployError::Conflict(format!("the shadow of `{name}` is gone (discarded or replaced)")));
        }
        loop {
            tokio::select! {
                answer = &mut answer => return match answer {
                    Ok(Ok(cursor)) => Ok(cursor),
                    Ok(Err(e)) => Err(DeployError::Worker(e)),
                    Err(_) => Err(DeployError::Conflict(format!("the shadow of `{name}` stopped before reaching {}",
                        at.map_or_else(|| "its hold".to_owned(), |c| c.to_string())))),
                },
                () = tokio::time::sleep(WATCH_EVERY) => {
                    let Some(shadow) = self.shadow_view(name).filter(|s| s.view.ns == *ns) else {
                        return Err(DeployError::Conflict(format!("the shadow of `{name}` is gone (discarded or replaced)")));
                    };
                    let status = shadow.view.status.snapshot();
                    if matches!(status.state, State::Stopped | State::Paused | State::Fenced) {
                        return Err(DeployError::Conflict(format!(
                            "the shadow of `{name}` is {:?} at {} and cannot reach {}: {}",
                            status.state,
                            status.cursor,
                            at.map_or_else(|| "its hold".to_owned(), |c| c.to_string()),
                            status.last_error.map(|e| e.message).unwrap_or_default()
                        )));
                    }
                }
            }
        }
    }

    /// Wait until the serving version's committed checkpoint is at or past
    /// `cursor` (it moves on while the shadow is held).
    async fn serving_reaches(&self, name: &str, serving: &View, cursor: Cursor) -> Result<(), DeployError> {
        let deadline = tokio::time::Instant::now() + SERVING_PATIENCE;
        let store = self.inner.store.clone();
        let ns = serving.ns.clone();
        let mut reader = None;
        loop {
            let (back, at) = {
                let (store, ns) = (store.clone(), ns.clone());
                tokio::task::spawn_blocking(move || {
                    let mut reader = match reader {
                        Some(reader) => reader,
                        None => store
                            .open_reader(&ns, READ_DEADLINE)?
                            .ok_or_else(|| StoreError::NotFound(format!("{ns} has no data")))?,
                    };
                    let at = reader.checkpoint()?.cursor;
                    Ok::<_, StoreError>((Some(reader), at))
                })
                .await
                .map_err(|e| DeployError::Conflict(e.to_string()))??
            };
            reader = back;
            if at >= cursor {
                return Ok(());
            }
            let state = serving.status.state();
            if tokio::time::Instant::now() >= deadline || !matches!(state, State::Running | State::Retrying) {
                return Err(DeployError::Conflict(format!(
                    "the serving version of `{name}` is at {at}, behind the shadow at {cursor}, and {}: compare \
                     again once it has caught up",
                    if matches!(state, State::Running | State::Retrying) {
                        format!("did not get there within {SERVING_PATIENCE:?}")
                    } else {
                        format!("is {state:?}")
                    }
                )));
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// The whole read model of `ns`, read in one snapshot.
    async fn read_whole(&self, ns: &NamespaceId) -> Result<WholeModel, DeployError> {
        let store = self.inner.store.clone();
        let deadline = self.inner.config.limits_for(&ns.name).query_timeout.max(READ_DEADLINE);
        let ns = ns.clone();
        tokio::task::spawn_blocking(move || {
            let mut reader =
                store.open_reader(&ns, deadline)?.ok_or_else(|| StoreError::NotFound(format!("{ns} has no data")))?;
            let mut whole = WholeModel::default();
            reader.dump(&mut whole)?;
            Ok::<_, StoreError>(whole)
        })
        .await
        .map_err(|e| DeployError::Conflict(e.to_string()))?
        .map_err(DeployError::from)
    }

    /// The shadow of `name`, if it has one.
    pub fn shadow_view(&self, name: &str) -> Option<ShadowView> {
        let registry = self.registry();
        let shadow = registry.projections.get(name)?.shadow.as_ref()?;
        let stage = shadow.stage.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(ShadowView { view: shadow.deployment.view(), swap: shadow.swap.clone(), stage })
    }

    /// A page of the differences the shadow of `name` was found to have:
    /// `limit` after the first `after`.
    pub fn shadow_diff(&self, name: &str, after: usize, limit: usize) -> Result<DiffPage, DeployError> {
        let shadow = self.shadow_view(name).ok_or_else(|| no_shadow(name))?;
        let compared = match shadow.stage {
            Stage::Compared(compared) => compared,
            Stage::Building => {
                let s = shadow.view.status.snapshot();
                return Err(DeployError::Conflict(format!(
                    "the shadow of `{name}` is still building ({:?}, at position {}): it is compared once it has \
                     caught up; see GET /projections/{name}",
                    s.state, s.cursor.id
                )));
            }
            Stage::Comparing => {
                return Err(DeployError::Conflict(format!("the shadow of `{name}` is being compared; ask again")));
            }
            Stage::Failed(why) => {
                return Err(DeployError::Conflict(format!(
                    "the shadow of `{name}` could not be compared: {why} (POST \
                     /projections/{name}/shadow/compare tries again)"
                )));
            }
        };
        let all = &compared.differences;
        let from = after.min(all.len());
        let to = from.saturating_add(limit).min(all.len());
        Ok(DiffPage {
            position: compared.cursor.id,
            cursor: compared.cursor,
            differences: all.len(),
            items: all[from..to].to_vec(),
            next: (to < all.len()).then_some(to),
        })
    }

    /// Switch reads to the shadow of `name`, as a cut-over does: it becomes
    /// the version being rebuilt (one rebuilding already is abandoned), its
    /// module file goes into the modules folder in place of the serving
    /// version's, and reads switch once it has caught up.
    pub async fn promote(&self, name: &str) -> Result<NamespaceId, DeployError> {
        let (cleanup, ns, target, module) = {
            let mut registry = self.registry();
            let projection = registry.projections.get_mut(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?;
            let Some(shadow) = projection.shadow.take() else { return Err(no_shadow(name)) };
            let target = shadow
                .swap
                .clone()
                .or_else(|| projection.active.file.clone())
                .unwrap_or_else(|| self.inner.config.modules_dir.join(format!("{name}.wasm")));
            let mut cleanup = Cleanup::default();
            if let Some(next) = projection.next.take() {
                tracing::info!(
                    "abandoning the rebuild of {}: the shadow {} is promoted",
                    next.ns,
                    shadow.deployment.ns
                );
                cleanup.retire(next);
            }
            let mut deployment = shadow.deployment;
            if let Some(worker) = &deployment.worker {
                worker.send(Control::Release);
            }
            deployment.file = Some(target.clone());
            let module = deployment.program.as_ref().and_then(|p| p.module()).cloned();
            if let Some(m) = &module {
                // The file about to land is this module: the watcher finds
                // it loaded already.
                let provides = format!("{}@{}", m.manifest.name, m.manifest.version);
                let status = FileStatus::loaded(&target, "projection", provides, &m.hash, m.compile_time, m.cached);
                registry.files.insert(target.clone(), status);
            }
            let ns = deployment.ns.clone();
            let projection = registry.projections.get_mut(name).expect("checked");
            projection.active.module_error = None;
            tracing::info!(
                "promoting the shadow {ns}: reads switch to it from {} once it has caught up",
                projection.active.ns
            );
            projection.next = Some(deployment);
            (cleanup, ns, (shadow.swap.is_none()).then_some(target), shadow.module)
        };
        if let Some(target) = target {
            let tmp = target.with_extension("wasm.promoting");
            let placed = std::fs::copy(&module, &tmp).and_then(|_| std::fs::rename(&tmp, &target));
            if let Err(e) = placed {
                tracing::warn!("cannot put the promoted module {} at {}: {e}", module.display(), target.display());
            }
        }
        let _ = std::fs::remove_file(&module);
        let _ = module.parent().map(std::fs::remove_dir);
        self.clean_up(cleanup).await;
        Ok(ns)
    }

    /// Stop the shadow of `name` and drop its namespace and module file.
    pub async fn discard_shadow(&self, name: &str) -> Result<NamespaceId, DeployError> {
        let shadow = {
            let mut registry = self.registry();
            let projection = registry.projections.get_mut(name).ok_or_else(|| DeployError::Unknown(name.to_owned()))?;
            projection.shadow.take().ok_or_else(|| no_shadow(name))?
        };
        let ns = shadow.deployment.ns.clone();
        tracing::info!("discarding the shadow {ns} of {name}");
        let mut cleanup = Cleanup::default();
        cleanup.shadows.push(shadow.module);
        cleanup.retire(shadow.deployment);
        self.clean_up(cleanup).await;
        Ok(ns)
    }

    /// Whether a new build of the serving version of `module`'s projection
    /// must pass a shadow run before it is swapped in (`swap=shadow`).
    pub(super) fn swap_waits_for_shadow(&self, module: &Module) -> bool {
        let name = &module.manifest.name;
        if !self.inner.config.swap_shadow_for(name) || module.emits.is_some() {
            return false;
        }
        let registry = self.registry();
        let Some(projection) = registry.projections.get(name) else { return false };
        let active = &projection.active;
        active.ns.version == module.manifest.version
            && active.program.as_ref().and_then(|p| p.module()).is_some_and(|m| m.hash != module.hash)
    }

    /// A new build of the serving version arrived in `path` under
    /// `swap=shadow`: build it as a shadow first.
    pub(super) async fn swap_after_shadow(&self, path: &Path, module: Arc<Module>) -> Result<(), String> {
        let name = module.manifest.name.clone();
        self.start_shadow(&name, module, None, Some(path.to_owned()))
            .await
            .map(|ns| {
                tracing::info!(
                    "{}: a new build of the serving version of `{name}`; under swap=shadow it is swapped in once a \
                 shadow run ({ns}) shows the same read model",
                    path.display()
                );
            })
            .map_err(|e| e.to_string())
    }

    /// The shadow `ns` of `name` was compared: a hot swap waiting for it is
    /// taken when nothing differs, refused otherwise (the shadow stays, to
    /// be looked at, promoted or discarded).
    async fn decide_swap(&self, name: &str, ns: &NamespaceId) {
        let Some(shadow) = self.shadow_view(name).filter(|s| s.view.ns == *ns) else { return };
        let Some(path) = shadow.swap.clone() else { return };
        let refusal = match &shadow.stage {
            Stage::Compared(c) if c.differences.is_empty() => None,
            Stage::Compared(c) => Some(format!(
                "hot swap refused (swap=shadow): the shadow run of this build differs from the serving read model \
                 at position {} in {} rows or keys; see GET /projections/{name}/shadow/diff, then promote it \
                 (reel shadow {name} --promote) or replace the file",
                c.cursor,
                c.differences.len()
            )),
            Stage::Failed(why) => Some(format!("hot swap refused (swap=shadow): the shadow run failed: {why}")),
            Stage::Building | Stage::Comparing => return,
        };
        let cleanup = {
            let mut registry = self.registry();
            let workers = self.workers_for(name);
            let Some(projection) = registry.projections.get_mut(name) else { return };
            if projection.shadow.as_ref().is_none_or(|s| s.deployment.ns != *ns) {
                return;
            }
            let mut cleanup = Cleanup::default();
            match &refusal {
                Some(why) => {
                    tracing::warn!("{}: {why}", path.display());
                    projection.active.module_error = Some(why.clone());
                }
                None => {
                    let shadow = projection.shadow.take().expect("checked");
                    let program = shadow.deployment.program.clone().expect("a shadow runs a module");
                    tracing::info!("{}: the shadow run shows the same read model; swapping it in", path.display());
                    projection.active.swap(&workers, program, Some(path.clone()));
                    cleanup.shadows.push(shadow.module);
                    cleanup.retire(shadow.deployment);
                }
            }
            if let Some(file) = registry.files.get_mut(&path) {
                file.error = refusal;
            }
            cleanup
        };
        self.clean_up(cleanup).await;
    }

    /// Shadows left running by the previous run: built on from their
    /// checkpoints (their comparisons are made again).
    pub(super) async fn restore_shadows(&self) {
        let dir = self.shadows_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for path in entries.flatten().map(|e| e.path()) {
            let slug = path.file_name().and_then(|f| f.to_str()).and_then(|f| f.strip_suffix(".wasm"));
            let Some(ns) =
                slug.and_then(NamespaceId::from_slug).filter(|_| !path.to_string_lossy().ends_with(".upload.wasm"))
            else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            let loader = self.inner.loader.clone();
            let file = path.clone();
            let loaded = tokio::task::spawn_blocking(move || loader.load(&file)).await;
            let module = match loaded {
                Ok(Ok(Loaded::Projection(module))) if self.views(&ns.name).is_some() => module,
                _ => {
                    tracing::warn!("{}: not a shadow reel can run again; dropping it", path.display());
                    let _ = std::fs::remove_file(&path);
                    if let Err(e) = self.inner.store.drop_namespace(&ns) {
                        tracing::warn!("cannot drop {ns}: {e}");
                    }
                    continue;
                }
            };
            let stage = Arc::new(Mutex::new(Stage::Building));
            {
                let mut registry = self.registry();
                let Some(projection) = registry.projections.get_mut(&ns.name) else { continue };
                let deployment =
                    Deployment::start(&self.workers_for(&ns.name), ns.clone(), Program::Wasm(module), None);
                tracing::info!("building the shadow {ns} on from where the previous run left it");
                projection.shadow = Some(Shadow { deployment, module: path, swap: None, stage: Arc::clone(&stage) });
            }
            self.spawn_comparison(ns.name.clone(), ns, stage);
        }
    }
}

fn set(stage: &Mutex<Stage>, now: Stage) {
    *stage.lock().unwrap_or_else(|p| p.into_inner()) = now;
}

fn no_shadow(name: &str) -> DeployError {
    DeployError::Conflict(format!("projection `{name}` has no shadow run (start one with reel shadow {name} FILE)"))
}
