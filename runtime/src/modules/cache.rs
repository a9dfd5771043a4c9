//! Compiled code on disk, so a restart does not recompile unchanged modules
//! (seconds for JavaScript and Python components).
//!
//! Entries are keyed by the module's SHA-256 and the engine's compatibility
//! hash, and carry a checksum of the compiled bytes: a truncated or corrupted
//! entry is recompiled, never loaded. Entries of modules no longer in use are
//! removed ([`CompileCache::retain`]): without that the folder grew by every
//! version ever loaded (a hot swap a minute is a megabyte or more a minute).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::host::Engine;

/// The cache folder.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompileCache {
    /// Cache under `dir` for `engine`'s configuration.
    pub fn new(dir: &Path, engine: &Engine) -> Self {
        Self { dir: dir.to_owned(), engine_key: engine.compatibility_key() }
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
        let path = self.dir.join(format!("{hash}-{}.cwasm", self.engine_key));
        if let Some(component) = self.load(engine, &path) {
            // In use again: not to be pruned as unused while it is deployed.
            let _ = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(SystemTime::now()));
            return Ok((component, true));
        }
        compiling();
        let component = engine.compile(bytes)?;
        if let Err(e) = self.store(&component, &path) {
            tracing::warn!("cannot cache compiled code at {}: {e:#}", path.display());
        }
        Ok((component, false))
    }

    /// Remove the entries of this engine configuration whose module hash is
    /// not in `keep` (the module files in use) and that were not written or
    /// used in the last `grace` (a module loading beside is not in `keep`
    /// yet: it has that long to get there). How many went.
    pub fn retain(&self, keep: &HashSet<String>, grace: Duration) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return 0 };
        let suffix = format!("-{}.cwasm", self.engine_key);
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hash) = name.to_str().and_then(|n| n.strip_suffix(&suffix)) else { continue };
            if keep.contains(hash) {
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
        let data = std::fs::read(path).ok()?;
        let (sum, code) = data.split_at_checked(32)?;
        if Sha256::digest(code)[..] != *sum {
            tracing::warn!("ignoring corrupt compile cache entry {}", path.display());
            return None;
        }
        // SAFETY: `code` is exactly what `Component::serialize` produced for
        // this engine configuration (the file name carries the engine's
        // compatibility hash, the checksum rules out truncation or damage),
        // and the cache folder belongs to reel.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine.wasmtime(), code) };
        component.map_err(|e| tracing::warn!("ignoring unusable cache entry {}: {e:#}", path.display())).ok()
    }

    fn store(&self, component: &Component, path: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let code = component.serialize()?;
        let mut data = Sha256::digest(&code).to_vec();
        data.extend_from_slice(&code);
        // Write then rename: a reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &data)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
