//! The write ordering that makes a committed snapshot survive a power cut
//! (format-spec/SPEC.md, 13.3), checked on the real system calls: backup,
//! prune and forget run under `strace`, and the order of their fsyncs,
//! renames and unlinks is compared with the rules.
//!
//! strace is required (./test.sh installs it): without it these tests fail
//! under CI and are reported as skipped otherwise, never passed unchecked.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::util::*;

/// One durable system call that succeeded, in completion order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    /// fsync or fdatasync of the file or directory at this path.
    Sync(PathBuf),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
    Mkdir(PathBuf),
}

fn strace_bin() -> PathBuf {
    which("strace").unwrap_or_else(|| {
        panic!("strace is not installed: the durability tests need it (apt-get install strace; .ci/run installs it)")
    })
}

/// Runs `arc ARGS` (with `--repo repo`) under strace and returns its
/// durable system calls in the order they completed.
fn traced(env: &TestEnv, repo: &Path, args: &[&str]) -> Vec<Ev> {
    let log = env.path("strace.log");
    let _ = fs::remove_file(&log);
    let out = TestCommand::new(strace_bin())
        // -f: the uploader threads; -y: print the path of every fd.
        .args(["-f", "-qq", "-y", "-e", "signal=none", "-o"])
        .arg(&log)
        .args(["-e", "trace=fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat"])
        .arg(arc_bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("HOME", &env.home)
        .env("XDG_CACHE_HOME", env.home.join(".cache"))
        .env("XDG_CONFIG_HOME", env.home.join(".config"))
        .env("ARC_PASSWORD", TEST_PASSWORD)
        .env_remove("ARC_REPO")
        .run();
    assert!(out.status.success(), "arc under strace failed\n{}", out.describe());
    let text = fs::read_to_string(&log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
    let evs = parse_strace(&text);
    assert!(!evs.is_empty(), "strace recorded no durable call:\n{text}");
    evs
}

/// Parses `strace -f -y` output. A call interrupted by another thread's is
/// printed as `pid name(args <unfinished ...>` and completed later by
/// `pid <... name resumed>) = result`; it counts where it completed.
fn parse_strace(text: &str) -> Vec<Ev> {
    let mut pending: HashMap<&str, String> = HashMap::new();
    let mut evs = Vec::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else { continue };
        let rest = rest.trim_start();
        let full = if let Some(call) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid, call.to_string());
            continue;
        } else if rest.starts_with("<...") {
            let Some((_, tail)) = rest.split_once("resumed>") else { continue };
            match pending.remove(pid) {
                Some(head) => head + tail,
                None => continue,
            }
        } else {
            rest.to_string()
        };
        let Some((name, args)) = full.split_once('(') else { continue };
        let Some((_, result)) = full.rsplit_once(" = ") else { continue };
        if result.trim() != "0" {
            continue;
        }
        let quoted: Vec<PathBuf> = args.split('"').skip(1).step_by(2).map(PathBuf::from).collect();
        let fd_path = || args.split_once('<').and_then(|(_, p)| p.split_once('>')).map(|(p, _)| PathBuf::from(p));
        let ev = match name {
            "fsync" | "fdatasync" => fd_path().map(Ev::Sync),
            "rename" | "renameat" | "renameat2" if quoted.len() >= 2 => {
                Some(Ev::Rename(quoted[0].clone(), quoted[1].clone()))
            }
            "unlink" | "unlinkat" if !quoted.is_empty() => Some(Ev::Unlink(quoted[0].clone())),
            "mkdir" | "mkdirat" if !quoted.is_empty() => Some(Ev::Mkdir(quoted[0].clone())),
            _ => None,
        };
        evs.extend(ev);
    }
    evs
}

/// What a path in the repository is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pack,
    Index,
    Snapshot,
    Lock,
    Other,
}

fn kind(repo: &Path, p: &Path) -> Kind {
    let Ok(rel) = p.strip_prefix(repo) else { return Kind::Other };
    match rel.components().next().and_then(|c| c.as_os_str().to_str()) {
        Some("data") => Kind::Pack,
        Some("index") => Kind::Index,
        Some("snapshots") => Kind::Snapshot,
        // A v2 session announces a running operation as a lock did.
        Some("locks") | Some("sessions") => Kind::Lock,
        _ => Kind::Other,
    }
}

