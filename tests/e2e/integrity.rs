//! Damage detection (`check --read-data`) and index rebuilding
//! (`repair index`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::util::*;

/// Several multi-MiB random files (so that one damaged blob affects one
/// file), some compressible and some small files sharing frames.
fn build_tree(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for i in 0..6u64 {
        let rel = PathBuf::from(format!("f{i}.bin"));
        write_random_file(&root.join(&rel), 3 * MIB + i * 4099, 500 + i);
        files.push(rel);
    }
    for i in 0..30u64 {
        let rel = PathBuf::from(format!("small/s{i:02}.txt"));
        fs::create_dir_all(root.join("small")).unwrap();
        fs::write(root.join(&rel), repetitive_text(2_000 + i as usize * 97, i)).unwrap();
        files.push(rel);
    }
    fs::write(root.join("text.sql"), repetitive_text(2 * MIB as usize, 9)).unwrap();
    files.push("text.sql".into());
    files.sort();
    files
}

/// `affects <snap>:<path>` lines of check output -> paths.
fn affected_paths(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("affects "))
        .filter_map(|s| s.split_once(':').map(|(_, p)| p.trim().to_string()))
        .collect()
}

#[test]
fn flipped_byte_in_pack_is_found_by_read_data_check() {
    let env = TestEnv::new();
    let src = env.path("src");
    let files = build_tree(&src);
    env.init();
    let b = env.backup([&src]);
    let short = jstr(&b, "short_id").to_string();

    // Flip one byte in the first half of the largest pack (well clear of
    // the trailer at its end).
    let packs = env.pack_files();
    let largest = packs.iter().max_by_key(|p| fs::metadata(p).unwrap().len()).expect("no pack files").clone();
    let pack_id = largest.file_name().unwrap().to_string_lossy().into_owned();
    let len = fs::metadata(&largest).unwrap().len();
    assert!(len > 1024 * 1024, "largest pack is only {len} bytes");
    let offset = len / 3;
    let f = fs::OpenOptions::new().read(true).write(true).open(&largest).unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x5a;
    f.write_all_at(&byte, offset).unwrap();
    drop(f);

    // The structural check may or may not notice; it must not crash.
    let quick = env.arc().arg("check").run();
    assert!(matches!(quick.code(), Some(0) | Some(1)), "check exited oddly\n{}", quick.describe());

    let full = env.arc().args(["check", "--read-data"]).run().code_is(1);
    let text = format!("{}\n{}", full.stdout_str(), full.stderr_str());
    assert!(
        text.contains(&pack_id) || text.contains(&pack_id[..8]),
        "check --read-data does not name the damaged pack {pack_id}\n{}",
        full.describe()
    );
    let affected = affected_paths(&text);
    let abs: Vec<String> = files.iter().map(|f| src.join(f).to_string_lossy().into_owned()).collect();
    let hit: Vec<&String> = abs.iter().filter(|p| affected.contains(*p)).collect();
    assert!(
        !hit.is_empty(),
        "check --read-data names no affected file of the source (affected: {affected:?})\n{}",
        full.describe()
    );
    assert!(
        text.lines().any(|l| l.trim().starts_with(&format!("affects {short}:"))),
        "affected lines do not use the snapshot id {short}\n{}",
        full.describe()
    );

    // The damaged file must not come back silently wrong.
    let damaged = hit[0].clone();
    let cat = env.arc().arg("cat").arg(format!("latest:{damaged}")).run();
    assert!(
        !cat.status.success(),
        "`arc cat` of the damaged file {damaged} succeeded (returned {} bytes)\n{}",
        cat.stdout.len(),
        cat.describe()
    );

    // An unaffected file restores fine.
    let unaffected = files
        .iter()
        .find(|f| f.to_string_lossy().starts_with('f') && !affected.contains(&*src.join(f).to_string_lossy()))
        .expect("every large file is affected by a single flipped byte");
    let target = env.path("restore");
    env.arc()
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(src.join(unaffected))
        .run()
        .success();
    assert_same_file(&src.join(unaffected), &restored(&target, &src.join(unaffected)));
    assert!(
        !restored(&target, &src.join(files.iter().find(|f| **f != *unaffected).unwrap())).exists(),
        "--include restored more than the included path"
    );

    // A full restore reports the damaged file and fails, but restores
    // everything else.
    let full_target = env.path("restore-all");
    let out = env.arc().args(["restore", "latest", "--target"]).arg(&full_target).run().failure();
    let damaged_name = Path::new(&damaged).file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.stderr_str().lines().any(|l| l.contains(&damaged_name)),
        "restore does not name the damaged file {damaged}\n{}",
        out.describe()
    );
    for f in &files {
        let abs = src.join(f);
        if affected.contains(&*abs.to_string_lossy()) {
            continue;
        }
        assert_same_file(&abs, &restored(&full_target, &abs));
    }
}

#[test]
fn repair_index_rebuilds_an_identical_index() {
    let env = TestEnv::new();
    let src = env.path("src");
    build_tree(&src);
    env.init();
    env.backup([&src]);
    // A second snapshot with one more file, so several index files exist.
    write_random_file(&src.join("later.bin"), 2 * MIB, 4242);
    let b2 = env.backup([&src]);
    let short = jstr(&b2, "short_id").to_string();

    let before = env.arc().args(["list", "blobs"]).run().success().stdout_str();
    assert!(before.lines().count() > 10, "suspiciously few blobs:\n{before}");
    let packs_before = env.arc().args(["list", "packs"]).run().success().stdout_str();

    let index_dir = env.repo.join("index");
    let index_files = files_under(&index_dir);
    assert!(!index_files.is_empty(), "no index files in {}", index_dir.display());
    for f in &index_files {
        fs::remove_file(f).unwrap();
    }
    let _ = fs::remove_file(env.index_db());

    env.arc().args(["repair", "index"]).run().success();
    assert!(!files_under(&index_dir).is_empty(), "repair index wrote no index files");

    let after = env.arc().args(["list", "blobs"]).run().success().stdout_str();
    assert!(before == after, "`arc list blobs` differs after repair index\nbefore:\n{before}\nafter:\n{after}");
    let packs_after = env.arc().args(["list", "packs"]).run().success().stdout_str();
    assert_eq!(packs_before, packs_after, "`arc list packs` differs after repair index");

    env.arc().args(["check", "--read-data"]).run().success();
    let target = env.path("restore");
    env.restore(&short, &target);
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
}
