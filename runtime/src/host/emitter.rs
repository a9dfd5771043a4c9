//! A reactor's emissions within one batch: each `emit` and timer is checked
//! when the guest makes it (cause in the batch, stream under the prefix,
//! event type, JSON, limits, causation depth), gets reel's metadata, and
//! waits for the batch's commit (ADR 23).

use std::collections::HashMap;

use serde_json::{Map, Value};

use reel_model::{Cursor, Emits, Emitted, Event, Timer};

use crate::config::EmitLimits;
use crate::store::{Emission, Emissions, TimerChange};

/// Longest stream id (as for appends over HTTP).
const MAX_STREAM_BYTES: usize = 512;
/// Longest event type an emit may name.
const MAX_TYPE_BYTES: usize = 200;

/// An event of the batch, as a cause.
struct Cause {
    cursor: Cursor,
    /// Its metadata (JSON text), read only when it causes something.
    metadata: String,
    /// What its emissions inherit from it, read from `metadata` once: their
    /// causation depth and their correlation id.
    inherited: Option<(u64, Value)>,
    /// Emits (and timers) it caused so far in this batch.
    count: u32,
    bytes: usize,
}

/// A reactor's emissions for the open batch.
pub struct Emitter {
    reactor: String,
    /// `name@version`, the metadata's `emitted_by`.
    by: String,
    /// The same as JSON text.
    by_json: String,
    prefix: String,
    limits: EmitLimits,
    causes: HashMap<i64, Cause>,
    out: Emissions,
    bytes: usize,
}

impl Emitter {
    /// The emitter of reactor `name` at `version`, emitting under `emits`.
    pub fn new(name: &str, version: &str, emits: &Emits, limits: EmitLimits) -> Self {
        Self {
            reactor: name.to_owned(),
            by: format!("{name}@{version}"),
            by_json: Value::from(format!("{name}@{version}")).to_string(),
            prefix: emits.stream_prefix.clone(),
            limits,
            causes: HashMap::new(),
            out: Emissions { reactor: name.to_owned(), ..Emissions::default() },
            bytes: 0,
        }
    }

    /// The declared stream prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Start a batch of `events` (at `cursors`): forget what an earlier
    /// attempt emitted.
    pub fn begin(&mut self, events: &[Event], cursors: &[Cursor]) {
        self.causes.clear();
        for (event, cursor) in events.iter().zip(cursors) {
            let cause =
                Cause { cursor: *cursor, metadata: event.metadata.clone(), inherited: None, count: 0, bytes: 0 };
            self.causes.insert(event.position, cause);
        }
        self.out = Emissions { reactor: self.reactor.clone(), ..Emissions::default() };
        self.bytes = 0;
    }

    /// What the batch emitted, for its commit.
    pub fn take(&mut self) -> Emissions {
        self.causes.clear();
        self.bytes = 0;
        std::mem::replace(&mut self.out, Emissions { reactor: self.reactor.clone(), ..Emissions::default() })
    }

    /// `emit.emit`.
    pub fn emit(&mut self, event: Emitted) -> Result<(), String> {
        let emission = self.check(event, "emit")?;
        self.out.events.push(emission);
        Ok(())
    }

    /// `timers.schedule`.
    pub fn schedule(&mut self, timer: Timer) -> Result<(), String> {
        check_key(&timer.key)?;
        let Some(due_micros) = reel_model::time::parse_micros(&timer.due) else {
            return Err(format!("timer `{}`: due `{}` is not an RFC 3339 time", timer.key, timer.due));
        };
        let event = self.check(timer.event, "timer")?;
        self.out.timers.push(TimerChange::Schedule { key: timer.key, due_micros, event });
        Ok(())
    }

    /// `timers.cancel`.
    pub fn cancel(&mut self, key: String) -> Result<(), String> {
        check_key(&key)?;
        self.out.timers.push(TimerChange::Cancel { key });
        Ok(())
    }

