//! `GET /streams/{id}`: one stream's events in version order, read from the
//! log (the event store's `read(stream, fromVersion)`).

use axum::Json;
use axum::extract::State;
use reel_model::Event;
use serde::{Deserialize, Serialize};

use super::extract::{Path, Query};
use super::reads::{limit, min_position, number};
use super::{ApiError, Services};

/// Parameters of a stream read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    from_version: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// A page of a stream.
#[derive(Debug, Serialize)]
pub struct StreamPage {
    stream_id: String,
    /// Events with a version above `from_version`, in version order.
    events: Vec<Event>,
    /// The `from_version` of the next page; `null` on the last one.
    next: Option<i64>,
}

/// `GET /streams/{id}?from_version=&limit=&min_position=`: the stream's events
/// after `from_version` (default 0: from the start); 404 for a stream with no
/// events.
pub async fn read(
    State(services): State<Services>,
    Path(stream_id): Path<String>,
    Query(params): Query<StreamParams>,
) -> Result<Json<StreamPage>, ApiError> {
    let from_version = match params.from_version.as_deref() {
        Some(value) => number::<i64>("from_version", value)?,
        None => 0,
    };
    if from_version < 0 {
        return Err(ApiError::bad_request(format!("from_version must be 0 or more, not {from_version}")));
    }
    let limit = limit(params.limit.as_deref())?;
    let min_position = min_position(params.min_position.as_deref())?;
    let page = services.reads.stream(&stream_id, from_version, limit, min_position).await?;
    Ok(Json(StreamPage { stream_id, events: page.events, next: page.next }))
}
