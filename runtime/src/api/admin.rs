//! An administrator's answers to poison events (ADR 21): skip the event a
//! stopped projection halted at, discard a dead letter. Both go through the
//! projection's worker and are recorded in its status and the log. And the
//! record of a poison event, exported for a replay (ADR 49).

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

/// `GET /projections/{name}/replays/{position}`: the record kept when the
/// event at `position` stopped the projection or went to its dead letters
/// (ADR 49), as a file for `reel replay --file`. Admin: it holds the event,
/// the module and the read model before it.
pub async fn replay(
    State(services): State<Services>,
    Path((name, position)): Path<(String, i64)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;
    let record = services.deployments.replay_record(&name, position).await.map_err(|e| {
        tracing::error!(projection = %name, position, "reading a replay record: {e}");
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the replay record could not be read (see the server's log)",
        )
    })?;
    let Some(record) = record else {
        return Err(ApiError::not_found(format!(
            "no replay record of projection `{name}` at event {position}: one is kept when an event stops a \
             projection or goes to its dead letters, by the server that ran it"
        )));
    };
    let disposition = format!("attachment; filename=\"{name}-{position}.replay.json\"");
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/json".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        record,
    )
        .into_response())
}

/// Who asked, as far as reel knows: the client's address (when the server
/// was started with connection info; a router called directly has none).
fn caller(extensions: &Extensions) -> Option<String> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_string())
}
