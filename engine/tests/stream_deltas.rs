//! Stream deltas (format-spec/v2/streams.md section 4, feature
//! `stream-deltas`): a dump whose rows change here and there is stored, on
//! day 2, as zstd deltas against day 1's chunks; every reader gets the
//! bytes back, deltas are one step deep, a damaged base is reported naming
//! the chunk, prune keeps a base while a delta needs it, copy stores
//! plainly, and a repository made before the feature (or a backup told
//! not to) never gets a delta.

use std::path::Path;

mod common;

use arc_engine::crypto::ContentKeys;
use arc_engine::format::config::FEATURE_STREAM_DELTAS;
use arc_engine::format::pack::FrameCodec;
use arc_engine::ops::backup::{backup, BackupOptions, BackupResult, StreamSource};
use arc_engine::ops::check::{check, CheckOptions};
use arc_engine::ops::copy::{copy, CopyOptions};
use arc_engine::ops::forget::{forget, ForgetOptions};
use arc_engine::ops::prune::{prune, PruneOptions};
use arc_engine::ops::restore::{restore, RestoreOptions};
use arc_engine::progress::NoProgress;
use arc_engine::repo::InitOptions;
use arc_engine::{Error, Id, Repository};
use zeroize::Zeroizing;

/// A pg_dump-like table of `rows` rows; `day` > 0 updates 1 % of them at
/// places spread over the whole table (row `i` when `i * 37 % 100 == day`)
/// and appends `day * rows / 200` rows.
fn dump(rows: usize, day: usize) -> Vec<u8> {
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"];
    let status = ["new", "paid", "shipped", "delivered", "returned"];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = b"COPY public.orders (id, customer, email, amount, status, note) FROM stdin;\n".to_vec();
    for i in 0..rows + day * rows / 200 {
        let (c, w1, w2, amount, st) = (next() % 200_000, next() % 10, next() % 10, next() % 5_000_000, next() % 5);
        let changed = day > 0 && i < rows && (i * 37) % 100 == day;
        let (amount, st) = if changed { (amount / 3 + day as u64, (st + 1) % 5) } else { (amount, st) };
        out.extend_from_slice(
            format!(
                "{i}\t{c}\t{}.{}@example.com\t{amount}\t{}\t{} {}\n",
                words[w1 as usize], words[w2 as usize], status[st as usize], words[w2 as usize], words[w1 as usize]
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\\.\n");
    out
}

const ROWS: usize = 60_000;

fn stream(data: Vec<u8>) -> StreamSource {
    StreamSource { name: "db.sql".into(), reader: Box::new(std::io::Cursor::new(data)), allow_empty: false, stop: None }
}

fn back_up(repo: &Repository, data: Vec<u8>) -> BackupResult {
    backup(repo, BackupOptions { streams: vec![stream(data)], ..Default::default() }, &NoProgress).unwrap()
}

/// A repository with pinned content keys. Each `init` draws its own, which
/// move the stream's cuts; the tests below pin them so that their figures
/// repeat, and `a_change_that_kills_a_cut_of_day_1_costs_what_it_changes`
/// runs the gear seeds that once cost most.
fn new_repo(dir: &Path) -> Repository {
    new_repo_seeded(dir, 3)
}

fn new_repo_seeded(dir: &Path, gear_seed: u64) -> Repository {
    let content_keys =
        ContentKeys { chunk_id: Zeroizing::new([1; 32]), tree_split: Zeroizing::new([2; 32]), gear_seed };
    Repository::init_local(&dir.join("repo"), &InitOptions { content_keys: Some(content_keys), ..Default::default() })
        .unwrap()
}

/// The stream's chunk ids in snapshot `tree`.
fn chunks(repo: &Repository, tree: &Id) -> Vec<Id> {
    repo.lookup_name(tree, b"db.sql").unwrap().expect("db.sql in the snapshot").chunks
}

/// The stream's bytes as the blob reader (restore, cat, the mount) gets them.
fn read_stream(repo: &Repository, tree: &Id) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for c in chunks(repo, tree) {
        out.extend_from_slice(&repo.read_blob(&c)?);
    }
    Ok(out)
}

/// (chunk, its base) of every chunk of the snapshot stored as a delta.
fn deltas(repo: &Repository, tree: &Id) -> Vec<(Id, Id)> {
    let mut out = Vec::new();
    for c in chunks(repo, tree) {
        let loc = repo.lookup_blob(&c).unwrap().unwrap();
        if loc.frame.codec == FrameCodec::Delta {
            out.push((c, repo.delta_base(&loc.pack, &loc.frame).unwrap()));
        }
    }
    out
}

fn stored_bytes(dir: &Path) -> u64 {
    walk_size(&dir.join("repo/data"))
}

fn walk_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| if e.file_type().unwrap().is_dir() { walk_size(&e.path()) } else { e.metadata().unwrap().len() })
            .sum()
    })
}

