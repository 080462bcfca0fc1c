//! The state file of a durable zone (`ticket_zone … state=PATH`).
//!
//! Like a database sequence, the file is a log written *ahead*: for every
//! counter it records a mark at or above every ticket already handed out, so
//! after a crash counting resumes from the mark (a gap, never a repeat). A
//! clean stop records the exact count instead.
//!
//! Format, little-endian, version 1:
//! ```text
//! magic "NGXTKST1" | version u32 | master pid u32 | owner u64 | seq u64 | count u64
//! count × ( key_len u16 | key bytes | start u64 | mark u64 )
//! crc32 u32 over everything before it
//! ```
//! `owner` identifies the nginx instance (its zone) that wrote it, `pid` its
//! master: a binary upgrade's new master takes the file over, and the old one
//! then stops extending it, unless the new master is gone. `start` is
//! `u64::MAX` for a counter whose first ticket is not fixed yet. The file is
//! replaced atomically: temporary file, fsync, rename, fsync of the
//! directory, all under an advisory lock (flock) on the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::zone::KEY_MAX;

const MAGIC: &[u8; 8] = b"NGXTKST1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8;

/// One counter as the file records it. `key` is `None` for the default counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    /// `None`: the counter's first ticket is not fixed yet.
    pub start: Option<u64>,
    /// Tickets that may have been handed out: counting resumes here.
    pub mark: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Image {
    /// The master process that wrote the file.
    pub pid: u32,
    pub owner: u64,
    pub seq: u64,
    pub records: Vec<Record>,
}

/// Why a state file cannot be used. Never a reason to start again from 1.
#[derive(Debug)]
pub enum StateError {
    Io(io::Error),
    NotAStateFile,
    UnknownVersion(u32),
    Corrupt(&'static str),
}

impl core::fmt::Display for StateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StateError::Io(err) => write!(f, "{err}"),
            StateError::NotAStateFile => f.write_str("not a ticket state file"),
            StateError::UnknownVersion(v) => write!(f, "unknown state file version {v}"),
            StateError::Corrupt(why) => write!(f, "corrupt state file: {why}"),
        }
    }
}

impl From<io::Error> for StateError {
    fn from(err: io::Error) -> Self {
        StateError::Io(err)
    }
}

pub fn encode(image: &Image) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + image.records.len() * 32 + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&image.pid.to_le_bytes());
    out.extend_from_slice(&image.owner.to_le_bytes());
    out.extend_from_slice(&image.seq.to_le_bytes());
    out.extend_from_slice(&(image.records.len() as u64).to_le_bytes());
    for record in &image.records {
        let key = record.key.as_deref().unwrap_or_default();
        // key_len 0 is the default counter; keys are never empty
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&record.start.unwrap_or(u64::MAX).to_le_bytes());
        out.extend_from_slice(&record.mark.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError::Corrupt("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, StateError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
}

pub fn decode(bytes: &[u8]) -> Result<Image, StateError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StateError::NotAStateFile);
    }
    if bytes.len() < HEADER_LEN + 4 {
        return Err(StateError::Corrupt("truncated"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut r = Reader(&body[MAGIC.len()..]);
    let version = r.u32()?;
    if version != VERSION {
        return Err(StateError::UnknownVersion(version));
    }
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
        return Err(StateError::Corrupt("checksum mismatch"));
    }
    let pid = r.u32()?;
    let owner = r.u64()?;
    let seq = r.u64()?;
    let count = r.u64()?;
    let mut records = Vec::new();
    for _ in 0..count {
        let len = r.u16()? as usize;
        if len > KEY_MAX {
            return Err(StateError::Corrupt("key too long"));
        }
        let key = (len > 0)
            .then(|| r.take(len).map(<[u8]>::to_vec))
            .transpose()?;
        let start = Some(r.u64()?).filter(|&s| s != u64::MAX);
        let mark = r.u64()?;
        records.push(Record { key, start, mark });
    }
    if !r.0.is_empty() {
        return Err(StateError::Corrupt("trailing bytes"));
    }
    Ok(Image {
        pid,
        owner,
        seq,
        records,
    })
}

/// Reads the file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<Image>, StateError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    decode(&bytes).map(Some)
}

fn directory(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether the worker user (`uid`, `gid`) may create and rename files in the
/// state file's directory, judged from the directory's owner and mode.
pub fn dir_writable_by(path: &Path, uid: u32, gid: u32) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(directory(path))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    Ok(writable(meta.uid(), meta.gid(), meta.mode(), uid, gid))
}

