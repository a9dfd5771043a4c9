//! A PostgreSQL namespace read whole, in one `REPEATABLE READ` transaction:
//! tables, KV and the checkpoint (in `reel.checkpoints`, the same database)
//! as of one snapshot (ADR 37).

use futures_util::{StreamExt, pin_mut};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use reel_model::{Cursor, Value};

use super::client::{block_on_with_deadline, database_error};
use super::connection::PgNamespace;
use super::value::column;
use crate::store::sql_text::quote_ident;
use crate::store::{Checkpoint, DumpSink, Dumps, StoreError};

/// A table's primary key columns, in the key's order (from the catalog:
/// `information_schema` shows constraints only to a table's owner).
const PRIMARY_KEY: &str = "SELECT a.attname::text FROM pg_catalog.pg_constraint c \
    JOIN pg_catalog.pg_class t ON t.oid = c.conrelid \
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
    CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
    WHERE n.nspname = current_schema() AND t.relname = $1 AND c.contype = 'p' ORDER BY k.ord";

const NO_PARAMS: [&(dyn ToSql + Sync); 0] = [];

impl Dumps for PgNamespace {
    fn dump(&mut self, sink: &mut dyn DumpSink) -> Result<(), StoreError> {
        if self.in_tx {
            return Err(StoreError::Database("a namespace is read whole outside a transaction".into()));
        }
        let client = std::sync::Arc::clone(&self.client);
        let slug = self.info.slug.clone();
        // Past the deadline the server cancels the running statement; the
        // future then fails and rolls back.
        block_on_with_deadline(&self.handle, &client, Some(self.deadline), async {
            let begin = client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await;
            begin.map_err(|e| database_error(&e))?;
            let result = walk(&client, &slug, sink).await;
            let ended = client.batch_execute("ROLLBACK").await.map_err(|e| database_error(&e));
            result.and(ended)
        })
    }
}

/// The checkpoint, every table (by name, bytewise) and its rows, then the
/// KV entries.
async fn walk(client: &Client, slug: &str, sink: &mut dyn DumpSink) -> Result<(), StoreError> {
    let failed = |e: tokio_postgres::Error| database_error(&e);
    let row = client
        .query_one("SELECT tx, position, initialized FROM reel.read_checkpoint($1)", &[&slug])
        .await
        .map_err(failed)?;
    sink.checkpoint(Checkpoint { cursor: Cursor { tx: row.get(0), id: row.get(1) }, initialized: row.get(2) });
    let mut tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )
        .await
        .map_err(failed)?
        .iter()
        .map(|r| r.get(0))
        .filter(|name: &String| !name.to_ascii_lowercase().starts_with("_reel_"))
        .collect();
    tables.sort_unstable();
    for table in &tables {
        let columns: Vec<String> = client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                &[table],
            )
            .await
            .map_err(failed)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        sink.table(table, &columns);
        let key: Vec<String> =
            client.query(PRIMARY_KEY, &[table]).await.map_err(failed)?.iter().map(|r| r.get(0)).collect();
        if !key.is_empty() {
            sink.key(&key);
        }
        let quoted: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let sql = format!("SELECT {} FROM {}", quoted.join(", "), quote_ident(table));
        let rows = client.query_raw(sql.as_str(), NO_PARAMS).await.map_err(failed)?;
        pin_mut!(rows);
        let mut values: Vec<Value> = Vec::with_capacity(columns.len());
        while let Some(row) = rows.next().await {
            let row = row.map_err(failed)?;
            values.clear();
            for i in 0..row.len() {
                values.push(column(&row, i).map_err(|why| StoreError::Invalid(format!("table `{table}`: {why}")))?);
            }
            sink.row(&values);
        }
    }
    let rows = client.query_raw("SELECT key, value FROM _reel_kv ORDER BY key", NO_PARAMS).await.map_err(failed)?;
    pin_mut!(rows);
    while let Some(row) = rows.next().await {
        let row = row.map_err(failed)?;
        sink.kv(row.get(0), row.get(1));
    }
    Ok(())
}
