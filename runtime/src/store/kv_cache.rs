//! The worker's view of its KV table: buffered writes and a cache of
//! committed values.
//!
//! Writes of a batch stay in memory and reach the database in one go at the
//! end of the batch (or before a scan), so a guest's `kv.set` costs no round
//! trip. The worker is the only writer of its namespace, so committed values
//! it has seen can be cached across batches; when the KV table was empty at
//! start (a fresh rebuild) and everything since fits in the budget, the cache
//! is *complete* and a miss means "absent" without asking the database.
//!
//! A write to a key the cache knows to be absent is handed to the database
//! as *new*, which PostgreSQL inserts without the upsert's conflict check. If
//! that knowledge were ever wrong, the insert fails the batch, nothing of it
//! is kept, and the batch's next attempt writes every key as an upsert.
//!
//! Each key has one slot holding both what is committed and what the batch
//! wrote, found through one hash table: a `get` then a `set` of a key finds
//! it twice, and the flush and the commit walk the batch's slots without
//! looking keys up again (two maps, batch and committed, looked each key up
//! four or five times per batch: docs/benchmarks.md).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

// foldhash, not SipHash: a KV projection looks up every key it touches
// (docs/benchmarks.md has what SipHash cost).
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::{KvWrite, StoreError, Writer};

/// Bytes a known key costs beyond its key and value: its slot and its
/// place in the table.
pub(crate) const ENTRY_OVERHEAD: usize = 112;

/// Bytes every cache of the process knows, as of each one's last batch
/// (`reel_kv_cache_bytes` in `/metrics`).
static CACHED: AtomicUsize = AtomicUsize::new(0);

/// Bytes the process's KV caches hold, as they count them (keys, values and
/// [`ENTRY_OVERHEAD`] a key), as of each one's last batch.
pub fn cached_bytes() -> usize {
    CACHED.load(Ordering::Relaxed)
}

/// Buffered KV writes plus a cache of committed values.
#[derive(Debug)]
pub struct KvCache {
    /// Indices into `slots`, by the slot's key.
    index: HashTable<u32>,
    hasher: RandomState,
    slots: Vec<Slot>,
    /// The slots this batch wrote (those whose `write` is set), in the order
    /// of their first write.
    touched: Vec<u32>,
    /// Every committed key has a slot that knows it: an unknown key is absent.
    complete: bool,
    /// Whether what the cache knows absent may be written as new: not after
    /// a rollback, until the next commit.
    trusted: bool,
    /// What the batch committed behind replaced, by slot, to put back if its
    /// commit fails.
    undo: Vec<(u32, Known)>,
    /// Approximate bytes of the known keys and values.
    bytes: usize,
    /// Most bytes the cache may know; past it, it forgets what is committed.
    budget: usize,
    /// `bytes` as last added to [`CACHED`] (at the end of a batch: no
    /// shared counter on the path of each write).
    reported: usize,
}

/// One key: what is committed, and what the current batch did to it.
#[derive(Debug)]
struct Slot {
    key: String,
    hash: u64,
    committed: Known,
    write: Option<Write>,
}

/// What the cache knows of a key's committed value.
#[derive(Debug, Clone, PartialEq)]
enum Known {
    /// Nothing (in a complete cache: absent).
    Unknown,
    Absent,
    Value(Vec<u8>),
}

impl Known {
    fn of(value: Option<Vec<u8>>) -> Self {
        value.map_or(Known::Absent, Known::Value)
    }

    /// Bytes it adds to a key's cost (`None`: the key is not known).
    fn bytes(&self) -> Option<usize> {
        match self {
            Known::Unknown => None,
            Known::Absent => Some(0),
            Known::Value(v) => Some(v.len()),
        }
    }
}

/// A key's write in the current batch.
#[derive(Debug)]
struct Write {
    /// The value as the batch sees it (`None`: deleted).
    value: Option<Vec<u8>>,
    /// Not yet handed to the database.
    unsent: bool,
    /// Whether the open transaction holds a value for the key, once a write
    /// of it was sent (`None`: not sent in this transaction).
    sent: Option<bool>,
}

impl KvCache {
    /// An empty cache; `complete` when the KV table is known to be empty.
    pub fn new(budget: usize, complete: bool) -> Self {
        Self {
            index: HashTable::new(),
            hasher: RandomState::default(),
            slots: Vec::new(),
            touched: Vec::new(),
            complete,
            trusted: true,
            undo: Vec::new(),
            bytes: 0,
            budget,
            reported: 0,
        }
    }

