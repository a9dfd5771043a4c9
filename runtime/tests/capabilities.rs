//! Tier 1: the host capabilities a projection imports, called directly (no
//! guest), over a real SQLite namespace.

use reel::config::Limits;
use reel::model::Cursor;
use reel::model::Value;
use reel::testing::Fault;
use reel::testing::SqliteStore;
use reel::testing::{Access, Capabilities};
use reel::testing::{NamespaceId, Store, StoreError};
use tempfile::TempDir;

fn store() -> (Store, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::new(SqliteStore::new(dir.path()).unwrap()), dir)
}

fn writer(store: &Store, limits: Limits) -> Capabilities {
    writer_of(store, "p", limits)
}

fn writer_of(store: &Store, name: &str, limits: Limits) -> Capabilities {
    let ns = NamespaceId::new(name, "1");
    Capabilities::new(name, Access::Write(store.open_writer(&ns, std::time::Duration::from_secs(10)).unwrap()), limits)
        .unwrap()
}

fn reader(store: &Store) -> Capabilities {
    let ns = NamespaceId::new("p", "1");
    Capabilities::new(
        "p",
        Access::Read(store.open_reader(&ns, std::time::Duration::from_secs(10)).unwrap().unwrap()),
        Limits::default(),
    )
    .unwrap()
}

fn at(id: i64) -> Cursor {
    Cursor { tx: 0, id }
}

#[test]
fn kv_writes_are_visible_in_the_batch_and_durable_only_after_commit() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    w.kv_set("a".into(), b"1".to_vec()).unwrap();
    assert_eq!(w.kv_get("a").unwrap(), Some(b"1".to_vec()));
    w.rollback().unwrap();
    w.begin().unwrap();
    assert_eq!(w.kv_get("a").unwrap(), None, "a rolled-back write is gone");
    w.kv_set("a".into(), b"2".to_vec()).unwrap();
    w.kv_set("b".into(), b"3".to_vec()).unwrap();
    w.kv_delete("b".into()).unwrap();
    w.commit(at(0), at(5)).unwrap();

    let mut r = reader(&store);
    r.begin().unwrap();
    assert_eq!(r.kv_get("a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(r.kv_get("b").unwrap(), None);
    assert_eq!(r.namespace().checkpoint().unwrap().cursor, at(5));
}

#[test]
fn scans_see_pending_writes_in_key_order_with_prefix_after_and_limit() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    for key in ["c/2", "c/1", "c/3", "d/1", "b/9"] {
        w.kv_set(key.into(), key.as_bytes().to_vec()).unwrap();
    }
    w.commit(at(0), at(1)).unwrap();
    w.begin().unwrap();
    w.kv_set("c/0".into(), b"new".to_vec()).unwrap();
    w.kv_delete("c/2".into()).unwrap();
    let keys = |entries: Vec<(String, Vec<u8>)>| entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(w.kv_scan("c/", None, 10).unwrap()), ["c/0", "c/1", "c/3"]);
    assert_eq!(keys(w.kv_scan("c/", Some("c/0"), 10).unwrap()), ["c/1", "c/3"]);
    assert_eq!(keys(w.kv_scan("c/", None, 2).unwrap()), ["c/0", "c/1"]);
    assert_eq!(keys(w.kv_scan("", Some("c/3"), 10).unwrap()), ["d/1"]);
    w.rollback().unwrap();
    w.begin().unwrap();
    assert_eq!(keys(w.kv_scan("c/", None, 10).unwrap()), ["c/1", "c/2", "c/3"], "the scan's flush rolled back too");
}

#[test]
fn sql_runs_in_the_batch_with_dollar_placeholders() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    assert_eq!(w.sql_dialect(), "sqlite");
    w.begin().unwrap();
    w.sql_execute("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, x DOUBLE PRECISION, b BLOB)", vec![]).unwrap();
    w.sql_execute(
        "INSERT INTO t VALUES ($1, $2, $3, $4)",
        vec![Value::Text("a".into()), Value::Integer(7), Value::Real(1.5), Value::Blob(vec![0, 1])],
    )
    .unwrap();
    w.sql_execute(
        "INSERT INTO t (id, n) VALUES ($2, $1) ON CONFLICT (id) DO UPDATE SET n = t.n + excluded.n",
        vec![Value::Integer(3), Value::Text("a".into())],
    )
    .unwrap();
    let rows = w
        .sql_query("SELECT id, n, x, b, '$1' AS lit FROM t WHERE id = $1", vec![Value::Text("a".into())])
        .unwrap()
        .unwrap();
    assert_eq!(rows.columns, ["id", "n", "x", "b", "lit"]);
    assert_eq!(
        rows.rows,
        vec![vec![
            Value::Text("a".into()),
            Value::Integer(10),
            Value::Real(1.5),
            Value::Blob(vec![0, 1]),
            Value::Text("$1".into())
        ]]
    );
    w.commit(at(0), at(1)).unwrap();
}

