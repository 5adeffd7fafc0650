//! `arc forget` (keep rules, ids, filters, --dry-run, --json), the "Kept
//! by" column of `arc snapshots`, and the exclusive lock of forget/prune.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Backs up a one-file tree once per time in `times` (content changes each
/// time); returns time -> snapshot id.
fn history(env: &TestEnv, times: &[&str], extra: &[&str]) -> BTreeMap<String, String> {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = BTreeMap::new();
    for (i, t) in times.iter().enumerate() {
        fs::write(src.join("v.txt"), format!("version {i}\n")).unwrap();
        let b = env.backup(extra.iter().copied().chain(["--time", t, src.to_str().unwrap()]));
        ids.insert(t.to_string(), jstr(&b, "snapshot_id").to_string());
    }
    ids
}

fn ids_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list:#}"))
        .iter()
        .map(|v| jstr(v, "id").to_string())
        .collect()
}

const TIMES: [&str; 10] = [
    "2024-01-05T10:00:00Z",
    "2024-01-15T10:00:00Z",
    "2024-01-25T10:00:00Z",
    "2024-02-05T10:00:00Z",
    "2024-02-12T10:00:00Z",
    "2024-02-13T10:00:00Z",
    "2024-02-13T20:00:00Z",
    "2024-02-14T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2024-03-01T09:00:00Z",
];

/// With --keep-daily 3 --keep-decades 3 --keep-monthly 2, newest first:
/// Mar 1 (day 1, decade Mar 1-10, month Mar), Feb 29 (day 2, decade Feb
/// 21-29, month Feb), Feb 14 10:00 (day 3, decade Feb 11-20); the rest is
/// either in a period already counted or past every count.
const KEEP: [(&str, &str); 3] =
    [("2024-03-01T09:00:00Z", "M D10 D"), ("2024-02-29T10:00:00Z", "M D10 D"), ("2024-02-14T10:00:00Z", "D10 D")];
const RULES: [&str; 6] = ["--keep-daily", "3", "--keep-decades", "3", "--keep-monthly", "2"];

#[test]
fn forget_dry_run_lists_exactly_what_goes_and_changes_nothing() {
    let env = TestEnv::new();
    env.init();
    let ids = history(&env, &TIMES, &[]);
    let keep: BTreeSet<String> = KEEP.iter().map(|(t, _)| ids[*t].clone()).collect();
    let remove: BTreeSet<String> = ids.values().filter(|id| !keep.contains(*id)).cloned().collect();
    assert_eq!(remove.len(), 7);

    // The "Kept by" column and its JSON twin.
    let table = env.arc().arg("snapshots").args(RULES).run().success();
    let out = table.stdout_str();
    assert!(out.lines().next().is_some_and(|h| h.contains("Kept by")), "no Kept by column\n{}", table.describe());
    for (t, labels) in KEEP {
        let short = &ids[t][..8];
        let line = out.lines().find(|l| l.starts_with(short)).unwrap_or_else(|| panic!("{short} not listed\n{out}"));
        assert!(line.trim_end().ends_with(labels), "{short} should be kept by {labels:?}: {line:?}");
    }
    let plain = env.arc().arg("snapshots").run().success();
    assert!(!plain.stdout_str().contains("Kept by"), "plain snapshots shows Kept by\n{}", plain.describe());
    let listed = env.arc().args(["--json", "snapshots"]).args(RULES).run().success().json();
    for s in listed.as_array().unwrap() {
        let kept_by: Vec<&str> = s["kept_by"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let id = jstr(s, "id");
        if id == ids["2024-03-01T09:00:00Z"] {
            assert_eq!(kept_by, ["monthly", "decades", "daily"]);
        }
        assert_eq!(kept_by.is_empty(), remove.contains(id), "{s:#}");
    }
    assert!(env.snapshots_json()[0].get("kept_by").is_none(), "plain --json listing has kept_by");

    // Dry run: the report names exactly the 7, and nothing changes.
    let before = repo_listing(&env.repo);
    let dry = env.arc().args(["--json", "forget", "--dry-run"]).args(RULES).run().success().json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(ids_of(&dry["removed"]), remove);
    let groups = dry["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{dry:#}");
    assert_eq!(ids_of(&groups[0]["keep"]), keep);
    assert_eq!(ids_of(&groups[0]["remove"]), remove);
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "forget --dry-run");
    let human = env.arc().args(["forget", "--dry-run"]).args(RULES).run().success();
    for id in &remove {
        assert!(human.stdout_str().contains(&id[..8]), "dry run output lacks {id}\n{}", human.describe());
    }
    assert!(human.stdout_str().contains("would remove 7 snapshot(s)"), "{}", human.describe());
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "forget --dry-run (text)");

    // The real run removes exactly those snapshot files and nothing else.
    let done = env.arc().args(["--json", "forget"]).args(RULES).run().success().json();
    assert_eq!(done["dry_run"], false);
    assert_eq!(ids_of(&done["removed"]), remove);
    let after = repo_listing(&env.repo);
    let expected: BTreeMap<String, u64> = before
        .iter()
        .filter(|(k, _)| !remove.iter().any(|id| k.as_str() == format!("snapshots/{id}")))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_listing_unchanged(&expected, &after, "forget (only the 7 snapshot files may go)");
    let left: BTreeSet<String> = env.snapshots_json().iter().map(|s| jstr(s, "id").to_string()).collect();
    assert_eq!(left, keep);
    // Applying the same policy again removes nothing more.
    let again = env.arc().args(["--json", "forget"]).args(RULES).run().success().json();
    assert!(again["removed"].as_array().unwrap().is_empty(), "{again:#}");
    env.arc().arg("check").run().success();
}

