//! The content-addressed result cache in `.kiln/` beside the pipeline file.
//!
//! An entry is a folder named by the node's fingerprint holding one
//! safetensors file per output port and a `manifest.json` with each file's
//! content hash. Entries are written to a temporary folder and renamed into
//! place, so a crash or cancellation never leaves a partial entry visible.
//! A lookup re-hashes every file: a corrupt or truncated entry is removed and
//! reported as a miss, so the node simply runs again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ids::PortName;
use crate::value::Value;

/// The cache of one pipeline folder.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

/// A valid entry found by [`Cache::lookup`].
#[derive(Clone, Debug)]
pub struct Entry {
    dir: PathBuf,
    /// Output port -> content hash.
    pub outputs: Vec<(PortName, String)>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    kind: String,
    outputs: Vec<ManifestOutput>,
    /// Files the node wrote outside the cache (sinks), with their content hashes.
    #[serde(default)]
    files: Vec<(PathBuf, String)>,
}

#[derive(Serialize, Deserialize)]
struct ManifestOutput {
    port: String,
    hash: String,
    bytes: u64,
}

impl Cache {
    /// The cache rooted at `root` (usually `<pipeline folder>/.kiln`); nothing is created until a store.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// The folder the cache lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entry_dir(&self, fingerprint: &str) -> PathBuf {
        self.root.join("cache").join(fingerprint)
    }

    /// A verified entry for `fingerprint`, or `None`. Corrupt entries are
    /// removed; an entry whose written files were changed or deleted is a miss.
    pub fn lookup(&self, fingerprint: &str) -> Option<Entry> {
        let dir = self.entry_dir(fingerprint);
        let manifest = fs::read(dir.join("manifest.json")).ok()?;
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&manifest) else {
            return self.discard(&dir);
        };
        let outputs = verify(&dir, &manifest).or_else(|| self.discard(&dir))?;
        let files_intact = manifest
            .files
            .iter()
            .all(|(path, hash)| crate::fingerprint::hash_path(path).is_ok_and(|h| h == *hash));
        files_intact.then_some(Entry { dir, outputs })
    }

    fn discard<T>(&self, dir: &Path) -> Option<T> {
        tracing::warn!("cache entry {} is damaged; recomputing", dir.display());
        let _ = fs::remove_dir_all(dir);
        None
    }

    /// Loads one output of an entry.
    pub fn load(&self, entry: &Entry, port: &PortName) -> Result<Value, String> {
        let path = entry.dir.join(format!("{port}.safetensors"));
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Value::from_bytes(&bytes)
            .map_err(|e| format!("cache file {} is damaged: {e}", path.display()))
    }

    /// Stores a node's outputs atomically under `fingerprint`, with the
    /// files it wrote outside the cache (checked again on lookup).
    pub fn store(
        &self,
        fingerprint: &str,
        kind: &str,
        outputs: &[(PortName, Value)],
        files: &[PathBuf],
    ) -> Result<(), String> {
        let tmp_root = self.root.join("tmp");
        fs::create_dir_all(&tmp_root)
            .map_err(|e| format!("cannot create {}: {e}", tmp_root.display()))?;
        let cache_root = self.root.join("cache");
        fs::create_dir_all(&cache_root)
            .map_err(|e| format!("cannot create {}: {e}", cache_root.display()))?;
        let tmp = tempdir_in(&tmp_root)?;
        let mut manifest = Manifest {
            kind: kind.to_string(),
            outputs: Vec::new(),
            files: files
                .iter()
                .map(|p| Ok((p.clone(), crate::fingerprint::hash_path(p)?)))
                .collect::<Result<_, String>>()?,
        };
        for (port, value) in outputs {
            let bytes = value.to_bytes().map_err(|e| e.to_string())?;
            write_synced(&tmp.join(format!("{port}.safetensors")), bytes)?;
            manifest.outputs.push(ManifestOutput {
                port: port.to_string(),
                hash: value.content_hash().to_string(),
                bytes: bytes.len() as u64,
            });
        }
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        write_synced(&tmp.join("manifest.json"), &json)?;
        let dest = self.entry_dir(fingerprint);
        if dest.exists() {
            // Written meanwhile by another run, or damaged: replace it.
            let _ = fs::remove_dir_all(&dest);
        }
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(()),
            Err(_) if self.lookup(fingerprint).is_some() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(format!(
                    "cannot move cache entry into {}: {e}",
                    dest.display()
                ))
            }
        }
    }

    /// Removes temporary folders left by interrupted runs.
    pub fn sweep(&self) {
        let _ = fs::remove_dir_all(self.root.join("tmp"));
    }
}

fn verify(dir: &Path, manifest: &Manifest) -> Option<Vec<(PortName, String)>> {
    let mut outputs = Vec::new();
    for out in &manifest.outputs {
        let port: PortName = out.port.parse().ok()?;
        let bytes = fs::read(dir.join(format!("{port}.safetensors"))).ok()?;
        if bytes.len() as u64 != out.bytes || blake3::hash(&bytes).to_hex().as_str() != out.hash {
            return None;
        }
        outputs.push((port, out.hash.clone()));
    }
    Some(outputs)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f =
        fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // No fsync: an entry is renamed into place only when complete, and every
    // lookup re-hashes its files, so a torn write after a crash is a miss.
    f.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn tempdir_in(parent: &Path) -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = parent.join(name);
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::ValueType;

    fn value(x: f64) -> Value {
        Value::from_json(ValueType::Metrics, serde_json::json!({ "x": x }))
    }

    #[test]
    fn stores_and_finds_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let port = PortName::new_static("metrics");
        cache
            .store("abc", "test.kind", &[(port.clone(), value(1.0))], &[])
            .unwrap();
        let entry = cache.lookup("abc").expect("hit");
        let back = cache.load(&entry, &port).unwrap();
        assert_eq!(back.meta()["x"], 1.0);
        assert!(cache.lookup("other").is_none());
    }

    #[test]
    fn entries_whose_written_files_changed_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join(".kiln"));
        let written = dir.path().join("out.csv");
        fs::write(&written, "a\n1\n").unwrap();
        cache
            .store("abc", "sink.csv", &[], &[written.clone()])
            .unwrap();
        assert!(cache.lookup("abc").is_some());
        fs::write(&written, "a\n2\n").unwrap();
        assert!(cache.lookup("abc").is_none());
        fs::remove_file(&written).unwrap();
        assert!(cache.lookup("abc").is_none());
    }

    #[test]
    fn damaged_entries_are_misses_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let port = PortName::new_static("metrics");
        cache
            .store("abc", "test.kind", &[(port.clone(), value(1.0))], &[])
            .unwrap();
        let file = dir.path().join("cache/abc/metrics.safetensors");
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        fs::write(&file, &bytes).unwrap();
        assert!(cache.lookup("abc").is_none());
        assert!(!dir.path().join("cache/abc").exists());

        cache
            .store("abc", "test.kind", &[(port.clone(), value(1.0))], &[])
            .unwrap();
        fs::write(&file, &bytes[..10]).unwrap();
        assert!(cache.lookup("abc").is_none());

        cache
            .store("abc", "test.kind", &[(port, value(1.0))], &[])
            .unwrap();
        fs::write(dir.path().join("cache/abc/manifest.json"), b"{not json").unwrap();
        assert!(cache.lookup("abc").is_none());
    }
}
