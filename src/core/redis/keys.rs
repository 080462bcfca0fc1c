//! Redis key names of a zone's counters.
//!
//! With prefix `p` and zone `z`:
//!
//! | what | key |
//! |---|---|
//! | the zone's default counter | `p z` |
//! | keyed counter `k` | `p z : k` |
//! | its metadata hash | `p z ; k` |
//! | the zone's metadata hash (and the default counter's) | `p z ;` |
//!
//! Zone names never contain `:` or `;`, so the first separator after the zone
//! name says what a key is and no two names collide, whatever bytes `k` holds.
//! The zone metadata's fields (`epoch`, `gen`, `fence`, `run`) and a counter's
//! (`g`, `f`, `u`, and `r`, its durable ceiling) do not clash, so the default
//! counter shares the zone's hash.

/// Prefix of every key when the configuration sets none.
pub const DEFAULT_PREFIX: &[u8] = b"ticket:";
/// Longest counter key, as for shared-memory zones (longer is a 400).
pub const MAX_KEY_LEN: usize = 64;
/// Longest zone name of a Redis zone.
pub const MAX_ZONE_NAME_LEN: usize = 64;

/// Whether `name` may name a Redis zone: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn valid_zone_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ZONE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Why a counter key was refused; the edge answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong,
}

/// The key names of one zone, built once at configuration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneKeys {
    /// `prefix + zone`: the default counter's key and the stem of every other.
    stem: Vec<u8>,
    /// `prefix + zone + ";"`.
    zone_meta: Vec<u8>,
}

impl ZoneKeys {
    /// `None` if the zone name is not [`valid_zone_name`].
    pub fn new(prefix: &[u8], zone: &str) -> Option<Self> {
        if !valid_zone_name(zone) {
            return None;
        }
        let mut stem = Vec::with_capacity(prefix.len().saturating_add(zone.len()));
        stem.extend_from_slice(prefix);
        stem.extend_from_slice(zone.as_bytes());
        let mut zone_meta = stem.clone();
        zone_meta.push(b';');
        Some(ZoneKeys { stem, zone_meta })
    }

    /// The zone's metadata hash (epoch, generation counter, fence).
    pub fn zone_meta(&self) -> &[u8] {
        &self.zone_meta
    }

    /// `prefix + zone`, the default counter's key.
    pub fn stem(&self) -> &[u8] {
        &self.stem
    }

    /// Whether a key of one zone can be a key of the other on one Redis
    /// database: the stems are equal (prefix `a` with zone `bc`, prefix `ab`
    /// with zone `c`), or one continues the other past a separator (prefix
    /// `ticket:a:` makes zone `b`'s default counter zone `a`'s key `b`).
    /// Such zones would share counters under different metadata.
    pub fn overlaps(&self, other: &ZoneKeys) -> bool {
        let continues = |long: &[u8], short: &[u8]| {
            long.len() > short.len()
                && long.starts_with(short)
                && matches!(long[short.len()], b':' | b';')
        };
        self.stem == other.stem
            || continues(&self.stem, &other.stem)
            || continues(&other.stem, &self.stem)
    }

    /// The three keys a script on counter `key` (`None`: the default counter)
    /// touches. Built once per counter and worker, then reused.
    pub fn counter(&self, key: Option<&[u8]>) -> Result<CounterKeys, KeyError> {
        let Some(key) = key else {
            return Ok(CounterKeys {
                counter: self.stem.clone(),
                counter_meta: self.zone_meta.clone(),
                zone_meta: self.zone_meta.clone(),
            });
        };
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        let len = self.stem.len().saturating_add(1).saturating_add(key.len());
        let mut counter = Vec::with_capacity(len);
        counter.extend_from_slice(&self.stem);
        counter.push(b':');
        counter.extend_from_slice(key);
        let mut counter_meta = Vec::with_capacity(len);
        counter_meta.extend_from_slice(&self.stem);
        counter_meta.push(b';');
        counter_meta.extend_from_slice(key);
        Ok(CounterKeys {
            counter,
            counter_meta,
            zone_meta: self.zone_meta.clone(),
        })
    }
}

