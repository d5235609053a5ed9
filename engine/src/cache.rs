//! The content-addressed result cache, in a [`Store`]: `.kiln/` beside the
//! pipeline file by default, or any `--cache URL` (a folder, a bucket).
//!
//! Two kinds of object:
//! - `blobs/<2 hex>/<hash>`: one output value (its safetensors encoding),
//!   named by the blake3 hash of its bytes, so equal values are stored once;
//! - `entries/<2 hex>/<fingerprint>`: a small JSON record of what a node with
//!   that fingerprint produced (each output port's blob hash and size) and the
//!   files it wrote outside the cache (sinks), with their content hashes.
//!
//! A node's blobs are written before its record, each put-if-absent, and
//! every object appears whole or not at all; so a writer killed half-way
//! leaves no record, and two writers of the same node leave one (both
//! succeed). A lookup reads the record and checks that each blob is there at
//! its size; a value is re-hashed whenever it is read. A damaged record or
//! blob is removed and counts as a miss (the run that found it recomputes
//! it): a cached result is never wrong. A record whose written files changed
//! or went missing is a miss too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::PortName;
use crate::store::{Store, StoreError};
use crate::value::Value;

/// The result cache.
#[derive(Clone, Debug)]
pub struct Cache {
    store: Store,
    /// Set when a read found damage: the run that saw it runs again.
    damaged: Arc<AtomicBool>,
}

/// Why a cache entry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The entry holds no output of that name.
    #[error("the cache entry has no output `{0}`")]
    NoOutput(PortName),
    /// A value's bytes are missing or do not match their hash.
    #[error("cached value {hash} in {url} is damaged or gone; it was removed, and the run computes it again")]
    Damaged {
        /// The store.
        url: String,
        /// The value's hash.
        hash: String,
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
    /// The record could not be written as JSON.
    #[error("cannot write the record: {0}")]
    Record(#[from] serde_json::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A found entry. Its values are not read until something needs them.
#[derive(Clone, Debug)]
pub struct Entry {
    cache: Cache,
    fingerprint: String,
    record: Record,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    kind: String,
    outputs: Vec<Blob>,
    /// Files the node wrote outside the cache (sinks): the name relative to
    /// the output folder (or an absolute path), and the content hash.
    files: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Blob {
    port: String,
    hash: String,
    bytes: u64,
}

impl Entry {
    /// Output port -> content hash, in the order the node produced them.
    pub fn outputs(&self) -> impl Iterator<Item = (PortName, &str)> {
        self.record
            .outputs
            .iter()
            .filter_map(|b| Some((b.port.parse().ok()?, b.hash.as_str())))
    }

    /// Reads one output and checks it against its hash.
    pub fn load(&self, port: &PortName) -> Result<Value, CacheError> {
        let blob = self
            .record
            .outputs
            .iter()
            .find(|b| b.port == port.as_str())
            .ok_or_else(|| CacheError::NoOutput(port.clone()))?;
        let bytes = self.cache.store.get(&blob_key(&blob.hash))?;
        match bytes {
            Some(b) if blake3::hash(&b).to_hex().as_str() == blob.hash => {
                Ok(Value::from_bytes(&b)?)
            }
            _ => {
                self.cache.damaged.store(true, Ordering::Relaxed);
                let _ = self.cache.store.delete(&blob_key(&blob.hash));
                let _ = self.cache.store.delete(&entry_key(&self.fingerprint));
                Err(CacheError::Damaged {
                    url: self.cache.store.url().to_string(),
                    hash: blob.hash.clone(),
                })
            }
        }
    }
}

/// Where a run's sinks write: a local folder, published to a store when
/// `--out` is a URL (files are written locally first, then uploaded).
#[derive(Clone, Debug)]
pub struct Out {
    dir: PathBuf,
    remote: Option<Store>,
}

impl Out {
    /// Sinks write into `dir`.
    pub fn local(dir: impl Into<PathBuf>) -> Out {
        Out {
            dir: dir.into(),
            remote: None,
        }
    }

    /// Sinks write into `staging`, and what they wrote goes to `store`.
    pub fn remote(store: Store, staging: impl Into<PathBuf>) -> Out {
        Out {
            dir: staging.into(),
            remote: Some(store),
        }
    }

    /// The local folder sinks write into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store written files are published to, if any.
    pub fn remote_store(&self) -> Option<&Store> {
        self.remote.as_ref()
    }

    /// How a written file is recorded: relative to the output folder when
    /// inside it (so any machine's output folder can hold it), else absolute.
    fn name(&self, file: &Path) -> String {
        match file.strip_prefix(&self.dir) {
            Ok(rel) => rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
            Err(_) => file.display().to_string(),
        }
    }

    /// The content hash of a recorded file where it is now.
    fn hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        if Path::new(name).is_absolute() {
            return Ok(crate::fingerprint::hash_path(Path::new(name)).ok());
        }
        match &self.remote {
            Some(store) => Ok(store
                .get(name)?
                .map(|b| blake3::hash(&b).to_hex().to_string())),
            None => Ok(crate::fingerprint::hash_path(&self.dir.join(name)).ok()),
        }
    }

    /// Uploads a file a node wrote (when the output folder is a store).
    pub fn publish(&self, file: &Path) -> Result<(), CacheError> {
        let (Some(store), name) = (&self.remote, self.name(file)) else {
            return Ok(());
        };
        if Path::new(&name).is_absolute() {
            return Ok(());
        }
        let bytes = std::fs::read(file).map_err(|e| StoreError::Request {
            url: store.url().to_string(),
            key: name.clone(),
            why: format!("cannot read `{}`: {e}", file.display()),
        })?;
        Ok(store.put(&name, bytes)?)
    }
}

/// A node being computed in this process (by store and fingerprint): runs
/// that need the same result at once — the trials of a sweep — compute it
/// once, the others wait for it and take it from the cache.
struct Flight {
    done: std::sync::Mutex<bool>,
    finished: std::sync::Condvar,
}

type Flights = std::sync::Mutex<std::collections::HashMap<String, Arc<Flight>>>;

fn flights() -> &'static Flights {
    static FLIGHTS: std::sync::OnceLock<Flights> = std::sync::OnceLock::new();
    FLIGHTS.get_or_init(Default::default)
}

/// The right to compute a result; dropping it lets the waiters look again.
pub struct Claim {
    key: String,
    flight: Arc<Flight>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        flights()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        *self.flight.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.flight.finished.notify_all();
    }
}

