//! Tier 1: the host capabilities a projection imports, called directly (no
//! guest), over a real SQLite namespace.

use reel::config::Limits;
use reel::host::caps::Fault;
use reel::host::{Capabilities, Mode};
use reel::source::Cursor;
use reel::store::sqlite::SqliteStore;
use reel::store::{NamespaceId, Store, StoreError, Value};
use tempfile::TempDir;

fn store() -> (Store, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::Sqlite(SqliteStore::new(dir.path()).unwrap()), dir)
}

fn writer(store: &Store, limits: Limits) -> Capabilities {
    let ns = NamespaceId::new("p", "1");
    Capabilities::new("p", store.open_writer(&ns, std::time::Duration::from_secs(10)).unwrap(), limits, Mode::Write)
        .unwrap()
}

fn reader(store: &Store) -> Capabilities {
    let ns = NamespaceId::new("p", "1");
    Capabilities::new(
        "p",
        store.open_reader(&ns, std::time::Duration::from_secs(10)).unwrap().unwrap(),
        Limits::default(),
        Mode::Read,
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
    let mut w = writer(&store, Limits::default());
    // 96 MiB of distinct values, 1 MiB per commit: without checkpoints the
    // WAL would hold all of it. A background checkpoint starts past 16 MiB
    // and the WAL restarts from its beginning once one has completed.
    let value = vec![7u8; 64 << 10];
    let mut largest = 0;
    for batch in 0..96i64 {
        w.begin().unwrap();
        for i in 0..16 {
            w.kv_set(format!("k/{batch}/{i}"), value.clone()).unwrap();
        }
        w.commit(at(batch), at(batch + 1)).unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        // Give the checkpoint thread a chance on a busy machine.
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(largest < 64 << 20, "the WAL grew to {} MiB", largest >> 20);
    drop(w);
    let mut r = reader(&store);
    r.begin().unwrap();
    assert_eq!(r.kv_get("k/95/15").unwrap(), Some(value));
    assert_eq!(r.kv_scan("k/", None, 10_000).unwrap().len(), 96 * 16);
    assert_eq!(r.namespace().checkpoint().unwrap().cursor, at(96));
    drop(r);
    // The namespace can be dropped and made again at once: the checkpoint
    // thread's connection is closed with the writer's.
    let ns = NamespaceId::new("p", "1");
    store.drop_namespace(&ns).unwrap();
    let mut w = writer(&store, Limits::default());
    w.begin().unwrap();
    assert_eq!(w.kv_get("k/0/0").unwrap(), None);
}
