//! Status of projections, as `GET /projections` shows it: state, cursor,
//! lag and its cause, throughput, errors, the module, a rebuild's progress.

use reel_model::time::{now_micros, parse_micros};
use reel_model::{Cursor, OnError};
use serde::Serialize;

use super::{MAX_DEAD_LETTERS, ReadError, Reads};
use crate::deploy::{ShadowView, Stage, View};
use crate::source::{LagCause, SourceError};
use crate::worker::State;
use crate::worker::status::{AdminAction, ErrorReport};

/// Status of a projection, as `GET /projections/{name}` shows it.
#[derive(Debug, Serialize)]
pub struct ProjectionInfo {
    /// Name.
    pub name: String,
    /// Version serving reads.
    pub version: String,
    /// Its namespace (file or schema).
    pub namespace: String,
    /// State of the serving version.
    pub state: State,
    /// Last event position it has applied (or moved past).
    pub position: i64,
    /// Full cursor (with the transaction id on PostgreSQL).
    pub cursor: Cursor,
    /// Last event position in the log.
    pub head: i64,
    /// Events in the log it has not applied yet.
    pub lag: i64,
    /// Age of the oldest event not applied yet, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// When committed events are held back by a transaction still open
    /// elsewhere in the cluster (PostgreSQL): that transaction.
    pub blocked_by: Option<LagCause>,
    /// Set while the event log's database does not answer (ADR 43): what
    /// reel met. `head` and `lag` are then as last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_unreachable: Option<String>,
    /// Throughput over the last seconds.
    pub events_per_second: f64,
    /// Events applied since the worker started.
    pub events_applied: u64,
    /// Last failure.
    pub last_error: Option<ErrorReport>,
    /// Where it stopped (state `stopped`).
    pub stopped_at: Option<i64>,
    /// Events in its dead-letter table.
    pub dead_letters: usize,
    /// Events an administrator skipped (`reel skip`) since it started running here.
    pub skipped: u64,
    /// Dead letters an administrator discarded since it started running here.
    pub discarded: u64,
    /// The last admin actions (skip, discard), newest first: what, which
    /// event, who, when (ADR 21).
    pub admin_actions: Vec<AdminAction>,
    /// A reactor's emissions (absent for a projection).
    pub reactor: Option<ReactorInfo>,
    /// Where its code comes from.
    pub module: Option<ModuleInfo>,
    /// Why the latest module file for it was refused (it keeps running the
    /// previous code).
    pub module_error: Option<String>,
    /// A new version being built beside it.
    pub rebuild: Option<RebuildInfo>,
    /// A module built beside it to be compared with it (a shadow run, ADR 48).
    pub shadow: Option<ShadowInfo>,
}

/// A shadow run: its progress and its comparison with the serving version.
#[derive(Debug, Serialize)]
pub struct ShadowInfo {
    /// Its version, namespace, state and progress.
    #[serde(flatten)]
    pub progress: RebuildInfo,
    /// The module file whose hot swap waits for it (`swap=shadow`).
    pub swap: Option<String>,
    /// Its comparison with the serving version.
    pub comparison: ComparisonInfo,
}

