//! One zone's log of reservations: any number of processes (the workers of
//! one nginx, an old and a new nginx during a binary upgrade, two nginx on one
//! file) append to it under the directory lock, each catching up with the
//! others' appends first.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::dir::{Access, DirLock, OpenFile, StateDir};
use super::format::{self, Record, Version, FRAME_OVERHEAD, HEADER_LEN, MAX_RECORD_LEN};
use super::index::Index;
use super::{v1, ErrorKind, Result, StateError};

/// The log is compacted once it grows past twice its compacted size, but not
/// before it reaches this size: small logs are cheap to read anyway.
pub const COMPACT_MIN: u64 = 64 * 1024;

/// One zone's state log.
#[derive(Debug)]
pub struct StateLog {
    dir: StateDir,
    limit: u64,
    index: Index,
    seen: Seen,
    /// Whether sessions may write (`nginx -t` only reads).
    write: bool,
}

/// What the last session found, so the next one reads only what is new.
#[derive(Debug)]
enum Seen {
    /// Nothing trusted: read the whole file.
    Nothing,
    Missing,
    File(Known),
}

#[derive(Debug)]
struct Known {
    /// Held open so its inode cannot be reused by a file that replaces it.
    open: OpenFile,
    version: Version,
    /// The end of the valid frames (the index holds everything before it);
    /// `open.len` is larger by a torn tail.
    good_len: u64,
}

/// What an append did besides appending.
#[derive(Debug)]
pub enum Compaction {
    NotNeeded,
    /// The file was rewritten compacted (also when it had to be created,
    /// converted from version 1, or written by root, which writes only into
    /// files it owns).
    Done,
    /// The records are saved, but compacting failed (a full disk): the next
    /// append tries again.
    Failed(StateError),
}

impl StateLog {
    /// Checks the state directory of `path` for the worker user `access`;
    /// reads nothing yet. `max_keys`: the keys the zone fits.
    pub fn open(path: &Path, access: &Access, max_keys: usize) -> Result<StateLog> {
        Ok(StateLog {
            dir: StateDir::open(path, access)?,
            limit: size_limit(max_keys),
            index: Index::new(max_keys),
            seen: Seen::Nothing,
            write: true,
        })
    }

    /// As [`StateLog::open`], for reading only: the file is opened
    /// read-only and sessions refuse to write.
    pub fn open_read_only(path: &Path, access: &Access, max_keys: usize) -> Result<StateLog> {
        let mut log = StateLog::open(path, access, max_keys)?;
        log.write = false;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The largest file the zone can need; larger ones are refused unread.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes the directory lock and catches up with the file. The lock is
    /// held until the session is dropped. Do not fork while in a session.
    pub fn session(&mut self) -> Result<Session<'_>> {
        let lock = self.dir.lock()?;
        if let Err(err) = self.catch_up(&lock) {
            self.forget();
            return Err(err);
        }
        Ok(Session { log: self, lock })
    }

    /// After a failure that leaves the file's state unknown: the next
    /// session, or the next write of this one, reads the whole file again.
    fn forget(&mut self) {
        self.seen = Seen::Nothing;
    }

    fn err(&self, kind: ErrorKind) -> StateError {
        StateError::new(self.dir.path(), kind)
    }

    fn catch_up(&mut self, lock: &DirLock) -> Result<()> {
        let Some(open) = self.dir.open_file(lock, self.limit, self.write)? else {
            self.seen = Seen::Missing;
            self.index = Index::new(self.index.max_keys());
            return Ok(());
        };
        let from = match &self.seen {
            // appended to since (a shorter file was rewritten in place: read all)
            Seen::File(known) if known.open.id == open.id && open.len >= known.good_len => {
                match known.version {
                    Version::V2 => Some(known.good_len),
                    Version::V1 if open.len == known.open.len => Some(open.len),
                    Version::V1 => None,
                }
            }
            _ => None,
        };
        match from {
            Some(from) => {
                let version = match &self.seen {
                    Seen::File(known) => known.version,
                    _ => Version::V2,
                };
                let good_len = if from < open.len {
                    self.read_frames(&open, from)?
                } else {
                    from
                };
                self.seen = Seen::File(Known {
                    open,
                    version,
                    good_len,
                });
            }
            None => self.rebuild(open)?,
        }
        Ok(())
    }