fn assert_check_passes(repo: &Repository) {
    let report = check(repo, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.ok(), "check --read-data: {:?}", report.errors);
}

#[test]
fn a_changed_dump_is_stored_as_deltas_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = new_repo(tmp.path());
    let (day1, day2) = (dump(ROWS, 0), dump(ROWS, 1));
    let first = back_up(&repo, day1.clone());
    let after1 = stored_bytes(tmp.path());
    let second = back_up(&repo, day2.clone());
    let added = stored_bytes(tmp.path()) - after1;
    let d = deltas(&repo, &second.snapshot.tree);
    let n = chunks(&repo, &second.snapshot.tree).len();
    // Every chunk of day 2 holds a changed row; all but the appended tail
    // pair with day 1's chunk at the same place.
    assert!(d.len() * 10 >= n * 7, "{} of {n} chunks stored as deltas", d.len());
    assert!(added * 10 < after1, "day 2 added {added} bytes against day 1's {after1}");
    // The blob ids are those of the plaintext: dedup and chunk lists as always.
    for (c, _) in &d {
        assert_eq!(repo.blob_id(&repo.read_blob(c).unwrap()), *c);
    }
    let reopened = Repository::open_local(&tmp.path().join("repo")).unwrap();
    assert_eq!(read_stream(&reopened, &first.snapshot.tree).unwrap(), day1);
    assert_eq!(read_stream(&reopened, &second.snapshot.tree).unwrap(), day2);
    // restore, through the same reader and a fresh process's view.
    let snaps = reopened.snapshots().unwrap();
    let target = tmp.path().join("restore");
    restore(&reopened, &snaps[1], &RestoreOptions { target: target.clone(), ..Default::default() }, &NoProgress)
        .unwrap();
    assert_eq!(std::fs::read(target.join("db.sql")).unwrap(), day2);
    assert_check_passes(&reopened);
    // The same dump again dedups completely, deltas included.
    let again = back_up(&reopened, day2);
    assert_eq!(chunks(&reopened, &again.snapshot.tree), chunks(&reopened, &second.snapshot.tree));
    assert!(again.snapshot.summary.bytes_added < 4096, "{:?}", again.snapshot.summary);
}

/// With these gear seeds (of 1-30, for the keys of `new_repo_seeded`) a
/// row changed on day 2 falls in the chunker's window before one of day 1's
/// cuts and kills it; when day 2 cut by content alone, its chunk there
/// spanned two of day 1's, a delta against one of them covered half, and
/// day 2 added 31-101 KB where the other seeds add 18-20 KB. Day 2 now cuts
/// where day 1 did (streams.md §4.2, "Cuts"): the same bound for all.
#[test]
fn a_change_that_kills_a_cut_of_day_1_costs_what_it_changes() {
    let (day1, day2) = (dump(ROWS, 0), dump(ROWS, 1));
    for seed in [3, 10, 12, 16, 19, 22] {
        let tmp = tempfile::tempdir().unwrap();
        let repo = new_repo_seeded(tmp.path(), seed);
        back_up(&repo, day1.clone());
        let after1 = stored_bytes(tmp.path());
        let second = back_up(&repo, day2.clone());
        let added = stored_bytes(tmp.path()) - after1;
        eprintln!("gear seed {seed}: day 1 {after1}, day 2 adds {added}");
        assert!(added * 40 < after1, "gear seed {seed}: day 2 added {added} bytes against day 1's {after1}");
        assert_eq!(read_stream(&repo, &second.snapshot.tree).unwrap(), day2);
    }
}

