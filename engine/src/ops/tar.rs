//! `dump`: a snapshot path as a POSIX pax tar stream, written to any
//! [`Write`], so that `tar -x` (GNU tar or bsdtar) restores the same layout
//! as `arc restore`.
//!
//! This module owns the mapping from tree [`Node`]s to tar members: member
//! names (the full snapshot path without a leading `/`), entry types, and
//! the pax extended header that carries what ustar cannot (long names,
//! non-ASCII UTF-8 names, nanosecond and pre-1970 times, large ids and
//! sizes, long owner names, xattrs). A member gets a pax header only when it
//! needs one. Hard links become tar links to the first member of their group
//! that the archive holds. File contents are streamed chunk by chunk;
//! nothing holds a whole file.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use ::tar::{Builder, EntryType, Header, UstarHeader};

use super::tree_walk::{self, split_path, Located};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::repo::{Repository, Snapshot};

/// What a dump wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DumpStats {
    /// Archive members (pax extended headers are not counted).
    pub entries: u64,
    /// File content bytes.
    pub bytes: u64,
    /// Entries tar cannot represent (sockets), left out of the archive.
    pub skipped: u64,
}

/// Stands for the caller's writer in I/O errors, which has no path.
const OUTPUT: &str = "<dump output>";

const BLOCK: u64 = 512;
/// Largest values the ustar octal fields hold (11 and 7 octal digits).
const MAX_OCTAL_12: u64 = 0o777_7777_7777;
const MAX_OCTAL_8: u64 = 0o777_7777;
/// ustar name fields; uname/gname must keep room for their NUL.
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;
const OWNER_LEN: usize = 31;

/// Writes the tar stream of `path` (`/`, `/var/www`, `mysql/shop.sql`) in
/// `snapshot` to `out`, ending with the end-of-archive blocks, and flushes.
///
/// On error the stream stops where it failed, without end-of-archive
/// blocks, so a cut-short dump never passes for a complete archive.
pub fn dump_tar(repo: &Repository, snapshot: &Snapshot, path: &str, out: &mut dyn Write) -> Result<DumpStats> {
    let prefix = split_path(path)?.join(&b'/');
    let located = tree_walk::locate(repo, snapshot, path)?;
    let _lock = repo.lock_shared("dump")?;

    let mut dumper = Dumper {
        repo,
        ar: Builder::new(Sink { out, failed: false }),
        with_content: HashSet::new(),
        stand_ins: HashMap::new(),
        stats: DumpStats::default(),
    };
    if let Err(e) = dumper.run(&prefix, &located) {
        // Dropping the builder writes end-of-archive blocks; refuse them.
        dumper.ar.get_mut().failed = true;
        return Err(e);
    }
    let stats = std::mem::take(&mut dumper.stats);
    let sink = dumper.ar.into_inner().map_err(output_error)?;
    sink.out.flush().map_err(output_error)?;
    Ok(stats)
}

fn output_error(e: io::Error) -> Error {
    Error::io(OUTPUT, e)
}

/// The caller's writer. Once a write has failed (or the dump has), every
/// later write fails too.
struct Sink<'a> {
    out: &'a mut dyn Write,
    failed: bool,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("dump aborted"));
        }
        let r = self.out.write(buf);
        if matches!(&r, Err(e) if e.kind() != io::ErrorKind::Interrupted) {
            self.failed = true;
        }
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("dump aborted"));
        }
        self.out.flush()
    }
}

struct Dumper<'a> {
    repo: &'a Repository,
    ar: Builder<Sink<'a>>,
    /// Multiply linked files written with their content: what a tar hard
    /// link may point at (tar links only to members it has extracted).
    with_content: HashSet<Vec<u8>>,
    /// Link group leader (the path backup recorded as the hardlink target)
    /// to the member that carries the group's content here instead: the
    /// leader lies outside the dumped subtree, or comes later in the walk.
    stand_ins: HashMap<Vec<u8>, Vec<u8>>,
    stats: DumpStats,
}

