//! The counters a log describes: its records applied in order, later ones
//! winning.

use std::collections::HashMap;

use super::format::{Record, FRAME_OVERHEAD, HEADER_LEN};
use super::ErrorKind;

/// A counter as the log last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The first ticket; `None` while not fixed yet.
    pub start: Option<u64>,
    /// Counts below it may have been handed out: the next ticket is
    /// `start + mark`.
    pub mark: u64,
    /// The nginx instance that wrote the mark.
    pub instance: u64,
    /// Unix time of the last use; 0 when unknown.
    pub used: u64,
}

/// The zone's default counter, kept apart so lookups need no allocation.
#[derive(Debug, Clone, Default)]
pub struct Index {
    default: Option<Entry>,
    keys: HashMap<Vec<u8>, Entry>,
    max_keys: usize,
    /// Sum of the keys' lengths, for the compacted size.
    key_bytes: u64,
}

/// A mark record without its key.
const MARK_LEN: u64 = 2 + 4 * 8;

impl Index {
    /// An empty index for a zone that fits `max_keys` keys (the default
    /// counter not counted).
    pub fn new(max_keys: usize) -> Self {
        Index {
            max_keys,
            ..Index::default()
        }
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    pub fn get(&self, key: Option<&[u8]>) -> Option<&Entry> {
        match key {
            None => self.default.as_ref(),
            Some(key) => self.keys.get(key),
        }
    }

    /// Counters with a key (the default counter not counted).
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// All counters.
    pub fn len(&self) -> usize {
        self.keys.len() + usize::from(self.default.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every counter, the default one first, then keys in no set order.
    pub fn iter(&self) -> impl Iterator<Item = (Option<&[u8]>, &Entry)> {
        let default = self.default.as_ref().map(|e| (None, e));
        let keys = self.keys.iter().map(|(k, e)| (Some(k.as_slice()), e));
        default.into_iter().chain(keys)
    }

    /// Applies one record; records come checked, from the decoder or through
    /// the encoder.
    pub fn apply(&mut self, record: &Record) -> Result<(), ErrorKind> {
        match record {
            Record::Mark {
                key,
                instance,
                start,
                mark,
                used,
            } => {
                let entry = Entry {
                    start: *start,
                    mark: *mark,
                    instance: *instance,
                    used: *used,
                };
                match key {
                    None => self.default = Some(entry),
                    Some(key) => {
                        if let Some(slot) = self.keys.get_mut(key.as_slice()) {
                            *slot = entry;
                        } else {
                            if self.keys.len() >= self.max_keys {
                                return Err(ErrorKind::TooManyKeys(self.max_keys));
                            }
                            self.key_bytes = self.key_bytes.saturating_add(key.len() as u64);
                            self.keys.insert(key.clone(), entry);
                        }
                    }
                }
            }
            Record::Retire { key, .. } => {
                if self.keys.remove(key.as_slice()).is_some() {
                    self.key_bytes = self.key_bytes.saturating_sub(key.len() as u64);
                }
            }
        }
        Ok(())
    }

    pub fn apply_all(&mut self, records: &[Record]) -> Result<(), ErrorKind> {
        records.iter().try_for_each(|r| self.apply(r))
    }

    /// Whether applying `records` (distinct keys, as in one frame) keeps the
    /// index within `max_keys`: checked before they are written.
    pub fn fits(&self, records: &[Record]) -> Result<(), ErrorKind> {
        let mut keys = self.keys.len();
        for record in records {
            match record {
                Record::Mark { key: Some(key), .. } if !self.keys.contains_key(key) => {
                    keys = keys.saturating_add(1)
                }
                Record::Retire { key, .. } if self.keys.contains_key(key) => {
                    keys = keys.saturating_sub(1)
                }
                _ => {}
            }
        }
        if keys > self.max_keys {
            return Err(ErrorKind::TooManyKeys(self.max_keys));
        }
        Ok(())
    }

    /// One mark record per counter, the default counter first, then keys in
    /// byte order: the contents of a compacted file.
    pub fn records(&self) -> Vec<Record> {
        let mark = |key: Option<Vec<u8>>, e: &Entry| Record::Mark {
            key,
            instance: e.instance,
            start: e.start,
            mark: e.mark,
            used: e.used,
        };
        let mut keys: Vec<(&Vec<u8>, &Entry)> = self.keys.iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let default = self.default.as_ref().map(|e| mark(None, e));
        default
            .into_iter()
            .chain(keys.into_iter().map(|(k, e)| mark(Some(k.clone()), e)))
            .collect()
    }

    /// The size of the file [`Index::records`] makes.
    pub fn compacted_len(&self) -> u64 {
        let records = self.len() as u64;
        if records == 0 {
            return HEADER_LEN as u64;
        }
        ((HEADER_LEN + FRAME_OVERHEAD) as u64)
            .saturating_add(records.saturating_mul(MARK_LEN))
            .saturating_add(self.key_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::format::encode_file;

    fn mark(key: Option<&[u8]>, mark: u64) -> Record {
        Record::Mark {
            key: key.map(<[u8]>::to_vec),
            instance: 1,
            start: Some(1),
            mark,
            used: 0,
        }
    }

    fn retire(key: &[u8]) -> Record {
        Record::Retire {
            key: key.to_vec(),
            instance: 1,
        }
    }

    #[test]
    fn later_records_win() {
        let mut index = Index::new(2);
        index
            .apply_all(&[
                mark(Some(b"b"), 5),
                mark(None, 100),
                mark(Some(b"a"), 7),
                mark(None, 90), // a give-back at a clean stop
                retire(b"b"),
                retire(b"never"),
            ])
            .unwrap();
        assert_eq!(index.get(None).unwrap().mark, 90);
        assert_eq!(index.get(Some(b"a")).unwrap().mark, 7);
        assert!(index.get(Some(b"b")).is_none());
        assert_eq!((index.keys(), index.len()), (1, 2));
        assert_eq!(index.iter().count(), 2);
    }

    #[test]
    fn max_keys_counts_keys_only() {
        let mut index = Index::new(1);
        index.apply(&mark(Some(b"a"), 1)).unwrap();
        index.apply(&mark(None, 1)).unwrap();
        index.apply(&mark(Some(b"a"), 2)).unwrap();
        assert!(index.fits(&[mark(Some(b"b"), 1)]).is_err());
        assert!(index.fits(&[retire(b"a"), mark(Some(b"b"), 1)]).is_ok());
        assert!(matches!(
            index.apply(&mark(Some(b"b"), 1)),
            Err(ErrorKind::TooManyKeys(1))
        ));
        index.apply(&retire(b"a")).unwrap();
        index.apply(&mark(Some(b"b"), 1)).unwrap();
    }

    #[test]
    fn records_are_sorted_and_sized() {
        let mut index = Index::new(10);
        assert_eq!(
            index.compacted_len(),
            encode_file(&[]).unwrap().len() as u64
        );
        index
            .apply_all(&[
                mark(Some(b"zz"), 1),
                mark(Some(b"a"), 2),
                mark(None, 3),
                mark(Some(b"m"), 4),
            ])
            .unwrap();
        let records = index.records();
        let keys: Vec<_> = records.iter().map(Record::key).collect();
        assert_eq!(keys, [None, Some(&b"a"[..]), Some(b"m"), Some(b"zz")]);
        assert_eq!(
            index.compacted_len(),
            encode_file(&records).unwrap().len() as u64
        );
        index.apply(&retire(b"zz")).unwrap();
        assert_eq!(
            index.compacted_len(),
            encode_file(&index.records()).unwrap().len() as u64
        );
        let mut again = Index::new(10);
        again.apply_all(&records).unwrap();
        assert_eq!(again.records(), records);
    }
}
