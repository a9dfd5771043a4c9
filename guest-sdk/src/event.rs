use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use crate::{Error, HandleError};

/// An event as the host delivers it: payload and metadata still JSON text
/// (reel's one event shape, [`reel_model::Event`]).
pub use reel_model::Event as RawEvent;

/// A decoded event handed to [`Projection::handle`](crate::Projection::handle):
/// the typed payload plus the envelope fields.
#[derive(Debug, Clone)]
pub struct Envelope<'a, E> {
    /// Global position (the events table's `id`).
    pub position: i64,
    /// The stream the event belongs to.
    pub stream_id: &'a str,
    /// Version within the stream, from 1.
    pub version: i64,
    /// Type name.
    pub event_type: &'a str,
    /// Metadata, JSON text.
    pub metadata: &'a str,
    /// RFC 3339 UTC timestamp with microseconds; use it instead of a clock.
    pub occurred_at: &'a str,
    /// The decoded payload.
    pub data: E,
}

/// Read access to an event's fields, so a host can hand its own event type to
/// [`native::handle`](crate::native::handle) without copying.
pub trait EventFields {
    /// Global position.
    fn position(&self) -> i64;
    /// Stream id.
    fn stream_id(&self) -> &str;
    /// Version within the stream.
    fn version(&self) -> i64;
    /// Type name.
    fn event_type(&self) -> &str;
    /// Payload, JSON text.
    fn data(&self) -> &str;
    /// Metadata, JSON text.
    fn metadata(&self) -> &str;
    /// RFC 3339 UTC timestamp.
    fn occurred_at(&self) -> &str;

    /// Decode the payload as `E`, failing as the batch's error at this event:
    /// what [`Projection::handle_batch`](crate::Projection::handle_batch) uses.
    /// The message names the path to the value at fault, as
    /// `serde_path_to_error` writes it:
    /// ``invalid event: `order.placed` event: items[0].quantity: invalid type: string "two", expected i64 at line 1 column 83``.
    fn envelope<E: DeserializeOwned>(&self) -> Result<Envelope<'_, E>, HandleError> {
        self.decode::<E>().map_err(|e| HandleError {
            position: self.position(),
            error: Error::InvalidEvent(format!("`{}` event: {}", self.event_type(), with_path::<E>(self, e))),
        })
    }

    /// Decode the payload as `E` (see [`Projection::Event`](crate::Projection::Event)).
    fn decode<E: DeserializeOwned>(&self) -> Result<Envelope<'_, E>, serde_json::Error> {
        let data = E::deserialize(Tagged { event_type: self.event_type(), data: self.data(), track: None })?;
        Ok(Envelope {
            position: self.position(),
            stream_id: self.stream_id(),
            version: self.version(),
            event_type: self.event_type(),
            metadata: self.metadata(),
            occurred_at: self.occurred_at(),
            data,
        })
    }
}

/// `error`, from decoding an event's payload as `E`, preceded by the path to the
/// value it is about (nothing at the payload's root). The payload is decoded
/// again with the path tracked: only a failed decode pays for it.
fn with_path<E: DeserializeOwned>(event: &(impl EventFields + ?Sized), error: serde_json::Error) -> String {
    let mut track = serde_path_to_error::Track::new();
    match E::deserialize(Tagged { event_type: event.event_type(), data: event.data(), track: Some(&mut track) }) {
        Err(again) => serde_path_to_error::Error::new(track.path(), again).to_string(),
        Ok(_) => error.to_string(),
    }
}

/// Decode `data` tagged with `tag` as `T`, as if it were
/// `{"type": <tag>, "data": <data>}` (a command as a decider reads it); the
/// message names the path to the value at fault.
pub(crate) fn decode_tagged<T: DeserializeOwned>(tag: &str, data: &str) -> Result<T, String> {
    T::deserialize(Tagged { event_type: tag, data, track: None }).map_err(|error| {
        let mut track = serde_path_to_error::Track::new();
        match T::deserialize(Tagged { event_type: tag, data, track: Some(&mut track) }) {
            Err(again) => serde_path_to_error::Error::new(track.path(), again).to_string(),
            Ok(_) => error.to_string(),
        }
    })
}

