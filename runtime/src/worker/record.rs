//! A replay record (ADR 49): everything needed to run a projection's call on
//! a poison event again, with no database: the event as the guest got it,
//! the module (hash and bytes), every host call's answer in order, the
//! guest's log lines, the error, and the read model as it was before the
//! event. One JSON file; bytes (the module, KV values, blobs) in base64.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use guest_sdk::Level;
use serde_json::{Map, Value as Json, json};

use reel_model::{Event, Rows, SqlError, Value};

use crate::host::tape::HostCall;
use crate::store::{Checkpoint, DumpSink};

/// The format's version, first in every record.
pub const FORMAT: &str = "reel-replay/1";

/// Most bytes of read model a record keeps (ADR 49): a bigger one is left
/// out, and the record says so.
pub const SNAPSHOT_BYTES: usize = 16 << 20;

/// Where the call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedIn {
    /// In the guest's `handle` call (its error, a trap, a limit).
    Handle,
    /// When the batch's writes reached the database (an `execute` refused).
    Commit,
    /// It did not fail when recorded (the failure was not the module's
    /// alone: time, memory, the machine).
    Nowhere,
}

impl FailedIn {
    fn name(self) -> &'static str {
        match self {
            FailedIn::Handle => "handle",
            FailedIn::Commit => "commit",
            FailedIn::Nowhere => "nowhere",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "handle" => FailedIn::Handle,
            "commit" => FailedIn::Commit,
            "nowhere" => FailedIn::Nowhere,
            _ => return None,
        })
    }
}

/// The module a record ran.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedModule {
    /// SHA-256 of its bytes, hex.
    pub hash: String,
    /// Its file name when it ran.
    pub file: String,
    /// Its bytes; `None` when the file had changed by the time of the
    /// recording (the hash still says which module it was).
    pub bytes: Option<Vec<u8>>,
}

/// A projection's read model, whole: tables (name, columns, rows) and KV.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Tables by name: columns, rows.
    pub tables: Vec<(String, Vec<String>, Vec<Vec<Value>>)>,
    /// KV entries, by key.
    pub kv: Vec<(String, Vec<u8>)>,
    /// Its position (the checkpoint's).
    pub position: i64,
}

/// A [`DumpSink`] that keeps a read model up to a size.
pub struct SnapshotSink {
    snapshot: Snapshot,
    bytes: usize,
    limit: usize,
}

impl SnapshotSink {
    /// Keep at most `limit` bytes of values.
    pub fn new(limit: usize) -> Self {
        Self { snapshot: Snapshot::default(), bytes: 0, limit }
    }

    /// The read model, or `None` when it was over the limit.
    pub fn finish(self) -> Option<Snapshot> {
        (self.bytes <= self.limit).then_some(self.snapshot)
    }

    fn count(&mut self, bytes: usize) -> bool {
        self.bytes = self.bytes.saturating_add(bytes);
        self.bytes <= self.limit
    }
}

impl DumpSink for SnapshotSink {
    fn checkpoint(&mut self, checkpoint: Checkpoint) {
        self.snapshot.position = checkpoint.cursor.id;
    }

    fn table(&mut self, name: &str, columns: &[String]) {
        self.snapshot.tables.push((name.to_owned(), columns.to_vec(), Vec::new()));
    }

    fn row(&mut self, values: &[Value]) {
        let size = values.iter().map(value_bytes).sum::<usize>();
        if self.count(size)
            && let Some((_, _, rows)) = self.snapshot.tables.last_mut()
        {
            rows.push(values.to_vec());
        }
    }

    fn kv(&mut self, key: &str, value: &[u8]) {
        if self.count(key.len() + value.len()) {
            self.snapshot.kv.push((key.to_owned(), value.to_vec()));
        }
    }
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        _ => 8,
    }
}

/// The limits a recorded call ran within (those a guest can run into).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedLimits {
    /// The call's CPU deadline, in milliseconds.
    pub timeout_ms: u64,
    /// The guest's memory limit.
    pub memory_bytes: usize,
    /// Largest KV value.
    pub kv_value_bytes: usize,
    /// Longest KV key.
    pub kv_key_bytes: usize,
}

impl RecordedLimits {
    /// Those of `limits`.
    pub fn of(limits: &crate::config::Limits) -> Self {
        Self {
            timeout_ms: limits.batch_timeout.as_millis() as u64,
            memory_bytes: limits.memory_bytes,
            kv_value_bytes: limits.kv_value_bytes,
            kv_key_bytes: limits.kv_key_bytes,
        }
    }

