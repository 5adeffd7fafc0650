//! Which decompressed frames the blob reader keeps (engine/src/reader.rs),
//! counted as pack reads on a `CountingStorage`: a frame of grouped small
//! blobs is kept, whatever its size, because its neighbours are read next;
//! a big chunk's own frame is not, because it is read once.

use std::path::Path;
use std::sync::Arc;

use arc_engine::format::config::ChunkerParams;
use arc_engine::ops::backup::{backup, BackupOptions};
use arc_engine::progress::NoProgress;
use arc_engine::repo::InitOptions;
use arc_engine::storage::{CountingStorage, FileKind, MemoryStorage, MemoryStorageOptions, Op, Storage};
use arc_engine::{Id, Repository};

/// A repository with `opts` on counting in-memory storage holding one
/// backup of `files` (name, content); the storage, and the blob id of each
/// file (each is one chunk: smaller than the file chunker's minimum).
fn backed_up(tmp: &Path, opts: &InitOptions, files: &[(String, Vec<u8>)]) -> (Arc<CountingStorage>, Vec<Id>) {
    let src = tmp.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (name, data) in files {
        std::fs::write(src.join(name), data).unwrap();
    }
    let mem: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
    let storage = Arc::new(CountingStorage::new(mem));
    let repo = Repository::init_with_index(storage.clone(), opts, Some(tmp.join("index.redb"))).unwrap();
    backup(&repo, BackupOptions { paths: vec![src], ..Default::default() }, &NoProgress).unwrap();
    let ids = files.iter().map(|(_, data)| repo.blob_id(data)).collect();
    (storage, ids)
}

/// The repository opened afresh (an empty frame cache), with its counts
/// reset.
fn reopen(storage: &Arc<CountingStorage>, tmp: &Path) -> Repository {
    let repo = Repository::open(storage.clone(), Some(tmp.join("index-2.redb"))).unwrap();
    storage.take();
    repo
}

/// Text that compresses like mail: repeated headers, varying bodies.
fn message(i: usize, len: usize) -> Vec<u8> {
    let mut m = format!("From: user{i}@example.org\nSubject: message {i}\n\n").into_bytes();
    while m.len() < len {
        m.extend_from_slice(format!("line {} of message {i}, {}\n", m.len(), i * 7919 % 1000).as_bytes());
    }
    m.truncate(len);
    m
}

/// 1 MiB frames: a group of small files closes past 1 MiB, so a rule on
/// size ("keep frames up to 1 MiB") decompressed the whole group again for
/// every file of it (one pack read per file); keyed on the frame's shape,
/// the files of a group cost one read per frame.
#[test]
fn small_files_of_a_frame_larger_than_a_mebibyte_read_it_once() {
    let opts = InitOptions { frame_size: 1024 * 1024, ..Default::default() };
    let files: Vec<(String, Vec<u8>)> = (0..300).map(|i| (format!("m{i:03}"), message(i, 4100))).collect();
    let tmp = tempfile::tempdir().unwrap();
    let (storage, ids) = backed_up(tmp.path(), &opts, &files);
    let repo = reopen(&storage, tmp.path());
    for (id, (name, data)) in ids.iter().zip(&files) {
        assert_eq!(&repo.read_blob(id).unwrap()[..], &data[..], "{name}");
    }
    let reads = storage.take().get(Op::GetRange, FileKind::Pack);
    // 300 * 4100 bytes: one frame of 256 files (just over 1 MiB), one of the rest.
    assert!(reads <= 2, "{reads} pack reads for 300 files in two frames");
}

/// A blob of `frame_size` or more has a frame of its own; reading it
/// twice reads it twice (it is not kept to evict grouped frames), however
/// small that frame is next to the old 1 MiB limit.
#[test]
fn a_big_chunks_own_frame_is_not_kept() {
    let opts = InitOptions {
        frame_size: 256 * 1024,
        // 600 kB files are one chunk each.
        file_chunker: ChunkerParams::new(1024 * 1024, 2 * 1024 * 1024, 8 * 1024 * 1024).unwrap(),
        ..Default::default()
    };
    let big = message(1, 600_000);
    let files = vec![("big".to_string(), big.clone()), ("small".to_string(), message(2, 5000))];
    let tmp = tempfile::tempdir().unwrap();
    let (storage, ids) = backed_up(tmp.path(), &opts, &files);
    let repo = reopen(&storage, tmp.path());
    for _ in 0..2 {
        assert_eq!(&repo.read_blob(&ids[0]).unwrap()[..], &big[..]);
    }
    assert_eq!(storage.take().get(Op::GetRange, FileKind::Pack), 2, "the big chunk's frame was kept");
    // A frame of one small blob (the backup's last group) is kept.
    for _ in 0..2 {
        repo.read_blob(&ids[1]).unwrap();
    }
    assert_eq!(storage.take().get(Op::GetRange, FileKind::Pack), 1, "the small blob's frame was not kept");
}
