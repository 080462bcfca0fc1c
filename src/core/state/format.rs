//! The bytes of a state log, version 2, little-endian:
//!
//! ```text
//! header: magic "NGXTKST2" | version u32 = 2 | flags u32 = 0 | crc32 u32 of the 16 bytes before
//! frame:  len u32 | crc32 u32 of the payload | payload (len bytes)
//! record: tag u8 | key_len u8 | key | instance u64 | (mark only) start u64 | mark u64 | used u64
//! ```
//!
//! A frame holds the records of one append, written with one write and one
//! fdatasync. A crash or a full disk during an append leaves a torn last
//! frame: it reaches the end of the file and is incomplete or fails its
//! checksum. Its writer never saw the write succeed, so it issued nothing from
//! it: readers ignore it and writers cut it off. Damage anywhere else is
//! corruption.

use std::collections::HashSet;

use super::ErrorKind;

pub const MAGIC: &[u8; 8] = b"NGXTKST2";
/// The whole-file format of earlier releases (read by `v1`).
pub const V1_MAGIC: &[u8; 8] = b"NGXTKST1";
pub const VERSION: u32 = 2;
pub const HEADER_LEN: usize = 20;
/// `len` and `crc32` in front of every frame's payload.
pub const FRAME_OVERHEAD: usize = 8;
/// The longest key; key_len 0 is the zone's default counter.
pub const KEY_MAX: usize = 64;
/// The counters' limit: a count never passes it.
pub const MAX_MARK: u64 = (1 << 56) - 1;
/// A mark record with the longest key.
pub const MAX_RECORD_LEN: usize = MARK_FIXED_LEN + KEY_MAX;

const TAG_MARK: u8 = 1;
const TAG_RETIRE: u8 = 2;
/// tag, key_len, instance, start, mark, used
const MARK_FIXED_LEN: usize = 2 + 4 * 8;
/// tag, key_len, instance
const RETIRE_FIXED_LEN: usize = 2 + 8;
/// `start` of a counter whose first ticket is not fixed yet.
const START_UNKNOWN: u64 = u64::MAX;

/// One entry of the log. `key` is `None` for the zone's default counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Counter `key`, whose first ticket is `start` (`None`: not fixed yet),
    /// may have handed out counts below `mark`: the next ticket after a crash
    /// is `start + mark`. Written by nginx instance `instance`; `used` is the
    /// unix time of the counter's last use (0: unknown).
    Mark {
        key: Option<Vec<u8>>,
        instance: u64,
        start: Option<u64>,
        mark: u64,
        used: u64,
    },
    /// Forget `key`: its next use starts a new counter. The default counter
    /// is never retired.
    Retire { key: Vec<u8>, instance: u64 },
}

impl Record {
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Record::Mark { key, .. } => key.as_deref(),
            Record::Retire { key, .. } => Some(key),
        }
    }

    /// Bytes the record takes in a frame.
    pub fn encoded_len(&self) -> usize {
        let key_len = self.key().map_or(0, <[u8]>::len);
        match self {
            Record::Mark { .. } => MARK_FIXED_LEN + key_len,
            Record::Retire { .. } => RETIRE_FIXED_LEN + key_len,
        }
    }

    /// The rules every reader checks, so a writer never writes what readers
    /// refuse.
    pub fn check(&self) -> Result<(), &'static str> {
        match self {
            Record::Mark {
                key, start, mark, ..
            } => {
                check_key(key.as_deref())?;
                if *start == Some(START_UNKNOWN) {
                    return Err("start is the reserved value 2^64 - 1");
                }
                check_mark(*start, *mark)
            }
            Record::Retire { key, .. } => {
                if key.is_empty() {
                    return Err("retire of the default counter");
                }
                check_key(Some(key))
            }
        }
    }
}

fn check_key(key: Option<&[u8]>) -> Result<(), &'static str> {
    match key {
        Some([]) => Err("empty key"),
        Some(key) if key.len() > KEY_MAX => Err("key longer than 64 bytes"),
        _ => Ok(()),
    }
}

/// Shared with the v1 reader.
pub(super) fn check_mark(start: Option<u64>, mark: u64) -> Result<(), &'static str> {
    if mark > MAX_MARK {
        return Err("mark above the counters' limit");
    }
    // the next ticket, start + mark, must still be a u64 or the end of the range
    if let Some(start) = start {
        if u128::from(start) + u128::from(mark) > 1 << 64 {
            return Err("start plus mark past 2^64");
        }
    }
    Ok(())
}

