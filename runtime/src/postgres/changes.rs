//! Change capture on PostgreSQL (ADRs 28, 30): statement triggers note the
//! keys a batch touches, `reel.capture_commit` writes what the batch left of
//! each (migration 0028). Capture starts when the version first reaches the
//! head of the log: the triggers go on then, and a marker starts the
//! history. The history is read here, and a snapshot a step at a time.

use std::collections::HashSet;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, ToStatement};

use reel_model::Cursor;
use reel_model::time::now_micros;

use super::client::{block_on, block_on_with_deadline, database_error};
use super::connection::PgNamespace;
use super::pipeline::Op;
use crate::store::sql_text::quote_ident;
use crate::store::{
    Change, ChangePage, ChangeReads, HistoryStart, START, START_EMPTY, SnapshotAt, SnapshotStep, StoreError,
};

/// The history's bounds: how far it is pruned, its last seq, where it starts.
const BOUNDS: &str = "SELECT p.through, coalesce((SELECT max(seq) FROM _reel_changes), p.through), f.seq, f.kind, f.key \
     FROM (SELECT coalesce((SELECT through FROM _reel_changes_pruned WHERE id = 1), 0) AS through) p \
     LEFT JOIN LATERAL (SELECT seq, kind, key FROM _reel_changes ORDER BY seq LIMIT 1) f ON true";

/// Changes after `$1`, at most `$2` (the start marker left out).
const HISTORY: &str = "SELECT seq, tx, \"position\", kind, tbl, key, \"row\", value FROM _reel_changes \
     WHERE seq > $1 AND kind <> 'start' ORDER BY seq LIMIT $2";

/// The captured tables of the schema (as `reel.capture_tables` watches them).
const TABLES: &str = "SELECT c.relname::text FROM pg_class c \
     WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
       AND c.relname NOT LIKE '\\_reel\\_%' AND pg_has_role(c.relowner, 'USAGE') \
       AND (SELECT cardinality(i.indkey::int2[]) FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
           BETWEEN 1 AND 8";

/// A table's rendering (row and key, as `reel.capture_commit` renders
/// them, alias `t`), its key columns and their types.
const SHAPE: &str = "WITH t AS (SELECT to_regclass(format('%I.%I', current_schema(), $1::text)) AS oid), \
     cols AS (SELECT array_agg(attname::text ORDER BY attnum) AS c, array_agg(atttypid::regtype ORDER BY attnum) AS ty \
              FROM pg_attribute, t WHERE attrelid = t.oid AND attnum > 0 AND NOT attisdropped), \
     keys AS (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) AS c, \
                     array_agg(a.atttypid::regtype ORDER BY array_position(i.indkey::int2[], a.attnum)) AS ty, \
                     array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY array_position(i.indkey::int2[], a.attnum)) AS f \
              FROM t, pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
              WHERE i.indrelid = t.oid AND i.indisprimary) \
     SELECT reel.capture_object('t', cols.c, cols.ty), reel.capture_object('t', keys.c, keys.ty), keys.c, keys.f \
     FROM cols, keys";

fn db(e: tokio_postgres::Error) -> StoreError {
    database_error(&e)
}

/// `statement`: [`BOUNDS`], as text or prepared.
async fn bounds<S: ToStatement + ?Sized>(
    client: &Client,
    statement: &S,
) -> Result<(i64, i64, HistoryStart), StoreError> {
    let row = client.query_one(statement, &[]).await.map_err(db)?;
    let (pruned_through, last): (i64, i64) = (row.get(0), row.get(1));
    let first: Option<(i64, String, String)> =
        row.get::<_, Option<i64>>(2).map(|seq| (seq, row.get::<_, String>(3), row.get::<_, String>(4)));
    let start = HistoryStart::of(first.as_ref().map(|(s, k, key)| (*s, k.as_str(), key.as_str())), pruned_through);
    Ok((pruned_through, last, start))
}

