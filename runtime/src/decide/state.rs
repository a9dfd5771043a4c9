//! Streams' states kept in memory, so a command on a stream folds only the
//! events appended since its state was last computed, not the whole stream.
//! Bounded by bytes of state text; the least recently used go first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A stream's state after `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// JSON text; `None` for a stream with no events.
    pub state: Option<Arc<str>>,
    /// The stream's version the state includes.
    pub version: i64,
    /// The version of the stream's latest snapshot this process knows of
    /// (0: none): the next is saved once the state is far enough past it.
    pub saved: i64,
}

/// Which state: decider, its version (a new version does not use an old
/// version's states), stream.
type Key = (String, String, String);

/// The cache.
pub struct StateCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: HashMap<Key, (Loaded, u64)>,
    /// Bytes held (state text and keys).
    bytes: usize,
    /// Use counter: an entry's stamp is its last use.
    clock: u64,
}

fn size(key: &Key, loaded: &Loaded) -> usize {
    key.0.len() + key.1.len() + key.2.len() + loaded.state.as_ref().map_or(0, |s| s.len()) + 64
}

impl StateCache {
    /// A cache of at most `capacity` bytes (0: nothing is kept).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::default() }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state kept for `stream` of `decider@version`, if any.
    pub fn get(&self, decider: &str, version: &str, stream: &str) -> Option<Loaded> {
        let key = (decider.to_owned(), version.to_owned(), stream.to_owned());
        let mut entries = self.entries();
        entries.clock += 1;
        let now = entries.clock;
        let (loaded, used) = entries.map.get_mut(&key)?;
        *used = now;
        Some(loaded.clone())
    }

    /// Keep `loaded` for `stream`, unless a state at a later version is kept
    /// already (a slower command finishing after a faster one).
    pub fn put(&self, decider: &str, version: &str, stream: &str, loaded: Loaded) {
        let key = (decider.to_owned(), version.to_owned(), stream.to_owned());
        let bytes = size(&key, &loaded);
        if bytes > self.capacity {
            return;
        }
        let mut entries = self.entries();
        entries.clock += 1;
        let now = entries.clock;
        if let Some((old, _)) = entries.map.get(&key) {
            if old.version > loaded.version {
                return;
            }
            entries.bytes -= size(&key, old);
        }
        entries.bytes += bytes;
        entries.map.insert(key, (loaded, now));
        if entries.bytes > self.capacity {
            evict(&mut entries, self.capacity);
        }
    }

    /// Forget every state of `decider` (its module left service).
    pub fn forget(&self, decider: &str) {
        let mut entries = self.entries();
        let gone: Vec<Key> = entries.map.keys().filter(|k| k.0 == decider).cloned().collect();
        for key in gone {
            if let Some((loaded, _)) = entries.map.remove(&key) {
                entries.bytes -= size(&key, &loaded);
            }
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.entries().bytes
    }
}

/// Drop the least recently used entries until a quarter below `capacity`
/// (one sort per eviction round, not one per entry).
fn evict(entries: &mut Entries, capacity: usize) {
    let target = capacity - capacity / 4;
    let mut by_use: Vec<(u64, Key)> = entries.map.iter().map(|(k, (_, used))| (*used, k.clone())).collect();
    by_use.sort_unstable();
    for (_, key) in by_use {
        if entries.bytes <= target {
            break;
        }
        if let Some((loaded, _)) = entries.map.remove(&key) {
            entries.bytes -= size(&key, &loaded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(text: &str, version: i64) -> Loaded {
        Loaded { state: Some(text.into()), version, saved: 0 }
    }

    #[test]
    fn keeps_the_latest_version_and_stays_within_its_bytes() {
        let cache = StateCache::new(10_000);
        cache.put("order", "1", "order-1", state("{}", 2));
        cache.put("order", "1", "order-1", state("{\"old\":1}", 1));
        assert_eq!(cache.get("order", "1", "order-1"), Some(state("{}", 2)), "an older state does not replace it");
        assert_eq!(cache.get("order", "2", "order-1"), None, "another version of the decider has its own states");
        for i in 0..1000 {
            cache.put("order", "1", &format!("order-{i}"), state(&"x".repeat(100), 1));
            assert!(cache.bytes() <= 10_000);
        }
        assert!(cache.get("order", "1", "order-999").is_some(), "the most recent stays");
        assert!(cache.get("order", "1", "order-2").is_none(), "the least recently used went");
        cache.forget("order");
        assert_eq!(cache.bytes(), 0);
    }
}
