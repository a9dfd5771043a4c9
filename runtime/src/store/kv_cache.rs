//! The worker's view of its KV table: buffered writes and a cache of
//! committed values.
//!
//! Writes of a batch stay in memory and reach the database in one go at the
//! end of the batch (or before a scan), so a guest's `kv.set` costs no round
//! trip. The worker is the only writer of its namespace, so committed values
//! it has seen can be cached across batches; when the KV table was empty at
//! start (a fresh rebuild) and everything since fits in the budget, the cache
//! is *complete* and a miss means "absent" without asking the database.

// foldhash, not SipHash: a KV projection looks up every key it touches, and
// SipHash was 8% of the worker in a SQLite customer-stats rebuild (three
// alternating 1M runs: 306-317k events/s against 294-303k).
use foldhash::{HashMap, HashMapExt};

use super::{Namespace, StoreError};

/// Bytes a cache entry costs beyond its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// Buffered KV writes plus a cache of committed values.
#[derive(Debug)]
pub struct KvCache {
    /// Writes of the current batch not yet sent to the database (`None`: delete).
    pending: HashMap<String, Option<Vec<u8>>>,
    /// Writes of the current batch already sent (inside the open transaction).
    sent: HashMap<String, Option<Vec<u8>>>,
    /// Committed values; `None` records a known-absent key.
    committed: HashMap<String, Option<Vec<u8>>>,
    /// Every committed key is in `committed`: a miss is an absent key.
    complete: bool,
    /// Approximate bytes held by `committed`.
    bytes: usize,
    /// Most bytes `committed` may hold; past it the cache is dropped.
    budget: usize,
}

impl KvCache {
    /// An empty cache; `complete` when the KV table is known to be empty.
    pub fn new(budget: usize, complete: bool) -> Self {
        Self { pending: HashMap::new(), sent: HashMap::new(), committed: HashMap::new(), complete, bytes: 0, budget }
    }

    /// The value as this batch sees it.
    pub fn get(&mut self, key: &str, ns: &mut dyn Namespace) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.pending.get(key).or_else(|| self.sent.get(key)).or_else(|| self.committed.get(key)) {
            return Ok(v.clone());
        }
        if self.complete {
            return Ok(None);
        }
        let value = ns.kv_get(key)?;
        self.remember(key.to_owned(), value.clone());
        Ok(value)
    }

    /// Buffer a write.
    pub fn set(&mut self, key: String, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }

    /// Buffer a delete.
    pub fn delete(&mut self, key: String) {
        self.pending.insert(key, None);
    }

    /// Send buffered writes to the database (inside its open transaction).
    pub fn flush(&mut self, ns: &mut dyn Namespace) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut writes: Vec<(String, Option<Vec<u8>>)> = self.pending.drain().collect();
        // Sorted keys touch B-tree pages in order.
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut iter = writes.iter().map(|(k, v)| (k.clone(), v.clone()));
        ns.kv_write(&mut iter)?;
        self.sent.extend(writes);
        Ok(())
    }

    /// The transaction committed: the batch's writes are now committed values.
    pub fn committed(&mut self) {
        let writes: Vec<_> = self.sent.drain().chain(self.pending.drain()).collect();
        for (key, value) in writes {
            self.remember(key, value);
        }
    }

    /// The transaction rolled back: forget the batch's writes.
    pub fn rolled_back(&mut self) {
        self.pending.clear();
        self.sent.clear();
    }

    /// A batch taken as committed was not: forget every cached value (the
    /// cache is no longer complete; misses ask the database).
    pub fn forget(&mut self) {
        self.rolled_back();
        self.committed.clear();
        self.bytes = 0;
        self.complete = false;
    }

    fn remember(&mut self, key: String, value: Option<Vec<u8>>) {
        let value_len = value.as_ref().map_or(0, Vec::len);
        let key_len = key.len();
        match self.committed.insert(key, value) {
            Some(old) => self.bytes = self.bytes - old.as_ref().map_or(0, Vec::len) + value_len,
            None => self.bytes += key_len + value_len + ENTRY_OVERHEAD,
        }
        if self.bytes > self.budget {
            // Over budget: start over as a plain (incomplete) cache.
            self.committed.clear();
            self.bytes = 0;
            self.complete = false;
        }
    }
}
