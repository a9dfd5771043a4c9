//! `GET /projections/{name}/changes`: the read model's changes as
//! server-sent events (ADR 28), resumable with `Last-Event-ID`.
//!
//! The feed reads the projection's change history page by page at the
//! client's pace, so a slow client costs one page, never a queue: it falls
//! behind until the retention window passes it, and is then told to read
//! the read model afresh (`gone`). A cut-over to another version (or a
//! rebuild) sends `reset` before the new namespace's read model: its
//! changes from its first when its history holds them all, else a snapshot
//! of its rows as `insert`s ending with `complete` (the position the copy
//! is then the read model at), then its changes (ADR 30). A client with no
//! resume point gets the same, without the `reset`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Message, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Path, Query};
use super::live::resume_token;
use super::reads::value_json;
use super::{ApiError, Services};
use crate::reads::{ChangePoint, ChangeRead, Reads};
use crate::store::Change;

/// Changes read from the history per page.
const PAGE: usize = 500;

/// How long an idle feed waits for a commit before it looks again (a
/// commit of another reel process, a cut-over, wakes nobody here).
const IDLE_LOOK: Duration = Duration::from_millis(500);

/// Parameters of `GET /projections/{name}/changes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesParams {
    after: Option<String>,
}

/// The feed: `410` when the resume point is past the retention window,
/// else a stream of changes (`message`), `complete` at the end of a
/// snapshot, `reset` at a cut-over and a last `gone` when the window passes
/// a client mid-stream.
pub async fn changes(
    State(services): State<Services>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<ChangesParams>,
) -> Result<Response, ApiError> {
    let point = match resume_token(&headers, params.after.as_deref())? {
        None | Some("") => None,
        Some(token) => Some(ChangePoint::parse(token).ok_or_else(|| {
            ApiError::bad_request(format!("`{token}` is not a change-feed resume token reel handed out"))
        })?),
    };
    let reads = services.reads;
    if !reads.captures_changes(&name) {
        // Unknown projections answer 404 as any read does.
        reads.applied(&name)?;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "changes_not_captured",
            format!("the changes of projection `{name}` are not captured; start reel with --set {name}.changes=on"),
        ));
    }
    let first = reads.changes(&name, point.as_ref(), PAGE).await?;
    if first.gone && !first.reset {
        return Ok(gone_response(&reads, &name, &first));
    }
    let mut feed = Feed { reads, name, at: first.from.clone(), queue: VecDeque::new(), done: false };
    feed.take(first);
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let message = feed.next().await?;
        Some((Ok::<_, Infallible>(message), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// `410 Gone`: the history no longer reaches back to the resume point.
fn gone_response(reads: &Reads, name: &str, read: &ChangeRead) -> Response {
    let message = gone_message(reads, name, read);
    let body = json!({
        "error": { "status": 410, "code": "changes_gone", "message": message },
        "resume_after": read.resume().token(),
        "position": read.position.id,
    });
    (StatusCode::GONE, Json(body)).into_response()
}

fn gone_message(reads: &Reads, name: &str, read: &ChangeRead) -> String {
    format!(
        "the changes of `{name}` after this resume point are no longer kept (retention {:?}): read the read model \
         afresh (with ?min_position={}) and resume with Last-Event-ID {}, or reconnect without one for a snapshot",
        reads.changes_retention(),
        read.position.id,
        read.resume().token()
    )
}

struct Feed {
    reads: Reads,
    name: String,
    /// The client has every change up to here.
    at: ChangePoint,
    queue: VecDeque<Message>,
    /// The last message is queued: end after it.
    done: bool,
}

impl Feed {
    /// Queue what `read` holds; whether it held nothing new.
    fn take(&mut self, read: ChangeRead) -> bool {
        if read.reset {
            let data = json!({ "position": read.position.id, "message": "the projection's serving version changed: \
                empty your copy and apply the changes that follow" });
            self.queue.push_back(Message::default().event("reset").id(read.from.token()).data(data.to_string()));
        }
        if read.gone {
            let data = json!({
                "resume_after": read.resume().token(),
                "position": read.position.id,
                "message": gone_message(&self.reads, &self.name, &read),
            });
            self.queue.push_back(Message::default().event("gone").id(read.resume().token()).data(data.to_string()));
            self.done = true;
            return false;
        }
        let idle = !read.reset && read.changes.is_empty() && read.next == self.at;
        for (change, point) in read.changes {
            self.queue.push_back(Message::default().id(point.token()).data(change_json(&change).to_string()));
        }
        if let Some(position) = read.complete {
            let data = json!({ "position": position.id, "message": format!("the snapshot is complete: your copy \
                is the read model at position {}; the changes that follow are its history", position.id) });
            self.queue.push_back(Message::default().event("complete").id(read.next.token()).data(data.to_string()));
        }
        self.at = read.next;
        idle
    }

    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self.queue.pop_front() {
                return Some(message);
            }
            if self.done {
                return None;
            }
            // Subscribe before reading: a commit in between still wakes us.
            let mut applied = self.reads.applied(&self.name).ok();
            // In the history, clients woken by the same commit at the same
            // point share one read.
            let shared = applied.as_ref().filter(|_| self.at.snapshot.is_none()).map(|a| *a.borrow());
            let read = match shared {
                Some(seen) => self.reads.shared_history(&self.name, &self.at, PAGE, seen).await,
                None => self.reads.changes(&self.name, Some(&self.at), PAGE).await.map_err(|e| e.to_string()),
            };
            let read = match read {
                Ok(read) => read,
                Err(e) => {
                    // The client reconnects after its last id, as after any
                    // dropped connection.
                    tracing::warn!("a change feed of `{}` stops: {e}", self.name);
                    return None;
                }
            };
            if self.take(read) {
                match applied.as_mut() {
                    Some(applied) => {
                        let _ = tokio::time::timeout(IDLE_LOOK, applied.changed()).await;
                    }
                    None => tokio::time::sleep(IDLE_LOOK).await,
                }
            }
        }
    }
}

/// A change as the feed sends it.
fn change_json(change: &Change) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    match &change.table {
        None => {
            let mut data = json!({ "position": change.cursor.id, "kind": change.kind, "key": change.key });
            if let Some(value) = &change.value {
                data["value"] = value_json(value);
            }
            snapshot_row(data, change)
        }
        Some(table) => {
            let mut data = json!({
                "position": change.cursor.id,
                "kind": change.kind,
                "table": table,
                "key": parse(&change.key),
            });
            if let Some(row) = &change.row {
                data["row"] = parse(row);
            }
            snapshot_row(data, change)
        }
    }
}

/// A row of a snapshot says so (it has no place in the history: `seq` 0).
fn snapshot_row(mut data: Value, change: &Change) -> Value {
    if change.seq == 0 {
        data["snapshot"] = Value::Bool(true);
    }
    data
}