fn writable(owner: u32, group: u32, mode: u32, uid: u32, gid: u32) -> bool {
    uid == 0
        || if owner == uid {
            mode & 0o300 == 0o300
        } else if group == gid {
            mode & 0o030 == 0o030
        } else {
            mode & 0o003 == 0o003
        }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Replaces the file with `image`, atomically and durably, owned by
/// `owner` (uid, gid) when given.
fn store(path: &Path, image: &Image, owner: Option<(u32, u32)>) -> io::Result<()> {
    let tmp = sibling(path, &format!(".tmp.{}", std::process::id()));
    let result = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(&encode(image))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(directory(path))?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// What [`update`] should do with the file it read.
pub enum Update {
    Write(Image),
    Leave,
}

/// Reads, transforms and rewrites the file under its lock, so that the
/// processes of one nginx (and of an old and a new one during a binary
/// upgrade) never interleave their read-modify-write cycles. The lock is an
/// flock: the kernel drops it when its holder dies. The master, running as
/// root, passes the worker user as `owner`, so that workers may replace the
/// file later even in a sticky directory.
pub fn update(
    path: &Path,
    owner: Option<(u32, u32)>,
    change: impl FnOnce(Option<Image>) -> Update,
) -> Result<bool, StateError> {
    // Locking the directory needs only read access to it, so the master (root)
    // and the workers (an unprivileged user) can all take the same lock.
    let lock = File::open(directory(path))?;
    lock.lock()?;
    let result = match change(load(path)?) {
        Update::Write(image) => store(path, &image, owner)
            .map(|()| true)
            .map_err(Into::into),
        Update::Leave => Ok(false),
    };
    let _ = lock.unlock();
    result
}

/// Merges two sets of records: for every counter, the higher mark. Used when
/// extending reservations, which must never lower a mark already on disk.
pub fn merge_up(on_disk: &[Record], ours: Vec<Record>) -> Vec<Record> {
    let mut merged = ours;
    for old in on_disk {
        match merged.iter_mut().find(|r| r.key == old.key) {
            Some(record) => record.mark = record.mark.max(old.mark),
            None => merged.push(old.clone()),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Image {
        Image {
            pid: 4242,
            owner: 0xfeed,
            seq: 7,
            records: vec![
                Record {
                    key: None,
                    start: Some(1),
                    mark: 10_000,
                },
                Record {
                    key: Some(b"gala".to_vec()),
                    start: Some(100),
                    mark: 3,
                },
                Record {
                    key: Some(b"unused".to_vec()),
                    start: None,
                    mark: 0,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample());
        assert_eq!(&bytes[..8], b"NGXTKST1");
        assert_eq!(decode(&bytes).unwrap(), sample());
        assert_eq!(
            decode(&encode(&Image::default())).unwrap(),
            Image::default()
        );
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_and_foreign_files_are_refused() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        assert!(matches!(
            decode(b"hello, world\n"),
            Err(StateError::NotAStateFile)
        ));
        let mut future = bytes.clone();
        future[8] = 2;
        assert!(matches!(
            decode(&future),
            Err(StateError::UnknownVersion(2))
        ));
    }

    #[test]
    fn merging_never_lowers_a_mark() {
        let disk = sample().records;
        let ours = vec![
            Record {
                key: None,
                start: Some(1),
                mark: 9_000,
            },
            Record {
                key: Some(b"new".to_vec()),
                start: Some(1),
                mark: 50,
            },
        ];
        let merged = merge_up(&disk, ours);
        assert_eq!(merged.len(), 4);
        assert_eq!(merged[0].mark, 10_000);
        assert_eq!(merged[1].mark, 50);
        assert_eq!(merged[2].key.as_deref(), Some(&b"gala"[..]));
    }

    #[test]
    fn directory_permissions() {
        assert!(writable(1, 1, 0o700, 1, 1));
        assert!(!writable(1, 1, 0o500, 1, 1));
        assert!(writable(1, 2, 0o070, 3, 2));
        assert!(!writable(1, 2, 0o750, 3, 2));
        assert!(writable(1, 2, 0o777, 3, 4));
        assert!(!writable(1, 2, 0o775, 3, 4));
        assert!(writable(1, 2, 0o000, 0, 0));
    }

    #[test]
    fn files_are_replaced_under_the_lock() {
        let dir = std::env::temp_dir().join(format!("ngx-ticket-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.state");
        assert!(load(&path).unwrap().is_none());
        let wrote = update(&path, None, |old| {
            assert!(old.is_none());
            Update::Write(sample())
        })
        .unwrap();
        assert!(wrote);
        assert_eq!(load(&path).unwrap().unwrap(), sample());
        let wrote = update(&path, None, |old| {
            assert_eq!(old.unwrap().seq, 7);
            Update::Leave
        })
        .unwrap();
        assert!(!wrote);
        fs::write(&path, b"garbage").unwrap();
        assert!(load(&path).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
