//! The ceilings: a projection's writes from a native client, no reel.

use std::collections::BTreeMap;
use std::time::Instant;

use reel::testing::workload::StoredEvent;

/// The settings reel uses for a namespace file (`store/sqlite/mod.rs`), so a
/// ceiling is measured on the same storage. Returns what reel does after each
/// commit: a checkpoint on another thread once the WAL is big.
fn tuned(conn: &rusqlite::Connection, path: &std::path::Path) -> impl FnMut() + use<> {
    use reel::testing::wal;
    conn.pragma_update(None, "page_size", 16_384).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "cache_size", -262_144).unwrap();
    conn.wal_hook(Some(wal::note_wal_pages));
    let checkpointer = wal::Checkpointer::start(path).unwrap();
    move || {
        if wal::take_wal_pages() >= wal::BACKGROUND_PAGES {
            checkpointer.request();
        }
    }
}

/// The limit for order-summaries: the statements it issues for each batch
/// (recorded beforehand by running it natively in memory, in batches of
/// `batch` events handed over in calls as reel's worker does), sent by
/// a native client with no reel in between: statements prepared, each batch a
/// transaction with its checkpoint; on PostgreSQL pipelined, as `EXECUTE`s like
/// reel's (ADR 15).
/// Returns events/s and how many statements that was.
pub async fn ceiling(config: &reel::Config, events: &[StoredEvent], batch: usize) -> (f64, usize) {
    let dialect = if config.database_url.is_some() { "postgres" } else { "sqlite" };
    let mut host = RecordingHost { dialect, ..RecordingHost::default() };
    guest_sdk::native::init::<order_summaries::OrderSummaries>(&mut host).unwrap();
    let ddl: Vec<String> = std::mem::take(&mut host.statements).into_iter().map(|(sql, _)| sql).collect();
    let raw = raw_events(events, |_| true);
    let total = raw.len() as f64;
    let batches: Vec<Vec<(String, Vec<guest_sdk::Value>)>> = raw
        .chunks(batch)
        .map(|chunk| {
            for call in reel::testing::calls(&config.batch, chunk) {
                guest_sdk::native::handle::<order_summaries::OrderSummaries, _>(&mut host, call).unwrap();
            }
            std::mem::take(&mut host.statements)
        })
        .collect();
    let statements = batches.iter().map(Vec::len).sum();
    let rate = match &config.database_url {
        None => {
            let path = config.data_dir.join("ceiling.db");
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(&path).unwrap();
                let mut after_commit = tuned(&conn, &path);
                for statement in &ddl {
                    conn.execute_batch(statement).unwrap();
                }
                conn.execute_batch(CHECKPOINT_DDL).unwrap();
                let started = Instant::now();
                for (n, statements) in batches.iter().enumerate() {
                    let tx = conn.transaction().unwrap();
                    for (sql, params) in statements {
                        let params = params.iter().map(|v| match v {
                            guest_sdk::Value::Null => rusqlite::types::Value::Null,
                            guest_sdk::Value::Integer(i) => (*i).into(),
                            guest_sdk::Value::Real(f) => (*f).into(),
                            guest_sdk::Value::Text(s) => s.clone().into(),
                            guest_sdk::Value::Blob(b) => b.clone().into(),
                        });
                        let sql = sql.replace('$', "?");
                        tx.prepare_cached(&sql).unwrap().execute(rusqlite::params_from_iter(params)).unwrap();
                    }
                    tx.execute("UPDATE hw_checkpoint SET position = ?1 WHERE id = 1", [n as i64]).unwrap();
                    tx.commit().unwrap();
                    after_commit();
                }
                total / started.elapsed().as_secs_f64()
            })
            .await
            .unwrap()
        }
        Some(url) => {
            // As reel sends them (ADR 15): each statement prepared under a
            // name, its executions as `EXECUTE`s, 1,000 to a simple query.
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute("CREATE SCHEMA ceiling; SET search_path TO ceiling").await.unwrap();
            for statement in &ddl {
                client.batch_execute(statement).await.unwrap();
            }
            client.batch_execute(CHECKPOINT_DDL).await.unwrap();
            // Statements with at most 16 parameters as `EXECUTE`s, the rest
            // bound (reel's EXEC_MAX_PARAMS).
            let mut names = std::collections::HashMap::new();
            let mut bound = std::collections::HashMap::new();
            for (sql, params) in batches.iter().flatten() {
                if params.len() > 16 {
                    if !bound.contains_key(sql) {
                        bound.insert(sql.clone(), client.prepare(sql).await.unwrap());
                    }
                } else if !names.contains_key(sql) {
                    let name = format!("hw_e{}", names.len());
                    client.batch_execute(&format!("PREPARE {name} AS {sql}")).await.unwrap();
                    names.insert(sql.clone(), name);
                }
            }
            enum Out<'a> {
                Query(String),
                Bound(&'a tokio_postgres::Statement, &'a [guest_sdk::Value]),
            }
            let sends: Vec<Vec<Out<'_>>> = batches
                .iter()
                .enumerate()
                .map(|(n, statements)| {
                    let mut sends = vec![Out::Query("BEGIN".to_owned())];
                    let mut executes = String::new();
                    let mut count = 0;
                    for (sql, params) in statements {
                        if let Some(statement) = bound.get(sql) {
                            if !executes.is_empty() {
                                sends.push(Out::Query(std::mem::take(&mut executes)));
                            }
                            sends.push(Out::Bound(statement, params));
                            count = 0;
                            continue;
                        }
                        let literals: Vec<String> = params.iter().map(pg_literal).collect();
                        executes += &format!("EXECUTE {}({});", names[sql], literals.join(", "));
                        count += 1;
                        if count == 1000 {
                            sends.push(Out::Query(std::mem::take(&mut executes)));
                            count = 0;
                        }
                    }
                    if !executes.is_empty() {
                        sends.push(Out::Query(executes));
                    }
                    sends.push(Out::Query(format!("UPDATE hw_checkpoint SET position = {n} WHERE id = 1")));
                    sends.push(Out::Query("COMMIT".to_owned()));
                    sends
                })
                .collect();
            let client = &client;
            let started = Instant::now();
            for batch in &sends {
                let sent = batch.iter().map(|send| async move {
                    match send {
                        Out::Query(text) => client.batch_execute(text).await,
                        Out::Bound(statement, params) => {
                            let params = params.iter().map(TextParam);
                            client.execute_raw(*statement, params).await.map(|_| ())
                        }
                    }
                });
                for result in futures_util::future::join_all(sent).await {
                    result.unwrap();
                }
            }
            total / started.elapsed().as_secs_f64()
        }
    };
    (rate, statements)
}

