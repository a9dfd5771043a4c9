//! Compiled code on disk, so a restart does not recompile unchanged modules
//! (seconds for JavaScript and Python components).
//!
//! Entries are keyed by the module's SHA-256 and the engine's compatibility
//! hash, and carry a checksum of the compiled bytes: a truncated or corrupted
//! entry is recompiled, never loaded. Entries of modules no longer in use are
//! removed ([`CompileCache::retain`]): without that the folder grew by every
//! version ever loaded (a hot swap a minute is a megabyte or more a minute).
//!
//! A module runs from its entry mapped into memory, not from a copy (ADR 50):
//! the code and the data a JavaScript or Python component starts from are
//! read from the file as they are first touched and can be dropped again by
//! the kernel, so an idle module holds what it ran, not its whole compiled
//! size. The checksum is the file's last 32 bytes, after the code: the code
//! starts at the file's first byte, as the mapping needs it to.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::host::Engine;

/// The cache folder.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility key.
    engine_key: String,
}

/// Marks the entry's layout in its name, after the engine's key (ADR 50:
/// the code, then its checksum); entries laid out otherwise by an earlier
/// reel have other names.
const LAYOUT: &str = "m";

/// Numbers the temporary files of this process's writes: each write has a
/// file of its own, so a file renamed into place is never written again.
static WRITES: AtomicU64 = AtomicU64::new(0);

