//! The log on a real filesystem: catching up, torn tails, migration, limits,
//! several writers, and what a hostile user can plant in the directory.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::format::{HEADER_LEN, MAGIC};
use super::log::{size_limit, COMPACT_MIN};
use super::*;

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ngx-ticket-state-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        TempDir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("t.state")
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn me() -> Access {
    Access {
        uid: rustix::process::geteuid().as_raw(),
        gids: vec![rustix::process::getegid().as_raw()],
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

const NOBODY: u32 = 65534;

fn nobody() -> Access {
    Access {
        uid: NOBODY,
        gids: vec![NOBODY],
    }
}

fn mark(key: &str, mark: u64) -> Record {
    Record::Mark {
        key: Some(key.as_bytes().to_vec()).filter(|k| !k.is_empty()),
        instance: 1,
        start: Some(1),
        mark,
        used: 1_700_000_000,
    }
}

fn retire(key: &str) -> Record {
    Record::Retire {
        key: key.as_bytes().to_vec(),
        instance: 1,
    }
}

fn open(path: &Path, max_keys: usize) -> StateLog {
    StateLog::open(path, &me(), max_keys).unwrap()
}

/// The counters a fresh reader finds, as (key, mark), sorted.
fn marks(path: &Path, max_keys: usize) -> Vec<(Option<Vec<u8>>, u64)> {
    let mut log = open(path, max_keys);
    let session = log.session().unwrap();
    marks_of(session.index())
}

fn marks_of(index: &Index) -> Vec<(Option<Vec<u8>>, u64)> {
    let mut all: Vec<_> = index
        .iter()
        .map(|(k, e)| (k.map(<[u8]>::to_vec), e.mark))
        .collect();
    all.sort();
    all
}

fn kind(result: Result<impl std::fmt::Debug>) -> ErrorKind {
    match result {
        Err(err) => err.kind,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn round_trip_through_the_file() {
    let dir = TempDir::new("round");
    let path = dir.file();
    let mut log = open(&path, 10);
    {
        let mut s = log.session().unwrap();
        assert!(!s.exists());
        assert!(s.index().is_empty());
        assert_eq!(s.file_len(), 0);
        // the first append creates the file through replace
        s.append(&[mark("", 100), mark("gala", 5)]).unwrap();
        assert!(s.exists());
        s.append(&[mark("gala", 7), mark("expo", 1)]).unwrap();
        s.append(&[retire("expo")]).unwrap();
        assert_eq!(s.file_len(), fs::metadata(&path).unwrap().len());
    }
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(&fs::read(&path).unwrap()[..8], MAGIC);
    assert_eq!(marks(&path, 10), [(None, 100), (Some(b"gala".to_vec()), 7)]);
    // the same log again: nothing new to read
    let fresh = marks(&path, 10);
    let s = log.session().unwrap();
    assert_eq!(marks_of(s.index()), fresh);
    drop(s);
    assert_eq!(dir.names(), ["t.state"]);
}

#[test]
fn invalid_records_leave_the_file_alone() {
    let dir = TempDir::new("invalid");
    let path = dir.file();
    let mut log = open(&path, 10);
    let mut s = log.session().unwrap();
    s.append(&[mark("a", 1)]).unwrap();
    let before = fs::read(&path).unwrap();
    let too_big = mark("a", MAX_MARK + 1);
    assert!(matches!(kind(s.append(&[too_big])), ErrorKind::Invalid(_)));
    assert!(matches!(
        kind(s.append(&[mark("b", 1), mark("b", 2)])),
        ErrorKind::Invalid(_)
    ));
    assert!(matches!(kind(s.append(&[])), ErrorKind::Invalid(_)));
    assert!(matches!(
        kind(s.rewrite(&[retire("")], None)),
        ErrorKind::Invalid(_)
    ));
    drop(s);
    assert_eq!(fs::read(&path).unwrap(), before);
    let mut ro = StateLog::open_read_only(&path, &me(), 10).unwrap();
    let mut s = ro.session().unwrap();
    assert_eq!(s.index().keys(), 1);
    assert!(matches!(
        kind(s.append(&[mark("a", 2)])),
        ErrorKind::Invalid(_)
    ));
}

/// Three appends; the bytes after two, and after three.
fn three_frames(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut log = open(path, 10);
    let mut s = log.session().unwrap();
    s.append(&[mark("", 10), mark("a", 1)]).unwrap();
    s.append(&[mark("a", 2), mark("b", 3)]).unwrap();
    let two = fs::read(path).unwrap();
    s.append(&[mark("b", 4), retire("a")]).unwrap();
    (two, fs::read(path).unwrap())
}

#[test]
fn torn_tail_is_ignored_and_cut_at_the_next_append() {
    let dir = TempDir::new("torn");
    let path = dir.file();
    let (two, three) = three_frames(&path);
    let after_two = {
        fs::write(&path, &two).unwrap();
        marks(&path, 10)
    };
    for cut in two.len() + 1..three.len() {
        fs::write(&path, &three[..cut]).unwrap();
        let mut log = open(&path, 10);
        let mut s = log.session().unwrap();
        assert_eq!(marks_of(s.index()), after_two, "cut at {cut}");
        assert_eq!(s.file_len(), two.len() as u64);
        s.append(&[mark("c", 9)]).unwrap();
        let len = s.file_len();
        drop(s);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert_eq!(&bytes[..two.len()], &two[..], "cut at {cut}");
        let mut expected = after_two.clone();
        expected.push((Some(b"c".to_vec()), 9));
        assert_eq!(marks(&path, 10), expected);
    }
}

#[test]
fn torn_tail_written_by_another_process() {
    let dir = TempDir::new("torn2");
    let path = dir.file();
    let (two, three) = three_frames(&path);
    fs::write(&path, &two).unwrap();
    let mut a = open(&path, 10);
    let before = marks_of(a.session().unwrap().index());
    // a writer dies halfway through its append
    fs::write(&path, &three[..three.len() - 3]).unwrap();
    let mut s = a.session().unwrap();
    assert_eq!(marks_of(s.index()), before);
    s.append(&[mark("d", 1)]).unwrap();
    drop(s);
    let mut b = open(&path, 10);
    let s = b.session().unwrap();
    assert_eq!(s.index().get(Some(b"d")).unwrap().mark, 1);
    assert_eq!(s.index().get(Some(b"b")).unwrap().mark, 3);
}

#[test]
fn every_byte_flip_is_noticed() {
    let dir = TempDir::new("flip");
    let path = dir.file();
    let (two, three) = three_frames(&path);
    let good = marks(&path, 10);
    fs::write(&path, &two).unwrap();
    let after_two = marks(&path, 10);
    for i in 0..three.len() {
        let mut bad = three.clone();
        bad[i] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        let mut log = open(&path, 10);
        match log.session() {
            Err(err) => assert!(err.is_corrupt(), "flip at {i}: {err}"),
            // the last frame is damaged: a torn write, dropped
            Ok(s) => {
                assert!(i >= two.len(), "flip at {i} went unnoticed");
                assert_eq!(marks_of(s.index()), after_two);
                assert_ne!(marks_of(s.index()), good);
            }
        }
    }
}

#[test]
fn corruption_in_the_middle_is_refused() {
    let dir = TempDir::new("middle");
    let path = dir.file();
    let (two, mut three) = three_frames(&path);
    let at = two.len() - 2;
    three[at] ^= 1;
    fs::write(&path, &three).unwrap();
    let mut log = open(&path, 10);
    let err = log.session().unwrap_err();
    assert!(err.is_corrupt());
    // the second frame: after the header and a frame of two marks
    let frame = HEADER_LEN + 8 + 34 + (34 + 1);
    assert_eq!(
        err.to_string(),
        format!(
            "corrupt state file \"{}\": checksum mismatch at byte {frame}",
            path.display()
        )
    );
    // and it stays refused: no write on top of it
    assert!(log.session().is_err());
    assert_eq!(fs::read(&path).unwrap(), three);
}

#[test]
fn version_1_files_are_migrated() {
    let dir = TempDir::new("v1");
    let path = dir.file();
    let v1 = v1::encode(&[(None, 1, 10_000), (Some(b"gala"), 100, 3)]);
    fs::write(&path, &v1).unwrap();
    let mut log = open(&path, 10);
    let mut s = log.session().unwrap();
    let gala = *s.index().get(Some(b"gala")).unwrap();
    assert_eq!(
        gala,
        Entry {
            start: Some(100),
            mark: 3,
            instance: 0,
            used: 0
        }
    );
    s.append(&[mark("expo", 5)]).unwrap();
    drop(s);
    assert_eq!(&fs::read(&path).unwrap()[..8], MAGIC);
    assert_eq!(
        marks(&path, 10),
        [
            (None, 10_000),
            (Some(b"expo".to_vec()), 5),
            (Some(b"gala".to_vec()), 3)
        ]
    );
}

#[test]
fn key_limit() {
    let dir = TempDir::new("keys");
    let path = dir.file();
    let mut log = open(&path, 2);
    let mut s = log.session().unwrap();
    s.append(&[mark("", 1), mark("a", 1), mark("b", 1)])
        .unwrap();
    assert!(matches!(
        kind(s.append(&[mark("c", 1)])),
        ErrorKind::TooManyKeys(2)
    ));
    s.append(&[retire("a"), mark("c", 1)]).unwrap();
    drop(s);
    // a smaller zone cannot take the file
    let mut small = open(&path, 1);
    let err = small.session().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "\"{}\" holds more keys than the zone fits (1)",
            path.display()
        )
    );
}

#[test]
fn size_limit_and_garbage() {
    let dir = TempDir::new("size");
    let path = dir.file();
    let limit = size_limit(10);
    assert!(limit >= COMPACT_MIN);
    // 10 MB: refused from its size alone
    let f = fs::File::create(&path).unwrap();
    f.set_len(10 << 20).unwrap();
    drop(f);
    let mut log = open(&path, 10);
    let started = Instant::now();
    assert!(matches!(kind(log.session()), ErrorKind::TooLarge(l) if l == limit));
    assert!(started.elapsed() < Duration::from_millis(100));
    // one byte over the limit
    let mut bytes = Vec::new();
    format::encode_header(&mut bytes);
    bytes.resize(limit as usize + 1, 0);
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(kind(log.session()), ErrorKind::TooLarge(_)));
    // garbage within the limit
    fs::write(&path, b"#!/bin/sh\necho hello\n").unwrap();
    assert!(matches!(kind(log.session()), ErrorKind::NotAStateFile));
    fs::write(&path, b"").unwrap();
    assert!(matches!(kind(log.session()), ErrorKind::NotAStateFile));
}

#[test]
fn two_writers_see_each_other() {
    let dir = TempDir::new("two");
    let path = dir.file();
    let mut a = open(&path, 50);
    let mut b = open(&path, 50);
    a.session().unwrap().append(&[mark("", 1)]).unwrap();
    b.session().unwrap().append(&[mark("b", 1)]).unwrap();
    {
        let mut s = a.session().unwrap();
        assert_eq!(s.index().get(Some(b"b")).unwrap().mark, 1);
        s.append(&[mark("a", 1)]).unwrap();
    }
    {
        let mut s = b.session().unwrap();
        assert_eq!(s.index().get(Some(b"a")).unwrap().mark, 1);
        // a clean stop's rewrite, with a give-back
        s.rewrite(&[mark("", 0)], None).unwrap();
    }
    let s = a.session().unwrap();
    assert_eq!(s.index().get(None).unwrap().mark, 0);
    assert_eq!(s.index().len(), 3);
    drop(s);

    // many interleaved appends: the log compacts itself and never passes its
    // limit, and both always agree with a fresh reader
    let limit = a.limit();
    let mut compactions = 0;
    let mut last_len = 0;
    for i in 0..3000u64 {
        let (log, other) = if i % 2 == 0 {
            (&mut a, "b")
        } else {
            (&mut b, "a")
        };
        let mut s = log.session().unwrap();
        if i > 0 {
            assert_eq!(s.index().get(None).unwrap().mark, i - 1);
            assert!(s.index().get(Some(other.as_bytes())).is_some());
        }
        let key = format!("k{}", i % 40);
        s.append(&[mark("", i), mark(&key, i)]).unwrap();
        let len = s.file_len();
        assert!(len <= limit);
        if len < last_len {
            compactions += 1;
        }
        last_len = len;
    }
    assert!(compactions >= 2, "{compactions} compactions");
    let fresh = marks(&path, 50);
    assert_eq!(marks_of(a.session().unwrap().index()), fresh);
    assert_eq!(marks_of(b.session().unwrap().index()), fresh);
    assert_eq!(dir.names(), ["t.state"]);
}

#[test]
fn a_replaced_file_is_read_again() {
    let dir = TempDir::new("replaced");
    let path = dir.file();
    let mut a = open(&path, 10);
    a.session().unwrap().append(&[mark("a", 5)]).unwrap();
    // someone else's rename: the same length, a new file
    let mut other = open(&path, 10);
    {
        let mut s = other.session().unwrap();
        s.rewrite(&[retire("a"), mark("z", 5)], None).unwrap();
    }
    let s = a.session().unwrap();
    assert!(s.index().get(Some(b"a")).is_none());
    assert_eq!(s.index().get(Some(b"z")).unwrap().mark, 5);
    drop(s);
    // removed: empty again, and the next append creates it
    fs::remove_file(&path).unwrap();
    let mut s = a.session().unwrap();
    assert!(!s.exists() && s.index().is_empty());
    s.append(&[mark("y", 1)]).unwrap();
    drop(s);
    assert_eq!(marks(&path, 10), [(Some(b"y".to_vec()), 1)]);
}

#[test]
fn a_state_file_is_named_by_its_directory_not_its_path() {
    let dir = TempDir::new("identity");
    let real = dir.0.join("real");
    fs::create_dir(&real).unwrap();
    let link = dir.0.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let a = file_identity(&real.join("t.state"));
    assert!(a.is_some());
    assert_eq!(a, file_identity(&link.join("t.state")));
    assert_eq!(a, file_identity(&dir.0.join("link/../real/t.state")));
    assert_ne!(a, file_identity(&real.join("u.state")));
    assert_eq!(file_identity(&dir.0.join("missing/t.state")), None);
}

#[test]
fn symlinks_are_refused_and_their_targets_untouched() {
    let dir = TempDir::new("symlink");
    let path = dir.file();
    for target in ["/etc/passwd", "/dev/zero"] {
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path).unwrap();
        let before = fs::metadata(target).unwrap();
        let content = (target == "/etc/passwd").then(|| fs::read(target).unwrap());
        let mut log = open(&path, 10);
        let err = log.session().unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Symlink), "{err}");
        assert_eq!(
            err.to_string(),
            format!("\"{}\" is a symbolic link", path.display())
        );
        let after = fs::metadata(target).unwrap();
        assert_eq!(
            (before.uid(), before.gid(), before.mode(), before.mtime()),
            (after.uid(), after.gid(), after.mode(), after.mtime())
        );
        if let Some(content) = content {
            assert_eq!(fs::read(target).unwrap(), content);
        }
    }
}

