//! Passphrases and keys from the user's side: where passphrases come from,
//! `arc key list|add|remove|passwd|export`, and the default repository's
//! generated key.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

fn tree(env: &TestEnv) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    write_random_file(&src.join("b.bin"), 200_000, 3);
    src
}

#[test]
fn passphrase_sources_and_no_terminal() {
    if encryption_none() {
        return; // nothing here depends on the mode; run once.
    }
    let env = TestEnv::new();
    let src = tree(&env);
    env.init();
    env.backup([&src]);
    // No source and no terminal (stdin is /dev/null): one line, at once,
    // naming the variables.
    let t = std::time::Instant::now();
    let out = env.arc().env_remove("ARC_PASSWORD").arg("snapshots").run().failure();
    let line = out.one_line_error();
    for var in ["ARC_PASSWORD", "ARC_PASSWORD_FILE", "ARC_PASSWORD_COMMAND"] {
        assert!(line.contains(var), "{line}");
    }
    assert_eq!(out.stderr_str().lines().count(), 1, "{}", out.describe());
    assert!(t.elapsed().as_secs() < 10);
    // Wrong passphrase: one line, no panic, quick.
    let t = std::time::Instant::now();
    let out = env.arc().env("ARC_PASSWORD", "nope").arg("snapshots").run().failure();
    assert!(out.one_line_error().contains("wrong passphrase"), "{}", out.describe());
    assert!(!out.stderr_str().contains("panicked"));
    assert!(t.elapsed().as_secs() < 10, "a wrong passphrase took {:?}", t.elapsed());
    // A file (trailing newline not part of it) and a command.
    fs::write(env.path("pw"), format!("{TEST_PASSWORD}\n")).unwrap();
    env.arc().env_remove("ARC_PASSWORD").env("ARC_PASSWORD_FILE", env.path("pw")).arg("snapshots").run().success();
    env.arc()
        .env_remove("ARC_PASSWORD")
        .env("ARC_PASSWORD_COMMAND", format!("cat '{}'", env.path("pw").display()))
        .arg("snapshots")
        .run()
        .success();
    let out =
        env.arc().env_remove("ARC_PASSWORD").env("ARC_PASSWORD_COMMAND", "false").arg("snapshots").run().failure();
    assert!(out.one_line_error().contains("ARC_PASSWORD_COMMAND"), "{}", out.describe());
}

#[test]
fn key_add_list_passwd_remove() {
    let env = TestEnv::new();
    let src = tree(&env);
    env.init();
    env.backup([&src]);
    let list = |pw: &str| {
        let out = env.arc().env("ARC_PASSWORD", pw).args(["--json", "key", "list"]).run().success();
        out.json().as_array().unwrap().clone()
    };
    let keys = list(TEST_PASSWORD);
    assert_eq!(keys.len(), 1);
    for field in ["id", "current", "created", "host"] {
        assert!(keys[0].get(field).is_some(), "key list --json lacks {field}: {}", keys[0]);
    }
    assert_eq!(keys[0]["current"], true);
    if encryption_none() {
        assert_eq!(keys[0]["protected"], false);
        let out = env.arc().args(["key", "add"]).env("ARC_NEW_PASSWORD", "x").run().failure();
        assert!(out.one_line_error().contains("created without encryption"), "{}", out.describe());
        let out = env.arc().args(["key", "remove", jstr(&keys[0], "id")]).run().failure();
        assert!(out.one_line_error().contains("last key"), "{}", out.describe());
        return;
    }
    // Removing the last key is refused.
    let out = env.arc().args(["key", "remove", &jstr(&keys[0], "id")[..8]]).run().failure();
    assert!(out.one_line_error().contains("last key"), "{}", out.describe());
    // A second passphrase, from a file.
    fs::write(env.path("new"), "second one\n").unwrap();
    env.arc().args(["key", "add", "--new-password-file"]).arg(env.path("new")).run().success();
    let keys = list("second one");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);
    // The one in use cannot be removed; the other can.
    let (current, other): (Vec<_>, Vec<_>) = keys.iter().partition(|k| k["current"] == true);
    let out =
        env.arc().env("ARC_PASSWORD", "second one").args(["key", "remove", jstr(current[0], "id")]).run().failure();
    let line = out.one_line_error();
    assert!(line.contains("in use") && line.contains(&jstr(current[0], "id")[..12]), "{}", out.describe());
    // The engine says what is refused; the command that helps is the CLI's.
    assert!(line.contains("`arc key passwd`"), "{}", out.describe());
    env.arc().env("ARC_PASSWORD", "second one").args(["key", "remove", jstr(other[0], "id")]).run().success();
    env.arc().arg("snapshots").run().failure(); // TEST_PASSWORD's key is gone
                                                // passwd: the new passphrase works, the old one no longer does.
    env.arc()
        .env("ARC_PASSWORD", "second one")
        .env("ARC_NEW_PASSWORD", "third")
        .args(["key", "passwd"])
        .run()
        .success();
    assert_eq!(list("third").len(), 1);
    env.arc().env("ARC_PASSWORD", "second one").arg("snapshots").run().failure();
    env.arc().env("ARC_PASSWORD", "third").args(["restore", "latest", "--target"]).arg(env.path("t")).run().success();
    assert_trees_equal(&src, &restored(&env.path("t"), &src), &CompareOpts::default());
    // No new passphrase and no terminal: one line naming the variables.
    let out = env.arc().env("ARC_PASSWORD", "third").args(["key", "add"]).run().failure();
    assert!(out.one_line_error().contains("ARC_NEW_PASSWORD"), "{}", out.describe());
}

