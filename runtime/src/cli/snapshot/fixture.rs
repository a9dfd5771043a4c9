//! A fixture: JSON lines, each an event (`stream_id`, `event_type`, `data`,
//! optional `metadata` and `occurred_at`; `stream` and `type` say the same,
//! and `position` and `version`, as `GET /events` returns them, are let be)
//! or a query (`query`, optional `args`), run on the built read model.
//! Events are written straight into the scratch event log, in order, with
//! versions counted per stream and the times they give: the n-th event
//! (from 0) without one occurred at 2026-01-01T00:00:00Z plus n seconds, so
//! that a snapshot holding times is the same on every run.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::value::RawValue;

use reel_model::time::{format_micros, parse_micros};

use crate::config::Config;

/// 2026-01-01T00:00:00Z, in microseconds: when the first event without a
/// time occurred.
const FIRST_TIME: i64 = 1_767_225_600_000_000;

/// One line of a fixture, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(alias = "stream")]
    stream_id: Option<String>,
    #[serde(alias = "type")]
    event_type: Option<String>,
    data: Option<Box<RawValue>>,
    metadata: Option<Box<RawValue>>,
    occurred_at: Option<String>,
    #[allow(dead_code)] // accepted: the log's own lines make a fixture
    position: Option<serde_json::Value>,
    #[allow(dead_code)]
    version: Option<serde_json::Value>,
    query: Option<String>,
    args: Option<Box<RawValue>>,
}

/// An event of a fixture, ready for the log.
#[derive(Debug, Clone)]
pub struct FixtureEvent {
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    /// JSON text, as written.
    pub data: String,
    /// JSON text, as written (`{}` when absent).
    pub metadata: String,
    /// `format_micros` text.
    pub occurred_at: String,
}

/// A query to run on the built read model.
#[derive(Debug, Clone)]
pub struct Query {
    /// The query's name.
    pub name: String,
    /// Its arguments, as written (`None`: none given).
    pub args: Option<String>,
}

impl Query {
    /// The arguments as the query export takes them (empty when none).
    pub fn args_text(&self) -> String {
        self.args.clone().unwrap_or_default()
    }
}

/// A fixture read from its file.
#[derive(Debug, Clone, Default)]
pub struct Fixture {
    pub events: Vec<FixtureEvent>,
    pub queries: Vec<Query>,
}

impl Fixture {
    /// Read and check `path`; errors name the line.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the fixture {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("fixture {}", path.display()))
    }

    /// Parse a fixture's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut fixture = Fixture::default();
        let mut versions: HashMap<String, i64> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(raw).with_context(|| format!("line {n}"))?;
            if let Some(name) = line.query {
                if line.stream_id.is_some() || line.event_type.is_some() || line.data.is_some() {
                    bail!("line {n}: a line is an event or a query, not both");
                }
                fixture.queries.push(Query { name, args: line.args.map(|a| a.get().to_owned()) });
                continue;
            }
            if line.args.is_some() {
                bail!("line {n}: `args` belongs to a query line (with `query`)");
            }
            let (Some(stream_id), Some(event_type)) = (line.stream_id, line.event_type) else {
                bail!(
                    "line {n}: an event needs `stream_id` (or `stream`) and `event_type` (or `type`); a query needs `query`"
                );
            };
            for (what, text) in [("stream_id", &stream_id), ("event_type", &event_type)] {
                if text.is_empty() || text.contains('\0') {
                    bail!("line {n}: `{what}` must be non-empty and hold no NUL character");
                }
            }
            let occurred_at = match line.occurred_at {
                Some(at) => {
                    let micros = parse_micros(&at).with_context(|| {
                        format!("line {n}: occurred_at `{at}` is not a time like 2026-01-01T00:00:00Z")
                    })?;
                    format_micros(micros)
                }
                None => format_micros(FIRST_TIME + fixture.events.len() as i64 * 1_000_000),
            };
            let version = versions.entry(stream_id.clone()).or_insert(0);
            *version += 1;
            fixture.events.push(FixtureEvent {
                stream_id,
                version: *version,
                event_type,
                data: line.data.map_or_else(|| "{}".to_owned(), |d| d.get().to_owned()),
                metadata: line.metadata.map_or_else(|| "{}".to_owned(), |m| m.get().to_owned()),
                occurred_at,
            });
        }
        Ok(fixture)
    }

    /// Write the events into the scratch event log of `config` (which must
    /// be empty); the last position (0 for none).
    pub async fn write_events(&self, config: &Config) -> anyhow::Result<i64> {
        match &config.database_url {
            None => {
                let db = config.data_dir.join("events.db");
                crate::sqlite::SqliteSource::open(&db).await?;
                let events = self.events.clone();
                tokio::task::spawn_blocking(move || insert_sqlite(&db, &events)).await?
            }
            Some(url) => {
                crate::postgres::PgSource::open(url).await?;
                copy_postgres(url, &self.events).await
            }
        }
    }
}