    /// Applies the frames from `from` on; returns where the valid ones end.
    fn read_frames(&mut self, open: &OpenFile, from: u64) -> Result<u64> {
        let bytes = self.dir.read_from(&open.file, from, open.len, self.limit)?;
        let frames = format::decode_frames(&bytes, from, false).map_err(|k| self.err(k))?;
        self.index
            .apply_all(&frames.records)
            .map_err(|k| self.err(k))?;
        Ok(frames.end)
    }

    fn rebuild(&mut self, open: OpenFile) -> Result<()> {
        let mut index = Index::new(self.index.max_keys());
        let bytes = self.dir.read_from(&open.file, 0, open.len, self.limit)?;
        let version = format::check_header(&bytes).map_err(|k| self.err(k))?;
        let good_len = match version {
            Version::V1 => {
                let records = v1::decode(&bytes).map_err(|k| self.err(k))?;
                index.apply_all(&records).map_err(|k| self.err(k))?;
                bytes.len() as u64
            }
            Version::V2 => {
                let frames = bytes.get(HEADER_LEN..).unwrap_or_default();
                let frames = format::decode_frames(frames, HEADER_LEN as u64, true)
                    .map_err(|k| self.err(k))?;
                index.apply_all(&frames.records).map_err(|k| self.err(k))?;
                frames.end
            }
        };
        self.index = index;
        self.seen = Seen::File(Known {
            open,
            version,
            good_len,
        });
        Ok(())
    }
}

/// The largest file a zone of `max_keys` keys can need. A compacted file is
/// at most a header and a frame of every counter; the log is compacted once
/// it passes twice that (or [`COMPACT_MIN`]), and an append adds at most one
/// such frame: header + 3 frames, plus the second copy's header.
pub fn size_limit(max_keys: usize) -> u64 {
    let counters = (max_keys as u64).saturating_add(1);
    let frame = counters
        .saturating_mul(MAX_RECORD_LEN as u64)
        .saturating_add(FRAME_OVERHEAD as u64);
    let compacted = frame.saturating_add(HEADER_LEN as u64);
    compacted
        .saturating_mul(2)
        .max(COMPACT_MIN)
        .saturating_add(frame)
}

/// The log under the directory lock, caught up with every other writer.
#[derive(Debug)]
pub struct Session<'a> {
    log: &'a mut StateLog,
    lock: DirLock,
}

