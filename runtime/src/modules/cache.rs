//! Compiled code on disk, so a restart does not recompile unchanged modules
//! (seconds for JavaScript and Python components).
//!
//! Entries are keyed by the module's SHA-256 and the engine's compatibility
//! hash, and carry a checksum of the compiled bytes: a truncated or corrupted
//! entry is recompiled, never loaded.

use std::path::{Path, PathBuf};

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
            return Ok((component, true));
        }
        compiling();
        let component = engine.compile(bytes)?;
        if let Err(e) = self.store(&component, &path) {
            tracing::warn!("cannot cache compiled code at {}: {e:#}", path.display());
        }
        Ok((component, false))
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