/// A file put into the repository: where its rename and the fsync of its
/// directory are in the trace.
#[derive(Debug)]
struct Put {
    dest: PathBuf,
    kind: Kind,
    renamed: usize,
    durable: usize,
}

/// Checks the rule every put follows (SPEC 2.4): the temporary file is
/// fsynced before its rename, and the directory of the final name is
/// fsynced after it. Returns the puts in order.
#[track_caller]
fn puts(repo: &Path, evs: &[Ev]) -> Vec<Put> {
    let mut out = Vec::new();
    for (i, ev) in evs.iter().enumerate() {
        let Ev::Rename(from, to) = ev else { continue };
        // The rule is the repository's. The local cache
        // ($XDG_CACHE_HOME/arc: its CACHEDIR.TAG, cached snapshot files) is
        // verified on every read and rebuilt when damaged.
        if !to.starts_with(repo) {
            continue;
        }
        assert!(
            evs[..i].iter().any(|e| *e == Ev::Sync(from.clone())),
            "{} was renamed into place as {} without an fsync of it first",
            from.display(),
            to.display()
        );
        let dir = to.parent().unwrap().to_path_buf();
        let durable = evs[i + 1..].iter().position(|e| *e == Ev::Sync(dir.clone())).unwrap_or_else(|| {
            panic!("{} was renamed into place but its directory {} was not fsynced after", to.display(), dir.display())
        }) + i
            + 1;
        out.push(Put { dest: to.clone(), kind: kind(repo, to), renamed: i, durable });
    }
    out
}

/// Each unlink of a repository file is followed by an fsync of its
/// directory; returns (index in trace, kind, index of that fsync).
#[track_caller]
fn unlinks(repo: &Path, evs: &[Ev]) -> Vec<(usize, Kind, usize)> {
    let mut out = Vec::new();
    for (i, ev) in evs.iter().enumerate() {
        let Ev::Unlink(p) = ev else { continue };
        let k = kind(repo, p);
        if k == Kind::Other {
            continue;
        }
        let dir = p.parent().unwrap().to_path_buf();
        let synced = evs[i + 1..]
            .iter()
            .position(|e| *e == Ev::Sync(dir.clone()))
            .unwrap_or_else(|| panic!("{} was unlinked but {} was not fsynced after", p.display(), dir.display()))
            + i
            + 1;
        out.push((i, k, synced));
    }
    out
}

#[test]
fn backup_makes_packs_and_index_durable_before_the_snapshot_and_commits_with_it() {
    require!(Need::Program("strace", "strace"));
    let env = TestEnv::new();
    let repo = env.path("repo");
    env.arc_at(&repo).args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    for i in 0..6u64 {
        write_random_file(&src.join(format!("f{i}.bin")), MIB + i * 1000, 70 + i);
    }
    for i in 0..20u64 {
        write_random_file(&src.join(format!("small/s{i:02}.txt")), 2000 + i * 10, 90 + i);
    }
    let evs = traced(&env, &repo, &["backup", src.to_str().unwrap()]);
    let puts = puts(&repo, &evs);
    let of = |k: Kind| puts.iter().filter(|p| p.kind == k).collect::<Vec<_>>();
    let (packs, indexes, snaps) = (of(Kind::Pack), of(Kind::Index), of(Kind::Snapshot));
    eprintln!(
        "backup: {} durable calls; {} packs, {} index files, {} snapshot",
        evs.len(),
        packs.len(),
        indexes.len(),
        snaps.len()
    );
    assert!(packs.len() >= 6, "too few packs to say anything: {puts:#?}");
    assert!(!indexes.is_empty(), "no index file written: {puts:#?}");
    assert_eq!(snaps.len(), 1, "{puts:#?}");
    let snap = snaps[0];

    // Invariants 1-3 of SPEC 13: every pack is durable before an index
    // file lists it, and packs and index files are before the snapshot.
    for ix in &indexes {
        for p in packs.iter().filter(|p| p.renamed < ix.renamed) {
            assert!(
                p.durable < ix.renamed,
                "index file {} was renamed into place before the directory of pack {} was fsynced",
                ix.dest.display(),
                p.dest.display()
            );
        }
    }
    for p in packs.iter().chain(&indexes) {
        assert!(
            p.durable < snap.renamed,
            "{} was not durable (rename + directory fsync) before the snapshot's rename",
            p.dest.display()
        );
    }
    // The snapshot is the commit: nothing of the repository's content is
    // written after it (only the lock goes, and the index database cache
    // may be synced).
    for (i, ev) in evs.iter().enumerate().skip(snap.renamed + 1) {
        let touches = |p: &Path| matches!(kind(&repo, p), Kind::Pack | Kind::Index | Kind::Snapshot);
        match ev {
            Ev::Rename(_, to) if touches(to) => panic!("{} renamed after the snapshot (call {i})", to.display()),
            Ev::Unlink(p) if touches(p) => panic!("{} unlinked during a backup (call {i})", p.display()),
            _ => {}
        }
    }
    assert!(unlinks(&repo, &evs).iter().all(|(_, k, _)| *k == Kind::Lock));
}

