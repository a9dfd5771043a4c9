//! Reads of a projection's change history (ADR 28), for the change feed:
//! a page after a resume point, from the serving version's namespace,
//! saying when that is another namespace than the point's (a cut-over);
//! for a client that needs the read model from empty, the history from its
//! first change when it holds them all, else a snapshot streamed as
//! changes a step at a time, then the history after it (ADR 30).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reel_model::Cursor;

use super::{ReadError, Reads};
use crate::store::{Change, HistoryStart, NamespaceId, SnapshotAt};

/// Where a change-feed client is: after `seq` in namespace `slug`, or
/// somewhere in a snapshot of it (ADR 30).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePoint {
    /// The namespace's slug ([`NamespaceId::slug`]).
    pub slug: String,
    /// The last change the client had (0: none).
    pub seq: i64,
    /// Where its snapshot stands, if it is in one.
    pub snapshot: Option<SnapshotAt>,
}

impl ChangePoint {
    /// The point before every change of `ns`.
    pub fn start(ns: &NamespaceId) -> Self {
        Self { slug: ns.slug(), seq: 0, snapshot: None }
    }

    /// The resume token: `seq:slug`, or in a snapshot `s` and the point's
    /// JSON in hex, then `:slug`.
    pub fn token(&self) -> String {
        match &self.snapshot {
            None => format!("{}:{}", self.seq, self.slug),
            Some(at) => {
                let json = serde_json::to_vec(at).unwrap_or_default();
                let hex: String = json.iter().map(|b| format!("{b:02x}")).collect();
                format!("s{hex}:{}", self.slug)
            }
        }
    }

    /// Parse a [`token`](Self::token).
    pub fn parse(token: &str) -> Option<Self> {
        let (head, slug) = token.split_once(':')?;
        NamespaceId::from_slug(slug)?;
        if let Some(encoded) = head.strip_prefix('s') {
            let bytes = (0..encoded.len())
                .step_by(2)
                .map(|i| encoded.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok()))
                .collect::<Option<Vec<u8>>>()?;
            let at: SnapshotAt = serde_json::from_slice(&bytes).ok()?;
            if at.from < 0 || at.at < at.from {
                return None;
            }
            return Some(Self { slug: slug.to_owned(), seq: at.at, snapshot: Some(at) });
        }
        let seq = head.parse().ok().filter(|s: &i64| *s >= 0 && head.bytes().all(|b| b.is_ascii_digit()))?;
        Some(Self { slug: slug.to_owned(), seq, snapshot: None })
    }
}

/// What the feed sends next, read from the serving version.
#[derive(Debug, Clone)]
pub struct ChangeRead {
    /// Where the read starts: the asked-for point, or the start of the
    /// serving namespace when the point was in another (`reset`).
    pub from: ChangePoint,
    /// Send `reset` first: the client's copy is to be emptied (its point
    /// was in another namespace, the version changed or the projection
    /// was rebuilt, or before the history's start).
    pub reset: bool,
    /// The changes (and snapshot rows), each with the point after it.
    pub changes: Vec<(Change, ChangePoint)>,
    /// Where the client is once it has them all.
    pub next: ChangePoint,
    /// The history no longer holds what follows `from`: the retention
    /// window dropped it.
    pub gone: bool,
    /// The history's last seq (a client that reads the read model afresh
    /// resumes after it).
    pub last: i64,
    /// The serving version's applied position now.
    pub position: Cursor,
    /// The client's snapshot ended in this read: once it has these
    /// changes, its copy is the read model at this applied position, and
    /// what follows is the history (ADR 30).
    pub complete: Option<Cursor>,
}

/// A read of the history shared by the clients at the same point, woken
/// by the same applied position: `(slug, seq, limit, applied)`.
type HistoryKey = (String, i64, usize, Cursor);
type SharedRead = Arc<tokio::sync::OnceCell<Result<ChangeRead, String>>>;