const CHECKPOINT_DDL: &str =
    "CREATE TABLE hw_checkpoint (id INTEGER PRIMARY KEY, position BIGINT); INSERT INTO hw_checkpoint VALUES (1, 0);";

/// `value` as a PostgreSQL literal, written as reel writes it (`pg/value.rs`,
/// private to reel): text in `E'...'` with `\` and `'` doubled.
fn pg_literal(value: &guest_sdk::Value) -> String {
    match value {
        guest_sdk::Value::Null => "NULL".to_owned(),
        guest_sdk::Value::Integer(i) => format!("'{i}'"),
        guest_sdk::Value::Real(f) => format!("'{f}'"),
        guest_sdk::Value::Text(s) => format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
        guest_sdk::Value::Blob(b) => {
            format!("E'\\\\x{}'", b.iter().map(|byte| format!("{byte:02x}")).collect::<String>())
        }
    }
}

/// A parameter in text format, as reel binds them (`pg/value.rs`).
#[derive(Debug)]
struct TextParam<'a>(&'a guest_sdk::Value);

impl tokio_postgres::types::ToSql for TextParam<'_> {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            guest_sdk::Value::Null => return Ok(tokio_postgres::types::IsNull::Yes),
            guest_sdk::Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
            guest_sdk::Value::Real(f) => out.extend_from_slice(f.to_string().as_bytes()),
            guest_sdk::Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            guest_sdk::Value::Blob(_) => return Err("the ceiling binds no blobs".into()),
        }
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    fn encode_format(&self, _: &tokio_postgres::types::Type) -> tokio_postgres::types::Format {
        tokio_postgres::types::Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The stored events `keep` keeps, as the SDK's events (positions from 1).
fn raw_events(events: &[StoredEvent], keep: fn(&StoredEvent) -> bool) -> Vec<guest_sdk::RawEvent> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| keep(e))
        .map(|(i, e)| guest_sdk::RawEvent {
            position: i as i64 + 1,
            stream_id: String::new(),
            version: 1,
            event_type: e.event_type.clone(),
            data: e.data.clone(),
            metadata: "{}".into(),
            occurred_at: e.occurred_at.clone(),
        })
        .collect()
}

/// A host that keeps KV in memory and records each batch's writes and SQL statements.
#[derive(Default)]
struct RecordingHost {
    kv: std::collections::HashMap<String, Vec<u8>>,
    written: BTreeMap<String, Vec<u8>>,
    statements: Vec<(String, Vec<guest_sdk::Value>)>,
    dialect: &'static str,
}