impl Dumper<'_> {
    fn run(&mut self, prefix: &[u8], located: &Located) -> Result<()> {
        let repo = self.repo;
        let tree = match located {
            Located::Root(id) => Some(*id),
            Located::Node(node) => {
                self.entry(prefix, node)?;
                match (node.kind, node.subtree) {
                    (NodeKind::Dir, Some(id)) => Some(id),
                    _ => None,
                }
            }
        };
        match tree {
            Some(id) => tree_walk::walk(repo, &id, prefix, &mut |p, n| self.entry(p, n), &mut |_, _| Ok(())),
            None => Ok(()),
        }
    }

    fn entry(&mut self, path: &[u8], node: &Node) -> Result<()> {
        match node.kind {
            NodeKind::Socket => {
                self.stats.skipped += 1;
                Ok(())
            }
            NodeKind::Dir => {
                let mut name = path.to_vec();
                name.push(b'/');
                self.header(&name, node, EntryType::Directory, None, 0)
            }
            NodeKind::Symlink => self.header(path, node, EntryType::Symlink, Some(&node.target), 0),
            NodeKind::Fifo => self.header(path, node, EntryType::Fifo, None, 0),
            NodeKind::CharDevice => self.header(path, node, EntryType::Char, None, 0),
            NodeKind::BlockDevice => self.header(path, node, EntryType::Block, None, 0),
            NodeKind::File => {
                if node.nlink > 1 {
                    if let Some(first) = self.stand_ins.get(path).cloned() {
                        return self.header(path, node, EntryType::Link, Some(&first), 0);
                    }
                    self.with_content.insert(path.to_vec());
                }
                self.file(path, node)
            }
            NodeKind::Hardlink => {
                if self.with_content.contains(&node.target) {
                    return self.header(path, node, EntryType::Link, Some(&node.target), 0);
                }
                if let Some(first) = self.stand_ins.get(&node.target).cloned() {
                    return self.header(path, node, EntryType::Link, Some(&first), 0);
                }
                self.stand_ins.insert(node.target.clone(), path.to_vec());
                self.file(path, node)
            }
        }
    }

    fn file(&mut self, path: &[u8], node: &Node) -> Result<()> {
        self.header(path, node, EntryType::Regular, None, node.size)?;
        let mismatch = || {
            Error::corrupt(
                "file",
                format!("/{}", String::from_utf8_lossy(path)),
                format!("its chunks do not add up to its recorded size of {} bytes", node.size),
            )
        };
        let mut left = node.size;
        for id in &node.chunks {
            let data = self.repo.read_blob(id)?;
            // Checked before writing: the header promised `size` bytes, and
            // more would shift every later member.
            left = left.checked_sub(data.len() as u64).ok_or_else(mismatch)?;
            self.ar.get_mut().write_all(&data).map_err(output_error)?;
        }
        if left != 0 {
            return Err(mismatch());
        }
        self.stats.bytes += node.size;
        let pad = (BLOCK - node.size % BLOCK) % BLOCK;
        self.ar.get_mut().write_all(&[0; BLOCK as usize][..pad as usize]).map_err(output_error)
    }

    /// Writes the member's header, preceded by a pax extended header when
    /// ustar cannot carry everything.
    fn header(&mut self, name: &[u8], node: &Node, kind: EntryType, link: Option<&[u8]>, size: u64) -> Result<()> {
        let mut h = Header::new_ustar();
        let mut pax = Pax::default();
        h.set_entry_type(kind);
        h.set_mode(node.mode & 0o7777);

        if !set_ustar_name(ustar(&mut h), name) {
            pax.text("path", name);
            let fallback = ascii_fallback(name);
            if !set_ustar_name(ustar(&mut h), &fallback) {
                let tail = &fallback[fallback.len().saturating_sub(NAME_LEN)..];
                put(&mut ustar(&mut h).name, tail);
            }
        }
        if let Some(link) = link {
            if link.len() <= NAME_LEN && ustar_safe(link) {
                put(&mut ustar(&mut h).linkname, link);
            } else {
                pax.text("linkpath", link);
                let fallback = ascii_fallback(link);
                put(&mut ustar(&mut h).linkname, &fallback[..fallback.len().min(NAME_LEN)]);
            }
        }

        // The tar crate falls back to GNU base-256 in the ustar fields for
        // values too large for octal; the pax records are what POSIX readers
        // go by.
        h.set_uid(node.uid.into());
        h.set_gid(node.gid.into());
        if u64::from(node.uid) > MAX_OCTAL_8 {
            pax.record(b"uid", node.uid.to_string().as_bytes());
        }
        if u64::from(node.gid) > MAX_OCTAL_8 {
            pax.record(b"gid", node.gid.to_string().as_bytes());
        }
        h.set_size(size);
        if size > MAX_OCTAL_12 {
            pax.record(b"size", size.to_string().as_bytes());
        }
        let mtime_secs = u64::try_from(node.mtime.sec).unwrap_or(0);
        h.set_mtime(mtime_secs);
        if node.mtime.nsec != 0 || node.mtime.sec < 0 || mtime_secs > MAX_OCTAL_12 {
            pax.record(b"mtime", pax_time(node.mtime).as_bytes());
        }

        let u = ustar(&mut h);
        if node.user.len() <= OWNER_LEN {
            put(&mut u.uname, &node.user);
        }
        if node.group.len() <= OWNER_LEN {
            put(&mut u.gname, &node.group);
        }
        for (key, owner) in [("uname", &node.user), ("gname", &node.group)] {
            if owner.len() > OWNER_LEN || !ustar_safe(owner) {
                pax.text(key, owner);
            }
        }
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let (major, minor) = linux_dev(node.rdev);
            // Past 7 octal digits these go base-256, like the ids.
            let u = ustar(&mut h);
            u.set_device_major(major);
            u.set_device_minor(minor);
        }

        for (key, value) in &node.xattrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            // GNU tar's escaping: a pax keyword ends at the first '='.
            for &b in key {
                match b {
                    b'%' => k.extend_from_slice(b"%25"),
                    b'=' => k.extend_from_slice(b"%3D"),
                    _ => k.push(b),
                }
            }
            pax.record(&k, value);
        }

        if !pax.is_empty() {
            // ctime cannot be restored by tar; it rides along for readers
            // that show it, but is never the reason for a pax header.
            pax.record(b"ctime", pax_time(node.ctime).as_bytes());
            self.pax_header(&pax.finish(), &h)?;
        }
        h.set_cksum();
        self.ar.append(&h, io::empty()).map_err(output_error)?;
        self.stats.entries += 1;
        Ok(())
    }

    fn pax_header(&mut self, records: &[u8], member: &Header) -> Result<()> {
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        put(&mut ustar(&mut h).name, b"././@PaxHeader");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(records.len() as u64);
        h.set_mtime(member.mtime().unwrap_or(0));
        h.set_cksum();
        self.ar.append(&h, records).map_err(output_error)
    }
}

