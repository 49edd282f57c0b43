//! [`ComponentCache`]: compiled plugins on disk, so a restart or a reload with unchanged
//! plugins does not compile them again. An entry is named by the plugin's content hash and the
//! engine's compatibility hash (wasmtime version and every setting that shapes machine code),
//! is written to a temporary file and renamed into place (readers never see half a file), and
//! lives in a directory only membrane's user can write: a directory that another user owns or
//! that others may write is refused (its files would run as native code), and plugins are then
//! compiled without the cache. A file that fails to load is compiled again and replaced. The
//! cache is best effort: when it cannot be written, plugins still load.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
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
        if let Err(reason) = self.trusted() {
            tracing::warn!(dir = %self.dir.display(), "not using the compile cache: {reason}");
            return Ok((Component::from_binary(engine, bytes)?, Origin::Compiled));
        }
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

    /// Whether the directory is membrane's own: owned by this user, writable by no one else
    /// (or not there yet; it is created so).
    pub fn trusted(&self) -> Result<(), String> {
        let meta = match std::fs::metadata(&self.dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "it belongs to user {}, not to membrane's ({me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "others may write to it (mode {:o}); make it 0700",
                meta.mode() & 0o777
            ));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(dir.path().join("components"));
        assert!(
            cache.trusted().is_ok(),
            "not there yet: it will be created private"
        );
        std::fs::create_dir(cache.dir()).unwrap();
        std::fs::set_permissions(cache.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = cache.trusted().unwrap_err();
        assert!(error.contains("others may write"), "{error}");
        std::fs::set_permissions(cache.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(cache.trusted().is_ok());
        // A directory of another user: / belongs to root, so only a non-root run can see it.
        if unsafe { libc::geteuid() } != 0 {
            assert!(ComponentCache::new("/".into()).trusted().is_err());
        }
    }
}
