//! A file's extended attributes (ACLs included: they are `system.*`
//! attributes), never following a symlink: relative to the descriptor of
//! the directory the walk lists, where the kernel has `listxattrat` and
//! `getxattrat` (Linux 6.13), so it resolves one name rather than the
//! whole path again for every file; by path (`llistxattr`, `lgetxattr`)
//! elsewhere, and on older kernels, which answer `ENOSYS` once.
//!
//! Written here rather than taken from the `xattr` crate, which has the
//! path and descriptor calls but not the `*at` ones (nor has `libc` their
//! numbers for most targets).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::path::Arg;

/// Attributes sorted by name, each with its value.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads the attributes of `name` in the directory open as `dir`, or of
/// `path` when there is no directory (a source itself) or the kernel lacks
/// the `*at` calls. `path` names the same file in any case. A read that
/// fails leaves a warning and the attributes that could be read; a file
/// system without attributes is no failure.
pub fn read(dir: Option<BorrowedFd<'_>>, name: &OsStr, path: &Path, warnings: &mut Vec<String>) -> Xattrs {
    if let Some(dir) = dir.filter(|_| at_calls()) {
        match list_at(dir, name) {
            Ok(names) => return values(&names, warnings, |n| get_at(dir, name, n)),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EPERM) => {
                // An older kernel, or a sandbox that refuses calls it does
                // not know (seccomp answers EPERM or ENOSYS): by path from
                // now on.
                NO_AT_CALLS.store(true, Ordering::Relaxed);
            }
            Err(e) => return failed_list(e, warnings),
        }
    }
    match xattr::list(path) {
        Ok(names) => {
            let names: Vec<Vec<u8>> = names.map(std::os::unix::ffi::OsStringExt::into_vec).collect();
            values(&names, warnings, |n| xattr::get(path, OsStr::from_bytes(n)))
        }
        Err(e) => failed_list(e, warnings),
    }
}

/// Set once `listxattrat` turned out not to exist here.
static NO_AT_CALLS: AtomicBool = AtomicBool::new(false);

fn at_calls() -> bool {
    SYSCALLS.is_some() && !NO_AT_CALLS.load(Ordering::Relaxed)
}

fn failed_list(e: std::io::Error, warnings: &mut Vec<String>) -> Xattrs {
    if !is_unsupported(&e) {
        warnings.push(format!("cannot list xattrs: {e}"));
    }
    Vec::new()
}

fn values(
    names: &[Vec<u8>],
    warnings: &mut Vec<String>,
    mut get: impl FnMut(&[u8]) -> std::io::Result<Option<Vec<u8>>>,
) -> Xattrs {
    let mut out = Vec::new();
    for name in names {
        match get(name) {
            Ok(Some(v)) => out.push((name.clone(), v)),
            // Removed since it was listed.
            Ok(None) => {}
            Err(e) => warnings.push(format!("cannot read xattr {}: {e}", String::from_utf8_lossy(name))),
        }
    }
    out.sort();
    out
}

fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// The numbers of `listxattrat` and `getxattrat`: the same on every
/// architecture that numbers new calls from the common table (all since
/// 424); elsewhere the path calls are used.
const SYSCALLS: Option<(libc::c_long, libc::c_long)> = if cfg!(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "powerpc64",
        target_arch = "s390x"
    )
)) {
    Some((465, 464))
} else {
    None
};

/// The names `listxattrat` gives for `name` in `dir`, not following a
/// symlink.
fn list_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Vec<Vec<u8>>> {
    let Some((list_nr, _)) = SYSCALLS else {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSYS));
    };
    let call = |buf: &mut [u8]| -> std::io::Result<usize> {
        name.into_with_c_str(|c| {
            // SAFETY: listxattrat(dfd, path, at_flags, list, size) writes at
            // most `size` bytes into `list`; `c` is NUL-terminated and `buf`
            // lives across the call.
            let r = unsafe {
                libc::syscall(
                    list_nr,
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            returned(r)
        })
        .map_err(std::io::Error::from)
    };
    let list = sized(call)?;
    Ok(list.split(|&b| b == 0).filter(|n| !n.is_empty()).map(<[u8]>::to_vec).collect())
}

/// What a raw `syscall` returned: a count, or the error in `errno`.
fn returned(r: libc::c_long) -> rustix::io::Result<usize> {
    if r < 0 {
        Err(rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)))
    } else {
        Ok(r as usize)
    }
}

