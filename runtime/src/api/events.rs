//! `POST /events`: append to a stream with an expected version.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::extract::JsonBody;
use super::{ApiError, Services};
use crate::source::{AppendRequest, Appended, Object};

/// Append events; 409 when the stream is not at `expected_version`, or is
/// owned by a decider (its events come from its commands) or a reactor.
pub async fn append(
    State(services): State<Services>,
    JsonBody(Object(request)): JsonBody<Object<AppendRequest>>,
) -> Result<(StatusCode, Json<Appended>), ApiError> {
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
    let appended = services.source.append(request).await?;
    Ok((StatusCode::CREATED, Json(appended)))
}