/// Where a shadow run's comparison is.
#[derive(Debug, Serialize)]
pub struct ComparisonInfo {
    /// `building` (until it has caught up), `comparing`, `compared` or `failed`.
    pub state: &'static str,
    /// The position both read models were read at (`compared`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    /// How many rows and keys differ (`compared`): see
    /// `GET /projections/{name}/shadow/diff`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differences: Option<usize>,
    /// Why it could not be made (`failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The code of a projection version.
#[derive(Debug, Serialize)]
pub struct ModuleInfo {
    /// The module file (absent for projections compiled into reel).
    pub file: Option<String>,
    /// SHA-256 of the file.
    pub hash: Option<String>,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Event types it subscribes to (empty: all).
    pub event_types: Vec<String>,
    /// Stream prefixes it subscribes to (empty: all).
    pub stream_prefixes: Vec<String>,
    /// Its failure policy.
    pub on_error: OnError,
}

/// Progress of a version being rebuilt.
#[derive(Debug, Serialize)]
pub struct RebuildInfo {
    /// The version.
    pub version: String,
    /// Its namespace.
    pub namespace: String,
    /// Its state.
    pub state: State,
    /// Its position.
    pub position: i64,
    /// Events left.
    pub lag: i64,
    /// Its throughput.
    pub events_per_second: f64,
    /// Estimated seconds to catch up.
    pub eta_seconds: Option<f64>,
    /// Its last failure.
    pub last_error: Option<ErrorReport>,
    /// Where it stopped (state `stopped`): `reel skip` takes this position.
    pub stopped_at: Option<i64>,
}

impl Reads {
    /// Status of every projection.
    pub async fn list(&self) -> Result<Vec<ProjectionInfo>, ReadError> {
        let mut all = Vec::new();
        for name in self.inner.deployments.names() {
            match self.info(&name).await {
                Ok(info) => all.push(info),
                Err(ReadError::NotFound(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }

    /// The head, lag (events and seconds) and its cause for a projection at
    /// `cursor`; the head remembered for when the log does not answer.
    async fn lag(&self, cursor: Cursor) -> Result<(i64, i64, f64, Option<LagCause>), SourceError> {
        let head = self.source().head().await?;
        self.inner.last_head.fetch_max(head, std::sync::atomic::Ordering::Relaxed);
        let lag = self.source().count_after(cursor).await?;
        let lag_seconds = match self.source().oldest_after(cursor).await? {
            Some(occurred_at) if lag > 0 => {
                parse_micros(&occurred_at).map_or(0.0, |t| ((now_micros() - t).max(0)) as f64 / 1e6)
            }
            _ => 0.0,
        };
        let blocked_by = if lag > 0 { self.source().lag_cause(cursor).await? } else { None };
        Ok((head, lag, lag_seconds, blocked_by))
    }

    fn last_head(&self) -> i64 {
        self.inner.last_head.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Status of one projection.
    pub async fn info(&self, name: &str) -> Result<ProjectionInfo, ReadError> {
        let (active, next) = self.inner.deployments.views(name).ok_or_else(|| ReadError::unknown(name))?;
        let status = active.status.snapshot();
        let (head, lag, lag_seconds, blocked_by, log_unreachable) = match self.lag(status.cursor).await {
            Ok((head, lag, lag_seconds, blocked_by)) => (head, lag, lag_seconds, blocked_by, None),
            // The log's database does not answer: the status is still
            // served, from memory, saying so (ADR 43).
            Err(e @ (SourceError::Unavailable(_) | SourceError::Unreachable(_))) => {
                let head = self.last_head().max(status.cursor.id);
                (head, head - status.cursor.id, 0.0, None, Some(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let dead_letters =
            self.read(name, None, |ns| ns.dead_letters(0, MAX_DEAD_LETTERS)).await.map_or(0, |d| d.len());
        let rebuild = match next {
            Some(next) => Some(self.progress(&next, head, log_unreachable.is_some()).await?),
            None => None,
        };
        let shadow = match self.inner.deployments.shadow_view(name) {
            Some(shadow) => Some(self.shadow_info(shadow, head, log_unreachable.is_some()).await?),
            None => None,
        };
        Ok(ProjectionInfo {
            name: name.to_owned(),
            version: active.ns.version.clone(),
            namespace: active.ns.slug(),
            state: status.state,
            position: status.cursor.id,
            cursor: status.cursor,
            head,
            lag,
            lag_seconds,
            blocked_by,
            log_unreachable,
            events_per_second: status.events_per_second,
            events_applied: status.events_applied,
            last_error: status.last_error,
            stopped_at: status.stopped_at,
            dead_letters,
            skipped: status.skipped,
            discarded: status.discarded,
            admin_actions: status.admin_actions,
            reactor: active.program.as_ref().and_then(|p| p.emits()).map(|emits| ReactorInfo {
                stream_prefix: emits.stream_prefix.clone(),
                emitted: status.emitted,
                dropped: status.emissions_dropped,
                timers_fired: status.timers_fired,
                timers_pending: status.timers_pending,
                outbox: status.outbox,
            }),
            module: active.program.as_ref().map(|p| {
                let m = p.manifest();
                let module = p.module();
                ModuleInfo {
                    file: active.file.as_ref().map(|f| f.display().to_string()),
                    hash: module.map(|m| m.hash.clone()),
                    size: module.map(|m| m.size),
                    event_types: m.event_types.clone(),
                    stream_prefixes: m.stream_prefixes.clone(),
                    on_error: m.on_error,
                }
            }),
            module_error: active.module_error.clone(),
            rebuild,
            shadow,
        })
    }

    /// How far a version built beside the serving one has come.
    async fn progress(&self, next: &View, head: i64, log_unreachable: bool) -> Result<RebuildInfo, ReadError> {
        let s = next.status.snapshot();
        let lag = match log_unreachable {
            false => self.source().count_after(s.cursor).await?,
            true => (head - s.cursor.id).max(0),
        };
        Ok(RebuildInfo {
            version: next.ns.version.clone(),
            namespace: next.ns.slug(),
            state: s.state,
            position: s.cursor.id,
            lag,
            events_per_second: s.events_per_second,
            eta_seconds: (s.events_per_second > 0.0).then(|| lag as f64 / s.events_per_second),
            last_error: s.last_error,
            stopped_at: s.stopped_at,
        })
    }

    async fn shadow_info(&self, shadow: ShadowView, head: i64, log_unreachable: bool) -> Result<ShadowInfo, ReadError> {
        let progress = self.progress(&shadow.view, head, log_unreachable).await?;
        let comparison = match shadow.stage {
            Stage::Building => ComparisonInfo { state: "building", position: None, differences: None, error: None },
            Stage::Comparing => ComparisonInfo { state: "comparing", position: None, differences: None, error: None },
            Stage::Compared(c) => ComparisonInfo {
                state: "compared",
                position: Some(c.cursor.id),
                differences: Some(c.differences.len()),
                error: None,
            },
            Stage::Failed(why) => {
                ComparisonInfo { state: "failed", position: None, differences: None, error: Some(why) }
            }
        };
        Ok(ShadowInfo { progress, swap: shadow.swap.map(|f| f.display().to_string()), comparison })
    }

    /// The shadow run of projection `name` (ADR 48).
    pub async fn shadow(&self, name: &str) -> Result<ShadowInfo, ReadError> {
        let shadow = self.inner.deployments.shadow_view(name).ok_or_else(|| {
            ReadError::NotFound(format!(
                "projection `{name}` has no shadow run (start one with reel shadow {name} FILE)"
            ))
        })?;
        let head = self.source().head().await?;
        self.shadow_info(shadow, head, false).await
    }
}

/// What a reactor emitted since it started running here (ADR 23).
#[derive(Debug, Clone, Serialize)]
pub struct ReactorInfo {
    /// The prefix of every stream it emits to.
    pub stream_prefix: String,
    /// Events it appended to the log.
    pub emitted: u64,
    /// Emissions dropped at a cut-over: their cause had been handled by an
    /// earlier version or generation, whose history wins.
    pub dropped: u64,
    /// Timers it fired (ADR 24).
    pub timers_fired: u64,
    /// Timers waiting to fire, as last seen.
    pub timers_pending: u64,
    /// Committed batches whose emissions wait in the outbox to be forwarded
    /// to the log (SQLite; 0 on PostgreSQL, which appends in the batch).
    pub outbox: u64,
}
