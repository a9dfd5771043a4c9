//! Projection writes sent as `EXECUTE`s of one simple query (ADR 15): which
//! writes may go that way, and sending those queued.

use std::sync::Arc;

use super::client::block_on_with_deadline;
use super::connection::{MAX_IN_FLIGHT, PgNamespace};
use super::pipeline::{Blame, Message, own_error, pipeline_stopped};
use crate::store::StoreError;
use crate::store::sql_text::is_plain_write;

/// Projection writes that go as `EXECUTE`s of one simple query, at most
/// this many, or about this many bytes, per query; a write whose `EXECUTE`
/// alone is longer goes on its own (its values, escaped or in hex, would
/// take up to twice their size).
pub(super) const EXECS_PER_QUERY: usize = 1000;
pub(super) const EXEC_QUERY_BYTES: usize = 256 * 1024;
/// Most parameters a statement may have to go as `EXECUTE`s. The server lexes
/// and parses each literal of an `EXECUTE` as SQL, while Bind hands it the
/// values; and a statement with many (a multi-row `INSERT`) writes many rows
/// per Sync anyway: bound, such statements cost the server less (ADR 16).
pub(super) const EXEC_MAX_PARAMS: usize = 16;

impl PgNamespace {
    /// Prepare a projection write also under a name of its own for
    /// `EXECUTE`, when it is a plain `INSERT`, `UPDATE` or `DELETE` returning
    /// no rows, with at most [`EXEC_MAX_PARAMS`] parameters. Such writes then
    /// go as `EXECUTE`s of one simple query, which the server answers once:
    /// sent as prepared statements, each would end with its own Sync, and the
    /// server would answer and flush each on its own (ADR 15).
    /// A statement `PREPARE` refuses is sent on its own, as before.
    pub(super) fn prepare_exec(&mut self, sql: &str) -> Result<(), StoreError> {
        if self.exec_names.contains_key(sql) {
            return Ok(());
        }
        let statement = &self.statements[sql];
        let plain = is_plain_write(sql) && statement.columns().is_empty();
        let name = if plain && statement.params().len() <= EXEC_MAX_PARAMS {
            let name = format!("reel_exec_{}", self.exec_names.len());
            let client = &self.client;
            let prepare = format!("PREPARE {name} AS {sql}");
            let prepared = block_on_with_deadline(&self.handle, client, self.remaining(), async {
                let run = async |text: &str| client.batch_execute(text).await.map_err(|e| own_error(&e, true));
                // In a savepoint: a refusal must not abort the transaction.
                run("SAVEPOINT reel_exec").await?;
                let prepared = client.batch_execute(&prepare).await.is_ok();
                run(if prepared { "RELEASE reel_exec" } else { "ROLLBACK TO reel_exec; RELEASE reel_exec" }).await?;
                Ok(prepared)
            })?;
            prepared.then_some(name)
        } else {
            None
        };
        self.exec_names.insert(sql.to_owned(), name);
        Ok(())
    }

    /// Send the `EXECUTE`s queued, as one simple query.
    pub(super) fn send_execs(&mut self) -> Result<(), StoreError> {
        if self.exec_count == 0 {
            return Ok(());
        }
        let text = std::mem::take(&mut self.execs);
        let count = std::mem::take(&mut self.exec_count);
        if self.failed.is_some() {
            return Ok(());
        }
        let client = Arc::clone(&self.client);
        let flight = async move { client.batch_execute(&text).await.map(|()| 0) };
        self.pipeline.send(Message::Send(Blame::Guest, Box::pin(flight))).map_err(|_| pipeline_stopped())?;
        self.in_flight += count; // the bound counts statements, as before
        if self.in_flight >= MAX_IN_FLIGHT { self.sync() } else { Ok(()) }
    }
}
