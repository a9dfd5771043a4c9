//! `GET /events`: the global log for outside consumers, page by page, in
//! delivery order (the order the workers read it: gap-free on PostgreSQL).

use axum::Json;
use axum::extract::State;
use reel_model::{Cursor, Event};
use serde::{Deserialize, Serialize};

use super::extract::Query;
use super::{ApiError, Services};
use crate::source::Filter;

/// Largest `limit` of a page.
const MAX_LIMIT: usize = 10_000;
/// `limit` when none is given.
const DEFAULT_LIMIT: usize = 100;

/// Parameters of `GET /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    after: Option<String>,
    limit: Option<String>,
    types: Option<String>,
    stream_prefix: Option<String>,
}

/// A page of the log.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The events, in delivery order.
    events: Vec<Event>,
    /// The token to read on from: past these events and past any the filter
    /// left out (so a sparse filter still moves on).
    next: String,
}

/// The resume token `after`, or the start of the log.
pub(super) fn after(token: Option<&str>) -> Result<Cursor, ApiError> {
    match token {
        None | Some("") => Ok(Cursor::START),
        Some(token) => token.parse().map_err(|e: reel_model::CursorTokenError| ApiError::bad_request(e.to_string())),
    }
}

/// The filter of `types` (comma-separated; `prefix*` for a prefix, as in a
/// manifest) and `stream_prefix`.
pub(super) fn filter(types: Option<&str>, stream_prefix: Option<&str>) -> Filter {
    let types: Vec<String> =
        types.unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let streams: Vec<String> = stream_prefix.into_iter().map(str::to_owned).collect();
    Filter::new(&types, &streams)
}

fn limit(value: Option<&str>) -> Result<usize, ApiError> {
    let Some(value) = value else { return Ok(DEFAULT_LIMIT) };
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!("limit `{value}` must be a number from 1 to {MAX_LIMIT}"))),
    }
}

/// `GET /events?after=&limit=&types=&stream_prefix=`: the events committed
/// after `after`, never one before an earlier one that may still commit.
pub async fn read(State(services): State<Services>, Query(params): Query<LogParams>) -> Result<Json<Page>, ApiError> {
    let after = after(params.after.as_deref())?;
    let limit = limit(params.limit.as_deref())?;
    let filter = filter(params.types.as_deref(), params.stream_prefix.as_deref());
    let batch = services.reads.log_page(after, filter, limit).await?;
    Ok(Json(Page { events: batch.events, next: batch.next.to_string() }))
}
