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
