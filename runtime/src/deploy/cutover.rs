//! Blue/green: a rebuilt version takes over reads once it has caught up
//! with the serving one, checked every [`SUPERVISE_EVERY`]; what it replaces
//! is stopped and dropped off the registry lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::deployment::Pool;
use super::{Deployment, Deployments};
use crate::host::Guest;
use crate::store::{NamespaceId, Reader};
use crate::worker::{State, WorkerHandle};

/// How often rebuilding versions are checked for cutover.
const SUPERVISE_EVERY: Duration = Duration::from_millis(50);

/// Work to do after the registry lock is released (stopping a worker joins
/// its thread).
#[derive(Default)]
#[must_use]
pub(super) struct Cleanup {
    pub(super) stop: Vec<WorkerHandle>,
    pub(super) drop: Vec<NamespaceId>,
    /// Read pools of the versions dropped: reads under way end first.
    pub(super) readers: Vec<Arc<Pool<Box<dyn Reader>>>>,
    /// Their query pools: queries under way end first too.
    pub(super) queries: Vec<Arc<Pool<Box<dyn Guest>>>>,
    /// Module files of shadows discarded (ADR 48).
    pub(super) shadows: Vec<std::path::PathBuf>,
}

impl Cleanup {
    /// Stop a deployment's worker and drop its namespace.
    pub(super) fn retire(&mut self, mut deployment: Deployment) {
        self.stop.extend(deployment.worker.take());
        self.drop.push(deployment.ns);
        self.readers.push(deployment.readers);
        self.queries.push(deployment.queries);
    }
}

impl Deployments {
    pub(super) fn spawn_supervisor(&self) {
        let deployments = self.clone();
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(SUPERVISE_EVERY) => {
                        let cleanup = deployments.cut_over_caught_up();
                        deployments.clean_up(cleanup).await;
                    }
                    () = stopped(&mut stop) => return,
                }
            }
        });
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

    pub(super) async fn clean_up(&self, cleanup: Cleanup) {
        if cleanup.stop.is_empty() && cleanup.drop.is_empty() {
            return;
        }
        // A read that took the old version before the switch finishes on
        // it; one that comes later finds it retired and reads the new one.
        for readers in &cleanup.readers {
            readers.retire().await;
        }
        for queries in &cleanup.queries {
            queries.retire().await;
        }
        let store = self.inner.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            cleanup.stop.into_iter().for_each(WorkerHandle::stop);
            for file in cleanup.shadows {
                if let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!("cannot remove {}: {e}", file.display());
                }
                // The folder goes with its last shadow (this fails while one is left).
                let _ = file.parent().map(std::fs::remove_dir);
            }
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
}

/// Resolves once reel is shutting down.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