impl EventFields for RawEvent {
    fn position(&self) -> i64 {
        self.position
    }
    fn stream_id(&self) -> &str {
        &self.stream_id
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn data(&self) -> &str {
        &self.data
    }
    fn metadata(&self) -> &str {
        &self.metadata
    }
    fn occurred_at(&self) -> &str {
        &self.occurred_at
    }
}

/// Presents an event to serde as `{"type": <event type>, "data": <payload>}`
/// without building that JSON: the payload is parsed once, in place.
struct Tagged<'a, 't> {
    event_type: &'a str,
    data: &'a str,
    /// Where the payload's deserializer is, when a message needs it.
    track: Option<&'t mut serde_path_to_error::Track>,
}

impl<'a> de::Deserializer<'a> for Tagged<'a, '_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(TaggedFields { event: self, next: Field::Type })
    }

    serde::forward_to_deserialize_any! {
        <W: Visitor<'a>>
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[derive(Clone, Copy)]
enum Field {
    Type,
    Data,
    Done,
}

struct TaggedFields<'a, 't> {
    event: Tagged<'a, 't>,
    next: Field,
}

impl<'a> MapAccess<'a> for TaggedFields<'a, '_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.next {
            Field::Type => "type",
            Field::Data => "data",
            Field::Done => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        match self.next {
            Field::Type => {
                self.next = Field::Data;
                seed.deserialize(self.event.event_type.into_deserializer())
            }
            Field::Data => {
                self.next = Field::Done;
                let mut json = serde_json::Deserializer::from_str(self.event.data);
                let value = match self.event.track.as_deref_mut() {
                    Some(track) => seed.deserialize(serde_path_to_error::Deserializer::new(&mut json, track))?,
                    None => seed.deserialize(&mut json)?,
                };
                json.end()?;
                Ok(value)
            }
            Field::Done => Err(de::Error::custom("no more fields")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "type", content = "data")]
    enum Shape {
        #[serde(rename = "shape.circle")]
        Circle { radius: f64 },
        #[serde(rename = "shape.square")]
        Square(Side),
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Side {
        side: i64,
    }

    fn raw(event_type: &str, data: &str) -> RawEvent {
        RawEvent {
            position: 7,
            stream_id: "s-1".into(),
            version: 2,
            event_type: event_type.into(),
            data: data.into(),
            metadata: "{}".into(),
            occurred_at: "2026-01-01T00:00:00.000000Z".into(),
        }
    }

    #[test]
    fn decodes_adjacently_tagged_enums_from_type_and_payload() {
        let e = raw("shape.circle", r#"{"radius": 1.5}"#);
        assert_eq!(e.decode::<Shape>().unwrap().data, Shape::Circle { radius: 1.5 });
        let e = raw("shape.square", r#"{"side": 3}"#);
        let envelope = e.decode::<Shape>().unwrap();
        assert_eq!(envelope.data, Shape::Square(Side { side: 3 }));
        assert_eq!((envelope.position, envelope.stream_id, envelope.version), (7, "s-1", 2));
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_errors_that_name_the_problem() {
        let err = raw("shape.blob", "{}").decode::<Shape>().unwrap_err().to_string();
        assert!(err.contains("unknown variant `shape.blob`"), "{err}");
        let err = raw("shape.circle", r#"{"radius": "big"}"#).decode::<Shape>().unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");
        let err = raw("shape.circle", r#"{"radius": 1"#).decode::<Shape>().unwrap_err().to_string();
        assert!(err.contains("EOF"), "{err}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", content = "data")]
    #[allow(dead_code)]
    enum Order {
        #[serde(rename = "order.placed")]
        Placed {
            #[serde(rename = "orderId")]
            order_id: String,
            items: Vec<Item>,
        },
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: i64,
    }

    #[test]
    fn a_payload_error_names_the_path_to_the_value() {
        let message = |data: &str| raw("order.placed", data).envelope::<Order>().unwrap_err().error.to_string();
        assert_eq!(
            message(r#"{"orderId": "o", "items": [{"quantity": 1}, {"quantity": "two"}]}"#),
            "invalid event: `order.placed` event: items[1].quantity: invalid type: string \"two\", expected i64 at line 1 column 62"
        );
        assert_eq!(
            message(r#"{"orderId": "o", "items": [{}]}"#),
            "invalid event: `order.placed` event: items[0]: missing field `quantity` at line 1 column 29"
        );
        // At the payload's root there is no path to name.
        assert_eq!(
            message(r#"{"items": []}"#),
            "invalid event: `order.placed` event: missing field `orderId` at line 1 column 13"
        );
    }

    #[test]
    fn untyped_events_decode_to_json_values() {
        let e = raw("any.thing", r#"{"a": [1, 2]}"#);
        let v = e.decode::<serde_json::Value>().unwrap().data;
        assert_eq!(v, serde_json::json!({"type": "any.thing", "data": {"a": [1, 2]}}));
    }
}
