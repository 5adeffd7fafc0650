//! Corruption matrix: for each kind of damage to a repository, what
//! `check`, `check --read-data`, `restore` and `repair index` do with it.
//! Every test damages a fresh two-snapshot repository in one precise place
//! (located through the engine, not guessed) and asserts that the damage is
//! reported, that exactly the affected files are named, and that everything
//! else still restores byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arc_engine::format::pack::FOOTER_LEN;
use arc_engine::index::BlobLocation;
use arc_engine::ops::tree_walk::{locate, Located};
use arc_engine::{Id, SnapshotFilter};

use crate::util::*;

/// Files in `many/`, beside as many symlinks with 4000-byte targets: a v2
/// directory is split into leaves of at most about 256 KiB, and the links
/// make leaves of that size, each bigger than a frame (`--frame-size 256K`)
/// and so in a frame of its own, which lets a test damage one blob of that
/// one directory and nothing else.
const MANY: usize = 900;

struct Fx {
    env: TestEnv,
    src: PathBuf,
    /// Short ids of the two snapshots; the second adds `later/l.bin`.
    snaps: [String; 2],
    /// Absolute source path of every regular file of the second snapshot,
    /// with where each of its chunks is stored.
    files: BTreeMap<PathBuf, Vec<BlobLocation>>,
}

impl Fx {
    fn later(&self) -> PathBuf {
        self.src.join("later/l.bin")
    }

    /// The files snapshot `i` holds.
    fn files_of(&self, i: usize) -> Vec<&PathBuf> {
        self.files.keys().filter(|p| i == 1 || **p != self.later()).collect()
    }

    fn pack_path(&self, pack: &Id) -> PathBuf {
        let hex = pack.to_hex();
        self.env.repo.join("data").join(&hex[..2]).join(&hex)
    }

    /// Files with a chunk matching `pred`.
    fn files_where(&self, pred: impl Fn(&BlobLocation) -> bool) -> BTreeSet<PathBuf> {
        self.files.iter().filter(|(_, locs)| locs.iter().any(&pred)).map(|(p, _)| p.clone()).collect()
    }

    /// The tree blob of directory `dir` (absolute source path) and where it is.
    /// The biggest blob `dir`'s tree is made of (a leaf of a split v2
    /// directory), with the directory's tree id.
    fn biggest_part_of(&self, dir: &Path) -> (Id, BlobLocation) {
        let (tree, _) = self.tree_of(dir);
        let repo = open_repo(&self.env.repo);
        let (_, parts) = repo.load_tree_with_parts(&tree).unwrap();
        let loc = parts
            .iter()
            .map(|p| repo.lookup_blob(p).unwrap().expect("tree blob is indexed"))
            .max_by_key(|l| l.raw_len)
            .unwrap();
        (tree, loc)
    }

    fn tree_of(&self, dir: &Path) -> (Id, BlobLocation) {
        let repo = open_repo(&self.env.repo);
        let snap = repo.find_snapshot(&self.snaps[1], &SnapshotFilter::default()).unwrap();
        let id = match locate(&repo, &snap, &dir.to_string_lossy()).unwrap() {
            Located::Node(n) => n.subtree.expect("a directory"),
            Located::Root(id) => id,
        };
        let loc = repo.lookup_blob(&id).unwrap().expect("tree blob is indexed");
        (id, loc)
    }
}

fn setup() -> Fx {
    // Small packs, so that one pack holds only a few of the files.
    setup_with(&["--pack-size", "1M", "--frame-size", "256K"])
}