#[test]
fn a_failed_execute_surfaces_at_the_next_query_and_fails_the_commit() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    w.sql_execute("CREATE TABLE t (id TEXT PRIMARY KEY)", vec![]).unwrap();
    w.sql_execute("INSERT INTO t VALUES ('x')", vec![]).unwrap();
    w.sql_execute("INSERT INTO t VALUES ('x')", vec![]).unwrap(); // duplicate key
    let error = w.sql_query("SELECT 1", vec![]).unwrap().unwrap_err();
    assert_eq!(error.code, "SQLITE_CONSTRAINT_PRIMARYKEY", "{error:?}");
    assert!(error.message.contains("UNIQUE constraint failed: t.id"), "{error:?}");
    let commit = w.commit(at(0), at(1)).unwrap_err();
    assert!(matches!(commit, StoreError::Sql { .. }), "{commit:?}");
    w.rollback().unwrap();
    w.begin().unwrap();
    let rows = w.sql_query("SELECT name FROM sqlite_master WHERE name = 't'", vec![]).unwrap().unwrap();
    assert!(rows.rows.is_empty(), "nothing of the failed batch remains");
}

#[test]
fn statements_sqlite_refuses_carry_sqlites_own_code() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    w.sql_execute("CREATE TABLE t (id TEXT PRIMARY KEY)", vec![]).unwrap();
    for (statement, message) in [
        ("SELECT nope FROM t", "no such column: nope"),
        ("SELECT * FROM nowhere", "no such table: nowhere"),
        ("SELEC 1", "near \"SELEC\": syntax error"),
    ] {
        let error = w.sql_query(statement, vec![]).unwrap().unwrap_err();
        assert_eq!((error.code.as_str(), error.message.as_str()), ("SQLITE_ERROR", message), "{statement}");
        // A failed statement fails the batch: the next starts afresh.
        w.rollback().unwrap();
        w.begin().unwrap();
        w.sql_execute("CREATE TABLE t (id TEXT PRIMARY KEY)", vec![]).unwrap();
    }
    // A deferred write fails the commit with the same code.
    w.sql_execute("INSERT INTO t (nope) VALUES (1)", vec![]).unwrap();
    match w.commit(at(0), at(1)).unwrap_err() {
        StoreError::Sql { code, message } => {
            assert_eq!((code.as_str(), message.as_str()), ("SQLITE_ERROR", "table t has no column named nope"))
        }
        other => panic!("expected SQLite's refusal, got {other:?}"),
    }
    w.rollback().unwrap();
}

/// Enough statements that a batch's writes run on the namespace's writer
/// thread (store/writer.rs hands them over 128 at a time).
const MANY: i64 = 1_000;

