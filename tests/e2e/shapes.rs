//! Format v2 shapes end to end (`format-spec/v2/trees-index.md`): a big
//! directory is split, so one added file costs a few small blobs, not the
//! directory; and a snapshot mount (a new `st_dev`, same inodes and ctimes)
//! rewrites no tree and reads no file again.

use std::process::Command;

use crate::util::*;

/// 200,000 small files in one directory (a Maildir `cur/`, a session
/// directory), backed up twice with one file added: the second backup
/// stores the new file, one leaf of ~256 entries and the nodes above it,
/// not a 200,000-entry tree (about 4 MB compressed in format v1).
#[test]
fn one_file_added_to_200k_costs_a_few_small_blobs() {
    let env = TestEnv::in_memory();
    let dir = env.path("src/cur");
    std::fs::create_dir_all(&dir).unwrap();
    const FILES: usize = 200_000;
    for i in 0..FILES {
        std::fs::write(dir.join(format!("{:010}.M{i}P4242.mx,S=31:2,S", 1_700_000_000 + i)), format!("msg {i}\n"))
            .unwrap();
    }
    env.init();
    let first = env.backup([env.path("src")]);
    assert_eq!(ju64(&first, "summary.files_new"), FILES as u64);

    std::fs::write(dir.join("1800000000.M1P1.mx,S=9:2,"), b"new mail\n").unwrap();
    let second = env.backup([env.path("src")]);
    assert_eq!(ju64(&second, "summary.files_new"), 1);
    // Change detection kept working without inodes in the trees: nothing
    // else was read.
    assert_eq!(ju64(&second, "summary.files_unchanged"), FILES as u64);
    assert!(ju64(&second, "summary.bytes_read") < 100, "{second}");
    let added = ju64(&second, "summary.bytes_added_stored");
    // One leaf (~256 entries, ~20 KB raw), one level-1 node, the root, the
    // directories above, the file, and pack headers and trailers.
    assert!(added < 96 * 1024, "the second backup stored {added} bytes");
    let blobs = ju64(&second, "summary.blobs_added");
    assert!(blobs <= 10, "{blobs} new blobs");

    let cat = env.arc().args(["cat"]).arg(format!("latest:{}", dir.join("1800000000.M1P1.mx,S=9:2,").display())).run();
    assert_eq!(cat.success().stdout, b"new mail\n");
    let ls = env.arc().args(["ls", "latest"]).arg(&dir).run().success();
    assert_eq!(ls.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), FILES + 1);
    env.arc().arg("check").run().success();
}

