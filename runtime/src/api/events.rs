//! `POST /events`: append to a stream with an expected version.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;

use super::{ApiError, Services};
use crate::source::{AppendRequest, Appended, Object};

/// Append events; 409 when the stream is not at `expected_version`.
pub async fn append(
    State(services): State<Services>,
    body: Result<Json<Object<AppendRequest>>, JsonRejection>,
) -> Result<(StatusCode, Json<Appended>), ApiError> {
    let Json(Object(request)) = body?;
    let appended = services.source.append(request).await?;
    Ok((StatusCode::CREATED, Json(appended)))
}
