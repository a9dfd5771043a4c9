//! Status and control of projections, dead letters, modules, health, metrics.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use reel_model::DeadLetter;

use super::extract::{Path, Query};
use super::{ApiError, Services};
use crate::deploy::{DeployError, FileStatus};
use crate::reads::ProjectionInfo;
use crate::source::SourceError;
use crate::worker::WorkerError;

/// `GET /projections`.
pub async fn list(State(services): State<Services>) -> Result<Json<Vec<ProjectionInfo>>, ApiError> {
    Ok(Json(services.reads.list().await?))
}

/// `GET /projections/{name}`.
pub async fn show(
    State(services): State<Services>,
    Path(name): Path<String>,
) -> Result<Json<ProjectionInfo>, ApiError> {
    Ok(Json(services.reads.info(&name).await?))
}

/// `POST /projections/{name}/pause`.
pub async fn pause(State(services): State<Services>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    services.deployments.pause(&name).await?;
    Ok(Json(json!({ "projection": name, "requested": "pause" })))
}

/// `POST /projections/{name}/resume` (also retries a projection stopped at a
/// poison event).
pub async fn resume(State(services): State<Services>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    services.deployments.resume(&name).await?;
    Ok(Json(json!({ "projection": name, "requested": "resume" })))
}

/// `POST /projections/{name}/rebuild`: rebuild into a fresh namespace; reads
/// switch when it has caught up.
pub async fn rebuild(
    State(services): State<Services>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ns = services.deployments.rebuild(&name).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "projection": name, "rebuilding": ns.slug() }))))
}

/// `DELETE /projections/{name}`: drop its read model (its module must be
/// removed first).
pub async fn delete(State(services): State<Services>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    services.deployments.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Paging of dead letters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// `GET /projections/{name}/dead-letters?after=&limit=`.
pub async fn dead_letters(
    State(services): State<Services>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    Ok(Json(services.reads.dead_letters(&name, page.after, page.limit).await?))
}

/// `POST /projections/{name}/dead-letters/{position}/retry`: apply the event
/// again with the current code; on success it leaves the dead-letter table.
pub async fn retry_dead_letter(
    State(services): State<Services>,
    Path((name, position)): Path<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    services.deployments.retry_dead_letter(&name, position).await.map_err(|e| match e {
        // The projection's code still fails on it: the dead letter stays.
        DeployError::Worker(WorkerError::Guest(failure)) if failure.is_projection_fault() => ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "still_failing",
            format!("event {position} still fails, and stays a dead letter: {failure}"),
        ),
        other => other.into(),
    })?;
    Ok(Json(json!({ "projection": name, "applied": position })))
}

/// `GET /modules`: each module file and what became of it.
pub async fn modules(State(services): State<Services>) -> Json<Vec<FileStatus>> {
    Json(services.deployments.files())
}

/// `GET /healthz`: the event log answers (ADR 43: `503` with what is wrong
/// when it does not; the database's own text goes to the log).
pub async fn healthz(State(services): State<Services>) -> axum::response::Response {
    match services.source.head().await {
        Ok(head) => Json(json!({ "status": "ok", "head": head })).into_response(),
        Err(e) => {
            tracing::warn!("health check: {e}");
            let message = match e {
                SourceError::Storage(m) => m,
                _ => "the event log's database does not answer; reel retries (see the server log)".to_owned(),
            };
            unhealthy(message).into_response()
        }
    }
}

/// `/healthz`'s answer when reel is not healthy: reel's error shape, and a
/// `status` beside it as in the healthy answer.
pub(super) fn unhealthy(message: String) -> (StatusCode, Json<Value>) {
    let error = json!({ "status": 503, "code": "unavailable", "message": message });
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "error": error })))
}

