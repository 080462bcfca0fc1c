//! The state directory: checked once, then every file operation goes through
//! its descriptor, under an flock on it.
//!
//! The directory is writable by the worker user, and may be writable by
//! others (sticky, as /tmp), so whatever sits at the file's name may have been
//! planted: it is opened without following symlinks and without blocking,
//! and used only when it is a regular file with one link, owned by the
//! worker user, root or this process. New files are created with `O_EXCL`
//! under a random name and renamed into place; root replaces a file it does
//! not own instead of writing into it, so it only ever writes into files that
//! root created.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, CWD};
use rustix::io::Errno;

use super::{ErrorKind, Result, StateError};

/// The user the worker processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub uid: u32,
    pub gids: Vec<u32>,
}

/// The directory of one state file, opened and checked.
#[derive(Debug)]
pub struct StateDir {
    dir: File,
    dir_path: PathBuf,
    path: PathBuf,
    name: OsString,
    worker_uid: u32,
}

/// The directory's lock: an flock on a descriptor of its own, so processes
/// that inherited the directory's descriptor (forked workers) still exclude
/// each other. Dropping it unlocks.
#[derive(Debug)]
pub struct DirLock {
    _fd: OwnedFd,
}

/// The state file, opened and checked.
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    /// (st_dev, st_ino): whether it is still the same file next time.
    pub id: (u64, u64),
    pub len: u64,
    /// (uid, gid)
    pub owner: (u32, u32),
    /// Opened for writing (else read-only).
    pub writable: bool,
}

const STICKY: u32 = 0o1000;

/// What names one state file whatever path leads to it: its directory's
/// (st_dev, st_ino) and its name (symlinks and hard links at the name itself
/// are refused when it is opened). `None` when the directory cannot be read.
pub fn file_identity(path: &Path) -> Option<(u64, u64, OsString)> {
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).ok()?;
    Some((meta.dev(), meta.ino(), name.to_os_string()))
}