/// A pgbench-like table: rows of mostly padding (pgbench_accounts' filler
/// is 84 spaces), then a history table. `day` 1 updates 1 % of the
/// accounts, which PostgreSQL moves to the end of the table (a non-HOT
/// update writes the new row version where there is room), and appends
/// their history rows.
fn padded_dump(rows: usize, day: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let updated: Vec<(usize, i64)> = (0..rows / 100 * day)
        .map(|_| ((next() % rows as u64) as usize + 1, (next() % 10_000) as i64 - 5_000))
        .collect();
    let moved: std::collections::HashMap<usize, i64> = updated.iter().copied().collect();
    let row = |aid: usize, balance: i64| format!("{aid}\t{}\t{balance}\t{:84}\n", (aid - 1) / 100_000 + 1, "");
    let mut out = b"COPY public.pgbench_accounts (aid, bid, abalance, filler) FROM stdin;\n".to_vec();
    for aid in 1..=rows {
        if !moved.contains_key(&aid) {
            out.extend_from_slice(row(aid, 0).as_bytes());
        }
    }
    let mut seen = std::collections::HashSet::new();
    for &(aid, _) in &updated {
        if seen.insert(aid) {
            out.extend_from_slice(row(aid, moved[&aid]).as_bytes());
        }
    }
    out.extend_from_slice(b"\\.\n\nCOPY public.pgbench_history (tid, bid, aid, delta, mtime, filler) FROM stdin;\n");
    for (i, &(aid, delta)) in updated.iter().enumerate() {
        let line = format!(
            "{}\t1\t{aid}\t{delta}\t2026-12-07 01:{:02}:{:02}.{:06}\t\\N\n",
            i % 10 + 1,
            i / 60 % 60,
            i % 60,
            i
        );
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\\.\n");
    out
}

/// A stream that drifts against its parent under chunks cut at the
/// maximum (padding leaves FastCDC's hash constant, and the rows moved to
/// the end shorten the table before them): each day-2 chunk cut by
/// content alone covered the tail of one day-1 chunk and the head of the
/// next, so its delta covered only part of it, and day 2 stored nearly as
/// much as without deltas. Cut where day 1 cut, it costs what changed.
#[test]
fn a_drifting_padded_dump_stores_what_changed() {
    const ACCOUNTS: usize = 100_000;
    let (day1, day2) = (padded_dump(ACCOUNTS, 0), padded_dump(ACCOUNTS, 1));
    let added = |no_stream_deltas: bool| {
        let tmp = tempfile::tempdir().unwrap();
        let repo = new_repo(tmp.path());
        back_up(&repo, day1.clone());
        let after1 = stored_bytes(tmp.path());
        let opts = BackupOptions { streams: vec![stream(day2.clone())], no_stream_deltas, ..Default::default() };
        let second = backup(&repo, opts, &NoProgress).unwrap();
        assert_eq!(read_stream(&repo, &second.snapshot.tree).unwrap(), day2);
        stored_bytes(tmp.path()) - after1
    };
    let (plain, with_deltas) = (added(true), added(false));
    eprintln!("padded dump of {} bytes: day 2 adds {plain} plainly, {with_deltas} with deltas", day2.len());
    assert!(with_deltas * 3 < plain, "day 2 added {with_deltas} bytes with deltas, {plain} without");
}

#[test]
fn a_delta_of_a_delta_is_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = new_repo(tmp.path());
    let days: Vec<Vec<u8>> = (0..4).map(|d| dump(ROWS, d)).collect();
    let snaps: Vec<BackupResult> = days.iter().map(|d| back_up(&repo, d.clone())).collect();
    let day1: std::collections::HashSet<Id> = chunks(&repo, &snaps[0].snapshot.tree).into_iter().collect();
    for (i, s) in snaps.iter().enumerate().skip(1) {
        let d = deltas(&repo, &s.snapshot.tree);
        for (_, base) in &d {
            let loc = repo.lookup_blob(base).unwrap().expect("base indexed");
            assert_ne!(loc.frame.codec, FrameCodec::Delta, "day {}: base {base} is itself a delta", i + 1);
        }
        // Days 3 and 4 pair with day 2's delta chunks, whose own plain base
        // (a day-1 chunk) they are stored against.
        let on_day1 = d.iter().filter(|(_, b)| day1.contains(b)).count();
        assert!(on_day1 * 10 >= d.len() * 7, "day {}: {on_day1} of {} deltas against day 1", i + 1, d.len());
    }
    for (s, d) in snaps.iter().zip(&days) {
        assert_eq!(&read_stream(&repo, &s.snapshot.tree).unwrap(), d);
    }
    assert_check_passes(&repo);
}