    /// Bring [`CACHED`] up to date with this cache.
    fn report(&mut self) {
        if self.bytes > self.reported {
            CACHED.fetch_add(self.bytes - self.reported, Ordering::Relaxed);
        } else {
            CACHED.fetch_sub(self.reported - self.bytes, Ordering::Relaxed);
        }
        self.reported = self.bytes;
    }

    /// The value as this batch sees it.
    pub fn get(&mut self, key: &str, ns: &mut dyn Writer) -> Result<Option<Vec<u8>>, StoreError> {
        let hash = self.hasher.hash_one(key);
        let found = self.find(hash, key);
        if let Some(i) = found {
            let slot = &self.slots[i];
            if let Some(w) = &slot.write {
                return Ok(w.value.clone());
            }
            match &slot.committed {
                Known::Value(v) => return Ok(Some(v.clone())),
                Known::Absent => return Ok(None),
                Known::Unknown => {}
            }
        }
        if self.complete {
            return Ok(None);
        }
        let value = ns.kv_get(key)?;
        let i = match found {
            Some(i) => i,
            None => self.add(key.to_owned(), hash),
        };
        self.set_committed(i, Known::of(value.clone()));
        if self.bytes > self.budget {
            self.forget_committed();
        }
        Ok(value)
    }

    /// Buffer a write.
    pub fn set(&mut self, key: String, value: Vec<u8>) {
        self.write(key, Some(value));
    }

    /// Buffer a delete.
    pub fn delete(&mut self, key: String) {
        self.write(key, None);
    }

    fn write(&mut self, key: String, value: Option<Vec<u8>>) {
        let hash = self.hasher.hash_one(key.as_str());
        let i = match self.find(hash, &key) {
            Some(i) => i,
            None => self.add(key, hash),
        };
        let slot = &mut self.slots[i];
        match &mut slot.write {
            Some(w) => {
                w.value = value;
                w.unsent = true;
            }
            None => {
                slot.write = Some(Write { value, unsent: true, sent: None });
                self.touched.push(i as u32);
            }
        }
    }

    /// Send buffered writes to the database (inside its open transaction).
    pub fn flush(&mut self, ns: &mut dyn Writer) -> Result<(), StoreError> {
        let mut writes: Vec<KvWrite<'_>> = self
            .touched
            .iter()
            .filter_map(|&i| {
                let slot = &self.slots[i as usize];
                let w = slot.write.as_ref().filter(|w| w.unsent)?;
                Some(KvWrite {
                    key: &slot.key,
                    value: w.value.as_deref(),
                    new: w.value.is_some() && self.trusted && self.known_absent(slot, w),
                })
            })
            .collect();
        if writes.is_empty() {
            return Ok(());
        }
        // Sorted keys touch B-tree pages in order.
        writes.sort_unstable_by(|a, b| a.key.cmp(b.key));
        ns.kv_write(&writes)?;
        drop(writes);
        for &i in &self.touched {
            if let Some(w) = self.slots[i as usize].write.as_mut().filter(|w| w.unsent) {
                w.unsent = false;
                w.sent = Some(w.value.is_some());
            }
        }
        Ok(())
    }

    /// Whether the open transaction holds no value for `slot`'s key (before
    /// its write `w`).
    fn known_absent(&self, slot: &Slot, w: &Write) -> bool {
        match (w.sent, &slot.committed) {
            (Some(held), _) => !held,
            (None, Known::Absent) => true,
            (None, Known::Value(_)) => false,
            (None, Known::Unknown) => self.complete,
        }
    }

    /// The transaction committed: the batch's writes are now committed values.
    pub fn committed(&mut self) {
        self.commit_batch(false);
    }

    /// The transaction's commit is sent but not answered: the batch's writes
    /// serve as committed values, and what they replace is kept until
    /// [`Self::settled`].
    pub fn committed_behind(&mut self) {
        self.commit_batch(true);
    }

    fn commit_batch(&mut self, keep_undo: bool) {
        self.undo.clear();
        let mut touched = std::mem::take(&mut self.touched);
        for &i in &touched {
            let Some(w) = self.slots[i as usize].write.take() else { continue };
            let old = self.set_committed(i as usize, Known::of(w.value));
            if keep_undo {
                self.undo.push((i, old));
            }
        }
        // Keep the list's capacity for the next batch.
        touched.clear();
        self.touched = touched;
        self.trusted = true;
        if self.bytes > self.budget {
            self.forget_committed();
        }
        self.report();
    }

