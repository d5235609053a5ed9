//! Where a command's pipeline, cache and results live: `--cache URL`,
//! `--out DIR|URL`, and a pipeline named by content hash (fetched from the
//! cache's store into a fresh folder, as a pod running one node does).

use std::path::{Path, PathBuf};

use kiln_engine::{Store, Stores};

use crate::failure::Failure;

/// The resolved places of one command.
pub struct Place {
    /// The pipeline file to load.
    pub file: PathBuf,
    /// The cache's and the output's stores.
    pub stores: Stores,
    /// Where sinks write: `--out DIR`, a staging folder for `--out URL`,
    /// or `None` for the default beside the pipeline.
    pub out_dir: Option<PathBuf>,
    /// A pipeline fetched by content: its input files come on demand.
    bundle: Option<kiln_engine::bundle::Fetched>,
    /// Keeps fetched pipelines and staged outputs until the command ends.
    _scratch: Option<tempfile::TempDir>,
}

impl Place {
    /// Fetches the input files of the nodes a run may execute (of a
    /// pipeline fetched by content; a local pipeline has them already).
    pub fn fetch_inputs(
        &self,
        plan: &kiln_engine::Plan,
        selection: &kiln_engine::Selection,
    ) -> Result<(), Failure> {
        let Some(bundle) = &self.bundle else {
            return Ok(());
        };
        let paths: Vec<PathBuf> = match selection {
            kiln_engine::Selection::Only(idx) => plan.node(*idx).files.clone(),
            _ => plan.nodes.iter().flat_map(|n| n.files.clone()).collect(),
        };
        bundle
            .materialize(&paths)
            .map_err(|e| Failure::Run(format!("error: {e}")))
    }
}

/// Opens a store named on the command line; a bad URL is a usage error.
pub fn open(flag: &str, url: &str) -> Result<Store, Failure> {
    Store::open(url).map_err(|e| Failure::Invalid(format!("error: `{flag} {url}`: {e}")))
}

/// The stores of a command that takes `--cache` only (`watch`, `serve`).
pub fn cache_only(cache: Option<&str>) -> Result<Stores, Failure> {
    Ok(Stores {
        cache: cache.map(|url| open("--cache", url)).transpose()?,
        out: None,
    })
}

/// Resolves `file`, `--cache` and `--out`.
pub fn resolve(file: &Path, cache: Option<&str>, out: Option<&str>) -> Result<Place, Failure> {
    let cache = cache.map(|url| open("--cache", url)).transpose()?;
    let needs_scratch = out.is_some_and(kiln_engine::store::is_url) || names_bundle(file);
    let scratch = if needs_scratch {
        Some(
            tempfile::Builder::new()
                .prefix("kiln-")
                .tempdir()
                .map_err(|e| {
                    Failure::Run(format!("error: cannot create a temporary folder: {e}"))
                })?,
        )
    } else {
        None
    };
    let scratch_dir = scratch.as_ref().map(|d| d.path().to_path_buf());
    let (file, bundle) = match (names_bundle(file), &cache, &scratch_dir) {
        (true, Some(store), Some(dir)) => {
            let hash = file.to_string_lossy();
            let fetched = kiln_engine::bundle::fetch(store, &hash, &dir.join("bundle"))
                .map_err(|e| Failure::Invalid(format!("error: {e}")))?;
            kiln_engine::data::set_folder(fetched.data.clone());
            let reads = fetched
                .reads()
                .map_err(|e| Failure::Invalid(format!("error: {e}")))?;
            kiln_engine::fingerprint::vouch(reads);
            (fetched.file.clone(), Some(fetched))
        }
        (true, None, _) => {
            return Err(Failure::Invalid(format!(
                "error: `{}` is not a file; a pipeline named by its content hash is fetched from the cache: add `--cache URL`",
                file.display()
            )))
        }
        _ => (file.to_path_buf(), None),
    };
    let (out_store, out_dir) = match out {
        Some(url) if kiln_engine::store::is_url(url) => (
            Some(open("--out", url)?),
            scratch_dir.map(|d| d.join("out")),
        ),
        Some(dir) => (None, Some(PathBuf::from(dir))),
        None => (None, None),
    };
    Ok(Place {
        file,
        stores: Stores {
            cache,
            out: out_store,
        },
        out_dir,
        bundle,
        _scratch: scratch,
    })
}

/// A pipeline argument that is a content hash and no file.
fn names_bundle(file: &Path) -> bool {
    !file.exists() && kiln_engine::bundle::is_hash(&file.to_string_lossy())
}

/// Uploads the run-level files (`run.json`, `metrics.json`) when `--out` is a store.
pub fn publish(stores: &Stores, out_dir: &Path, names: &[&str]) -> Result<(), Failure> {
    let Some(store) = &stores.out else {
        return Ok(());
    };
    for name in names {
        let path = out_dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        store
            .put(name, bytes)
            .map_err(|e| Failure::Run(format!("error: {e}")))?;
    }
    Ok(())
}
