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
