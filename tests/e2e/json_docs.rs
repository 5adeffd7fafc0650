//! docs/json.md documents every `--json` output of backup, dry run, run, status,
//! snapshots, diff, find, tag, check, list, restore, forget, stats, prune, repair
//! index, cache, key list and copy with an example; this test
//! runs each command and checks that its output has exactly the fields of
//! the example, so the document and the program cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde_json::Value;

use crate::util::*;

/// The examples of docs/json.md by pin name.
fn examples() -> BTreeMap<String, Value> {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/json.md")).unwrap();
    let mut out = BTreeMap::new();
    let mut rest = doc.as_str();
    while let Some(i) = rest.find("<!-- pin: ") {
        rest = &rest[i + 10..];
        let name = rest[..rest.find(" -->").unwrap()].to_string();
        let start = rest.find("```json\n").unwrap() + 8;
        let end = start + rest[start..].find("```").unwrap();
        let v: Value = serde_json::from_str(&rest[start..end]).unwrap_or_else(|e| panic!("example {name}: {e}"));
        out.insert(name, v);
        rest = &rest[end..];
    }
    out
}

/// Every object's key set must be equal, recursively; an example object
/// with a key "…" stands for a shape documented elsewhere, and an empty
/// array on either side has no element to compare.
fn same_shape(example: &Value, actual: &Value, at: &str, diffs: &mut Vec<String>) {
    match (example, actual) {
        (Value::Object(e), Value::Object(a)) => {
            if e.contains_key("…") {
                return;
            }
            let ek: BTreeSet<&String> = e.keys().collect();
            let ak: BTreeSet<&String> = a.keys().collect();
            if ek != ak {
                diffs.push(format!(
                    "{at}: documented but missing {:?}, output but undocumented {:?}",
                    ek.difference(&ak).collect::<Vec<_>>(),
                    ak.difference(&ek).collect::<Vec<_>>()
                ));
            }
            for k in ek.intersection(&ak) {
                same_shape(&e[k.as_str()], &a[k.as_str()], &format!("{at}.{k}"), diffs);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let (Some(x), Some(y)) = (e.first(), a.first()) {
                same_shape(x, y, &format!("{at}[0]"), diffs);
            }
        }
        _ => {}
    }
}

fn lines(out: &Output) -> Vec<Value> {
    out.stdout_str().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn json_schemas_match_docs_json_md() {
    let env = TestEnv::new();
    let src = env.path("www");
    fs::create_dir_all(src.join("site1")).unwrap();
    fs::write(src.join("site1/wp-config.php"), "a").unwrap();
    fs::write(src.join("site1/index.php"), "b").unwrap();
    fs::write(src.join("site1/x.tmp"), "t").unwrap();
    let mut got: BTreeMap<&str, Value> = BTreeMap::new();
    got.insert("init", env.arc().args(["--json", "init"]).run().success().json());
    let backup =
        |env: &TestEnv| env.arc().args(["--json", "backup"]).arg(&src).args(["--exclude", "*.tmp"]).run().success();
    got.insert("backup", lines(&backup(&env)).pop().unwrap());
    fs::write(src.join("site1/wp-config.php"), "changed").unwrap();
    fs::write(src.join("site1/new.php"), "new").unwrap();
    let dry = lines(
        &env.arc().args(["--json", "backup", "--dry-run"]).arg(&src).args(["--exclude", "*.tmp"]).run().success(),
    );
    got.insert("dry-run-item", dry[0].clone());
    got.insert("dry-run-summary", dry.last().unwrap().clone());
    let listed =
        lines(&env.arc().args(["--json", "-v", "backup"]).arg(&src).args(["--exclude", "*.tmp"]).run().success());
    got.insert("backup-item", listed.iter().find(|l| l["message_type"] == "verbose_status").unwrap().clone());
    let snaps = env.snapshots_json();
    got.insert("snapshots", snaps[0].clone());
    let (s1, s2) = (jstr(&snaps[0], "id").to_string(), jstr(&snaps[1], "id").to_string());
    let diff = lines(&env.arc().args(["--json", "diff", &s1, &s2]).run().success());
    got.insert("diff-change", diff[0].clone());
    got.insert("diff-statistics", diff.last().unwrap().clone());
    let find = lines(&env.arc().args(["--json", "find", "*.php"]).run().success());
    got.insert("find-match", find[0].clone());
    got.insert("find-summary", find.last().unwrap().clone());
    got.insert("tag", env.arc().args(["--json", "tag", "latest", "--add", "keep"]).run().success().json());
    got.insert("check", env.arc().args(["--json", "check", "--read-data-subset", "1/1"]).run().success().json());
    let ls = lines(&env.arc().args(["--json", "ls", "-R", "latest"]).run().success());
    assert!(ls.iter().all(|l| l["message_type"] == "node"), "ls --json: {ls:?}");
    got.insert("ls-node", ls.iter().find(|l| l["type"] == "file").unwrap().clone());
    let blobs = lines(&env.arc().args(["--json", "list", "blobs"]).run().success());
    got.insert("list-blob", blobs[0].clone());
    let packs = lines(&env.arc().args(["--json", "list", "packs"]).run().success());
    got.insert("list-pack", packs[0].clone());
    let out = env.path("out");
    got.insert("restore", env.arc().args(["--json", "restore", "latest", "--target"]).arg(&out).run().success().json());
    got.insert("stats", env.arc().args(["--json", "stats"]).run().success().json());
    got.insert("key-list", env.arc().args(["--json", "key", "list"]).run().success().json());
    let forget = env.arc().args(["--json", "forget", "--keep-last", "1", "--dry-run"]).run().success().json();
    assert_eq!(forget["removed"].as_array().map(Vec::len), Some(1), "{forget}");
    got.insert("forget", forget);
    env.arc().args(["forget", &s1]).run().success();
    got.insert("prune", env.arc().args(["--json", "prune"]).run().success().json());
    got.insert("repair-index", env.arc().args(["--json", "repair", "index"]).run().success().json());
    got.insert("repair-packs", env.arc().args(["--json", "repair", "packs"]).run().success().json());
    got.insert("cache", env.arc().args(["--json", "cache"]).run().success().json());
    let other = env.path("other-repo");
    env.arc_at(&other).arg("init").run().success();
    env.arc_at(&other).arg("backup").arg(&src).run().success();
    let copy = env.arc().args(["--json", "copy", "--all", "--from-repo"]).arg(&other).run().success().json();
    assert_eq!(copy["copied"].as_array().map(Vec::len), Some(1), "{copy}");
    got.insert("copy", copy);

    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[defaults]\nspread = \"24h\"\nmax-age = \"26h\"\n\
             [[jobs]]\nname = \"ldap\"\nkind = \"command\"\ncommand = \"echo dn\"\nstream = \"ldap/data.ldif\"\n",
            env.repo.display()
        ),
    )
    .unwrap();
    let fleet = |args: &[&str]| {
        env.cmd()
            .env("XDG_STATE_HOME", env.path("state"))
            .arg("--json")
            .args(args)
            .arg("--config")
            .arg(&config)
            .run()
            .success()
            .json()
    };
    got.insert("run-summary", fleet(&["run"]));
    got.insert("status", fleet(&["status"]));
    got.insert("schedule", fleet(&["run", "--schedule"])[0].clone());

    let examples = examples();
    assert_eq!(examples.keys().map(String::as_str).collect::<Vec<_>>(), got.keys().copied().collect::<Vec<_>>());
    assert!(examples["schedule"].is_array());
    let mut diffs = Vec::new();
    for (name, actual) in &got {
        let example = match &examples[*name] {
            Value::Array(a) if *name == "schedule" => &a[0],
            e => e,
        };
        same_shape(example, actual, name, &mut diffs);
    }
    assert!(diffs.is_empty(), "docs/json.md and the output differ:\n{}", diffs.join("\n"));
}