impl CompileCache {
    /// Cache under `dir` for `engine`'s configuration.
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        Self { dir: dir.to_owned(), engine_key: engine.compatibility_key() }
    }

    /// Where the entry of the module whose hash is `hash` is.
    fn entry(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}{LAYOUT}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes` (whose hash is `hash`), and whether
    /// it came from the cache; `compiling` is called before a compile.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        hash: &str,
        bytes: &[u8],
        compiling: impl FnOnce(),
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.entry(hash);
        if let Some(component) = self.load(engine, &path) {
            // In use again: not to be pruned as unused while it is deployed.
            let _ = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
            return Ok((component, true));
        }
        compiling();
        let component = engine.compile(bytes)?;
        if let Err(e) = self.store(&component, &path) {
            tracing::warn!("cannot cache compiled code at {}: {e:#}", path.display());
            return Ok((component, false));
        }
        // Run from the entry just written, as after a restart: the compiled
        // copy in memory goes.
        Ok((map(engine, &path).unwrap_or(component), false))
    }

    /// Remove the entries of this engine configuration whose module hash is
    /// not in `keep` (the module files in use) and that were not written or
    /// used in the last `grace` (a module loading beside is not in `keep`
    /// yet: it has that long to get there), with this engine's entries of
    /// the earlier layout and temporary files a crash left, as old. How
    /// many went.
    pub fn retain(&self, keep: &HashSet<String>, grace: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let key = &self.engine_key;
        let (suffix, earlier, temporary) =
            (format!("-{key}{LAYOUT}.cwasm"), format!("-{key}.cwasm"), format!("-{key}{LAYOUT}.tmp"));
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let unused = match name.strip_suffix(&suffix) {
                Some(hash) => !keep.contains(hash),
                None => name.ends_with(&earlier) || name.contains(&temporary),
            };
            if !unused {
                continue;
            }
            let age = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if age.is_none_or(|age| age < grace) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("cannot remove unused compiled code {}: {e}", entry.path().display()),
            }
        }
        removed
    }

    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        if !checksum_holds(path)? {
            tracing::warn!("ignoring corrupt compile cache entry {}", path.display());
            return None;
        }
        map(engine, path)
    }

    fn store(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut data = component.serialize()?;
        let sum = Sha256::digest(&data);
        data.extend_from_slice(&sum);
        // Write then rename: a reader never sees half a file, and a module
        // running from the file it replaces keeps its mapping of that one.
        let tmp = path.with_extension(format!("tmp{}-{}", std::process::id(), WRITES.fetch_add(1, Ordering::Relaxed)));
        let mut file = std::fs::File::options().write(true).create_new(true).open(&tmp)?;
        if let Err(e) = std::io::Write::write_all(&mut file, &data).and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(())
    }
}

/// The component of the entry at `path`, mapped into memory: its checksum
/// was checked, or the entry was just written.
fn map(engine: &Engine, path: &Path) -> Option<Component> {
    // SAFETY: the file holds exactly what `Component::serialize` produced
    // for this engine configuration, then its checksum (the file name
    // carries the engine's compatibility hash, the checksum rules out
    // truncation or damage); the cache folder belongs to reel, whose
    // entries are written whole under another name and renamed into place,
    // never written in place, so the mapped file does not change while a
    // module runs from it (a rename or a removal leaves the mapping as it
    // was).
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize_file(engine.wasmtime(), path) };
    component.map_err(|e| tracing::warn!("ignoring unusable cache entry {}: {e:#}", path.display())).ok()
}

/// Whether the entry at `path` ends with the checksum of what precedes it
/// (`None`: no such entry). Read in pieces: the entry is not held in memory.
fn checksum_holds(path: &Path) -> Option<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let Some(code) = file.metadata().ok()?.len().checked_sub(32) else { return Some(false) };
    let mut hasher = Sha256::new();
    std::io::copy(&mut (&mut file).take(code), &mut hasher).ok()?;
    let mut sum = [0u8; 32];
    file.seek(SeekFrom::Start(code)).ok()?;
    file.read_exact(&mut sum).ok()?;
    Some(hasher.finalize()[..] == sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(component)`: the smallest component there is.
    const EMPTY: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];

    fn mapped(path: &Path) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().any(|line| line.ends_with(&*path.to_string_lossy()))
    }

    fn get(cache: &CompileCache, engine: &Engine) -> (Component, bool, bool) {
        let mut compiled = false;
        let (component, cached) = cache.get_or_compile(engine, "empty", &EMPTY, || compiled = true).unwrap();
        (component, cached, compiled)
    }

    /// A cache in a folder of its own, and its engine.
    fn fresh() -> (tempfile::TempDir, Engine, CompileCache) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new().unwrap();
        let cache = CompileCache::new(dir.path(), &engine);
        (dir, engine, cache)
    }

    #[test]
    fn a_module_runs_from_its_entry_mapped_not_from_a_copy() {
        let (_dir, engine, cache) = fresh();
        let (first, cached, compiled) = get(&cache, &engine);
        assert!(!cached && compiled);
        let entry = cache.entry("empty");
        assert!(mapped(&entry), "the compiled code runs from {}", entry.display());
        drop(first);
        let (again, cached, compiled) = get(&cache, &engine);
        assert!(cached && !compiled, "loaded from the cache, not compiled again");
        assert!(mapped(&entry));
        drop(again);
    }

    #[test]
    fn pruning_removes_entries_of_the_earlier_layout_and_left_temporary_files() {
        let (dir, engine, cache) = fresh();
        drop(get(&cache, &engine));
        let key = engine.compatibility_key();
        let earlier = dir.path().join(format!("old-{key}.cwasm"));
        let left = dir.path().join(format!("empty-{key}{LAYOUT}.tmp99-0"));
        let other_engine = dir.path().join("old-0123456789abcdef.cwasm");
        for file in [&earlier, &left, &other_engine] {
            std::fs::write(file, b"x").unwrap();
        }
        let keep: HashSet<String> = ["empty".to_owned()].into();
        assert_eq!(cache.retain(&keep, Duration::ZERO), 2);
        assert!(!earlier.exists() && !left.exists(), "the earlier layout's entry and the temporary file went");
        assert!(other_engine.exists(), "another engine's entry stays (another reel may use it)");
        assert!(cache.entry("empty").exists(), "the entry in use stays");
    }

    #[test]
    fn a_damaged_or_truncated_entry_is_compiled_again_never_loaded() {
        let (_dir, engine, cache) = fresh();
        drop(get(&cache, &engine));
        let entry = cache.entry("empty");
        let whole = std::fs::read(&entry).unwrap();
        let mut damaged = whole.clone();
        damaged[whole.len() / 2] ^= 0x40;
        for bad in [damaged, whole[..whole.len() - 1].to_vec(), whole[..16].to_vec(), Vec::new()] {
            std::fs::write(&entry, &bad).unwrap();
            let (_, cached, compiled) = get(&cache, &engine);
            assert!(!cached && compiled, "an entry of {} bytes was loaded", bad.len());
            assert_eq!(std::fs::read(&entry).unwrap(), whole, "written again whole");
        }
    }
}
