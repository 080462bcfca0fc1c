//! Storage of durable zones (`ticket_zone … state=PATH`): a log of
//! reservations in a checked state directory. Plain Rust without nginx.
//!
//! - [`format`]: the bytes of a log file (version 2), frame by frame;
//! - [`v1`]: the whole-file format of earlier releases, read for migration;
//! - [`index`]: the counters a log describes;
//! - [`dir`]: the state directory, its lock, and safe opening and replacing;
//! - [`log`]: one zone's log: catching up with other writers, appending,
//!   compacting.
//!
//! The log is written ahead, like a database sequence: a mark record says that
//! a counter may have handed out counts below its mark, so after a crash
//! counting resumes there (a gap, never a repeat).

pub mod dir;
pub mod format;
pub mod index;
pub mod log;
pub mod v1;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use dir::{file_identity, Access, DirLock, StateDir};
pub use format::{Record, KEY_MAX, MAX_MARK};
pub use index::{Entry, Index};
pub use log::{Compaction, Session, StateLog};

/// What is wrong, without the file it is about (see [`StateError`]).
#[derive(Debug)]
pub enum ErrorKind {
    /// A system call failed.
    Io {
        call: &'static str,
        err: io::Error,
    },
    /// The path does not end in a file name (`..`, `/`, a trailing slash).
    BadName,
    NotADirectory,
    /// A directory every user can write, without the sticky bit.
    WorldWritable,
    /// The worker user cannot create and rename files in the directory.
    DirNotWritable {
        uid: u32,
    },
    Symlink,
    NotRegular,
    HardLinks(u64),
    Owner(u32),
    /// The file is larger than the zone can need; the limit in bytes.
    TooLarge(u64),
    NotAStateFile,
    UnknownVersion(u32),
    Corrupt {
        at: u64,
        why: &'static str,
    },
    /// The file holds more keys than the zone fits; the zone's limit.
    TooManyKeys(usize),
    /// A record the writer was asked to write is not valid.
    Invalid(&'static str),
}

/// Why a state file or directory cannot be used. Never a reason to start
/// counting again from the beginning.
#[derive(Debug)]
pub struct StateError {
    pub path: PathBuf,
    pub kind: ErrorKind,
}

impl StateError {
    pub fn new(path: &Path, kind: ErrorKind) -> Self {
        StateError {
            path: path.to_path_buf(),
            kind,
        }
    }

    pub(crate) fn io(path: &Path, call: &'static str, err: impl Into<io::Error>) -> Self {
        StateError::new(
            path,
            ErrorKind::Io {
                call,
                err: err.into(),
            },
        )
    }

    /// The file's contents are damaged or not ours (as opposed to an I/O
    /// failure, a limit or an unsafe place).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Corrupt { .. } | ErrorKind::NotAStateFile | ErrorKind::UnknownVersion(_)
        )
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match &self.kind {
            ErrorKind::Io { call, err } => write!(f, "{call} \"{p}\" failed: {err}"),
            ErrorKind::BadName => write!(f, "\"{p}\" does not end in a file name"),
            ErrorKind::NotADirectory => write!(f, "\"{p}\" is not a directory"),
            ErrorKind::WorldWritable => write!(
                f,
                "directory \"{p}\" is writable by every user and has no sticky bit"
            ),
            ErrorKind::DirNotWritable { uid } => write!(
                f,
                "directory \"{p}\" does not let uid {uid} create and rename files"
            ),
            ErrorKind::Symlink => write!(f, "\"{p}\" is a symbolic link"),
            ErrorKind::NotRegular => write!(f, "\"{p}\" is not a regular file"),
            ErrorKind::HardLinks(n) => write!(f, "\"{p}\" has {n} hard links"),
            ErrorKind::Owner(uid) => write!(
                f,
                "\"{p}\" is owned by uid {uid}, not by the worker user or root"
            ),
            ErrorKind::TooLarge(limit) => write!(
                f,
                "\"{p}\" is larger than the zone can need ({limit} bytes)"
            ),
            ErrorKind::NotAStateFile => write!(f, "\"{p}\" is not a ticket state file"),
            ErrorKind::UnknownVersion(v) => {
                write!(f, "\"{p}\" has unknown state file version {v}")
            }
            ErrorKind::Corrupt { at, why } => {
                write!(f, "corrupt state file \"{p}\": {why} at byte {at}")
            }
            ErrorKind::TooManyKeys(max) => {
                write!(f, "\"{p}\" holds more keys than the zone fits ({max})")
            }
            ErrorKind::Invalid(why) => write!(f, "not written to \"{p}\": {why}"),
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, StateError>;
