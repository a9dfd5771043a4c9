//! What a reactor emits (`reel:projection/emit` and `timers`, wit/reactor.wit).

/// An event a reactor asks reel to append when its batch commits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(record)
)]
pub struct Emitted {
    /// Position of the event of the batch that caused it (`causation_id`).
    pub cause: i64,
    /// The stream to append to, under the reactor's declared prefix.
    #[cfg_attr(feature = "host", component(name = "stream-id"))]
    pub stream_id: String,
    /// The event's type name.
    #[cfg_attr(feature = "host", component(name = "event-type"))]
    pub event_type: String,
    /// The payload, as JSON text.
    pub data: String,
    /// Metadata, as JSON text (`{}` or empty for none).
    pub metadata: String,
}

impl Emitted {
    /// An event of `event_type` on `stream_id` caused by the event at
    /// `cause`, with `data` (JSON text) and no metadata of its own.
    pub fn new(
        cause: i64,
        stream_id: impl Into<String>,
        event_type: impl Into<String>,
        data: impl Into<String>,
    ) -> Self {
        Self {
            cause,
            stream_id: stream_id.into(),
            event_type: event_type.into(),
            data: data.into(),
            metadata: "{}".into(),
        }
    }
}

/// What a reactor declares about what it emits (`describe-emits`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(record)
)]
pub struct Emits {
    /// Every stream it emits to starts with this prefix (not empty).
    #[cfg_attr(feature = "host", component(name = "stream-prefix"))]
    pub stream_prefix: String,
}

impl Emits {
    /// Emitting under `stream_prefix`.
    pub fn new(stream_prefix: impl Into<String>) -> Self {
        Self { stream_prefix: stream_prefix.into() }
    }
}

/// A durable timer: `event` is appended when the wall clock passes `due`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(record)
)]
pub struct Timer {
    /// Names the timer among the reactor's; scheduling it again replaces it.
    pub key: String,
    /// When to fire, RFC 3339.
    pub due: String,
    /// The event appended when it fires.
    pub event: Emitted,
}