/// The format a file's first bytes announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The whole-file format of earlier releases: read-only, see `v1`.
    V1,
    V2,
}

pub fn encode_header(out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads the header; for v2 the frames start at [`HEADER_LEN`].
pub fn check_header(bytes: &[u8]) -> Result<Version, ErrorKind> {
    match bytes.get(..MAGIC.len()) {
        Some(magic) if magic == V1_MAGIC => return Ok(Version::V1),
        Some(magic) if magic == MAGIC => {}
        _ => return Err(ErrorKind::NotAStateFile),
    }
    let mut r = Reader::new(bytes, 0);
    r.skip(MAGIC.len());
    let (Some(version), Some(flags), Some(crc)) = (r.u32(), r.u32(), r.u32()) else {
        // replace() writes the header in one go: a short one is damage
        return Err(corrupt(bytes.len(), "truncated header"));
    };
    if version != VERSION {
        return Err(ErrorKind::UnknownVersion(version));
    }
    if crc32fast::hash(bytes.get(..16).unwrap_or_default()) != crc {
        return Err(corrupt(16, "header checksum mismatch"));
    }
    if flags != 0 {
        return Err(corrupt(12, "unknown flags"));
    }
    Ok(Version::V2)
}

/// Appends one frame holding `records` to `out`.
pub fn encode_frame(records: &[Record], out: &mut Vec<u8>) -> Result<(), ErrorKind> {
    if records.is_empty() {
        return Err(ErrorKind::Invalid("empty frame"));
    }
    let mut keys = HashSet::with_capacity(records.len());
    let mut len = 0usize;
    for record in records {
        record.check().map_err(ErrorKind::Invalid)?;
        if !keys.insert(record.key()) {
            return Err(ErrorKind::Invalid("the same key twice in one frame"));
        }
        len = len.saturating_add(record.encoded_len());
    }
    let len = u32::try_from(len).map_err(|_| ErrorKind::Invalid("frame larger than 4 GiB"))?;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for record in records {
        encode_record(record, out);
    }
    let crc = crc32fast::hash(out.get(start + FRAME_OVERHEAD..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let (tag, key, instance) = match record {
        Record::Mark { key, instance, .. } => {
            (TAG_MARK, key.as_deref().unwrap_or_default(), instance)
        }
        Record::Retire { key, instance } => (TAG_RETIRE, key.as_slice(), instance),
    };
    out.push(tag);
    // check() keeps keys at 64 bytes or less
    out.push(u8::try_from(key.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key);
    out.extend_from_slice(&instance.to_le_bytes());
    if let Record::Mark {
        start, mark, used, ..
    } = record
    {
        out.extend_from_slice(&start.unwrap_or(START_UNKNOWN).to_le_bytes());
        out.extend_from_slice(&mark.to_le_bytes());
        out.extend_from_slice(&used.to_le_bytes());
    }
}

/// A whole compacted file: the header and, unless there is nothing to record,
/// one frame.
pub fn encode_file(records: &[Record]) -> Result<Vec<u8>, ErrorKind> {
    let len: usize = records.iter().map(Record::encoded_len).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + FRAME_OVERHEAD + len);
    encode_header(&mut out);
    if !records.is_empty() {
        encode_frame(records, &mut out)?;
    }
    Ok(out)
}

/// The frames found in a run of bytes.
#[derive(Debug, Default)]
pub struct Frames {
    pub records: Vec<Record>,
    /// Where the valid frames end (a file offset): the file's good length.
    pub end: u64,
    /// Bytes after `end` are a torn last frame.
    pub torn: bool,
}

/// Decodes the frames in `bytes`, which start at file offset `base` and run
/// to the end of the file. `whole_first`: the first frame was written whole
/// (a file is created complete and renamed into place), so damage there is
/// corruption, never a torn append.
pub fn decode_frames(bytes: &[u8], base: u64, whole_first: bool) -> Result<Frames, ErrorKind> {
    let mut frames = Frames::default();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let at = base.saturating_add(pos as u64);
        let rest = bytes.get(pos..).unwrap_or_default();
        let mut r = Reader::new(rest, at);
        let torn_or_corrupt = |frames, why| {
            if whole_first && pos == 0 {
                Err(corrupt_at(at, why))
            } else {
                torn_tail(bytes, pos, base, frames)
            }
        };
        let (len, crc) = match (r.u32(), r.u32()) {
            (Some(len), Some(crc)) => (len as usize, crc),
            _ => return torn_or_corrupt(frames, "truncated"),
        };
        let payload = r.take(len);
        match payload {
            Some(payload) if len > 0 && crc32fast::hash(payload) == crc => {
                decode_payload(
                    payload,
                    at.saturating_add(FRAME_OVERHEAD as u64),
                    &mut frames.records,
                )?;
                pos += FRAME_OVERHEAD + len;
            }
            // ends before the end of the file: not a torn write
            Some(_) if FRAME_OVERHEAD + len < rest.len() && !is_zero(rest) => {
                let why = if len == 0 {
                    "empty frame"
                } else {
                    "checksum mismatch"
                };
                return Err(corrupt_at(at, why));
            }
            Some(_) => return torn_or_corrupt(frames, "checksum mismatch"),
            None => return torn_or_corrupt(frames, "truncated"),
        }
    }
    frames.end = base.saturating_add(pos as u64);
    Ok(frames)
}

/// The frame at `pos` is bad and reaches the end of the file (or the rest is
/// zeros, as a filesystem shows an extent it never wrote after a crash). It is
/// a torn write unless a valid frame ends the file after it: then its length
/// field is damaged and it hides good frames.
fn torn_tail(bytes: &[u8], pos: usize, base: u64, mut frames: Frames) -> Result<Frames, ErrorKind> {
    let end = bytes.len();
    for q in pos + 1..end.saturating_sub(FRAME_OVERHEAD) {
        let mut r = Reader::new(bytes.get(q..).unwrap_or_default(), 0);
        let (Some(len), Some(crc)) = (r.u32(), r.u32()) else {
            break;
        };
        let len = len as usize;
        // q < end - FRAME_OVERHEAD: no overflow
        if len > 0 && end - q - FRAME_OVERHEAD == len {
            if let Some(payload) = r.take(len) {
                if crc32fast::hash(payload) == crc {
                    return Err(corrupt_at(
                        base.saturating_add(pos as u64),
                        "frame length damaged",
                    ));
                }
            }
        }
    }
    frames.end = base.saturating_add(pos as u64);
    frames.torn = true;
    Ok(frames)
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn decode_payload(payload: &[u8], base: u64, out: &mut Vec<Record>) -> Result<(), ErrorKind> {
    let mut r = Reader::new(payload, base);
    let mut keys: HashSet<Option<&[u8]>> = HashSet::new();
    while !r.is_empty() {
        let at = r.pos();
        let truncated = || corrupt_at(at, "record runs past the end of its frame");
        let tag = r.u8().ok_or_else(truncated)?;
        let key_len = r.u8().ok_or_else(truncated)? as usize;
        if tag != TAG_MARK && tag != TAG_RETIRE {
            return Err(corrupt_at(at, "unknown record tag"));
        }
        if key_len > KEY_MAX {
            return Err(corrupt_at(at, "key longer than 64 bytes"));
        }
        let key = Some(r.take(key_len).ok_or_else(truncated)?).filter(|k| !k.is_empty());
        if !keys.insert(key) {
            return Err(corrupt_at(at, "the same key twice in one frame"));
        }
        let instance = r.u64().ok_or_else(truncated)?;
        let record = if tag == TAG_MARK {
            let (Some(start), Some(mark), Some(used)) = (r.u64(), r.u64(), r.u64()) else {
                return Err(truncated());
            };
            let start = Some(start).filter(|&s| s != START_UNKNOWN);
            check_mark(start, mark).map_err(|why| corrupt_at(at, why))?;
            Record::Mark {
                key: key.map(<[u8]>::to_vec),
                instance,
                start,
                mark,
                used,
            }
        } else {
            let key = key.ok_or_else(|| corrupt_at(at, "retire of the default counter"))?;
            Record::Retire {
                key: key.to_vec(),
                instance,
            }
        };
        out.push(record);
    }
    Ok(())
}

fn corrupt(at: usize, why: &'static str) -> ErrorKind {
    corrupt_at(at as u64, why)
}

fn corrupt_at(at: u64, why: &'static str) -> ErrorKind {
    ErrorKind::Corrupt { at, why }
}

/// Reads little-endian fields off the front of a byte slice that starts at
/// file offset `base`.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    base: u64,
    taken: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], base: u64) -> Self {
        Reader {
            bytes,
            base,
            taken: 0,
        }
    }

    /// The file offset of the next byte.
    pub(super) fn pos(&self) -> u64 {
        self.base.saturating_add(self.taken as u64)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(super) fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        self.taken += n;
        Some(head)
    }

    pub(super) fn skip(&mut self, n: usize) {
        let _ = self.take(n);
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(key: &[u8], start: Option<u64>, mark: u64) -> Record {
        Record::Mark {
            key: Some(key.to_vec()).filter(|k| !k.is_empty()),
            instance: 7,
            start,
            mark,
            used: 1_700_000_000,
        }
    }

    fn retire(key: &[u8]) -> Record {
        Record::Retire {
            key: key.to_vec(),
            instance: 7,
        }
    }

    fn frames() -> Vec<Vec<Record>> {
        vec![
            vec![mark(b"", Some(1), 10_000), mark(b"gala", None, 0)],
            vec![mark(b"gala", Some(100), 3)],
            vec![retire(b"gala"), mark(&[0xff; 64], Some(u64::MAX - 1), 1)],
        ]
    }

    fn file(frames: &[Vec<Record>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out);
        for f in frames {
            encode_frame(f, &mut out).unwrap();
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Frames, ErrorKind> {
        assert_eq!(check_header(bytes)?, Version::V2);
        decode_frames(&bytes[HEADER_LEN..], HEADER_LEN as u64, false)
    }

    #[test]
    fn round_trip() {
        let bytes = file(&frames());
        assert_eq!(&bytes[..8], b"NGXTKST2");
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.records, frames().concat());
        assert_eq!(decoded.end, bytes.len() as u64);
        assert!(!decoded.torn);
        let sizes: usize = frames().concat().iter().map(Record::encoded_len).sum();
        assert_eq!(bytes.len(), HEADER_LEN + 3 * FRAME_OVERHEAD + sizes);
        // header only: a log with nothing in it
        let empty = encode_file(&[]).unwrap();
        assert_eq!(empty.len(), HEADER_LEN);
        assert!(decode(&empty).unwrap().records.is_empty());
        assert_eq!(
            MAX_RECORD_LEN,
            mark(&[1; 64], Some(1), 1).encoded_len(),
            "the longest record"
        );
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let bytes = file(&frames());
        let last = bytes.len()
            - FRAME_OVERHEAD
            - frames()[2].iter().map(Record::encoded_len).sum::<usize>();
        for i in 0..bytes.len() {
            for bit in [0x01, 0x40, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                match decode(&bad) {
                    Err(_) => {}
                    // damage in the last frame makes it a torn write, dropped
                    Ok(f) => assert!(
                        i >= last && f.torn && f.end == last as u64,
                        "flip {bit:#x} at {i} went unnoticed: {f:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn torn_tail_at_every_cut() {
        let bytes = file(&frames());
        let good = file(&frames()[..2]).len();
        for cut in good + 1..bytes.len() {
            let f = decode(&bytes[..cut]).unwrap();
            assert!(f.torn, "cut at {cut}");
            assert_eq!(f.end, good as u64);
            assert_eq!(f.records, frames()[..2].concat());
        }
        // zeros where a crash left an unwritten extent
        let mut zeros = bytes.clone();
        zeros.extend_from_slice(&[0; 4096]);
        let f = decode(&zeros).unwrap();
        assert!(f.torn);
        assert_eq!(f.end, bytes.len() as u64);
    }

    #[test]
    fn damage_before_the_last_frame_is_corruption() {
        let bytes = file(&frames());
        let second = file(&frames()[..1]).len();
        // a payload byte of the second frame
        let mut bad = bytes.clone();
        bad[second + FRAME_OVERHEAD + 3] ^= 1;
        assert!(matches!(
            decode(&bad),
            Err(ErrorKind::Corrupt { why: "checksum mismatch", at }) if at == second as u64
        ));
        // a length that runs past the end would look torn, but a valid frame
        // still ends the file
        let mut bad = bytes.clone();
        bad[second + 2] = 0x10;
        assert!(matches!(
            decode(&bad),
            Err(ErrorKind::Corrupt {
                why: "frame length damaged",
                ..
            })
        ));
    }

    #[test]
    fn invalid_records_are_corruption_and_never_written() {
        let cases: Vec<(Record, &str)> = vec![
            (
                mark(b"k", Some(1), MAX_MARK + 1),
                "mark above the counters' limit",
            ),
            (
                mark(b"k", Some(u64::MAX - 1), 3),
                "start plus mark past 2^64",
            ),
            (retire(b""), "retire of the default counter"),
        ];
        for (record, why) in cases {
            assert_eq!(record.check(), Err(why));
            let mut out = Vec::new();
            assert!(encode_frame(&[record], &mut out).is_err());
        }
        // the end of the range itself is fine: start + mark = 2^64
        assert_eq!(mark(b"k", Some(u64::MAX - 1), 2).check(), Ok(()));
        assert!(mark(b"k", Some(u64::MAX), 0).check().is_err());
        assert!(mark(&[1; 65], None, 0).check().is_err());
        let mut out = Vec::new();
        assert!(encode_frame(&[mark(b"k", None, 1), retire(b"k")], &mut out).is_err());
        assert!(encode_frame(&[], &mut out).is_err());

        // the same, crafted: a frame with a valid checksum and bad contents
        let craft = |payload: &[u8]| {
            let mut out = Vec::new();
            encode_header(&mut out);
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            out.extend_from_slice(payload);
            decode(&out)
        };
        let good = {
            let mut out = Vec::new();
            encode_record(&mark(b"k", Some(1), 5), &mut out);
            out
        };
        assert!(craft(&good).is_ok());
        let corrupt_why = |r: Result<Frames, ErrorKind>| match r {
            Err(ErrorKind::Corrupt { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        let mut bad = good.clone();
        bad[0] = 3;
        assert_eq!(corrupt_why(craft(&bad)), "unknown record tag");
        let mut bad = good.clone();
        bad[1] = 65;
        assert_eq!(corrupt_why(craft(&bad)), "key longer than 64 bytes");
        let mut bad = good.clone();
        bad.push(0);
        assert_eq!(
            corrupt_why(craft(&bad)),
            "record runs past the end of its frame"
        );
        let twice = [good.clone(), good.clone()].concat();
        assert_eq!(
            corrupt_why(craft(&twice)),
            "the same key twice in one frame"
        );
        let mut default_retired = Vec::new();
        default_retired.extend_from_slice(&[TAG_RETIRE, 0]);
        default_retired.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(
            corrupt_why(craft(&default_retired)),
            "retire of the default counter"
        );
        let mut big = good.clone();
        big[2 + 1 + 8 + 8..2 + 1 + 8 + 16].copy_from_slice(&(MAX_MARK + 1).to_le_bytes());
        assert_eq!(corrupt_why(craft(&big)), "mark above the counters' limit");
        // an empty frame at the end is torn, before another one is damage
        assert!(craft(&[]).unwrap().torn);
        let mut empty_then_good = vec![0; 8];
        empty_then_good.extend_from_slice(&(good.len() as u32).to_le_bytes());
        empty_then_good.extend_from_slice(&crc32fast::hash(&good).to_le_bytes());
        empty_then_good.extend_from_slice(&good);
        let mut out = Vec::new();
        encode_header(&mut out);
        out.extend_from_slice(&empty_then_good);
        assert!(matches!(
            decode(&out),
            Err(ErrorKind::Corrupt {
                why: "empty frame",
                at: 20
            })
        ));
    }

    #[test]
    fn headers() {
        let bytes = file(&[]);
        assert!(matches!(
            check_header(b"hello, world"),
            Err(ErrorKind::NotAStateFile)
        ));
        assert!(matches!(check_header(b""), Err(ErrorKind::NotAStateFile)));
        assert!(matches!(check_header(b"NGXTKST1"), Ok(Version::V1)));
        assert!(matches!(
            check_header(&bytes[..19]),
            Err(ErrorKind::Corrupt {
                why: "truncated header",
                ..
            })
        ));
        let mut future = bytes.clone();
        future[8] = 3;
        assert!(matches!(
            check_header(&future),
            Err(ErrorKind::UnknownVersion(3))
        ));
        let mut flags = bytes.clone();
        flags[12] = 1;
        let crc = crc32fast::hash(&flags[..16]);
        flags[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_header(&flags),
            Err(ErrorKind::Corrupt {
                why: "unknown flags",
                ..
            })
        ));
    }
}