impl StateDir {
    /// Opens and checks the directory of `path`: the worker user must be able
    /// to create and rename files there, and a directory every user can write
    /// needs the sticky bit. Symlinks in the directory part are followed.
    pub fn open(path: &Path, access: &Access) -> Result<StateDir> {
        let (dir_path, name) =
            split(path).ok_or_else(|| StateError::new(path, ErrorKind::BadName))?;
        let dir_err = |kind| StateError::new(&dir_path, kind);
        let fd = retry(|| {
            rustix::fs::openat(
                CWD,
                &dir_path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .map_err(|e| match e {
            Errno::NOTDIR => dir_err(ErrorKind::NotADirectory),
            e => StateError::io(&dir_path, "open()", e),
        })?;
        let dir = File::from(fd);
        let meta = dir
            .metadata()
            .map_err(|e| StateError::io(&dir_path, "fstat()", e))?;
        if !meta.is_dir() {
            return Err(dir_err(ErrorKind::NotADirectory));
        }
        if meta.mode() & 0o002 != 0 && meta.mode() & STICKY == 0 {
            return Err(dir_err(ErrorKind::WorldWritable));
        }
        if !writable_by(meta.uid(), meta.gid(), meta.mode(), access) {
            return Err(dir_err(ErrorKind::DirNotWritable { uid: access.uid }));
        }
        Ok(StateDir {
            dir,
            dir_path,
            path: path.to_path_buf(),
            name,
            worker_uid: access.uid,
        })
    }

    /// The state file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, kind: ErrorKind) -> StateError {
        StateError::new(&self.path, kind)
    }

    fn io(&self, call: &'static str, err: impl Into<io::Error>) -> StateError {
        StateError::io(&self.path, call, err)
    }

    /// Waits for the directory's exclusive lock.
    pub fn lock(&self) -> Result<DirLock> {
        let fd = retry(|| {
            rustix::fs::openat(
                &self.dir,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
        .map_err(|e| StateError::io(&self.dir_path, "open()", e))?;
        retry(|| rustix::fs::flock(&fd, FlockOperation::LockExclusive))
            .map_err(|e| StateError::io(&self.dir_path, "flock()", e))?;
        Ok(DirLock { _fd: fd })
    }

    /// Opens the state file if there is one and checks it: for writing if
    /// `write` and the file's mode lets this user, else read-only. Files over
    /// `limit` bytes are refused unread.
    pub fn open_file(&self, _lock: &DirLock, limit: u64, write: bool) -> Result<Option<OpenFile>> {
        let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let euid = rustix::process::geteuid().as_raw();
        let open =
            |mode| retry(|| rustix::fs::openat(&self.dir, &self.name, flags | mode, Mode::empty()));
        let opened = match write.then(|| open(OFlags::RDWR)) {
            Some(Ok(fd)) => Ok((fd, true)),
            None | Some(Err(Errno::ACCESS | Errno::ROFS)) => {
                open(OFlags::RDONLY).map(|fd| (fd, false))
            }
            Some(Err(e)) => Err(e),
        };
        let (fd, writable) = match opened {
            Ok(opened) => opened,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(self.err(ErrorKind::Symlink)),
            // a directory, a socket, a FIFO opened for writing without a reader
            Err(Errno::ISDIR | Errno::NXIO) => return Err(self.err(ErrorKind::NotRegular)),
            Err(e) => return Err(self.io("open()", e)),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| self.io("fstat()", e))?;
        if !meta.file_type().is_file() {
            return Err(self.err(ErrorKind::NotRegular));
        }
        if meta.nlink() != 1 {
            return Err(self.err(ErrorKind::HardLinks(meta.nlink())));
        }
        if ![self.worker_uid, 0, euid].contains(&meta.uid()) {
            return Err(self.err(ErrorKind::Owner(meta.uid())));
        }
        if meta.len() > limit {
            return Err(self.err(ErrorKind::TooLarge(limit)));
        }
        Ok(Some(OpenFile {
            file,
            id: (meta.dev(), meta.ino()),
            len: meta.len(),
            owner: (meta.uid(), meta.gid()),
            writable,
        }))
    }

    /// Reads from `offset` to the end of the file, refusing a file that grows
    /// past `limit` bytes: no more than `limit + 1` bytes are ever read.
    pub fn read_from(
        &self,
        file: &File,
        offset: u64,
        len_hint: u64,
        limit: u64,
    ) -> Result<Vec<u8>> {
        read_bounded(file, offset, len_hint, limit).map_err(|e| match e {
            Bounded::TooLarge => self.err(ErrorKind::TooLarge(limit)),
            Bounded::Io(e) => self.io("pread()", e),
        })
    }

    /// Atomically replaces the state file with `bytes`: a new file under an
    /// unpredictable name, created exclusively, written, handed to `owner`
    /// (uid, gid) if given, synced, renamed over the name, and the directory
    /// synced. On failure the new file is removed.
    pub fn replace(
        &self,
        _lock: &DirLock,
        bytes: &[u8],
        owner: Option<(u32, u32)>,
    ) -> Result<OpenFile> {
        let (tmp, fd) = self.create_temp()?;
        let file = File::from(fd);
        let result = self.fill(&file, &tmp, bytes, owner);
        if result.is_err() {
            // gone already if the rename happened; never touches the name
            let _ = rustix::fs::unlinkat(&self.dir, &tmp, AtFlags::empty());
        }
        result.map(|(id, owner)| OpenFile {
            file,
            id,
            len: bytes.len() as u64,
            owner,
            writable: true,
        })
    }

    /// Creates a file in the directory as [`StateDir::replace`] does, and
    /// removes it: for `nginx -t`, which writes nothing, to fail where the
    /// start would (a read-only or immutable directory, a filesystem such
    /// as /proc that creates no files), whatever the mode bits say.
    pub fn probe(&self, _lock: &DirLock) -> Result<()> {
        let (tmp, fd) = self.create_temp()?;
        drop(fd);
        retry(|| rustix::fs::unlinkat(&self.dir, &tmp, AtFlags::empty()))
            .map_err(|e| StateError::io(&self.dir_path.join(&tmp), "unlink()", e))
    }

    /// A new temporary file of the directory (a name no other writer uses),
    /// never following a link.
    fn create_temp(&self) -> Result<(OsString, rustix::fd::OwnedFd)> {
        let tmp = self.temp_name()?;
        let fd = retry(|| {
            rustix::fs::openat(
                &self.dir,
                &tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })
        .map_err(|e| StateError::io(&self.dir_path.join(&tmp), "open()", e))?;
        Ok((tmp, fd))
    }

    fn fill(
        &self,
        file: &File,
        tmp: &OsStr,
        bytes: &[u8],
        owner: Option<(u32, u32)>,
    ) -> Result<((u64, u64), (u32, u32))> {
        let tmp_path = self.dir_path.join(tmp);
        let io = |call, e: io::Error| StateError::io(&tmp_path, call, e);
        file.write_all_at(bytes, 0).map_err(|e| io("write()", e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(|e| io("fchown()", e))?;
        }
        file.sync_all().map_err(|e| io("fsync()", e))?;
        let meta = file.metadata().map_err(|e| io("fstat()", e))?;
        retry(|| rustix::fs::renameat(&self.dir, tmp, &self.dir, &self.name))
            .map_err(|e| io("rename()", e.into()))?;
        retry(|| rustix::fs::fsync(&self.dir))
            .map_err(|e| StateError::io(&self.dir_path, "fsync()", e))?;
        Ok(((meta.dev(), meta.ino()), (meta.uid(), meta.gid())))
    }

    /// `.NAME.<16 random hex digits>.tmp`
    fn temp_name(&self) -> Result<OsString> {
        let mut random = [0u8; 8];
        let mut filled = 0;
        while filled < random.len() {
            let rest = random.get_mut(filled..).unwrap_or_default();
            match rustix::rand::getrandom(rest, rustix::rand::GetRandomFlags::empty()) {
                Ok(n) => filled = filled.saturating_add(n),
                Err(Errno::INTR) => {}
                Err(e) => return Err(self.io("getrandom()", e)),
            }
        }
        let mut name = Vec::with_capacity(self.name.len() + 22);
        name.push(b'.');
        name.extend_from_slice(self.name.as_bytes());
        name.push(b'.');
        for b in random {
            name.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        name.extend_from_slice(b".tmp");
        Ok(OsString::from_vec(name))
    }

    /// Removes files a killed writer left: `.NAME.<16 hex>.tmp`, and the
    /// `NAME.tmp.<pid>` of earlier releases (which lock the same directory,
    /// so none is being written now). Entries this user may not remove are
    /// left alone. Returns how many were removed.
    pub fn remove_stale_temps(&self, _lock: &DirLock) -> Result<usize> {
        let dir = rustix::fs::Dir::read_from(&self.dir)
            .map_err(|e| StateError::io(&self.dir_path, "opendir()", e))?;
        let mut removed = 0usize;
        for entry in dir {
            let entry = entry.map_err(|e| StateError::io(&self.dir_path, "readdir()", e))?;
            let name = entry.file_name().to_bytes();
            if !is_stale_temp(name, self.name.as_bytes()) {
                continue;
            }
            // unlinkat removes a symlink itself, never what it points to
            match retry(|| {
                rustix::fs::unlinkat(&self.dir, OsStr::from_bytes(name), AtFlags::empty())
            }) {
                Ok(()) => removed = removed.saturating_add(1),
                Err(Errno::NOENT | Errno::PERM | Errno::ACCESS | Errno::ISDIR) => {}
                Err(e) => {
                    return Err(StateError::io(
                        &self.dir_path.join(OsStr::from_bytes(name)),
                        "unlink()",
                        e,
                    ))
                }
            }
        }
        Ok(removed)
    }
}

fn is_stale_temp(entry: &[u8], name: &[u8]) -> bool {
    let ours = entry
        .strip_prefix(b".")
        .and_then(|e| e.strip_prefix(name))
        .and_then(|e| e.strip_prefix(b"."))
        .and_then(|e| e.strip_suffix(b".tmp"))
        .is_some_and(|r| r.len() == 16 && r.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    let earlier = entry
        .strip_prefix(name)
        .and_then(|e| e.strip_prefix(b".tmp."))
        .is_some_and(|pid| !pid.is_empty() && pid.iter().all(u8::is_ascii_digit));
    ours || earlier
}

/// Splits a path into its directory and a file name that is not `.` or `..`.
fn split(path: &Path) -> Option<(PathBuf, OsString)> {
    let bytes = path.as_os_str().as_bytes();
    let (dir, name) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(0) => (&b"/"[..], bytes.get(1..)?),
        Some(i) => (bytes.get(..i)?, bytes.get(i + 1..)?),
        None => (&b"."[..], bytes),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return None;
    }
    Some((
        PathBuf::from(OsStr::from_bytes(dir)),
        OsString::from(OsStr::from_bytes(name)),
    ))
}

/// Whether a directory owned by `owner`:`group` with `mode` lets the worker
/// user create and rename files (write and search), as the kernel decides:
/// only the first class that matches counts.
pub fn writable_by(owner: u32, group: u32, mode: u32, access: &Access) -> bool {
    let bits = if access.uid == 0 {
        return true;
    } else if owner == access.uid {
        mode >> 6
    } else if access.gids.contains(&group) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o3 == 0o3
}

pub(super) enum Bounded {
    TooLarge,
    Io(io::Error),
}

/// Reads `file` from `offset` to its end, at most `limit + 1 - offset` bytes.
pub(super) fn read_bounded(
    file: &File,
    offset: u64,
    len_hint: u64,
    limit: u64,
) -> std::result::Result<Vec<u8>, Bounded> {
    const CHUNK: u64 = 64 * 1024;
    let cap = limit.saturating_add(1).saturating_sub(offset);
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let hint = usize::try_from(len_hint.saturating_sub(offset)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; hint.min(cap)];
    let mut filled = 0usize;
    loop {
        if filled == buf.len() {
            if filled >= cap {
                break;
            }
            let grow = cap.saturating_sub(filled).min(CHUNK as usize);
            buf.resize(filled.saturating_add(grow), 0);
        }
        let Some(dst) = buf.get_mut(filled..) else {
            break;
        };
        match file.read_at(dst, offset.saturating_add(filled as u64)) {
            Ok(0) => break,
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Bounded::Io(e)),
        }
    }
    buf.truncate(filled);
    if offset.saturating_add(filled as u64) > limit {
        return Err(Bounded::TooLarge);
    }
    Ok(buf)
}

fn retry<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match call() {
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let s = |p: &str| {
            split(Path::new(p))
                .map(|(d, n)| (d.display().to_string(), n.to_string_lossy().into_owned()))
        };
        assert_eq!(
            s("/var/lib/t.state"),
            Some(("/var/lib".into(), "t.state".into()))
        );
        assert_eq!(s("/t.state"), Some(("/".into(), "t.state".into())));
        assert_eq!(s("t.state"), Some((".".into(), "t.state".into())));
        assert_eq!(s("a/b/t"), Some(("a/b".into(), "t".into())));
        for bad in ["", "/", "a/", "a/..", "..", ".", "a/."] {
            assert_eq!(s(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn directory_permissions() {
        let user = |uid, gids: &[u32]| Access {
            uid,
            gids: gids.to_vec(),
        };
        assert!(writable_by(1, 1, 0o700, &user(1, &[1])));
        assert!(!writable_by(1, 1, 0o500, &user(1, &[1])));
        // the owner class decides even when the group class would allow
        assert!(!writable_by(1, 2, 0o070, &user(1, &[2])));
        assert!(writable_by(1, 2, 0o070, &user(3, &[5, 2])));
        assert!(!writable_by(1, 2, 0o750, &user(3, &[2])));
        assert!(!writable_by(1, 2, 0o757, &user(3, &[2])));
        assert!(writable_by(1, 2, 0o1777, &user(3, &[4])));
        assert!(!writable_by(1, 2, 0o775, &user(3, &[4])));
        // write without search is not enough
        assert!(!writable_by(1, 2, 0o772, &user(3, &[4])));
        assert!(writable_by(1, 2, 0o000, &user(0, &[])));
    }

    #[test]
    fn stale_temp_names() {
        let n = b"t.state";
        assert!(is_stale_temp(b".t.state.0123456789abcdef.tmp", n));
        assert!(is_stale_temp(b"t.state.tmp.4242", n));
        for other in [
            &b"t.state"[..],
            b".t.state.0123456789ABCDEF.tmp",
            b".t.state.0123456789abcde.tmp",
            b".t.state.x.0123456789abcdef.tmp",
            b".u.state.0123456789abcdef.tmp",
            b"t.state.tmp.",
            b"t.state.tmp.12a",
        ] {
            assert!(
                !is_stale_temp(other, n),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn reads_are_bounded() {
        // /dev/zero never ends: the read stops one byte past the limit
        let zero = File::open("/dev/zero").unwrap();
        assert!(matches!(
            read_bounded(&zero, 0, 0, 1000),
            Err(Bounded::TooLarge)
        ));
        assert!(matches!(
            read_bounded(&zero, 10, 1 << 40, 1000),
            Err(Bounded::TooLarge)
        ));
    }
}