fn insert_sqlite(db: &Path, events: &[FixtureEvent]) -> anyhow::Result<i64> {
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO events (stream_id, version, event_type, data, metadata, occurred_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in events {
            insert.execute(rusqlite::params![
                e.stream_id,
                e.version,
                e.event_type,
                e.data,
                e.metadata,
                e.occurred_at
            ])?;
        }
    }
    let last = tx.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
    tx.commit()?;
    Ok(last)
}

/// One `COPY` into the scratch database's events table.
async fn copy_postgres(url: &str, events: &[FixtureEvent]) -> anyhow::Result<i64> {
    use futures_util::SinkExt;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let copy = async {
        let sink = client
            .copy_in("COPY events (stream_id, version, event_type, data, metadata, occurred_at) FROM STDIN")
            .await?;
        futures_util::pin_mut!(sink);
        let mut buf = String::new();
        for e in events {
            let fields = [
                escape(&e.stream_id),
                e.version.to_string(),
                escape(&e.event_type),
                escape(&e.data),
                escape(&e.metadata),
                e.occurred_at.clone(),
            ];
            buf.push_str(&fields.join("\t"));
            buf.push('\n');
        }
        sink.send(bytes::Bytes::from(buf)).await?;
        sink.finish().await?;
        client.query_one("SELECT coalesce(max(id), 0) FROM events", &[]).await.map(|row| row.get::<_, i64>(0))
    };
    let last = copy.await.context("writing the fixture's events");
    drop(client);
    let _ = connection.await;
    last
}

/// A field in `COPY`'s text format.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_events_or_queries_with_versions_and_times_filled_in() {
        let fixture = Fixture::parse(
            r#"{"stream": "a", "type": "t", "data": {"x": 1}}

{"stream_id": "b", "event_type": "u", "data": {}, "occurred_at": "2026-03-01T10:00:00+01:00", "version": 9}
{"stream": "a", "type": "t"}
{"query": "counts", "args": {"n": 2}}
{"query": "all"}"#,
        )
        .unwrap();
        let versions: Vec<(&str, i64)> = fixture.events.iter().map(|e| (e.stream_id.as_str(), e.version)).collect();
        assert_eq!(versions, [("a", 1), ("b", 1), ("a", 2)]);
        assert_eq!(fixture.events[0].data, r#"{"x": 1}"#);
        assert_eq!(fixture.events[0].occurred_at, "2026-01-01T00:00:00.000000Z");
        assert_eq!(fixture.events[1].occurred_at, "2026-03-01T09:00:00.000000Z");
        assert_eq!(fixture.events[2].occurred_at, "2026-01-01T00:00:02.000000Z");
        assert_eq!(fixture.events[2].data, "{}");
        assert_eq!(fixture.queries[0].args_text(), r#"{"n": 2}"#);
        assert_eq!(fixture.queries[1].args_text(), "");
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = |text: &str| format!("{:#}", Fixture::parse(text).unwrap_err());
        assert!(error("{\"stream\": \"a\"}").contains("line 1: an event needs"), "{}", error("{\"stream\": \"a\"}"));
        assert!(error("\n{\"strem\": 1}").starts_with("line 2"));
        assert!(error(r#"{"stream": "a", "type": "t", "occurred_at": "yesterday"}"#).contains("not a time"));
        assert!(error(r#"{"query": "q", "stream": "a"}"#).contains("not both"));
    }
}
