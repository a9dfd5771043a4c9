//! The event: one shape for the worker, the guests, the dead letters and HTTP.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// One committed event from the events table (the WIT's `event` record).
///
/// In JSON (every HTTP route that returns events) `data` and `metadata` are
/// the JSON they hold, as stored, not strings of JSON text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "host",
    derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower),
    component(record)
)]
pub struct Event {
    /// Global position: the event's `id` in the events table.
    pub position: i64,
    /// The stream (aggregate) the event belongs to.
    #[cfg_attr(feature = "host", component(name = "stream-id"))]
    pub stream_id: String,
    /// Version of the event within its stream, from 1.
    pub version: i64,
    /// Type name, e.g. `order.placed`.
    #[cfg_attr(feature = "host", component(name = "event-type"))]
    pub event_type: String,
    /// The payload, JSON text.
    pub data: String,
    /// Metadata, JSON text (`{}` when there is none).
    pub metadata: String,
    /// When it was recorded: RFC 3339 in UTC with microseconds.
    #[cfg_attr(feature = "host", component(name = "occurred-at"))]
    pub occurred_at: String,
}

impl Event {
    /// Bytes of text the event carries (payload, metadata, stream id, type
    /// and time): what a guest holds in memory for it.
    pub fn text_bytes(&self) -> usize {
        self.stream_id.len() + self.event_type.len() + self.data.len() + self.metadata.len() + self.occurred_at.len()
    }
}

/// JSON text written as the JSON it holds; text that is not JSON (which
/// reel never stores) as a string, rather than a broken document.
struct Json<'a>(&'a str);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(self.0) {
            Ok(raw) => raw.serialize(serializer),
            Err(_) => serializer.serialize_str(self.0),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut event = serializer.serialize_struct("Event", 7)?;
        event.serialize_field("position", &self.position)?;
        event.serialize_field("stream_id", &self.stream_id)?;
        event.serialize_field("version", &self.version)?;
        event.serialize_field("event_type", &self.event_type)?;
        event.serialize_field("data", &Json(&self.data))?;
        event.serialize_field("metadata", &Json(&self.metadata))?;
        event.serialize_field("occurred_at", &self.occurred_at)?;
        event.end()
    }
}

/// The JSON shape of [`Event`], read back.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    position: i64,
    stream_id: String,
    version: i64,
    event_type: String,
    data: Box<RawValue>,
    metadata: Box<RawValue>,
    occurred_at: String,
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(deserializer)?;
        Ok(Event {
            position: w.position,
            stream_id: w.stream_id,
            version: w.version,
            event_type: w.event_type,
            data: w.data.get().to_owned(),
            metadata: w.metadata.get().to_owned(),
            occurred_at: w.occurred_at,
        })
    }
}

/// An event a projection could not apply, set aside under the `skip`
/// policy: the event, why it failed and when. In JSON, the event's fields
/// and then `error` and `failed_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Why it failed.
    pub error: String,
    /// When it was set aside (RFC 3339).
    pub failed_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Event {
        Event {
            position: 3,
            stream_id: "order-1".into(),
            version: 2,
            event_type: "order.placed".into(),
            data: data.into(),
            metadata: "{}".into(),
            occurred_at: "2026-11-27T17:45:11.123456Z".into(),
        }
    }

    #[test]
    fn json_has_the_payload_as_sent_not_as_a_string() {
        let data = r#"{"total": 123456789012345678901234567890, "price": 9.50}"#;
        let json = serde_json::to_string(&event(data)).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"position":3,"stream_id":"order-1","version":2,"event_type":"order.placed","data":{data},"metadata":{{}},"occurred_at":"2026-11-27T17:45:11.123456Z"}}"#
            )
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event(data), "read back as it was");
    }

    #[test]
    fn a_dead_letter_is_the_event_then_its_error() {
        let letter = DeadLetter { event: event("[1]"), error: "boom".into(), failed_at: "then".into() };
        let json: serde_json::Value = serde_json::to_value(&letter).unwrap();
        assert_eq!(json["data"], serde_json::json!([1]));
        assert_eq!((json["position"].as_i64(), json["error"].as_str()), (Some(3), Some("boom")));
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 9, "{keys:?}");
    }

    #[test]
    fn text_that_is_not_json_is_a_string() {
        let json = serde_json::to_value(event("not json")).unwrap();
        assert_eq!(json["data"], "not json");
    }
}