#[test]
fn a_big_batchs_statements_run_in_order_and_its_first_error_fails_it() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    w.sql_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)", vec![]).unwrap();
    for id in 0..MANY {
        w.sql_execute("INSERT INTO t VALUES ($1, $2)", vec![Value::Integer(id), Value::Integer(id % 10)]).unwrap();
    }
    // Order matters: n becomes 10 * (id % 10) + (id % 7) only if this runs after the insert.
    for id in 0..MANY {
        w.sql_execute("UPDATE t SET n = n * 10 + $2 WHERE id = $1", vec![Value::Integer(id), Value::Integer(id % 7)])
            .unwrap();
    }
    let expected: i64 = (0..MANY).map(|id| 10 * (id % 10) + id % 7).sum();
    let rows = w.sql_query("SELECT count(*), sum(n) FROM t", vec![]).unwrap().unwrap();
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(MANY), Value::Integer(expected)]],
        "a query sees every write before it"
    );
    for id in MANY..2 * MANY {
        w.sql_execute("INSERT INTO t VALUES ($1, 0)", vec![Value::Integer(id)]).unwrap();
    }
    w.commit(at(0), at(1)).unwrap();

    let sums = |w: &mut Capabilities| w.sql_query("SELECT count(*), sum(n) FROM t", vec![]).unwrap().unwrap().rows;
    let mut r = reader(&store);
    r.begin().unwrap();
    assert_eq!(sums(&mut r), vec![vec![Value::Integer(2 * MANY), Value::Integer(expected)]]);
    r.rollback().unwrap();

    // A duplicate key in the middle of a big batch, then a statement the
    // authorizer refuses: the first error is what the batch fails with, and
    // nothing of the batch stays.
    w.begin().unwrap();
    for id in 0..MANY {
        let id = if id == 700 { 5 } else { 10 * MANY + id };
        w.sql_execute("INSERT INTO t VALUES ($1, 1)", vec![Value::Integer(id)]).unwrap();
    }
    w.sql_execute("INSERT INTO t SELECT position, 0 FROM _reel_checkpoint", vec![]).unwrap();
    let commit = w.commit(at(1), at(2)).unwrap_err();
    match &commit {
        StoreError::Sql { code, message } => {
            assert_eq!(code, "SQLITE_CONSTRAINT_PRIMARYKEY");
            assert!(message.contains("UNIQUE constraint failed: t.id"), "{message}");
        }
        other => panic!("expected the duplicate key, got {other:?}"),
    }
    w.rollback().unwrap();
    w.begin().unwrap();
    assert_eq!(sums(&mut w), vec![vec![Value::Integer(2 * MANY), Value::Integer(expected)]]);
    // The authorizer holds on the writer's thread too.
    for id in 0..MANY {
        w.sql_execute("INSERT INTO t VALUES ($1, 1)", vec![Value::Integer(20 * MANY + id)]).unwrap();
    }
    w.sql_execute("INSERT INTO t SELECT position + 1000000, 0 FROM _reel_checkpoint", vec![]).unwrap();
    let error = w.sql_query("SELECT 1", vec![]).unwrap().unwrap_err();
    assert_eq!(error.code, "SQLITE_AUTH", "{error:?}");
    w.rollback().unwrap();
    assert_eq!(w.namespace().checkpoint().unwrap().cursor, at(1));
}

#[test]
fn projections_cannot_reach_reels_tables_other_files_or_the_transaction() {
    let (store, dir) = store();
    let mut w = writer(&store, Limits::default());
    let refused = [
        ("SELECT * FROM _reel_checkpoint", "SQLITE_AUTH"),
        ("UPDATE _reel_checkpoint SET position = 99", "SQLITE_AUTH"),
        ("DELETE FROM _reel_kv", "SQLITE_AUTH"),
        ("DROP TABLE _reel_dead_letters", "SQLITE_AUTH"),
        ("CREATE TRIGGER t AFTER INSERT ON _reel_kv BEGIN SELECT 1; END", "SQLITE_AUTH"),
        ("PRAGMA journal_mode = DELETE", "reel:refused"),
        ("ATTACH DATABASE '/tmp/other.db' AS other", "reel:refused"),
        ("COMMIT", "reel:refused"),
        ("BEGIN", "reel:refused"),
        ("SAVEPOINT s", "reel:refused"),
        ("SELECT * FROM pragma_table_info('_reel_kv')", "SQLITE_AUTH"),
        ("SELECT 1; SELECT 2", "reel:refused"),
    ];
    for (statement, code) in refused {
        w.begin().unwrap();
        let error = w.sql_query(statement, vec![]).unwrap().unwrap_err();
        assert_eq!(error.code, code, "{statement}: {error:?}");
        w.rollback().unwrap();
    }
    // ATTACH through a nested expression is stopped by the authorizer too.
    w.begin().unwrap();
    w.sql_execute("CREATE TABLE mine (a)", vec![]).unwrap();
    let error = w.sql_query("SELECT * FROM mine WHERE a IN (SELECT value FROM _reel_kv)", vec![]).unwrap().unwrap_err();
    assert_eq!(error.code, "SQLITE_AUTH");
    w.rollback().unwrap();
    // The events file is nowhere near: only the namespace file exists here.
    let files: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(files.iter().all(|f| f.starts_with("p@1.db") || f == "reel.db"), "{files:?}");
    assert!(!std::path::Path::new("/tmp/other.db").exists());
    // And the checkpoint is untouched.
    assert_eq!(w.namespace().checkpoint().unwrap().cursor, at(0));
}

#[test]
fn the_checkpoint_moves_only_from_where_it_is() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    w.commit(at(0), at(10)).unwrap();
    w.begin().unwrap();
    w.kv_set("k".into(), b"v".to_vec()).unwrap();
    let error = w.commit(at(5), at(20)).unwrap_err();
    assert!(
        matches!(error, StoreError::Fenced { expected, found: Some(found) } if expected == at(5) && found == at(10)),
        "{error:?}"
    );
    w.rollback().unwrap();
    let mut r = reader(&store);
    r.begin().unwrap();
    assert_eq!(r.kv_get("k").unwrap(), None, "a fenced batch commits nothing");
}