/// The keys of one counter, in the order the scripts take them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CounterKeys {
    /// Holds the count of tickets issued, a plain integer.
    pub counter: Vec<u8>,
    /// Hash with the counter's generation `g`, fence applied `f`, last use `u`,
    /// durable ceiling `r`.
    pub counter_meta: Vec<u8>,
    /// Hash with the zone's `epoch`, `gen` and `fence`.
    pub zone_meta: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn overlapping_zones() {
        let keys = |prefix: &[u8], zone| ZoneKeys::new(prefix, zone).unwrap();
        let a = keys(DEFAULT_PREFIX, "a");
        assert!(a.overlaps(&keys(b"ticket:a:", "b")));
        assert!(keys(b"ticket:a;", "b").overlaps(&a));
        assert!(keys(b"x", "bc").overlaps(&keys(b"xb", "c")));
        assert!(a.overlaps(&a));
        // A longer zone name is another zone, whatever follows it.
        assert!(!a.overlaps(&keys(DEFAULT_PREFIX, "ab")));
        assert!(!a.overlaps(&keys(b"ticket:a-", "b")));
        assert!(!a.overlaps(&keys(b"other:", "a")));
        // Every key of zones said apart is apart.
        let b = keys(b"ticket:a-", "b");
        let names = |z: &ZoneKeys| {
            let mut all = vec![z.stem().to_vec(), z.zone_meta().to_vec()];
            for key in [&b"b"[..], b"x", b"b;c", b":"] {
                let c = z.counter(Some(key)).unwrap();
                all.push(c.counter);
                all.push(c.counter_meta);
            }
            all
        };
        let seen: HashSet<Vec<u8>> = names(&a).into_iter().collect();
        assert!(names(&b).iter().all(|k| !seen.contains(k)));
        // ...and of zones that overlap, some are shared.
        let c = keys(b"ticket:a:", "b");
        assert!(names(&c).iter().any(|k| seen.contains(k)));
    }

    #[test]
    fn zone_names() {
        assert!(valid_zone_name("seats"));
        assert!(valid_zone_name("A-z_0.9"));
        assert!(valid_zone_name(&"z".repeat(64)));
        assert!(!valid_zone_name(&"z".repeat(65)));
        assert!(!valid_zone_name(""));
        for bad in ["a:b", "a;b", "a b", "a/b", "é", "a{b}"] {
            assert!(!valid_zone_name(bad), "{bad}");
        }
        assert_eq!(ZoneKeys::new(DEFAULT_PREFIX, "a:b"), None);
    }

    #[test]
    fn names() {
        let zone = ZoneKeys::new(DEFAULT_PREFIX, "seats").unwrap();
        assert_eq!(zone.zone_meta(), b"ticket:seats;");
        let default = zone.counter(None).unwrap();
        assert_eq!(default.counter, b"ticket:seats");
        assert_eq!(default.counter_meta, b"ticket:seats;");
        assert_eq!(default.zone_meta, b"ticket:seats;");
        let keyed = zone.counter(Some(b"gala")).unwrap();
        assert_eq!(keyed.counter, b"ticket:seats:gala");
        assert_eq!(keyed.counter_meta, b"ticket:seats;gala");
        assert_eq!(keyed.zone_meta, b"ticket:seats;");
        let other = ZoneKeys::new(b"p/", "z").unwrap();
        assert_eq!(other.counter(Some(b"k")).unwrap().counter, b"p/z:k");
    }

    #[test]
    fn key_lengths() {
        let zone = ZoneKeys::new(DEFAULT_PREFIX, "z").unwrap();
        assert_eq!(zone.counter(Some(b"")), Err(KeyError::Empty));
        assert!(zone.counter(Some(&[b'k'; 64])).is_ok());
        assert_eq!(zone.counter(Some(&[b'k'; 65])), Err(KeyError::TooLong));
    }

    #[test]
    fn no_collisions() {
        // Zones whose names are prefixes of each other, keys holding the
        // separators: every name is distinct.
        let zones = ["a", "ab", "a.b", "a-b"];
        let keys: [&[u8]; 7] = [b"b", b":b", b";b", b";", b":", b"b;c", b"b:c"];
        let mut seen = HashSet::new();
        for zone in zones {
            let zone = ZoneKeys::new(DEFAULT_PREFIX, zone).unwrap();
            assert!(seen.insert(zone.zone_meta().to_vec()));
            assert!(seen.insert(zone.counter(None).unwrap().counter));
            for key in keys {
                let names = zone.counter(Some(key)).unwrap();
                assert!(seen.insert(names.counter));
                assert!(seen.insert(names.counter_meta));
            }
        }
    }
}