#[test]
fn a_fifo_is_refused_without_hanging() {
    let dir = TempDir::new("fifo");
    let path = dir.file();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let mut log = open(&p, 10);
        let _ = tx.send(log.session().map(|_| ()).map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("opening a FIFO hung");
    assert_eq!(
        result,
        Err(format!("\"{}\" is not a regular file", path.display()))
    );
    // a directory at the name
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert!(matches!(
        kind(open(&path, 10).session()),
        ErrorKind::NotRegular
    ));
}

#[test]
fn hard_links_are_refused() {
    let dir = TempDir::new("link");
    let path = dir.file();
    open(&path, 10)
        .session()
        .unwrap()
        .append(&[mark("a", 1)])
        .unwrap();
    fs::hard_link(&path, dir.0.join("other")).unwrap();
    let err = open(&path, 10).session().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("\"{}\" has 2 hard links", path.display())
    );
}

#[test]
fn foreign_owners_are_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let dir = TempDir::new("owner");
    let path = dir.file();
    open(&path, 10)
        .session()
        .unwrap()
        .append(&[mark("a", 1)])
        .unwrap();
    std::os::unix::fs::chown(&path, Some(1001), Some(1001)).unwrap();
    let err = open(&path, 10).session().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "\"{}\" is owned by uid 1001, not by the worker user or root",
            path.display()
        )
    );
    // the worker user's file is fine
    std::os::unix::fs::chown(&dir.0, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut log = StateLog::open(&path, &nobody(), 10).unwrap();
    assert_eq!(log.session().unwrap().index().keys(), 1);
}

