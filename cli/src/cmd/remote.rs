//! Opening and creating repositories on S3, SFTP and WebDAV (`--repo
//! s3:…`, `sftp://…`, `webdav:…`): the engine connects; this module words
//! what went wrong for the user (which credentials are looked for, how to
//! create a repository there).

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use arc_engine::repo::{InitOptions, PassphraseSource};
use arc_engine::storage::{self, Location, RemoteOptions, StorageSettings};
use arc_engine::Repository;

/// Where credentials for `location` come from, for hints.
fn credential_hint(location: &Location) -> &'static str {
    match location {
        Location::S3 { .. } => "S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or the AWS credentials file (AWS_PROFILE); the region from AWS_DEFAULT_REGION (default us-east-1)",
        Location::Sftp { .. } => "SFTP logs in as ssh does (agent, ~/.ssh/config, known_hosts); ARC_SFTP_KEY names an identity file, ARC_SSH_CONFIG an ssh config file",
        Location::WebDav { .. } => "WebDAV logs in as the URL's user with the password in ARC_WEBDAV_PASSWORD",
        Location::Local(_) => "",
    }
}

/// Transfer limits for every remote repository this process opens
/// (`--limit-upload`, `--limit-download`), set once from the command line.
static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Bytes per second up and down; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub upload: Option<u64>,
    pub download: Option<u64>,
}

/// Sets the limits of the command line (first call wins).
pub fn set_limits(l: Limits) {
    let _ = LIMITS.set(l);
}

fn options(extra: Option<Limits>, settings: Option<StorageSettings>) -> RemoteOptions {
    let global = LIMITS.get().copied().unwrap_or_default();
    let l = extra.unwrap_or_default();
    RemoteOptions {
        // A job's own limit wins over the command line's.
        limit_upload: l.upload.or(global.upload),
        limit_download: l.download.or(global.download),
        settings,
        ..RemoteOptions::default()
    }
}

/// Repositories this process gave up reaching (every retry of opening one
/// failed), by their shown location. `arc run` opens a job's repository
/// for each job: with the server down, each job spent the whole backoff
/// again (about 20 s), so 200 jobs on one host waited more than an hour
/// for a server that was not there. Once one open gave up, the next ones
/// try once: a server still down fails them at once, one that came back
/// serves them (and is retried normally from then on).
static UNREACHABLE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn gave_up_before(location: &Location) -> bool {
    UNREACHABLE.lock().map(|l| l.contains(&location.to_string())).unwrap_or(false)
}

/// Records how opening `location` ended (see [`UNREACHABLE`]).
fn note_reached(location: &Location, outcome: &Result<Repository>) {
    let Ok(mut list) = UNREACHABLE.lock() else { return };
    let shown = location.to_string();
    match outcome {
        Ok(_) => list.retain(|l| l != &shown),
        Err(e) if gave_up(e) && !list.contains(&shown) => list.push(shown),
        Err(_) => {}
    }
}

fn cache(cache_root: Option<PathBuf>) -> Result<PathBuf> {
    cache_root.ok_or_else(|| {
        anyhow!("a remote repository needs a local cache directory for its index: set XDG_CACHE_HOME or HOME")
    })
}

/// A server's words for credentials it refused.
const REFUSALS: [&str; 9] = [
    "credential",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "Forbidden",
    "403",
    "401",
    "PermissionDenied",
    "Permission denied",
];

/// Where credentials come from, for a refusal in the middle of a command
/// (a key rotated or a token expired during a backup): the errors of
/// opening a repository get it from [`explain`], a pack's PUT refused an
/// hour later did not. `object` is the engine's name of what was refused,
/// which starts with the repository's URL.
pub fn refusal_hint(object: &str, reason: &str) -> Option<&'static str> {
    if !REFUSALS.iter().any(|r| mentions(reason, r)) {
        return None;
    }
    Location::parse(object).ok().filter(Location::is_remote).map(|l| credential_hint(&l))
}

/// Adds where credentials come from when the server refused them (and
/// only then: a server that is down needs no hint about keys; an ssh login
/// or host key refused reads "(PermissionDenied)", a connection that could
/// not be made does not).
fn explain(location: &Location, e: arc_engine::Error) -> anyhow::Error {
    match &e {
        arc_engine::Error::Remote { reason, .. } if REFUSALS.iter().any(|r| mentions(reason, r)) => {
            anyhow!("{e} ({})", credential_hint(location))
        }
        arc_engine::Error::Remote { reason, .. } => match setup_hint(location, reason) {
            Some(hint) => anyhow!("{e} ({hint})"),
            None => e.into(),
        },
        _ => e.into(),
    }
}

