//! The messages of a batch of events: one per event with reel's headers, or
//! what the module's `transform` makes of each, each with its dedup id.

use std::borrow::Cow;

use bytes::Bytes;

use reel_model::Event;

use crate::host::sink::{Message, SinkManifest, render_template};

/// One message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The subject (NATS) or routing key (RabbitMQ).
    pub subject: String,
    /// The dedup id: `sink:position`, `sink:position:index` when the
    /// transform made several messages of the event (see [`dedup_id`]).
    pub id: String,
    /// Headers: reel's, then the module's.
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// The body.
    pub body: Bytes,
}

/// Headers reel sets on every message (a module's header of one of these
/// names is dropped).
const REEL_HEADERS: [&str; 5] =
    ["Reel-Position", "Reel-Stream-Id", "Reel-Version", "Reel-Event-Type", "Reel-Occurred-At"];

/// Header names a module may not set: reel's, and the brokers' dedup ids.
fn reserved(name: &str) -> bool {
    REEL_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
        || name.eq_ignore_ascii_case("Nats-Msg-Id")
        || name.eq_ignore_ascii_case("Content-Type")
        || name.to_ascii_lowercase().starts_with("nats-")
}

/// A header value as brokers carry it: no line breaks or control characters.
fn clean(value: &str) -> String {
    if !value.chars().any(char::is_control) {
        return value.to_owned();
    }
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// reel's headers of `event`, with room for `more`.
fn reel_headers(event: &Event, more: usize) -> Vec<(Cow<'static, str>, String)> {
    let values = [
        event.position.to_string(),
        clean(&event.stream_id),
        event.version.to_string(),
        clean(&event.event_type),
        event.occurred_at.clone(),
    ];
    let mut headers = Vec::with_capacity(REEL_HEADERS.len() + more);
    headers.extend(REEL_HEADERS.iter().zip(values).map(|(n, v)| (Cow::Borrowed(*n), v)));
    headers
}

/// A message's dedup id: the sink's name and the event's position, and the
/// message's index when a transform made several of the event. The name
/// keeps two sinks that publish the same event into one JetStream stream
/// from dropping each other's messages as duplicates; it holds no `:` (a
/// sink's name is `a-z`, `0-9`, `-`, `_`), so no two sinks' ids meet. Not
/// the version: a new version continues from the checkpoint, and what it
/// sends again must carry the ids the old one sent.
pub fn dedup_id(sink: &str, position: i64, index: Option<usize>) -> String {
    match index {
        Some(index) => format!("{sink}:{position}:{index}"),
        None => format!("{sink}:{position}"),
    }
}

/// The one message of `event` when the sink has no transform: the event's
/// data as the body.
pub fn plain(manifest: &SinkManifest, event: &Event, nats: bool) -> Outgoing {
    let mut headers = reel_headers(event, 1);
    headers.push((Cow::Borrowed("Content-Type"), "application/json".into()));
    Outgoing {
        subject: render_template(&manifest.subject, event, nats),
        id: dedup_id(&manifest.name, event.position, None),
        headers,
        body: Bytes::copy_from_slice(event.data.as_bytes()),
    }
}

/// The messages a transform made of `event`, with their ids and reel's
/// headers.
pub fn transformed(manifest: &SinkManifest, event: &Event, made: Vec<Message>, nats: bool) -> Vec<Outgoing> {
    let several = made.len() > 1;
    made.into_iter()
        .enumerate()
        .map(|(index, message)| {
            let mut headers = reel_headers(event, message.headers.len());
            headers.extend(
                message
                    .headers
                    .into_iter()
                    .filter(|h| !reserved(&h.name))
                    .map(|h| (Cow::Owned(clean(&h.name)), clean(&h.value))),
            );
            let subject = match message.subject {
                Some(subject) => subject,
                None => render_template(&manifest.subject, event, nats),
            };
            let id = dedup_id(&manifest.name, event.position, several.then_some(index));
            Outgoing { subject, id, headers, body: Bytes::from(message.body) }
        })
        .collect()
}

/// Why a message cannot be published as it is (the sink stops at its
/// event): a subject NATS would refuse, or none at all.
pub fn check(message: &Outgoing, nats: bool) -> Result<(), String> {
    let subject = &message.subject;
    let bad_token = |t: &str| t.is_empty() || t == "*" || t == ">";
    if nats && (subject.chars().any(|c| c.is_whitespace() || c.is_control()) || subject.split('.').any(bad_token)) {
        return Err(format!(
            "subject `{subject}` is not one NATS publishes to: it is empty, holds a space, \
             or a token (between dots) that is empty or a wildcard"
        ));
    }
    if !nats && message.subject.len() > 255 {
        return Err(format!("routing key of {} bytes: RabbitMQ takes at most 255", message.subject.len()));
    }
    Ok(())
}