/// What `call` writes into a buffer: most files have no attributes or a
/// few short ones, so a small buffer first, one call; else [`grow`].
fn sized(mut call: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> std::io::Result<Vec<u8>> {
    let mut small = [0u8; 256];
    match call(&mut small) {
        Ok(n) => Ok(small[..n].to_vec()),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => grow(call),
        Err(e) => Err(e),
    }
}

/// Calls `call` with a buffer of the size an empty call reports, until
/// the result fits (it may grow in between).
fn grow(mut call: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> std::io::Result<Vec<u8>> {
    loop {
        let mut buf = vec![0u8; call(&mut [])?];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {}
            Err(e) => return Err(e),
        }
    }
}

/// `struct xattr_args` of `getxattrat` (uapi linux/xattr.h).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// The value of attribute `attr` of `name` in `dir`; `None` when it is
/// gone (`ENODATA`), as `xattr::get` has it.
fn get_at(dir: BorrowedFd<'_>, name: &OsStr, attr: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let Some((_, get_nr)) = SYSCALLS else {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSYS));
    };
    let attr = std::ffi::CString::new(attr).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let call = |buf: &mut [u8]| -> std::io::Result<usize> {
        name.into_with_c_str(|c| {
            let mut args = XattrArgs { value: buf.as_mut_ptr() as u64, size: buf.len() as u32, flags: 0 };
            // SAFETY: getxattrat(dfd, path, at_flags, name, args, args_size)
            // writes at most `args.size` bytes at `args.value`, which points
            // into `buf`; the strings are NUL-terminated; `args` and `buf`
            // live across the call.
            let r = unsafe {
                libc::syscall(
                    get_nr,
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                    attr.as_ptr(),
                    &mut args as *mut XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            };
            returned(r)
        })
        .map_err(std::io::Error::from)
    };
    match sized(call) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn set(path: &Path, name: &str, value: &[u8]) -> bool {
        // Some file systems (an old tmpfs) take no user attributes: then
        // there is nothing to compare.
        xattr::set(path, name, value).is_ok()
    }

    /// Relative to the directory and by path, the same attributes come
    /// back, sorted, including one longer than the first buffer and a
    /// list longer than it; a file without any has none, with no warning.
    #[test]
    fn attributes_read_relative_to_the_directory_equal_those_read_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"y").unwrap();
        let long = vec![0xa5u8; 3000];
        if !set(&f, "user.b", b"two") {
            eprintln!("no user xattrs on this file system");
            return;
        }
        set(&f, "user.a", &long);
        for i in 0..20 {
            set(&f, &format!("user.some-longer-attribute-name-{i:02}"), b"v");
        }
        let d = std::fs::File::open(dir.path()).unwrap();
        let mut w = Vec::new();
        let at = read(Some(d.as_fd()), OsStr::new("f"), &f, &mut w);
        let by_path = read(None, OsStr::new("f"), &f, &mut w);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(at, by_path);
        assert_eq!(at.len(), 22);
        assert_eq!(at[0], (b"user.a".to_vec(), long));
        assert_eq!(at[1], (b"user.b".to_vec(), b"two".to_vec()));
        assert!(read(Some(d.as_fd()), OsStr::new("plain"), &plain, &mut w).is_empty());
        assert!(w.is_empty(), "{w:?}");
    }

    /// A symlink's attributes are its own, never its target's.
    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        if !set(&f, "user.t", b"target's") {
            return;
        }
        let l = dir.path().join("l");
        std::os::unix::fs::symlink("f", &l).unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let mut w = Vec::new();
        assert!(read(Some(d.as_fd()), OsStr::new("l"), &l, &mut w).is_empty());
        assert!(read(None, OsStr::new("l"), &l, &mut w).is_empty());
        assert!(w.is_empty(), "{w:?}");
    }

    /// A file gone between the listing and the read: a warning naming the
    /// cause, relative or by path.
    #[test]
    fn a_vanished_file_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let mut w = Vec::new();
        assert!(read(Some(d.as_fd()), OsStr::new("gone"), &dir.path().join("gone"), &mut w).is_empty());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("No such file"), "{w:?}");
    }
}
