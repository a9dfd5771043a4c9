//! `GET /events/live`: every new event as it commits, as server-sent
//! events a browser's `EventSource` reads; resumable with `Last-Event-ID`.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as Message, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use super::extract::Query;
use super::log::{after, filter};
use super::{ApiError, Services};
use crate::source::{Feed, FeedItem, LIVE_BUFFER};

/// Parameters of `GET /events/live`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveParams {
    after: Option<String>,
    types: Option<String>,
    stream_prefix: Option<String>,
}

/// The resume token: `Last-Event-ID` (what a reconnecting `EventSource`
/// sends) over `after` (what its URL still says).
pub(super) fn resume_token<'a>(headers: &'a HeaderMap, after: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad_request("Last-Event-ID is not a resume token reel handed out")),
        None => Ok(after),
    }
}

/// The feed as server-sent events: each event's `id` is its resume token,
/// its `data` the event in the one JSON shape. A filtered-out stretch of
/// the log moves the id on without an event; a client too slow for the
/// live buffer gets a last `cut` message naming where to resume.
pub async fn live(
    State(services): State<Services>,
    headers: HeaderMap,
    Query(params): Query<LiveParams>,
) -> Result<Sse<impl Stream<Item = Result<Message, Infallible>>>, ApiError> {
    // A malformed `after` is refused even when `Last-Event-ID` wins over it.
    after(params.after.as_deref())?;
    let after = after(resume_token(&headers, params.after.as_deref())?)?;
    services.source.check_token(after)?;
    let filter = filter(params.types.as_deref(), params.stream_prefix.as_deref());
    let feed = Feed::new(services.source, after, filter);
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let message = match feed.next().await? {
            Ok(FeedItem::Event(cursor, event)) => {
                let data = serde_json::to_string(&event).expect("an event serializes");
                Message::default().id(cursor.to_string()).data(data)
            }
            Ok(FeedItem::Progress(cursor)) => Message::default().id(cursor.to_string()),
            Ok(FeedItem::Cut(cursor)) => {
                let message = format!(
                    "this client fell more than {LIVE_BUFFER} events behind the live log and is cut off; \
                     reconnect with Last-Event-ID {cursor} (a browser's EventSource does) to read on from the log"
                );
                let data = json!({ "resume_after": cursor.to_string(), "message": message });
                Message::default().id(cursor.to_string()).event("cut").data(data.to_string())
            }
            Err(e) => {
                // The feed cannot read the log now: the client reconnects
                // after its last id, as after any dropped connection.
                tracing::warn!("a live feed stops: {e}");
                return None;
            }
        };
        Some((Ok(message), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