/// `statement`: [`HISTORY`], as text or prepared.
async fn history<S: ToStatement + ?Sized>(
    client: &Client,
    statement: &S,
    after: i64,
    limit: usize,
) -> Result<Vec<Change>, StoreError> {
    let rows = client.query(statement, &[&after, &(limit as i64)]).await.map_err(db)?;
    Ok(rows
        .iter()
        .map(|r| Change {
            seq: r.get(0),
            cursor: Cursor { tx: r.get(1), id: r.get(2) },
            kind: r.get(3),
            table: r.get(4),
            key: r.get(5),
            row: r.get(6),
            value: r.get(7),
        })
        .collect())
}

/// Of `keys` of `table` (`""`: KV), those changed after `from` through `through`.
async fn changed(
    client: &Client,
    table: &str,
    keys: &[String],
    from: i64,
    through: i64,
) -> Result<HashSet<String>, StoreError> {
    let rows = if table.is_empty() {
        let sql =
            "SELECT DISTINCT key FROM _reel_changes WHERE tbl IS NULL AND key = ANY($1) AND seq > $2 AND seq <= $3";
        client.query(sql, &[&keys, &from, &through]).await
    } else {
        let sql = "SELECT DISTINCT key FROM _reel_changes WHERE tbl = $4 AND key = ANY($1) AND seq > $2 AND seq <= $3";
        client.query(sql, &[&keys, &from, &through, &table]).await
    };
    Ok(rows.map_err(db)?.iter().map(|r| r.get(0)).collect())
}

/// Up to `limit` rows of the point's table after its key, as in the SQLite
/// store's `chunk`: each with its key as a point holds it (the key columns
/// as text, a JSON array) and whether it changed since the snapshot began.
async fn chunk(
    client: &Client,
    point: &SnapshotAt,
    limit: usize,
    position: Cursor,
    through: i64,
) -> Result<Vec<(Change, String, bool)>, StoreError> {
    let limit_param = limit as i64;
    let mut out = Vec::new();
    if point.table.is_empty() {
        let after = point.key.clone().unwrap_or_default();
        let rows = client
            .query("SELECT key, value FROM _reel_kv WHERE key > $1 ORDER BY key LIMIT $2", &[&after, &limit_param])
            .await
            .map_err(db)?;
        let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let changed = changed(client, "", &keys, point.from, through).await?;
        for r in &rows {
            let key: String = r.get(0);
            let change = Change {
                seq: 0,
                cursor: position,
                kind: "set".into(),
                table: None,
                key: key.clone(),
                row: None,
                value: Some(r.get(1)),
            };
            out.push((change, key.clone(), changed.contains(&key)));
        }
        return Ok(out);
    }
    let table = &point.table;
    let shape = client.query_one(SHAPE, &[table]).await.map_err(db)?;
    let (row_expr, key_expr): (String, String) = (shape.get(0), shape.get(1));
    let Some(keys) = shape.get::<_, Option<Vec<String>>>(2) else { return Ok(out) };
    let types: Vec<String> = shape.get(3);
    let order: Vec<String> = keys.iter().map(|k| format!("t.{}", quote_ident(k))).collect();
    let raw: Vec<String> = keys.iter().map(|k| format!("t.{}::text", quote_ident(k))).collect();
    let after: Vec<Option<String>> = match &point.key {
        None => Vec::new(),
        Some(key) => serde_json::from_str::<Vec<Option<String>>>(key)
            .ok()
            .filter(|k| k.len() == keys.len())
            .ok_or_else(|| StoreError::Invalid("not a snapshot point reel handed out".into()))?,
    };
    let filter = if after.is_empty() {
        String::new()
    } else {
        let values: Vec<String> = types.iter().enumerate().map(|(i, ty)| format!("${}::text::{ty}", i + 2)).collect();
        format!("WHERE ({}) > ({})", order.join(", "), values.join(", "))
    };
    let sql = format!(
        "SELECT ({key_expr})::text, ({row_expr})::text, json_build_array({})::text FROM {} t {filter} \
         ORDER BY {} LIMIT $1",
        raw.join(", "),
        quote_ident(table),
        order.join(", ")
    );
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit_param];
    params.extend(after.iter().map(|v| v as &(dyn ToSql + Sync)));
    let rows = client.query(&sql, &params).await.map_err(db)?;
    let rendered: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let changed = changed(client, table, &rendered, point.from, through).await?;
    for r in &rows {
        let key: String = r.get(0);
        let change = Change {
            seq: 0,
            cursor: position,
            kind: "insert".into(),
            table: Some(table.clone()),
            key: key.clone(),
            row: Some(r.get(1)),
            value: None,
        };
        out.push((change, r.get(2), changed.contains(&key)));
    }
    Ok(out)
}

