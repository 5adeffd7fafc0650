//! Helpers shared by the engine's integration tests (each test file is a
//! crate of its own and uses only some of them).
#![allow(dead_code)]

use std::fs;
use std::path::Path;

/// `len` bytes of xorshift64 output (the low byte of each step): the same
/// seed always gives the same bytes, and the frozen repositories' scripts
/// (make-repo-v1.sh, make-repo-v2.sh) generate `dir/random.bin` this way.
pub fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
    assert_ne!(x, 0, "xorshift stays at 0 forever");
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `dir/random.bin` of the frozen repositories.
pub fn frozen_random_bin() -> Vec<u8> {
    pseudo_random(600 * 1024, 0x9E37_79B9_7F4A_7C15)
}

/// Copies a directory tree (a frozen repository, which opening writes to:
/// locks, the index database; the original must stay untouched).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}
