//! The one place where engine and VFS errors become errno values.

use arc_engine::vfs::VfsError;
use arc_engine::Error;
use fuser::Errno;

/// The errno a failed VFS call returns to the process that made the
/// system call. Damage of any kind (a chunk that fails its hash, a missing
/// pack, an index that does not know a blob) is EIO: the reader gets an
/// error, never wrong bytes.
pub fn to_errno(e: &VfsError) -> Errno {
    match e {
        VfsError::NotADirectory => Errno::ENOTDIR,
        VfsError::NotAFile => Errno::EISDIR,
        VfsError::NotASymlink => Errno::EINVAL,
        VfsError::Gone => Errno::ENOENT,
        VfsError::Abandoned => Errno::EIO,
        VfsError::Engine(e) => match &**e {
            Error::Io { source, .. } => source.raw_os_error().map_or(Errno::EIO, Errno::from_i32),
            Error::NoSpace { .. } => Errno::ENOSPC,
            Error::SnapshotNotFound(_) | Error::PathNotInSnapshot { .. } | Error::PathInNoSnapshot { .. } => {
                Errno::ENOENT
            }
            Error::WrongEntryKind { .. } => Errno::EINVAL,
            Error::Interrupted => Errno::EINTR,
            _ => Errno::EIO,
        },
        // VfsError is non-exhaustive: anything new is an I/O failure until
        // it is given a better errno here.
        #[allow(unreachable_patterns)]
        _ => Errno::EIO,
    }
}

/// Whether an error means the repository's data is damaged or unreadable,
/// which the user must hear about (as opposed to ordinary ENOENT-style
/// answers).
pub fn is_damage(e: &VfsError) -> bool {
    to_errno(e) == Errno::EIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_eio() {
        let corrupt = VfsError::from(Error::corrupt("pack", "ab", "blob does not match its hash"));
        assert_eq!(to_errno(&corrupt), Errno::EIO);
        assert!(is_damage(&corrupt));
        assert_eq!(to_errno(&VfsError::NotADirectory), Errno::ENOTDIR);
        let io = VfsError::from(Error::io("/x", std::io::Error::from_raw_os_error(libc::EACCES)));
        assert_eq!(to_errno(&io), Errno::EACCES);
    }
}
