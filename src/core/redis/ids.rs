//! Maps keyed by the worker's own request and command ids.
//!
//! Every request waiting for Redis is put in such a map and taken out again,
//! so its hash is on the hot path. The ids are sequential numbers the worker
//! makes (never a client's bytes), so a multiplication spreads them well
//! enough and there is no flooding to defend against, unlike the keys of
//! counters, which keep std's keyed hash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from ids to `V`.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing: the id times 2^64 / φ, whose high bits (which the
/// table's control bytes use) and low bits (its bucket index) both change
/// with every id.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(GOLDEN);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let mut low = std::collections::HashSet::new();
        let mut high = std::collections::HashSet::new();
        for id in 1..=1024u64 {
            let h = build.hash_one(id);
            low.insert(h & 1023);
            high.insert(h >> 57);
        }
        // a bijection on the low bits; every control byte value in use
        assert_eq!(low.len(), 1024);
        assert_eq!(high.len(), 128);
    }

    #[test]
    fn a_map_of_ids() {
        let mut map: IdMap<&str> = IdMap::default();
        for id in 0..10_000u64 {
            map.insert(id, "x");
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.remove(&5000), Some("x"));
        assert!(!map.contains_key(&5000));
    }
}
