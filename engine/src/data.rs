//! The kiln data folder: where data too large to ship with a pipeline lives
//! (MNIST, pre-trained encoders, language models), fetched once by
//! `scripts/fetch-data.sh`.
//!
//! A pipeline names it by starting an input path with `$KILN_DATA/`
//! (`images: $KILN_DATA/mnist/train-images.idx3-ubyte`); every other relative
//! input path is relative to the pipeline file. The folder is `$KILN_DATA`,
//! else `$XDG_CACHE_HOME/kiln/data`, else `~/.cache/kiln/data`.

use std::path::{Path, PathBuf};

/// What an input path starts with to be read from the data folder.
pub const PREFIX: &str = "$KILN_DATA";

/// The command that fills the data folder, for messages.
pub const FETCH_COMMAND: &str = "scripts/fetch-data.sh";

static FOLDER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `dir` the data folder for the rest of the process (a pipeline
/// fetched by content brings its own); `false` if one was set already.
pub fn set_folder(dir: PathBuf) -> bool {
    FOLDER.set(dir).is_ok()
}

/// The kiln data folder (it may not exist yet).
pub fn folder() -> PathBuf {
    if let Some(dir) = FOLDER.get() {
        return dir.clone();
    }
    if let Some(dir) = std::env::var_os("KILN_DATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("kiln").join("data")
}

/// The part of `written` below the data folder, when it names the data folder.
pub fn in_folder(written: &str) -> Option<&str> {
    let rest = written.strip_prefix(PREFIX)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix(['/', '\\'])
}

/// Where an input path as written in a pipeline file points: into the data
/// folder for `$KILN_DATA/…`, else relative to `base` (the file's folder).
pub fn resolve(base: &Path, written: &str) -> PathBuf {
    match in_folder(written) {
        Some(rest) => folder().join(rest),
        None => base.join(written),
    }
}

/// Fetches data-folder items with the repository's own fetch script and
/// returns the folder. For tests and benchmarks run from a source checkout;
/// `repo` is the repository root.
pub fn fetch(repo: &Path, items: &[&str]) -> Result<PathBuf, String> {
    let script = repo.join("scripts/fetch_data.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(items)
        .output()
        .map_err(|e| format!("could not run `python3 {}`: {e}", script.display()))?;
    if out.status.success() {
        Ok(folder())
    } else {
        Err(format!(
            "`{FETCH_COMMAND} {}` failed:\n{}",
            items.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_prefix_followed_by_a_separator_names_the_folder() {
        assert_eq!(in_folder("$KILN_DATA/mnist/x"), Some("mnist/x"));
        assert_eq!(in_folder("$KILN_DATA"), Some(""));
        assert_eq!(in_folder("$KILN_DATAX/y"), None);
        assert_eq!(in_folder("data/iris.csv"), None);
        let base = Path::new("/p");
        assert_eq!(
            resolve(base, "data/iris.csv"),
            Path::new("/p/data/iris.csv")
        );
        assert_eq!(resolve(base, "$KILN_DATA/m"), folder().join("m"));
    }
}