/// A gauge: name, help text, value of a projection.
type Gauge = (&'static str, &'static str, fn(&ProjectionInfo) -> f64);

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(services): State<Services>) -> Result<impl IntoResponse, ApiError> {
    let projections = services.reads.list().await?;
    let mut out = String::new();
    let head = services.source.head().await?;
    let _ = writeln!(out, "# HELP reel_head_position Position of the last committed event.");
    let _ = writeln!(out, "# TYPE reel_head_position gauge\nreel_head_position {head}");
    let _ = writeln!(
        out,
        "# HELP reel_kv_cache_bytes Bytes the read models' KV caches hold (keys, values and {} a key), \
         at most {} MiB a writer.\n# TYPE reel_kv_cache_bytes gauge\nreel_kv_cache_bytes {}",
        crate::store::kv_cache::ENTRY_OVERHEAD,
        crate::host::caps::KV_CACHE_BYTES >> 20,
        crate::store::kv_cache::cached_bytes()
    );
    let _ = writeln!(
        out,
        "# HELP reel_sqlite_memory_bytes Bytes SQLite holds in this process: page caches (a read model's \
         writer keeps up to 256 MiB of its file), statements, schemas.\n# TYPE reel_sqlite_memory_bytes gauge\n\
         reel_sqlite_memory_bytes {}",
        crate::sqlite::memory_used()
    );
    let gauges: [Gauge; 5] = [
        ("reel_projection_position", "Last position applied.", |p| p.position as f64),
        ("reel_projection_lag_events", "Committed events not applied yet.", |p| p.lag as f64),
        ("reel_projection_lag_seconds", "Age of the oldest event not applied yet.", |p| p.lag_seconds),
        ("reel_projection_events_per_second", "Recent throughput.", |p| p.events_per_second),
        ("reel_projection_dead_letters", "Events in the dead-letter table.", |p| p.dead_letters as f64),
    ];
    for (metric, help, value) in gauges {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for p in &projections {
            let _ =
                writeln!(out, "{metric}{{projection=\"{}\",version=\"{}\"}} {}", p.name, escape(&p.version), value(p));
        }
    }
    let _ = writeln!(out, "# HELP reel_projection_events_applied_total Events applied since start.");
    let _ = writeln!(out, "# TYPE reel_projection_events_applied_total counter");
    for p in &projections {
        let _ = writeln!(out, "reel_projection_events_applied_total{{projection=\"{}\"}} {}", p.name, p.events_applied);
    }
    let _ = writeln!(out, "# HELP reel_projection_up 1 when the projection is running without errors.");
    let _ = writeln!(out, "# TYPE reel_projection_up gauge");
    for p in &projections {
        let up = p.last_error.is_none() && matches!(p.state, crate::worker::State::Running);
        let _ =
            writeln!(out, "reel_projection_up{{projection=\"{}\",state=\"{:?}\"}} {}", p.name, p.state, u8::from(up));
    }
    reactor_metrics(&mut out, &projections);
    super::sinks::metrics(&services, &mut out).await;
    decider_metrics(&mut out, &services.deployments.deciders().list());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// Each reactor's emissions and timers (ADRs 23 and 24).
fn reactor_metrics(out: &mut String, projections: &[ProjectionInfo]) {
    type Reactor = (&'static str, &'static str, &'static str, fn(&crate::reads::ReactorInfo) -> u64);
    let metrics: [Reactor; 5] = [
        ("reel_reactor_emitted_total", "counter", "Events a reactor appended since start.", |r| r.emitted),
        (
            "reel_reactor_emissions_dropped_total",
            "counter",
            "Emissions dropped since start: their cause was handled by an earlier version.",
            |r| r.dropped,
        ),
        ("reel_reactor_timers_fired_total", "counter", "Timers a reactor fired since start.", |r| r.timers_fired),
        ("reel_reactor_timers_pending", "gauge", "Timers waiting to fire.", |r| r.timers_pending),
        ("reel_reactor_outbox", "gauge", "Committed batches whose emissions wait in the outbox (SQLite).", |r| {
            r.outbox
        }),
    ];
    for (metric, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for p in projections {
            if let Some(r) = &p.reactor {
                let _ = writeln!(out, "{metric}{{reactor=\"{}\"}} {}", p.name, value(r));
            }
        }
    }
}

/// Each decider's counts since start.
fn decider_metrics(out: &mut String, deciders: &[crate::decide::DeciderInfo]) {
    type Counter = (&'static str, &'static str, fn(&crate::decide::DeciderInfo) -> u64);
    let counters: [Counter; 9] = [
        ("reel_decider_commands_total", "Commands decided (accepted, rejected or failed).", |d| d.commands),
        ("reel_decider_rejections_total", "Commands the decider rejected.", |d| d.rejections),
        ("reel_decider_conflicts_total", "Appends that found the stream moved on (retried, or 409).", |d| d.conflicts),
        ("reel_decider_retries_total", "Decisions taken again after a conflict.", |d| d.retries),
        ("reel_decider_failures_total", "Commands the decider failed on (trap, deadline, bad output).", |d| d.failures),
        ("reel_decider_replays_total", "Answers given again under an idempotency key (ADR 25).", |d| d.replays),
        ("reel_decider_events_folded_total", "Events folded into states by evolve (ADR 26).", |d| d.events_folded),
        ("reel_decider_snapshots_loaded_total", "States read from a snapshot in the database.", |d| d.snapshots_loaded),
        ("reel_decider_snapshots_saved_total", "Snapshots of states written to the database.", |d| d.snapshots_saved),
    ];
    for (metric, help, value) in counters {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        for d in deciders {
            let _ = writeln!(out, "{metric}{{decider=\"{}\",version=\"{}\"}} {}", d.name, escape(&d.version), value(d));
        }
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
