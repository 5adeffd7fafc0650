//! arc's engine: everything that reads or writes a repository. It prints
//! nothing; front ends (the `arc` CLI, the FUSE mount) report through the
//! [`progress::Progress`] trait and the typed [`Error`].
//!
//! The repository format is specified byte by byte in `format-spec/SPEC.md`;
//! every structure in it is encoded and decoded only in [`mod@format`].
//!
//! ```no_run
//! use arc_engine::{ops::backup::{backup, BackupOptions}, progress::NoProgress, Repository};
//! let repo = Repository::open_local("/srv/backup/repo".as_ref())?;
//! let opts = BackupOptions { paths: vec!["/var/www".into()], ..Default::default() };
//! let result = backup(&repo, opts, &NoProgress)?;
//! println!("snapshot {}", result.snapshot_id);
//! # Ok::<(), arc_engine::Error>(())
//! ```
// Module docs name the private stages they are made of (backup's sources,
// events, changes, store): links for readers of the source and of
// `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cache;
pub mod change_cache;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod exclude;
pub mod fault;
pub mod format;
mod frame_passes;
pub mod id;
pub mod index;
pub mod index_sorted;
pub mod lock;
pub mod metadata;
pub mod ops;
pub mod packer;
pub mod patterns;
pub mod prefetch;
pub mod progress;
pub mod ratelimit;
pub mod reader;
pub mod repo;
pub mod scan;
pub mod scratch;
pub mod session;
pub mod sorted_runs;
mod span_fetch;
pub mod storage;
pub mod sync;
pub mod synthetic;
#[cfg(test)]
mod test_data;
pub mod vfs;
pub mod walk;
pub mod xattrs;

pub use error::{Error, Result};
pub use id::Id;
pub use repo::{Repository, Snapshot, SnapshotFilter};