    /// `limits` with these in place of its own.
    pub fn apply(&self, limits: &mut crate::config::Limits) {
        limits.batch_timeout = std::time::Duration::from_millis(self.timeout_ms);
        limits.memory_bytes = self.memory_bytes;
        limits.kv_value_bytes = self.kv_value_bytes;
        limits.kv_key_bytes = self.kv_key_bytes;
    }
}

/// Everything a replay of one poison event needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The projection.
    pub projection: String,
    /// Its version.
    pub version: String,
    /// The database it ran on: `sqlite` or `postgres` (`sql.dialect`).
    pub dialect: String,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
    /// The event, as the guest got it.
    pub event: Event,
    /// The module that failed.
    pub module: RecordedModule,
    /// The guest's host calls and log lines, in order, up to the tape's
    /// bound ([`crate::host::tape::TAPE_BYTES`]).
    pub calls: Vec<HostCall>,
    /// How many calls and log lines came past that bound and are not in
    /// `calls` (0: the record has them all).
    pub calls_dropped: u64,
    /// The error, as the projection's status shows it.
    pub error: String,
    /// Where it failed.
    pub failed_in: FailedIn,
    /// The limits the call ran within; a replay runs within the same.
    pub limits: RecordedLimits,
    /// The read model before the event; `None` when it was over
    /// [`SNAPSHOT_BYTES`] (or could not be read: `snapshot_missing` says).
    pub snapshot: Option<Snapshot>,
    /// Why there is no snapshot.
    pub snapshot_missing: Option<String>,
}

impl Record {
    /// The guest's log lines, in order.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                HostCall::Log { level, message } => Some((*level, message.clone())),
                _ => None,
            })
            .collect()
    }

    /// The record as JSON text.
    pub fn to_json(&self) -> String {
        let module = json!({
            "hash": self.module.hash,
            "file": self.module.file,
            "bytes": self.module.bytes.as_ref().map(|b| BASE64.encode(b)),
        });
        let snapshot = self.snapshot.as_ref().map(|s| {
            let tables: Vec<Json> = s
                .tables
                .iter()
                .map(|(name, columns, rows)| {
                    let rows: Vec<Json> =
                        rows.iter().map(|r| Json::Array(r.iter().map(value_json).collect())).collect();
                    json!({ "name": name, "columns": columns, "rows": rows })
                })
                .collect();
            json!({ "position": s.position, "tables": tables, "kv": entries_json(&s.kv) })
        });
        let record = json!({
            "format": FORMAT,
            "projection": self.projection,
            "version": self.version,
            "dialect": self.dialect,
            "recorded_at": self.recorded_at,
            "error": self.error,
            "failed_in": self.failed_in.name(),
            "logs": self.logs().iter().map(|(l, m)| json!({ "level": level_name(*l), "message": m })).collect::<Vec<_>>(),
            "event": {
                "position": self.event.position,
                "stream_id": self.event.stream_id,
                "version": self.event.version,
                "event_type": self.event.event_type,
                "data": self.event.data,
                "metadata": self.event.metadata,
                "occurred_at": self.event.occurred_at,
            },
            "limits": {
                "timeout_ms": self.limits.timeout_ms,
                "memory_bytes": self.limits.memory_bytes,
                "kv_value_bytes": self.limits.kv_value_bytes,
                "kv_key_bytes": self.limits.kv_key_bytes,
            },
            "calls_dropped": self.calls_dropped,
            "snapshot": snapshot,
            "snapshot_missing": self.snapshot_missing,
            "module": module,
        });
        // The calls are written one at a time, not built as one JSON value
        // first: a tape's worth of them as values is several times its size.
        let record = WithCalls { head: record, calls: Calls(&self.calls) };
        let mut text = serde_json::to_string_pretty(&record).expect("JSON values serialize");
        text.push('\n');
        text
    }

    /// A record from its JSON text; what is wrong with it, if anything.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let json: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        match json.get("format").and_then(Json::as_str) {
            Some(FORMAT) => {}
            Some(other) => return Err(format!("format `{other}`; this reel reads `{FORMAT}`")),
            None => {
                return Err(format!("no `format`: not a replay record (those start with \"format\": \"{FORMAT}\")"));
            }
        }
        let event = field(&json, "event")?;
        let module = field(&json, "module")?;
        let snapshot = match json.get("snapshot") {
            None | Some(Json::Null) => None,
            Some(s) => Some(snapshot_from(s).map_err(|e| format!("snapshot: {e}"))?),
        };
        let calls = field(&json, "calls")?
            .as_array()
            .ok_or("calls: not a list")?
            .iter()
            .enumerate()
            .map(|(i, c)| call_from(c).map_err(|e| format!("calls[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        let limits = field(&json, "limits")?;
        Ok(Record {
            projection: text_of(&json, "projection")?,
            version: text_of(&json, "version")?,
            dialect: text_of(&json, "dialect")?,
            recorded_at: text_of(&json, "recorded_at")?,
            event: Event {
                position: int_of(event, "position")?,
                stream_id: text_of(event, "stream_id")?,
                version: int_of(event, "version")?,
                event_type: text_of(event, "event_type")?,
                data: text_of(event, "data")?,
                metadata: text_of(event, "metadata")?,
                occurred_at: text_of(event, "occurred_at")?,
            },
            module: RecordedModule {
                hash: text_of(module, "hash")?,
                file: text_of(module, "file")?,
                bytes: match module.get("bytes") {
                    None | Some(Json::Null) => None,
                    Some(b) => Some(bytes_from(b).map_err(|e| format!("module bytes: {e}"))?),
                },
            },
            calls,
            // Records written before the tape had a bound have them all.
            calls_dropped: match json.get("calls_dropped") {
                None | Some(Json::Null) => 0,
                Some(n) => n.as_u64().ok_or("calls_dropped: not a count")?,
            },
            error: text_of(&json, "error")?,
            failed_in: FailedIn::parse(&text_of(&json, "failed_in")?)
                .ok_or("failed_in: not handle, commit or nowhere")?,
            limits: RecordedLimits {
                timeout_ms: int_of(limits, "timeout_ms")? as u64,
                memory_bytes: int_of(limits, "memory_bytes")? as usize,
                kv_value_bytes: int_of(limits, "kv_value_bytes")? as usize,
                kv_key_bytes: int_of(limits, "kv_key_bytes")? as usize,
            },
            snapshot,
            snapshot_missing: json.get("snapshot_missing").and_then(Json::as_str).map(str::to_owned),
        })
    }
}

/// A record's JSON, its calls after the rest.
#[derive(serde::Serialize)]
struct WithCalls<'a> {
    #[serde(flatten)]
    head: Json,
    calls: Calls<'a>,
}

