//! What a reactor's batch hands to storage with its checkpoint: the events
//! it emitted and its timer changes, each keyed by its cause (ADR 23).

use crate::Cursor;
use serde::{Deserialize, Serialize};

/// One event a reactor emitted, checked and with reel's metadata filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emission {
    /// Position of the event that caused it.
    pub cause: i64,
    /// Where the cause is in the log (PostgreSQL orders by (tx, id)).
    pub cause_cursor: Cursor,
    /// Its rank among the emissions of the same cause (0 first): with the
    /// reactor's name and the cause, the key that makes it exactly once.
    pub index: u32,
    /// The stream it goes to (under the reactor's prefix).
    pub stream_id: String,
    /// Its type.
    pub event_type: String,
    /// Payload, JSON text.
    pub data: String,
    /// Metadata, a JSON object as text, with `causation_id`,
    /// `correlation_id`, `emitted_by` and `causation_depth`.
    pub metadata: String,
}

/// A change to a reactor's timers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerChange {
    /// Record (or replace) timer `key`, due at `due_micros` (Unix µs).
    Schedule {
        /// The timer's name among the reactor's.
        key: String,
        /// When it fires.
        due_micros: i64,
        /// The event it appends (its `index` counts among its cause's emits).
        event: Emission,
    },
    /// Forget the pending timer `key`.
    Cancel {
        /// The timer's name.
        key: String,
    },
}

/// A reactor batch's output, committed with its checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Emissions {
    /// The reactor's name (the key's first part, the same across versions).
    pub reactor: String,
    /// Events, in the order emitted.
    pub events: Vec<Emission>,
    /// Timer changes, in the order made.
    pub timers: Vec<TimerChange>,
}

impl Emissions {
    /// Nothing emitted and no timer touched.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.timers.is_empty()
    }
}

/// What storing a reactor batch's emissions did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Events appended to the log.
    pub emitted: u64,
    /// Emissions for causes an earlier version (or generation) of the
    /// reactor had already handled: history wins, they are dropped.
    pub dropped: u64,
}

impl Emissions {
    /// The events as one JSON array for the database: `[{cause, cause_tx,
    /// index, stream_id, event_type, data, metadata}]`, data and metadata
    /// as JSON values.
    pub fn events_json(&self) -> String {
        // Written out, data and metadata as they are (checked JSON when
        // emitted): a catch-up's batch holds thousands, and parsing each
        // into a value to print it again cost the worker's thread.
        let mut out = String::with_capacity(self.events.iter().map(|e| e.data.len() + e.metadata.len() + 160).sum());
        out.push('[');
        for (n, e) in self.events.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            e.write_json(&mut out);
        }
        out.push(']');
        out
    }

    /// The timer changes as one JSON array: `[{key, due_micros, event}]` or
    /// `[{key, cancel: true}]`.
    pub fn timers_json(&self) -> String {
        let changes = self.timers.iter().map(|t| match t {
            TimerChange::Schedule { key, due_micros, event } => {
                serde_json::json!({ "key": key, "due_micros": due_micros, "event": event.to_json() })
            }
            TimerChange::Cancel { key } => serde_json::json!({ "key": key, "cancel": true }),
        });
        serde_json::Value::Array(changes.collect()).to_string()
    }
}

impl Emission {
    /// [`Self::to_json`], written to `out` without parsing data and
    /// metadata into values (text that is not JSON is `null`, as there).
    fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        let raw = |out: &mut String, text: &str| match serde_json::from_str::<&serde_json::value::RawValue>(text) {
            Ok(raw) => out.push_str(raw.get()),
            Err(_) => out.push_str("null"),
        };
        let quoted = |out: &mut String, text: &str| out.push_str(&serde_json::Value::from(text).to_string());
        let (cause, tx, index) = (self.cause, self.cause_cursor.tx, self.index);
        let _ = write!(out, r#"{{"cause":{cause},"cause_tx":{tx},"index":{index},"stream_id":"#);
        quoted(out, &self.stream_id);
        out.push_str(r#","event_type":"#);
        quoted(out, &self.event_type);
        out.push_str(r#","data":"#);
        raw(out, &self.data);
        out.push_str(r#","metadata":"#);
        raw(out, &self.metadata);
        out.push('}');
    }

    fn to_json(&self) -> serde_json::Value {
        let parse = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "cause": self.cause,
            "cause_tx": self.cause_cursor.tx,
            "index": self.index,
            "stream_id": self.stream_id,
            "event_type": self.event_type,
            "data": parse(&self.data),
            "metadata": parse(&self.metadata),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_array_written_out_is_the_one_built_from_values() {
        let emission = |n: i64, data: &str, metadata: &str| Emission {
            cause: n,
            cause_cursor: Cursor { tx: n * 7, id: n },
            index: n as u32,
            stream_id: format!("relay-\"q\"\\{n}\u{e9}"),
            event_type: "relay.relayed\n".into(),
            data: data.into(),
            metadata: metadata.into(),
        };
        let emissions = Emissions {
            reactor: "relay".into(),
            events: vec![
                emission(1, r#"{"from": 1, "by": "1"}"#, r#"{"causation_id":1}"#),
                emission(2, " [1, 2.5, null] ", "{}"),
                emission(3, "not json", ""),
            ],
            timers: vec![],
        };
        let built = serde_json::Value::Array(emissions.events.iter().map(Emission::to_json).collect());
        let written: serde_json::Value = serde_json::from_str(&emissions.events_json()).unwrap();
        assert_eq!(written, built);
        assert_eq!(Emissions::default().events_json(), "[]");
    }
}