/// What to do about a repository URL that points at something arc cannot
/// use as it is: a bucket that does not exist, a server whose certificate
/// is not trusted, an https:// URL for a plain HTTP server (the engine's
/// words for these: storage/remote.rs, remote/tls.rs).
fn setup_hint(location: &Location, reason: &str) -> Option<String> {
    if reason.contains("NoSuchBucket") {
        let bucket = match location {
            Location::S3 { bucket, .. } => bucket.as_str(),
            _ => "the bucket",
        };
        return Some(format!("arc does not create buckets: create {bucket} with the storage provider's tools first"));
    }
    if reason.contains("TLS certificate is not trusted") {
        return Some(
            "a private CA's certificate goes in the system's trust store, or in a file named by SSL_CERT_FILE".into(),
        );
    }
    if reason.contains("does not speak TLS") {
        return Some("if the server takes plain HTTP, the URL starts with http://".into());
    }
    None
}

/// Whether `reason` holds `word`, a status code not inside a longer number:
/// "port 40127: Connection refused" does not mention HTTP 401.
fn mentions(reason: &str, word: &str) -> bool {
    reason.match_indices(word).any(|(at, _)| {
        let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
        !digit(reason[..at].chars().next_back()) && !digit(reason[at + word.len()..].chars().next())
    })
}

pub fn open(
    location: &Location,
    cache_root: Option<PathBuf>,
    passphrase: Option<PassphraseSource<'_>>,
) -> Result<Repository> {
    open_limited(location, cache_root, passphrase, None, None)
}

/// [`open`], with transfer limits (a fleet job's) and storage variables
/// (an env file's) of its own.
pub fn open_limited(
    location: &Location,
    cache_root: Option<PathBuf>,
    passphrase: Option<PassphraseSource<'_>>,
    limits: Option<Limits>,
    settings: Option<StorageSettings>,
) -> Result<Repository> {
    let tried_before = gave_up_before(location);
    let opened = open_once(location, cache_root, passphrase, limits, settings, tried_before);
    note_reached(location, &opened);
    match opened {
        // Only a failure to reach it is explained so (a wrong passphrase
        // after the server came back is not).
        Err(e) if tried_before && is_remote_failure(&e) => {
            Err(e.context("not retried: it could not be reached earlier in this run"))
        }
        other => other,
    }
}

/// Whether `e` is a request that failed transiently until its retries ran
/// out.
fn gave_up(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<arc_engine::Error>(), Some(arc_engine::Error::Remote { attempts, .. }) if *attempts > 1)
    })
}

fn is_remote_failure(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<arc_engine::Error>(), Some(arc_engine::Error::Remote { .. })))
}

fn open_once(
    location: &Location,
    cache_root: Option<PathBuf>,
    passphrase: Option<PassphraseSource<'_>>,
    limits: Option<Limits>,
    settings: Option<StorageSettings>,
    once: bool,
) -> Result<Repository> {
    let cache = cache(cache_root)?;
    let mut opts = options(limits, settings);
    if once {
        opts.retries = 0;
    }
    let storage = storage::connect_with(location, opts).map_err(|e| explain(location, e))?;
    match Repository::open_cached_with(storage, &cache, passphrase) {
        Ok(r) => Ok(r),
        Err(arc_engine::Error::NotARepository { .. }) => {
            Err(anyhow!("no arc repository at {location}; create one with `arc init --repo {location}`"))
        }
        Err(arc_engine::Error::Io { path, source }) if path.starts_with(&cache) => Err(anyhow!(
            "cannot create the index cache {}: {source} (set XDG_CACHE_HOME to a writable directory)",
            path.display()
        )),
        Err(e) => Err(explain(location, e)),
    }
}

pub fn init(location: &Location, opts: &InitOptions, cache_root: Option<PathBuf>) -> Result<Repository> {
    let cache = cache(cache_root)?;
    let storage = storage::connect_with(location, options(None, None)).map_err(|e| explain(location, e))?;
    Repository::init_cached(storage, opts, &cache)
        .map_err(|e| explain(location, e))
        .with_context(|| format!("cannot create repository at {location}"))
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_refusal_in_the_middle_of_a_command_says_where_credentials_come_from() {
        let object = "s3:http://127.0.0.1:9000/bucket/data/d5/d597c2";
        let hint = super::refusal_hint(object, "S3 error SignatureDoesNotMatch (PutObject answered HTTP 403)");
        assert!(hint.is_some_and(|h| h.contains("AWS_SECRET_ACCESS_KEY")), "{hint:?}");
        assert_eq!(super::refusal_hint(object, "Connection refused (os error 111) (Unexpected)"), None);
        assert_eq!(super::refusal_hint("/srv/arc/data/d5/d597c2", "Permission denied"), None);
    }

    #[test]
    fn a_status_code_is_not_read_inside_a_longer_number() {
        assert!(mentions("HeadObject answered HTTP 403 (access denied)", "403"));
        assert!(mentions("S3 error AccessDenied (PutObject answered HTTP 403, gave up after 3 attempts)", "403"));
        assert!(!mentions("ssh: connect to host 127.0.0.1 port 40127: Connection refused (Unexpected)", "401"));
        assert!(!mentions("data/40/4031aa: 14030 bytes", "403"));
    }
}
