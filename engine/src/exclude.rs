//! What a backup leaves out: path patterns, cache directories
//! (`CACHEDIR.TAG`), directories holding a marker file, files above a size,
//! and other file systems. The directory walker ([`crate::walk`]) applies
//! these while listing, so nothing below an excluded directory is ever
//! opened or stat'ed.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::patterns::PatternSet;

/// The Cache Directory Tagging specification's tag file and the signature
/// it must start with (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// A marker file that excludes the directory holding it; with `content`,
/// only when the file starts with those bytes.
#[derive(Debug, Clone)]
pub struct IfPresent {
    pub name: String,
    pub content: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Excludes {
    pub patterns: PatternSet,
    /// Leave out the contents of directories holding a valid `CACHEDIR.TAG`.
    pub caches: bool,
    pub if_present: Vec<IfPresent>,
    /// Leave out files larger than this many bytes.
    pub larger_than: Option<u64>,
    /// Do not descend into other file systems or bind mounts; their mount
    /// points are kept as empty directories (as restic does), so a restore
    /// recreates them.
    pub one_file_system: bool,
}

impl Excludes {
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && !self.caches
            && self.if_present.is_empty()
            && self.larger_than.is_none()
            && !self.one_file_system
    }

    /// The rules as recorded in a snapshot's `excludes` (SPEC.md section
    /// 9): one string each, in the words of the option that set it, every
    /// pattern of an exclude file expanded, so the snapshot answers "why is
    /// this missing" even after the file changed.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .patterns
            .specs()
            .iter()
            .map(|s| format!("{}={}", if s.case_insensitive { "--iexclude" } else { "--exclude" }, s.pattern))
            .collect();
        if self.caches {
            out.push("--exclude-caches".into());
        }
        for p in &self.if_present {
            match &p.content {
                Some(c) => out.push(format!("--exclude-if-present={}:{c}", p.name)),
                None => out.push(format!("--exclude-if-present={}", p.name)),
            }
        }
        if let Some(n) = self.larger_than {
            out.push(format!("--exclude-larger-than={n}"));
        }
        if self.one_file_system {
            out.push("--one-file-system".into());
        }
        out
    }

    /// Among a directory's sorted entry names, the marker that excludes the
    /// directory's contents (a valid `CACHEDIR.TAG`, an `if_present` file),
    /// if any. The marker itself is kept, so the snapshot shows why the
    /// directory is empty.
    pub fn marker<'a>(&self, dir: &Path, names: impl Iterator<Item = &'a OsStr> + Clone) -> Option<&'a OsStr> {
        if self.caches {
            if let Some(n) = names.clone().find(|n| n.as_bytes() == CACHEDIR_TAG.as_bytes()) {
                if starts_with(&dir.join(n), CACHEDIR_SIGNATURE) {
                    return Some(n);
                }
            }
        }
        for p in &self.if_present {
            if let Some(n) = names.clone().find(|n| n.as_bytes() == p.name.as_bytes()) {
                match &p.content {
                    None => return Some(n),
                    Some(c) if starts_with(&dir.join(n), c.as_bytes()) => return Some(n),
                    Some(_) => {}
                }
            }
        }
        None
    }
}

/// Whether the file at `path` starts with `prefix` (false when unreadable).
fn starts_with(path: &Path, prefix: &[u8]) -> bool {
    let Ok(f) = std::fs::File::open(path) else { return false };
    let mut buf = Vec::with_capacity(prefix.len());
    f.take(prefix.len() as u64).read_to_end(&mut buf).is_ok() && buf == prefix
}

/// The mount points of this process's mount namespace, to tell bind mounts
/// of the same file system (same device number) from plain directories.
pub fn mount_points() -> HashSet<PathBuf> {
    let Ok(text) = std::fs::read("/proc/self/mountinfo") else { return HashSet::new() };
    text.split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|p| PathBuf::from(OsStr::from_bytes(&unescape_octal(p))))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() + 1 && s[i + 1..].len() >= 3 {
            let oct = &s[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_octal(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape_octal(br"/x\\"), br"/x\\");
        assert!(mount_points().contains(Path::new("/")));
    }
}
