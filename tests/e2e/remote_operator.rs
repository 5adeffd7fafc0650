//! A fleet operator's mistakes and bad days on remote repositories, on
//! real servers on loopback: a URL that names the server wrongly (https://
//! for a plain HTTP server, a query string, a password), and a repository
//! that cannot be reached when `arc status` asks about it.

use std::fs;
use std::time::{Duration, Instant};

use crate::backends::{needs, start, Backend, Server};
use crate::util::*;

/// `arc --repo URL` in `env`, with the server's variables.
fn arc(env: &TestEnv, server: &Server, url: &str) -> TestCommand {
    env.cmd().envs_from(server.env.clone()).args(["--repo", url])
}

/// `https://` for a server that speaks plain HTTP: no handshake can work,
/// so the command ends at once (it used to retry for 13-25 s), in one line
/// that says so and what to write instead.
#[test]
fn https_for_a_plain_http_server_fails_at_once_saying_why() {
    if !requirements_met(&needs(Backend::S3)) {
        return;
    }
    let env = TestEnv::new();
    let server = start(Backend::S3, &env.path("s3"), &env.path("s3/bucket"));
    let url = server.url.replacen("s3:http://", "s3:https://", 1);
    let started = Instant::now();
    let out = arc(&env, &server, &url).arg("snapshots").timeout(Duration::from_secs(60)).run().failure();
    let took = started.elapsed();
    let line = out.one_line_error();
    assert!(line.contains("does not speak TLS") && line.contains("http://"), "{line}");
    assert!(!line.contains("gave up"), "a handshake that cannot succeed was retried: {line}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {line}");
}

/// A query string or fragment in an HTTP repository URL is refused before
/// anything is sent (WebDAV used to create a directory `dav?x=1` with
/// `keys/` and `tmp/` and then fail with "not an arc repository"), and
/// what follows `?` is not shown (it may be a token).
#[test]
fn a_query_in_a_repository_url_is_refused_before_anything_is_written() {
    if !requirements_met(&needs(Backend::WebDav)) {
        return;
    }
    let env = TestEnv::new();
    let root = env.path("dav");
    let server = start(Backend::WebDav, &root, &root.join("repo"));
    let before: Vec<_> = fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    let url = format!("{}?token=hunter2", server.url);
    let out = arc(&env, &server, &url).arg("init").run().failure();
    let line = out.one_line_error();
    assert!(line.contains("query (?…) or fragment (#…)") && !line.contains("hunter2"), "{line}");
    let after: Vec<_> = fs::read_dir(&root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(before, after, "the server's directory changed");
    assert!(fs::read_dir(root.join("repo")).unwrap().next().is_none(), "something was written into the repository");
}

/// A password written in a URL is refused without being shown, and the
/// error names the variable it goes in instead.
#[test]
fn a_password_in_a_url_is_refused_naming_the_variable_it_goes_in() {
    let env = TestEnv::new();
    for (url, variable) in [
        ("webdav:http://bob:hunter2@127.0.0.1:1/dav", "ARC_WEBDAV_PASSWORD"),
        ("sftp://root:hunter2@127.0.0.1:1/srv/arc", "ARC_SFTP_KEY"),
        ("s3:http://AKIA:hunter2@127.0.0.1:1/bucket", "AWS_SECRET_ACCESS_KEY"),
    ] {
        let out = env.cmd().args(["--repo", url, "snapshots"]).run().failure();
        let line = out.one_line_error();
        assert!(line.contains(variable) && !line.contains("hunter2"), "{url}: {line}");
    }
}

/// `arc status` while the repository's server is down: the job's last
/// success is the one this host recorded, not "never", and the error is
/// shown beside it (exit 1). It used to report `last_success: null`, no
/// age and "never", as if the job had never run.
#[test]
fn status_keeps_the_last_success_while_the_repository_is_unreachable() {
    if !requirements_met(&needs(Backend::S3)) || !requirements_met(&[Need::FaultInjection]) {
        return;
    }
    let env = TestEnv::new();
    let mut server = start(Backend::S3, &env.path("s3"), &env.path("s3/bucket"));
    let src = env.path("src");
    write_random_file(&src.join("a.bin"), 64 * 1024, 7);
    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[defaults]\nmax-age = \"26h\"\n\n[[jobs]]\nname = \"www\"\nkind = \"files\"\n\
             paths = [\"{}\"]\n",
            server.url,
            src.display()
        ),
    )
    .unwrap();
    let server_env = server.env.clone();
    let cmd = || {
        env.cmd()
            .envs_from(server_env.clone())
            .env("XDG_STATE_HOME", env.path("state"))
            .env("ARC_TEST_REMOTE_RETRIES", "0")
    };
    arc(&env, &server, &server.url).arg("init").run().success();
    cmd().args(["run", "--config"]).arg(&config).run().success();
    let up = cmd().args(["--json", "status", "--config"]).arg(&config).run().success().json();
    let listed = up["jobs"][0]["last_success"].as_str().expect("a last success while the server is up").to_string();

    server.stop();
    let down = cmd().args(["--json", "status", "--config"]).arg(&config).run().code_is(1);
    let job = &down.json()["jobs"][0];
    assert!(job["error"].as_str().is_some_and(|e| e.contains("refused")), "{job:#}");
    let recorded = job["last_success"].as_str().unwrap_or_else(|| panic!("last_success lost: {job:#}"));
    // The run's start, which comes before its snapshot's time (whole
    // seconds: the fractions are written with 3, 6 or 9 digits).
    assert!(recorded[..19] <= listed[..19], "{recorded} is later than the snapshot's {listed}");
    assert!(job["age_s"].as_i64().is_some_and(|a| a < 600), "{job:#}");
    assert_eq!(job["stale"], false, "{job:#}");
    let text = cmd().args(["status", "--config"]).arg(&config).run().code_is(1);
    let row = text.stdout_str().lines().find(|l| l.starts_with("www")).unwrap_or_default().to_string();
    assert!(!row.contains("never") && row.contains("ERROR"), "{}", text.describe());
}