#[test]
fn forget_by_id_by_host_and_refusals() {
    let env = TestEnv::new();
    env.init();
    let a =
        history(&env, &["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"], &["--host", "alpha"]);
    let b = history(&env, &["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"], &["--host", "beta"]);

    // Filters: only alpha's snapshots are judged; beta's are untouched.
    let r = env.arc().args(["--json", "forget", "--host", "alpha", "--keep-last", "1"]).run().success().json();
    let gone: BTreeSet<String> = [a["2024-01-01T00:00:00Z"].clone(), a["2024-01-02T00:00:00Z"].clone()].into();
    assert_eq!(ids_of(&r["removed"]), gone);
    assert_eq!(env.snapshots_json().len(), 3);

    // Explicit ids (a prefix is enough).
    let victim = b["2024-01-01T00:00:00Z"].clone();
    let r = env.arc().args(["--json", "forget", &victim[..12]]).run().success().json();
    assert_eq!(ids_of(&r["removed"]), [victim.clone()].into());
    let left: BTreeSet<String> = env.snapshots_json().iter().map(|s| jstr(s, "id").to_string()).collect();
    assert_eq!(left, [a["2024-01-03T00:00:00Z"].clone(), b["2024-01-02T00:00:00Z"].clone()].into());

    // Refusals leave everything in place.
    let before = repo_listing(&env.repo);
    let no_rules = env.arc().arg("forget").run().failure();
    assert!(no_rules.one_line_error().contains("--keep"), "{}", no_rules.describe());
    let both = env.arc().args(["forget", &left.iter().next().unwrap()[..8], "--keep-last", "1"]).run().failure();
    assert!(both.one_line_error().contains("not both"), "{}", both.describe());
    env.arc().args(["forget", &victim[..12]]).run().failure().one_line_error();
    env.arc().args(["forget", "--keep-within", "3x"]).run().failure().one_line_error();
    env.arc().args(["forget", "--keep-daily", "1", "--group-by", "colour"]).run().failure().one_line_error();
    assert_listing_unchanged(&before, &repo_listing(&env.repo), "refused forget");
    env.arc().arg("check").run().success();
}

/// A backup reading a FIFO holds its shared lock until the FIFO closes, so
/// forget and prune meet a running backup deterministically. They must
/// refuse with a clear message and leave the backup unharmed.
#[test]
fn forget_and_prune_refuse_while_a_backup_runs() {
    let env = TestEnv::new();
    env.init();
    history(&env, &["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"], &[]);
    let fifo = env.path("stdin.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // O_RDWR never blocks on a FIFO (Linux), and keeps a writer alive so
    // the backup's read end does not see EOF until we drop it.
    let mut writer = fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let running = env.arc().args(["--json", "backup", "--stdin", "--stdin-name", "db.sql"]).stdin_file(&fifo).spawn();
    assert!(
        wait_for(Duration::from_secs(30), || !files_under(&env.repo.join("sessions")).is_empty()),
        "the backup announced no session"
    );
    let before = repo_listing(&env.repo);
    // Format v2: forget and the two-phase prune are safe beside a running
    // backup; only the one-pass `--instant` prune needs it gone.
    let out = env.arc().args(["prune", "--instant"]).run().failure();
    let line = out.one_line_error();
    assert!(line.contains("locked") && line.contains("backup"), "prune --instant: {}", out.describe());
    // A dry run only reads: it shares the lock.
    env.arc().args(["forget", "--keep-last", "1", "--dry-run"]).run().success();
    env.arc().args(["prune", "--dry-run"]).run().success();
    let mut now = repo_listing(&env.repo);
    now.retain(|k, _| !k.starts_with("tmp/") && !k.starts_with("sessions/"));
    let mut was = before;
    was.retain(|k, _| !k.starts_with("tmp/") && !k.starts_with("sessions/"));
    assert_listing_unchanged(&was, &now, "refused forget/prune");

    use std::io::Write;
    writer.write_all(b"INSERT INTO t VALUES (1);\n").unwrap();
    drop(writer);
    let out = running.wait().success();
    let _ = out.json();
    assert_eq!(env.snapshots_json().len(), 3);
    // Two groups now (the tree, and the stream): one snapshot stays of each.
    env.arc().args(["forget", "--keep-last", "1", "--prune"]).run().success();
    assert_eq!(env.snapshots_json().len(), 2);
    env.arc().args(["check", "--read-data"]).run().success();
}