#[test]
fn limits_and_read_only_mode_are_enforced() {
    let (store, _dir) = store();
    let limits = Limits { kv_value_bytes: 16, kv_key_bytes: 8, query_rows: 3, ..Limits::default() };
    let mut w = writer(&store, limits);
    w.begin().unwrap();
    let too_big = w.kv_set("k".into(), vec![0; 17]).unwrap_err();
    assert_eq!(too_big.to_string(), "kv value of 17 bytes for key `k` is over the 16-byte limit");
    assert!(matches!(w.take_fault(), Some(Fault::Refused(_))));
    let long_key = w.kv_set("123456789".into(), vec![]).unwrap_err();
    assert_eq!(long_key.to_string(), "kv key of 9 bytes is over the 8-byte limit");
    let nul = w.kv_set("a\0b".into(), vec![]).unwrap_err();
    assert_eq!(nul.to_string(), "kv key `a\\u{0}b` contains a NUL character");
    assert!(matches!(w.take_fault(), Some(Fault::Refused(_))));
    assert!(w.kv_get("a\0b").is_err());
    assert!(w.kv_scan("\0", None, 1).is_err());
    let rows = w
        .sql_query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT i FROM n",
            vec![],
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(rows.code, "reel:limit");
    assert_eq!(rows.message, "query returned more than 3 rows (the row limit)");
    w.rollback().unwrap();
    w.begin().unwrap();
    w.commit(at(0), at(1)).unwrap();

    let mut r = reader(&store);
    r.begin().unwrap();
    let error = r.kv_set("k".into(), vec![]).unwrap_err();
    assert_eq!(error.to_string(), "kv.set is not allowed in a query: reads are read-only");
    assert!(r.sql_execute("CREATE TABLE x (a)", vec![]).is_err());
    let error = r.sql_query("CREATE TABLE x (a)", vec![]).unwrap().unwrap_err();
    assert!(error.message.contains("read-only"), "{error:?}");
}