/// The history reads in flight. The feed's clients are mostly at the same
/// point, and each commit wakes them all at once: one read serves every
/// client that asks for the same page after the same commit, instead of
/// one each (on PostgreSQL a round trip each).
#[derive(Default)]
pub(super) struct HistoryReads(Mutex<HashMap<HistoryKey, SharedRead>>);

impl ChangeRead {
    /// The point a client that reads the read model now resumes after.
    pub fn resume(&self) -> ChangePoint {
        ChangePoint { slug: self.next.slug.clone(), seq: self.last, snapshot: None }
    }
}

impl Reads {
    /// Whether `name`'s changes are captured (`--set NAME.changes=on`).
    pub fn captures_changes(&self, name: &str) -> bool {
        self.config().changes_for(name).is_some()
    }

    /// How long changes are kept.
    pub fn changes_retention(&self) -> std::time::Duration {
        self.config().changes_retention
    }

    /// Up to `limit` changes of the serving version of `name` after `after`
    /// (`None`: a client with an empty copy). A client that needs the read
    /// model from empty gets the history from its first change if it holds
    /// every change from the empty read model, else a snapshot streamed as
    /// changes, then the history after it (ADR 30).
    pub async fn changes(
        &self,
        name: &str,
        after: Option<&ChangePoint>,
        limit: usize,
    ) -> Result<ChangeRead, ReadError> {
        let (view, turn) = self.serving(name).await?;
        let slug = view.ns.slug();
        let position = view.status.snapshot().cursor;
        let same = after.filter(|p| p.slug == slug).cloned();
        // A token of another namespace: empty the copy, then from empty.
        let reset = after.is_some() && same.is_none();
        let ((changes, next, complete), gone, last, reset) = self
            .on_reader(view, turn, move |reader| {
                let page = reader.changes(same.as_ref().map_or(0, |p| p.seq), limit)?;
                let (pruned, last, start) = (page.pruned_through, page.last, page.start);
                let plan = match &same {
                    None => Plan::FromEmpty { reset },
                    // The window passed the snapshot's start: a new one.
                    Some(ChangePoint { snapshot: Some(at), .. }) if at.from < pruned => Plan::FromEmpty { reset: true },
                    Some(ChangePoint { snapshot: Some(at), .. }) => Plan::Snapshot(at.clone()),
                    Some(point) if point.seq < pruned => Plan::Gone(point.clone()),
                    // A point from before the history's start (capture
                    // started after the client's copy was made).
                    Some(point) if matches!(start, HistoryStart::After(first) if point.seq < first) => {
                        Plan::FromEmpty { reset: true }
                    }
                    Some(_) => Plan::History,
                };
                let plan = match plan {
                    Plan::FromEmpty { reset } => match start {
                        HistoryStart::NotYet | HistoryStart::Empty => {
                            let page = if same.as_ref().map_or(0, |p| p.seq) == 0 {
                                page
                            } else {
                                reader.changes(0, limit)?
                            };
                            return Ok((history_items(&slug, 0, page.changes), false, last, reset));
                        }
                        HistoryStart::After(_) => {
                            return Ok((
                                snapshot_items(&slug, reader, &SnapshotAt::begin(last), limit)?,
                                false,
                                last,
                                reset,
                            ));
                        }
                    },
                    plan => plan,
                };
                Ok(match plan {
                    Plan::Snapshot(at) => (snapshot_items(&slug, reader, &at, limit)?, false, last, false),
                    Plan::Gone(point) => ((Vec::new(), point, None), true, last, false),
                    _ => {
                        let seq = same.as_ref().map_or(0, |p| p.seq);
                        (history_items(&slug, seq, page.changes), false, last, false)
                    }
                })
            })
            .await?;
        let from = match after {
            Some(point) if !reset => point.clone(),
            _ => ChangePoint { slug: next.slug.clone(), seq: 0, snapshot: None },
        };
        Ok(ChangeRead { from, reset, changes, next, gone, last, position, complete })
    }

