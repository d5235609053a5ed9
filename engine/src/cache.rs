//! The content-addressed result cache in `.kiln/` beside the pipeline file.
//!
//! An entry is one file, `cache/<first two hex digits>/<fingerprint>`: an
//! 8-byte little-endian header length, a JSON manifest, then one blob per
//! output port (its safetensors encoding). The manifest records each blob's
//! content hash, and the content hash of every file the node wrote outside
//! the cache (sinks). Entries are written to `tmp/` and renamed into place,
//! so a crash or cancellation never leaves a partial entry visible. A lookup
//! re-hashes every blob: a corrupt or truncated entry is removed and reported
//! as a miss, so the node simply runs again; an entry whose written files
//! were changed or deleted is a miss too.

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

/// A verified entry found by [`Cache::lookup`]. Its bytes are not kept:
/// an output is read again (and re-verified) only when something needs it.
/// Why a cache entry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The entry holds no output of that name.
    #[error("the cache entry has no output `{0}`")]
    NoOutput(PortName),
    /// The entry's bytes changed between lookup and load.
    #[error("cache entry {} changed while in use; run again", path.display())]
    Changed {
        /// The entry.
        path: PathBuf,
    },
    /// A cached value does not decode.
    #[error("a cached value cannot be decoded: {0}")]
    Decode(#[from] crate::value::DecodeError),
    /// A file the node wrote could not be hashed.
    #[error(transparent)]
    Hash(#[from] crate::fingerprint::HashError),
    /// A value could not be encoded.
    #[error("{0}")]
    Encode(#[from] crate::error::NodeError),
    /// The manifest could not be written as JSON.
    #[error("cannot write the manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    /// The file system refused.
    #[error("cannot write cache entry {}: {source}", path.display())]
    Write {
        /// The entry or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Debug)]
pub struct Entry {
    path: PathBuf,
    blobs: Vec<(PortName, String, std::ops::Range<usize>)>,
}

impl Entry {
    /// Output port -> content hash, in the order the node produced them.
    pub fn outputs(&self) -> impl Iterator<Item = (&PortName, &str)> {
        self.blobs.iter().map(|(p, h, _)| (p, h.as_str()))
    }

    /// Reads and decodes one output.
    pub fn load(&self, port: &PortName) -> Result<Value, CacheError> {
        let (_, hash, range) = self
            .blobs
            .iter()
            .find(|(p, _, _)| p == port)
            .ok_or_else(|| CacheError::NoOutput(port.clone()))?;
        let damaged = || CacheError::Changed {
            path: self.path.clone(),
        };
        let bytes = fs::read(&self.path).map_err(|_| damaged())?;
        let blob = bytes.get(range.clone()).ok_or_else(damaged)?;
        if blake3::hash(blob).to_hex().as_str() != hash {
            return Err(damaged());
        }
        Ok(Value::from_bytes(blob)?)
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    kind: String,
    outputs: Vec<Blob>,
    /// Files the node wrote outside the cache (sinks), with their content hashes.
    files: Vec<(PathBuf, String)>,
}

#[derive(Serialize, Deserialize)]
struct Blob {
    port: String,
    hash: String,
    bytes: usize,
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

    fn entry_path(&self, fingerprint: &str) -> PathBuf {
        let shard = fingerprint.get(..2).unwrap_or("00");
        self.root.join("cache").join(shard).join(fingerprint)
    }

    /// A verified entry for `fingerprint`, or `None`.
    pub fn lookup(&self, fingerprint: &str) -> Option<Entry> {
        let path = self.entry_path(fingerprint);
        let bytes = fs::read(&path).ok()?;
        let Some((manifest, blobs)) = parse(&bytes) else {
            tracing::warn!("cache entry {} is damaged; recomputing", path.display());
            let _ = fs::remove_file(&path);
            return None;
        };
        let files_intact = manifest
            .files
            .iter()
            .all(|(file, hash)| crate::fingerprint::hash_path(file).is_ok_and(|h| h == *hash));
        files_intact.then_some(Entry { path, blobs })
    }

    /// Stores a node's outputs atomically under `fingerprint`, with the
    /// files it wrote outside the cache (checked again on lookup).
    pub fn store(
        &self,
        fingerprint: &str,
        kind: &str,
        outputs: &[(PortName, Value)],
        files: &[PathBuf],
    ) -> Result<(), CacheError> {
        let mut manifest = Manifest {
            kind: kind.to_string(),
            outputs: Vec::new(),
            files: files
                .iter()
                .map(|p| Ok((p.clone(), crate::fingerprint::hash_path(p)?)))
                .collect::<Result<_, crate::fingerprint::HashError>>()?,
        };
        let mut blobs: Vec<&[u8]> = Vec::new();
        for (port, value) in outputs {
            let bytes = value.to_bytes()?;
            manifest.outputs.push(Blob {
                port: port.to_string(),
                hash: value.content_hash().to_string(),
                bytes: bytes.len(),
            });
            blobs.push(bytes);
        }
        let header = serde_json::to_vec(&manifest)?;
        let dest = self.entry_path(fingerprint);
        let tmp = self.root.join("tmp").join(unique_name(fingerprint));
        for dir in [dest.parent(), tmp.parent()].into_iter().flatten() {
            fs::create_dir_all(dir).map_err(|source| CacheError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&(header.len() as u64).to_le_bytes())?;
            f.write_all(&header)?;
            for b in &blobs {
                f.write_all(b)?;
            }
            // No fsync: the entry is renamed into place only when complete, and
            // every lookup re-hashes it, so a torn write after a crash is a miss.
            fs::rename(&tmp, &dest)
        })();
        written.map_err(|source| {
            let _ = fs::remove_file(&tmp);
            CacheError::Write { path: dest, source }
        })
    }

    /// Removes temporary files that interrupted runs left over an hour ago
    /// (younger ones may belong to a run still writing them).
    pub fn sweep(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        let hour = std::time::Duration::from_secs(3600);
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > hour);
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

type Blobs = Vec<(PortName, String, std::ops::Range<usize>)>;

/// Parses and verifies an entry; `None` when anything is off.
fn parse(bytes: &[u8]) -> Option<(Manifest, Blobs)> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let manifest: Manifest =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(len)?)?).ok()?;
    let mut at = 8 + len;
    let mut blobs = Vec::new();
    for blob in &manifest.outputs {
        let range = at..at.checked_add(blob.bytes)?;
        let data = bytes.get(range.clone())?;
        if blake3::hash(data).to_hex().as_str() != blob.hash {
            return None;
        }
        blobs.push((blob.port.parse().ok()?, blob.hash.clone(), range.clone()));
        at = range.end;
    }
    (at == bytes.len()).then_some((manifest, blobs))
}

fn unique_name(fingerprint: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{fingerprint}.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ValueType;

    fn value(x: f64) -> Value {
        Value::from_json(ValueType::Metrics, serde_json::json!({ "x": x }))
    }

    fn port() -> PortName {
        PortName::new_static("metrics")
    }

    #[test]
    fn stores_and_finds_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache
            .store("abc", "test.kind", &[(port(), value(1.0))], &[])
            .unwrap();
        let entry = cache.lookup("abc").expect("hit");
        assert_eq!(entry.load(&port()).unwrap().meta()["x"], 1.0);
        assert_eq!(entry.outputs().next().unwrap().1, value(1.0).content_hash());
        assert!(cache.lookup("other").is_none());
    }

    #[test]
    fn damaged_entries_are_misses_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let file = dir.path().join("cache/ab/abc");
        let damages: [fn(&mut Vec<u8>); 4] = [
            |b| {
                let last = b.len() - 2;
                b[last] ^= 0xff;
            },
            |b| b.truncate(b.len() / 2),
            |b| b[10] = b'#',
            |b| b.push(0),
        ];
        for damage in damages {
            cache
                .store("abc", "test.kind", &[(port(), value(1.0))], &[])
                .unwrap();
            let mut bytes = fs::read(&file).unwrap();
            damage(&mut bytes);
            fs::write(&file, &bytes).unwrap();
            assert!(cache.lookup("abc").is_none());
            assert!(!file.exists());
        }
    }

    #[test]
    fn entries_whose_written_files_changed_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join(".kiln"));
        let written = dir.path().join("out.csv");
        fs::write(&written, "a\n1\n").unwrap();
        cache
            .store("abc", "sink.csv", &[], std::slice::from_ref(&written))
            .unwrap();
        assert!(cache.lookup("abc").is_some());
        fs::write(&written, "a\n2\n").unwrap();
        assert!(cache.lookup("abc").is_none());
        fs::remove_file(&written).unwrap();
        assert!(cache.lookup("abc").is_none());
    }
}