/// [`setup`] with the given `init` options.
fn setup_with(init: &[&str]) -> Fx {
    let env = TestEnv::in_memory();
    let src = env.path("src");
    for i in 0..4u64 {
        write_random_file(&src.join(format!("big/f{i}.bin")), MIB + i * 77_777, 900 + i);
    }
    fs::create_dir_all(src.join("small")).unwrap();
    for i in 0..20u64 {
        fs::write(src.join(format!("small/s{i:02}.txt")), repetitive_text(3000 + i as usize * 101, i)).unwrap();
    }
    fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..MANY {
        let name = format!("{}-{i:05}.txt", "a-long-file-name-so-that-this-directory-gets-a-big-tree".repeat(3));
        fs::write(src.join("many").join(name), format!("{i}\n")).unwrap();
        let target = format!("{i:05}/{}", "t".repeat(3994));
        std::os::unix::fs::symlink(target, src.join("many").join(format!("link-{i:05}"))).unwrap();
    }
    env.arc().arg("init").args(init).run().success();
    let s1 = jstr(&env.backup([&src]), "short_id").to_string();
    write_random_file(&src.join("later/l.bin"), 700_000, 999);
    let s2 = jstr(&env.backup([&src]), "short_id").to_string();

    let mut files = BTreeMap::new();
    {
        let repo = open_repo(&env.repo);
        let snap = repo.find_snapshot(&s2, &SnapshotFilter::default()).unwrap();
        for p in files_under(&src) {
            let node = match locate(&repo, &snap, &p.to_string_lossy()).unwrap() {
                Located::Node(n) => n,
                Located::Root(_) => unreachable!("a file is not the root"),
            };
            let locs = node.chunks.iter().map(|c| repo.lookup_blob(c).unwrap().expect("chunk is indexed")).collect();
            files.insert(p, locs);
        }
    }
    assert_eq!(files.len(), 4 + 20 + MANY + 1);
    Fx { env, src, snaps: [s1, s2], files }
}

fn flip_byte(path: &Path, offset: u64) {
    let f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, offset).unwrap();
}

/// `affects <snap>:<path>` lines of check output.
fn affected(text: &str) -> BTreeSet<(String, PathBuf)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("affects "))
        .filter_map(|s| s.split_once(':').map(|(snap, p)| (snap.to_string(), PathBuf::from(p.trim()))))
        .collect()
}

/// Runs `arc check [--read-data]`, asserts exit 1, that `needle` is named,
/// and that the affected entries are exactly `expected` in every snapshot
/// that holds them. Returns the output text.
#[track_caller]
fn check_reports(fx: &Fx, read_data: bool, needle: &str, expected: &BTreeSet<PathBuf>) -> String {
    let mut cmd = fx.env.arc().arg("check");
    if read_data {
        cmd = cmd.arg("--read-data");
    }
    let out = cmd.run().code_is(1);
    let text = format!("{}\n{}", out.stdout_str(), out.stderr_str());
    assert!(text.contains(needle), "check does not name {needle}\n{}", out.describe());
    let mut want = BTreeSet::new();
    for p in expected {
        for (i, snap) in fx.snaps.iter().enumerate() {
            if i == 1 || *p != fx.later() {
                want.insert((snap.clone(), p.clone()));
            }
        }
    }
    let got = affected(&text);
    assert_eq!(got, want, "affected entries differ from the damage\n{}", out.describe());
    text
}

#[track_caller]
fn check_passes(fx: &Fx, read_data: bool) {
    let mut cmd = fx.env.arc().arg("check");
    if read_data {
        cmd = cmd.arg("--read-data");
    }
    cmd.run().success().stdout_contains("no errors were found");
}

