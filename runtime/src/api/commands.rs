//! The write side over HTTP: `POST /commands/{decider}/{stream_id}`, the
//! deciders in service, and a stream's current state.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::extract::{JsonBody, Path};
use super::{ApiError, Services};
use crate::decide::{CommandRequest, DeciderInfo};
use crate::source::Object;

/// The request header naming a command's idempotency key (ADR 25).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header of an answer given before under the same key.
pub const REPLAYED: &str = "idempotent-replayed";

/// Decide a command and append what it decides: 201 with the events, 200
/// when the decider accepted it with nothing to append. With an
/// `Idempotency-Key`, a request answered before gets that answer again
/// (marked `Idempotent-Replayed: true`) and appends nothing.
pub async fn command(
    State(services): State<Services>,
    Path((decider, stream_id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(Object(request)): JsonBody<Object<CommandRequest>>,
) -> Result<Response, ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => {
            return Err(ApiError::bad_request("Idempotency-Key must be printable ASCII (a UUID, say)"));
        }
    };
    let replied = services.deployments.deciders().command(&decider, &stream_id, request, key).await;
    let mut response = match replied.result {
        Ok(answer) => {
            let status = if answer.events.is_empty() { StatusCode::OK } else { StatusCode::CREATED };
            (status, Json(answer)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    if replied.replayed {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
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
