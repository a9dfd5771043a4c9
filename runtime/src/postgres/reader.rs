//! A worker's reader of the PostgreSQL event log: pages of events after a
//! cursor, below the tail's horizon ([`HORIZON`]), in `(transaction_id, id)`
//! order.

use std::collections::HashMap;

use reel_model::time::format_micros;
use reel_model::{Cursor, Event, Value};
use tokio::runtime::Handle;
use tokio_postgres::{Client, Statement};

use super::client as pg;
use super::events::{parse_xid, pg_error};
use super::value::column;
use crate::source::{Batch, EventReader, Filter, SourceError};

/// One worker's reader.
pub struct PgReader {
    client: Client,
    handle: Handle,
    /// Prepared batch queries by filter.
    statements: HashMap<Filter, (Statement, Vec<String>)>,
}

/// The reader's session: events are walked in `(transaction_id, id)` index
/// order, never gathered and sorted. The planner cannot know how many rows
/// follow a cursor or match a subscription; under-estimating, it chose to
/// visit every later event and sort the matches (16 times slower for a
/// subscription to a few types: docs/benchmarks.md, item 8). JIT never pays
/// for these short queries.
const READER_SETTINGS: &str = "SET enable_bitmapscan = off; SET enable_seqscan = off; SET jit = off";

/// Rows per query of a batch read. For one big `LIMIT` after a cursor the
/// planner read every later event and sorted them on disk, and with the
/// settings above a single query still spilled its final sort to disk; a
/// page's rows are ordered in memory (docs/benchmarks.md, item 8).
const PAGE: usize = 5_000;

/// Prepared batch queries a reader keeps at most (one per filter: a
/// worker's reader has one, a reader of `GET /events` one per filter asked).
const STATEMENTS: usize = 16;

/// The tail's horizon, as a one-row `snap(xmin)` relation (ADR 39): every
/// event with a smaller `transaction_id` has committed, or never will, as of
/// the statement's snapshot. It is the snapshot's `xmin`, but for the
/// transactions that cannot insert into this database's `events`: those of
/// sessions in another database, and those of namespaces that may not emit
/// (a projection's batch, however long it runs, holds back no one). A
/// transaction still in progress is excluded only if `pg_stat_activity` shows
/// whose it is (it needs `pg_read_all_stats` or the role's privileges); one
/// that ended since the snapshot holds the horizon for this read only.
pub(super) const HORIZON: &str = "snap AS ( \
     SELECT coalesce((SELECT min(x) FROM pg_snapshot_xip(cur.s) x \
                       WHERE x::xid NOT IN ( \
                           SELECT a.backend_xid FROM pg_stat_activity a \
                            WHERE a.backend_xid IS NOT NULL \
                              AND (a.datname IS DISTINCT FROM current_database() \
                                   OR a.usename::text IN (SELECT role_name FROM reel.namespaces \
                                                           WHERE coalesce(emit_prefix, '') = '')))), \
                     pg_snapshot_xmax(cur.s)) AS xmin \
       FROM (SELECT pg_current_snapshot() AS s) cur)";

impl EventReader for PgReader {
    fn read_batch(&mut self, after: Cursor, filter: &Filter, limit: usize) -> Result<Batch, SourceError> {
        let mut batch = Batch { next: after, ..Batch::default() };
        while batch.events.len() < limit {
            let want = (limit - batch.events.len()).min(PAGE);
            let read = self.read_page(batch.next, filter, want, &mut batch)?;
            if read < want {
                break;
            }
        }
        Ok(batch)
    }
}

impl PgReader {
    /// A reader on `client`, its session set for batch reads.
    pub(super) fn new(client: Client, handle: Handle) -> Result<Self, SourceError> {
        pg::block_on(&handle, client.batch_execute(READER_SETTINGS)).map_err(|e| pg_error(&e))?;
        Ok(PgReader { client, handle, statements: HashMap::new() })
    }

