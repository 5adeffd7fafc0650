//! Incremental backups: unchanged trees cost (almost) nothing, changed files
//! are detected and their new content restored.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::*;

/// ~38 MiB of incompressible files plus many small ones in a few directories.
/// Returns the relative paths of all files.
fn build_tree(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for i in 0..6u64 {
        let rel = PathBuf::from(format!("big/f{i}.bin"));
        write_random_file(&root.join(&rel), 6 * MIB + i * 1000, 300 + i);
        files.push(rel);
    }
    let mut rng = Rng::new(42);
    for d in 0..5u64 {
        for f in 0..20u64 {
            let rel = PathBuf::from(format!("small/d{d}/file{f}.txt"));
            let size = 1 + rng.below(20_000);
            write_random_file(&root.join(&rel), size, 1000 + d * 100 + f);
            files.push(rel);
        }
    }
    fs::write(root.join("notes.txt"), repetitive_text(500_000, 3)).unwrap();
    files.push("notes.txt".into());
    files.sort();
    files
}

#[test]
fn unchanged_backup_adds_almost_nothing_and_changes_are_detected() {
    let env = TestEnv::new();
    let src = env.path("src");
    let files = build_tree(&src);
    let n = files.len() as u64;
    let total: u64 = files.iter().map(|f| fs::metadata(src.join(f)).unwrap().len()).sum();
    env.init();

    let b1 = env.backup([&src]);
    assert_eq!(ju64(&b1, "summary.files_new"), n);
    assert_eq!(ju64(&b1, "summary.total_bytes"), total);
    let id1 = jstr(&b1, "snapshot_id").to_string();
    let size1 = du_apparent(&env.repo, true);
    let size1_all = du_apparent(&env.repo, false);
    let alloc1 = du_allocated(&env.repo);
    assert!(size1 >= total * 9 / 10, "first backup stored only {size1} bytes of {total}");

    // Second backup, nothing changed.
    let b2 = env.backup([&src]);
    let size2 = du_apparent(&env.repo, true);
    let size2_all = du_apparent(&env.repo, false);
    let alloc2 = du_allocated(&env.repo);
    eprintln!(
        "second backup: bytes_added={} bytes_added_stored={} repo growth={} (with index cache {}, allocated {})",
        ju64(&b2, "summary.bytes_added"),
        ju64(&b2, "summary.bytes_added_stored"),
        size2 - size1,
        size2_all as i64 - size1_all as i64,
        alloc2 as i64 - alloc1 as i64
    );
    assert_eq!(b2["parent"].as_str(), Some(id1.as_str()), "parent of the second backup: {b2:#}");
    assert_eq!(ju64(&b2, "summary.files_unchanged"), n, "{b2:#}");
    assert_eq!(ju64(&b2, "summary.files_new"), 0, "{b2:#}");
    assert_eq!(ju64(&b2, "summary.files_changed"), 0, "{b2:#}");
    assert_eq!(ju64(&b2, "summary.total_bytes"), total, "{b2:#}");
    assert!(ju64(&b2, "summary.bytes_added") < total / 100, "{b2:#}");
    assert!(ju64(&b2, "summary.bytes_added_stored") < total / 100, "{b2:#}");
    assert!(size2 - size1 < total / 100, "repository grew by {} bytes for an unchanged tree of {total}", size2 - size1);
    assert!(
        alloc2.saturating_sub(alloc1) < total / 100,
        "repository grew by {} allocated bytes (du) for an unchanged tree of {total}",
        alloc2 as i64 - alloc1 as i64
    );
    assert!(
        size2_all.saturating_sub(size1_all) < total / 100,
        "repository including its index cache grew by {} bytes for an unchanged tree of {total}",
        size2_all - size1_all
    );

    // Change one file: same size, new content, a different mtime.
    let changed = PathBuf::from("big/f2.bin");
    let old_content = fs::read(src.join(&changed)).unwrap();
    let old_len = old_content.len() as u64;
    write_random_file(&src.join(&changed), old_len, 77_777);
    filetime::set_file_mtime(src.join(&changed), filetime::FileTime::from_unix_time(1_700_000_000, 42)).unwrap();

    let b3 = env.backup([&src]);
    assert_eq!(ju64(&b3, "summary.files_changed"), 1, "{b3:#}");
    assert_eq!(ju64(&b3, "summary.files_unchanged"), n - 1, "{b3:#}");
    assert_eq!(ju64(&b3, "summary.files_new"), 0, "{b3:#}");
    assert!(ju64(&b3, "summary.bytes_added") >= old_len * 9 / 10, "{b3:#}");
    let id3 = jstr(&b3, "short_id").to_string();

    let target = env.path("restore");
    env.restore(&id3, &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());

    // Same size and the same mtime (put back after writing): only the
    // ctime tells, and it must be enough to notice the change.
    let sneaky = src.join("small/d1/file3.txt");
    let meta = fs::metadata(&sneaky).unwrap();
    let mut content = fs::read(&sneaky).unwrap();
    for b in content.iter_mut() {
        *b = b.wrapping_add(1);
    }
    fs::write(&sneaky, &content).unwrap();
    filetime::set_file_times(
        &sneaky,
        filetime::FileTime::from_last_access_time(&meta),
        filetime::FileTime::from_last_modification_time(&meta),
    )
    .unwrap();
    let b4 = env.backup([&src]);
    assert_eq!(ju64(&b4, "summary.files_changed"), 1, "a rewrite keeping size and mtime was not noticed: {b4:#}");
    assert_eq!(ju64(&b4, "summary.files_unchanged"), n - 1, "{b4:#}");
    let cat = env.arc().arg("cat").arg(format!("latest:{}", sneaky.display())).run().success();
    assert!(cat.stdout == content, "cat latest does not return the rewritten content of {}", sneaky.display());

    // The first snapshot still has the old content.
    let old = env.arc().arg("cat").arg(format!("{id1}:{}", src.join(&changed).display())).run().success();
    assert!(old.stdout == old_content, "cat of the first snapshot does not return the old content");
    let new = env.arc().arg("cat").arg(format!("latest:{}", src.join(&changed).display())).run().success();
    assert!(new.stdout == fs::read(src.join(&changed)).unwrap(), "cat latest does not return the new content");
}