/// A step of the snapshot at `at`, in the read transaction the caller
/// opened (the steps are those of the SQLite store's `snapshot_step`).
async fn snapshot_step(client: &Client, slug: &str, at: &SnapshotAt, limit: usize) -> Result<SnapshotStep, StoreError> {
    let (pruned_through, last, _) = bounds(client, BOUNDS).await?;
    let mut step = SnapshotStep { pruned_through, at: at.at, ..SnapshotStep::default() };
    let mut point = at.clone();
    let changes = history(client, HISTORY, at.at, limit).await?;
    let full = changes.len() == limit;
    for change in changes {
        point.at = change.seq;
        step.items.push((change, point.clone()));
    }
    if full {
        step.at = point.at;
        step.next = Some(point);
        return Ok(step);
    }
    point.at = point.at.max(last);
    step.at = point.at;
    let checkpoint =
        client.query_one("SELECT tx, position FROM reel.read_checkpoint($1)", &[&slug]).await.map_err(db)?;
    let position = Cursor { tx: checkpoint.get(0), id: checkpoint.get(1) };
    step.position = Some(position);
    let mut tables: Vec<String> = client.query(TABLES, &[]).await.map_err(db)?.iter().map(|r| r.get(0)).collect();
    tables.push(String::new());
    tables.sort();
    loop {
        let Some(table) = tables.iter().find(|t| **t >= point.table) else { return Ok(step) };
        if *table != point.table {
            (point.table, point.key) = (table.clone(), None);
        }
        let rows = chunk(client, &point, limit, position, point.at).await?;
        let read = rows.len();
        for (change, key, changed) in rows {
            point.key = Some(key);
            if !changed {
                step.items.push((change, point.clone()));
            }
        }
        if read == limit {
            step.next = Some(point);
            return Ok(step);
        }
        let Some(next) = tables.iter().find(|t| **t > point.table) else { return Ok(step) };
        (point.table, point.key) = (next.clone(), None);
        if read > 0 {
            step.next = Some(point);
            return Ok(step);
        }
    }
}

impl PgNamespace {
    /// The batch's changes, before its checkpoint moves to `to` (ADR 28).
    pub(super) fn capture_changes(&mut self, to: Cursor) -> Result<(), StoreError> {
        let Some(capture) = self.capture.as_mut().filter(|c| c.started) else { return Ok(()) };
        let prune_before = capture.prune_before();
        self.dispatch(Op::Capture { to, prune_before })
    }

    /// Watch the namespace's tables for change capture, at opening, once
    /// capture has started.
    pub(super) fn watch_tables(&mut self) -> Result<(), StoreError> {
        if !self.capture.is_some_and(|c| c.started) {
            return Ok(());
        }
        let client = &self.client;
        block_on(&self.handle, client.batch_execute(super::connection::WATCH)).map_err(|e| database_error(&e))
    }

