//! `POST /events`: append to a stream with an expected version.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::commands::{IDEMPOTENCY_KEY, REPLAYED};
use super::extract::JsonBody;
use super::{ApiError, Services};
use crate::source::{AppendRequest, Object};

/// Append events; 409 when the stream is not at `expected_version`, or is
/// owned by a decider (its events come from its commands) or a reactor.
/// With an `Idempotency-Key`, the answer is kept with the append: the same
/// request again with the same key gets it again (marked
/// `Idempotent-Replayed: true`) and appends nothing (ADR 25, ADR 43).
pub async fn append(
    State(services): State<Services>,
    headers: HeaderMap,
    JsonBody(Object(request)): JsonBody<Object<AppendRequest>>,
) -> Result<Response, ApiError> {
    if let Some((decider, prefix)) = services.deployments.deciders().owner_of(&request.stream_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "owned_stream",
            format!(
                "stream `{}` belongs to decider `{decider}` (it owns the streams starting with `{prefix}`): \
                 send it commands with POST /commands/{decider}/{{stream_id}}",
                request.stream_id
            ),
        ));
    }
    if let Some((reactor, prefix)) = services.deployments.emitter_of(&request.stream_id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "owned_stream",
            format!(
                "stream `{}` belongs to reactor `{reactor}` (it emits to the streams starting with `{prefix}`): \
                 only it appends there",
                request.stream_id
            ),
        ));
    }
    let key = match headers.get(IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => return Err(ApiError::bad_request("Idempotency-Key must be printable ASCII (a UUID, say)")),
    };
    let Some(key) = key else {
        let appended = services.source.append(request).await?;
        return Ok((StatusCode::CREATED, Json(appended)).into_response());
    };
    let (appended, replayed) = services.deployments.deciders().append_keyed(request, key).await?;
    let mut response = (StatusCode::CREATED, Json(appended)).into_response();
    if replayed {
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
