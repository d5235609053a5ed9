//! A pipeline by content: its file and every file its nodes read, uploaded
//! once to a store under their content hashes, so that a machine holding
//! only the kiln binary and the store (a pod) can run any of its nodes.
//!
//! The bundle's record, `pipelines/<hash>`, names the pipeline file and each
//! input file as the pipeline writes it — relative to the pipeline's folder,
//! or `$KILN_DATA/…` for the data folder — with its content hash; the bytes
//! are under `files/<hash>`, stored once whoever uploads them. The record's
//! own hash names the bundle: `kiln run <hash> --cache URL` fetches it into a
//! fresh folder (checking every hash) and runs it there, fetching only the
//! input files of the nodes it runs; the others are fingerprinted by the
//! hashes the bundle recorded (`fingerprint::vouch`).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::store::{Store, StoreError};

/// Why a bundle could not be made or fetched.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A node reads a file a pod could not be given.
    #[error("node `{node}` reads `{}`, which is outside the pipeline's folder and the kiln data folder; move it beside the pipeline (or under $KILN_DATA) so it can be shipped by content", path.display())]
    Outside {
        /// The node.
        node: String,
        /// The file.
        path: PathBuf,
    },
    /// A local file could not be read or written.
    #[error("cannot {what} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store has no such bundle, or it is damaged.
    #[error("the store at `{url}` has no intact pipeline `{hash}`{why}; export the pipeline again to upload it")]
    Missing {
        /// The store.
        url: String,
        /// The bundle or file asked for.
        hash: String,
        /// More detail.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Serialize, Deserialize)]
struct Record {
    /// The pipeline file's name.
    pipeline: String,
    /// Its content hash.
    text: String,
    /// Input files as written (relative, or `$KILN_DATA/…`) and their content hashes.
    inputs: Vec<(String, String)>,
    /// Each path a node reads (a file or a folder) as written, and its
    /// content hash as the fingerprint takes it.
    reads: Vec<(String, String)>,
}

/// Uploads `plan`'s file and every file its nodes read; returns the
/// bundle's hash. What the store already holds is not sent again.
pub fn upload(plan: &Plan, store: &Store) -> Result<String, BundleError> {
    let text = read(&plan.file)?;
    let (mut inputs, mut reads) = (Vec::new(), Vec::new());
    for node in &plan.nodes {
        for path in &node.files {
            let outside = || BundleError::Outside {
                node: node.id.to_string(),
                path: path.clone(),
            };
            let written = written_form(path, &plan.base_dir).map_err(|_| outside())?;
            let hash = crate::fingerprint::hash_path(path).map_err(|e| BundleError::Io {
                what: "read",
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            reads.push((written, hash));
            for (file, written) in files_of(path, &plan.base_dir).map_err(|_| outside())? {
                let bytes = read(&file)?;
                inputs.push((written, put_file(store, bytes)?));
            }
        }
    }
    for list in [&mut inputs, &mut reads] {
        list.sort();
        list.dedup();
    }
    let record = Record {
        pipeline: plan
            .file
            .file_name()
            .map_or("pipeline.yaml".into(), |n| n.to_string_lossy().into_owned()),
        text: put_file(store, text)?,
        inputs,
        reads,
    };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    let hash = blake3::hash(&bytes).to_hex().to_string();
    store.put_if_absent(&format!("pipelines/{hash}"), bytes)?;
    Ok(hash)
}

/// A fetched bundle: its pipeline file, written; its input files fetched
/// on demand ([`Fetched::materialize`]), their hashes vouched for meanwhile.
pub struct Fetched {
    /// The pipeline file.
    pub file: PathBuf,
    /// The folder standing for `$KILN_DATA`.
    pub data: PathBuf,
    base: PathBuf,
    hash: String,
    store: Store,
    record: Record,
}

/// Fetches bundle `hash` into `dir`: the pipeline under `dir/pipeline/`,
/// checked against its hash. Input files are fetched by
/// [`Fetched::materialize`] into `dir/pipeline/` and (data-folder files)
/// `dir/data/`; make `data` the data folder and vouch for [`Fetched::reads`]
/// before loading the pipeline.
pub fn fetch(store: &Store, hash: &str, dir: &Path) -> Result<Fetched, BundleError> {
    let bytes = store
        .get(&format!("pipelines/{hash}"))?
        .filter(|b| blake3::hash(b).to_hex().as_str() == hash)
        .ok_or_else(|| missing(store, hash, String::new()))?;
    let record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| missing(store, hash, format!(" (its record does not parse: {e})")))?;
    let fetched = Fetched {
        file: PathBuf::new(),
        data: dir.join("data"),
        base: dir.join("pipeline"),
        hash: hash.to_string(),
        store: store.clone(),
        record,
    };
    let file = fetched.target(&fetched.record.pipeline)?;
    fetched.get(&file, &fetched.record.text, &fetched.record.pipeline)?;
    Ok(Fetched { file, ..fetched })
}

impl Fetched {
    /// Every path the pipeline's nodes read, with its recorded content hash.
    pub fn reads(&self) -> Result<std::collections::HashMap<PathBuf, String>, BundleError> {
        self.record
            .reads
            .iter()
            .map(|(written, hash)| Ok((self.target(written)?, hash.clone())))
            .collect()
    }

    /// Fetches the input files at or below `paths` (what the nodes about
    /// to run read), each checked against its hash.
    pub fn materialize(&self, paths: &[PathBuf]) -> Result<(), BundleError> {
        for (written, hash) in &self.record.inputs {
            let target = self.target(written)?;
            if paths.iter().any(|p| target.starts_with(p)) && !target.exists() {
                self.get(&target, hash, written)?;
            }
        }
        Ok(())
    }

    fn target(&self, written: &str) -> Result<PathBuf, BundleError> {
        let bad = || missing(&self.store, &self.hash, format!(" (bad path `{written}`)"));
        Ok(match crate::data::in_folder(written) {
            Some(rest) => self.data.join(safe(rest).ok_or_else(bad)?),
            None => self.base.join(safe(written).ok_or_else(bad)?),
        })
    }

    fn get(&self, target: &Path, hash: &str, written: &str) -> Result<(), BundleError> {
        let bytes = self
            .store
            .get(&format!("files/{hash}"))?
            .filter(|b| blake3::hash(b).to_hex().as_str() == hash)
            .ok_or_else(|| {
                missing(
                    &self.store,
                    &self.hash,
                    format!(" (its file `{written}` is missing or damaged)"),
                )
            })?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|source| BundleError::Io {
                what: "create",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(target, &bytes).map_err(|source| BundleError::Io {
            what: "write",
            path: target.to_path_buf(),
            source,
        })
    }
}

fn missing(store: &Store, hash: &str, why: String) -> BundleError {
    BundleError::Missing {
        url: store.url().to_string(),
        hash: hash.to_string(),
        why,
    }
}

/// Whether `arg` names a bundle (a content hash) rather than a file.
pub fn is_hash(arg: &str) -> bool {
    arg.len() == 64 && arg.bytes().all(|b| b.is_ascii_hexdigit())
}

fn put_file(store: &Store, bytes: Vec<u8>) -> Result<String, StoreError> {
    let hash = blake3::hash(&bytes).to_hex().to_string();
    let key = format!("files/{hash}");
    if store.size(&key)? != Some(bytes.len() as u64) {
        store.put_if_absent(&key, bytes)?;
    }
    Ok(hash)
}

fn read(path: &Path) -> Result<Vec<u8>, BundleError> {
    std::fs::read(path).map_err(|source| BundleError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// The path a pipeline writes for `file`: relative to `base`, or
/// `$KILN_DATA/…`; `Err` when it is outside both folders.
fn written_form(file: &Path, base: &Path) -> Result<String, ()> {
    let (prefix, rel) = match file.strip_prefix(base) {
        Ok(rel) => ("", rel),
        Err(_) => (
            "$KILN_DATA/",
            file.strip_prefix(crate::data::folder()).map_err(|_| ())?,
        ),
    };
    let parts: Vec<String> = rel
        .components()
        .map(|c| match c {
            Component::Normal(p) => Ok(p.to_string_lossy().into_owned()),
            _ => Err(()),
        })
        .collect::<Result<_, ()>>()?;
    Ok(format!("{prefix}{}", parts.join("/")))
}

/// The files under `path` (itself, or a folder's files), each with its written form.
fn files_of(path: &Path, base: &Path) -> Result<Vec<(PathBuf, String)>, ()> {
    let mut files = Vec::new();
    collect(path, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| Ok((f.clone(), written_form(&f, base)?)))
        .collect()
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                collect(&entry.path(), out);
            }
        }
        Err(_) => out.push(path.to_path_buf()),
    }
}

/// A relative path with plain components only.
fn safe(written: &str) -> Option<PathBuf> {
    let path = Path::new(written);
    let ok = !written.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_materialised() {
        assert!(safe("data/iris.csv").is_some());
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(safe(bad).is_none(), "{bad}");
        }
        assert!(is_hash(&"a".repeat(64)) && !is_hash("iris.yaml"));
    }

    #[test]
    fn files_outside_both_folders_are_refused() {
        let base = Path::new("/p");
        assert!(files_of(Path::new("/elsewhere/x.csv"), base).is_err());
        assert!(files_of(Path::new("/p/../x.csv"), base).is_err());
    }
}