    /// Appends up to `limit` events after `after` to `batch` and moves
    /// `batch.next` past them (past the snapshot's head when fewer came);
    /// returns how many came.
    fn read_page(
        &mut self,
        after: Cursor,
        filter: &Filter,
        limit: usize,
        batch: &mut Batch,
    ) -> Result<usize, SourceError> {
        let client = &self.client;
        let statements = &mut self.statements;
        pg::block_on(&self.handle, async {
            if !statements.contains_key(filter) {
                if statements.len() >= STATEMENTS {
                    // Ad-hoc filters of `GET /events`: dropped statements
                    // are closed on the server.
                    statements.clear();
                }
                let condition = filter.condition(4, |n| format!("${n}"));
                let sql = format!(
                    "WITH {HORIZON}, \
                     head AS (SELECT e.transaction_id, e.id FROM public.events e, snap \
                              WHERE e.transaction_id < snap.xmin ORDER BY e.transaction_id DESC, e.id DESC LIMIT 1) \
                     SELECT (SELECT transaction_id::text FROM head), (SELECT id FROM head), \
                            e.transaction_id::text, e.id, e.stream_id, e.version::bigint, e.event_type, \
                            e.data::text, e.metadata::text, e.occurred_at \
                     FROM snap LEFT JOIN LATERAL ( \
                         SELECT * FROM public.events \
                          WHERE (transaction_id, id) > ($1::text::xid8, $2) AND transaction_id < snap.xmin{} \
                          ORDER BY transaction_id, id LIMIT $3) e ON true",
                    condition.sql
                );
                let statement = client.prepare(&sql).await.map_err(|e| pg_error(&e))?;
                statements.insert(filter.clone(), (statement, condition.params));
            }
            let (statement, filter_params) = &statements[filter];
            let tx = after.tx.to_string();
            let limit = limit as i64;
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tx, &after.id, &limit];
            params.extend(filter_params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)));
            let rows = client.query(statement, &params).await.map_err(|e| pg_error(&e))?;
            let start = batch.events.len();
            let mut head = after;
            let mut read = 0;
            for row in &rows {
                if let (Some(tx), Some(id)) = (row.get::<_, Option<&str>>(0), row.get::<_, Option<i64>>(1)) {
                    head = head.max(Cursor { tx: parse_xid(tx), id });
                }
                let Some(tx) = row.get::<_, Option<&str>>(2) else { continue };
                let cursor = Cursor { tx: parse_xid(tx), id: row.get(3) };
                let occurred_at = match column(row, 9) {
                    Ok(Value::Text(t)) => t,
                    _ => format_micros(0),
                };
                batch.events.push(Event {
                    position: cursor.id,
                    stream_id: row.get(4),
                    version: row.get(5),
                    event_type: row.get(6),
                    data: row.get(7),
                    metadata: row.get(8),
                    occurred_at,
                });
                batch.cursors.push(cursor);
                read += 1;
            }
            in_cursor_order(batch, start);
            batch.next = match batch.cursors.last() {
                Some(last) if read as i64 == limit => *last,
                _ => head,
            };
            Ok(read)
        })
    }
}

/// Puts the events of `batch` from `start` in cursor order, should they not
/// be. The page query has no outer `ORDER BY`: its lateral index scan under a
/// one-row join returns them in order, and sorting the page again cost the
/// server a fifth of the query (docs/benchmarks.md); this keeps the order a
/// guarantee whatever plan runs.
fn in_cursor_order(batch: &mut Batch, start: usize) {
    if batch.cursors[start..].is_sorted() {
        return;
    }
    let mut page: Vec<(Cursor, Event)> = batch.cursors.drain(start..).zip(batch.events.drain(start..)).collect();
    page.sort_unstable_by_key(|(cursor, _)| *cursor);
    for (cursor, event) in page {
        batch.cursors.push(cursor);
        batch.events.push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64) -> Event {
        Event {
            position,
            stream_id: format!("s-{position}"),
            version: 1,
            event_type: "t".into(),
            data: "{}".into(),
            metadata: "{}".into(),
            occurred_at: String::new(),
        }
    }

    #[test]
    fn a_page_out_of_cursor_order_is_put_in_order_and_the_rest_left_alone() {
        let ids = [1, 2, 7, 5, 6];
        let mut batch = Batch {
            events: ids.iter().map(|&id| event(id)).collect(),
            cursors: ids.iter().map(|&id| Cursor { tx: 10, id }).collect(),
            next: Cursor::START,
        };
        in_cursor_order(&mut batch, 2);
        let order: Vec<i64> = batch.cursors.iter().map(|c| c.id).collect();
        assert_eq!(order, [1, 2, 5, 6, 7]);
        // Each event stays with its cursor.
        assert!(batch.events.iter().zip(&batch.cursors).all(|(e, c)| e.position == c.id));
    }
}