/// Flips a byte in the middle of a stored frame.
fn damage(repo_dir: &Path, pack: &Id, offset: u64, len: u32) {
    let name = pack.to_hex();
    let path = repo_dir.join("data").join(&name[..2]).join(&name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(offset + u64::from(len) / 2) as usize] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_damaged_or_missing_base_is_reported_naming_the_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = new_repo(tmp.path());
    back_up(&repo, dump(ROWS, 0));
    let second = back_up(&repo, dump(ROWS, 1));
    let (chunk, base) = deltas(&repo, &second.snapshot.tree)[0];
    let base_loc = repo.lookup_blob(&base).unwrap().unwrap();
    damage(&tmp.path().join("repo"), &base_loc.pack, base_loc.frame.offset, base_loc.frame.stored_len);
    let fresh = Repository::open_local(&tmp.path().join("repo")).unwrap();
    match fresh.read_blob(&chunk) {
        Err(e @ Error::DeltaBase { .. }) => {
            let Error::DeltaBase { chunk: c, base: b, .. } = &e else { unreachable!() };
            assert_eq!((*c, *b), (chunk, base));
            let msg = e.to_string();
            assert!(msg.contains(&chunk.to_hex()) && msg.contains(&base.to_hex()), "{msg}");
        }
        other => panic!("expected a DeltaBase error, got {:?}", other.map(|b| b.len())),
    }
    let report = check(&fresh, &CheckOptions { read_data: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(!report.ok());
    assert!(
        report.errors.iter().any(|e| e.message.contains(&chunk.to_hex()) && e.message.contains(&base.to_hex())),
        "check does not name the delta chunk and its base: {:?}",
        report.errors
    );
    // Gone altogether: the base's pack deleted.
    let name = base_loc.pack.to_hex();
    std::fs::remove_file(tmp.path().join("repo/data").join(&name[..2]).join(&name)).unwrap();
    let fresh = Repository::open_local(&tmp.path().join("repo")).unwrap();
    let err = fresh.read_blob(&chunk).unwrap_err();
    assert!(matches!(err, Error::DeltaBase { .. }), "{err}");
    assert!(err.to_string().contains(&chunk.to_hex()), "{err}");
}

#[test]
fn prune_keeps_a_base_while_a_delta_needs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = new_repo(tmp.path());
    let first = back_up(&repo, dump(ROWS, 0));
    let day2 = dump(ROWS, 1);
    let second = back_up(&repo, day2.clone());
    let before = deltas(&repo, &second.snapshot.tree);
    assert!(!before.is_empty());
    // The snapshot that introduced the bases goes; every pack with
    // anything unused is rewritten at once.
    forget(&repo, &ForgetOptions { ids: vec![first.snapshot_id], ..Default::default() }).unwrap();
    let report =
        prune(&repo, &PruneOptions { max_unused: 0.0, instant: true, ..Default::default() }, &NoProgress).unwrap();
    assert!(report.packs_deleted > 0, "prune freed nothing: {report:?}");
    let fresh = Repository::open_local(&tmp.path().join("repo")).unwrap();
    assert_eq!(read_stream(&fresh, &second.snapshot.tree).unwrap(), day2);
    // Repacked deltas stay deltas, against the same bases.
    let mut after = deltas(&fresh, &second.snapshot.tree);
    let mut before = before;
    after.sort();
    before.sort();
    assert_eq!(after, before);
    assert_check_passes(&fresh);
    // Once no snapshot needs the deltas, their bases go too.
    forget(&fresh, &ForgetOptions { ids: vec![second.snapshot_id], ..Default::default() }).unwrap();
    prune(&fresh, &PruneOptions { max_unused: 0.0, instant: true, ..Default::default() }, &NoProgress).unwrap();
    for (_, base) in &before {
        assert!(fresh.lookup_blob(base).unwrap().is_none(), "base {base} outlived its last delta");
    }
}

#[test]
fn copy_stores_deltas_plainly_in_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let src = new_repo(tmp.path());
    back_up(&src, dump(ROWS, 0));
    let day2 = dump(ROWS, 1);
    let second = back_up(&src, day2.clone());
    assert!(!deltas(&src, &second.snapshot.tree).is_empty());
    let dst = Repository::init_local(&tmp.path().join("target"), &InitOptions::default()).unwrap();
    let report =
        copy(&src, &dst, &CopyOptions { snapshots: vec![second.snapshot_id], ..Default::default() }, &NoProgress)
            .unwrap();
    let dst = Repository::open_local(&tmp.path().join("target")).unwrap();
    let copied = dst.load_snapshot(&report.copied[0].target).unwrap();
    assert_eq!(read_stream(&dst, &copied.file.tree).unwrap(), day2);
    assert!(deltas(&dst, &copied.file.tree).is_empty());
    assert_check_passes(&dst);
}

