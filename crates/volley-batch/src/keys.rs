//! 64-bit keys for `custom_id`s and line numbers, and the sets that hold them.
//!
//! A run keeps one key per `custom_id` it has seen (to find duplicates) and one per recorded
//! outcome (to resume). Holding 8-byte keyed hashes instead of the ids keeps that to about
//! 10–20 bytes per line whatever the ids' length; the module docs of `batch` give the
//! collision odds.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// Derives the keys. One instance serves a whole run: the resume scan and the reader must
/// agree, and the key is random per process, so nothing depends on it across runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keys {
    state: RandomState,
}

/// A set of keys. The keys are already uniform hashes, so the set does not hash them again.
pub(crate) type KeySet = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// A count per key; as [`KeySet`], the keys are not hashed again.
pub(crate) type KeyCounts = HashMap<u64, u32, BuildHasherDefault<PassThrough>>;

impl Keys {
    /// A fresh random key.
    pub(crate) fn new() -> Keys {
        Keys::default()
    }

    /// The key of a line identified by its `custom_id`.
    pub(crate) fn custom_id(&self, id: &str) -> u64 {
        // The tag keeps the two namespaces apart.
        self.state.hash_one((b'c', id))
    }

    /// The key of a line identified by its number (a line without a usable `custom_id`).
    pub(crate) fn line(&self, line: u64) -> u64 {
        self.state.hash_one((b'l', line))
    }

    /// The key of a request by what it asks (its path, and its body in canonical JSON):
    /// lines that ask the same share it, however their JSON is laid out.
    pub(crate) fn request(&self, (path, body): (&str, &[u8])) -> u64 {
        self.state.hash_one((b'r', path, body))
    }

    /// A random 64-bit number (for record ids that must differ between runs).
    pub(crate) fn nonce(&self) -> u64 {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.state.hash_one((b'n', time, std::process::id()))
    }
}

/// The hasher of [`KeySet`]: it passes a `u64` through unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64`s are hashed with this hasher; fold anything else in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_sets() {
        let keys = Keys::new();
        assert_eq!(keys.custom_id("a"), keys.custom_id("a"));
        assert_ne!(keys.custom_id("a"), keys.custom_id("b"));
        assert_ne!(keys.custom_id("1"), keys.line(1));
        let mut set = KeySet::default();
        assert!(set.insert(keys.line(7)));
        assert!(!set.insert(keys.line(7)));
        assert!(set.contains(&keys.line(7)));
        assert_ne!(
            Keys::new().custom_id("a"),
            keys.custom_id("a"),
            "random per instance"
        );
    }
}
