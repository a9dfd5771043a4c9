//! The checks of a torture run, made while no reel runs: the log as stored
//! (every stream's versions contiguous, each generated event once), and each
//! read model at its committed checkpoint equal to the fold of the log up to
//! that checkpoint: `order-summaries` and `customer-stats` (the examples),
//! `echo` (every position once, none twice) and the `relay` reactor (one
//! emission per `order.placed` it handled, none doubled).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reel::model::Cursor;
use reel::testing::workload::{OrderEvent, StoredEvent, fold};
use reel::testing::{PgSource, PgStore, SqliteStore, Store, TableRead};
use serde_json::Value;

/// The module files a torture run deploys, and the names they serve as.
pub const MODULES: [&str; 4] = ["order_summaries", "customer_stats", "fixture_echo_a", "fixture_relay"];
pub const NAMES: [&str; 4] = ["order-summaries", "customer-stats", "echo", "relay"];

/// One event of the log, in delivery order.
pub struct Logged {
    pub cursor: Cursor,
    pub stream_id: String,
    pub version: i64,
    pub stored: StoredEvent,
}

/// Where the run's log and read models are, and what has been read of them.
pub struct World {
    data: PathBuf,
    database: Option<String>,
    rt: tokio::runtime::Runtime,
    store: Option<Store>,
    /// Kept open for the store's pool.
    _source: Option<PgSource>,
    /// The log read so far, in delivery order (read on while no reel runs,
    /// when no transaction can be in flight).
    pub log: Vec<Logged>,
    stored: Vec<StoredEvent>,
}

/// A read model at its checkpoint.
struct Model {
    checkpoint: Cursor,
    rows: BTreeMap<String, Value>,
    kv: BTreeMap<String, String>,
}

