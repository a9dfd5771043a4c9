//! The HTTP API: append events, inspect and control projections, read their
//! read models. JSON everywhere; errors are `{"error": {"status", "code",
//! "message"}}`.
//!
//! - [`events`]: `POST /events`.
//! - [`log`]: `GET /events`, the log for consumers.
//! - [`live`]: `GET /events/live`, new events as server-sent events.
//! - [`changes`]: `GET /projections/{name}/changes`, read-model changes as server-sent events.
//! - [`commands`]: `POST /commands/{decider}/{stream_id}`, deciders and their states.
//! - [`projections`]: status, control, dead letters, modules, health, metrics.
//! - [`admin`]: skip the event a stopped projection halted at, discard a dead
//!   letter, export a poison event's replay record.
//! - [`shadow`]: shadow runs: a module built beside the serving version, compared, promoted or discarded.
//! - [`reads`]: KV, tables, custom queries and checksums, with `min_position` waits.
//! - [`streams`]: `GET /streams/{id}`, one stream's events in version order.
//! - [`sinks`]: `GET /sinks`, delivery to message brokers.
//! - [`extract`]: path, query and body extractors whose refusals are [`ApiError`]s.
//! - [`dashboard`]: the page at `GET /`, over the routes above.
//! - [`session`]: a browser's sign-in, a cookie for its token.
//! - [`origin`]: requests a browser sends for another site, refused.
//! - [`auth`]: every route's scope from `openapi.json`, checked against the
//!   caller's token; a route without one is refused.

mod admin;
pub mod auth;
mod changes;
mod commands;
mod dashboard;
mod error;
mod events;
mod extract;
mod live;
mod log;
mod origin;
mod projections;
mod reads;
mod session;
mod shadow;
mod sinks;
mod streams;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

pub use auth::Access;
pub use error::ApiError;

use crate::deploy::Deployments;
use crate::reads::Reads;
use crate::source::Source;

/// Largest request body (an append of many events).
pub(crate) const BODY_LIMIT: usize = 16 << 20;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What the routes use: the read service, the deployments they control and
/// the event log they append to.
#[derive(Clone)]
pub struct Services {
    /// Reads and status.
    pub reads: Reads,
    /// Control of projections and their module files.
    pub deployments: Deployments,
    /// Appends and the head of the log.
    pub source: Source,
    /// Who may call what.
    pub access: std::sync::Arc<Access>,
}

/// The answer to any request while reel cannot start because its database
/// is unreachable (ADR 43): `503`; `/healthz` (`healthz`) in its own shape.
pub fn unavailable(healthz: bool, message: String) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if healthz {
        projections::unhealthy(message).into_response()
    } else {
        ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).into_response()
    }
}

/// The router, over a started reel's [`Services`]: [`routes`] behind the
/// scope check, so a route added there cannot escape it.
pub fn app(services: Services) -> Router {
    let access = services.access.clone();
    routes()
        .fallback(|| async { ApiError::not_found("no such endpoint; see GET /openapi.json") })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; see GET /openapi.json"),
            )
        })
        .layer(axum::middleware::from_fn_with_state(access, auth::guard))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(services)
}

/// Every route; each needs its operation, with an `x-reel-scope`, in
/// `openapi.json` (see [`auth`]).
fn routes() -> Router<Services> {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/dashboard/{file}", get(dashboard::asset))
        .route("/events", post(events::append).get(log::read))
        .route("/events/live", get(live::live))
        .route("/streams/{id}", get(streams::read))
        .route("/commands/{decider}/{stream_id}", post(commands::command))
        .route("/deciders", get(commands::list))
        .route("/sinks", get(sinks::list))
        .route("/deciders/{name}/streams/{id}/state", get(commands::state))
        .route("/projections", get(projections::list))
        .route("/projections/{name}", get(projections::show).delete(projections::delete))
        .route("/projections/{name}/pause", post(projections::pause))
        .route("/projections/{name}/resume", post(projections::resume))
        .route("/projections/{name}/rebuild", post(projections::rebuild))
        .route("/projections/{name}/changes", get(changes::changes))
        .route(
            "/projections/{name}/shadow",
            post(shadow::start)
                .layer(DefaultBodyLimit::max(shadow::MODULE_LIMIT))
                .get(shadow::show)
                .delete(shadow::discard),
        )
        .route("/projections/{name}/shadow/diff", get(shadow::diff))
        .route("/projections/{name}/shadow/compare", post(shadow::compare))
        .route("/projections/{name}/shadow/promote", post(shadow::promote))
        .route("/projections/{name}/dead-letters", get(projections::dead_letters))
        .route("/projections/{name}/dead-letters/{position}", delete(admin::discard))
        .route("/projections/{name}/dead-letters/{position}/retry", post(projections::retry_dead_letter))
        .route("/projections/{name}/skip/{position}", post(admin::skip))
        .route("/projections/{name}/replays/{position}", get(admin::replay))
        .route("/projections/{name}/kv", get(reads::kv_scan))
        .route("/projections/{name}/kv/{*key}", get(reads::kv_get))
        .route("/projections/{name}/tables", get(reads::tables))
        .route("/projections/{name}/tables/{table}", get(reads::table))
        .route("/projections/{name}/checksum", get(reads::checksum))
        .route("/projections/{name}/query/{query}", get(reads::query).post(reads::query_posted))
        .route("/modules", get(projections::modules))
        .route("/healthz", get(projections::healthz))
        .route("/metrics", get(projections::metrics))
        .route("/session", get(session::show).post(session::sign_in).delete(session::sign_out))
        .route("/openapi.json", get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI) }))
}
