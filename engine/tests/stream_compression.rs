//! The config's `stream_compression` (format-spec/v2/README.md section 1):
//! stream chunks (stdin, command output) are compressed at its level, file
//! contents at `compression`, also when both are in one backup.

use std::sync::Arc;

use arc_engine::crypto::ContentKeys;
use arc_engine::ops::backup::{backup, BackupOptions, StreamSource};
use arc_engine::progress::NoProgress;
use arc_engine::repo::InitOptions;
use arc_engine::storage::{FileKind, MemoryStorage, MemoryStorageOptions, Storage};
use arc_engine::Repository;
use zeroize::Zeroizing;

/// 3 MB of SQL-dump-like text with varied rows (so zstd levels differ).
fn dump() -> Vec<u8> {
    let mut out = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0u64;
    while out.len() < 3_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(
            format!(
                "INSERT INTO orders VALUES ({i}, 'customer-{}', {}.{:02}, '2024-{:02}-{:02}', 'status-{}');\n",
                x % 50_000,
                x % 9_999,
                x % 100,
                1 + x % 12,
                1 + x % 28,
                x % 7
            )
            .as_bytes(),
        );
        i += 1;
    }
    out
}

/// Bytes of the packs a backup of `data` (as a file, or as a stream next to
/// an empty directory) wrote into a new repository with these levels.
fn stored(files_level: i32, streams_level: i32, as_file: bool, data: &[u8]) -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new(MemoryStorageOptions::default()));
    // One set of content keys for every run: each repository's own would
    // cut the dump at other places, and chunks of other sizes compress
    // (and pad) differently enough to hide what the levels change.
    let content_keys =
        ContentKeys { chunk_id: Zeroizing::new([1; 32]), tree_split: Zeroizing::new([2; 32]), gear_seed: 3 };
    let opts = InitOptions {
        compression_level: files_level,
        stream_compression_level: streams_level,
        content_keys: Some(content_keys),
        ..Default::default()
    };
    let repo = Repository::init_with_index(storage.clone(), &opts, Some(tmp.path().join("index.redb"))).unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut backup_opts = BackupOptions { paths: vec![src.clone()], ..Default::default() };
    if as_file {
        std::fs::write(src.join("dump.sql"), data).unwrap();
    } else {
        backup_opts.streams.push(StreamSource {
            name: "db/dump.sql".into(),
            reader: Box::new(std::io::Cursor::new(data.to_vec())),
            allow_empty: false,
            stop: None,
        });
    }
    backup(&repo, backup_opts, &NoProgress).unwrap();
    assert_eq!(repo.config().stream_level(), streams_level);
    storage.list(FileKind::Pack).unwrap().iter().map(|(_, len)| len).sum()
}

#[test]
fn streams_are_compressed_at_the_stream_level_and_files_at_the_file_level() {
    let data = dump();
    let (fast, strong) = (1, 12);
    let stream_fast = stored(strong, fast, false, &data);
    let stream_strong = stored(strong, strong, false, &data);
    assert!(
        stream_fast as f64 > stream_strong as f64 * 1.05,
        "a stream at level {fast} stored {stream_fast} bytes, at level {strong} {stream_strong}"
    );
    // The stream level leaves files alone.
    let file_a = stored(strong, fast, true, &data);
    let file_b = stored(strong, strong, true, &data);
    assert!(
        (file_a as f64 - file_b as f64).abs() < file_b as f64 * 0.01,
        "files stored {file_a} / {file_b} bytes with stream levels {fast} / {strong}"
    );
    assert!(stream_fast as f64 > file_a as f64 * 1.05, "a stream at level {fast} like a file at {strong}");
}
