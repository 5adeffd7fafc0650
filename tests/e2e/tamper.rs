//! Tampering with an encrypted (format v2) repository: each change below is
//! reported by `check` and refused by restore, never silently used.
//! (format-spec/v2/crypto.md section 6 says what an attacker with write
//! access can and cannot do.)

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arc_engine::format::envelope::{self, Codec, FileType};

use crate::util::*;

/// A repository with one snapshot of a tree holding one incompressible
/// 256 KiB file (a single chunk in a frame of its own) and a small file.
fn repo_with(env: &TestEnv, repo: &Path, seed: u64) -> (PathBuf, String) {
    let src = env.path("src");
    if !src.exists() {
        fs::create_dir_all(&src).unwrap();
        // The chunker's minimum: a chunk is never cut shorter, so the file
        // is one chunk whatever the repository's gear seed (at 300 KiB it
        // was cut in two now and then).
        write_random_file(&src.join("big.bin"), 256 * 1024, seed);
        fs::write(src.join("small.txt"), b"small file\n").unwrap();
    }
    // Frames of 256 KiB: the 256 KiB chunk is then alone in its frame.
    env.arc_at(repo).args(["init", "--frame-size", "256K"]).run().success();
    let out = env.arc_at(repo).args(["--json", "backup"]).arg(&src).run().success();
    (src, jstr(&out.json(), "short_id").to_string())
}

fn check_fails(env: &TestEnv, repo: &Path, needle: &str) {
    let out = env.arc_at(repo).args(["check", "--read-data"]).run().failure();
    let text = format!("{}{}", out.stdout_str(), out.stderr_str());
    assert!(text.contains(needle), "check does not report {needle:?}:\n{}", out.describe());
}

fn data_pack(repo: &Path) -> PathBuf {
    files_under(&repo.join("data")).into_iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap()
}

#[test]
fn blob_from_another_repository_with_the_same_passphrase_is_refused() {
    let env = TestEnv::new();
    let (a, b) = (env.path("a"), env.path("b"));
    let (_, snap) = repo_with(&env, &a, 1);
    repo_with(&env, &b, 1);
    let (pa, pb) = (data_pack(&a), data_pack(&b));
    let (da, db) = (fs::read(&pa).unwrap(), fs::read(&pb).unwrap());
    // Same content, same padded frame length: overwrite A's big frame
    // (right after the 8-byte header) with B's.
    let frame_len = 256 * 1024;
    assert!(da.len() > frame_len + 8 && db.len() > frame_len + 8);
    fs::OpenOptions::new().write(true).open(&pa).unwrap().write_all_at(&db[8..8 + frame_len], 8).unwrap();
    check_fails(&env, &a, "not authentic");
    let out = env.arc_at(&a).args(["restore", &snap, "--target"]).arg(env.path("t")).run();
    assert_ne!(out.code(), Some(0), "restore used a foreign blob:\n{}", out.describe());
}

#[test]
fn modified_trailer_is_refused() {
    let env = TestEnv::new();
    let repo = env.path("r");
    let (src, snap) = repo_with(&env, &repo, 2);
    let pack = data_pack(&repo);
    let mut bytes = fs::read(&pack).unwrap();
    let n = bytes.len();
    let tlen = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let tstart = n - 40 - tlen;
    // Change the sealed trailer and fix up the plain footer's checksum, as
    // an attacker can: only the AEAD stands in the way.
    bytes[tstart + 30] ^= 1;
    let sum = arc_engine::Id::hash(&bytes[tstart..n - 40]).0;
    bytes[n - 40..n - 8].copy_from_slice(&sum);
    fs::write(&pack, &bytes).unwrap();
    check_fails(&env, &repo, "not authentic");
    // Restore reads frames through the index files (a copy of the trailer
    // made when the pack was written) and verifies every blob, so the
    // forged trailer cannot mislead it while they exist. Without them the
    // index must be rebuilt from the packs: the forged trailer is refused
    // there, and so is the restore of what only it could locate.
    for f in files_under(&repo.join("index")) {
        fs::remove_file(f).unwrap();
    }
    let _ = fs::remove_file(repo.join("index.redb"));
    let out = env.arc_at(&repo).args(["repair", "index"]).run();
    assert!(out.stdout_str().contains("not authentic"), "repair index used a forged trailer:\n{}", out.describe());
    let out = env.arc_at(&repo).args(["restore", &snap, "--target"]).arg(env.path("t")).run();
    assert_ne!(out.code(), Some(0), "restore after the index rebuild:\n{}", out.describe());
    let _ = src;
}