/// Restores snapshot `i` into a fresh directory. Files for which `lost`
/// holds may be missing (and then must be named on stderr) or restored
/// intact; every other file must come back byte for byte; the exit code is
/// 1 exactly when something was not restored. Returns how many files were
/// lost.
#[track_caller]
fn restore_checked(fx: &Fx, i: usize, lost: impl Fn(&Path) -> bool) -> usize {
    let target = fx.env.path(format!("restore-{}-{}", fx.snaps[i], rand_suffix()));
    let out = fx.env.arc().args(["restore", &fx.snaps[i], "--target"]).arg(&target).run();
    assert!(matches!(out.code(), Some(0) | Some(1)), "restore exited oddly\n{}", out.describe());
    let stderr = out.stderr_str();
    let mut missing = 0;
    for p in fx.files_of(i) {
        let r = restored(&target, p);
        if lost(p) && !r.exists() {
            missing += 1;
            let name = p.file_name().unwrap().to_string_lossy();
            let dir = p.parent().unwrap().file_name().unwrap().to_string_lossy();
            assert!(
                stderr.contains(&*name) || stderr.contains(&format!("{dir}:")),
                "restore does not name the lost {}\n{}",
                p.display(),
                out.describe()
            );
        } else {
            assert_same_file(p, &r);
        }
    }
    let expect = if missing > 0 { 1 } else { 0 };
    assert_eq!(out.code(), Some(expect), "{missing} file(s) lost\n{}", out.describe());
    missing
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn bit_flip_in_a_data_frame_is_found_by_read_data_and_costs_one_file() {
    // Runs: three files, each a separate repository.
    for (run, rel) in ["big/f0.bin", "big/f2.bin", "later/l.bin"].iter().enumerate() {
        let fx = setup();
        let victim = fx.src.join(rel);
        let loc = fx.files[&victim][0];
        flip_byte(&fx.pack_path(&loc.pack), loc.frame.offset + u64::from(loc.frame.stored_len) / 2 + run as u64);

        // The structural check reads no data, by design.
        check_passes(&fx, false);
        let damaged = fx.files_where(|l| l.pack == loc.pack && l.frame.offset == loc.frame.offset);
        assert!(damaged.contains(&victim));
        check_reports(&fx, true, &loc.pack.to_hex(), &damaged);
        for i in 0..2 {
            let lost = restore_checked(&fx, i, |p| damaged.contains(p));
            assert_eq!(lost, fx.files_of(i).iter().filter(|p| damaged.contains(**p)).count());
        }
    }
}

#[test]
fn bit_flip_in_a_pack_trailer_or_footer_is_found_and_loses_nothing() {
    // Runs: a trailer byte, the footer's trailer checksum, the footer magic.
    for run in 0..3 {
        let fx = setup();
        let loc = fx.files[&fx.src.join("big/f1.bin")][0];
        let pack = fx.pack_path(&loc.pack);
        let len = fs::metadata(&pack).unwrap().len();
        let footer = len - FOOTER_LEN;
        let mut tl = [0u8; 4];
        fs::File::open(&pack).unwrap().read_exact_at(&mut tl, footer + 32).unwrap();
        let trailer = footer - u64::from(u32::from_le_bytes(tl));
        flip_byte(&pack, [trailer + 9, footer + 3, len - 1][run]);

        check_passes(&fx, false);
        // The pack is damaged, but its index entry still locates every
        // frame and every blob in them verifies: nothing is affected.
        let text = check_reports(&fx, true, &loc.pack.to_hex(), &BTreeSet::new());
        assert!(text.contains("index entry"), "check does not say the data was verified by the index:\n{text}");
        for i in 0..2 {
            assert_eq!(restore_checked(&fx, i, |_| false), 0);
        }
        // A rebuild keeps the old entry of the pack whose trailer it cannot read.
        let out = fx.env.arc().args(["repair", "index"]).run();
        assert!(out.code().is_some_and(|c| c <= 1), "repair index\n{}", out.describe());
        assert!(
            out.stdout_str().contains(&loc.pack.to_hex()[..8]) || out.stderr_str().contains(&loc.pack.to_hex()[..8])
        );
        assert_eq!(restore_checked(&fx, 1, |_| false), 0);
    }
}

#[test]
fn truncated_pack_is_found_by_plain_check_and_costs_only_its_files() {
    // Runs: cut to half, cut by one byte (the footer damaged).
    for cut in [0.5f64, 0.0] {
        let fx = setup();
        let loc = fx.files[&fx.src.join("big/f1.bin")][0];
        let pack = fx.pack_path(&loc.pack);
        let len = fs::metadata(&pack).unwrap().len();
        let new_len = if cut > 0.0 { (len as f64 * cut) as u64 } else { len - 1 };
        fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(new_len).unwrap();

        let damaged = fx.files_where(|l| l.pack == loc.pack);
        check_reports(&fx, false, &loc.pack.to_hex(), &damaged);
        check_reports(&fx, true, &loc.pack.to_hex(), &damaged);
        let lost = restore_checked(&fx, 1, |p| damaged.contains(p));
        // Cutting one byte damages only the footer, which reads do not need.
        assert!(lost >= 1 || cut == 0.0, "the file whose chunk was cut off restored");
        restore_checked(&fx, 0, |p| damaged.contains(p));
    }
}

#[test]
fn missing_data_pack_is_found_by_plain_check_and_costs_only_its_files() {
    // Runs: the pack of big/f1.bin, the pack of later/l.bin (only in the
    // second snapshot).
    for rel in ["big/f1.bin", "later/l.bin"] {
        let fx = setup();
        let loc = fx.files[&fx.src.join(rel)][0];
        fs::remove_file(fx.pack_path(&loc.pack)).unwrap();
        let damaged = fx.files_where(|l| l.pack == loc.pack);
        check_reports(&fx, false, &format!("pack {} is missing", loc.pack), &damaged);
        for i in 0..2 {
            restore_checked(&fx, i, |p| damaged.contains(p));
        }
    }
}

/// A lost pack heals while the sources still hold its data: `repair
/// index` drops the blobs the pack held, and a backup with `--force-read`
/// stores them again under the same ids, which repairs the older snapshots
/// that share them (restic's "repair index, then back up"). Check's hint
/// says so. A plain backup would not: it takes unchanged files from the
/// parent without an index lookup (the no-change backup's speed).
#[test]
fn lost_pack_heals_by_repair_index_and_a_backup_with_force_read() {
    let fx = setup();
    let loc = fx.files[&fx.src.join("big/f1.bin")][0];
    fs::remove_file(fx.pack_path(&loc.pack)).unwrap();
    let damaged = fx.files_where(|l| l.pack == loc.pack);
    let text = check_reports(&fx, false, &format!("pack {} is missing", loc.pack), &damaged);
    assert!(text.contains("arc backup --force-read"), "no hint\n{text}");
    let json = fx.env.arc().args(["--json", "check"]).run().code_is(1).json();
    assert_eq!(json["data_missing"], true, "{json}");

    fx.env.arc().args(["repair", "index"]).run().success();
    fx.env.arc().arg("check").run().code_is(1).stdout_contains("is not in any index file");
    fx.env.backup(["--force-read".as_ref(), fx.src.as_os_str()]);
    check_passes(&fx, true);
    for i in 0..2 {
        assert_eq!(restore_checked(&fx, i, |_| false), 0);
    }
}

/// A flipped bit in one frame heals: `check --read-data` names the pack
/// and the command; `repair packs` copies the pack's intact blobs into new
/// packs (the files they hold restore byte for byte), takes the damaged
/// pack out of the index and names what is lost; `backup --force-read`
/// stores it again, after which everything checks and restores.
#[test]
fn bit_flip_heals_by_repair_packs_and_a_backup_with_force_read() {
    // Packs of 16 MiB: the whole fixture fits in the two a writer keeps
    // open, so the damaged frame's pack holds other files' chunks, which
    // must restore intact after the repair.
    let fx = setup_with(&["--pack-size", "16M", "--frame-size", "256K"]);
    let loc = (fx.files.values().flatten().copied())
        .find(|loc| {
            let hit = fx.files_where(|l| l.pack == loc.pack && l.frame.offset == loc.frame.offset);
            fx.files_where(|l| l.pack == loc.pack).len() > hit.len()
        })
        .expect("a pack holding chunks of two files");
    flip_byte(&fx.pack_path(&loc.pack), loc.frame.offset + u64::from(loc.frame.stored_len) / 2);
    let damaged = fx.files_where(|l| l.pack == loc.pack && l.frame.offset == loc.frame.offset);
    let text = check_reports(&fx, true, &loc.pack.to_hex(), &damaged);
    assert!(text.contains(&format!("arc repair packs {}", loc.pack)), "no hint\n{text}");

    let hex = loc.pack.to_hex();
    let out = fx.env.arc().args(["repair", "packs", &hex[..16]]).run().success();
    let text = out.stdout_str();
    assert!(text.contains("took 1 damaged pack(s) out of the index"), "{}", out.describe());
    assert!(text.contains("arc backup --force-read"), "no hint\n{}", out.describe());
    let mut want = BTreeSet::new();
    for p in &damaged {
        for (i, snap) in fx.snaps.iter().enumerate() {
            if i == 1 || *p != fx.later() {
                want.insert((snap.clone(), p.clone()));
            }
        }
    }
    assert_eq!(affected(&text), want, "repair names other files than the damage\n{}", out.describe());
    assert!(fx.env.repo.join("quarantine").join(&hex).exists(), "the damaged pack is not kept");
    assert!(!fx.pack_path(&loc.pack).exists());
    let again = fx.env.arc().args(["--json", "repair", "packs"]).run().success().json();
    assert_eq!(again["packs_repaired"], serde_json::json!([]), "{again}");

    // The other files of the pack were salvaged; only the damage is lost.
    for i in 0..2 {
        let lost = restore_checked(&fx, i, |p| damaged.contains(p));
        assert_eq!(lost, fx.files_of(i).iter().filter(|p| damaged.contains(**p)).count());
    }
    check_reports(&fx, false, "is not in any index file", &damaged);
    fx.env.backup(["--force-read".as_ref(), fx.src.as_os_str()]);
    check_passes(&fx, true);
    for i in 0..2 {
        assert_eq!(restore_checked(&fx, i, |_| false), 0);
    }
}

/// After `repair index` dropped a lost pack, a plain backup reads the
/// unchanged files whose chunks went with it again (and says so), rather
/// than taking their chunk lists from the parent: the new snapshot, and
/// the older ones sharing the data, restore whole.
#[test]
fn plain_backup_after_repair_index_reads_files_with_dropped_chunks_again() {
    let fx = setup();
    let loc = fx.files[&fx.src.join("big/f1.bin")][0];
    fs::remove_file(fx.pack_path(&loc.pack)).unwrap();
    let damaged = fx.files_where(|l| l.pack == loc.pack);
    fx.env.arc().args(["repair", "index"]).run().success();
    let out = fx.env.arc().arg("backup").arg(&fx.src).run().success();
    let note = format!("read {} unchanged file(s) again", damaged.len());
    assert!(out.stdout_str().contains(&note), "{note:?} missing\n{}", out.describe());
    check_passes(&fx, true);
    for i in 0..2 {
        assert_eq!(restore_checked(&fx, i, |_| false), 0);
    }
}

/// A pack id that names no pack: one line naming it, exit 1, nothing
/// written.
#[test]
fn repair_packs_of_an_unknown_pack_changes_nothing() {
    let fx = setup();
    // The repository's files; the index database beside them is a cache.
    let files = || -> Vec<PathBuf> {
        let cache = |p: &PathBuf| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("index."));
        files_under(&fx.env.repo).into_iter().filter(|p| !cache(p)).collect()
    };
    let before = files();
    let out = fx.env.arc().args(["repair", "packs", "00c0ffee"]).run().code_is(1);
    let err = out.stderr_str();
    assert!(err.contains("00c0ffee") && err.lines().count() == 1, "{}", out.describe());
    assert_eq!(files(), before);
}

