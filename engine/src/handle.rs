//! The values a run holds: each output in memory or in a cache entry
//! (loaded on first use), and results kept in memory across runs.

use std::sync::{Arc, Mutex, OnceLock};

use crate::cache::Entry;
use crate::error::NodeError;
use crate::ids::PortName;
use crate::value::Value;

/// A node's outputs, by port.
pub type NodeOutputs = Vec<(PortName, Arc<Handle>)>;

/// Results by fingerprint, kept in memory for the runs that share it: a
/// value one trial of a sweep computed or loaded is the next trial's
/// without reading the cache again.
#[derive(Default)]
pub struct Memo(Mutex<std::collections::HashMap<String, NodeOutputs>>);

impl Memo {
    pub(crate) fn get(&self, fingerprint: &str) -> Option<NodeOutputs> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(fingerprint)
            .cloned()
    }

    pub(crate) fn keep(&self, fingerprint: &str, outputs: &NodeOutputs) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fingerprint.to_string(), outputs.clone());
    }
}

/// An output value: in memory, or in a cache entry and loaded on first use.
pub struct Handle {
    hash: String,
    value: OnceLock<Value>,
    source: Option<(Arc<Entry>, PortName)>,
}

impl Handle {
    /// A value in a cache entry, read when first needed.
    pub(crate) fn cached(entry: Arc<Entry>, port: PortName, hash: &str) -> Self {
        Handle {
            hash: hash.to_string(),
            value: OnceLock::new(),
            source: Some((entry, port)),
        }
    }

    pub(crate) fn memory(value: Value) -> Self {
        Handle {
            hash: value.content_hash().to_string(),
            value: OnceLock::from(value),
            source: None,
        }
    }

    /// The value's content hash (known without loading it).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The value, loaded from the cache if needed.
    pub fn get(&self) -> Result<&Value, NodeError> {
        if let Some(v) = self.value.get() {
            return Ok(v);
        }
        let (entry, port) = self
            .source
            .as_ref()
            .ok_or_else(|| NodeError::new("value is neither in memory nor in the cache"))?;
        let loaded = entry
            .load(port)
            .map_err(|e| NodeError::caused_by(e.to_string(), e))?;
        Ok(self.value.get_or_init(|| loaded))
    }
}
