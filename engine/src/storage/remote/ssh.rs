//! What a failed `ssh` start means for an SFTP repository: worth another
//! attempt, or final at once, and in which words.
//!
//! opendal's SFTP service starts one `ssh` master per pooled connection
//! and reports any failure to start it as "ssh error", never temporary,
//! so its retry layer never retried a refused connection, a reset, a
//! server restarting its sshd or a DNS hiccup, where the same blip on S3
//! is retried. (A connection that dies in use is another matter: opendal
//! marks those SFTP errors temporary, drops the dead connection from its
//! pool at the next request, which checks every pooled connection before
//! use, and starts a new `ssh`; what failed was only that start while the
//! server is still away.) The only words there are to judge by are ssh's
//! own, the log it wrote: ssh does not translate them, and they have kept
//! their form across OpenSSH releases.
//!
//! [`restate`], applied by a layer under the retry layer (remote/restate.rs), rewrites each such
//! error as one line of ssh's reason and marks the transient ones
//! temporary, so that they are retried like any other request: the same
//! attempts, backoff and jitter, and "gave up after N attempts" at the end.
//!
//! Transient: the connection refused, reset, timed out or closed before
//! the login (`kex_exchange_identification`), no route or network, and a
//! resolver that says to try again ("Temporary failure in name
//! resolution"). Final at once: a refused login (a wrong key), a host key
//! that is unknown or has changed, and a host name that does not exist
//! ("Name or service not known"): a typo in a URL, which waiting cannot
//! fix and which a user should read in a second, not after 13 s of
//! retries, as with restic and borg, whose ssh failures end the command at
//! once. A DNS server that is down answers "try again" and is retried.
//! Anything else ssh says is shown at once, in its words: retrying what is
//! not understood would only delay the message.

use opendal::{Error, ErrorKind};

/// The message opendal's SFTP service gives a failed `ssh` start.
const SSH_START_FAILED: &str = "ssh error";

/// What arc makes of ssh's reason for not connecting.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Worth another attempt.
    pub transient: bool,
    /// PermissionDenied for a refused login or host key, Unexpected
    /// otherwise (never NotFound: that would read as a missing object).
    pub kind: ErrorKind,
    /// ssh's reason in one line, without its banner.
    pub summary: String,
}

/// Reasons that no retry can change, looked for first (a refused login
/// ends with "Connection closed" lines too).
const FINAL: [&str; 9] = [
    "permission denied",
    "host key verification failed",
    "remote host identification has changed",
    "host key is known",
    "too many authentication failures",
    "could not resolve hostname",
    "unable to negotiate",
    "bad configuration option",
    // Not an ssh server at the port ("banner exchange: ... invalid
    // format"), or a key file that is not a key.
    "invalid format",
];

/// Reasons of a network or a server that may be back in a moment.
const TRANSIENT: [&str; 12] = [
    "connection refused",
    "connection reset",
    "timed out",
    "connection closed",
    "connection aborted",
    "kex_exchange_identification",
    "ssh_exchange_identification",
    "banner exchange",
    "network is unreachable",
    "no route to host",
    "host is down",
    "broken pipe",
];

/// Judges ssh's log of a failed start (`stderr`, as openssh read it).
pub(super) fn judge(stderr: &str) -> Verdict {
    let lower = stderr.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    // EAI_AGAIN: the resolver could not answer now (no network, its server
    // down); "Name or service not known" is its answer that the name does
    // not exist.
    let transient = if lower.contains("temporary failure in name resolution") {
        true
    } else if has(&FINAL) {
        false
    } else {
        // An ssh that said nothing (killed, out of memory) is not known to
        // be refused either.
        has(&TRANSIENT) || lower.trim().is_empty()
    };
    let refused = has(&FINAL[..5]);
    Verdict {
        transient,
        kind: if refused { ErrorKind::PermissionDenied } else { ErrorKind::Unexpected },
        summary: summary(stderr),
    }
}

/// ssh's reason in one line: its lines joined, without the frame of `@`
/// and the advice of a changed host key's warning (more than 400
/// characters that would push the reason, "Host key verification failed",
/// out of the error line), nor "Warning: Permanently added".
fn summary(stderr: &str) -> String {
    let changed = stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED");
    let mut lines: Vec<&str> = Vec::new();
    if changed {
        lines.push("the server's host key has changed (REMOTE HOST IDENTIFICATION HAS CHANGED)");
    }
    for line in stderr.lines().map(str::trim) {
        let line = line.strip_prefix("ssh: ").unwrap_or(line).trim_end_matches('.');
        let keep = !line.is_empty()
            && !line.starts_with('@')
            && !line.starts_with("Warning: Permanently added")
            && (!changed || line.starts_with("Offending ") || line.starts_with("Host key verification failed"));
        if keep {
            lines.push(line);
        }
    }
    if lines.is_empty() {
        return "exited without saying why (killed?)".into();
    }
    lines.join("; ")
}