#[test]
fn damaged_or_missing_tree_costs_only_its_directory() {
    // Runs: a flipped bit in the frame of many/'s tree, and the tree pack
    // of the root gone (everything lost, still a clean report).
    let fx = setup();
    let many = fx.src.join("many");
    let (tree, loc) = fx.biggest_part_of(&many);
    assert!(loc.frame.raw_len as usize == loc.raw_len as usize, "many/'s biggest tree blob shares its frame");
    flip_byte(&fx.pack_path(&loc.pack), loc.frame.offset + u64::from(loc.frame.stored_len) / 2);
    check_reports(&fx, false, &format!("tree {tree}"), &BTreeSet::from([many.clone()]));
    check_reports(&fx, true, &format!("tree {tree}"), &BTreeSet::from([many.clone()]));
    for i in 0..2 {
        let lost = restore_checked(&fx, i, |p| p.starts_with(&many));
        assert_eq!(lost, MANY);
    }

    let fx = setup();
    let (root, loc) = fx.tree_of(Path::new("/"));
    fs::remove_file(fx.pack_path(&loc.pack)).unwrap();
    let out = fx.env.arc().arg("check").run().code_is(1);
    let text = out.stdout_str();
    assert!(text.contains(&format!("pack {} is missing", loc.pack)), "{}", out.describe());
    assert!(text.contains(&root.to_string()), "the root tree is not named\n{}", out.describe());
    let out = fx.env.arc().args(["restore", &fx.snaps[1], "--target"]).arg(fx.env.path("r")).run().code_is(1);
    assert!(out.stderr_str().contains(&root.to_string()), "{}", out.describe());
}

