//! Sinks: delivery of the log's events to a message broker. A [`Sink`]
//! declares which events it takes and where they go ([`SinkManifest`]); reel
//! publishes each (the event's data as the body), or, when the sink
//! transforms, what [`Sink::transform`] makes of it. The
//! [`export_sink!`](crate::export_sink) macro makes it a component of the
//! `reel:projection/sink` world. The broker's address is reel's
//! configuration (`--nats-url`, `--amqp-url`), never the module's.

use crate::{RawEvent, Result};

/// The broker a sink publishes to (the WIT's `broker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// NATS JetStream (`Nats-Msg-Id` is the dedup id).
    Nats,
    /// RabbitMQ (AMQP 0-9-1; `message-id` is the dedup id).
    Amqp,
}

/// What a sink declares about itself (the WIT's `sink-manifest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkManifest {
    /// Unique name (the rules of a projection's name); names its checkpoint.
    pub name: String,
    /// Version of its logic.
    pub version: String,
    /// Event types taken (exact, or a prefix ending in `*`); empty: all.
    pub event_types: Vec<String>,
    /// Stream id prefixes taken; empty: all.
    pub stream_prefixes: Vec<String>,
    /// The broker.
    pub broker: Broker,
    /// Subject (NATS) or routing key (RabbitMQ), with `{stream_id}`,
    /// `{event_type}`, `{position}`, `{version}` filled from the event.
    pub subject: String,
    /// RabbitMQ's exchange (empty: the default exchange); empty for NATS.
    pub exchange: String,
    /// Whether reel calls [`Sink::transform`] for each event.
    pub transform: bool,
}

impl SinkManifest {
    /// A sink `name` at `version` publishing to `broker` at `subject`
    /// (RabbitMQ: the routing key, on the default exchange).
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        broker: Broker,
        subject: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            event_types: Vec::new(),
            stream_prefixes: Vec::new(),
            broker,
            subject: subject.into(),
            exchange: String::new(),
            transform: false,
        }
    }

    /// The event types it takes.
    pub fn event_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// The stream prefixes it takes.
    pub fn stream_prefixes<S: Into<String>>(mut self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.stream_prefixes = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// RabbitMQ: the exchange to publish to.
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Call [`Sink::transform`] for each event.
    pub fn with_transform(mut self) -> Self {
        self.transform = true;
        self
    }
}

/// One message a transform makes (the WIT's `message`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The subject or routing key; `None`: the manifest's template.
    pub subject: Option<String>,
    /// Headers, added to reel's.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Message {
    /// A message with `body`, to the manifest's subject.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self { subject: None, headers: Vec::new(), body: body.into() }
    }

    /// To `subject` instead of the manifest's.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// With a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A sink: where events go, and (optionally) what messages each becomes.
pub trait Sink {
    /// Name, version, events taken, broker and subject.
    fn describe() -> SinkManifest;

    /// The messages of `event` (called only when the manifest says
    /// `transform`): none, one, or several (their dedup ids are
    /// `sink:position:index`). An error stops the sink at the event.
    fn transform(event: &RawEvent) -> Result<Vec<Message>> {
        let _ = event;
        Ok(Vec::new())
    }
}