/// Host calls, serialized as a list one call at a time.
struct Calls<'a>(&'a [HostCall]);

impl serde::Serialize for Calls<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(call_json))
    }
}

/// Where a server keeps the record of projection `name`'s event at
/// `position`: `{data_dir}/replays/{name}/{position}.json`.
pub fn path(data_dir: &Path, name: &str, position: i64) -> PathBuf {
    data_dir.join("replays").join(name).join(format!("{position}.json"))
}

/// A level as the log writes it.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

fn level_from(name: &str) -> Result<Level, String> {
    Ok(match name {
        "TRACE" => Level::Trace,
        "DEBUG" => Level::Debug,
        "INFO" => Level::Info,
        "WARN" => Level::Warn,
        "ERROR" => Level::Error,
        other => return Err(format!("level `{other}`")),
    })
}

fn call_json(call: &HostCall) -> Json {
    match call {
        HostCall::KvGet { key, value } => {
            json!({ "kv_get": { "key": key, "value": value.as_ref().map(|v| BASE64.encode(v)) } })
        }
        HostCall::KvScan { prefix, after, limit, entries } => json!({ "kv_scan": {
            "prefix": prefix, "after": after, "limit": limit, "entries": entries_json(entries),
        } }),
        HostCall::SqlQuery { statement, params, result } => {
            let result = match result {
                Ok(rows) => json!({ "columns": rows.columns, "rows": rows.rows.iter()
                    .map(|r| Json::Array(r.iter().map(value_json).collect())).collect::<Vec<_>>() }),
                Err(e) => json!({ "error": { "code": e.code, "message": e.message } }),
            };
            json!({ "sql_query": {
                "statement": statement,
                "params": params.iter().map(value_json).collect::<Vec<_>>(),
                "result": result,
            } })
        }
        HostCall::Log { level, message } => json!({ "log": { "level": level_name(*level), "message": message } }),
    }
}