impl guest_sdk::Host for RecordingHost {
    fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key).cloned()
    }
    fn kv_set(&mut self, key: &str, value: Vec<u8>) {
        self.kv.insert(key.to_owned(), value.clone());
        self.written.insert(key.to_owned(), value);
    }
    fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }
    fn kv_scan(&mut self, _: &str, _: Option<&str>, _: u32) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
    fn sql_execute(&mut self, statement: &str, params: Vec<guest_sdk::Value>) {
        self.statements.push((statement.to_owned(), params));
    }
    fn sql_query(&mut self, _: &str, _: Vec<guest_sdk::Value>) -> Result<guest_sdk::Rows, guest_sdk::SqlError> {
        Ok(guest_sdk::Rows::default())
    }
    fn sql_dialect(&mut self) -> String {
        self.dialect.to_owned()
    }
    fn log(&mut self, _: guest_sdk::Level, _: &str) {}
}

/// The limit for customer-stats: the KV writes it makes per batch (computed
/// beforehand, in memory), written by a native client as one multi-row insert
/// of the new keys and one upsert of the others per batch, with the checkpoint.
pub async fn kv_ceiling(config: &reel::Config, events: &[StoredEvent], batch: usize) -> f64 {
    let subscribed = raw_events(events, |e| e.event_type != "order.shipped");
    let mut host = RecordingHost::default();
    let mut writes: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for chunk in subscribed.chunks(batch) {
        guest_sdk::native::handle::<customer_stats::CustomerStatsProjection, _>(&mut host, chunk).unwrap();
        writes.push(std::mem::take(&mut host.written).into_iter().collect());
    }
    let total = events.len() as f64;
    match &config.database_url {
        None => {
            let path = config.data_dir.join("kv-ceiling.db");
            tokio::task::spawn_blocking(move || {
                let mut conn = rusqlite::Connection::open(&path).unwrap();
                let mut after_commit = tuned(&conn, &path);
                conn.execute_batch(
                    "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID; \
                     CREATE TABLE checkpoint (id INTEGER PRIMARY KEY, position BIGINT); INSERT INTO checkpoint VALUES (1, 0);",
                )
                .unwrap();
                let started = Instant::now();
                for (n, batch) in writes.iter().enumerate() {
                    let tx = conn.transaction().unwrap();
                    for (key, value) in batch {
                        tx.prepare_cached("INSERT INTO kv VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
                            .unwrap()
                            .execute(rusqlite::params![key, value])
                            .unwrap();
                    }
                    tx.execute("UPDATE checkpoint SET position = ?1 WHERE id = 1", [n as i64]).unwrap();
                    tx.commit().unwrap();
                    after_commit();
                }
                total / started.elapsed().as_secs_f64()
            })
            .await
            .unwrap()
        }
        Some(url) => {
            let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(
                    "CREATE TABLE kv_c (key TEXT COLLATE \"C\" PRIMARY KEY, value BYTEA NOT NULL) WITH (fillfactor = 50); \
                     CREATE TABLE kv_c_checkpoint (id INTEGER PRIMARY KEY, position BIGINT); INSERT INTO kv_c_checkpoint VALUES (1, 0);",
                )
                .await
                .unwrap();
            // Keys no earlier batch wrote are inserted, the rest upserted, as
            // reel does with keys its cache knows absent.
            let mut seen = std::collections::HashSet::new();
            type Keys<'a> = (Vec<&'a str>, Vec<&'a [u8]>);
            let split: Vec<[Keys<'_>; 2]> = writes
                .iter()
                .map(|batch| {
                    let mut split: [Keys<'_>; 2] = Default::default();
                    for (k, v) in batch {
                        let part = &mut split[usize::from(seen.insert(k.as_str()))];
                        part.0.push(k);
                        part.1.push(v);
                    }
                    split
                })
                .collect();
            let started = Instant::now();
            for (n, [(old_keys, old_values), (new_keys, new_values)]) in split.iter().enumerate() {
                let tx = client.transaction().await.unwrap();
                tx.execute("INSERT INTO kv_c SELECT * FROM unnest($1::text[], $2::bytea[])", &[new_keys, new_values])
                    .await
                    .unwrap();
                tx.execute(
                    "INSERT INTO kv_c SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[old_keys, old_values],
                )
                .await
                .unwrap();
                tx.execute("UPDATE kv_c_checkpoint SET position = $1 WHERE id = 1", &[&(n as i64)]).await.unwrap();
                tx.commit().await.unwrap();
            }
            total / started.elapsed().as_secs_f64()
        }
    }
}