#[test]
fn root_writes_only_into_its_own_files() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = TempDir::new("root");
    let path = dir.file();
    std::os::unix::fs::chown(&dir.0, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut log = StateLog::open(&path, &nobody(), 10).unwrap();
    {
        // the master's start: the file goes to the worker user
        let mut s = log.session().unwrap();
        s.rewrite(&[mark("", 5)], Some((NOBODY, NOBODY))).unwrap();
    }
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (NOBODY, NOBODY, 0o600)
    );
    // an append by root replaces the worker's file, keeping its owner
    let mut s = log.session().unwrap();
    assert!(matches!(
        s.append(&[mark("a", 1)]).unwrap(),
        Compaction::Done
    ));
    drop(s);
    let after = fs::metadata(&path).unwrap();
    assert_ne!(after.ino(), meta.ino());
    assert_eq!((after.uid(), after.gid()), (NOBODY, NOBODY));
    let mut fresh = StateLog::open(&path, &nobody(), 10).unwrap();
    assert_eq!(fresh.session().unwrap().index().len(), 2);
    // root's own file is appended to in place
    std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    let ino = fs::metadata(&path).unwrap().ino();
    let mut s = log.session().unwrap();
    assert!(matches!(
        s.append(&[mark("b", 1)]).unwrap(),
        Compaction::NotNeeded
    ));
    drop(s);
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
}

