//! Snapshots of streams' states in the database (ADR 26): a state not in
//! memory (after a restart, in another reel process, evicted from the cache)
//! starts from the stream's snapshot instead of its first event. A snapshot
//! belongs to the decider's code (its version and its file's digest): new
//! code, even at the same version, folds from the first event again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::command::CommandError;
use super::state::Loaded;
use super::{Deciders, Deployed};
use crate::source::Snapshot;

/// Which code made a state: the decider's version and its file's digest.
fn code(deployed: &Deployed) -> String {
    format!("{}:{}", deployed.module.manifest.version, deployed.module.hash)
}

impl Deciders {
    /// `stream`'s state as its snapshot holds it, or the initial state.
    pub(super) async fn load_snapshot(&self, deployed: &Arc<Deployed>, stream: &str) -> Result<Loaded, CommandError> {
        if self.inner.snapshot_every == 0 {
            return Ok(Loaded { state: None, version: 0, saved: 0 });
        }
        let name = &deployed.module.manifest.name;
        let snapshot = self.inner.source.commands().snapshot(name, &code(deployed), stream).await?;
        Ok(match snapshot {
            Some(s) => {
                deployed.counts.snapshots_loaded.fetch_add(1, Ordering::Relaxed);
                Loaded { state: Some(s.state.into()), version: s.version, saved: s.version }
            }
            None => Loaded { state: None, version: 0, saved: 0 },
        })
    }

    /// Save `loaded` as `stream`'s snapshot when it is far enough past the
    /// last one; a failure to save is logged, not the command's.
    pub(super) async fn snapshot_if_due(&self, deployed: &Arc<Deployed>, stream: &str, loaded: Loaded) -> Loaded {
        let every = self.inner.snapshot_every;
        if every == 0 || loaded.version - loaded.saved < every {
            return loaded;
        }
        let Some(state) = loaded.state.clone() else {
            return loaded;
        };
        let snapshot = Snapshot {
            decider: deployed.module.manifest.name.clone(),
            code: code(deployed),
            stream_id: stream.to_owned(),
            version: loaded.version,
            state: state.to_string(),
        };
        match self.inner.source.commands().save_snapshot(snapshot).await {
            Ok(()) => {
                deployed.counts.snapshots_saved.fetch_add(1, Ordering::Relaxed);
                Loaded { saved: loaded.version, ..loaded }
            }
            Err(e) => {
                let name = &deployed.module.manifest.name;
                tracing::warn!("cannot save a snapshot of `{stream}` for decider `{name}`: {e}");
                loaded
            }
        }
    }
}