fn blob_key(hash: &str) -> String {
    format!("blobs/{}/{hash}", hash.get(..2).unwrap_or("00"))
}

fn entry_key(fingerprint: &str) -> String {
    format!(
        "entries/{}/{fingerprint}",
        fingerprint.get(..2).unwrap_or("00")
    )
}

impl Cache {
    /// The cache in a local folder (usually `<pipeline folder>/.kiln`);
    /// nothing is created until a store.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache::at(Store::local(&root.into()))
    }

    /// The cache in a store.
    pub fn at(store: Store) -> Self {
        Cache {
            store,
            damaged: Arc::default(),
        }
    }

    /// The store the cache lives in.
    pub fn location(&self) -> &Store {
        &self.store
    }

    /// Claims the computation of `fingerprint` for this caller; `None` when
    /// another run in this process was computing it (this call waited until
    /// it finished: look it up again).
    pub fn claim(&self, fingerprint: &str) -> Option<Claim> {
        let key = format!("{}#{fingerprint}", self.store.url());
        let flight = {
            let mut map = flights().lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let flight = Arc::new(Flight {
                        done: std::sync::Mutex::new(false),
                        finished: std::sync::Condvar::new(),
                    });
                    map.insert(key.clone(), flight.clone());
                    return Some(Claim { key, flight });
                }
            }
        };
        let mut done = flight.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*done {
            done = flight
                .finished
                .wait(done)
                .unwrap_or_else(|e| e.into_inner());
        }
        None
    }

    /// Whether a read found damage since the last call (and clears it).
    pub fn take_damaged(&self) -> bool {
        self.damaged.swap(false, Ordering::Relaxed)
    }

    /// The entry for `fingerprint`, if one is there whole and its written
    /// files are intact in `out`. `Err` only when the store fails.
    pub fn lookup(&self, fingerprint: &str, out: &Out) -> Result<Option<Entry>, CacheError> {
        let key = entry_key(fingerprint);
        let Some(bytes) = self.store.get(&key)? else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
            tracing::warn!("cache record {key} is damaged; recomputing");
            let _ = self.store.delete(&key);
            return Ok(None);
        };
        for blob in &record.outputs {
            let ok = blob.port.parse::<PortName>().is_ok()
                && self.store.size(&blob_key(&blob.hash))? == Some(blob.bytes);
            if !ok {
                tracing::warn!("cache entry {key} lost a value; recomputing");
                let _ = self.store.delete(&key);
                return Ok(None);
            }
        }
        for (name, hash) in &record.files {
            if out.hash(name)?.as_deref() != Some(hash) {
                return Ok(None);
            }
        }
        Ok(Some(Entry {
            cache: self.clone(),
            fingerprint: fingerprint.to_string(),
            record,
        }))
    }

    /// Stores a node's outputs under `fingerprint`, with the files it wrote
    /// into `out` (checked again on lookup): blobs first, the record last.
    pub fn store(
        &self,
        fingerprint: &str,
        kind: &str,
        outputs: &[(PortName, Value)],
        files: &[PathBuf],
        out: &Out,
    ) -> Result<(), CacheError> {
        let mut record = Record {
            kind: kind.to_string(),
            outputs: Vec::new(),
            files: files
                .iter()
                .map(|p| Ok((out.name(p), crate::fingerprint::hash_path(p)?)))
                .collect::<Result<_, crate::fingerprint::HashError>>()?,
        };
        for (port, value) in outputs {
            let bytes = value.to_bytes()?;
            let hash = value.content_hash().to_string();
            let key = blob_key(&hash);
            if self.store.size(&key)? != Some(bytes.len() as u64) {
                // A damaged blob of this hash is replaced; an intact one kept.
                self.store.delete(&key)?;
                self.store.put_if_absent(&key, bytes.to_vec())?;
            }
            record.outputs.push(Blob {
                port: port.to_string(),
                hash,
                bytes: bytes.len() as u64,
            });
        }
        self.store
            .put_if_absent(&entry_key(fingerprint), serde_json::to_vec(&record)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ValueType;
    use std::fs;

    fn value(x: f64) -> Value {
        Value::from_json(ValueType::Metrics, serde_json::json!({ "x": x }))
    }

    fn port() -> PortName {
        PortName::new_static("metrics")
    }

    fn objects(dir: &Path, kind: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for shard in fs::read_dir(dir.join(kind)).unwrap().flatten() {
            out.extend(
                fs::read_dir(shard.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.path()),
            );
        }
        out
    }

    #[test]
    fn stores_and_finds_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let out = Out::local(dir.path().join("out"));
        cache
            .store("abc", "test.kind", &[(port(), value(1.0))], &[], &out)
            .unwrap();
        let entry = cache.lookup("abc", &out).unwrap().expect("hit");
        assert_eq!(entry.load(&port()).unwrap().meta()["x"], 1.0);
        assert_eq!(entry.outputs().next().unwrap().1, value(1.0).content_hash());
        assert!(cache.lookup("other", &out).unwrap().is_none());
        // Equal values are one blob.
        cache
            .store("def", "test.kind", &[(port(), value(1.0))], &[], &out)
            .unwrap();
        assert_eq!(objects(dir.path(), "blobs").len(), 1);
        assert_eq!(objects(dir.path(), "entries").len(), 2);
    }

    #[test]
    fn damaged_records_and_blobs_are_misses_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let out = Out::local(dir.path());
        let store = || {
            cache
                .store("abc", "test.kind", &[(port(), value(1.0))], &[], &out)
                .unwrap()
        };
        let damages: [fn(&mut Vec<u8>); 3] =
            [|b| b.truncate(b.len() / 2), |b| b[1] = b'#', |b| b.push(0)];
        for damage in damages {
            for kind in ["entries", "blobs"] {
                store();
                let file = objects(dir.path(), kind).pop().unwrap();
                let mut bytes = fs::read(&file).unwrap();
                damage(&mut bytes);
                fs::write(&file, &bytes).unwrap();
                match cache.lookup("abc", &out).unwrap() {
                    None => {}
                    // A blob of the right size with other bytes is found
                    // on reading it, and removed with its record.
                    Some(entry) => {
                        assert!(entry.load(&port()).is_err());
                        assert!(cache.take_damaged());
                        assert!(cache.lookup("abc", &out).unwrap().is_none());
                    }
                }
            }
        }
        // A flipped byte inside a blob, same size.
        store();
        let file = objects(dir.path(), "blobs").pop().unwrap();
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0xff;
        fs::write(&file, &bytes).unwrap();
        let entry = cache.lookup("abc", &out).unwrap().expect("same size");
        let err = entry.load(&port()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
        assert!(cache.take_damaged() && !file.exists());
        // Storing again replaces what was removed.
        store();
        assert!(cache
            .lookup("abc", &out)
            .unwrap()
            .unwrap()
            .load(&port())
            .is_ok());
    }

    #[test]
    fn entries_whose_written_files_changed_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join(".kiln"));
        let out = Out::local(dir.path().join("out"));
        fs::create_dir_all(out.dir()).unwrap();
        let written = out.dir().join("out.csv");
        fs::write(&written, "a\n1\n").unwrap();
        cache
            .store("abc", "sink.csv", &[], std::slice::from_ref(&written), &out)
            .unwrap();
        assert!(cache.lookup("abc", &out).unwrap().is_some());
        fs::write(&written, "a\n2\n").unwrap();
        assert!(cache.lookup("abc", &out).unwrap().is_none());
        fs::remove_file(&written).unwrap();
        assert!(cache.lookup("abc", &out).unwrap().is_none());
        // Another output folder holding the same file is as good.
        let other = Out::local(dir.path().join("elsewhere"));
        fs::create_dir_all(other.dir()).unwrap();
        fs::write(other.dir().join("out.csv"), "a\n1\n").unwrap();
        assert!(cache.lookup("abc", &other).unwrap().is_some());
    }
}