impl Session<'_> {
    /// The counters, as the file records them.
    pub fn index(&self) -> &Index {
        &self.log.index
    }

    /// Whether there is a file yet.
    pub fn exists(&self) -> bool {
        matches!(self.log.seen, Seen::File(_))
    }

    /// The length of the file's valid part; 0 without a file.
    pub fn file_len(&self) -> u64 {
        match &self.log.seen {
            Seen::File(known) => known.good_len,
            _ => 0,
        }
    }

    /// Appends `records` (distinct keys) as one frame and waits for it to
    /// reach the disk; when this returns `Ok`, they are durable and in the
    /// index. On failure the file is as before.
    pub fn append(&mut self, records: &[Record]) -> Result<Compaction> {
        self.writable()?;
        self.recover()?;
        let log = &mut *self.log;
        let mut frame = Vec::new();
        format::encode_frame(records, &mut frame).map_err(|k| log.err(k))?;
        log.index.fits(records).map_err(|k| log.err(k))?;
        let root = rustix::process::geteuid().is_root();
        let limit = log.limit;
        let known = match &mut log.seen {
            Seen::File(known)
                if known.version == Version::V2
                    && known.open.writable
                    && (!root || known.open.owner.0 == 0)
                    && known.good_len.saturating_add(frame.len() as u64) <= limit =>
            {
                known
            }
            // no file yet, version 1, read-only, a file root did not create, or
            // it would grow too large
            _ => {
                self.replace(records, None)?;
                return Ok(Compaction::Done);
            }
        };
        let at = known.good_len;
        let path = log.dir.path();
        let io = |call, e| StateError::io(path, call, e);
        if known.open.len > at {
            // a torn last frame: its writer issued nothing from it
            known
                .open
                .file
                .set_len(at)
                .map_err(|e| io("ftruncate()", e))?;
            known.open.len = at;
        }
        let written = known
            .open
            .file
            .write_all_at(&frame, at)
            .map_err(|e| io("pwrite()", e))
            .and_then(|()| {
                known
                    .open
                    .file
                    .sync_data()
                    .map_err(|e| io("fdatasync()", e))
            });
        if let Err(err) = written {
            // leave no frame behind that nobody may rely on
            if known.open.file.set_len(at).is_err() {
                log.forget();
            }
            return Err(err);
        }
        let end = at.saturating_add(frame.len() as u64);
        known.good_len = end;
        known.open.len = end;
        if let Err(k) = log.index.apply_all(records) {
            let err = log.err(k);
            log.forget();
            return Err(err);
        }
        if end > COMPACT_MIN && end > log.index.compacted_len().saturating_mul(2) {
            return Ok(match self.replace(&[], None) {
                Ok(()) => Compaction::Done,
                Err(err) => Compaction::Failed(err),
            });
        }
        Ok(Compaction::NotNeeded)
    }

    /// Rewrites the file compacted, with `extra` (distinct keys) applied,
    /// handing it to `owner` (uid, gid) if given: the master's start and clean
    /// stop. Without `owner`, root keeps the present file's owner.
    pub fn rewrite(&mut self, extra: &[Record], owner: Option<(u32, u32)>) -> Result<()> {
        self.writable()?;
        self.recover()?;
        if !extra.is_empty() {
            format::encode_frame(extra, &mut Vec::new()).map_err(|k| self.log.err(k))?;
        }
        self.replace(extra, owner)
    }

    /// Whether a rewrite could create its file in the directory (for a
    /// read-only `nginx -t`): one is created and removed.
    pub fn probe(&self) -> Result<()> {
        self.log.dir.probe(&self.lock)
    }

    /// Removes temporary files a killed writer left in the directory.
    pub fn remove_stale_temps(&self) -> Result<usize> {
        self.log.dir.remove_stale_temps(&self.lock)
    }

    fn writable(&self) -> Result<()> {
        if !self.log.write {
            return Err(self.log.err(ErrorKind::Invalid("opened read-only")));
        }
        Ok(())
    }

    /// Reads the file again if an earlier write of this session failed in a
    /// way that leaves it unknown: never write from a stale index.
    fn recover(&mut self) -> Result<()> {
        if !matches!(self.log.seen, Seen::Nothing) {
            return Ok(());
        }
        let result = self.log.catch_up(&self.lock);
        if result.is_err() {
            self.log.forget();
        }
        result
    }

    fn replace(&mut self, extra: &[Record], owner: Option<(u32, u32)>) -> Result<()> {
        let log = &mut *self.log;
        let mut next = log.index.clone();
        next.apply_all(extra).map_err(|k| log.err(k))?;
        let bytes = format::encode_file(&next.records()).map_err(|k| log.err(k))?;
        if bytes.len() as u64 > log.limit {
            return Err(log.err(ErrorKind::TooLarge(log.limit)));
        }
        // root hands a file it rewrites back to whoever had it
        let owner = owner.or(match &log.seen {
            Seen::File(known) if rustix::process::geteuid().is_root() => Some(known.open.owner),
            _ => None,
        });
        match log.dir.replace(&self.lock, &bytes, owner) {
            Ok(open) => {
                log.index = next;
                log.seen = Seen::File(Known {
                    good_len: open.len,
                    open,
                    version: Version::V2,
                });
                Ok(())
            }
            Err(err) => {
                // the rename may have happened: read the file again next time
                log.seen = Seen::Nothing;
                Err(err)
            }
        }
    }
}
