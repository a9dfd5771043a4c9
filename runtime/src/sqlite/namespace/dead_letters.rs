//! A SQLite namespace's dead letters: events its projection could not apply,
//! set aside under the `skip` policy.

use rusqlite::params;

use reel_model::time::{format_micros, now_micros};
use reel_model::{DeadLetter, Event};

use super::SqliteNamespace;
use crate::sqlite::convert::db;
use crate::store::{DeadLetterReads, DeadLetterWrites, StoreError};

impl DeadLetterReads for SqliteNamespace {
    fn dead_letters(&mut self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stmt = self
            .conn()?
            .prepare_cached(
                "SELECT position, stream_id, version, event_type, data, metadata, occurred_at, error, failed_at \
                 FROM _reel_dead_letters WHERE position > ?1 ORDER BY position LIMIT ?2",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![after, limit as i64], |r| {
                Ok(DeadLetter {
                    event: Event {
                        position: r.get(0)?,
                        stream_id: r.get(1)?,
                        version: r.get(2)?,
                        event_type: r.get(3)?,
                        data: r.get(4)?,
                        metadata: r.get(5)?,
                        occurred_at: r.get(6)?,
                    },
                    error: r.get(7)?,
                    failed_at: r.get(8)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }
}

impl DeadLetterWrites for SqliteNamespace {
    fn dead_letter(&mut self, event: &Event, error: &str) -> Result<(), StoreError> {
        self.conn()?
            .prepare_cached(
                "INSERT OR REPLACE INTO _reel_dead_letters \
                 (position, stream_id, version, event_type, data, metadata, occurred_at, error, failed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    event.position,
                    event.stream_id,
                    event.version,
                    event.event_type,
                    event.data,
                    event.metadata,
                    event.occurred_at,
                    error,
                    format_micros(now_micros()),
                ])
            })
            .map_err(db)?;
        Ok(())
    }

    fn remove_dead_letter(&mut self, position: i64) -> Result<bool, StoreError> {
        let removed = self
            .conn()?
            .prepare_cached("DELETE FROM _reel_dead_letters WHERE position = ?1")
            .and_then(|mut s| s.execute([position]))
            .map_err(db)?;
        Ok(removed == 1)
    }
}
