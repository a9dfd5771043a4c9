//! Commands' answers under their idempotency keys in `reel.command_answers`
//! (ADR 25): an answer that appended events is kept in the append's
//! transaction, after the events' insert (which stays the transaction's first
//! write: docs/postgres.md), so it commits exactly when they do. Two reel
//! processes answering the same key race on its primary key: the second
//! waits for the first's transaction and then appends nothing. Snapshots of
//! deciders' states in `reel.decider_snapshots` (ADR 26).

use super::events::{
    APPEND, DEAD_CONNECTIONS, PgSource, append, conflict, connection_lost, is_conflict, on_a_live_connection,
    outcome_unknown_if_lost, pg_error, query_cached,
};
use crate::source::{
    AppendRequest, Appended, CommandStore, KeptAnswer, Keyed, LogFuture, Outcome, Snapshot, SourceError,
};

/// Keep an answer unless a live one is kept under its key (an expired one is
/// replaced); a row comes back when it was kept.
const KEEP: &str = "INSERT INTO reel.command_answers AS kept \
        (key, fingerprint, outcome, stream_id, version, count, reason, created_micros) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, outcome = excluded.outcome, \
         stream_id = excluded.stream_id, version = excluded.version, count = excluded.count, \
         reason = excluded.reason, created_micros = excluded.created_micros \
     WHERE kept.created_micros < $9 \
     RETURNING 1";

async fn keep(client: &impl tokio_postgres::GenericClient, keyed: &Keyed) -> Result<bool, tokio_postgres::Error> {
    let a = &keyed.answer;
    let row = client
        .query_opt(
            KEEP,
            &[
                &keyed.key,
                &a.fingerprint,
                &a.outcome.as_str(),
                &a.stream_id,
                &a.version,
                &a.count,
                &a.reason,
                &keyed.created_micros,
                &keyed.expired_before,
            ],
        )
        .await?;
    Ok(row.is_some())
}

impl CommandStore for PgSource {
    fn answer(&self, key: &str, expired_before: i64) -> LogFuture<'_, Option<KeptAnswer>> {
        let key = key.to_owned();
        Box::pin(async move {
            let sql = "SELECT fingerprint, outcome, stream_id, version, count, reason FROM reel.command_answers \
                       WHERE key = $1 AND created_micros >= $2";
            let (_, rows) = on_a_live_connection!(self, |c| query_cached(&c, sql, &[&key, &expired_before]));
            rows.first()
                .map(|r| {
                    let outcome: String = r.get(1);
                    let outcome = Outcome::parse(&outcome)
                        .ok_or_else(|| SourceError::Internal(format!("an answer kept as `{outcome}`")))?;
                    Ok(KeptAnswer {
                        fingerprint: r.get(0),
                        outcome,
                        stream_id: r.get(2),
                        version: r.get(3),
                        count: r.get(4),
                        reason: r.get(5),
                    })
                })
                .transpose()
        })
    }

    fn append_keyed(&self, request: AppendRequest, keyed: Keyed) -> LogFuture<'_, Option<Appended>> {
        Box::pin(async move {
            let (mut client, statement) = on_a_live_connection!(self, |client| client.prepare(APPEND));
            let tx = client.transaction().await.map_err(|e| pg_error(&e))?;
            let (appended, xid) = match append(&*tx, &statement, &request).await {
                Ok(Ok(appended)) => appended,
                Ok(Err(actual)) => return Err(conflict(&request, actual)),
                Err(e) if is_conflict(&e) => {
                    // Another append to the stream won.
                    tx.rollback().await.map_err(|e| pg_error(&e))?;
                    let sql = "SELECT coalesce(max(version), 0)::bigint FROM public.events WHERE stream_id = $1";
                    let row = client.query_one(sql, &[&request.stream_id]).await.map_err(|e| pg_error(&e))?;
                    return Err(conflict(&request, row.get(0)));
                }
                Err(e) => return Err(pg_error(&e)),
            };
            let mut keyed = keyed;
            keyed.answer.version = appended.version - request.events.len() as i64;
            if !keep(&*tx, &keyed).await.map_err(|e| pg_error(&e))? {
                tx.rollback().await.map_err(|e| pg_error(&e))?;
                return Ok(None);
            }
            // A lost connection before this left nothing (the server rolls
            // an unfinished transaction back); during the commit, either.
            tx.commit().await.map_err(|e| outcome_unknown_if_lost(&e))?;
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for position in &appended.positions {
                recent.remember(*position, xid);
            }
            Ok(Some(appended))
        })
    }

    fn keep_answer(&self, keyed: Keyed) -> LogFuture<'_, bool> {
        Box::pin(async move {
            let client = self.client().await?;
            keep(&**client, &keyed).await.map_err(|e| pg_error(&e))
        })
    }

    fn purge_answers(&self, expired_before: i64) -> LogFuture<'_, u64> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute("DELETE FROM reel.command_answers WHERE created_micros < $1", &[&expired_before])
                .await
                .map_err(|e| pg_error(&e))
        })
    }

    fn snapshot(&self, decider: &str, code: &str, stream: &str) -> LogFuture<'_, Option<Snapshot>> {
        let (decider, code, stream) = (decider.to_owned(), code.to_owned(), stream.to_owned());
        Box::pin(async move {
            let sql = "SELECT version, state FROM reel.decider_snapshots \
                       WHERE decider = $1 AND stream_id = $2 AND code = $3";
            let (_, rows) = on_a_live_connection!(self, |c| query_cached(&c, sql, &[&decider, &stream, &code]));
            Ok(rows.first().map(|r| Snapshot { decider, code, stream_id: stream, version: r.get(0), state: r.get(1) }))
        })
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> LogFuture<'_, ()> {
        Box::pin(async move {
            let sql = "INSERT INTO reel.decider_snapshots AS kept (decider, stream_id, code, version, state) \
                       VALUES ($1, $2, $3, $4, $5) \
                       ON CONFLICT (decider, stream_id) DO UPDATE SET code = excluded.code, \
                           version = excluded.version, state = excluded.state \
                       WHERE kept.code <> excluded.code OR kept.version < excluded.version";
            let s = &snapshot;
            let client = self.client().await?;
            client
                .execute(sql, &[&s.decider, &s.stream_id, &s.code, &s.version, &s.state])
                .await
                .map_err(|e| pg_error(&e))?;
            Ok(())
        })
    }
}
