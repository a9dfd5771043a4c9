//! Forwarding a reactor's outbox into `events.db` (ADR 23): the namespace
//! file and the events file are separate databases, so a batch's emissions
//! commit with its checkpoint in the namespace's outbox, and this appends
//! them in one transaction of the events file, skipping any whose key
//! (reactor, cause, index) is there already: forwarding twice (a crash
//! between the two commits) appends nothing twice.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use reel_model::Cursor;
use reel_model::time::{format_micros, now_micros};

use crate::source::SourceError;
use reel_model::{Emissions, Forwarded, TimerChange};

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
    for e in &emissions.events {
        if handled_elsewhere(e.cause) {
            out.dropped += 1;
            continue;
        }
        let seen: Option<String> = tx
            .query_row(
                "SELECT namespace FROM reel_emitted WHERE reactor = ?1 AND cause = ?2 AND idx = ?3",
                params![reactor, e.cause, e.index],
                |r| r.get(0),
            )
            .optional()?;
        match seen {
            // Forwarded before (a crash after the events file committed).
            Some(by) if by == namespace => continue,
            Some(_) => {
                out.dropped += 1;
                continue;
            }
            None => {}
        }
        let version: i64 = tx.query_row(
            "SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream_id = ?1",
            [&e.stream_id],
            |r| r.get(0),
        )?;
        let position: i64 = tx.query_row(
            "INSERT INTO events (stream_id, version, event_type, data, metadata, occurred_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            params![e.stream_id, version, e.event_type, e.data, e.metadata, occurred_at],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO reel_emitted (reactor, cause, idx, namespace, position) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![reactor, e.cause, e.index, namespace, position],
        )?;
        out.emitted += 1;
    }
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