    /// Start capture (ADR 30), between batches, at checkpoint `at`: the
    /// triggers (reel's user puts the one on `_reel_kv`), then the marker
    /// the history starts with, saying whether the read model is empty
    /// (none of it with `only_if_empty` on a read model that is not).
    pub(super) fn start_capture_here(&mut self, at: Cursor, only_if_empty: bool) -> Result<bool, StoreError> {
        if self.capture.is_none_or(|c| c.started) {
            return Ok(true);
        }
        let Some(admin) = self.admin.clone() else { return Ok(true) };
        let (schema, role) = (self.info.schema.clone(), self.info.role.clone());
        let client = std::sync::Arc::clone(&self.client);
        let empty = block_on(&self.handle, async {
            // What the projection set in the session goes first (ADR 20).
            client.batch_execute("RESET ALL").await?;
            let tables = client
                .query(
                    "SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = $1::text::regnamespace \
                     AND c.relkind IN ('r', 'p') AND (c.relname NOT LIKE '\\_reel\\_%' OR c.relname = '_reel_kv')",
                    &[&schema],
                )
                .await?;
            let mut empty = true;
            for table in tables {
                let name: String = table.get(0);
                let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {}.{})", quote_ident(&schema), quote_ident(&name));
                empty &= client.query_one(&sql, &[]).await?.get::<_, bool>(0);
            }
            Ok::<_, tokio_postgres::Error>(empty)
        })
        .map_err(db)?;
        self.guest_ran = false;
        if only_if_empty && !empty {
            return Ok(false);
        }
        block_on(&self.handle, async {
            let c = admin.get().await.map_err(|e| StoreError::Database(e.to_string()))?;
            c.execute("SELECT reel.capture_setup($1, $2, true)", &[&schema, &role]).await.map_err(db)?;
            client.batch_execute(super::connection::WATCH).await.map_err(db)?;
            let key = if empty { START_EMPTY } else { "snapshot" };
            let insert = format!(
                "INSERT INTO {}._reel_changes (tx, \"position\", at, kind, key) VALUES ($1, $2, $3, $4, $5)",
                quote_ident(&schema)
            );
            client.execute(&insert, &[&at.tx, &at.id, &now_micros(), &START, &key]).await.map_err(db)
        })?;
        tracing::info!(namespace = %self.info.slug, empty, "change capture starts at {at}");
        if let Some(capture) = self.capture.as_mut() {
            capture.started = true;
        }
        Ok(true)
    }
}

impl ChangeReads for PgNamespace {
    fn changes(&mut self, after: i64, limit: usize) -> Result<ChangePage, StoreError> {
        // Prepared once per connection and sent together: one round trip
        // for each client's read of every batch (a feed's clients each read
        // on their own).
        match self.prepare_all(vec![HISTORY.to_owned(), BOUNDS.to_owned()], false) {
            Ok(()) => {}
            // A namespace from before change capture has no history.
            Err(StoreError::Database(e)) if e.starts_with("42P01") => return Ok(ChangePage::default()),
            Err(e) => return Err(e),
        }
        let (page, ends) = (&self.statements[HISTORY], &self.statements[BOUNDS]);
        let client = &self.client;
        // The bounds are read after the page (the server runs them in the
        // order sent): a pruning in between shows there.
        let (changes, (pruned_through, last, start)) = block_on(&self.handle, async {
            futures_util::future::try_join(history(client, page, after, limit), bounds(client, ends)).await
        })?;
        Ok(ChangePage { changes, pruned_through, last, start })
    }

    fn snapshot(&mut self, at: &SnapshotAt, limit: usize) -> Result<SnapshotStep, StoreError> {
        let client = std::sync::Arc::clone(&self.client);
        let slug = self.info.slug.clone();
        block_on_with_deadline(&self.handle, &client, self.remaining(), async {
            // One snapshot of the database: the rows and the history's end agree.
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(db)?;
            let step = snapshot_step(&client, &slug, at, limit).await;
            let ended = client.batch_execute(if step.is_ok() { "COMMIT" } else { "ROLLBACK" }).await.map_err(db);
            let step = step?;
            ended.map(|()| step)
        })
    }
}