#[test]
fn damaged_snapshot_file_is_named_and_the_others_still_check_and_restore() {
    // Runs: a flipped byte, a truncated file, an empty file.
    for run in 0..3 {
        let fx = setup();
        let mut victim = None;
        for p in fx.env.snapshot_files() {
            if p.file_name().unwrap().to_string_lossy().starts_with(&fx.snaps[0]) {
                victim = Some(p);
            }
        }
        let victim = victim.expect("first snapshot's file");
        let len = fs::metadata(&victim).unwrap().len();
        match run {
            0 => flip_byte(&victim, len / 2),
            1 => fs::OpenOptions::new().write(true).open(&victim).unwrap().set_len(len - 10).unwrap(),
            _ => fs::write(&victim, b"").unwrap(),
        }
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        let out = fx.env.arc().arg("check").run().code_is(1);
        assert!(out.stdout_str().contains(&name), "check does not name the snapshot file\n{}", out.describe());
        assert!(out.stdout_str().contains("checked 1 snapshots"), "{}", out.describe());
        assert!(affected(&out.stdout_str()).is_empty(), "{}", out.describe());
        // The other snapshot restores by id. `latest` is refused: the
        // damaged file might be the newest snapshot, and silently taking an
        // older one would restore the wrong state.
        assert_eq!(restore_checked(&fx, 1, |_| false), 0);
        let out = fx.env.arc().args(["restore", "latest", "--target"]).arg(fx.env.path("latest")).run().failure();
        assert!(out.one_line_error().contains(&name), "{}", out.describe());
        // A backup still works (the damaged snapshot cannot be its parent).
        fx.env.backup([&fx.src]);
        // The damaged one is refused in one line naming it.
        let out = fx.env.arc().args(["restore", &fx.snaps[0], "--target"]).arg(fx.env.path("r0")).run().failure();
        assert!(out.one_line_error().contains(&name), "{}", out.describe());
        let out = fx.env.arc().arg("snapshots").run().code_is(1);
        assert!(
            out.stdout_str().contains(&fx.snaps[1]),
            "`arc snapshots` hides the intact snapshot\n{}",
            out.describe()
        );
        assert!(out.stderr_str().contains(&name), "`arc snapshots` does not name the damaged one\n{}", out.describe());
    }
}