fn ustar(h: &mut Header) -> &mut UstarHeader {
    // Every header here comes from `Header::new_ustar`.
    h.as_ustar_mut().expect("header created as ustar")
}

/// Copies `value` into a NUL-padded header field; the caller has checked
/// that it fits.
fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// Whether a ustar field carries `value` as every reader will take it.
/// ustar fields are raw bytes. Non-ASCII UTF-8 goes to pax instead, where
/// it is declared UTF-8 for readers that convert names to their locale. A
/// name that is not UTF-8 stays raw in ustar when it fits: in pax it needs
/// `hdrcharset=BINARY`, which GNU tar (1.34) warns about for every member.
fn ustar_safe(value: &[u8]) -> bool {
    value.is_ascii() || std::str::from_utf8(value).is_err()
}

/// Stores `name` in ustar's name and prefix fields; false when it does not
/// fit or belongs in pax (see [`ustar_safe`]).
fn set_ustar_name(h: &mut UstarHeader, name: &[u8]) -> bool {
    if !ustar_safe(name) {
        return false;
    }
    if name.len() <= NAME_LEN {
        put(&mut h.name, name);
        put(&mut h.prefix, b"");
        return true;
    }
    // Readers join prefix and name with a '/', so split at one, keeping the
    // prefix within its field and the name non-empty.
    let split = name
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i <= PREFIX_LEN)
        .map(|(i, _)| i)
        .find(|&i| name.len() - i - 1 <= NAME_LEN && i + 1 < name.len());
    match split {
        Some(i) => {
            put(&mut h.prefix, &name[..i]);
            put(&mut h.name, &name[i + 1..]);
            true
        }
        None => false,
    }
}