/// Empty directories of the layout can be missing (a repository copied by
/// a tool that drops them); a put recreates them, and must make the new
/// directory's own name durable too, or a pack could vanish with it.
#[test]
fn backup_makes_recreated_directories_durable_before_the_snapshot() {
    require!(Need::Program("strace", "strace"));
    let env = TestEnv::new();
    let repo = env.path("repo");
    env.arc_at(&repo).args(["init", "--pack-size", "1M"]).run().success();
    for d in files_in_dir(&repo.join("data")) {
        fs::remove_dir(&d).unwrap_or_else(|e| panic!("remove {}: {e}", d.display()));
    }
    let src = env.path("src");
    for i in 0..3u64 {
        write_random_file(&src.join(format!("f{i}.bin")), MIB + i * 1000, 170 + i);
    }
    let evs = traced(&env, &repo, &["backup", src.to_str().unwrap()]);
    let puts = puts(&repo, &evs);
    let snap = puts.iter().find(|p| p.kind == Kind::Snapshot).expect("a snapshot").renamed;
    let mut recreated = 0;
    for (i, ev) in evs.iter().enumerate() {
        let Ev::Mkdir(dir) = ev else { continue };
        if kind(&repo, dir) != Kind::Pack {
            continue;
        }
        recreated += 1;
        let parent = Ev::Sync(dir.parent().unwrap().to_path_buf());
        assert!(
            evs[i + 1..snap].contains(&parent),
            "{} was recreated but its parent was not fsynced before the snapshot: {evs:#?}",
            dir.display()
        );
    }
    assert!(recreated >= 3, "expected the shard directories of 3+ packs to be recreated: {evs:#?}");
}

