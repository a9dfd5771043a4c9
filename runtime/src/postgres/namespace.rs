//! The [`Namespace`] operations on PostgreSQL.

use std::time::Instant;

use tokio_postgres::types::{ToSql, Type};

use reel_model::{Cursor, DeadLetter, Event, Rows, Value};

use super::client::{block_on, block_on_with_deadline, database_error};
use super::value::{ArrayParam, Param, column};
use crate::store::sql_text::{quote_ident, reserved_name};
use crate::store::{
    Checkpoint, Commits, DeadLetterReads, DeadLetterWrites, KvReads, KvWrite, KvWrites, Snapshot, SqlReads, SqlWrites,
    StoreError, TableRead, TableReads,
};
use crate::store::{Emissions, Forwarded, Stored};

use super::connection::{Behind, PgNamespace};
use super::emit::{Counts, EMIT, EmitColumns};
use super::pipeline::{Op, unsendable};

impl Snapshot for PgNamespace {
    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn checkpoint(&mut self) -> Result<Checkpoint, StoreError> {
        let slug = self.info.slug.clone();
        let was_in_tx = self.in_tx;
        let rows = if was_in_tx {
            self.fetch("SELECT tx, position, initialized FROM reel.read_checkpoint($1)", &[&slug], false)?
        } else {
            let client = &self.client;
            block_on(
                &self.handle,
                client.query("SELECT tx, position, initialized FROM reel.read_checkpoint($1)", &[&slug]),
            )
            .map_err(|e| database_error(&e))?
        };
        let row = rows.first().ok_or_else(|| StoreError::Database(format!("no checkpoint for {slug}")))?;
        Ok(Checkpoint { cursor: Cursor { tx: row.get(0), id: row.get(1) }, initialized: row.get(2) })
    }

    fn begin(&mut self) -> Result<(), StoreError> {
        self.failed = None;
        self.execs.clear();
        self.exec_count = 0;
        (self.guest_in_tx, self.kv_in_tx) = (false, false);
        self.in_tx = true;
        self.started = Instant::now();
        self.dispatch(Op::Begin)
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        self.emitting = None;
        self.execs.clear(); // never sent: nothing to undo
        self.exec_count = 0;
        let _ = self.sync();
        self.failed = None;
        // The rollback undoes what the projection set in the transaction.
        (self.guest_ran, self.guest_in_tx, self.kv_in_tx) = (false, false, false);
        // The next writing batch checks the quota: a retry, or the first
        // part of a batch being narrowed down (ADR 20).
        self.storage_checked = None;
        if self.in_tx {
            self.in_tx = false;
            let client = &self.client;
            block_on(&self.handle, client.batch_execute("ROLLBACK")).map_err(|e| database_error(&e))?;
        }
        self.release_after_rollback();
        if self.vacuum_due {
            self.vacuum();
        }
        Ok(())
    }
}

