//! The "everything" fixture: every file type and metadata feature arc is
//! supposed to preserve.

#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::util::{chmod, is_root, repetitive_text, write_random_file, Rng, MIB};

pub struct Fixture {
    pub root: PathBuf,
    /// Relative path of the sparse file.
    pub sparse: PathBuf,
    /// lutimes worked, so symlink mtimes are meaningful.
    pub symlink_mtimes: bool,
    /// Device nodes were created (root with CAP_MKNOD).
    pub devices: bool,
    /// Relative paths of every regular file (including hardlinks).
    pub files: Vec<PathBuf>,
}

pub const SPARSE_SIZE: u64 = 64 * MIB;

fn raw(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mkfifo(p: &Path, mode: u32) {
    let c = cstr(p);
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    assert_eq!(r, 0, "mkfifo {}: {}", p.display(), std::io::Error::last_os_error());
}

fn mknod(p: &Path, kind: libc::mode_t, major: u32, minor: u32) -> bool {
    let c = cstr(p);
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) };
    if r != 0 {
        eprintln!("note: mknod {} failed: {}", p.display(), std::io::Error::last_os_error());
    }
    r == 0
}

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Builds the full fixture below `root` (which must not exist yet).
/// `big` is the size of the large incompressible file (0: none).
pub fn build_full(root: &Path, big: u64) -> Fixture {
    fs::create_dir_all(root).unwrap();
    let mut rng = Rng::new(0xA11CE);
    let root_owner = is_root();

    // Regular files of assorted sizes around the chunker's limits
    // (min 256 KiB, max 4 MiB) and the frame size.
    let sizes: &[(&str, u64)] = &[
        ("one", 1),
        ("hundred", 100),
        ("page-1", 4095),
        ("page", 4096),
        ("page+1", 4097),
        ("r64k", 65536 + 7),
        ("r256k-1", 256 * 1024 - 1),
        ("r256k", 256 * 1024),
        ("r1m", MIB + 13),
        ("r4m", 4 * MIB),
        ("r4m+1", 4 * MIB + 1),
        ("r5m", 5 * MIB + 3),
    ];
    for (i, (name, size)) in sizes.iter().enumerate() {
        write_random_file(&root.join("data").join(name), *size, 100 + i as u64);
    }
    write(&root.join("data/small.txt"), b"hello, arc\n");
    write(&root.join("data/repetitive.sql"), &repetitive_text(3 * MIB as usize, 7));
    // Identical content in two unrelated files: deduplicated, not linked.
    let dup = rng.bytes(300_000);
    write(&root.join("data/dup1"), &dup);
    write(&root.join("data/dup2"), &dup);
    File::create(root.join("data/empty")).unwrap();
    fs::create_dir_all(root.join("empty_dir")).unwrap();

    // Names: non-UTF-8 bytes, and a long path (> 300 bytes, one 220-byte name).
    write(&root.join("data").join(raw(b"caf\xe9")), b"latin-1 name\n");
    write(&root.join(raw(b"na\xefve\xff")).join("inner.txt"), b"inside a non-UTF-8 directory\n");
    let long_dir = root.join("long").join("d".repeat(100));
    write(&long_dir.join("n".repeat(220)), b"a file with a long path\n");

    // Names tar needs pax records for: spaces and a newline, a long
    // symlink target, a long hardlink target.
    write(&root.join("data").join("sp ace\nnewline"), b"odd name\n");
    std::os::unix::fs::symlink("t".repeat(150), root.join("long").join("long-target-link")).unwrap();
    fs::hard_link(long_dir.join("n".repeat(220)), root.join("long").join("hardlink-to-long-name")).unwrap();

    // Sparse: 64 MiB with three small written regions.
    {
        let p = root.join("sparse.img");
        let f = OpenOptions::new().create(true).write(true).truncate(true).open(&p).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
        f.write_at(&rng.bytes(4096), 0).unwrap();
        f.write_at(&rng.bytes(64 * 1024), 20 * MIB + 12345).unwrap();
        f.write_at(&rng.bytes(4096), SPARSE_SIZE - 4096).unwrap();
    }

    // Hardlinks: a pair and a triple, across directories.
    write_random_file(&root.join("links/a/two"), 100_000, 200);
    fs::create_dir_all(root.join("links/b")).unwrap();
    fs::create_dir_all(root.join("links/c")).unwrap();
    fs::hard_link(root.join("links/a/two"), root.join("links/b/two-again")).unwrap();
    write_random_file(&root.join("links/a/three"), 2 * MIB + 5, 201);
    fs::hard_link(root.join("links/a/three"), root.join("links/b/three-b")).unwrap();
    fs::hard_link(root.join("links/a/three"), root.join("links/c/three-c")).unwrap();

    // Symlinks: relative, absolute, dangling, to a directory.
    fs::create_dir_all(root.join("sym")).unwrap();
    std::os::unix::fs::symlink("../data/small.txt", root.join("sym/rel")).unwrap();
    // A fixed absolute target, so two builds of the fixture are identical.
    std::os::unix::fs::symlink("/etc/passwd", root.join("sym/abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("sym/dangling")).unwrap();
    std::os::unix::fs::symlink("../data", root.join("sym/dir")).unwrap();

    // Special files.
    fs::create_dir_all(root.join("special")).unwrap();
    mkfifo(&root.join("special/fifo"), 0o640);
    drop(std::os::unix::net::UnixListener::bind(root.join("special/sock")).unwrap());
    let mut devices = false;
    if root_owner {
        devices = mknod(&root.join("special/chardev"), libc::S_IFCHR, 1, 3)
            && mknod(&root.join("special/blockdev"), libc::S_IFBLK, 7, 0);
        if !devices {
            let _ = fs::remove_file(root.join("special/chardev"));
        }
    }

    // Modes.
    write(&root.join("modes/m0600"), b"private\n");
    write(&root.join("modes/m0755"), b"#!/bin/sh\necho hi\n");
    write(&root.join("modes/m0000"), b"nobody may read this but root\n");
    write(&root.join("modes/setuid"), b"#!/bin/sh\n");
    write(&root.join("modes/setgid"), b"#!/bin/sh\n");
    fs::create_dir_all(root.join("modes/sticky")).unwrap();
    write(&root.join("modes/sticky/in-sticky"), b"x\n");
    fs::create_dir_all(root.join("modes/setgid-dir")).unwrap();
    fs::create_dir_all(root.join("modes/m0700-dir")).unwrap();

    // Owned by someone else (root only).
    write(&root.join("owned/file"), b"owned by 1234:5678\n");
    fs::create_dir_all(root.join("owned/dir")).unwrap();
    write(&root.join("owned/dir/inner"), b"in a dir owned by 1234:5678\n");
    if root_owner {
        std::os::unix::fs::chown(root.join("owned/file"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("owned/dir"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("sym/rel"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("modes/setgid"), None, Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("special/fifo"), Some(4321), Some(8765)).unwrap();
        // Ids beyond what ustar's 7 octal digits hold.
        write(&root.join("owned/big-ids"), b"uid and gid above 2097151\n");
        std::os::unix::fs::chown(root.join("owned/big-ids"), Some(3_000_000), Some(4_000_000)).unwrap();
    }

    // xattrs with binary values, on a file and on a directory.
    let xfile = root.join("xattr/file");
    write(&xfile, b"has xattrs\n");
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    xattr::set(&xfile, "user.binary", &all_bytes).unwrap();
    xattr::set(&xfile, "user.empty", b"").unwrap();
    xattr::set(&xfile, "user.large", &rng.bytes(1500)).unwrap();
    xattr::set(root.join("xattr"), "user.dir", b"\xff\x00\x01\xfe\x00").unwrap();
    xattr::set(root.join("xattr"), "user.note", b"directory attribute").unwrap();
    if root_owner {
        // trusted.* needs root; it is also the one namespace a symlink can carry.
        xattr::set(&xfile, "trusted.arc", b"trusted\x00value").unwrap();
        xattr::set(root.join("sym/dangling"), "trusted.link", b"on a symlink").unwrap();
    }

    if big > 0 {
        write_random_file(&root.join("big.bin"), big, 999);
    }

    // Modes last but before times (chown clears setuid/setgid).
    let modes: &[(&str, u32)] = &[
        ("modes/m0600", 0o600),
        ("modes/m0755", 0o755),
        ("modes/m0000", 0o000),
        ("modes/setuid", 0o4755),
        ("modes/setgid", 0o2755),
        ("modes/sticky", 0o1777),
        ("modes/setgid-dir", 0o2755),
        ("modes/m0700-dir", 0o700),
        ("owned/file", 0o640),
        ("data/r1m", 0o444),
        ("special/fifo", 0o640),
    ];
    for (p, m) in modes {
        chmod(&root.join(p), *m);
    }
    if devices {
        chmod(&root.join("special/chardev"), 0o666);
        chmod(&root.join("special/blockdev"), 0o660);
    }

    // Nanosecond mtimes on everything, children before parents.
    let mut counter = 0u64;
    let mut symlink_mtimes = true;
    let mut files = Vec::new();
    set_times(root, Path::new(""), &mut counter, &mut symlink_mtimes, &mut files);
    files.sort();
    // Times outside the ordinary range (setting a file's times leaves its
    // directory's mtime alone): before 1970, and past what ustar's 11 octal
    // digits hold (year 2381).
    let data_times = fs::symlink_metadata(root.join("data")).unwrap();
    let pre = root.join("data/pre-epoch");
    write(&pre, b"from 1969\n");
    let fut = root.join("data/future");
    write(&fut, b"from 2381\n");
    filetime::set_file_times(
        &pre,
        filetime::FileTime::from_unix_time(0, 0),
        filetime::FileTime::from_unix_time(-2, 500_000_001),
    )
    .unwrap();
    filetime::set_file_times(
        &fut,
        filetime::FileTime::from_unix_time(0, 0),
        filetime::FileTime::from_unix_time(13_000_000_000, 999_999_999),
    )
    .unwrap();
    filetime::set_file_times(
        root.join("data"),
        filetime::FileTime::from_last_access_time(&data_times),
        filetime::FileTime::from_last_modification_time(&data_times),
    )
    .unwrap();
    files.push(PathBuf::from("data/pre-epoch"));
    files.push(PathBuf::from("data/future"));
    files.sort();

    Fixture { root: root.to_path_buf(), sparse: PathBuf::from("sparse.img"), symlink_mtimes, devices, files }
}

fn set_times(p: &Path, rel: &Path, counter: &mut u64, symlink_ok: &mut bool, files: &mut Vec<PathBuf>) {
    let m = fs::symlink_metadata(p).unwrap();
    if m.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            set_times(&p.join(&n), &rel.join(&n), counter, symlink_ok, files);
        }
    } else if m.is_file() {
        files.push(rel.to_path_buf());
    }
    *counter += 1;
    let i = *counter;
    // Distinct seconds and nanoseconds that are not multiples of 1000, so
    // microsecond truncation shows.
    let t = filetime::FileTime::from_unix_time(
        1_500_000_000 + (i as i64) * 86_413,
        ((i * 987_654_321 + 123) % 1_000_000_000) as u32,
    );
    let atime = filetime::FileTime::from_unix_time(1_400_000_000 + i as i64, 7);
    match filetime::set_symlink_file_times(p, atime, t) {
        Ok(()) => {}
        Err(e) if m.file_type().is_symlink() => {
            eprintln!("note: cannot set symlink times on {}: {e}", p.display());
            *symlink_ok = false;
        }
        Err(e) => panic!("set times {}: {e}", p.display()),
    }
}