    /// Up to `limit` changes of the history after `after` (a point in the
    /// history, not in a snapshot), for a client that saw `applied` as the
    /// serving version's applied position when it asked: a read started
    /// since by another client at the same point, which sees every change
    /// up to `applied`, serves both. The error as text.
    pub async fn shared_history(
        &self,
        name: &str,
        after: &ChangePoint,
        limit: usize,
        applied: Cursor,
    ) -> Result<ChangeRead, String> {
        let key = (after.slug.clone(), after.seq, limit, applied);
        let reads = &self.inner.history_reads.0;
        let cell = {
            let mut reads = reads.lock().expect("history reads");
            if reads.len() >= 1024 {
                // Left by clients that went away mid-read, none waiting.
                reads.retain(|_, cell| Arc::strong_count(cell) > 1);
            }
            Arc::clone(reads.entry(key.clone()).or_default())
        };
        let read = cell
            .get_or_init(|| async {
                let read = self.changes(name, Some(after), limit).await.map_err(|e| e.to_string());
                // Done: later clients read afresh.
                let mut reads = reads.lock().expect("history reads");
                if reads.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    reads.remove(&key);
                }
                read
            })
            .await;
        read.clone()
    }

    /// Wakes when the serving version of `name` commits a batch (a
    /// cut-over replaces it: wait with a timeout).
    pub fn applied(&self, name: &str) -> Result<tokio::sync::watch::Receiver<Cursor>, ReadError> {
        Ok(self.view(name)?.status.applied())
    }
}

/// What a read hands out.
enum Plan {
    /// The read model from empty (`reset` first if the client had a copy).
    FromEmpty { reset: bool },
    /// The next step of the client's snapshot.
    Snapshot(SnapshotAt),
    /// The history after the client's point.
    History,
    /// The history no longer reaches back to the client's point.
    Gone(ChangePoint),
}

/// Changes, each with the point after it, the point after them all, and
/// the applied position a snapshot that ended with them is at.
type Items = (Vec<(Change, ChangePoint)>, ChangePoint, Option<Cursor>);

/// History changes after `seq`, each with the point after it.
fn history_items(slug: &str, seq: i64, changes: Vec<Change>) -> Items {
    let mut next = ChangePoint { slug: slug.to_owned(), seq, snapshot: None };
    let items = changes
        .into_iter()
        .map(|change| {
            next.seq = change.seq;
            (change, next.clone())
        })
        .collect();
    (items, next, None)
}

/// A step of the snapshot at `at`: its items, each with the point after
/// it; past its last row, the point in the history after it and the
/// position the snapshot is complete at.
fn snapshot_items(
    slug: &str,
    reader: &mut dyn crate::store::Reader,
    at: &SnapshotAt,
    limit: usize,
) -> Result<Items, crate::store::StoreError> {
    let step = reader.snapshot(at, limit)?;
    let point = |at: Option<SnapshotAt>, seq: i64| ChangePoint { slug: slug.to_owned(), seq, snapshot: at };
    let items = step.items.into_iter().map(|(change, after)| (change, point(Some(after.clone()), after.at))).collect();
    let complete = if step.next.is_none() { step.position } else { None };
    Ok((items, point(step.next, step.at), complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_what_reel_did_not_hand_out() {
        let point =
            ChangePoint { slug: NamespaceId::new("orders", "2").next_generation().slug(), seq: 42, snapshot: None };
        assert_eq!(point.token(), "42:orders@2+g1");
        assert_eq!(ChangePoint::parse(&point.token()), Some(point.clone()));
        let at = SnapshotAt { from: 40, at: 42, table: "orders:x".into(), key: Some("[\"a:b\"]".into()) };
        let inside = ChangePoint { snapshot: Some(at), ..point };
        assert_eq!(ChangePoint::parse(&inside.token()), Some(inside));
        assert_eq!(ChangePoint::parse("s6e6f74206a736f6e:orders@2"), None);
        assert_eq!(ChangePoint::parse("s7:orders@2"), None);
        assert_eq!(ChangePoint::parse("42"), None);
        assert_eq!(ChangePoint::parse("-1:orders@2"), None);
        assert_eq!(ChangePoint::parse("x:orders@2"), None);
    }
}
