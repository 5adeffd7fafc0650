//! SFTP connections that fail, on a real sshd on loopback: a server that
//! is late or away for a moment is waited for (a failed ssh start is
//! retried like any request), one that never answers is given up in one
//! line after the retries, a refusal (a wrong key, a host key unknown or
//! changed) ends the command at once, saying why; and a backup or restore
//! whose connection is lost in the middle (the ssh master killed, sshd
//! away for a second) connects again and finishes.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::backends::{needs, ssh_keygen, start, Backend, Server};
use crate::util::*;

fn sftp_testable() -> bool {
    requirements_met(&needs(Backend::Sftp)) && requirements_met(&[Need::FaultInjection])
}

/// `arc --repo <server>` in `env`, with the server's variables.
fn arc(env: &TestEnv, server: &Server) -> TestCommand {
    env.cmd().envs_from(server.env.clone()).args(["--repo", &server.url])
}

/// Kills (SIGKILL) every ssh master process connected to `port` (`ssh
/// ... -M ... -p PORT`, as arc's ssh starts them); returns how many.
fn kill_ssh_masters(port: u16) -> usize {
    let port = port.to_string();
    let mut killed = 0;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_ssh = args.first().is_some_and(|a| a.ends_with(b"/ssh") || *a == b"ssh");
        let master = args.iter().any(|a| *a == b"-M");
        let to_port = args.windows(2).any(|w| w[0] == b"-p" && w[1] == port.as_bytes());
        // SAFETY: kill(2) of a process this test identified as its ssh.
        if is_ssh && master && to_port && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

fn wait_for_file(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what}: {} did not appear within 60 s", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines of the server's log that end a connection before its login
/// completed: one per connection refused at the login or host key.
fn preauth_closes(server: &Server) -> usize {
    server.log_text().lines().filter(|l| l.contains("[preauth]")).count()
}

#[test]
fn sftp_waits_for_a_server_that_starts_late() {
    if !sftp_testable() {
        return;
    }
    let env = TestEnv::new();
    let mut server = start(Backend::Sftp, &env.root, &env.path("late"));
    let src = env.path("src");
    write_random_file(&src.join("a.bin"), 200 * 1024, 3);
    arc(&env, &server).arg("init").run().success();
    arc(&env, &server).arg("backup").arg(&src).run().success();
    fs::write(src.join("b.txt"), b"written while the server was away").unwrap();
    // Each command starts while nothing listens; sshd comes up a second
    // later. The backup's first ssh start and its pack's are refused.
    for args in [vec!["--json", "snapshots"], vec!["backup", src.to_str().unwrap()]] {
        server.stop();
        let mut running = arc(&env, &server).args(&args).spawn();
        std::thread::sleep(Duration::from_secs(1));
        assert!(!running.has_exited(), "{args:?} ended before the server started:\n{}", running.wait().describe());
        server.start_again();
        running.wait().success();
    }
    let out = arc(&env, &server).args(["--json", "snapshots"]).run().success();
    assert_eq!(out.json().as_array().map(Vec::len), Some(2), "{}", out.describe());
}

#[test]
fn sftp_gives_up_on_a_server_that_never_listens() {
    if !sftp_testable() {
        return;
    }
    let env = TestEnv::new();
    let mut server = start(Backend::Sftp, &env.root, &env.path("never"));
    server.stop();
    let started = Instant::now();
    let out = arc(&env, &server).env("ARC_TEST_REMOTE_RETRIES", "2").arg("snapshots").run().failure();
    let elapsed = started.elapsed();
    let line = out.one_line_error();
    assert!(line.contains(&server.url), "the line names the repository: {line}");
    assert!(line.contains("Connection refused"), "{line}");
    assert!(line.contains("(Unexpected, gave up after 3 attempts)"), "{line}");
    // A server that is down needs no advice about keys.
    assert!(!line.contains("ARC_SFTP_KEY"), "{line}");
    // 3 attempts, 2 backoffs of 0.2-0.4 and 0.4-0.8 s.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}: {line}");
}

#[test]
fn sftp_refusals_fail_at_once_and_say_why() {
    if !sftp_testable() {
        return;
    }
    let env = TestEnv::new();
    let server = start(Backend::Sftp, &env.root, &env.path("refused"));
    arc(&env, &server).arg("init").run().success();
    let state = &server.state;
    ssh_keygen(&state.join("stranger_key"));
    ssh_keygen(&state.join("other_host_key"));
    let other_host = fs::read_to_string(state.join("other_host_key.pub")).unwrap();
    let other_host: Vec<&str> = other_host.split_whitespace().take(2).collect();
    fs::write(state.join("changed_known_hosts"), format!("[127.0.0.1]:{} {}\n", server.port, other_host.join(" ")))
        .unwrap();
    fs::write(state.join("empty_known_hosts"), "").unwrap();
    let ssh_config = |known_hosts: &str| {
        let path = state.join(format!("ssh_config_{known_hosts}"));
        fs::write(
            &path,
            format!(
                "Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  \
                 IdentityAgent none\n",
                state.join(known_hosts).display()
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let cases = [
        ("a key the server does not know", "ARC_SFTP_KEY", state.join("stranger_key").display().to_string(), {
            vec!["Permission denied (publickey)"]
        }),
        ("a host key that changed", "ARC_SSH_CONFIG", ssh_config("changed_known_hosts"), {
            vec!["host key has changed", "Host key verification failed"]
        }),
        ("a host key not known", "ARC_SSH_CONFIG", ssh_config("empty_known_hosts"), {
            vec!["host key is known", "Host key verification failed"]
        }),
    ];
    for (what, var, value, reasons) in cases {
        let before = preauth_closes(&server);
        let out = arc(&env, &server).env("ARC_TEST_REMOTE_RETRIES", "3").env(var, &value).arg("snapshots").run();
        let line = out.failure().one_line_error();
        for reason in reasons {
            assert!(line.contains(reason), "{what}: {line}");
        }
        assert!(line.contains(&server.url), "{what}: {line}");
        assert!(!line.contains("gave up") && !line.contains("@@@"), "{what}: {line}");
        // One connection: sshd logs its end a moment after the client's.
        let deadline = Instant::now() + Duration::from_secs(5);
        while preauth_closes(&server) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(preauth_closes(&server) - before, 1, "{what}: connections refused\n{}", server.log_text());
    }
}

/// Holds `command` at the hook `point` (fault::pause_at), cuts the SFTP
/// connection there (every ssh master of the server killed, sshd stopped),
/// lets the command go on and starts sshd again a second later.
fn cut_at(server: &mut Server, pauses: &Path, point: &str, command: TestCommand) -> Output {
    fs::write(pauses.join(format!("{point}.pause")), b"").unwrap();
    let running = command.env("ARC_TEST_PAUSE_AT", pauses).spawn();
    wait_for_file(&pauses.join(format!("{point}.reached")), point);
    assert!(kill_ssh_masters(server.port) > 0, "{point}: no ssh master to kill");
    server.stop();
    fs::write(pauses.join(format!("{point}.go")), b"").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut running = running;
    assert!(!running.has_exited(), "{point}: ended while the server was away:\n{}", running.wait().describe());
    server.start_again();
    running.wait()
}

#[test]
fn sftp_backup_and_restore_finish_after_the_connection_is_lost() {
    if !sftp_testable() {
        return;
    }
    let env = TestEnv::new();
    let repo = env.path("lost");
    let mut server = start(Backend::Sftp, &env.root, &repo);
    let src = env.path("src");
    write_random_file(&src.join("big.bin"), 3 * MIB, 29);
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    arc(&env, &server).arg("init").run().success();
    let pauses = env.path("pauses");
    fs::create_dir_all(&pauses).unwrap();

    // Cut while a pack is half written: the write fails, and the put
    // starts again under a new temporary name once ssh connects again.
    let backup = arc(&env, &server).arg("backup").arg(&src);
    cut_at(&mut server, &pauses, "sftp-put", backup).success();
    arc(&env, &server).args(["check", "--read-data"]).run().success();
    let tmp = repo.join("tmp");
    let left: Vec<_> = if tmp.exists() { fs::read_dir(&tmp).unwrap().collect() } else { Vec::new() };
    assert!(left.is_empty(), "left in tmp/: {:?}", listing(&tmp, |_| false));

    // Cut before a ranged read of the restore.
    let target = env.path("restored");
    let restore = arc(&env, &server).args(["restore", "latest", "--target"]).arg(&target);
    cut_at(&mut server, &pauses, "remote-read", restore).success();
    assert_trees_equal(&src, &restored(&target, &src), &CompareOpts::default());
}