impl World {
    pub fn new(data: &Path, database: Option<&str>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        Self {
            data: data.to_owned(),
            database: database.map(str::to_owned),
            rt,
            store: None,
            _source: None,
            log: Vec::new(),
            stored: Vec::new(),
        }
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    fn store(&mut self) -> &Store {
        if self.store.is_none() {
            let store = match &self.database {
                None => Store::new(SqliteStore::new(&self.data.join("projections")).unwrap()),
                Some(url) => {
                    let source = self.rt.block_on(PgSource::open(url)).unwrap();
                    let store = PgStore::new(source.config().clone(), source.pool().clone(), self.rt.handle().clone());
                    self._source = Some(source);
                    Store::new(store)
                }
            };
            self.store = Some(store);
        }
        self.store.as_ref().unwrap()
    }

    /// Read the events appended since the last call (no reel may run).
    pub fn read_log(&mut self) {
        let after = self.log.last().map_or(Cursor::START, |l| l.cursor);
        let new: Vec<Logged> = match &self.database {
            None => {
                let conn = rusqlite::Connection::open(self.data.join("events.db")).unwrap();
                let mut stmt = conn
                    .prepare(
                        "SELECT id, stream_id, version, event_type, data, occurred_at FROM events \
                         WHERE id > ?1 ORDER BY id",
                    )
                    .unwrap();
                stmt.query_map([after.id], |r| {
                    Ok(Logged {
                        cursor: Cursor { tx: 0, id: r.get(0)? },
                        stream_id: r.get(1)?,
                        version: r.get(2)?,
                        stored: StoredEvent { event_type: r.get(3)?, data: r.get(4)?, occurred_at: r.get(5)? },
                    })
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Some(url) => self.rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                let rows = client
                    .query(
                        "SELECT transaction_id::text::bigint, id, stream_id, version::bigint, event_type, data::text, \
                         (extract(epoch FROM occurred_at) * 1000000)::bigint FROM events \
                         WHERE (transaction_id::text::bigint, id) > ($1, $2) ORDER BY transaction_id, id",
                        &[&after.tx, &after.id],
                    )
                    .await
                    .unwrap();
                rows.iter()
                    .map(|r| Logged {
                        cursor: Cursor { tx: r.get(0), id: r.get(1) },
                        stream_id: r.get(2),
                        version: r.get(3),
                        stored: StoredEvent {
                            event_type: r.get(4),
                            data: r.get(5),
                            occurred_at: reel::model::time::format_micros(r.get(6)),
                        },
                    })
                    .collect()
            }),
        };
        self.stored.extend(new.iter().map(|l| l.stored.clone()));
        self.log.extend(new);
    }

    /// How many events of the log are at or before `cursor`.
    fn upto(&self, cursor: Cursor) -> usize {
        self.log.partition_point(|l| l.cursor <= cursor)
    }

    /// A projection's committed checkpoint and read model; `None` before
    /// its first deployment was made active.
    fn model(&mut self, name: &str) -> Option<Model> {
        let store = self.store();
        let ns = store.active_namespaces().unwrap().into_iter().find(|ns| ns.name == name)?;
        let mut reader = store.open_reader(&ns, Duration::from_secs(300)).unwrap()?;
        reader.begin().unwrap();
        let checkpoint = reader.checkpoint().unwrap().cursor;
        let mut rows = BTreeMap::new();
        if name == "order-summaries" && reader.tables().unwrap().iter().any(|t| t == "order_summaries") {
            let read = TableRead { table: "order_summaries".into(), limit: 100_000_000, ..TableRead::default() };
            let table = reader.read_table(&read).unwrap();
            for row in table.iter() {
                let row = row.to_json();
                rows.insert(row["order_id"].as_str().unwrap().to_owned(), row);
            }
        }
        let kv = reader
            .kv_scan("", None, 100_000_000)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        reader.rollback().unwrap();
        Some(Model { checkpoint, rows, kv })
    }

    /// Every check, on the log as read so far; `complete`: every read model
    /// must have handled the whole log and every emission be in it. Returns
    /// how many events of the log each model's checkpoint covers (0 before
    /// it is deployed).
    pub fn check(&mut self, complete: bool) -> BTreeMap<&'static str, usize> {
        self.check_log();
        let mut reached = BTreeMap::new();
        let mut folds = BTreeMap::new();
        for name in NAMES {
            let Some(model) = self.model(name) else {
                assert!(!complete, "{name} was never deployed");
                reached.insert(name, 0);
                continue;
            };
            // Complete: it has handled the whole log. (Its checkpoint may
            // stop short of the head by events it does not subscribe to:
            // moving past those is saved only now and then.)
            let upto = if complete { self.log.len() } else { self.upto(model.checkpoint) };
            let prefix = &self.stored[..upto];
            match name {
                "order-summaries" => {
                    let folded = folds.entry(upto).or_insert_with(|| fold(prefix));
                    let expected = super::common::expected_rows(folded);
                    assert!(
                        model.rows == expected,
                        "{name} at {upto} events differs from the fold: {}",
                        diff(&model.rows, &expected)
                    );
                }
                "customer-stats" => {
                    let folded = folds.entry(upto).or_insert_with(|| fold(prefix));
                    let expected = &folded.customers;
                    // Beside `customer/`, it keeps each order's total under `order/`.
                    let got: BTreeMap<String, String> =
                        model.kv.into_iter().filter(|(k, _)| k.starts_with("customer/")).collect();
                    assert!(
                        &got == expected,
                        "{name} at {upto} events differs from the fold: {}",
                        diff(&got, expected)
                    );
                }
                "echo" => self.check_echo(&model, upto),
                "relay" => self.check_relay(&model, upto, complete),
                _ => unreachable!(),
            }
            reached.insert(name, upto);
        }
        reached
    }

    /// Per stream, versions 1, 2, ... in delivery order: nothing doubled,
    /// lost in the middle or reordered.
    fn check_log(&self) {
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for l in &self.log {
            let previous = last.insert(l.stream_id.as_str(), l.version).unwrap_or(0);
            assert_eq!(l.version, previous + 1, "stream {} goes from version {previous} to {}", l.stream_id, l.version);
        }
    }

    /// Each of `events` in the log exactly once, as generated.
    pub fn check_appended(&self, events: &[OrderEvent]) {
        let logged: BTreeMap<(&str, i64), &Logged> =
            self.log.iter().map(|l| ((l.stream_id.as_str(), l.version), l)).collect();
        for e in events {
            let l = logged.get(&(e.stream_id.as_str(), e.version));
            let l = l.unwrap_or_else(|| panic!("{} version {} is not in the log", e.stream_id, e.version));
            assert_eq!(l.stored.event_type, e.event_type);
            assert_eq!(
                serde_json::from_str::<Value>(&l.stored.data).unwrap(),
                e.data,
                "{} version {}",
                e.stream_id,
                e.version
            );
        }
    }

    /// `echo` saw every position up to its checkpoint, and none twice.
    fn check_echo(&self, model: &Model, upto: usize) {
        let seen: BTreeSet<i64> =
            model.kv.keys().filter_map(|k| k.strip_prefix("seen/")).map(|p| p.parse().unwrap()).collect();
        let expected: BTreeSet<i64> = self.log[..upto].iter().map(|l| l.cursor.id).collect();
        assert!(seen == expected, "echo at {upto} events: {}", diff_sets(&seen, &expected));
        let doubled: Vec<&String> = model.kv.keys().filter(|k| k.starts_with("duplicate/")).collect();
        assert!(doubled.is_empty(), "echo applied events twice: {doubled:?}");
    }

    /// `relay` handled every `order.placed` up to its checkpoint once, and
    /// the log holds at most one emission per cause (all of them once it
    /// is `complete`).
    fn check_relay(&self, model: &Model, upto: usize, complete: bool) {
        let seen: BTreeSet<i64> =
            model.kv.keys().filter_map(|k| k.strip_prefix("seen/")).map(|p| p.parse().unwrap()).collect();
        let placed: BTreeSet<i64> =
            self.log[..upto].iter().filter(|l| l.stored.event_type == "order.placed").map(|l| l.cursor.id).collect();
        assert!(seen == placed, "relay at {upto} events: {}", diff_sets(&seen, &placed));
        let mut emitted = BTreeSet::new();
        for l in self.log.iter().filter(|l| l.stored.event_type == "relay.relayed") {
            let from = serde_json::from_str::<Value>(&l.stored.data).unwrap()["from"].as_i64().unwrap();
            assert!(emitted.insert(from), "relay emitted twice for event {from}");
        }
        // Emissions reach the log after the batch that made them committed.
        let stray: Vec<&i64> = emitted.difference(&placed).collect();
        assert!(stray.is_empty(), "relay emitted for events past its checkpoint: {stray:?}");
        if complete {
            assert!(emitted == placed, "relay's emissions: {}", diff_sets(&emitted, &placed));
        }
    }
}

fn diff<V: PartialEq + std::fmt::Debug>(got: &BTreeMap<String, V>, expected: &BTreeMap<String, V>) -> String {
    let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    let differ: Vec<String> = got
        .iter()
        .filter(|(k, v)| expected.get(*k).is_some_and(|e| e != *v))
        .take(3)
        .map(|(k, v)| format!("{k}: {v:?} (fold: {:?})", expected[k]))
        .collect();
    format!("{} rows, fold {}; missing {missing:?}, extra {extra:?}, differing {differ:?}", got.len(), expected.len())
}

fn diff_sets(got: &BTreeSet<i64>, expected: &BTreeSet<i64>) -> String {
    let missing: Vec<&i64> = expected.difference(got).take(10).collect();
    let extra: Vec<&i64> = got.difference(expected).take(10).collect();
    format!("{} seen, {} expected; missing {missing:?}, extra {extra:?}", got.len(), expected.len())
}