/// `e` as arc reports it: a failed `ssh` start in ssh's words, temporary
/// when [`judge`] says so; any other error unchanged.
pub(super) fn restate(e: Error) -> Error {
    if e.message() != SSH_START_FAILED || e.is_temporary() {
        return e;
    }
    // The innermost cause is ssh's log (openssh's Connect error holds it),
    // or the error of reading it: an ssh that was killed before it wrote
    // anything leaves no log (its absence is all openssh reports). The
    // program itself was found when the repository was opened
    // (remote.rs, ssh_wrapper).
    let mut stderr = String::new();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let no_log = s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
        stderr = if no_log { String::new() } else { s.to_string() };
        src = s.source();
    }
    let verdict = judge(&stderr);
    let out = Error::new(verdict.kind, format!("ssh: {}", verdict.summary));
    if verdict.transient {
        out.set_temporary()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ssh's logs as OpenSSH 9.2 writes them (captured on loopback; the
    /// DNS ones from ssh to a name that does not exist and from a host
    /// without a resolver).
    #[test]
    fn ssh_reasons_are_judged_and_read_as_one_line() {
        let cases: [(&str, bool, ErrorKind, &str); 11] = [
            (
                "ssh: connect to host 127.0.0.1 port 47123: Connection refused\n",
                true,
                ErrorKind::Unexpected,
                "connect to host 127.0.0.1 port 47123: Connection refused",
            ),
            (
                "kex_exchange_identification: Connection closed by remote host\r\nConnection closed by 127.0.0.1 port 47124\r\n",
                true,
                ErrorKind::Unexpected,
                "kex_exchange_identification: Connection closed by remote host; Connection closed by 127.0.0.1 port 47124",
            ),
            (
                "kex_exchange_identification: read: Connection reset by peer\nConnection reset by 127.0.0.1 port 47124\n",
                true,
                ErrorKind::Unexpected,
                "kex_exchange_identification: read: Connection reset by peer; Connection reset by 127.0.0.1 port 47124",
            ),
            (
                "ssh: connect to host 10.1.2.3 port 22: Connection timed out\n",
                true,
                ErrorKind::Unexpected,
                "connect to host 10.1.2.3 port 22: Connection timed out",
            ),
            (
                "ssh: connect to host 10.1.2.3 port 22: Network is unreachable\n",
                true,
                ErrorKind::Unexpected,
                "connect to host 10.1.2.3 port 22: Network is unreachable",
            ),
            (
                "ssh: Could not resolve hostname vault.example.net: Temporary failure in name resolution\n",
                true,
                ErrorKind::Unexpected,
                "Could not resolve hostname vault.example.net: Temporary failure in name resolution",
            ),
            (
                "ssh: Could not resolve hostname no-such-host.invalid: Name or service not known\n",
                false,
                ErrorKind::Unexpected,
                "Could not resolve hostname no-such-host.invalid: Name or service not known",
            ),
            (
                "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known hosts.\r\nroot@127.0.0.1: Permission denied (publickey).\r\n",
                false,
                ErrorKind::PermissionDenied,
                "root@127.0.0.1: Permission denied (publickey)",
            ),
            (
                "No ED25519 host key is known for [127.0.0.1]:47123 and you have requested strict checking.\nHost key verification failed.\n",
                false,
                ErrorKind::PermissionDenied,
                "No ED25519 host key is known for [127.0.0.1]:47123 and you have requested strict checking; Host key verification failed",
            ),
            (
                "banner exchange: Connection to 127.0.0.1 port 8080: invalid format\n",
                false,
                ErrorKind::Unexpected,
                "banner exchange: Connection to 127.0.0.1 port 8080: invalid format",
            ),
            ("", true, ErrorKind::Unexpected, "exited without saying why (killed?)"),
        ];
        for (stderr, transient, kind, summary) in cases {
            let v = judge(stderr);
            assert_eq!(v, Verdict { transient, kind, summary: summary.into() }, "{stderr}");
        }
    }

    #[test]
    fn a_changed_host_key_reads_as_that_not_as_its_banner() {
        let stderr = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:8fPFNd8ieK/JghvnrWSx6kd8BAUCclbnMwdcWYCDcdk.
Please contact your system administrator.
Add correct host key in /home/u/.ssh/known_hosts to get rid of this message.
Offending ED25519 key in /home/u/.ssh/known_hosts:1
  remove with:
  ssh-keygen -f \"/home/u/.ssh/known_hosts\" -R \"[127.0.0.1]:47123\"
Host key for [127.0.0.1]:47123 has changed and you have requested strict checking.
Host key verification failed.
";
        let v = judge(stderr);
        assert!(!v.transient);
        assert_eq!(v.kind, ErrorKind::PermissionDenied);
        assert_eq!(
            v.summary,
            "the server's host key has changed (REMOTE HOST IDENTIFICATION HAS CHANGED); Offending ED25519 key in \
             /home/u/.ssh/known_hosts:1; Host key verification failed"
        );
    }

    #[test]
    fn only_a_failed_ssh_start_is_restated() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "ssh: connect to host h port 22: Connection refused",
        );
        let refused = restate(Error::new(ErrorKind::Unexpected, SSH_START_FAILED).set_source(io));
        assert!(refused.is_temporary());
        assert_eq!(refused.message(), "ssh: connect to host h port 22: Connection refused");
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "u@h: Permission denied (publickey).");
        let denied = restate(Error::new(ErrorKind::Unexpected, SSH_START_FAILED).set_source(io));
        assert!(!denied.is_temporary());
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        // ssh killed before it wrote its log: openssh reports the log missing.
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let killed = restate(Error::new(ErrorKind::Unexpected, SSH_START_FAILED).set_source(io));
        assert!(killed.is_temporary());
        assert_eq!(killed.message(), "ssh: exited without saying why (killed?)");
        // An SFTP error is opendal's to judge.
        let other = restate(Error::new(ErrorKind::NotFound, "sftp error"));
        assert_eq!((other.kind(), other.message(), other.is_temporary()), (ErrorKind::NotFound, "sftp error", false));
    }
}