    /// The batch committed behind is answered: `Ok` keeps its values; a
    /// failure puts back what they replaced and drops the current batch
    /// (which stood on it).
    pub fn settled(&mut self, committed: bool) {
        if !committed {
            self.rolled_back();
            for (i, old) in std::mem::take(&mut self.undo) {
                self.set_committed(i as usize, old);
            }
            if self.bytes > self.budget {
                self.forget_committed();
            }
            self.report();
        }
        self.undo.clear();
    }

    /// The transaction rolled back: forget the batch's writes.
    pub fn rolled_back(&mut self) {
        for &i in &self.touched {
            self.slots[i as usize].write = None;
        }
        self.touched.clear();
        self.trusted = false;
    }

    /// The cache was found not to match the database: forget every value
    /// (no longer complete; misses ask the database).
    pub fn forget(&mut self) {
        self.rolled_back();
        self.forget_committed();
        self.report();
    }

    /// Forget every committed value, keeping the batch's writes: the cache
    /// is no longer complete.
    fn forget_committed(&mut self) {
        let mut old: Vec<Option<Slot>> = std::mem::take(&mut self.slots).into_iter().map(Some).collect();
        self.index.clear();
        self.undo.clear();
        self.bytes = 0;
        self.complete = false;
        for i in std::mem::take(&mut self.touched) {
            let Some(mut slot) = old[i as usize].take() else { continue };
            slot.committed = Known::Unknown;
            let i = self.push(slot);
            self.touched.push(i as u32);
        }
    }

    /// The slot of `key`, if it has one.
    fn find(&self, hash: u64, key: &str) -> Option<usize> {
        let slots = &self.slots;
        self.index.find(hash, |&i| slots[i as usize].key == key).map(|&i| i as usize)
    }

    /// A new slot for `key`, knowing nothing yet.
    fn add(&mut self, key: String, hash: u64) -> usize {
        self.push(Slot { key, hash, committed: Known::Unknown, write: None })
    }

    fn push(&mut self, slot: Slot) -> usize {
        let i = self.slots.len();
        let hash = slot.hash;
        self.slots.push(slot);
        let slots = &self.slots;
        self.index.insert_unique(hash, i as u32, |&j| slots[j as usize].hash);
        i
    }

    /// Record slot `i`'s committed value; returns what was recorded before.
    fn set_committed(&mut self, i: usize, known: Known) -> Known {
        let slot = &mut self.slots[i];
        let key_cost = slot.key.len() + ENTRY_OVERHEAD;
        let before = slot.committed.bytes().map_or(0, |b| b + key_cost);
        let after = known.bytes().map_or(0, |b| b + key_cost);
        self.bytes = self.bytes + after - before;
        std::mem::replace(&mut slot.committed, known)
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.bytes = 0;
        self.report();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reel_model::Cursor;

    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::store::NamespaceId;
    use crate::store::Snapshot;

    /// A real SQLite namespace in `dir`, and a transaction open on it (a
    /// unit test may reach a backend; the layer itself does not).
    fn namespace(dir: &std::path::Path) -> Box<dyn Writer> {
        let store = SqliteStore::new(dir).unwrap();
        let mut ns = store.open(&NamespaceId::new("kv", "1"), false, Duration::from_secs(5)).unwrap();
        ns.begin().unwrap();
        Box::new(ns)
    }

    fn cursor(id: i64) -> Cursor {
        Cursor { tx: 0, id }
    }

    /// Flush, commit the transaction `from` -> `to` and open the next one.
    fn commit(kv: &mut KvCache, ns: &mut dyn Writer, from: i64, to: i64) {
        kv.flush(ns).unwrap();
        ns.commit(cursor(from), cursor(to)).unwrap();
        ns.begin().unwrap();
    }

    fn bytes(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn a_batch_sees_its_writes_and_the_database_gets_them_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut ns = namespace(dir.path());
        let mut kv = KvCache::new(1 << 20, true);
        kv.set("a".into(), b"1".to_vec());
        kv.set("b".into(), b"2".to_vec());
        kv.set("a".into(), b"3".to_vec());
        kv.delete("b".into());
        assert_eq!(kv.get("a", &mut *ns).unwrap(), bytes("3"));
        assert_eq!(kv.get("b", &mut *ns).unwrap(), None);
        assert_eq!(ns.kv_get("a").unwrap(), None, "nothing is written before the flush");
        commit(&mut kv, &mut *ns, 0, 1);
        kv.committed();
        assert_eq!(ns.kv_get("a").unwrap(), bytes("3"));
        assert_eq!(ns.kv_get("b").unwrap(), None);
        // The next batch rewrites a committed key (an upsert, not an insert).
        kv.set("a".into(), b"4".to_vec());
        kv.set("c".into(), b"5".to_vec());
        commit(&mut kv, &mut *ns, 1, 2);
        kv.committed();
        assert_eq!(kv.get("a", &mut *ns).unwrap(), bytes("4"));
        assert_eq!(ns.kv_get("a").unwrap(), bytes("4"));
        assert_eq!(ns.kv_get("c").unwrap(), bytes("5"));
        // What `/metrics` shows, as of the batch's end: `a` and `c` (key, value,
        // slot) and `b`, known absent (key, slot).
        let held = 2 * (1 + 1 + ENTRY_OVERHEAD) + 1 + ENTRY_OVERHEAD;
        assert_eq!((kv.reported, kv.bytes), (held, held));
    }

    #[test]
    fn an_incomplete_cache_asks_the_database_once_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut ns = namespace(dir.path());
        ns.kv_write(&[KvWrite { key: "a", value: Some(b"1"), new: true }]).unwrap();
        ns.commit(Cursor::START, cursor(1)).unwrap();
        ns.begin().unwrap();
        let mut kv = KvCache::new(1 << 20, false);
        assert_eq!(kv.get("a", &mut *ns).unwrap(), bytes("1"));
        assert_eq!(kv.get("z", &mut *ns).unwrap(), None);
        // Changed behind the cache's back (never done by reel, whose worker
        // is the one writer): the cache answers from memory.
        ns.kv_write(&[KvWrite { key: "a", value: Some(b"2"), new: false }]).unwrap();
        ns.kv_write(&[KvWrite { key: "z", value: Some(b"9"), new: true }]).unwrap();
        assert_eq!(kv.get("a", &mut *ns).unwrap(), bytes("1"));
        assert_eq!(kv.get("z", &mut *ns).unwrap(), None);
        // Forgotten, it asks again.
        kv.forget();
        assert_eq!(kv.get("a", &mut *ns).unwrap(), bytes("2"));
        assert_eq!(kv.get("z", &mut *ns).unwrap(), bytes("9"));
    }

