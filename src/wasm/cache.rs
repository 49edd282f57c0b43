//! [`ComponentCache`]: compiled plugins on disk, so a restart or a reload with unchanged
//! plugins does not compile them again. An entry is named by the plugin's content hash and the
//! engine's compatibility hash (wasmtime version and every setting that shapes machine code),
//! is written to a temporary file and renamed into place (readers never see half a file), and
//! lives in a directory only membrane's user can write. A file that fails to load is compiled
//! again and replaced. The cache is best effort: when it cannot be written, plugins still load.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cache,
    Compiled,
}

#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

impl ComponentCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `$XDG_CACHE_HOME/membrane/components`, else `~/.cache/membrane/components`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("membrane").join("components"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compiled form of the component in `bytes`, from the cache when it is there.
    /// Blocking (compiling takes milliseconds to seconds): call it off the async threads.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, Origin)> {
        let path = self.dir.join(entry_name(engine, bytes));
        if path.exists() {
            // SAFETY: wasmtime runs deserialized code as is. The file is one membrane wrote
            // itself (named by content and engine hash, renamed into place whole) into a
            // directory no other user can write.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, Origin::Cache)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "recompiling a cached plugin that failed to load: {e:#}")
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(dir = %self.dir.display(), "cannot cache a compiled plugin: {e}");
        }
        // SAFETY: these bytes come straight from `precompile_component` on this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, Origin::Compiled))
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(compiled)?;
        file.persist(path)?;
        Ok(())
    }
}

/// `<sha-256 of the component>-<engine compatibility hash>.cwasm`
fn entry_name(engine: &Engine, bytes: &[u8]) -> String {
    // `DefaultHasher::new` has fixed keys: the same engine hashes alike in every process.
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:x}-{:016x}.cwasm", Sha256::digest(bytes), hasher.finish())
}