#[test]
fn directory_checks() {
    let dir = TempDir::new("dir");
    let path = dir.file();
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
    let err = StateLog::open(&path, &me(), 10).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "directory \"{}\" is writable by every user and has no sticky bit",
            dir.0.display()
        )
    );
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o1777)).unwrap();
    open(&path, 10)
        .session()
        .unwrap()
        .append(&[mark("a", 1)])
        .unwrap();
    assert_eq!(marks(&path, 10).len(), 1);

    assert!(matches!(
        StateLog::open(&dir.0.join(".."), &me(), 10)
            .unwrap_err()
            .kind,
        ErrorKind::BadName
    ));
    assert!(matches!(
        StateLog::open(&path.join("x"), &me(), 10).unwrap_err().kind,
        ErrorKind::NotADirectory
    ));
    assert!(matches!(
        StateLog::open(&dir.0.join("none/x"), &me(), 10)
            .unwrap_err()
            .kind,
        ErrorKind::Io { .. }
    ));
    if is_root() {
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
        let err = StateLog::open(&path, &nobody(), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "directory \"{}\" does not let uid 65534 create and rename files",
                dir.0.display()
            )
        );
        let group = Access {
            uid: NOBODY,
            gids: vec![4242, 0],
        };
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(StateLog::open(&path, &group, 10).is_ok());
    }
}