#[test]
fn older_snapshot_under_the_newer_name_is_refused() {
    let env = TestEnv::new();
    let repo = env.path("r");
    let (src, _) = repo_with(&env, &repo, 3);
    let snaps_before = files_under(&repo.join("snapshots"));
    fs::write(src.join("small.txt"), b"changed\n").unwrap();
    let out = env.arc_at(&repo).args(["--json", "backup"]).arg(&src).run().success();
    let newer = jstr(&out.json(), "short_id").to_string();
    let newer_file = files_under(&repo.join("snapshots")).into_iter().find(|p| !snaps_before.contains(p)).unwrap();
    fs::copy(&snaps_before[0], &newer_file).unwrap();
    check_fails(&env, &repo, "does not match its name");
    let out = env.arc_at(&repo).args(["restore", &newer, "--target"]).arg(env.path("t")).run().failure();
    assert!(out.one_line_error().contains("does not match its name"), "{}", out.describe());
}

#[test]
fn config_rewritten_to_encryption_none_is_refused() {
    let env = TestEnv::new();
    let repo = env.path("r");
    let (_, snap) = repo_with(&env, &repo, 4);
    let path = repo.join("config");
    let (_, payload) = envelope::open(FileType::Config, 1, "config", &fs::read(&path).unwrap()).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let want = if v["encryption"] == "none" { "passphrase" } else { "none" };
    v["encryption"] = want.into();
    // Bigger chunks too, as someone swapping chunker parameters would.
    v["file_chunker"]["max_size"] = 8_388_608.into();
    fs::write(&path, envelope::seal(FileType::Config, 1, Codec::Raw, &serde_json::to_vec_pretty(&v).unwrap())).unwrap();
    for args in [vec!["check"], vec!["snapshots"], vec!["restore", snap.as_str(), "--target", "t"]] {
        let out = env.arc_at(&repo).args(&args).run().failure();
        let line = out.one_line_error();
        assert!(line.contains("not authentic"), "`arc {}`: {line}", args.join(" "));
    }
}

#[test]
fn removing_one_key_file_keeps_the_others_working_and_removing_all_is_a_clear_error() {
    let env = TestEnv::new();
    let repo = env.path("r");
    let (src, snap) = repo_with(&env, &repo, 5);
    let keys_dir = repo.join("keys");
    let first = files_under(&keys_dir);
    assert_eq!(first.len(), 1);
    if encryption_none() {
        // No passphrases to add in an unprotected repository.
        env.arc_at(&repo).args(["key", "add"]).env("ARC_NEW_PASSWORD", "x").run().failure();
    } else {
        env.arc_at(&repo).args(["key", "add"]).env("ARC_NEW_PASSWORD", "second passphrase").run().success();
        fs::remove_file(&first[0]).unwrap();
        let second = || env.arc_at(&repo).env("ARC_PASSWORD", "second passphrase");
        second().args(["check", "--read-data"]).run().success();
        second().args(["restore", &snap, "--target"]).arg(env.path("t1")).run().success();
        assert_trees_equal(&src, &restored(&env.path("t1"), &src), &CompareOpts::default());
        let out = env.arc_at(&repo).arg("snapshots").run().failure();
        assert!(out.one_line_error().contains("wrong passphrase"), "{}", out.describe());
    }
    for f in files_under(&keys_dir) {
        fs::remove_file(f).unwrap();
    }
    for args in [vec!["snapshots"], vec!["check"], vec!["restore", snap.as_str(), "--target", "t2"]] {
        let out = env.arc_at(&repo).args(&args).run().failure();
        assert!(out.one_line_error().contains("has no key files"), "`arc {}`: {}", args.join(" "), out.describe());
    }
}
