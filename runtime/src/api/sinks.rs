//! Sinks over HTTP: `GET /sinks` (each sink's delivery: state, checkpoint,
//! lag, counts, last error) and their lines of `/metrics`.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;

use super::Services;
use crate::sinks::SinkInfo;

/// `GET /sinks`: every sink in service.
pub async fn list(State(services): State<Services>) -> Json<Vec<SinkInfo>> {
    Json(services.deployments.sinks().list().await)
}

/// The sinks' lines of `/metrics`.
pub async fn metrics(services: &Services, out: &mut String) {
    let sinks = services.deployments.sinks().list().await;
    type Metric = (&'static str, &'static str, &'static str, fn(&SinkInfo) -> f64);
    let metrics: [Metric; 7] = [
        ("reel_sink_position", "gauge", "Position of the last event the broker confirmed.", |s| {
            s.state.position as f64
        }),
        ("reel_sink_lag_events", "gauge", "Committed events after the sink's checkpoint.", |s| {
            s.lag_events.unwrap_or(0) as f64
        }),
        ("reel_sink_events_per_second", "gauge", "Throughput of the last batch.", |s| s.state.events_per_second),
        ("reel_sink_events_delivered_total", "counter", "Events delivered since start.", |s| {
            s.state.delivered_events as f64
        }),
        ("reel_sink_messages_published_total", "counter", "Messages the broker confirmed since start.", |s| {
            s.state.published_messages as f64
        }),
        (
            "reel_sink_messages_duplicate_total",
            "counter",
            "Messages published again that the broker dropped by their dedup id.",
            |s| s.state.duplicate_messages as f64,
        ),
        ("reel_sink_retries_total", "counter", "Failed attempts retried (broker or database away).", |s| {
            s.state.retries as f64
        }),
    ];
    for (metric, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
        for s in &sinks {
            let _ = writeln!(out, "{metric}{{sink=\"{}\",broker=\"{}\"}} {}", s.name, s.broker, value(s));
        }
    }
    let _ = writeln!(out, "# HELP reel_sink_up 1 when the sink delivers (running) without a broker error.");
    let _ = writeln!(out, "# TYPE reel_sink_up gauge");
    for s in &sinks {
        let up = s.state.state == "running" && s.state.connected;
        let _ = writeln!(out, "reel_sink_up{{sink=\"{}\",state=\"{}\"}} {}", s.name, s.state.state, u8::from(up));
    }
}