/// `arc run` with several jobs in a repository whose server is down: the
/// first job gives up after its retries, the next ones try once and fail
/// at once, saying why (each used to wait out the whole backoff again:
/// about 20 s a job, an hour for 200 jobs). A server back in the meantime
/// serves the next job.
#[test]
fn run_does_not_wait_out_the_retries_again_for_each_job_of_a_repository_that_is_down() {
    if !requirements_met(&needs(Backend::S3)) || !requirements_met(&[Need::FaultInjection]) {
        return;
    }
    let env = TestEnv::new();
    let mut server = start(Backend::S3, &env.path("s3"), &env.path("s3/bucket"));
    arc(&env, &server, &server.url).arg("init").run().success();
    let src = env.path("src");
    write_random_file(&src.join("a.bin"), 16 * 1024, 9);
    let jobs: String = (1..=4)
        .map(|i| format!("[[jobs]]\nname = \"j{i}\"\nkind = \"files\"\npaths = [\"{}\"]\n\n", src.display()))
        .collect();
    let config = env.path("arc.toml");
    fs::write(&config, format!("repository = \"{}\"\n\n{jobs}", server.url)).unwrap();
    let server_env = server.env.clone();
    let run = || {
        env.cmd()
            .envs_from(server_env.clone())
            .env("XDG_STATE_HOME", env.path("state"))
            .env("ARC_TEST_REMOTE_RETRIES", "3")
            .args(["run", "--config"])
            .arg(&config)
            .timeout(Duration::from_secs(120))
            .run()
    };
    server.stop();
    let out = run().failure();
    let log = out.stderr_str();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains(" failed duration=")).collect();
    assert_eq!(failed.len(), 4, "{}", out.describe());
    assert!(failed[0].contains("gave up after 4 attempts"), "{}", out.describe());
    for line in &failed[1..] {
        assert!(line.contains("not retried") && !line.contains("gave up"), "{line}\n{}", out.describe());
    }
    server.start_again();
    run().success();
}

/// Two `arc init`s of one WebDAV location at once (a fleet's provisioning
/// run), both past their check that nothing is there, then both writing a
/// config: the one whose config was replaced says the repository already
/// exists and leaves no key file; the other's passphrase opens it. Both
/// used to say "created" with their own ids, and the first one's
/// passphrase then met "wrong passphrase" (its key file opened a master
/// key the repository does not use).
#[test]
fn two_inits_of_one_webdav_location_at_once_make_one_repository() {
    if !requirements_met(&needs(Backend::WebDav)) || !requirements_met(&[Need::FaultInjection]) {
        return;
    }
    let env = TestEnv::new();
    let root = env.path("dav");
    let server = start(Backend::WebDav, &root, &root.join("repo"));
    let init = |who: &str| {
        let pauses = env.path(format!("pauses-{who}"));
        fs::create_dir_all(&pauses).unwrap();
        fs::write(pauses.join("put-new.pause"), b"").unwrap();
        let running = arc(&env, &server, &server.url)
            .env("ARC_PASSWORD", format!("passphrase-{who}"))
            .env("ARC_TEST_PAUSE_AT", &pauses)
            .arg("init")
            .timeout(Duration::from_secs(60))
            .spawn();
        let reached = pauses.join("put-new.reached");
        assert!(wait_for(Duration::from_secs(30), || reached.exists()), "{who} did not reach its put");
        (running, pauses.join("put-new.go"))
    };
    // Both have found no config; the first puts its own, and the second
    // puts its own while the first waits to read it back.
    let (first, first_go) = init("first");
    let (second, second_go) = init("second");
    fs::write(first_go, b"").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    fs::write(second_go, b"").unwrap();
    let first = first.wait();
    let second = second.wait().success();
    let line = first.failure().one_line_error();
    assert!(line.contains("already exists"), "{line}");
    assert!(
        second.stdout_str().contains("created") || second.stderr_str().contains("created"),
        "{}",
        second.describe()
    );
    let keys: Vec<_> = fs::read_dir(root.join("repo/keys")).unwrap().flatten().collect();
    assert_eq!(keys.len(), 1, "the first init's key file was left: {keys:?}");
    let snapshots = |who: &str| {
        arc(&env, &server, &server.url).env("ARC_PASSWORD", format!("passphrase-{who}")).arg("snapshots").run()
    };
    snapshots("second").success();
    snapshots("first").failure();
}

