//! Commands' answers under their idempotency keys in `events.db` (ADR 25):
//! an answer that appended events is kept in the append's transaction, on
//! reel's one writer connection. Snapshots of deciders' states (ADR 26).

use std::sync::Arc;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::events::{SqliteSource, append_in, unwritable};
use crate::source::{
    AppendRequest, Appended, CommandStore, KeptAnswer, Keyed, LogFuture, Outcome, Snapshot, SourceError,
};

/// Keep `keyed` in `tx` unless a live answer is kept under its key: `false`
/// then. An expired answer under the key is replaced.
fn keep(tx: &rusqlite::Transaction<'_>, keyed: &Keyed) -> Result<bool, SourceError> {
    let a = &keyed.answer;
    let kept = tx
        .prepare_cached(
            "INSERT INTO reel_command_answers \
                 (key, fingerprint, outcome, stream_id, version, count, reason, created_micros) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, outcome = excluded.outcome, \
                 stream_id = excluded.stream_id, version = excluded.version, count = excluded.count, \
                 reason = excluded.reason, created_micros = excluded.created_micros \
             WHERE reel_command_answers.created_micros < ?9 \
             RETURNING 1",
        )?
        .query_row(
            params![
                keyed.key,
                a.fingerprint,
                a.outcome.as_str(),
                a.stream_id,
                a.version,
                a.count,
                a.reason,
                keyed.created_micros,
                keyed.expired_before
            ],
            |_| Ok(()),
        )
        .optional()?;
    Ok(kept.is_some())
}

impl SqliteSource {
    /// Run `f` in an immediate transaction on the writer connection; it
    /// commits when `f` returns `Ok((true, _))`.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(bool, T), SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let writer = Arc::clone(&self.writer);
        let folder = self.path.parent().map(std::path::Path::to_owned).unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let run = |conn: &mut rusqlite::Connection| -> Result<T, SourceError> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let (commit, value) = f(&tx)?;
                if commit {
                    tx.commit()?;
                }
                Ok(value)
            };
            run(&mut conn).map_err(|e| unwritable(e, &folder))
        })
        .await
        .map_err(|e| SourceError::Internal(e.to_string()))?
    }
}

impl CommandStore for SqliteSource {
    fn answer(&self, key: &str, expired_before: i64) -> LogFuture<'_, Option<KeptAnswer>> {
        let key = key.to_owned();
        Box::pin(self.with_reader(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT fingerprint, outcome, stream_id, version, count, reason FROM reel_command_answers \
                     WHERE key = ?1 AND created_micros >= ?2",
                )?
                .query_row(params![key, expired_before], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })
                .optional()?;
            row.map(|(fingerprint, outcome, stream_id, version, count, reason)| {
                let outcome = Outcome::parse(&outcome)
                    .ok_or_else(|| SourceError::Internal(format!("an answer kept as `{outcome}`")))?;
                Ok(KeptAnswer { fingerprint, outcome, stream_id, version, count, reason })
            })
            .transpose()
        }))
    }

    fn append_keyed(&self, request: AppendRequest, keyed: Keyed) -> LogFuture<'_, Option<Appended>> {
        Box::pin(async move {
            let appended = self
                .write(move |tx| {
                    if !keep(tx, &keyed)? {
                        return Ok((false, None));
                    }
                    let appended = append_in(tx, &request)?;
                    let before = appended.version - request.events.len() as i64;
                    if before != keyed.answer.version {
                        tx.execute(
                            "UPDATE reel_command_answers SET version = ?2 WHERE key = ?1",
                            params![keyed.key, before],
                        )?;
                    }
                    Ok((true, Some(appended)))
                })
                .await?;
            if appended.is_some() {
                self.wake.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(appended)
        })
    }

    fn keep_answer(&self, keyed: Keyed) -> LogFuture<'_, bool> {
        Box::pin(self.write(move |tx| {
            let kept = keep(tx, &keyed)?;
            Ok((kept, kept))
        }))
    }

    fn purge_answers(&self, expired_before: i64) -> LogFuture<'_, u64> {
        Box::pin(self.write(move |tx| {
            let purged = tx.execute("DELETE FROM reel_command_answers WHERE created_micros < ?1", [expired_before])?;
            Ok((true, purged as u64))
        }))
    }

    fn snapshot(&self, decider: &str, code: &str, stream: &str) -> LogFuture<'_, Option<Snapshot>> {
        let (decider, code, stream) = (decider.to_owned(), code.to_owned(), stream.to_owned());
        Box::pin(self.with_reader(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT version, state FROM reel_decider_snapshots \
                     WHERE decider = ?1 AND stream_id = ?2 AND code = ?3",
                )?
                .query_row(params![decider, stream, code], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.map(|(version, state)| Snapshot { decider, code, stream_id: stream, version, state }))
        }))
    }

    fn save_snapshot(&self, snapshot: Snapshot) -> LogFuture<'_, ()> {
        Box::pin(self.write(move |tx| {
            let s = &snapshot;
            tx.prepare_cached(
                "INSERT INTO reel_decider_snapshots (decider, stream_id, code, version, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (decider, stream_id) DO UPDATE SET code = excluded.code, \
                     version = excluded.version, state = excluded.state \
                 WHERE reel_decider_snapshots.code <> excluded.code \
                    OR reel_decider_snapshots.version < excluded.version",
            )?
            .execute(params![s.decider, s.stream_id, s.code, s.version, s.state])?;
            Ok((true, ()))
        }))
    }
}