#[test]
fn stale_temps_are_removed() {
    let dir = TempDir::new("stale");
    let path = dir.file();
    open(&path, 10)
        .session()
        .unwrap()
        .append(&[mark("a", 1)])
        .unwrap();
    fs::write(dir.0.join(".t.state.0123456789abcdef.tmp"), b"x").unwrap();
    fs::write(dir.0.join("t.state.tmp.4242"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.0.join(".t.state.fedcba9876543210.tmp")).unwrap();
    fs::write(dir.0.join(".t.state.other.tmp"), b"x").unwrap();
    fs::write(dir.0.join(".u.state.0123456789abcdef.tmp"), b"x").unwrap();
    let passwd = fs::read("/etc/passwd").unwrap();
    let mut log = open(&path, 10);
    let s = log.session().unwrap();
    assert_eq!(s.remove_stale_temps().unwrap(), 3);
    drop(s);
    assert_eq!(
        dir.names(),
        [
            ".t.state.other.tmp",
            ".u.state.0123456789abcdef.tmp",
            "t.state"
        ]
    );
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd);
}

/// A full disk: the failed append leaves the file as it was, and appends work
/// again once there is room. Needs root to mount a small tmpfs.
#[test]
fn a_full_disk_leaves_no_torn_frame() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let dir = TempDir::new("enospc");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
        .arg(&dir.0)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&dir.0);
    let path = dir.file();
    let mut log = open(&path, 1000);
    let mut s = log.session().unwrap();
    s.append(&[mark("", 1)]).unwrap();
    drop(s);
    // fill the filesystem with a file of its own
    let filler = dir.0.join("filler");
    let chunk = vec![1u8; 1024];
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let before = fs::read(&path).unwrap();
    let mut s = log.session().unwrap();
    let mut failed = None;
    // the page that holds the file's tail may still have room: fill it
    for i in 0..200u64 {
        let records: Vec<Record> = (0..40).map(|k| mark(&format!("key-{k}"), i)).collect();
        if let Err(err) = s.append(&records) {
            failed = Some(err);
            break;
        }
    }
    let err = failed.expect("never ran out of space");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let len = s.file_len();
    drop(s);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    assert!(len >= before.len() as u64);
    let expect = marks(&path, 1000);
    fs::remove_file(&filler).unwrap();
    let mut s = log.session().unwrap();
    assert_eq!(marks_of(s.index()), expect);
    s.append(&[mark("after", 1)]).unwrap();
    drop(s);
    assert_eq!(marks(&path, 1000).len(), expect.len() + 1);
}

