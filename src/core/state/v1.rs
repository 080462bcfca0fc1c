//! The state file of earlier releases (version 1), read once so that an
//! upgrade keeps its counters; the next rewrite writes version 2.
//!
//! ```text
//! magic "NGXTKST1" | version u32 = 1 | master pid u32 | owner u64 | seq u64 | count u64
//! count × ( key_len u16 | key | start u64 | mark u64 )
//! crc32 u32 over everything before it
//! ```
//!
//! The file was replaced whole (temporary file and rename), so any damage is
//! corruption: there is no torn tail.

use std::collections::HashSet;

use super::format::{check_mark, Reader, Record, KEY_MAX, V1_MAGIC as MAGIC};
use super::ErrorKind;

const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8;
const CRC_LEN: usize = 4;

/// The counters of a v1 file, as mark records of instance 0, last use unknown.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, ErrorKind> {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(ErrorKind::NotAStateFile);
    }
    let corrupt = |at: u64, why| ErrorKind::Corrupt { at, why };
    let Some(body_len) = bytes
        .len()
        .checked_sub(CRC_LEN)
        .filter(|&n| n >= HEADER_LEN)
    else {
        return Err(corrupt(bytes.len() as u64, "truncated"));
    };
    let (body, crc) = bytes.split_at(body_len);
    let mut r = Reader::new(body, 0);
    r.skip(MAGIC.len());
    let version = r.u32().unwrap_or_default();
    if version != VERSION {
        return Err(ErrorKind::UnknownVersion(version));
    }
    let crc = Reader::new(crc, 0).u32().unwrap_or_default();
    if crc32fast::hash(body) != crc {
        return Err(corrupt(body_len as u64, "checksum mismatch"));
    }
    // master pid, owner, seq: the takeover scheme version 2 dropped
    r.skip(4 + 8 + 8);
    let count = r.u64().unwrap_or_default();
    let mut records = Vec::new();
    let mut keys: HashSet<Option<&[u8]>> = HashSet::new();
    let mut left = count;
    while left > 0 {
        left -= 1;
        let at = r.pos();
        let truncated = || corrupt(at, "truncated");
        let key_len = r.u16().ok_or_else(truncated)? as usize;
        if key_len > KEY_MAX {
            return Err(corrupt(at, "key longer than 64 bytes"));
        }
        let key = Some(r.take(key_len).ok_or_else(truncated)?).filter(|k| !k.is_empty());
        if !keys.insert(key) {
            return Err(corrupt(at, "the same key twice"));
        }
        let (Some(start), Some(mark)) = (r.u64(), r.u64()) else {
            return Err(truncated());
        };
        let start = Some(start).filter(|&s| s != u64::MAX);
        check_mark(start, mark).map_err(|why| corrupt(at, why))?;
        records.push(Record::Mark {
            key: key.map(<[u8]>::to_vec),
            instance: 0,
            start,
            mark,
            used: 0,
        });
    }
    if !r.rest().is_empty() {
        return Err(corrupt(r.pos(), "trailing bytes"));
    }
    Ok(records)
}

/// Writes a v1 file as earlier releases did, for tests of the migration.
#[cfg(test)]
pub fn encode(records: &[(Option<&[u8]>, u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&4242u32.to_le_bytes());
    out.extend_from_slice(&0xfeedu64.to_le_bytes());
    out.extend_from_slice(&7u64.to_le_bytes());
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for (key, start, mark) in records {
        let key = key.unwrap_or_default();
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&mark.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::MAX_MARK;

    fn sample() -> Vec<u8> {
        encode(&[
            (None, 1, 10_000),
            (Some(b"gala"), 100, 3),
            (Some(b"unused"), u64::MAX, 0),
        ])
    }

    #[test]
    fn reads_earlier_files() {
        let records = decode(&sample()).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(
            records[0],
            Record::Mark {
                key: None,
                instance: 0,
                start: Some(1),
                mark: 10_000,
                used: 0
            }
        );
        assert_eq!(records[1].key(), Some(&b"gala"[..]));
        assert!(matches!(records[2], Record::Mark { start: None, .. }));
        assert!(decode(&encode(&[])).unwrap().is_empty());
    }

    #[test]
    fn damage_and_odd_values_are_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let twice = encode(&[(Some(b"a"), 1, 5), (Some(b"a"), 1, 2)]);
        assert!(matches!(
            decode(&twice),
            Err(ErrorKind::Corrupt {
                why: "the same key twice",
                ..
            })
        ));
        let high = encode(&[(None, 1, 1 << 63)]);
        assert!(decode(&high).is_err());
        assert!(decode(&encode(&[(None, 1, MAX_MARK)])).is_ok());
        let past = encode(&[(None, u64::MAX - 2, 5)]);
        assert!(decode(&past).is_err());
        let long = encode(&[(Some(&[b'k'; 65]), 1, 1)]);
        assert!(decode(&long).is_err());
    }
}
