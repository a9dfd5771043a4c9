//! Forwarding a reactor's outbox into `events.db` (ADR 23): the namespace
//! file and the events file are separate databases, so a batch's emissions
//! commit with its checkpoint in the namespace's outbox, and this appends
//! them in one transaction of the events file, skipping any whose key
//! (reactor, cause, index) is there already: forwarding twice (a crash
//! between the two commits) appends nothing twice.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use rusqlite::{CachedStatement, Connection, TransactionBehavior, params};

use reel_model::Cursor;
use reel_model::time::{format_micros, now_micros};

use crate::source::{SourceError, TimersFired};
use reel_model::{Emission, Emissions, Forwarded, TimerChange};

/// Append `emissions` of namespace `namespace`, handled through `handled`.
pub(super) fn forward(
    conn: &mut Connection,
    namespace: &str,
    handled: Cursor,
    emissions: &Emissions,
) -> Result<Forwarded, SourceError> {
    let reactor = &emissions.reactor;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO reel_reactor_handled (reactor, namespace, position) VALUES (?1, ?2, 0) ON CONFLICT DO NOTHING",
        params![reactor, namespace],
    )?;
    let (owner, furthest): (String, i64) =
        tx.query_row("SELECT namespace, position FROM reel_reactor_handled WHERE reactor = ?1", [reactor], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    // Another namespace (an older version) handled it: history wins.
    let handled_elsewhere = |cause: i64| owner != namespace && cause <= furthest;
    let mut out = Forwarded::default();
    let occurred_at = format_micros(now_micros());
    let seen = keys_in_log(&tx, emissions)?;
    // A stream's next version, once asked: a saga's emissions often go to
    // the same few streams.
    let mut next_version: HashMap<&str, i64> = HashMap::new();
    let mut appends = Appends::new(&tx)?;
    // Cached: a catch-up forwards thousands of emissions per transaction.
    let mut key = tx.prepare_cached(
        "INSERT INTO reel_emitted (reactor, cause, idx, namespace, position) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for e in &emissions.events {
        if handled_elsewhere(e.cause) {
            out.dropped += 1;
            continue;
        }
        match seen.get(&(e.cause, e.index)) {
            // Forwarded before (a crash after the events file committed).
            Some(by) if by == namespace => continue,
            Some(_) => {
                out.dropped += 1;
                continue;
            }
            None => {}
        }
        let version = match next_version.entry(e.stream_id.as_str()) {
            Entry::Occupied(next) => next.into_mut(),
            Entry::Vacant(first) => first.insert(appends.next_version(&e.stream_id)?),
        };
        let position = appends.insert(e, *version, &e.metadata, &occurred_at)?;
        *version += 1;
        key.execute(params![reactor, e.cause, e.index, namespace, position])?;
        out.emitted += 1;
    }
    drop((key, appends));
    for change in &emissions.timers {
        match change {
            TimerChange::Cancel { key } => {
                tx.execute("DELETE FROM reel_timers WHERE reactor = ?1 AND key = ?2", params![reactor, key])?;
            }
            TimerChange::Schedule { key, due_micros, event } if !handled_elsewhere(event.cause) => {
                let text = serde_json::to_string(event).map_err(|e| SourceError::Internal(e.to_string()))?;
                tx.execute(
                    "INSERT INTO reel_timers (reactor, key, due_micros, event) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (reactor, key) DO UPDATE SET due_micros = excluded.due_micros, event = excluded.event",
                    params![reactor, key, due_micros, text],
                )?;
            }
            TimerChange::Schedule { .. } => {}
        }
    }
    if handled.id > furthest {
        tx.execute(
            "UPDATE reel_reactor_handled SET namespace = ?2, position = ?3 WHERE reactor = ?1",
            params![reactor, namespace, handled.id],
        )?;
    }
    tx.execute(
        "INSERT INTO reel_reactor_counts (namespace, emitted, dropped) VALUES (?1, ?2, ?3) \
         ON CONFLICT (namespace) DO UPDATE SET emitted = emitted + excluded.emitted, dropped = dropped + excluded.dropped",
        params![namespace, out.emitted as i64, out.dropped as i64],
    )?;
    tx.commit()?;
    Ok(out)
}