    #[test]
    fn a_commit_behind_that_fails_puts_back_what_it_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut ns = namespace(dir.path());
        let mut kv = KvCache::new(1 << 20, true);
        kv.set("kept".into(), b"1".to_vec());
        commit(&mut kv, &mut *ns, 0, 1);
        kv.committed();
        // Batch 2 commits behind and batch 3 starts on its values.
        kv.set("kept".into(), b"2".to_vec());
        kv.set("new".into(), b"2".to_vec());
        kv.flush(&mut *ns).unwrap();
        kv.committed_behind();
        assert_eq!(kv.get("kept", &mut *ns).unwrap(), bytes("2"));
        kv.set("third".into(), b"3".to_vec());
        // Batch 2's commit failed: batch 3 is dropped, batch 1's values back.
        kv.settled(false);
        assert_eq!(kv.get("kept", &mut *ns).unwrap(), bytes("1"));
        assert_eq!(kv.get("new", &mut *ns).unwrap(), None);
        assert_eq!(kv.get("third", &mut *ns).unwrap(), None);
        // One that succeeds keeps them.
        kv.set("kept".into(), b"4".to_vec());
        kv.committed_behind();
        kv.settled(true);
        assert_eq!(kv.get("kept", &mut *ns).unwrap(), bytes("4"));
    }

    #[test]
    fn over_its_budget_the_cache_forgets_committed_values_but_not_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut ns = namespace(dir.path());
        // Room for about two keys.
        let mut kv = KvCache::new(2 * (ENTRY_OVERHEAD + 4), true);
        for (i, key) in ["k1", "k2", "k3"].into_iter().enumerate() {
            kv.set(key.into(), b"v".to_vec());
            commit(&mut kv, &mut *ns, i as i64, i as i64 + 1);
            kv.committed();
        }
        assert!(!kv.complete, "past the budget a miss must ask the database");
        kv.set("k4".into(), b"w".to_vec());
        for key in ["k1", "k2", "k3"] {
            assert_eq!(kv.get(key, &mut *ns).unwrap(), bytes("v"), "{key}");
        }
        assert_eq!(kv.get("k4", &mut *ns).unwrap(), bytes("w"), "the batch's write survives");
        assert_eq!(kv.get("k5", &mut *ns).unwrap(), None);
        assert!(kv.bytes <= kv.budget);
        commit(&mut kv, &mut *ns, 3, 4);
        kv.committed();
        assert_eq!(ns.kv_get("k4").unwrap(), bytes("w"));
        assert_eq!(kv.reported, kv.bytes, "what /metrics shows follows the cache past its budget");
    }
}
