//! Captured read-model changes (ADR 28): what a batch did to each KV key and
//! table row, as the change feed hands it out. Each backend captures them in
//! the batch's transaction (triggers record the keys a batch touched; the
//! commit writes, per key, what the batch left) and reads them back here.

use std::time::{Duration, Instant};

use reel_model::Cursor;
use reel_model::time::now_micros;

use super::StoreError;

/// What a batch did to one key: the batch's net effect, so a key a batch
/// inserted and deleted again is not there at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its place in the namespace's change history (increasing, not dense).
    pub seq: i64,
    /// The batch that made it: the cursor of the batch's last event.
    pub cursor: Cursor,
    /// `insert`, `update`, `delete` (table rows), `set`, `unset` (KV keys).
    pub kind: String,
    /// The table (`None` for a KV key).
    pub table: Option<String>,
    /// A KV key; for a row, its primary key as a JSON object.
    pub key: String,
    /// The whole new row as a JSON object (inserts and updates).
    pub row: Option<String>,
    /// The new KV value (sets).
    pub value: Option<Vec<u8>>,
}

/// A page of a namespace's change history.
#[derive(Debug, Clone, Default)]
pub struct ChangePage {
    /// Changes after the asked-for point, oldest first.
    pub changes: Vec<Change>,
    /// Changes up to this seq were dropped by the retention window: a
    /// resume point before it cannot be served.
    pub pruned_through: i64,
    /// The last seq of the history (what a client reading the read model
    /// now resumes after).
    pub last: i64,
    /// Where the history starts (ADR 30).
    pub start: HistoryStart,
}

/// Where a namespace's change history starts (ADR 30): capture starts when
/// the version first reaches the head of the log, and notes in its history
/// whether the read model was empty then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HistoryStart {
    /// Capture has not started: the version is catching up. Nothing of its
    /// read model can be handed out as changes yet.
    #[default]
    NotYet,
    /// The history holds every change from the empty read model (capture
    /// started before the version wrote anything, and nothing is pruned).
    Empty,
    /// The history starts after this seq, on a read model that was not
    /// empty (or the window pruned its beginning): a client needs a
    /// snapshot first.
    After(i64),
}

/// The marker a namespace's history starts with (ADR 30), in `kind`; its
/// `key` says whether the read model was empty then.
pub const START: &str = "start";
/// The marker's `key` when the read model was empty at the start.
pub const START_EMPTY: &str = "empty";

impl HistoryStart {
    /// From the history's first row (`kind`, `key`, `seq`) and how far it
    /// is pruned.
    pub fn of(first: Option<(i64, &str, &str)>, pruned_through: i64) -> Self {
        match first {
            _ if pruned_through > 0 => Self::After(pruned_through),
            None => Self::NotYet,
            Some((_, START, START_EMPTY)) => Self::Empty,
            Some((seq, START, _)) => Self::After(seq),
            // A history from before ADR 30 started with the namespace.
            Some(_) => Self::Empty,
        }
    }
}

/// Where a snapshot streamed as changes stands (ADR 30): the rows of every
/// table up to a key are sent, and the history's changes up to `at`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotAt {
    /// The history's last seq when the snapshot began: a row changed after
    /// it reaches the client as that change, never as a snapshot row.
    pub from: i64,
    /// The history's changes are sent through this seq.
    pub at: i64,
    /// The table being sent (`""`: the KV entries, which go first; then
    /// the tables in byte order of their names).
    pub table: String,
    /// The last key of `table` sent, in the backend's own encoding
    /// (`None`: none of it yet).
    pub key: Option<String>,
}

impl SnapshotAt {
    /// The start of a snapshot taken when the history ends at `last`.
    pub fn begin(last: i64) -> Self {
        Self { from: last, at: last, table: String::new(), key: None }
    }
}

/// One step of a snapshot, read in one read transaction.
#[derive(Debug, Clone, Default)]
pub struct SnapshotStep {
    /// In order: the history's changes after the step's start, then rows
    /// of the read model as `insert`s (KV entries as `set`s), each with the
    /// point after it.
    pub items: Vec<(Change, SnapshotAt)>,
    /// Where the snapshot stands after the step; `None`: every row is sent,
    /// and the history goes on after `at`.
    pub next: Option<SnapshotAt>,
    /// The history's changes through `at` are sent.
    pub at: i64,
    /// As in [`ChangePage`].
    pub pruned_through: i64,
    /// The applied position the step's rows are read at (`None`: it read
    /// no rows, only history). With `next` at `None`, the client's copy is
    /// the read model at this position.
    pub position: Option<Cursor>,
}

/// Reads of the change history.
pub trait ChangeReads {
    /// Changes after `after`, at most `limit`, with the history's bounds.
    /// A namespace that never captured answers an empty page.
    fn changes(&mut self, after: i64, limit: usize) -> Result<ChangePage, StoreError>;

    /// The next step of the snapshot at `at`, in one read transaction (ADR
    /// 30): the history's changes after `at.at` (at most `limit`); if that
    /// reached the history's end, up to `limit` rows of the read model after
    /// `at`'s key, less those changed since the snapshot began (their
    /// changes are sent instead).
    fn snapshot(&mut self, at: &SnapshotAt, limit: usize) -> Result<SnapshotStep, StoreError>;
}

/// A writer's capture, on when the projection's changes are captured.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// How long changes are kept.
    pub retention: Duration,
    /// When old changes were last pruned.
    pruned_at: Instant,
    /// Capture has started (ADR 30): the version reached the head of the
    /// log once. Before, its batches (a catch-up) note and write nothing.
    pub started: bool,
}

impl Capture {
    /// How often old changes are looked for past the retention window.
    const PRUNE_EVERY: Duration = Duration::from_secs(1);

    /// Capture keeping changes for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self { retention, pruned_at: Instant::now(), started: false }
    }

    /// At a commit: the time (Unix microseconds) before which changes are
    /// to be dropped now, if it is time to look.
    pub fn prune_before(&mut self) -> Option<i64> {
        if self.pruned_at.elapsed() < Self::PRUNE_EVERY {
            return None;
        }
        self.pruned_at = Instant::now();
        Some(now_micros() - i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX))
    }
}

/// Whether a projection statement changes the schema (`CREATE`, `ALTER`,
/// `DROP`): after one, capture looks for tables to watch.
pub fn is_ddl(statement: &str) -> bool {
    let mut text = statement.trim_start();
    // Leading comments.
    loop {
        if let Some(rest) = text.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = text.strip_prefix("/*") {
            text = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            break;
        }
    }
    let word: String = text.chars().take_while(char::is_ascii_alphabetic).collect();
    ["create", "alter", "drop"].iter().any(|w| word.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::is_ddl;

    #[test]
    fn schema_changes_are_told_from_writes() {
        assert!(is_ddl("CREATE TABLE IF NOT EXISTS t (id TEXT PRIMARY KEY)"));
        assert!(is_ddl("  -- the orders\n /* x */ create index i on t (a)"));
        assert!(is_ddl("ALTER TABLE t ADD COLUMN b"));
        assert!(!is_ddl("INSERT INTO created (a) VALUES (1)"));
        assert!(!is_ddl("UPDATE t SET a = 1"));
    }
}