impl KvReads for PgNamespace {
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        let rows = self.fetch("SELECT value FROM _reel_kv WHERE key = $1", &[&key], false)?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn kv_scan(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (lower, strict, upper) = crate::store::scan_range(prefix, after);
        let sql = match (strict, upper.is_some()) {
            (false, false) => {
                "SELECT key, value FROM _reel_kv WHERE key >= $1 AND $2::text IS NULL ORDER BY key LIMIT $3"
            }
            (true, false) => {
                "SELECT key, value FROM _reel_kv WHERE key > $1 AND $2::text IS NULL ORDER BY key LIMIT $3"
            }
            (false, true) => "SELECT key, value FROM _reel_kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3",
            (true, true) => "SELECT key, value FROM _reel_kv WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3",
        };
        let limit = limit as i64;
        let rows = self.fetch(sql, &[&lower, &upper, &limit], false)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl SqlReads for PgNamespace {
    fn dialect(&self) -> &'static str {
        "postgres"
    }

    fn query(&mut self, statement: &str, params: Vec<Value>, max_rows: usize) -> Result<Rows, StoreError> {
        self.check(statement)?;
        // What the client library would refuse to send is refused here, in
        // reel's words: the guest gets an `sql-error`, not a broken call.
        self.sync()?;
        self.prepare_all(vec![statement.to_owned()], true)?;
        if let Some(refusal) = unsendable(&self.statements[statement], &params) {
            let refused = StoreError::Refused(refusal);
            self.failed.get_or_insert(refused.clone());
            return Err(refused);
        }
        let values: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self
            .fetch_at_most(statement, &refs, true, max_rows)
            .and_then(|(rows, columns)| to_rows(&rows, columns, max_rows));
        if let Err(e) = &result {
            self.failed.get_or_insert(e.clone());
        }
        result
    }
}

impl TableReads for PgNamespace {
    fn read_table(&mut self, read: &TableRead) -> Result<Rows, StoreError> {
        let client = &self.client;
        let table = read.table.clone();
        let columns: Vec<String> = block_on(
            &self.handle,
            client.query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[&table],
            ),
        )
        .map_err(|e| database_error(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
        if columns.is_empty() || reserved_name(&quote_ident(&read.table)).is_some() {
            return Err(StoreError::NotFound(format!("no table `{}` in this projection", read.table)));
        }
        let (sql, values) = read.statement(&columns, "$")?;
        let params: Vec<Param<'_>> = values.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        // Past the read's deadline the server cancels it (a view can run for
        // ever; a filter on a column without an index scans the table).
        let rows = block_on_with_deadline(&self.handle, client, self.remaining(), async {
            client.query(&sql, &refs).await.map_err(|e| match e.code() {
                Some(code) if code.code().starts_with("22") => {
                    StoreError::Invalid("a filter value does not fit its column's type".into())
                }
                _ => database_error(&e),
            })
        })?;
        let columns =
            rows.first().map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect()).unwrap_or_default();
        to_rows(&rows, columns, read.limit)
    }

    fn tables(&mut self) -> Result<Vec<String>, StoreError> {
        let client = &self.client;
        let rows = block_on(
            &self.handle,
            client.query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_reel\\_%' ORDER BY table_name",
                &[],
            ),
        )
        .map_err(|e| database_error(&e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

impl DeadLetterReads for PgNamespace {
    fn dead_letters(&mut self, after: i64, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let slug = self.info.slug.clone();
        let limit = limit as i32;
        let sql = "SELECT position, stream_id, version, event_type, data, metadata, occurred_at, error, \
                   failed_at::text FROM reel.list_dead_letters($1, $2, $3)";
        let client = &self.client;
        let rows = if self.in_tx {
            self.fetch(sql, &[&slug, &after, &limit], false)?
        } else {
            block_on(&self.handle, client.query(sql, &[&slug, &after, &limit])).map_err(|e| database_error(&e))?
        };
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                event: Event {
                    position: r.get(0),
                    stream_id: r.get(1),
                    version: r.get(2),
                    event_type: r.get(3),
                    data: r.get(4),
                    metadata: r.get(5),
                    occurred_at: r.get(6),
                },
                error: r.get(7),
                failed_at: r.get(8),
            })
            .collect())
    }
}

impl SqlWrites for PgNamespace {
    fn execute(&mut self, statement: &str, params: Vec<Value>) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::Refused("sql.execute is not allowed in a query: reads are read-only".into()));
        }
        self.check(statement)?;
        let ddl = self.capture.is_some_and(|c| c.started) && crate::store::is_ddl(statement);
        self.dispatch(Op::Statement { sql: statement.to_owned(), params })?;
        if ddl {
            self.dispatch(Op::Watch)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.sync()
    }
}