/// What a reader that ignores pax headers sees instead of a name that needs
/// one: non-ASCII bytes become '_'.
fn ascii_fallback(name: &[u8]) -> Vec<u8> {
    name.iter().map(|&b| if b.is_ascii() { b } else { b'_' }).collect()
}

/// Splits a Linux `dev_t`. Snapshots record rdev as Linux encodes it, so it
/// is decoded the same way whatever platform dumps.
fn linux_dev(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    // Both masks keep 32 bits.
    (major as u32, minor as u32)
}

/// A pax time: seconds since the epoch with an optional fraction. The
/// value is `sec + nsec / 10^9`, so a negative time with nanoseconds is
/// written as `-(|sec| - 1).(10^9 - nsec)`.
fn pax_time(t: Timestamp) -> String {
    if t.nsec == 0 {
        t.sec.to_string()
    } else if t.sec >= 0 {
        format!("{}.{:09}", t.sec, t.nsec)
    } else {
        format!("-{}.{:09}", -(t.sec + 1), 1_000_000_000 - t.nsec)
    }
}

/// The records of one pax extended header.
#[derive(Default)]
struct Pax {
    records: Vec<u8>,
    /// A text value is not UTF-8.
    binary: bool,
}

impl Pax {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A record whose value POSIX says is UTF-8 (names); raw bytes are
    /// written as they are.
    fn text(&mut self, key: &str, value: &[u8]) {
        if std::str::from_utf8(value).is_err() {
            self.binary = true;
        }
        self.record(key.as_bytes(), value);
    }

    /// Appends `"<len> <key>=<value>\n"`, where `len` counts the whole
    /// record, its own digits included. Values are length-delimited, so any
    /// bytes may appear in them.
    fn record(&mut self, key: &[u8], value: &[u8]) {
        self.records.extend_from_slice(&pax_record(key, value));
    }