#[test]
fn default_repository_is_encrypted_with_a_generated_key() {
    if encryption_none() {
        return;
    }
    let env = TestEnv::new();
    let src = tree(&env);
    // The README's first command: no init, no passphrase, no terminal.
    let out = env.cmd().env_remove("ARC_PASSWORD").args(["backup"]).arg(&src).run().success();
    let key = env.home.join(".config/arc/repository.key");
    assert!(out.stderr_str().contains(&key.display().to_string()), "{}", out.describe());
    assert!(out.stderr_str().contains("arc key export"), "{}", out.describe());
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let repo = env.home.join(".local/share/arc/repository");
    assert_eq!(files_under(&repo.join("keys")).len(), 1);
    // 256 random bits need no stretching: the least Argon2id cost, so a
    // command on the default repository spends no 64 MiB on it.
    assert_eq!(key_costs(&repo), [r#""m_cost_kib": 8 "t_cost": 1 "p_cost": 1"#]);
    // Said once: the second backup is quiet about it.
    let out = env.cmd().env_remove("ARC_PASSWORD").args(["backup"]).arg(&src).run().success();
    assert!(!out.stderr_str().contains("repository.key"), "{}", out.describe());
    env.cmd().env_remove("ARC_PASSWORD").arg("snapshots").run().success();
    // The data is not readable without the key, and export prints it.
    env.cmd().env("ARC_PASSWORD", "guess").arg("snapshots").run().failure();
    let out = env.cmd().env_remove("ARC_PASSWORD").args(["--json", "key", "export"]).run().success();
    let pw = jstr(&out.json(), "passphrase").to_string();
    assert_eq!(pw, fs::read_to_string(&key).unwrap().trim_end());
    // The exported passphrase opens the repository from anywhere.
    env.cmd()
        .env("ARC_PASSWORD", &pw)
        .arg("--repo")
        .arg(&repo)
        .args(["restore", "latest", "--target"])
        .arg(env.path("t"))
        .run()
        .success();
    assert_trees_equal(&src, &restored(&env.path("t"), &src), &CompareOpts::default());
}

/// Key files written without the suite's `ARC_TEST_KDF=fast` (util.rs,
/// `TestEnv::cmd`) have the default Argon2id cost, whether `init`,
/// `key add` or `key passwd` wrote them; with it, the cheap one the rest
/// of the suite uses. (The key file is JSON in a raw envelope.)
#[test]
fn key_files_have_the_default_argon2id_cost() {
    if encryption_none() {
        return;
    }
    let env = TestEnv::new();
    let costs = key_costs;
    let default = r#""m_cost_kib": 65536 "t_cost": 3 "p_cost": 4"#;
    let user = |repo: &std::path::Path| env.arc_at(repo).env_remove("ARC_TEST_KDF");
    user(&env.repo).arg("init").run().success();
    assert_eq!(costs(&env.repo), [default]);
    user(&env.repo).args(["key", "add"]).env("ARC_NEW_PASSWORD", "second").run().success();
    assert_eq!(costs(&env.repo), [default, default]);
    user(&env.repo)
        .env("ARC_PASSWORD", "second")
        .env("ARC_NEW_PASSWORD", "third")
        .args(["key", "passwd"])
        .run()
        .success();
    assert_eq!(costs(&env.repo), [default, default]);
    user(&env.repo).env("ARC_PASSWORD", "third").arg("snapshots").run().success();

    let fast = env.path("fast");
    env.arc_at(&fast).arg("init").run().success();
    assert_eq!(costs(&fast), [r#""m_cost_kib": 1024 "t_cost": 1 "p_cost": 4"#]);
    env.arc_at(&fast).arg("snapshots").run().success();
}

/// Each key file's Argon2id cost as `"m_cost_kib": M "t_cost": T "p_cost": P`,
/// sorted. (The key file is JSON in a raw envelope.)
fn key_costs(repo: &std::path::Path) -> Vec<String> {
    let mut costs: Vec<String> = files_under(&repo.join("keys"))
        .iter()
        .map(|p| {
            let text = String::from_utf8_lossy(&fs::read(p).unwrap()).into_owned();
            let field = |name: &str| {
                let at = text.find(&format!("\"{name}\": ")).unwrap_or_else(|| panic!("{name} in {text}"));
                text[at..].split([',', '\n']).next().unwrap().to_string()
            };
            format!("{} {} {}", field("m_cost_kib"), field("t_cost"), field("p_cost"))
        })
        .collect();
    costs.sort();
    costs
}