/// Features are set at `init` only (streams.md §4.1): a new repository
/// lists `stream-deltas` and gets deltas; one made before the feature (the
/// frozen repo-v2-split, features trees-v2 and index-v2) gets the same
/// series stored plainly, its config untouched, readable by the arcs that
/// made it; and `no_stream_deltas` (`backup --no-stream-deltas`) stores
/// plainly in a repository that has the feature.
#[test]
fn only_a_repository_made_with_the_feature_gets_delta_frames() {
    use arc_engine::format::config::{DEFAULT_FEATURES, KNOWN_FEATURES};
    assert!(KNOWN_FEATURES.contains(&FEATURE_STREAM_DELTAS) && DEFAULT_FEATURES.contains(&FEATURE_STREAM_DELTAS));
    let (day1, day2) = (dump(ROWS, 0), dump(ROWS, 1));
    let tmp = tempfile::tempdir().unwrap();

    let repo = new_repo(tmp.path());
    assert!(repo.config().has_feature(FEATURE_STREAM_DELTAS), "init lists the feature");
    back_up(&repo, day1.clone());
    let with = back_up(&repo, day2.clone());
    assert!(!deltas(&repo, &with.snapshot.tree).is_empty(), "a repository with the feature gets deltas");

    let old_dir = tmp.path().join("old");
    common::copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors/repo-v2-split"), &old_dir);
    let config_before = std::fs::read(old_dir.join("config")).unwrap();
    let pw = || Ok(zeroize::Zeroizing::new("arc frozen repo-v2-split".to_string()));
    let old = Repository::open_local_with(&old_dir, Some(&pw)).unwrap();
    assert!(!old.config().has_feature(FEATURE_STREAM_DELTAS) && !old.writes_stream_deltas());
    back_up(&old, day1);
    let plain = back_up(&old, day2.clone());
    assert!(deltas(&old, &plain.snapshot.tree).is_empty(), "a repository without the feature got a delta frame");
    assert_eq!(std::fs::read(old_dir.join("config")).unwrap(), config_before, "the config is never rewritten");
    assert_eq!(read_stream(&old, &plain.snapshot.tree).unwrap(), day2);
    assert_check_passes(&old);

    // Turned off for one backup: the next day, every chunk changed, is
    // stored plainly (no base is read).
    let day3 = dump(ROWS, 2);
    let opts = BackupOptions { streams: vec![stream(day3.clone())], no_stream_deltas: true, ..Default::default() };
    let off = backup(&repo, opts, &NoProgress).unwrap();
    assert!(deltas(&repo, &off.snapshot.tree).is_empty(), "--no-stream-deltas wrote a delta frame");
    assert_eq!(read_stream(&repo, &off.snapshot.tree).unwrap(), day3);
}
