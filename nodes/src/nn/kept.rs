//! Loaded models kept in memory: built once per content and device, shared
//! by every node and request that asks again, the oldest dropped beyond a
//! bound. Keys are content hashes, never paths, so new weights are a new
//! entry and an old one can't answer for them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use candle_core::Device;
use kiln_engine::NodeError;

/// A content hash and a device.
type Key = (String, String);

/// At most `capacity` loaded `T`s, by (content hash, device), oldest first.
pub struct Kept<T> {
    capacity: usize,
    entries: Mutex<VecDeque<(Key, Arc<T>)>>,
}

impl<T> Kept<T> {
    /// An empty store holding at most `capacity` entries.
    pub const fn new(capacity: usize) -> Self {
        Kept {
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// The entry for `content` on `device`, loaded by `load` if absent (the
    /// lock is not held while loading).
    pub fn get_or_load(
        &self,
        content: &str,
        device: &Device,
        load: impl FnOnce() -> Result<T, NodeError>,
    ) -> Result<Arc<T>, NodeError> {
        let key = (content.to_string(), format!("{device:?}"));
        if let Some((_, found)) = self.lock().iter().find(|(k, _)| *k == key) {
            return Ok(found.clone());
        }
        let loaded = Arc::new(load()?);
        let mut entries = self.lock();
        if let Some((_, found)) = entries.iter().find(|(k, _)| *k == key) {
            return Ok(found.clone()); // another thread loaded it meanwhile
        }
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back((key, loaded.clone()));
        Ok(loaded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Key, Arc<T>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_load_per_content_and_the_oldest_goes_first() {
        let kept = Kept::new(2);
        let mut loads = 0;
        let mut get = |content: &str| {
            kept.get_or_load(content, &Device::Cpu, || {
                loads += 1;
                Ok(content.to_string())
            })
            .unwrap()
        };
        let a = get("a");
        assert!(Arc::ptr_eq(&a, &get("a")));
        get("b");
        get("c"); // drops "a"
        assert!(!Arc::ptr_eq(&a, &get("a")));
        assert_eq!(loads, 4);
    }
}