/// Two S3 providers that take different keys, in one command: `copy
/// --from-env-file` reads the source's keys from a file and the target's
/// from the environment, and a job file gives each repository its own
/// `env-file`, with no keys in the environment at all (fan-out = "copy"
/// opens both in one run). Every one of these used to sign both
/// providers' requests with the environment's one pair of keys. A file
/// every user can read is refused in one line, before anything is sent.
#[test]
fn two_providers_with_different_keys_in_one_copy_and_one_job_file() {
    if !requirements_met(&needs(Backend::S3)) {
        return;
    }
    use crate::backends::start_keyed;
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let a_keys = ("GKaaaaaaaaaaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    let b_keys = ("GKbbbbbbbbbbbbbbbbbbbbbbbb", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    let a = start_keyed(Backend::S3, &env.path("s3a"), &env.path("s3a/bucket"), a_keys);
    let b = start_keyed(Backend::S3, &env.path("s3b"), &env.path("s3b/bucket"), b_keys);
    let env_file = |name: &str, keys: (&str, &str), mode: u32| {
        let p = env.path(name);
        fs::write(
            &p,
            format!("AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY='{}'\nAWS_DEFAULT_REGION=us-east-1\n", keys.0, keys.1),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let a_file = env_file("a.env", a_keys, 0o600);
    let b_file = env_file("b.env", b_keys, 0o640);
    let src = env.path("src");
    write_random_file(&src.join("site/a.bin"), 200 * 1024, 21);
    fs::write(src.join("site/index.php"), "<?php echo 1;").unwrap();
    arc(&env, &a, &a.url).arg("init").run().success();
    arc(&env, &a, &a.url).arg("backup").arg(&src).run().success();
    // B names and cuts content as A does, A's keys from its file.
    arc(&env, &b, &b.url)
        .args(["init", "--copy-chunker-params-from", &a.url, "--from-env-file"])
        .arg(&a_file)
        .run()
        .success();

    // The environment holds B's keys: A refuses them.
    let copy = |file: Option<&std::path::Path>| {
        let mut c = arc(&env, &b, &b.url).args(["copy", "--all", "--from-repo", &a.url]);
        if let Some(f) = file {
            c = c.arg("--from-env-file").arg(f);
        }
        c.timeout(Duration::from_secs(120)).run()
    };
    let refused = copy(None).failure();
    assert!(refused.one_line_error().contains("AWS_ACCESS_KEY_ID"), "{}", refused.describe());
    let world = env_file("world.env", a_keys, 0o644);
    let line = copy(Some(&world)).failure().one_line_error();
    assert!(line.contains("every user") && line.contains("world.env") && !line.contains(a_keys.1), "{line}");
    let copied = copy(Some(&a_file)).success();
    // The same chunker and content keys: nothing was cut again.
    assert!(!copied.stdout_str().contains("re-chunked"), "{}", copied.describe());
    let listed = arc(&env, &b, &b.url).args(["snapshots", "--json"]).run().success().stdout_str();
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(snaps.len(), 1, "{listed}");
    let out = env.path("restored");
    arc(&env, &b, &b.url).args(["restore", "latest", "--target"]).arg(&out).run().success();
    assert_trees_equal(&src, &restored(&out, &src), &CompareOpts::default());

    // A job file with both, and no keys in the environment.
    let config = env.path("arc.toml");
    fs::write(
        &config,
        format!(
            "[repositories.first]\nurl = \"{}\"\nenv-file = \"{}\"\n\n[repositories.second]\nurl = \"{}\"\nenv-file = \"{}\"\n\n\
             [[jobs]]\nname = \"www\"\nkind = \"files\"\npaths = [\"{}\"]\nrepositories = [\"first\", \"second\"]\nfan-out = \"copy\"\n",
            a.url,
            a_file.display(),
            b.url,
            b_file.display(),
            src.display()
        ),
    )
    .unwrap();
    let run = env
        .cmd()
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("XDG_STATE_HOME", env.path("state"))
        .args(["run", "--config"])
        .arg(&config)
        .timeout(Duration::from_secs(120))
        .run();
    let run = run.success();
    for (server, want) in [(&a, 2), (&b, 2)] {
        let listed = arc(&env, server, &server.url).args(["snapshots", "--json"]).run().success().stdout_str();
        let snaps: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        assert_eq!(snaps.len(), want, "{}: {listed}\n{}", server.url, run.describe());
    }
}