/// Fire reactor `reactor`'s timers due at `now` (Unix µs), in one
/// transaction of the events file: each timer is removed and its event
/// appended with the timer's key in its metadata (`timer`), unless its key
/// (reactor, cause, index) is in the log already (ADR 24).
pub(super) fn fire_timers(conn: &mut Connection, reactor: &str, now: i64) -> Result<TimersFired, SourceError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due: Vec<(String, String)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT key, event FROM reel_timers WHERE reactor = ?1 AND due_micros <= ?2 ORDER BY due_micros, key",
        )?;
        stmt.query_map(params![reactor, now], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
    };
    let mut out = TimersFired::default();
    let occurred_at = format_micros(now_micros());
    for (key, text) in due {
        tx.execute("DELETE FROM reel_timers WHERE reactor = ?1 AND key = ?2", params![reactor, key])?;
        let event: Emission = serde_json::from_str(&text).map_err(|e| SourceError::Internal(e.to_string()))?;
        let inserted = tx.execute(
            "INSERT INTO reel_emitted (reactor, cause, idx, namespace, position) VALUES (?1, ?2, ?3, 'timer', 0) \
             ON CONFLICT DO NOTHING",
            params![reactor, event.cause, event.index],
        )?;
        if inserted == 0 {
            continue;
        }
        let mut metadata: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&event.metadata).unwrap_or_default();
        metadata.insert("timer".into(), serde_json::Value::from(key));
        let metadata = serde_json::Value::Object(metadata).to_string();
        let position = Appends::new(&tx)?.append(&event, &metadata, &occurred_at)?;
        tx.execute(
            "UPDATE reel_emitted SET position = ?4 WHERE reactor = ?1 AND cause = ?2 AND idx = ?3",
            params![reactor, event.cause, event.index, position],
        )?;
        out.fired += 1;
    }
    let (pending, next_due): (i64, Option<i64>) =
        tx.query_row("SELECT count(*), min(due_micros) FROM reel_timers WHERE reactor = ?1", [reactor], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    tx.commit()?;
    out.pending = pending as u64;
    out.next_due = next_due;
    Ok(out)
}

/// The keys (cause, index) of `emissions` already in the log, and the
/// namespace that appended each: one look at the range of their causes (it
/// finds none, but after a crash between the two commits or where an older
/// version handled the causes).
fn keys_in_log(
    tx: &rusqlite::Transaction<'_>,
    emissions: &Emissions,
) -> Result<HashMap<(i64, u32), String>, SourceError> {
    let mut seen = HashMap::new();
    let (Some(low), Some(high)) =
        (emissions.events.iter().map(|e| e.cause).min(), emissions.events.iter().map(|e| e.cause).max())
    else {
        return Ok(seen);
    };
    let mut select = tx.prepare_cached(
        "SELECT cause, idx, namespace FROM reel_emitted WHERE reactor = ?1 AND cause BETWEEN ?2 AND ?3",
    )?;
    let rows = select.query_map(params![emissions.reactor, low, high], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
    for row in rows {
        let (key, by) = row?;
        seen.insert(key, by);
    }
    Ok(seen)
}

/// The statements an append takes, prepared once for a transaction's
/// appends.
struct Appends<'t> {
    version: CachedStatement<'t>,
    insert: CachedStatement<'t>,
}

impl<'t> Appends<'t> {
    fn new(tx: &'t rusqlite::Transaction<'_>) -> Result<Self, SourceError> {
        Ok(Self {
            version: tx.prepare_cached("SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream_id = ?1")?,
            insert: tx.prepare_cached(
                "INSERT INTO events (stream_id, version, event_type, data, metadata, occurred_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            )?,
        })
    }

    /// The version the next event of `stream_id` takes.
    fn next_version(&mut self, stream_id: &str) -> Result<i64, SourceError> {
        Ok(self.version.query_row([stream_id], |r| r.get(0))?)
    }

    /// Append one event at the stream's next version; its position.
    fn append(&mut self, e: &Emission, metadata: &str, occurred_at: &str) -> Result<i64, SourceError> {
        let version = self.next_version(&e.stream_id)?;
        self.insert(e, version, metadata, occurred_at)
    }

    /// Insert `e` as version `version` of its stream; its position.
    fn insert(&mut self, e: &Emission, version: i64, metadata: &str, occurred_at: &str) -> Result<i64, SourceError> {
        let values = params![e.stream_id, version, e.event_type, e.data, metadata, occurred_at];
        Ok(self.insert.query_row(values, |r| r.get(0))?)
    }
}
