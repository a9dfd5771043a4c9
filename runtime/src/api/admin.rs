//! An administrator's answers to poison events (ADR 21): skip the event a
//! stopped projection halted at, discard a dead letter. Both go through the
//! projection's worker and are recorded in its status and the log.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::Extensions;
use serde_json::{Value, json};

use super::extract::Path;
use super::{ApiError, Services};
use crate::worker::Admin;

/// `POST /projections/{name}/skip/{position}`: only when the projection is
/// stopped at exactly that event; it goes to the dead letters (where it can
/// be retried later) and the projection goes on after it.
pub async fn skip(
    State(services): State<Services>,
    Path((name, position)): Path<(String, i64)>,
    extensions: Extensions,
) -> Result<Json<Value>, ApiError> {
    services.deployments.admin(&name, Admin::Skip, position, caller(&extensions)).await?;
    Ok(Json(json!({ "projection": name, "skipped": position })))
}

/// `DELETE /projections/{name}/dead-letters/{position}`: the dead letter is
/// gone for good (the read model never sees the event).
pub async fn discard(
    State(services): State<Services>,
    Path((name, position)): Path<(String, i64)>,
    extensions: Extensions,
) -> Result<Json<Value>, ApiError> {
    services.deployments.admin(&name, Admin::Discard, position, caller(&extensions)).await?;
    Ok(Json(json!({ "projection": name, "discarded": position })))
}

/// Who asked, as far as reel knows: the client's address (when the server
/// was started with connection info; a router called directly has none).
fn caller(extensions: &Extensions) -> Option<String> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string())
}