    /// Check `event` and fill in its metadata and index.
    fn check(&mut self, event: Emitted, what: &str) -> Result<Emission, String> {
        let Emitted { cause, stream_id, event_type, data, metadata } = event;
        let limits = self.limits;
        let Some(c) = self.causes.get_mut(&cause) else {
            return Err(format!(
                "{what} names cause position {cause}, which is not an event of the batch being handled \
                 (pass the position of the event that caused it)"
            ));
        };
        if !stream_id.starts_with(&self.prefix) {
            return Err(format!(
                "{what} to stream `{}` refused: this reactor declared the stream prefix `{}`",
                shown(&stream_id),
                self.prefix
            ));
        }
        if stream_id.len() > MAX_STREAM_BYTES || stream_id.contains('\0') {
            return Err(format!("{what}: stream id must be at most {MAX_STREAM_BYTES} bytes, without NUL"));
        }
        if event_type.is_empty() || event_type.len() > MAX_TYPE_BYTES || event_type.chars().any(char::is_control) {
            return Err(format!(
                "{what}: event type `{}` refused: 1 to {MAX_TYPE_BYTES} bytes, no control characters",
                shown(&event_type).escape_default()
            ));
        }
        // Parsed whole: nesting, surrogates and numbers are checked as
        // PostgreSQL's `jsonb` would refuse them (an `IgnoredAny` does not).
        let data_value: Value =
            serde_json::from_str(&data).map_err(|e| format!("{what} of `{event_type}`: data is not JSON: {e}"))?;
        if data.contains("u0000") && holds_nul(&data_value) {
            return Err(format!("{what} of `{event_type}`: data holds a NUL character, which PostgreSQL cannot store"));
        }
        let meta = match metadata.trim() {
            "" => None,
            text => match serde_json::from_str(text) {
                Ok(Value::Object(map)) => Some(map),
                Ok(_) => return Err(format!("{what} of `{event_type}`: metadata must be a JSON object")),
                Err(e) => return Err(format!("{what} of `{event_type}`: metadata is not JSON: {e}")),
            },
        };
        let (depth, correlation) = c.inherited.get_or_insert_with(|| {
            let cause_meta: Map<String, Value> = serde_json::from_str(&c.metadata).unwrap_or_default();
            let depth = cause_meta.get("causation_depth").and_then(Value::as_u64).unwrap_or(0) + 1;
            let correlation = cause_meta.get("correlation_id").cloned().unwrap_or(Value::from(cause));
            (depth, correlation)
        });
        let depth = *depth;
        if depth > u64::from(limits.max_depth) {
            return Err(format!(
                "causation depth limit: emitting `{event_type}` for the event at position {cause} would be \
                 {depth} emissions deep (limit {}, --emit-depth): reactors may be answering each other for ever",
                limits.max_depth
            ));
        }
        let metadata = match meta {
            // The usual case, written as the object below would be.
            None => format!(
                r#"{{"causation_id":{cause},"correlation_id":{correlation},"emitted_by":{},"causation_depth":{depth}}}"#,
                self.by_json
            ),
            Some(mut meta) => {
                meta.insert("causation_id".into(), Value::from(cause));
                meta.insert("correlation_id".into(), correlation.clone());
                meta.insert("emitted_by".into(), Value::from(self.by.clone()));
                meta.insert("causation_depth".into(), Value::from(depth));
                Value::Object(meta).to_string()
            }
        };
        let bytes = data.len() + metadata.len();
        c.count += 1;
        c.bytes += bytes;
        self.bytes += bytes;
        let batch_events = self.out.events.len() + self.out.timers.len() + 1;
        if c.count > limits.events_per_event || c.bytes > limits.bytes_per_event {
            return Err(format!(
                "emit limit: the event at position {cause} caused {} events of {} bytes (limits: {} events, \
                 {} bytes per handled event; --emit-per-event, --emit-kib-per-event)",
                c.count, c.bytes, limits.events_per_event, limits.bytes_per_event
            ));
        }
        if batch_events > limits.events_per_batch as usize || self.bytes > limits.bytes_per_batch {
            return Err(format!(
                "emit limit: the batch emitted {batch_events} events of {} bytes (limits: {} events, \
                 {} bytes per batch; --emit-per-batch, --emit-mib-per-batch)",
                self.bytes, limits.events_per_batch, limits.bytes_per_batch
            ));
        }
        Ok(Emission { cause, cause_cursor: c.cursor, index: c.count - 1, stream_id, event_type, data, metadata })
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 1024 || key.contains('\0') {
        return Err(format!("timer key `{}` refused: 1 to 1024 bytes, without NUL", shown(key)));
    }
    Ok(())
}

fn shown(text: &str) -> &str {
    super::caps::truncate(text, 100)
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(cause: i64, data: &str, metadata: &str) -> Emitted {
        Emitted {
            cause,
            stream_id: "r-1".into(),
            event_type: "r.done".into(),
            data: data.into(),
            metadata: metadata.into(),
        }
    }

    #[test]
    fn reel_s_metadata_is_the_same_whether_the_guest_gave_some_or_none() {
        let emits = Emits { stream_prefix: "r-".into() };
        let mut emitter = Emitter::new("r", "1", &emits, EmitLimits::default());
        let cause = Event {
            position: 7,
            stream_id: "s".into(),
            version: 1,
            event_type: "t".into(),
            data: "{}".into(),
            metadata: r#"{"correlation_id":"order-9","causation_depth":2}"#.into(),
            occurred_at: "z".into(),
        };
        let plain = Event { position: 8, metadata: "{}".into(), ..cause.clone() };
        emitter.begin(&[cause, plain], &[Cursor { tx: 0, id: 7 }, Cursor { tx: 0, id: 8 }]);
        emitter.emit(emitted(7, r#"{"a":1}"#, "")).unwrap();
        emitter.emit(emitted(7, r#"{"a":2}"#, "{}")).unwrap();
        emitter.emit(emitted(7, "[]", r#"{"mine":true,"causation_id":1}"#)).unwrap();
        emitter.emit(emitted(8, "1", "")).unwrap();
        let refused = emitter.emit(emitted(7, "{", "")).unwrap_err();
        assert!(refused.starts_with("emit of `r.done`: data is not JSON"), "{refused}");
        let nul = emitter.emit(emitted(7, r#"{"a":"\u0000"}"#, "")).unwrap_err();
        assert!(nul.contains("data holds a NUL character"), "{nul}");
        for bad in [r#"{"b":1e400}"#, r#""\ud800""#, &format!("{}1{}", "[".repeat(200), "]".repeat(200))] {
            let refused = emitter.emit(emitted(7, bad, "")).unwrap_err();
            assert!(refused.contains("data is not JSON"), "{bad}: {refused}");
        }
        let out = emitter.take();
        let metadata: Vec<&str> = out.events.iter().map(|e| e.metadata.as_str()).collect();
        let inherited = r#"{"causation_id":7,"correlation_id":"order-9","emitted_by":"r@1","causation_depth":3}"#;
        assert_eq!(
            metadata,
            [
                inherited,
                inherited,
                r#"{"mine":true,"causation_id":7,"correlation_id":"order-9","emitted_by":"r@1","causation_depth":3}"#,
                r#"{"causation_id":8,"correlation_id":8,"emitted_by":"r@1","causation_depth":1}"#,
            ]
        );
        assert_eq!(out.events.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1, 2, 0]);
    }
}
