//! `POST /events`: append to a stream with an expected version.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::extract::JsonBody;
use super::{ApiError, Services};
use crate::source::{AppendRequest, Appended, Object};

/// Append events; 409 when the stream is not at `expected_version`.
pub async fn append(
    State(services): State<Services>,
    JsonBody(Object(request)): JsonBody<Object<AppendRequest>>,
) -> Result<(StatusCode, Json<Appended>), ApiError> {
    let appended = services.source.append(request).await?;
    Ok((StatusCode::CREATED, Json(appended)))
}