/// Catching up with one frame and appending 100 records must stay far under
/// 50 ms with 100,000 keys (run with --nocapture to see the numbers).
#[test]
fn timing_with_100k_keys() {
    const KEYS: usize = 100_000;
    let dir = TempDir::new("timing");
    let path = dir.file();
    let mut writer = open(&path, KEYS);
    let started = Instant::now();
    let all: Vec<Record> = (0..KEYS)
        .map(|k| mark(&format!("event-{k:06}"), 10_000))
        .collect();
    writer.session().unwrap().rewrite(&all, None).unwrap();
    let rewrite = started.elapsed();

    let mut reader = open(&path, KEYS);
    let started = Instant::now();
    assert_eq!(reader.session().unwrap().index().keys(), KEYS);
    let full_read = started.elapsed();

    writer
        .session()
        .unwrap()
        .append(&[mark("event-000001", 20_000)])
        .unwrap();
    let started = Instant::now();
    let s = reader.session().unwrap();
    let catch_up = started.elapsed();
    assert_eq!(s.index().get(Some(b"event-000001")).unwrap().mark, 20_000);
    drop(s);

    let hundred: Vec<Record> = (0..100)
        .map(|k| mark(&format!("event-{k:06}"), 30_000))
        .collect();
    let mut s = reader.session().unwrap();
    let started = Instant::now();
    assert!(matches!(s.append(&hundred).unwrap(), Compaction::NotNeeded));
    let append = started.elapsed();
    drop(s);
    println!(
        "100k keys ({} bytes): rewrite {rewrite:?}, full read {full_read:?}, \
         catch-up of one frame {catch_up:?}, append of 100 records {append:?}",
        fs::metadata(&path).unwrap().len()
    );
    assert!(catch_up < Duration::from_millis(50));
    assert!(append < Duration::from_millis(50));
}

#[test]
fn probe_creates_and_removes_a_file_or_says_why_not() {
    let dir = TempDir::new("probe");
    let mut log = StateLog::open_read_only(&dir.file(), &me(), 10).unwrap();
    log.session().unwrap().probe().unwrap();
    assert!(dir.names().is_empty(), "{:?}", dir.names());
    // /proc lets nobody create files, root included, whatever its mode
    // bits say; the error names the file the start would have written.
    if is_root() {
        let mut log = StateLog::open_read_only(Path::new("/proc/t.state"), &me(), 10).unwrap();
        let err = log.session().unwrap().probe().unwrap_err();
        assert!(
            matches!(err.kind, ErrorKind::Io { call: "open()", .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("open() \"/proc/.t.state."),
            "{err}"
        );
    }
}
