//! Tier 1: a read model's checksum (ADR 37), over namespaces written
//! directly (no guest): the same rows and KV entries, written in another
//! order through each backend's own DDL, give the same checksum on SQLite
//! and PostgreSQL; any one value changed gives another. The four languages'
//! read models over HTTP: `languages.rs`.

mod common;

use std::time::Duration;

use reel::config::Limits;
use reel::model::{Cursor, Value};
use reel::testing::{Access, Capabilities, Checksum, NamespaceId, ReadModelSum, Store};
use reel::testing::{PgSource, PgStore, SqliteStore};

/// The checksum of the read model below, on either backend. A change of
/// the encoding (ADR 37) changes it: checksums taken before no longer compare.
const PINNED: &str = "sha256:46fce06356590c7b1f52f2fdb1cfcf77354e8e44f89f033956dc766b6bc3de68";

/// A row of `orders`: id, customer, item count, total, tracking number, raw
/// bytes, shipped flag.
fn orders() -> Vec<Vec<Value>> {
    let text = |s: &str| Value::Text(s.to_owned());
    vec![
        vec![
            text("o-1"),
            text("c-ümlaut-😀"),
            Value::Integer(2),
            Value::Real(0.1 + 0.2),
            Value::Null,
            Value::Blob(vec![0, 1, 255]),
            Value::Integer(0),
        ],
        vec![
            text("o-2"),
            text("c-\"quoted\"\t"),
            Value::Integer(-7),
            Value::Real(12.0),
            text("T2"),
            Value::Blob(vec![]),
            Value::Integer(1),
        ],
        vec![
            text("O-3"),
            text("c-back\\slash"),
            Value::Integer(i64::MAX),
            Value::Real(1e-7),
            text(""),
            Value::Null,
            Value::Integer(1),
        ],
    ]
}

/// Write the read model into namespace `name` of `store` (columns, rows and
/// keys in reverse order if `reversed`; one value changed if `change`),
/// checkpoint at 42; its checksum.
fn build(store: &Store, name: &str, reversed: bool, change: Option<(usize, usize, Value)>) -> ReadModelSum {
    let ns = NamespaceId::new(name, "1");
    let writer = store.open_writer(&ns, Duration::from_secs(10)).unwrap();
    let mut w = Capabilities::new(name, Access::Write(writer), Limits::default()).unwrap();
    w.begin().unwrap();
    let blob = if w.sql_dialect() == "postgres" { "BYTEA" } else { "BLOB" };
    // Columns in another order than the rows below, on one of the two.
    let columns = if reversed {
        format!(
            "shipped BOOLEAN NOT NULL, raw {blob}, tracking TEXT, total DOUBLE PRECISION NOT NULL, \
             items BIGINT NOT NULL, customer TEXT NOT NULL, id TEXT PRIMARY KEY"
        )
    } else {
        format!(
            "id TEXT PRIMARY KEY, customer TEXT NOT NULL, items BIGINT NOT NULL, total DOUBLE PRECISION NOT NULL, \
             tracking TEXT, raw {blob}, shipped BOOLEAN NOT NULL"
        )
    };
    w.sql_execute(&format!("CREATE TABLE orders ({columns})"), vec![]).unwrap();
    w.sql_execute("CREATE TABLE log (line TEXT)", vec![]).unwrap();
    w.sql_execute("CREATE VIEW shipped AS SELECT id FROM orders WHERE tracking IS NOT NULL", vec![]).unwrap();
    let mut rows = orders();
    if let Some((row, column, value)) = change {
        rows[row][column] = value;
    }
    let mut lines = vec!["same", "same", "other"];
    let mut keys = vec![("customer/c-1", &b"{\"orders\":2}"[..]), ("order/o-1", b"\x00\xff"), ("a", b"")];
    if reversed {
        rows.reverse();
        lines.reverse();
        keys.reverse();
    }
    for row in rows {
        let insert = "INSERT INTO orders (id, customer, items, total, tracking, raw, shipped) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7)";
        w.sql_execute(insert, row).unwrap();
    }
    for line in lines {
        w.sql_execute("INSERT INTO log (line) VALUES ($1)", vec![Value::Text(line.into())]).unwrap();
    }
    for (key, value) in keys {
        w.kv_set(key.into(), value.to_vec()).unwrap();
    }
    w.commit(Cursor::START, Cursor { tx: 0, id: 42 }).unwrap();
    let mut reader = store.open_reader(&ns, Duration::from_secs(10)).unwrap().unwrap();
    let mut sum = Checksum::default();
    reader.dump(&mut sum).unwrap();
    sum.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_read_model_has_the_same_checksum_on_both_backends_and_any_change_shows() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::new(SqliteStore::new(dir.path()).unwrap());
    let url = common::create_database().await;
    let source = PgSource::open(&url).await.unwrap();
    let postgres =
        Store::new(PgStore::new(source.config().clone(), source.pool().clone(), tokio::runtime::Handle::current()));

    let (on_sqlite, on_postgres) =
        tokio::task::block_in_place(|| (build(&sqlite, "p", false, None), build(&postgres, "p", true, None)));
    assert_eq!(on_sqlite, on_postgres, "one read model, two backends");
    assert_eq!(on_sqlite.position, 42);
    let parts: Vec<(&str, u64)> = on_sqlite.tables.iter().map(|t| (t.name.as_str(), t.rows)).collect();
    assert_eq!(parts, [("log", 3), ("orders", 3)], "tables by name, views left out");
    assert_eq!(on_sqlite.kv.entries, 3);
    assert_eq!(on_sqlite.checksum, PINNED);

    // One value changed, on either backend: that table's checksum and the
    // whole's change, nothing else does.
    let changes = [
        (0, 3, Value::Real(0.3)),
        (1, 4, Value::Text("T3".into())),
        (2, 4, Value::Null),
        (1, 5, Value::Blob(vec![0])),
        (0, 6, Value::Integer(1)),
    ];
    for (store, reversed) in [(&sqlite, false), (&postgres, true)] {
        for (i, change) in changes.iter().enumerate() {
            let changed =
                tokio::task::block_in_place(|| build(store, &format!("changed-{i}"), reversed, Some(change.clone())));
            assert_ne!(changed.checksum, on_sqlite.checksum, "{change:?}");
            assert_ne!(changed.tables[1].checksum, on_sqlite.tables[1].checksum, "{change:?}");
            assert_eq!(changed.tables[0], on_sqlite.tables[0], "{change:?}");
            assert_eq!(changed.kv, on_sqlite.kv, "{change:?}");
        }
    }
    drop((postgres, source));
    common::drop_database(&url).await;
}
