//! `dump`: a snapshot path as a POSIX pax tar stream, written to any
//! [`Write`], so that `tar -x` (GNU tar or bsdtar) restores the same layout
//! as `arc restore`.
//!
//! This module owns the mapping from tree [`Node`]s to tar members: member
//! names (the full snapshot path without a leading `/`), entry types, and
//! the pax extended header that carries what ustar cannot (long or non-ASCII
//! names, nanosecond times, large ids and sizes, long owner names, xattrs).
//! A member gets a pax header only when it needs one. File contents are
//! streamed chunk by chunk; nothing holds a whole file.

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
        self.ar
            .get_mut()
            .write_all(&[0; BLOCK as usize][..pad as usize])
            .map_err(output_error)
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
            if link.len() <= NAME_LEN && link.is_ascii() {
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
            if owner.len() > OWNER_LEN || !owner.is_ascii() {
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

/// Stores `name` in ustar's name and prefix fields; false when it does not
/// fit or is not plain ASCII (whose meaning ustar leaves to the locale).
fn set_ustar_name(h: &mut UstarHeader, name: &[u8]) -> bool {
    if !name.is_ascii() {
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