#[test]
fn damaged_or_missing_index_is_reported_and_rebuilt_by_repair_index() {
    // Runs: a flipped byte in an index file; one index file deleted; every
    // index file and the index database deleted.
    for run in 0..3 {
        let fx = setup();
        let index_files = files_under(&fx.env.repo.join("index"));
        assert!(index_files.len() >= 2, "expected an index file per backup");
        let victim = index_files.iter().max_by_key(|p| fs::metadata(p).unwrap().len()).unwrap().clone();
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        match run {
            0 => flip_byte(&victim, fs::metadata(&victim).unwrap().len() / 2),
            1 => fs::remove_file(&victim).unwrap(),
            _ => {
                for f in &index_files {
                    fs::remove_file(f).unwrap();
                }
                fs::remove_file(fx.env.index_db()).unwrap();
            }
        }
        let out = fx.env.arc().arg("check").run().code_is(1);
        let text = out.stdout_str();
        if run == 0 {
            assert!(text.contains(&name) && text.contains("repair index"), "{}", out.describe());
        }
        // Whatever the index lost, its blobs are reported as unindexed
        // with the files they belong to.
        assert!(!affected(&text).is_empty() || run == 0, "{}", out.describe());
        if run == 0 {
            // With the database gone too, commands that need the index
            // refuse in one line that says how to rebuild it.
            fs::remove_file(fx.env.index_db()).unwrap();
            let out = fx.env.arc().args(["restore", &fx.snaps[1], "--target"]).arg(fx.env.path("r")).run().failure();
            let line = out.one_line_error();
            assert!(line.contains(&name) && line.contains("arc repair index"), "{line}");
        }
        fx.env.arc().args(["repair", "index"]).run().success();
        check_passes(&fx, true);
        for i in 0..2 {
            assert_eq!(restore_checked(&fx, i, |_| false), 0);
        }
    }
}