impl Commits for PgNamespace {
    fn try_claim(&mut self) -> Result<bool, StoreError> {
        let client = &self.client;
        let slug = self.info.slug.clone();
        let row =
            block_on(&self.handle, client.query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&slug]))
                .map_err(|e| database_error(&e))?;
        Ok(row.get(0))
    }

    fn commit(&mut self, from: Cursor, to: Cursor) -> Result<(), StoreError> {
        if self.guest_session {
            self.dispatch(Op::Release)?;
        }
        if !self.read_only {
            self.capture_changes(to)?;
            self.check_storage(to)?;
            self.dispatch(Op::Advance { from, to })?;
        }
        self.dispatch(Op::Commit)?;
        let result = self.sync();
        if result.is_err() {
            let _ = self.rollback();
        } else {
            self.in_tx = false;
            let emitted = self.emitting.take();
            self.count_appended(emitted);
        }
        result
    }

    fn commit_behind(&mut self, from: Cursor, to: Cursor) -> Result<bool, StoreError> {
        if self.read_only || self.failed.is_some() {
            return self.commit(from, to).map(|()| false);
        }
        // One transaction behind at a time: this one waits for the last.
        self.await_behind()?;
        if self.guest_session {
            self.dispatch(Op::Release)?;
        }
        self.capture_changes(to)?;
        self.check_storage(to)?;
        self.dispatch(Op::Advance { from, to })?;
        self.dispatch(Op::Commit)?;
        let answer = self.send_sync()?;
        self.in_flight = 0;
        self.in_tx = false;
        self.behind = Behind::Pending(answer, self.started, self.emitting.take());
        Ok(true)
    }

    fn settle(&mut self) -> Result<(), StoreError> {
        let outcome = self.await_behind();
        self.behind = Behind::Clear;
        outcome
    }

    fn start_capture(&mut self, at: Cursor, only_if_empty: bool) -> Result<bool, StoreError> {
        self.start_capture_here(at, only_if_empty)
    }

    /// reel.emit appends in this transaction, as reel's user: the role
    /// itself cannot write `events` (ADR 23). Sent down the pipeline, not
    /// waited for: the batch commits behind it, and what it appended is
    /// known once the transaction has committed (ADR 47). The handled
    /// cursor moves with the checkpoint, in reel.advance.
    fn emit(&mut self, emissions: &Emissions, _to: Cursor) -> Result<Stored, StoreError> {
        let columns = Box::new(EmitColumns::new(emissions).map_err(StoreError::Limit)?);
        if !self.statements.contains_key(EMIT) {
            // Prepared once, in a session the projection's SQL has not
            // changed (its search_path, say), after what it sent.
            self.reset_session()?;
            self.sync()?;
            self.prepare_all(vec![EMIT.to_owned()], false)?;
        }
        let counts = Counts::default();
        self.emitting = Some(counts.clone());
        self.dispatch(Op::Emit { columns, counts })?;
        Ok(Stored::Sent)
    }

    fn take_appended(&mut self) -> Option<Forwarded> {
        self.appended.take()
    }
}

impl KvWrites for PgNamespace {
    fn kv_write(&mut self, writes: &[KvWrite<'_>]) -> Result<(), StoreError> {
        let arrays = || (ArrayParam::new(Type::TEXT), ArrayParam::new(Type::BYTEA));
        let (mut inserts, mut upserts, mut deletes) = (arrays(), arrays(), ArrayParam::new(Type::TEXT));
        for w in writes {
            match w.value {
                None => deletes.push(w.key.as_bytes()),
                Some(value) => {
                    let (keys, values) = if w.new { &mut inserts } else { &mut upserts };
                    keys.push(w.key.as_bytes());
                    values.push(value);
                }
            }
        }
        for (insert, (keys, values)) in [(true, inserts), (false, upserts)] {
            if !keys.is_empty() {
                self.dispatch(Op::KvPut { insert, keys, values })?;
            }
        }
        if !deletes.is_empty() {
            self.dispatch(Op::KvDelete { keys: deletes })?;
        }
        Ok(())
    }

    fn kv_is_empty(&mut self) -> Result<bool, StoreError> {
        let client = &self.client;
        let row = block_on(&self.handle, client.query_one("SELECT NOT EXISTS (SELECT 1 FROM _reel_kv)", &[]))
            .map_err(|e| database_error(&e))?;
        Ok(row.get(0))
    }
}

impl DeadLetterWrites for PgNamespace {
    fn dead_letter(&mut self, event: &Event, error: &str) -> Result<(), StoreError> {
        self.dispatch(Op::DeadLetter { event: Box::new(event.clone()), error: error.to_owned() })
    }

    fn remove_dead_letter(&mut self, position: i64) -> Result<bool, StoreError> {
        let slug = self.info.slug.clone();
        let rows = self.fetch("SELECT reel.remove_dead_letter($1, $2)", &[&slug, &position], false)?;
        Ok(rows.first().is_some_and(|r| r.get(0)))
    }
}

/// Rows as values, at most `max_rows` (more is a limit error).
fn to_rows(rows: &[tokio_postgres::Row], columns: Vec<String>, max_rows: usize) -> Result<Rows, StoreError> {
    if rows.len() > max_rows {
        return Err(StoreError::Limit(format!("query returned more than {max_rows} rows (the row limit)")));
    }
    let rows = rows
        .iter()
        .map(|row| (0..row.len()).map(|i| column(row, i)).collect::<Result<Vec<_>, _>>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| StoreError::Sql { code: "reel:type".into(), message: m })?;
    Ok(Rows { columns, rows })
}
