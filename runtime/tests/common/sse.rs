//! A server-sent events client over the router, as a browser's
//! `EventSource` reads a stream: messages split on blank lines, `id`,
//! `event` and `data` fields, `Last-Event-ID` sent on reconnecting.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// One message of the stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub id: Option<String>,
    /// `message` when the server named none.
    pub event: String,
    pub data: String,
}

/// An open stream.
pub struct Stream {
    body: Body,
    buffer: String,
}

/// `GET uri` with `Last-Event-ID` if given: the status, the content type
/// and the stream (or the error body as text).
pub async fn open(app: &Router, uri: &str, last_id: Option<&str>) -> (StatusCode, String, Stream) {
    let mut request = Request::builder().uri(uri).header("accept", "text/event-stream");
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, Stream { body: response.into_body(), buffer: String::new() })
}

/// The first whole message of `buffer`, taken out of it; comments
/// (keep-alives) are skipped. `None` until a message is whole.
pub fn take(buffer: &mut String) -> Option<Message> {
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut message = Message { event: "message".into(), ..Message::default() };
        let mut data = Vec::new();
        let mut fields = 0;
        for line in block.lines() {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => message.id = Some(value.to_owned()),
                "event" => message.event = value.to_owned(),
                "data" => data.push(value),
                _ => continue,
            }
            fields += 1;
        }
        if fields > 0 {
            message.data = data.join("\n");
            return Some(message);
        }
    }
    None
}

impl Stream {
    /// The next message; `None` when the server ended the stream. Comments
    /// (keep-alives) are skipped.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = take(&mut self.buffer) {
                return Some(message);
            }
            let frame = self.body.frame().await?.expect("the stream reads");
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }

    /// The rest of the body as text (an error response).
    pub async fn text(self) -> String {
        String::from_utf8(self.body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }
}
