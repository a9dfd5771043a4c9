//! The write side over HTTP: `POST /commands/{decider}/{stream_id}`, the
//! deciders in service, and a stream's current state.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::extract::{JsonBody, Path};
use super::{ApiError, Services};
use crate::decide::{CommandAnswer, CommandRequest, DeciderInfo};
use crate::source::Object;

/// Decide a command and append what it decides: 201 with the events, 200
/// when the decider accepted it with nothing to append.
pub async fn command(
    State(services): State<Services>,
    Path((decider, stream_id)): Path<(String, String)>,
    JsonBody(Object(request)): JsonBody<Object<CommandRequest>>,
) -> Result<(StatusCode, Json<CommandAnswer>), ApiError> {
    let answer = services.deployments.deciders().command(&decider, &stream_id, request).await?;
    let status = if answer.events.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(answer)))
}

/// `GET /deciders`: every decider in service.
pub async fn list(State(services): State<Services>) -> Json<Vec<DeciderInfo>> {
    Json(services.deployments.deciders().list())
}

/// `GET /deciders/{name}/streams/{id}/state`: the stream's current state
/// (folded up to its last event) and the version it includes.
pub async fn state(
    State(services): State<Services>,
    Path((decider, stream_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let loaded = services.deployments.deciders().state(&decider, &stream_id).await?;
    let state = match loaded.state.as_deref() {
        Some(text) => serde_json::from_str::<&serde_json::value::RawValue>(text)
            .map(|raw| serde_json::to_value(raw).unwrap_or(Value::Null))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        None => Value::Null,
    };
    Ok(Json(json!({ "decider": decider, "stream_id": stream_id, "version": loaded.version, "state": state })))
}