fn call_from(json: &Json) -> Result<HostCall, String> {
    let object = json.as_object().filter(|o| o.len() == 1).ok_or("not an object of one call")?;
    let (kind, body) = object.iter().next().expect("one entry");
    Ok(match kind.as_str() {
        "kv_get" => HostCall::KvGet {
            key: text_of(body, "key")?,
            value: match body.get("value") {
                None | Some(Json::Null) => None,
                Some(v) => Some(bytes_from(v)?),
            },
        },
        "kv_scan" => HostCall::KvScan {
            prefix: text_of(body, "prefix")?,
            after: body.get("after").and_then(Json::as_str).map(str::to_owned),
            limit: int_of(body, "limit")? as u32,
            entries: entries_from(field(body, "entries")?)?,
        },
        "sql_query" => {
            let result = field(body, "result")?;
            let result = match result.get("error") {
                Some(e) => Err(SqlError { code: text_of(e, "code")?, message: text_of(e, "message")? }),
                None => Ok(Rows {
                    columns: field(result, "columns")?
                        .as_array()
                        .ok_or("columns: not a list")?
                        .iter()
                        .map(|c| c.as_str().map(str::to_owned).ok_or("a column name is not text"))
                        .collect::<Result<_, _>>()?,
                    rows: rows_from(field(result, "rows")?)?,
                }),
            };
            HostCall::SqlQuery {
                statement: text_of(body, "statement")?,
                params: values_from(field(body, "params")?)?,
                result,
            }
        }
        "log" => HostCall::Log { level: level_from(&text_of(body, "level")?)?, message: text_of(body, "message")? },
        other => return Err(format!("unknown call `{other}`")),
    })
}

/// A value, tagged by its kind: `{"integer": 1}`, `{"real": 1.5}` (`"NaN"`,
/// `"inf"`, `"-inf"` as text), `{"text": ""}`, `{"blob": BASE64}`, `null`.
fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) => json!({ "integer": i }),
        Value::Real(r) if r.is_finite() => json!({ "real": r }),
        Value::Real(r) => json!({ "real": if r.is_nan() { "NaN" } else if *r > 0.0 { "inf" } else { "-inf" } }),
        Value::Text(s) => json!({ "text": s }),
        Value::Blob(b) => json!({ "blob": BASE64.encode(b) }),
    }
}

fn value_from(json: &Json) -> Result<Value, String> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    let bad = || format!("not a value: {json}");
    let object: &Map<String, Json> = json.as_object().filter(|o| o.len() == 1).ok_or_else(bad)?;
    let (kind, v) = object.iter().next().expect("one entry");
    Ok(match (kind.as_str(), v) {
        ("integer", v) => Value::Integer(v.as_i64().ok_or_else(bad)?),
        ("real", Json::String(s)) => Value::Real(match s.as_str() {
            "NaN" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            _ => return Err(bad()),
        }),
        ("real", v) => Value::Real(v.as_f64().ok_or_else(bad)?),
        ("text", Json::String(s)) => Value::Text(s.clone()),
        ("blob", v) => Value::Blob(bytes_from(v)?),
        _ => return Err(bad()),
    })
}

fn values_from(json: &Json) -> Result<Vec<Value>, String> {
    json.as_array().ok_or("not a list of values")?.iter().map(value_from).collect()
}

fn rows_from(json: &Json) -> Result<Vec<Vec<Value>>, String> {
    json.as_array().ok_or("rows: not a list")?.iter().map(values_from).collect()
}

fn entries_json(entries: &[(String, Vec<u8>)]) -> Json {
    Json::Array(entries.iter().map(|(k, v)| json!([k, BASE64.encode(v)])).collect())
}

fn entries_from(json: &Json) -> Result<Vec<(String, Vec<u8>)>, String> {
    json.as_array()
        .ok_or("entries: not a list")?
        .iter()
        .map(|e| match e.as_array().map(Vec::as_slice) {
            Some([Json::String(k), v]) => Ok((k.clone(), bytes_from(v)?)),
            _ => Err(format!("not a [key, value] entry: {e}")),
        })
        .collect()
}

