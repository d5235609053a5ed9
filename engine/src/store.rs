//! Where kiln keeps bytes: a local folder or object storage, behind one API.
//!
//! A [`Store`] is a URL — `file:///path` (or a plain path), `s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix` — object storage opened
//! through the `object_store` crate. The cache, the bundles and `--out` use
//! only this API, so the local cache and a bucket share one code path above it.
//! Credentials and endpoints come from the standard environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ALLOW_HTTP`; `GOOGLE_*`; `AZURE_*`).
//!
//! `object_store` is async; the engine is not. Every call to object storage
//! is handed to one small runtime of the stores' own and waited for, which
//! works from any thread, including a runtime's (the server's). A local
//! folder is read and written with `std::fs` on the calling thread, with the
//! same guarantees, because a cached node must cost microseconds. Requests time out and retry
//! briefly: a store that cannot be reached is an error naming its URL within
//! seconds, not a hang.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig};

/// A place to keep bytes under keys (`a/b/c`).
#[derive(Clone)]
pub struct Store {
    url: String,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    /// A local folder, written with `std::fs` on the calling thread: the
    /// same guarantees (whole objects, put-if-absent by hard link) at a few
    /// microseconds per request, so a cached node costs what it did before
    /// stores existed.
    Folder(PathBuf),
    /// Object storage through `object_store`, on the stores' runtime.
    Object {
        inner: Arc<dyn ObjectStore>,
        prefix: Key,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Why a store could not be opened or answered.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no store kiln can open.
    #[error("`{url}` is not a store kiln can use: {why}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The store refused or could not be reached.
    #[error("the store at `{url}` failed on `{key}`: {why}")]
    Request {
        /// The store.
        url: String,
        /// The key asked for.
        key: String,
        /// The store's answer, or the connection's error.
        why: String,
    },
}

impl Store {
    /// Opens the store a URL names; a plain path is a local folder.
    /// Nothing is contacted or created until the first request.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let bad = |why: &str| StoreError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(Store::local(Path::new(url)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if scheme == "file" {
            if !rest.starts_with('/') {
                return Err(bad(
                    "a file URL needs an absolute path, e.g. file:///srv/kiln",
                ));
            }
            return Ok(Store::local(Path::new(rest)));
        }
        if bucket.is_empty() {
            return Err(bad("it names no bucket"));
        }
        // Timeouts go in as client settings, so that those the environment
        // gives (`AWS_ALLOW_HTTP`, proxies) stay.
        use object_store::{aws::AmazonS3ConfigKey as S3, azure::AzureConfigKey as Az};
        use object_store::{gcp::GoogleConfigKey as Gcs, ClientConfigKey as C};
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
            ..RetryConfig::default()
        };
        let (connect, timeout) = ("5 seconds", "300 seconds");
        let inner: Arc<dyn ObjectStore> = match scheme {
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_config(S3::Client(C::ConnectTimeout), connect)
                    .with_config(S3::Client(C::Timeout), timeout)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_config(Gcs::Client(C::ConnectTimeout), connect)
                    .with_config(Gcs::Client(C::Timeout), timeout)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            "az" | "azure" | "abfs" | "abfss" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_config(Az::Client(C::ConnectTimeout), connect)
                    .with_config(Az::Client(C::Timeout), timeout)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(&e.to_string()))?,
            ),
            other => {
                return Err(bad(&format!(
                    "`{other}://` is not supported (use file://, s3://, gs:// or az://)"
                )))
            }
        };
        Ok(Store {
            url: url.trim_end_matches('/').to_string(),
            backend: Backend::Object {
                inner,
                prefix: Key::from(prefix.trim_matches('/')),
            },
        })
    }

    /// A local folder (created on the first write).
    pub fn local(dir: &Path) -> Store {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Store {
            url: format!("file://{}", dir.display()),
            backend: Backend::Folder(dir),
        }
    }

    /// The store's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The folder, when the store is local.
    pub fn local_dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Folder(dir) => Some(dir),
            Backend::Object { .. } => None,
        }
    }

    /// A store below this one.
    pub fn child(&self, sub: &str) -> Store {
        let backend = match &self.backend {
            Backend::Folder(dir) => Backend::Folder(dir.join(sub)),
            Backend::Object { inner, prefix } => Backend::Object {
                inner: inner.clone(),
                prefix: key_in(prefix, sub),
            },
        };
        Store {
            url: format!("{}/{sub}", self.url),
            backend,
        }
    }

    fn failed(&self, key: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Request {
            url: self.url.clone(),
            key: key.to_string(),
            why: e.to_string(),
        }
    }

    /// One request: on a folder, `local` with the file's path, on this
    /// thread; on object storage, `remote` with the store and the full key,
    /// on the stores' runtime.
    fn request<T, F>(
        &self,
        key: &str,
        local: impl FnOnce(&Path) -> std::io::Result<T>,
        remote: impl FnOnce(Arc<dyn ObjectStore>, Key) -> F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, object_store::Error>> + Send + 'static,
    {
        match &self.backend {
            Backend::Folder(dir) => local(&dir.join(key)).map_err(|e| self.failed(key, e)),
            Backend::Object { inner, prefix } => block(remote(inner.clone(), key_in(prefix, key)))
                .map_err(|e| self.failed(key, e))?
                .map_err(|e| self.failed(key, e)),
        }
    }

    /// The bytes under `key`, or `None` when there are none.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.request(key, folder::get, |store, k| async move {
            match store.get(&k).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// The size of what is under `key`, or `None` when there is nothing.
    pub fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.request(key, folder::size, |store, k| async move {
            match store.head(&k).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Writes `bytes` under `key` unless something is there already (then
    /// leaves it: under content addressing it holds the same bytes).
    /// Returns whether this call wrote them. The object appears whole or
    /// not at all.
    pub fn put_if_absent(&self, key: &str, bytes: impl Into<Bytes>) -> Result<bool, StoreError> {
        let bytes = bytes.into();
        let local = bytes.clone();
        self.request(
            key,
            |path| folder::put(path, &local, false),
            |store, k| async move {
                let opts = PutOptions::from(PutMode::Create);
                match store.put_opts(&k, PutPayload::from(bytes), opts).await {
                    Ok(_) => Ok(true),
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => Ok(false),
                    Err(e) => Err(e),
                }
            },
        )
    }

    /// Writes `bytes` under `key`, replacing what was there.
    pub fn put(&self, key: &str, bytes: impl Into<Bytes>) -> Result<(), StoreError> {
        let bytes = bytes.into();
        let local = bytes.clone();
        self.request(
            key,
            |path| folder::put(path, &local, true).map(|_| ()),
            |store, k| async move { store.put(&k, PutPayload::from(bytes)).await.map(|_| ()) },
        )
    }

    /// Removes `key` (nothing there is fine).
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.request(key, folder::delete, |store, k| async move {
            match store.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// `key` (`a/b/c`) below `prefix`.
fn key_in(prefix: &Key, key: &str) -> Key {
    key.split('/')
        .filter(|p| !p.is_empty())
        .fold(prefix.clone(), |k, part| k.child(part))
}

/// A local folder's objects: files, written whole (to a temporary name
/// beside them, then linked or renamed into place).
mod folder {
    use std::io::ErrorKind;
    use std::path::Path;

    use bytes::Bytes;

    pub fn get(path: &Path) -> std::io::Result<Option<Bytes>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn size(path: &Path) -> std::io::Result<Option<u64>> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `bytes` at `path`; unless `replace`, only if nothing is
    /// there (a hard link fails on an existing name). Whether it wrote.
    pub fn put(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<bool> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let placed = std::fs::write(&tmp, bytes).and_then(|()| {
            if replace {
                std::fs::rename(&tmp, path).map(|()| true)
            } else {
                match std::fs::hard_link(&tmp, path) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            }
        });
        let _ = std::fs::remove_file(&tmp);
        placed
    }

    pub fn delete(path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Runs `fut` on the stores' runtime and waits for it.
fn block<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, &'static str> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    let runtime = RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("kiln-store")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or("cannot start the store's threads")?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| "the request stopped unexpectedly")
}

/// Whether a `--cache`/`--out` argument is a URL rather than a folder.
pub fn is_url(s: &str) -> bool {
    s.contains("://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_stores_put_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("file://{}", dir.path().display())).unwrap();
        assert_eq!(store.get("a/b").unwrap(), None);
        assert!(store.put_if_absent("a/b", b"one".to_vec()).unwrap());
        assert!(!store.put_if_absent("a/b", b"two".to_vec()).unwrap());
        assert_eq!(store.get("a/b").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(store.size("a/b").unwrap(), Some(3));
        assert!(dir.path().join("a/b").is_file());
        store.delete("a/b").unwrap();
        store.delete("a/b").unwrap();
        assert_eq!(store.size("a/b").unwrap(), None);
        assert_eq!(store.child("x").url(), store.url().to_string() + "/x");
    }

    #[test]
    fn urls_kiln_cannot_use_are_refused_with_the_reason() {
        let err = Store::open("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("ftp://") && err.contains("s3://"), "{err}");
        let err = Store::open("file://relative/x").unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
        let err = Store::open("s3:///x").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
    }

    #[test]
    fn an_unreachable_store_is_an_error_naming_it() {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_url("s3://bucket/p")
            .with_endpoint("http://127.0.0.1:9")
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .build()
            .unwrap();
        let store = Store {
            url: "s3://bucket/p".into(),
            backend: Backend::Object {
                inner: Arc::new(store),
                prefix: Key::from("p"),
            },
        };
        let err = store.get("entries/x").unwrap_err().to_string();
        assert!(
            err.contains("s3://bucket/p") && err.contains("entries/x"),
            "{err}"
        );
    }
}
