//! Fingerprints: what a node's result depends on, hashed.
//!
//! A fingerprint covers the kind and its version, the settings after
//! substitution and defaults, the node's seed and device, the content hash of
//! every input value and of every file the node reads. Inputs enter by
//! content, not by who made them, so a re-run node that produces the same
//! value leaves its descendants cached (early cutoff).

use std::fs;
use std::path::Path;

use serde_json::{json, Value as Json};

/// Everything a fingerprint is made of.
pub struct FingerprintInput<'a> {
    /// `category.name`.
    pub kind: &'a str,
    /// The kind's version.
    pub version: u32,
    /// Settings as written, after substitution and defaults.
    pub settings: &'a Json,
    /// The node's own seed.
    pub seed: u64,
    /// The resolved device (`cpu`, `cuda:0`).
    pub device: &'a str,
    /// Input port -> content hashes of its values, in order.
    pub inputs: &'a [(String, Vec<String>)],
    /// Content hashes of the files read, in settings order.
    pub files: &'a [String],
    /// Files the node writes (resolved against the output folder).
    pub writes: &'a [String],
}

/// The fingerprint (blake3, hex).
pub fn fingerprint(input: &FingerprintInput<'_>) -> String {
    let doc = json!({
        // A new kiln release may compute differently: its results are its own.
        "kiln": env!("CARGO_PKG_VERSION"),
        "kind": input.kind,
        "version": input.version,
        "settings": canonical(input.settings),
        "seed": input.seed,
        "device": input.device,
        "inputs": input.inputs,
        "files": input.files,
        "writes": input.writes,
    });
    blake3::hash(doc.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// The same JSON with object keys sorted at every level.
fn canonical(value: &Json) -> Json {
    match value {
        Json::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Json::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Json::Array(items) => Json::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A file or folder that could not be read for its content hash.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{}`: {source}", path.display())]
pub struct HashError {
    /// What could not be read.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl HashError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> HashError + '_ {
        move |source| HashError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Content hashes vouched for by a pipeline fetched by content (see
/// `bundle`): its input files are fetched only for the nodes that run, and
/// the others are fingerprinted by the hashes the bundle recorded.
static VOUCHED: std::sync::OnceLock<std::collections::HashMap<std::path::PathBuf, String>> =
    std::sync::OnceLock::new();

/// Takes `hashes` (path -> content hash) as the content of those paths for
/// the rest of the process, present or not; `false` if a table was set already.
pub fn vouch(hashes: std::collections::HashMap<std::path::PathBuf, String>) -> bool {
    VOUCHED.set(hashes).is_ok()
}

/// Whether `path`'s content hash was vouched for (it may not be fetched yet).
pub fn is_vouched(path: &Path) -> bool {
    VOUCHED.get().is_some_and(|v| v.contains_key(path))
}

/// Content hash of a file, or of a folder's files and their relative paths.
pub fn hash_path(path: &Path) -> Result<String, HashError> {
    if let Some(hash) = VOUCHED.get().and_then(|v| v.get(path)) {
        return Ok(hash.clone());
    }
    let meta = fs::metadata(path).map_err(HashError::at(path))?;
    if meta.is_file() {
        let mut hasher = blake3::Hasher::new();
        hasher.update_mmap(path).map_err(HashError::at(path))?;
        return Ok(hasher.finalize().to_hex().to_string());
    }
    let mut files = Vec::new();
    collect_files(path, path, &mut files)?;
    files.sort();
    let mut hasher = blake3::Hasher::new();
    for rel in files {
        let h = hash_path(&path.join(&rel))?;
        hasher.update(rel.as_bytes());
        hasher.update(h.as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), HashError> {
    let entries = fs::read_dir(dir).map_err(HashError::at(dir))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The seed of one node: derived from the pipeline's seed and the node's id,
/// so it does not depend on scheduling order or on other nodes.
pub fn node_seed(pipeline_seed: u64, node_id: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&pipeline_seed.to_le_bytes());
    hasher.update(node_id.as_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_order_does_not_matter_but_values_do() {
        let base = |settings: &Json| {
            fingerprint(&FingerprintInput {
                kind: "k.k",
                version: 1,
                settings,
                seed: 1,
                device: "cpu",
                inputs: &[],
                files: &[],
                writes: &[],
            })
        };
        let a = base(&json!({"a": 1, "b": {"x": 1, "y": 2}}));
        let b = base(&json!({"b": {"y": 2, "x": 1}, "a": 1}));
        let c = base(&json!({"a": 2, "b": {"x": 1, "y": 2}}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn node_seeds_differ_by_node_and_pipeline_seed() {
        assert_ne!(node_seed(1, "a"), node_seed(1, "b"));
        assert_ne!(node_seed(1, "a"), node_seed(2, "a"));
        assert_eq!(node_seed(1, "a"), node_seed(1, "a"));
    }
}