#[test]
fn the_write_ahead_log_stays_bounded_without_checkpoints_in_the_commit() {
    let (store, dir) = store();
    let wal = dir.path().join(format!("{}.db-wal", NamespaceId::new("p", "1").slug()));
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let mut w = writer(&store, Limits::default());
    let value = vec![7u8; 64 << 10];
    let mut batch = 0i64;
    let mut write_mib = |w: &mut Capabilities, mib: i64| {
        for _ in 0..mib {
            w.begin().unwrap();
            for i in 0..16 {
                w.kv_set(format!("k/{batch}/{i}"), value.clone()).unwrap();
            }
            w.commit(at(batch), at(batch + 1)).unwrap();
            batch += 1;
        }
    };
    // Past 16 MiB the writer asks the checkpoint thread, which copies the
    // WAL into the database file while the writer is idle: no commit of its
    // own checkpoints below 256 MiB.
    let file = dir.path().join(format!("{}.db", NamespaceId::new("p", "1").slug()));
    write_mib(&mut w, 24);
    // Nothing checkpoints below 16 MiB (the thread may start the WAL over
    // once past it).
    let background = reel::testing::wal::BACKGROUND_PAGES as u64 * 16_384;
    assert!(wal_size() >= background, "the commits do not checkpoint: {} bytes", wal_size());
    let waited = std::time::Instant::now();
    while std::fs::metadata(&file).unwrap().len() < 24 << 20 {
        assert!(waited.elapsed() < std::time::Duration::from_secs(30), "nothing checkpointed the WAL");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Back-to-back commits may leave the thread no moment to finish: the
    // writer then finishes the checkpoint itself, past 256 MiB.
    write_mib(&mut w, 296);
    let bound = (reel::testing::wal::FOREGROUND_PAGES as u64) * 16_384 + (4 << 20);
    assert!(wal_size() <= bound, "the WAL grew to {} MiB", wal_size() >> 20);
    drop(w);
    let mut r = reader(&store);
    r.begin().unwrap();
    assert_eq!(r.kv_get("k/319/15").unwrap(), Some(value));
    assert_eq!(r.kv_scan("k/", None, 10_000).unwrap().len(), 320 * 16);
    assert_eq!(r.namespace().checkpoint().unwrap().cursor, at(320));
    drop(r);
    // The namespace can be dropped and made again at once: the checkpoint
    // thread's connection is closed with the writer's.
    let ns = NamespaceId::new("p", "1");
    store.drop_namespace(&ns).unwrap();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    assert_eq!(w.kv_get("k/0/0").unwrap(), None);
}

#[test]
fn a_projections_sql_cannot_make_a_value_past_the_limit_in_reels_memory() {
    // SQLite builds values in reel's process, outside the module's memory
    // cap: 900 MB here before SQLITE_LIMIT_LENGTH bounded them (issue 21).
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    let rows = w.sql_query("SELECT length(zeroblob(1000000))", vec![]).unwrap().unwrap();
    assert_eq!(rows.rows, vec![vec![Value::Integer(1_000_000)]], "a value under the limit is fine");
    w.sql_execute("CREATE VIEW huge AS SELECT zeroblob(900000000) AS b", vec![]).unwrap();
    w.kv_set("big".into(), vec![1; 1 << 20]).unwrap();
    w.commit(at(0), at(1)).unwrap();
    w.begin().unwrap();
    let error = w.sql_query("SELECT length(zeroblob(900000000))", vec![]).unwrap().unwrap_err();
    assert_eq!(error.code, "reel:limit");
    assert_eq!(error.message, "a string or blob over the 16 MiB limit on SQL values (sql-value-mib)");
    w.rollback().unwrap();

    let mut r = reader(&store);
    r.begin().unwrap();
    let error = r.sql_query("SELECT length(b) FROM huge", vec![]).unwrap().unwrap_err();
    assert_eq!(error.code, "reel:limit", "a query export too: {error:?}");
    let read = reel::testing::TableRead { table: "huge".into(), limit: 10, ..reel::testing::TableRead::default() };
    let error = r.namespace().read_table(&read).unwrap_err();
    assert!(matches!(error, StoreError::Limit(_)), "a table read over HTTP too: {error:?}");
    assert_eq!(r.kv_get("big").unwrap().map(|v| v.len()), Some(1 << 20), "reel's own values are not bounded");
}

#[test]
fn fts3_tokenizer_is_refused() {
    let (store, _dir) = store();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    let error = w.sql_query("SELECT fts3_tokenizer('simple')", vec![]).unwrap().unwrap_err();
    assert_eq!(error.message, "not authorized to use function: fts3_tokenizer", "{error:?}");
}

#[test]
fn a_projection_stops_at_its_storage_quota_and_the_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let bounds: reel::testing::BoundsFor = std::sync::Arc::new(|name| {
        let limits = Limits::default();
        let storage_bytes = if name == "small" { 2 << 20 } else { limits.storage_bytes };
        reel::testing::SqlBounds { storage_bytes, ..reel::testing::SqlBounds::of(&limits) }
    });
    let store = Store::new(SqliteStore::new(dir.path()).unwrap().with_bounds(bounds));
    let filler = "INSERT INTO filler SELECT zeroblob(500000) FROM (SELECT 1 UNION ALL SELECT 2)";
    for name in ["small", "other"] {
        let mut w = writer_of(&store, name, Limits::default());
        w.begin().unwrap();
        w.sql_execute("CREATE TABLE filler (b BLOB)", vec![]).unwrap();
        w.commit(at(0), at(1)).unwrap();
        let mut written = 0;
        let error = (2..12).find_map(|i| {
            w.begin().unwrap();
            w.sql_execute(filler, vec![]).unwrap();
            match w.commit(at(i - 1), at(i)) {
                Ok(()) => {
                    written += 1;
                    None
                }
                Err(e) => {
                    w.rollback().unwrap();
                    Some(e)
                }
            }
        });
        if name == "other" {
            assert!(error.is_none(), "other projections write on: {error:?}");
            assert_eq!(written, 10);
            continue;
        }
        let error = error.expect("the quota stops the writes");
        assert!(written < 3, "about 2 MiB went in: {written} batches of 1 MB");
        assert!(matches!(error, StoreError::Limit(_)), "the projection's doing, not an outage: {error:?}");
        assert!(error.to_string().starts_with("storage quota of 2 MiB reached (storage-mib)"), "{error}");
        // reel's own writes (KV) are held to it too, as the projection's.
        w.begin().unwrap();
        for k in 0..4 {
            w.kv_set(format!("k{k}"), vec![1; 1 << 20]).unwrap();
        }
        let error = w.commit(at(1 + written), at(2 + written)).unwrap_err();
        assert!(error.to_string().starts_with("storage quota of 2 MiB reached"), "{error}");
        w.rollback().unwrap();
    }
    let size =
        std::fs::metadata(dir.path().join(format!("{}.db", NamespaceId::new("small", "1").slug()))).unwrap().len();
    assert!(size <= 2 << 20, "the file stays within its quota: {size} bytes");
}