#[test]
fn damaged_or_deleted_index_database_is_rebuilt_transparently() {
    // Runs: deleted, overwritten with garbage, truncated to half.
    for run in 0..3 {
        let fx = setup();
        let before = fx.env.arc().args(["list", "blobs"]).run().success().stdout_str();
        let db = fx.env.index_db();
        let len = fs::metadata(&db).unwrap().len();
        match run {
            0 => fs::remove_file(&db).unwrap(),
            1 => fs::write(&db, vec![0xa5; 64 * 1024]).unwrap(),
            _ => fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(len / 2).unwrap(),
        }
        check_passes(&fx, false);
        let after = fx.env.arc().args(["list", "blobs"]).run().success().stdout_str();
        assert!(after == before, "the rebuilt index database differs from the original");
        assert_eq!(restore_checked(&fx, 1, |_| false), 0);
    }
}

#[test]
fn damaged_config_fails_every_command_in_one_line() {
    // Runs: flipped byte, truncated, deleted.
    for run in 0..3 {
        let fx = setup();
        let config = fx.env.repo.join("config");
        let len = fs::metadata(&config).unwrap().len();
        match run {
            0 => flip_byte(&config, len / 2),
            1 => fs::OpenOptions::new().write(true).open(&config).unwrap().set_len(len - 5).unwrap(),
            _ => fs::remove_file(&config).unwrap(),
        }
        let target = fx.env.path("r");
        for args in [vec!["check"], vec!["snapshots"], vec!["restore", "latest", "--target", target.to_str().unwrap()]]
        {
            let out = fx.env.arc().args(&args).run().failure();
            assert_eq!(out.code(), Some(1), "{}", out.describe());
            let line = out.one_line_error();
            assert!(line.contains("config"), "{args:?}: the error does not name the config: {line}");
        }
        let out = fx.env.arc().arg("backup").arg(&fx.src).run().failure();
        assert!(out.one_line_error().contains("config"));
        assert!(!target.exists() || fs::read_dir(&target).unwrap().next().is_none());
    }
}

#[test]
fn damaged_lock_file_is_respected_named_and_removable() {
    // Runs: garbage, a truncated real lock.
    for run in 0..2 {
        let fx = setup();
        let locks = fx.env.repo.join("locks");
        let name = "ab".repeat(32);
        let bytes = if run == 0 {
            b"not a lock".to_vec()
        } else {
            // A real lock of a live process (this test), cut short.
            let out = fx.env.arc().args(["list", "locks"]).run().success();
            assert!(out.stdout_str().trim().is_empty());
            let lock = arc_engine::format::lock::LockFile {
                exclusive: false,
                host: arc_engine::lock::hostname(),
                pid: std::process::id(),
                username: "test".into(),
                time: chrono_now(),
                refreshed: chrono_now(),
                operation: "test".into(),
            }
            .encode();
            lock[..lock.len() - 7].to_vec()
        };
        fs::write(locks.join(&name), bytes).unwrap();
        for args in [vec!["check"], vec!["backup", fx.src.to_str().unwrap()]] {
            let out = fx.env.arc().args(&args).run().failure();
            let line = out.one_line_error();
            assert!(line.contains(&name) && line.contains("arc unlock"), "{args:?}: {line}");
        }
        assert_eq!(fx.env.snapshot_files().len(), 2, "a backup went ahead past the damaged lock");
        // SPEC.md section 12: `unlock` removes stale and unreadable locks.
        fx.env.arc().arg("unlock").run().success().stdout_contains("removed 1 lock(s)");
        assert!(files_under(&locks).is_empty());
        check_passes(&fx, false);
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