/// Needs root, `mkfs.ext4` and loop devices; fails in CI without them and
/// says why it skipped elsewhere.
fn loop_mount_tools() -> bool {
    let ok = is_root() && which("mkfs.ext4").is_some() && which("losetup").is_some();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "this test needs root, mkfs.ext4 and losetup in CI");
        eprintln!("skipped: needs root, mkfs.ext4 and losetup");
    }
    ok
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// What an LVM snapshot does to a file system: the same blocks (same
/// inodes, ctimes, contents) on another block device, so another `st_dev`.
/// The second backup reads no file and rewrites no tree below the mount.
#[test]
fn a_snapshot_mount_with_a_new_device_keeps_every_tree_and_reads_nothing() {
    if !loop_mount_tools() {
        return;
    }
    let env = TestEnv::new();
    let (img, copy, mnt) = (env.path("fs.img"), env.path("snap.img"), env.path("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    run(Command::new("truncate").arg("-s").arg("64M").arg(&img));
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    {
        run(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        let _m = Mounted(mnt.clone());
        for d in 0..20 {
            let sub = mnt.join(format!("site{d}"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..200 {
                write_random_file(&sub.join(format!("f{f}.php")), 500 + f * 7, d * 1000 + f);
            }
        }
        std::fs::hard_link(mnt.join("site0/f1.php"), mnt.join("site1/linked.php")).unwrap();
    }
    run(Command::new("cp").arg("--sparse=always").arg(&img).arg(&copy));
    env.init();

    let dev_of = |p: &std::path::Path| std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(p).unwrap());
    let first = {
        run(Command::new("mount").args(["-o", "loop,ro"]).arg(&img).arg(&mnt));
        let _m = Mounted(mnt.clone());
        let dev = dev_of(&mnt.join("site0"));
        (env.backup([&mnt]), dev)
    };
    // The copy goes on another loop device: another st_dev, nothing else.
    // The first image holds a loop device meanwhile, so the copy cannot get
    // the one just freed.
    let held = Command::new("losetup").args(["-f", "--show", "-r"]).arg(&img).output().unwrap();
    assert!(held.status.success(), "losetup: {}", String::from_utf8_lossy(&held.stderr));
    let held = String::from_utf8_lossy(&held.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let _held = Detach(held);
    let second = {
        run(Command::new("mount").args(["-o", "loop,ro"]).arg(&copy).arg(&mnt));
        let _m = Mounted(mnt.clone());
        assert_ne!(dev_of(&mnt.join("site0")), first.1, "the copy must be on another device");
        env.backup([&mnt])
    };
    assert_eq!(ju64(&second, "summary.files_unchanged"), 20 * 200 + 1, "{second}");
    assert_eq!(ju64(&second, "summary.bytes_read"), 0);
    // No tree at or below the mount point was rewritten. The one-entry
    // trees of the directories above it may be (other processes change
    // /tmp's mtime meanwhile); a rewritten tree below would rewrite the
    // mount point's and every one of those too, one blob more than them.
    let above = mnt.components().count() as u64 - 1;
    let added = ju64(&second, "summary.blobs_added");
    assert!(added <= above, "{added} blobs added, at most {above} expected: {second}");
    let snaps = env.snapshots_json();
    assert_eq!(snaps.len(), 2);
    let diff = env
        .arc()
        .args(["diff", "--json"])
        .arg(snaps[0]["id"].as_str().unwrap())
        .arg(snaps[1]["id"].as_str().unwrap())
        .run()
        .success();
    let text = String::from_utf8_lossy(&diff.stdout).into_owned();
    assert!(!text.contains("\"change\""), "the snapshots differ: {text}");
}

/// Every byte a v2 backup stores goes through the one sealing API, in both
/// encryption modes: the blobs of a split directory (nodes and leaves) in
/// sealed pack frames, index files (v2) as sealed files. File names that
/// zstd cannot shrink (random hex) appear in no repository file, and each
/// index file starts with the sealed-file magic.
#[test]
fn split_trees_and_index_files_are_sealed() {
    let env = TestEnv::new();
    let dir = env.path("src/big");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (0..3000u64).map(|i| format!("{:016x}", splitmix64(i))).collect();
    for n in &names {
        // Empty files: no data blobs, so every blob stored is a tree blob.
        std::fs::write(dir.join(n), b"").unwrap();
    }
    env.init();
    let first = env.backup([env.path("src")]);
    // 3000 entries split into several leaves, a node above them, and the
    // directories above `big`.
    assert!(ju64(&first, "summary.blobs_added") >= 6, "{first}");

    let mut files = Vec::new();
    let mut stack = vec![env.repo.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let index_files: Vec<_> = files.iter().filter(|p| p.parent().is_some_and(|d| d.ends_with("index"))).collect();
    assert!(!index_files.is_empty());
    for f in &index_files {
        assert_eq!(&std::fs::read(f).unwrap()[..4], b"ARCS", "{} is not sealed", f.display());
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for n in names.iter().step_by(7) {
            assert!(!bytes.windows(n.len()).any(|w| w == n.as_bytes()), "the name {n} is readable in {}", f.display());
        }
    }
    env.arc().args(["check", "--read-data"]).run().success();
    let ls = env.arc().args(["ls", "latest"]).arg(&dir).run().success();
    assert_eq!(ls.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), names.len());
}

/// SplitMix64: names that look random to zstd, the same every run.
fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