fn files_in_dir(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

#[test]
fn prune_makes_replacements_durable_before_it_deletes() {
    require!(Need::Program("strace", "strace"));
    let env = TestEnv::new();
    let repo = env.path("repo");
    env.arc_at(&repo).args(["init", "--pack-size", "1M"]).run().success();
    let src = env.path("src");
    // As in the disk-full prune test: a quarter of the first generation
    // stays live, so prune rewrites packs and deletes others.
    for g in 0..4u64 {
        for i in 0..40u64 {
            if g == 0 || i % 4 == g {
                write_random_file(&src.join(format!("f{i:02}.bin")), 60_000 + 1000 * g, 1000 * g + i);
            }
        }
        let time = format!("2024-06-{:02}T00:00:00Z", g + 1);
        env.arc_at(&repo).args(["backup", "--time", &time]).arg(&src).run().success();
    }
    env.arc_at(&repo).args(["forget", "--keep-last", "1"]).run().success();

    let evs = traced(&env, &repo, &["prune", "--instant"]);
    let puts = puts(&repo, &evs);
    let gone = unlinks(&repo, &evs);
    let new_packs: Vec<_> = puts.iter().filter(|p| p.kind == Kind::Pack).collect();
    let new_indexes: Vec<_> = puts.iter().filter(|p| p.kind == Kind::Index).collect();
    let old_indexes: Vec<_> = gone.iter().filter(|(_, k, _)| *k == Kind::Index).collect();
    let old_packs: Vec<_> = gone.iter().filter(|(_, k, _)| *k == Kind::Pack).collect();
    eprintln!(
        "prune: {} packs and {} index files written, {} index files and {} packs deleted",
        new_packs.len(),
        new_indexes.len(),
        old_indexes.len(),
        old_packs.len()
    );
    assert!(!new_packs.is_empty() && !new_indexes.is_empty() && !old_packs.is_empty() && !old_indexes.is_empty());

    // P2/P3: new packs and the index files listing them are durable before
    // the first deletion of an index file or pack.
    let first_delete = gone.iter().filter(|(_, k, _)| matches!(k, Kind::Pack | Kind::Index)).map(|g| g.0).min();
    let first_delete = first_delete.unwrap();
    for p in new_packs.iter().chain(&new_indexes) {
        assert!(p.durable < first_delete, "{} was not durable before prune deleted something", p.dest.display());
    }
    // P1: every index file that goes is gone (unlink + directory fsync)
    // before the first pack is deleted.
    let first_pack_delete = old_packs.iter().map(|g| g.0).min().unwrap();
    for (_, _, synced) in &old_indexes {
        assert!(*synced < first_pack_delete, "a pack was deleted before the index files listing it were gone");
    }
}

#[test]
fn forget_syncs_the_snapshots_directory_after_each_deletion() {
    require!(Need::Program("strace", "strace"));
    let env = TestEnv::new();
    let repo = env.path("repo");
    env.arc_at(&repo).arg("init").run().success();
    let src = env.path("src");
    write_random_file(&src.join("a.txt"), 1000, 1);
    for g in 0..4 {
        let time = format!("2024-07-{:02}T00:00:00Z", g + 1);
        env.arc_at(&repo).args(["backup", "--time", &time]).arg(&src).run().success();
    }
    let evs = traced(&env, &repo, &["forget", "--keep-last", "1"]);
    let gone = unlinks(&repo, &evs);
    let snaps: Vec<_> = gone.iter().filter(|(_, k, _)| *k == Kind::Snapshot).collect();
    assert_eq!(snaps.len(), 3, "{evs:#?}");
    // Each deletion is durable before the next one starts.
    for w in snaps.windows(2) {
        assert!(w[0].2 < w[1].0, "a snapshot was unlinked before the previous deletion was fsynced: {evs:#?}");
    }
    assert!(gone.iter().all(|(_, k, _)| matches!(k, Kind::Snapshot | Kind::Lock)), "forget deleted more: {evs:#?}");
}

/// The checker itself: a trace where a pack's directory is never fsynced,
/// or a rename comes before the fsync of its file, is caught. (Guards
/// against a parser that silently finds nothing to check.)
#[test]
fn the_trace_checker_catches_a_missing_fsync() {
    require!(Need::Program("strace", "strace"));
    let repo = Path::new("/r");
    let good = "\
1 fsync(3</r/tmp/aa.1.0> <unfinished ...>
2 fsync(4</r/tmp/bb.1.1>) = 0
1 <... fsync resumed>) = 0
1 rename(\"/r/tmp/aa.1.0\", \"/r/data/aa/aa\") = 0
1 fsync(3</r/data/aa>) = 0
2 rename(\"/r/tmp/bb.1.1\", \"/r/snapshots/bb\") = 0
2 fsync(4</r/snapshots>) = 0
2 unlink(\"/r/locks/cc\") = 0
2 fsync(4</r/locks>) = 0
";
    let evs = parse_strace(good);
    assert_eq!(evs.len(), 8, "{evs:#?}");
    let p = puts(repo, &evs);
    assert_eq!(p.iter().map(|p| p.kind).collect::<Vec<_>>(), [Kind::Pack, Kind::Snapshot]);
    assert!(p[0].durable < p[1].renamed);
    assert_eq!(unlinks(repo, &evs).len(), 1);

    let no_dir_sync = good.replace("1 fsync(3</r/data/aa>) = 0\n", "");
    let r = std::panic::catch_unwind(|| puts(repo, &parse_strace(&no_dir_sync)));
    assert!(r.is_err(), "a pack whose directory was not fsynced passed");
    let rename_first = good
        .replace("1 <... fsync resumed>) = 0\n", "")
        .replace("1 fsync(3</r/data/aa>) = 0\n", "1 fsync(3</r/data/aa>) = 0\n1 fsync(3</r/tmp/aa.1.0>) = 0\n");
    let r = std::panic::catch_unwind(|| puts(repo, &parse_strace(&rename_first)));
    assert!(r.is_err(), "a rename before the fsync of its file passed");
}