    fn finish(self) -> Vec<u8> {
        if !self.binary {
            return self.records;
        }
        // POSIX: with hdrcharset=BINARY, names are raw bytes, not UTF-8 to
        // be converted to the reader's locale. It goes first so that it is
        // in force for every record after it.
        let mut out = pax_record(b"hdrcharset", b"BINARY");
        out.extend_from_slice(&self.records);
        out
    }
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base;
    loop {
        let total = base + digits(len);
        if total == len {
            break;
        }
        len = total;
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;

    use super::*;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::progress::NoProgress;
    use crate::repo::{InitOptions, SnapshotFilter};

    const XATTR_VALUE: &[u8] = b"v\0al\xff\n=";

    fn long_name() -> Vec<u8> {
        let mut n = b"long-".to_vec();
        n.extend(std::iter::repeat_n(b'n', 130));
        n
    }

    fn set_mtime(path: &Path, sec: i64, nsec: i64) {
        let t = TimeSpec::new(sec, nsec);
        utimensat(None, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    /// Builds the source tree; returns whether a char device could be made.
    fn make_source(src: &Path) -> bool {
        fs::create_dir_all(src.join("dir")).unwrap();
        let deep = src.join("deep/".repeat(3) + &"d".repeat(40) + "/" + &"e".repeat(40));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join(OsStr::from_bytes(&long_name())), b"deep content\n").unwrap();
        // Too long for ustar and not UTF-8: pax path with hdrcharset=BINARY.
        let mut raw = long_name();
        raw.push(0xff);
        fs::write(deep.join(OsStr::from_bytes(&raw)), b"raw long name\n").unwrap();
        fs::write(src.join("naïve-ü"), b"utf-8 name\n").unwrap();
        let far = format!("{}/target", "../".repeat(40));
        std::os::unix::fs::symlink(far, src.join("long-link")).unwrap();
        std::os::unix::fs::symlink(OsStr::from_bytes(b"caf\xe9"), src.join("raw-link")).unwrap();

        let text: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        fs::write(src.join("dir/file.bin"), &text).unwrap();
        fs::set_permissions(src.join("dir/file.bin"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(src.join("empty"), b"").unwrap();
        fs::write(src.join(OsStr::from_bytes(b"caf\xe9")), b"latin-1 name\n").unwrap();
        fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("dir/file.bin", src.join("link")).unwrap();
        // "a_hl" sorts first, so backup makes it the link group's leader
        // and dir/hl2, dir/hl3 hardlinks to it.
        fs::write(src.join("a_hl"), b"linked content\n").unwrap();
        fs::hard_link(src.join("a_hl"), src.join("dir/hl2")).unwrap();
        fs::hard_link(src.join("a_hl"), src.join("dir/hl3")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        fs::write(src.join("xattr.txt"), b"has an xattr\n").unwrap();
        xattr::set(src.join("xattr.txt"), "user.test", XATTR_VALUE).unwrap();
        xattr::set(src.join("xattr.txt"), "user.a=b%c", b"escaped name").unwrap();
        let dev = nix::sys::stat::mknod(
            &src.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 3),
        )
        .is_ok();
        drop(std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap());
        // Ids past ustar's 7 octal digits need pax uid/gid.
        fs::write(src.join("big-ids"), b"").unwrap();
        let _ = std::os::unix::fs::lchown(src.join("big-ids"), Some(3_000_000), Some(3_000_001));
        fs::write(src.join("pre-epoch"), b"old\n").unwrap();

        set_mtime(&src.join("dir/file.bin"), 1_700_000_000, 123_456_789);
        set_mtime(&src.join("empty"), 1_600_000_000, 0);
        set_mtime(&src.join("link"), 1_650_000_000, 5);
        // Whole seconds: libarchive 3.6 misreads negative fractional pax
        // times ("-1.5" as -0.5); GNU tar reads them right.
        set_mtime(&src.join("pre-epoch"), -2, 0);
        set_mtime(&src.join("dir"), 1_500_000_000, 999_999_999);
        dev
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        src: PathBuf,
        repo: Repository,
        snapshot: Snapshot,
        has_dev: bool,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let root = fs::canonicalize(tmp.path()).unwrap();
            let src = root.join("src");
            let has_dev = make_source(&src);
            let repo = Repository::init_local(&root.join("repo"), &InitOptions::default()).unwrap();
            let opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
            backup(&repo, opts, &NoProgress).unwrap();
            let snapshot = repo.find_snapshot("latest", &SnapshotFilter::default()).unwrap();
            Fixture { _tmp: tmp, root, src, repo, snapshot, has_dev }
        }

        /// Snapshot path of a path under the source.
        fn snap(&self, rel: &str) -> String {
            let p = self.src.join(rel);
            p.to_str().unwrap().trim_end_matches('/').to_string()
        }

        /// Dumps `path` to `<name>.tar` and extracts it with GNU tar into
        /// `<name>/`, and with bsdtar into `<name>.bsdtar/` where bsdtar is
        /// installed; returns the extraction directories.
        fn dump_and_extract(&self, path: &str, name: &str) -> (DumpStats, PathBuf, Vec<PathBuf>) {
            let archive = self.root.join(format!("{name}.tar"));
            let mut file = fs::File::create(&archive).unwrap();
            let stats = dump_tar(&self.repo, &self.snapshot, path, &mut file).unwrap();
            drop(file);
            let mut outs = Vec::new();

            let out = self.root.join(name);
            fs::create_dir(&out).unwrap();
            let o = Command::new("tar")
                .args(["--xattrs", "--xattrs-include=*", "-xpf"])
                .arg(&archive)
                .arg("-C")
                .arg(&out)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "tar -x failed on {}: {stderr}", archive.display());
            // GNU tar does not know hdrcharset (POSIX; bsdtar needs it) and
            // frowns at pre-1970 times; nothing else may be reported.
            for line in stderr.lines() {
                assert!(
                    line.ends_with("Ignoring unknown extended header keyword 'hdrcharset'")
                        || line.contains("/pre-epoch: implausibly old time stamp"),
                    "{stderr}"
                );
            }
            outs.push(out);

            if Command::new("bsdtar").arg("--version").output().is_ok_and(|o| o.status.success()) {
                let out = self.root.join(format!("{name}.bsdtar"));
                fs::create_dir(&out).unwrap();
                let o = Command::new("bsdtar").arg("-xpf").arg(&archive).arg("-C").arg(&out).output().unwrap();
                assert!(o.status.success(), "bsdtar: {}", String::from_utf8_lossy(&o.stderr));
                outs.push(out);
            }
            (stats, archive, outs)
        }

        /// Where a source path lands under an extraction directory.
        fn extracted(&self, out: &Path, rel: &str) -> PathBuf {
            out.join(self.src.strip_prefix("/").unwrap()).join(rel)
        }
    }

    fn list(archive: &Path) -> String {
        let o = Command::new("tar").arg("-tvf").arg(archive).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn mtime(m: &fs::Metadata) -> (i64, i64) {
        (m.mtime(), m.mtime_nsec())
    }

    /// Compares every entry under `a` with its counterpart under `b`.
    fn assert_same_tree(a: &Path, b: &Path, skip: &[&str]) {
        let mut seen = 0;
        for e in walkdir::WalkDir::new(a).min_depth(1) {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(a).unwrap();
            if skip.iter().any(|s| rel == Path::new(s)) {
                assert!(fs::symlink_metadata(b.join(rel)).is_err(), "{rel:?} should be absent");
                continue;
            }
            let other = b.join(rel);
            let ma = fs::symlink_metadata(e.path()).unwrap();
            let mb = fs::symlink_metadata(&other).unwrap_or_else(|_| panic!("{rel:?} missing"));
            assert_eq!(ma.mode(), mb.mode(), "mode of {rel:?}");
            assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "owner of {rel:?}");
            assert_eq!(ma.rdev(), mb.rdev(), "rdev of {rel:?}");
            assert_eq!(mtime(&ma), mtime(&mb), "mtime of {rel:?}");
            if ma.is_file() {
                assert_eq!(fs::read(e.path()).unwrap(), fs::read(&other).unwrap(), "content of {rel:?}");
            }
            if ma.file_type().is_symlink() {
                assert_eq!(fs::read_link(e.path()).unwrap(), fs::read_link(&other).unwrap());
            }
            seen += 1;
        }
        let extra = walkdir::WalkDir::new(b).min_depth(1).into_iter().count();
        assert_eq!(seen, extra, "extracted tree has other entries than the source");
    }

    #[test]
    fn whole_snapshot_round_trips_through_gnu_tar() {
        let f = Fixture::new();
        let (stats, archive, outs) = f.dump_and_extract("/", "all");
        for out in &outs {
            let got = f.extracted(out, "");
            assert_same_tree(&f.src, &got, &["socket"]);
            let a = fs::metadata(got.join("a_hl")).unwrap();
            for member in ["dir/hl2", "dir/hl3"] {
                let m = fs::metadata(got.join(member)).unwrap();
                assert_eq!((m.dev(), m.ino()), (a.dev(), a.ino()), "{member} is a hardlink of a_hl");
            }
            let value = xattr::get(got.join("xattr.txt"), "user.test").unwrap();
            assert_eq!(value.as_deref(), Some(XATTR_VALUE), "{out:?}");
        }
        // GNU tar's escaping of '=' and '%' in xattr names (bsdtar 3.6 does
        // not undo it).
        let value = xattr::get(f.extracted(&outs[0], "xattr.txt"), "user.a=b%c").unwrap();
        assert_eq!(value.as_deref(), Some(&b"escaped name"[..]));

        assert_eq!(stats.skipped, 1, "the socket");
        let mut inodes = HashSet::new();
        let content: u64 = walkdir::WalkDir::new(&f.src)
            .into_iter()
            .map(|e| fs::symlink_metadata(e.unwrap().path()).unwrap())
            .filter(|m| m.is_file() && inodes.insert(m.ino()))
            .map(|m| m.len())
            .sum();
        assert_eq!(stats.bytes, content);

        let listing = list(&archive);
        assert!(listing.lines().any(|l| l.starts_with('p') && l.ends_with("/fifo")), "{listing}");
        assert!(listing.lines().any(|l| l.starts_with('h') && l.contains("src/dir/hl2 link to ")));
        if f.has_dev {
            assert!(listing.lines().any(|l| l.starts_with('c') && l.contains(" 1,3 ")), "{listing}");
        }
        if fs::symlink_metadata(f.src.join("big-ids")).unwrap().uid() == 3_000_000 {
            assert!(listing.contains(" 3000000/3000001 "), "{listing}");
        }
        let bytes = fs::read(&archive).unwrap();
        let count = |needle: &[u8]| bytes.windows(needle.len()).filter(|w| *w == needle).count();
        assert_eq!(count(b" hdrcharset=BINARY\n"), 1, "only the long raw name needs it");
        assert_eq!(count(b" linkpath="), 1, "only the long symlink needs it");
        assert_eq!(count(b" uid=3000000\n"), count(b" gid=3000001\n"));
        assert_eq!(count(b" mtime=1700000000.123456789\n"), 1);

        // Every member of the dump is named by its snapshot path.
        let tf = Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
        let names: Vec<&[u8]> = tf.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(names.len() as u64, stats.entries);
        let snap_root = f.snap("");
        let dir_member = format!("{}/dir/", &snap_root[1..]);
        assert!(names.contains(&dir_member.as_bytes()), "directories end in '/'");
        let pos = |n: &str| names.iter().position(|m| *m == n.as_bytes()).unwrap();
        assert!(pos(&dir_member) < pos(&format!("{}/dir/file.bin", &snap_root[1..])));
    }

    #[test]
    fn subdirectory_and_single_file() {
        let f = Fixture::new();

        let (stats, archive, outs) = f.dump_and_extract(&f.snap("dir"), "sub");
        assert_eq!(stats.entries, 4, "dir/, file.bin, hl2, hl3");
        assert_eq!(list(&archive).lines().count(), 4);
        for out in &outs {
            assert_same_tree(&f.src.join("dir"), &f.extracted(out, "dir"), &[]);
            // The link group's leader is outside the subtree: hl2 carries
            // the content and hl3 links to it.
            let hl2 = fs::metadata(f.extracted(out, "dir/hl2")).unwrap();
            let hl3 = fs::metadata(f.extracted(out, "dir/hl3")).unwrap();
            assert_eq!(hl2.ino(), hl3.ino());
            assert_eq!(fs::read(f.extracted(out, "dir/hl2")).unwrap(), b"linked content\n");
        }

        let (stats, archive, outs) = f.dump_and_extract(&f.snap("dir/file.bin"), "one");
        assert_eq!(stats, DumpStats { entries: 1, bytes: 1_200_000, skipped: 0 });
        assert_eq!(list(&archive).lines().count(), 1);
        for out in &outs {
            let got = f.extracted(out, "dir/file.bin");
            assert_eq!(fs::read(&got).unwrap(), fs::read(f.src.join("dir/file.bin")).unwrap());
            let m = fs::metadata(&got).unwrap();
            assert_eq!(mtime(&m), (1_700_000_000, 123_456_789));
            assert_eq!(m.mode() & 0o7777, 0o640);
        }

        // A lone hardlink becomes a file with the group's content.
        let (stats, archive, outs) = f.dump_and_extract(&f.snap("dir/hl3"), "hl");
        assert_eq!(stats.entries, 1);
        assert!(list(&archive).starts_with('-'));
        for out in &outs {
            assert_eq!(fs::read(f.extracted(out, "dir/hl3")).unwrap(), b"linked content\n");
        }

        let (_, _, outs) = f.dump_and_extract(&f.snap("deep"), "deep");
        for out in &outs {
            assert_same_tree(&f.src.join("deep"), &f.extracted(out, "deep"), &[]);
        }
    }

    #[test]
    fn unknown_path_is_an_error_and_writes_nothing() {
        let f = Fixture::new();
        let mut buf = Vec::new();
        let err = dump_tar(&f.repo, &f.snapshot, &f.snap("no/such"), &mut buf).unwrap_err();
        assert!(matches!(err, Error::PathNotInSnapshot { .. }), "{err:?}");
        assert!(buf.is_empty());
        let err = dump_tar(&f.repo, &f.snapshot, &f.snap("dir/file.bin/below"), &mut buf).unwrap_err();
        assert!(matches!(err, Error::PathNotInSnapshot { .. }), "{err:?}");
    }

    #[test]
    fn size_mismatch_is_corrupt_and_leaves_no_end_blocks() {
        let f = Fixture::new();
        let Located::Node(mut node) = tree_walk::locate(&f.repo, &f.snapshot, &f.snap("a_hl")).unwrap() else {
            panic!("a_hl is a node");
        };
        for size in [node.size - 1, node.size + 1] {
            node.size = size;
            let mut buf = Vec::new();
            let mut d = Dumper {
                repo: &f.repo,
                ar: Builder::new(Sink { out: &mut buf, failed: false }),
                with_content: HashSet::new(),
                stand_ins: HashMap::new(),
                stats: DumpStats::default(),
            };
            let err = d.entry(b"a_hl", &node).unwrap_err();
            assert!(matches!(err, Error::Corrupt { what: "file", .. }), "{err:?}");
            d.ar.get_mut().failed = true;
            drop(d);
            assert!(buf.len() < 2048, "no end-of-archive blocks after a failure");
        }
    }

    #[test]
    fn write_errors_are_reported() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let f = Fixture::new();
        let err = dump_tar(&f.repo, &f.snapshot, "/", &mut Full).unwrap_err();
        assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    }

    #[test]
    fn pax_records_count_their_own_length() {
        assert_eq!(pax_record(b"path", b"ab"), b"11 path=ab\n");
        // 95 + 3 + 2 digits = 100, which needs 3 digits: 101.
        let v = vec![b'x'; 91];
        let r = pax_record(b"path", &v);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 path="));
        for n in 0..1100 {
            let r = pax_record(b"k", &vec![b'v'; n]);
            let len: usize =
                std::str::from_utf8(&r[..r.iter().position(|&b| b == b' ').unwrap()]).unwrap().parse().unwrap();
            assert_eq!(len, r.len());
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(Timestamp { sec: 1_700_000_000, nsec: 123_456_789 }), "1700000000.123456789");
        assert_eq!(pax_time(Timestamp { sec: 5, nsec: 0 }), "5");
        assert_eq!(pax_time(Timestamp { sec: 0, nsec: 1 }), "0.000000001");
        assert_eq!(pax_time(Timestamp { sec: -2, nsec: 500_000_000 }), "-1.500000000");
        assert_eq!(pax_time(Timestamp { sec: -1, nsec: 999_999_999 }), "-0.000000001");
        assert_eq!(pax_time(Timestamp { sec: -7, nsec: 0 }), "-7");
    }

    #[test]
    fn ustar_names_split_at_a_slash() {
        let mut h = Header::new_ustar();
        let long = format!("{}/{}", "p".repeat(150), "n".repeat(100));
        assert!(set_ustar_name(ustar(&mut h), long.as_bytes()));
        assert_eq!(h.path_bytes().as_ref(), long.as_bytes());
        assert!(!set_ustar_name(ustar(&mut h), "n".repeat(101).as_bytes()));
        assert!(!set_ustar_name(ustar(&mut h), format!("{}/x", "p".repeat(156)).as_bytes()));
        assert!(set_ustar_name(ustar(&mut h), b"caf\xe9"), "raw bytes: not UTF-8");
        assert!(!set_ustar_name(ustar(&mut h), "café".as_bytes()), "UTF-8 goes to pax");
        assert!(set_ustar_name(ustar(&mut h), "n".repeat(100).as_bytes()));
    }

    #[test]
    fn device_numbers() {
        assert_eq!(linux_dev(nix::sys::stat::makedev(1, 3)), (1, 3));
        assert_eq!(linux_dev(nix::sys::stat::makedev(259, 0x12345)), (259, 0x12345));
        assert_eq!(linux_dev(nix::sys::stat::makedev(0xabcde, 0xfedcba)), (0xabcde, 0xfedcba));
    }
}