fn snapshot_from(json: &Json) -> Result<Snapshot, String> {
    let tables = field(json, "tables")?
        .as_array()
        .ok_or("tables: not a list")?
        .iter()
        .map(|t| {
            let columns = field(t, "columns")?
                .as_array()
                .ok_or("columns: not a list")?
                .iter()
                .map(|c| c.as_str().map(str::to_owned).ok_or_else(|| "a column name is not text".to_owned()))
                .collect::<Result<_, _>>()?;
            Ok((text_of(t, "name")?, columns, rows_from(field(t, "rows")?)?))
        })
        .collect::<Result<_, String>>()?;
    Ok(Snapshot { tables, kv: entries_from(field(json, "kv")?)?, position: int_of(json, "position")? })
}

fn bytes_from(json: &Json) -> Result<Vec<u8>, String> {
    let text = json.as_str().ok_or("bytes: not base64 text")?;
    BASE64.decode(text).map_err(|e| format!("bytes: not base64: {e}"))
}

fn field<'a>(json: &'a Json, name: &str) -> Result<&'a Json, String> {
    json.get(name).ok_or_else(|| format!("no `{name}`"))
}

fn text_of(json: &Json, name: &str) -> Result<String, String> {
    field(json, name)?.as_str().map(str::to_owned).ok_or_else(|| format!("`{name}` is not text"))
}

fn int_of(json: &Json, name: &str) -> Result<i64, String> {
    field(json, name)?.as_i64().ok_or_else(|| format!("`{name}` is not an integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_it_was_written() {
        let record = Record {
            projection: "p".into(),
            version: "1".into(),
            dialect: "sqlite".into(),
            recorded_at: "2026-12-06T16:00:00Z".into(),
            event: Event {
                position: 7,
                stream_id: "s".into(),
                version: 1,
                event_type: "t".into(),
                data: "{}".into(),
                metadata: "{}".into(),
                occurred_at: "z".into(),
            },
            module: RecordedModule { hash: "ab".into(), file: "p.wasm".into(), bytes: Some(vec![0, 97, 115, 109]) },
            calls: vec![
                HostCall::KvGet { key: "k".into(), value: Some(vec![255]) },
                HostCall::KvGet { key: "none".into(), value: None },
                HostCall::Log { level: Level::Warn, message: "careful\n".into() },
                HostCall::KvScan {
                    prefix: "a".into(),
                    after: Some("ab".into()),
                    limit: 3,
                    entries: vec![("ac".into(), vec![1])],
                },
                HostCall::SqlQuery {
                    statement: "SELECT ?1".into(),
                    params: vec![Value::Real(f64::INFINITY), Value::Blob(vec![1, 2]), Value::Null],
                    result: Ok(Rows {
                        columns: vec!["a".into(), "b".into()],
                        rows: vec![
                            vec![Value::Integer(-1), Value::Real(0.1)],
                            vec![Value::Text("é".into()), Value::Null],
                        ],
                    }),
                },
                HostCall::SqlQuery {
                    statement: "SELECT x".into(),
                    params: vec![],
                    result: Err(SqlError { code: "1".into(), message: "no such column: x".into() }),
                },
            ],
            calls_dropped: 12,
            error: "event 7: no".into(),
            failed_in: FailedIn::Handle,
            limits: RecordedLimits { timeout_ms: 1500, memory_bytes: 1 << 20, kv_value_bytes: 10, kv_key_bytes: 5 },
            snapshot: Some(Snapshot {
                tables: vec![("t".into(), vec!["id".into()], vec![vec![Value::Integer(1)]])],
                kv: vec![("k".into(), vec![255])],
                position: 6,
            }),
            snapshot_missing: None,
        };
        let text = record.to_json();
        assert_eq!(Record::from_json(&text).unwrap(), record);
        assert_eq!(record.logs(), vec![(Level::Warn, "careful\n".to_owned())]);
        let wrong = text.replace(FORMAT, "reel-replay/9");
        assert_eq!(Record::from_json(&wrong).unwrap_err(), "format `reel-replay/9`; this reel reads `reel-replay/1`");
    }

    #[test]
    fn a_snapshot_over_its_bound_is_left_out() {
        let mut sink = SnapshotSink::new(10);
        sink.table("t", &["v".into()]);
        sink.row(&[Value::Text("12345".into())]);
        sink.kv("k", b"1234");
        assert!(sink.finish().is_some(), "10 bytes fit");
        let mut sink = SnapshotSink::new(10);
        sink.kv("k", b"12345678901");
        assert!(sink.finish().is_none());
    }
}
