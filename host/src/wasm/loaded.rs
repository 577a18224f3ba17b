//! The compiled components kept loaded (least recently used evicted first) and the gate that
//! bounds compilations running at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Loaded;

/// The loaded components, least recently used evicted first past a count and a byte bound.
#[derive(Default)]
pub(super) struct LoadedSet {
    pub(super) map: HashMap<String, (Arc<Loaded>, u64)>,
    pub(super) bytes: u64,
    clock: u64,
}

impl LoadedSet {
    pub(super) fn get(&mut self, digest: &str) -> Option<Arc<Loaded>> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(digest).map(|(loaded, used)| {
            *used = clock;
            loaded.clone()
        })
    }

    /// Adds `loaded` and evicts the least recently used past the bounds; returns the digests
    /// evicted. (Calls in flight keep what they use until they end.)
    pub(super) fn insert(
        &mut self,
        loaded: Arc<Loaded>,
        max_count: usize,
        max_bytes: u64,
    ) -> Vec<String> {
        self.clock += 1;
        self.bytes += loaded.code_bytes;
        if let Some((old, _)) = self.map.insert(loaded.digest.clone(), (loaded, self.clock)) {
            self.bytes = self.bytes.saturating_sub(old.code_bytes);
        }
        let mut evicted = Vec::new();
        while self.map.len() > max_count || (self.bytes > max_bytes && !self.map.is_empty()) {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(digest, _)| digest.clone())
            else {
                break;
            };
            if let Some((old, _)) = self.map.remove(&oldest) {
                self.bytes = self.bytes.saturating_sub(old.code_bytes);
            }
            evicted.push(oldest);
        }
        evicted
    }
}

/// A counting semaphore for blocking threads: compilations running at once.
pub(super) struct CompileGate {
    running: Mutex<usize>,
    freed: std::sync::Condvar,
    max: usize,
}

/// One compile slot, given back when dropped.
pub(super) struct CompileSlot<'a>(&'a CompileGate);

impl CompileGate {
    pub(super) fn new(max: usize) -> Self {
        Self {
            running: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            max: max.max(1),
        }
    }

    pub(super) fn enter(&self) -> CompileSlot<'_> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *running >= self.max {
            running = self
                .freed
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        CompileSlot(self)
    }
}

impl Drop for CompileSlot<'_> {
    fn drop(&mut self) {
        let mut running = self
            .0
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running = running.saturating_sub(1);
        self.0.freed.notify_one();
    }
}
