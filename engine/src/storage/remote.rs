//! Repositories on S3-compatible object storage, SFTP servers and WebDAV
//! shares, through opendal (one client library for the three, with its
//! retry and concurrency-limit layers; pinned in engine/Cargo.toml).
//!
//! The layout is the local one (storage/local.rs) under the bucket prefix
//! or directory, so a repository can be moved between a disk and a
//! server with any file-copying tool:
//!
//! ```text
//! config, data/<2 hex>/<pack>, index/<id>, snapshots/<id>, locks/<name>,
//! sessions/<id>, marks/<id>, keys/<id>, tmp/ (SFTP and WebDAV only:
//! staged puts)
//! ```
//!
//! opendal is asynchronous; the engine is not. Each backend owns one
//! tokio runtime and the engine's threads block on it, so nothing async
//! leaks out of this file and the engine's own bounded thread pools decide
//! how many requests are in flight (capped again by
//! [`RemoteOptions::connections`]).
//!
//! Puts: an S3 PUT (or multipart upload, for packs) is atomic: the object
//! appears complete or not at all. A pack staged as a file is sent from
//! the file (remote/upload.rs), not from memory. SFTP and WebDAV write a
//! file in place, so a put there writes `tmp/<name>.<pid>.<n>`, checks its
//! length and renames it over the final name (SFTP's posix-rename
//! extension, WebDAV's MOVE with Overwrite: T): a reader never sees a
//! partial file (remote/staged_put.rs, format-spec/v2/remote.md).
//!
//! Errors: a missing object is [`Error::Missing`]; everything else is
//! [`Error::Remote`] with the object's name in the repository and the
//! server's reason, never a credential (opendal's messages carry the
//! endpoint and path, not the signing keys).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opendal::layers::{ConcurrentLimitLayer, ConcurrentLimitSemaphore, RetryEvent, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};

use super::location::Location;
use super::{FileKind, FileStat, Storage};
use crate::error::{Error, Result};
use crate::ratelimit::RateLimit;

#[cfg(test)]
mod fake_http;
mod restate;
mod settings;
mod ssh;
mod staged_put;
mod tls;
mod upload;

use settings::Vars;
pub use settings::{variables_for, StorageSettings};
use upload::Source;

/// The most a ranged read allocates before its body arrives (restore reads
/// 20 MiB at most; a longer read grows as the bytes come).
const MAX_PREALLOC: u64 = 32 << 20;

tokio::task_local! {
    /// The retries opendal's retry layer has made for the request being
    /// awaited ([`RemoteStorage::call`]).
    static RETRIES: std::cell::Cell<u32>;
}

/// Counts a retry of the request in flight. The layer calls this from
/// inside the request's future, so the task-local counter is the one
/// [`RemoteStorage::call`] set up for that request.
fn count_retry(_: RetryEvent<'_>) {
    let _ = RETRIES.try_with(|n| n.set(n.get() + 1));
}

/// A request through opendal that failed, and how many times it was sent.
/// opendal's retry layer marks every final error alike (retried or not,
/// `is_temporary()` is false after it), so the count is kept beside the
/// error for the message: "gave up after 7 attempts".
struct Failed {
    error: opendal::Error,
    attempts: u32,
}

impl std::ops::Deref for Failed {
    type Target = opendal::Error;

    fn deref(&self) -> &opendal::Error {
        &self.error
    }
}

/// Tuning of a remote backend.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Requests in flight at once, at most (opendal's ConcurrentLimitLayer
    /// and the uploads streamed from files share them); also the engine's
    /// hint for parallel uploads and reads.
    pub connections: usize,
    /// Retries of a request that failed transiently (a timeout, a 5xx, a
    /// dropped connection), with jittered exponential backoff. Permanent
    /// errors (403, 404, a bad request) are never retried.
    pub retries: usize,
    /// Objects up to this size go in one PUT (S3): every pack arc writes.
    /// Pack sizes go up to 256 MiB, and a pack closes past its nominal
    /// size by up to one frame (at most the pack size again), so 1 GiB
    /// leaves room; S3 takes up to 5 GiB in one PUT. A pack's PUT is sent
    /// from its staged file a piece at a time, where a multipart upload
    /// holds its parts in memory (16 MiB each, a few per upload: with
    /// `--pack-size 64MiB`, whose packs are just over 64 MiB, the 64 MiB
    /// this was before made a www backup to Garage peak at 181 MiB instead
    /// of 83: BENCHMARKS.md, "Remote, session 14"), costs
    /// two more round trips and, on servers that assemble the parts
    /// (s3s-fs), writing the whole object a second time. What a single
    /// PUT costs instead: a retry sends the whole pack again.
    pub single_put_max: usize,
    /// Parts of a multipart upload (S3), for objects above
    /// `single_put_max`.
    pub part_size: usize,
    /// A request that makes no progress for this long fails (and is
    /// retried): a server that hangs does not hang arc.
    pub io_timeout: Duration,
    /// Bytes per second sent, all uploads together (`--limit-upload`).
    pub limit_upload: Option<u64>,
    /// Bytes per second received, all downloads together
    /// (`--limit-download`).
    pub limit_download: Option<u64>,
    /// The storage variables of this repository, when they are not the
    /// process environment's (settings.rs).
    pub settings: Option<StorageSettings>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            connections: 8,
            retries: 6,
            single_put_max: 1 << 30,
            part_size: 16 * 1024 * 1024,
            io_timeout: Duration::from_secs(60),
            limit_upload: None,
            limit_download: None,
            settings: None,
        }
    }
}

/// Where a file of `kind` named `name` lives, relative to the repository's
/// root: the local layout.
pub fn object_path(kind: FileKind, name: &str) -> String {
    match kind {
        FileKind::Config => "config".into(),
        FileKind::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("00")),
        _ => format!("{}/{name}", kind_dir(kind)),
    }
}

/// The directory of `kind` (packs: the parent of the shard directories).
fn kind_dir(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Config => "",
        FileKind::Pack => "data",
        FileKind::Index => "index",
        FileKind::Snapshot => "snapshots",
        FileKind::Lock => "locks",
        FileKind::Session => "sessions",
        FileKind::Mark => "marks",
        FileKind::Quarantine => "quarantine",
        FileKind::Key => "keys",
    }
}

pub struct RemoteStorage {
    op: Operator,
    rt: tokio::runtime::Runtime,
    /// Shown to the user; never holds a credential.
    shown: String,
    /// false: stage puts in tmp/ and rename (SFTP, WebDAV).
    atomic_put: bool,
    opts: RemoteOptions,
    tmp_counter: AtomicU64,
    /// Token buckets shared by every request of this backend: a put pays
    /// for its bytes before it is sent, a read for the bytes it asks for
    /// (a whole-file get once it knows the length), so the average rate
    /// over any stretch longer than the bucket's tenth of a second stays
    /// under the limit however many requests run at once.
    upload: Option<RateLimit>,
    download: Option<RateLimit>,
    /// Whether the store honours `If-None-Match: *` (see
    /// [`RemoteStorage::honours_conditional_writes`]); probed once, when
    /// first needed.
    conditional: std::sync::OnceLock<bool>,
    /// The private `ssh` wrapper of an SFTP repository (see [`ssh_wrapper`]).
    _ssh_wrapper: Option<TempDir>,
    /// S3 and WebDAV: the client of the uploads streamed from a file
    /// (remote/upload.rs).
    http: Option<reqwest::Client>,
    /// WebDAV: how its PUTs are addressed (remote/staged_put.rs).
    dav: Option<staged_put::Dav>,
    /// WebDAV: `tmp/` is known to exist.
    dav_tmp_ready: std::sync::atomic::AtomicBool,
    /// The operator without the retry layer, for the writes of staged puts
    /// on SFTP and WebDAV, which retry whole (remote/staged_put.rs).
    op_once: Operator,
    /// The requests in flight, opendal's and the streamed uploads together.
    slots: Slots,
}

/// The limit of requests in flight to one repository
/// ([`RemoteOptions::connections`]): opendal's ConcurrentLimitLayer takes
/// its permits from here, and so do the uploads that bypass opendal.
#[derive(Clone)]
struct Slots(std::sync::Arc<tokio::sync::Semaphore>);

impl Slots {
    /// A permit, held until dropped. The semaphore is never closed, so
    /// `None` cannot happen; if it did, the request would go unlimited
    /// rather than fail.
    async fn acquire_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.clone().acquire_owned().await.ok()
    }
}

impl ConcurrentLimitSemaphore for Slots {
    type Permit = Option<tokio::sync::OwnedSemaphorePermit>;

    async fn acquire(&self) -> Self::Permit {
        self.acquire_slot().await
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config_error(location: &Location, reason: impl std::fmt::Display) -> Error {
    Error::Remote { object: location.to_string(), reason: reason.to_string(), attempts: 0 }
}

impl RemoteStorage {
    /// Connects to the repository at `location` (not a local path). Nothing
    /// is read or written yet except, for SFTP, the ssh connection.
    pub fn open(location: &Location, opts: RemoteOptions) -> Result<RemoteStorage> {
        // The test hook lowers the retries, never raises them: a caller
        // that asked for none gets none.
        let opts = RemoteOptions { retries: crate::fault::remote_retries(opts.retries).min(opts.retries), ..opts };
        // The HTTP client (reqwest with rustls) is installed once per
        // process; without opendal's constructor feature this is explicit.
        opendal::install_default();
        let env = Vars(opts.settings.as_ref());
        let mut wrapper = None;
        let mut dav = None;
        let (builder_op, atomic_put) = match location {
            Location::Local(_) => {
                return Err(Error::InvalidArgument {
                    what: "repository",
                    reason: format!("{location} is a local directory, not a remote repository"),
                })
            }
            Location::S3 { endpoint, bucket, prefix } => {
                // Region: restic's and the AWS CLI's variable; Garage and
                // s3s-fs accept any region in the signature.
                let region = env
                    .get("AWS_DEFAULT_REGION")
                    .or_else(|| env.get("AWS_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                let mut b = opendal::services::S3::default()
                    .endpoint(endpoint)
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(&region)
                    // No probing of an EC2 metadata endpoint: it does not
                    // exist off EC2, and waiting for it would delay every
                    // error about missing credentials.
                    .disable_ec2_metadata();
                // Explicit variables first; otherwise opendal reads the AWS
                // shared credentials and config files (AWS_PROFILE,
                // AWS_SHARED_CREDENTIALS_FILE) as the AWS tools do.
                let keys = (env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY"));
                let explicit = keys.0.is_some() && keys.1.is_some();
                if let (Some(k), Some(s)) = keys {
                    b = b.access_key_id(&k).secret_access_key(&s);
                    if let Some(t) = env.get("AWS_SESSION_TOKEN") {
                        b = b.session_token(&t);
                    }
                }
                match env.get("AWS_PROFILE") {
                    // The AWS credential chain reads the environment's keys
                    // before any profile: with a profile given for this
                    // repository, keys in the environment would sign its
                    // requests instead.
                    Some(_) if env.given() && !explicit && std::env::var_os("AWS_ACCESS_KEY_ID").is_some() => {
                        return Err(config_error(
                            location,
                            "its AWS_PROFILE cannot be used while AWS_ACCESS_KEY_ID is set in the environment, \
                             which the AWS credential chain reads first; give this repository its keys instead",
                        ));
                    }
                    Some(p) => b = b.profile(&p),
                    // Keys given for this repository are all it uses: the
                    // environment's and the AWS files' are another
                    // repository's.
                    None if env.given() => b = b.disable_config_load(),
                    None => {}
                }
                // Innermost, under the retry layer: a TLS handshake that
                // cannot succeed is not retried (remote/tls.rs).
                (Operator::new(b).map_err(|e| config_error(location, e))?.layer(restate::Restate(tls::restate)), true)
            }
            Location::Sftp { user, host, port, path } => {
                let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
                let endpoint = match port {
                    Some(p) => format!("ssh://{host}:{p}"),
                    None => format!("ssh://{host}"),
                };
                // `/~/dir` is relative to the login directory, as in scp.
                let root = path.strip_prefix("/~/").map(str::to_string).unwrap_or_else(|| path.clone());
                let mut b = opendal::services::Sftp::default().endpoint(&endpoint).root(&root);
                if let Some(u) = user {
                    b = b.user(u);
                }
                if let Some(k) = env.get("ARC_SFTP_KEY") {
                    b = b.key(&k);
                }
                wrapper = Some(ssh_wrapper(location, env.get("ARC_SSH_CONFIG").as_deref())?);
                // Innermost, under the retry layer: a failed ssh start that
                // is worth another attempt is retried like any request
                // (remote/ssh.rs).
                (Operator::new(b).map_err(|e| config_error(location, e))?.layer(restate::Restate(ssh::restate)), false)
            }
            Location::WebDav { endpoint, user, path } => {
                let mut b = opendal::services::Webdav::default().endpoint(endpoint).root(&format!("/{path}"));
                if let Some(u) = user {
                    b = b.username(u);
                }
                let password = env.get("ARC_WEBDAV_PASSWORD");
                if let Some(p) = &password {
                    b = b.password(p);
                }
                dav = Some(
                    staged_put::Dav::new(endpoint, &format!("/{path}"), user.as_deref(), password.as_deref())
                        .map_err(|e| config_error(location, e))?,
                );
                (Operator::new(b).map_err(|e| config_error(location, e))?.layer(restate::Restate(tls::restate)), false)
            }
        };
        let slots = Slots(std::sync::Arc::new(tokio::sync::Semaphore::new(opts.connections.max(1))));
        // The client opendal's own default transport builds (reqwest's
        // defaults), for the uploads sent around it.
        let http = match location {
            Location::S3 { .. } | Location::WebDav { .. } => Some(
                reqwest::Client::builder()
                    .connect_timeout(opts.io_timeout)
                    .build()
                    .map_err(|e| config_error(location, format!("cannot start the HTTP client: {e}")))?,
            ),
            _ => None,
        };
        let op_once = builder_op
            .clone()
            .layer(TimeoutLayer::new().with_io_timeout(opts.io_timeout))
            .layer(ConcurrentLimitLayer::with_semaphore(slots.clone()));
        let op = builder_op
            .layer(TimeoutLayer::new().with_io_timeout(opts.io_timeout))
            // Each attempt takes a slot of its own and gives it back when it
            // ends: with the limit outside the retries, a request waiting out
            // its backoff (up to 10 s) held a slot that others could use.
            .layer(ConcurrentLimitLayer::with_semaphore(slots.clone()))
            // Retries sit outside the timeout so a request that hung is
            // retried; opendal retries only errors it marks temporary.
            .layer(
                RetryLayer::new()
                    .with_max_times(opts.retries)
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_jitter()
                    .with_notify(count_retry),
            );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("arc-remote")
            .enable_all()
            .build()
            .map_err(|e| config_error(location, format!("cannot start the I/O runtime: {e}")))?;
        Ok(RemoteStorage {
            op,
            rt,
            shown: location.to_string(),
            atomic_put,
            opts: opts.clone(),
            tmp_counter: AtomicU64::new(0),
            upload: opts.limit_upload.map(RateLimit::new),
            download: opts.limit_download.map(RateLimit::new),
            conditional: std::sync::OnceLock::new(),
            _ssh_wrapper: wrapper,
            http,
            dav,
            dav_tmp_ready: std::sync::atomic::AtomicBool::new(false),
            op_once,
            slots,
        })
    }

    /// Whether a write with if-not-exists really refuses to replace an
    /// existing object. Probed once per process, when first needed: the
    /// same probe object (`tmp/probe-<random>`) is written twice with
    /// `If-None-Match: *`; a store that honours it refuses the second
    /// write (412), one that ignores it (Garage) overwrites. SFTP and
    /// WebDAV offer no such write at all. The probe object is deleted
    /// (a lost delete leaves it to prune's `tmp/` cleanup). Nothing in the
    /// commit and prune protocol depends on the answer
    /// (format-spec/v2/remote.md §3).
    pub fn honours_conditional_writes(&self) -> Result<bool> {
        if let Some(v) = self.conditional.get() {
            return Ok(*v);
        }
        let v = self.probe_conditional_writes()?;
        Ok(*self.conditional.get_or_init(|| v))
    }

    fn probe_conditional_writes(&self) -> Result<bool> {
        if !self.atomic_put || !self.op.info().capability().write_with_if_not_exists {
            return Ok(false);
        }
        let mut rnd = [0u8; 16];
        crate::crypto::fill_random(&mut rnd)?;
        let path = format!("tmp/probe-{}", hex::encode(rnd));
        let write =
            || self.call(self.op.write_with(&path, opendal::Buffer::from(b"probe".to_vec())).if_not_exists(true));
        let first = write();
        let second = first.is_ok().then(write);
        let _ = self.call(self.op.delete(&path));
        let failed = match (first, second) {
            (Ok(_), Some(Ok(_))) => return Ok(false),
            (Ok(_), Some(Err(e))) if e.kind() == ErrorKind::ConditionNotMatch => return Ok(true),
            (Ok(_), None) => return Ok(false),
            (Ok(_), Some(Err(e))) | (Err(e), _) => e,
        };
        // A store that rejects the header itself does not honour it.
        if failed.kind() == ErrorKind::Unsupported {
            return Ok(false);
        }
        Err(self.other(&path, failed))
    }

    fn path(&self, kind: FileKind, name: &str) -> Result<String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::InvalidArgument { what: "file name", reason: format!("{name:?}") });
        }
        Ok(object_path(kind, name))
    }

    fn err(&self, kind: FileKind, name: &str, e: Failed) -> Error {
        if e.kind() == ErrorKind::NotFound && !no_such_bucket(&e) {
            return Error::Missing { kind: kind.describe(), name: name.to_string() };
        }
        self.other(&object_path(kind, name), e)
    }

    fn other(&self, path: &str, e: Failed) -> Error {
        self.remote_error(path, &Reason::of(&e), e.attempts)
    }

    /// The error of `path` (relative to the repository), sent `attempts`
    /// times, for `reason`.
    fn remote_error(&self, path: &str, reason: &Reason, attempts: u32) -> Error {
        Error::Remote {
            object: format!("{}/{path}", self.shown.trim_end_matches('/')),
            reason: reason.line(attempts),
            attempts,
        }
    }

    fn block<F: std::future::IntoFuture>(&self, f: F) -> F::Output {
        self.rt.block_on(f.into_future())
    }

    /// An opendal request, run to its end (retries included); a failure
    /// says how many times it was sent.
    fn call<T, F: std::future::IntoFuture<Output = opendal::Result<T>>>(&self, f: F) -> std::result::Result<T, Failed> {
        let counted = RETRIES.scope(std::cell::Cell::new(0), async move {
            f.await.map_err(|error| Failed { error, attempts: RETRIES.with(|n| n.get()).saturating_add(1) })
        });
        self.rt.block_on(counted)
    }

    /// Lists `dir` recursively: names and stats of its files.
    fn list_dir(&self, kind: FileKind, dir: &str) -> Result<Vec<(String, FileStat)>> {
        let entries = match self.call(self.op.list_with(&format!("{dir}/")).recursive(true)) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.other(dir, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let meta = entry.metadata();
            if !meta.is_file() {
                continue;
            }
            let Some(name) = entry.name().rsplit('/').find(|s| !s.is_empty()) else { continue };
            if name.starts_with('.') {
                continue;
            }
            let name = name.to_string();
            // S3's listing carries size and time; SFTP's and WebDAV's do
            // too on every server tested, but a listing without them
            // costs one stat per file rather than a wrong answer.
            let stat = match meta.last_modified() {
                Some(t) => FileStat { len: meta.content_length(), modified: SystemTime::from(t) },
                None => match self.stat_path(kind, &name, entry.path()) {
                    Ok(s) => s,
                    Err(Error::Missing { .. }) => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push((name, stat));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    fn stat_path(&self, kind: FileKind, name: &str, path: &str) -> Result<FileStat> {
        let meta = self.call(self.op.stat(path)).map_err(|e| self.err(kind, name, e))?;
        let modified = meta.last_modified().map(SystemTime::from).ok_or_else(|| Error::Remote {
            object: format!("{}/{path}", self.shown),
            reason: "the server reports no modification time".into(),
            attempts: 1,
        })?;
        Ok(FileStat { len: meta.content_length(), modified })
    }
}

/// Whether S3 answered that the bucket itself does not exist: a 404 like
/// a missing object's, but "no arc repository here; create one with `arc
/// init`" would send the user to an init that fails the same way (arc
/// does not create buckets). Said as the server's error instead.
fn no_such_bucket(e: &opendal::Error) -> bool {
    s3_error_body(e.message().trim()).is_some_and(|b| b.starts_with("S3 error NoSuchBucket"))
}

/// `S3Error { code: "X", message: "M", .. }`, as opendal renders an S3
/// error body, as "S3 error X: M".
fn s3_error_body(msg: &str) -> Option<String> {
    // A Debug-quoted string: up to the first quote not escaped, with its
    // escapes undone (Garage's quorum message quotes its nodes' errors).
    let quoted = |key: &str| {
        let rest = &msg[msg.find(&format!("{key}: \""))? + key.len() + 3..];
        let mut out = String::new();
        let mut chars = rest.chars();
        loop {
            match chars.next()? {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
    };
    if !msg.starts_with("S3Error") {
        return None;
    }
    let code = quoted("code")?;
    Some(match quoted("message").filter(|m| !m.is_empty()) {
        Some(m) => format!("S3 error {code}: {m}"),
        None => format!("S3 error {code}"),
    })
}

/// What an error without a message (a HEAD has no body to explain it) says
/// in its context: the operation and the HTTP status, e.g. "HeadObject
/// answered HTTP 403", instead of opendal's whole context dump.
fn status_only(e: &opendal::Error) -> Option<String> {
    let text = e.to_string();
    let after = |key: &str| -> Option<String> {
        let rest = &text[text.find(key)? + key.len()..];
        Some(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
    };
    let status = after("status: ").filter(|s| !s.is_empty())?;
    let op = after("service_operation: ").filter(|s| !s.is_empty()).unwrap_or_else(|| "the request".into());
    let reason = match status.as_str() {
        "400" => " (bad request: a malformed bucket name or URL?)",
        "401" | "403" => " (access denied)",
        "404" => " (not found)",
        "409" => " (conflict)",
        "500" | "502" | "503" | "504" => " (server error)",
        _ => "",
    };
    Some(format!("{op} answered HTTP {status}{reason}"))
}

/// Why a request failed, before it is put in one line: what happened, and
/// the note in brackets after it (opendal's error kind, or the HTTP answer
/// when an S3 error body says what happened).
pub(super) struct Reason {
    text: String,
    note: Option<String>,
}

impl Reason {
    pub(super) fn new(text: impl Into<String>, note: Option<String>) -> Reason {
        Reason { text: text.into(), note }
    }

    /// opendal's error, in short (see [`describe`]).
    pub(super) fn of(e: &opendal::Error) -> Reason {
        let mut out = String::new();
        let msg = e.message().trim();
        if let Some(body) = s3_error_body(msg) {
            out.push_str(&body);
        } else if !msg.is_empty() {
            out.push_str(msg);
        } else if let Some(status) = status_only(e) {
            out.push_str(&status);
        }
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let text = s.to_string();
            if !text.is_empty() && !out.contains(&text) {
                if !out.is_empty() {
                    out.push_str(": ");
                }
                out.push_str(&text);
            }
            src = s.source();
        }
        if out.is_empty() {
            out = e.to_string();
        }
        let one_line: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut short: String = one_line.chars().take(400).collect();
        if short.len() < one_line.len() {
            short.push('…');
        }
        Reason::new(short, Some(e.kind().to_string()))
    }

    /// The one form of every remote failure, whoever retried it (opendal's
    /// retry layer or arc's own loops for uploads): "S3 error SlowDown
    /// (Unexpected, gave up after 7 attempts)", the count only for a
    /// request sent more than once.
    pub(super) fn line(&self, attempts: u32) -> String {
        let mut notes: Vec<String> = self.note.iter().cloned().collect();
        if attempts > 1 {
            notes.push(format!("gave up after {attempts} attempts"));
        }
        if notes.is_empty() {
            self.text.clone()
        } else {
            format!("{} ({})", self.text, notes.join(", "))
        }
    }
}

/// The ssh that opendal starts, adjusted: opendal's SFTP service runs the
/// system `ssh` by name and exposes neither `-F` nor the master
/// connection's lifetime, so a private directory with an `ssh` script
/// goes first in PATH. The script passes its arguments on, adding
/// * `-o ControlPersist=5`: the master connection ends 5 s after its last
///   user (arc) is gone. The library asks for `yes` (forever) and closes
///   the master when its session is dropped, which never happens when
///   arc exits with the connection pooled; ssh takes the first value of
///   an option, so ours wins.
/// * `-F FILE` for ARC_SSH_CONFIG, instead of `~/.ssh/config`.
fn ssh_wrapper(location: &Location, config: Option<&str>) -> Result<TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let quote = |p: &std::path::Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let config_arg = match config {
        Some(c) => {
            let c = std::fs::canonicalize(c).map_err(|e| config_error(location, format!("ARC_SSH_CONFIG {c}: {e}")))?;
            format!(" -F {}", quote(&c))
        }
        None => String::new(),
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("arc-ssh-{}-", std::process::id());
    // The real ssh: the first in PATH that is not one of our wrappers
    // (a second SFTP repository in the same process, `copy`).
    let real = std::env::split_paths(&path)
        .filter(|d| !d.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
        .map(|d| d.join("ssh"))
        .find(|p| p.is_file())
        .ok_or_else(|| config_error(location, "no ssh in PATH (SFTP repositories need the OpenSSH client)"))?;
    let dir = std::env::temp_dir().join(format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed)));
    let wrap = |e: std::io::Error| config_error(location, format!("cannot prepare ssh: {e}"));
    std::fs::create_dir_all(&dir).map_err(wrap)?;
    let dir = TempDir(dir);
    let script = format!("#!/bin/sh\nexec {} -o ControlPersist=5{config_arg} \"$@\"\n", quote(&real));
    let file = dir.0.join("ssh");
    std::fs::write(&file, script).map_err(wrap)?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)).map_err(wrap)?;
    let mut paths = vec![dir.0.clone()];
    paths.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(paths).map_err(|e| config_error(location, e))?;
    // The process's own PATH: set before any ssh starts, by the thread
    // that opens the repository.
    std::env::set_var("PATH", joined);
    Ok(dir)
}

impl Storage for RemoteStorage {
    fn location(&self) -> String {
        self.shown.clone()
    }

    fn local_path(&self) -> Option<&std::path::Path> {
        None
    }

    fn put(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        // opendal sends only buffers it owns: a borrowed slice is copied.
        self.put_owned(kind, name, Bytes::copy_from_slice(data))
    }

    fn put_owned(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        if !self.atomic_put {
            return self.put_staged(kind, name, Source::Memory(data));
        }
        let path = self.path(kind, name)?;
        if let Some(l) = &self.upload {
            l.take(data.len());
        }
        // A Buffer made of one Bytes shares its memory: no copy.
        let len = data.len();
        let mut w = self.op.write_with(&path, opendal::Buffer::from(data));
        if len > self.opts.single_put_max {
            w = w.chunk(self.opts.part_size).concurrent(2);
        }
        self.call(w).map_err(|e| self.err(kind, name, e))?;
        Ok(())
    }

    /// Sent from the file as the connection takes it: S3 in one PUT
    /// (remote/upload.rs), SFTP and WebDAV into a temporary file renamed
    /// into place (remote/staged_put.rs).
    fn put_file(&self, kind: FileKind, name: &str, path: &std::path::Path) -> Result<()> {
        match &self.http {
            Some(http) if self.atomic_put => self.put_file_s3(http, kind, name, path)?,
            _ => self.put_staged(kind, name, Source::File(path))?,
        }
        // Stored: the staged copy is only a leftover now (as in
        // put_file_by_copy).
        let _ = std::fs::remove_file(path);
        Ok(())
    }

    fn get(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let path = self.path(kind, name)?;
        let buf = self.call(self.op.read(&path)).map_err(|e| self.err(kind, name, e))?;
        if let Some(l) = &self.download {
            l.take(buf.len());
        }
        Ok(buf.to_vec())
    }

    fn get_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_range_into(kind, name, offset, len, &mut out)?;
        Ok(out)
    }

    fn get_range_into(&self, kind: FileKind, name: &str, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<()> {
        let path = self.path(kind, name)?;
        out.clear();
        if len == 0 {
            return Ok(());
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::corrupt(kind.describe(), name, format!("range {offset}+{len} overflows")))?;
        if let Some(l) = &self.download {
            l.take(usize::try_from(len).unwrap_or(usize::MAX));
        }
        crate::fault::pause_at("remote-read");
        // The body is copied into one buffer as it arrives: reading it into
        // opendal's `Buffer` and then copying that out held every range
        // twice at its peak (a restore from S3 peaked at 320-340 MB where a
        // local one takes 100). The first allocation is capped so that a
        // damaged index cannot ask for gigabytes before the server answers.
        let read = async {
            let reader = self.op.reader_with(&path).await?;
            out.reserve(usize::try_from(len.min(MAX_PREALLOC)).unwrap_or(0));
            reader.read_into(out, offset..end).await?;
            Ok::<_, opendal::Error>(())
        };
        let truncated =
            || Error::corrupt(kind.describe(), name, format!("truncated: range {offset}+{len} past end of file"));
        match self.call(read) {
            Ok(()) => {}
            // 416: the range starts past the end.
            Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => return Err(truncated()),
            // A range that starts inside the object but ends past it comes
            // back short, and opendal reports that in its own words ("reader
            // got too little data"), which name neither the cause nor the
            // file. One stat on this error path tells a truncated object
            // from a failed transfer.
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(match self.call(self.op.stat(&path)) {
                    Ok(meta) if meta.content_length() < end => truncated(),
                    _ => self.err(kind, name, e),
                })
            }
            Err(e) => return Err(self.err(kind, name, e)),
        }
        if out.len() as u64 != len {
            return Err(truncated());
        }
        Ok(())
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        Ok(self.stat(kind, name)?.len)
    }

    fn exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        let path = self.path(kind, name)?;
        match self.call(self.op.stat(&path)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err(kind, name, e)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        Ok(self.list_stat(kind)?.into_iter().map(|(n, s)| (n, s.len)).collect())
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path(kind, name)?;
        match self.call(self.op.delete(&path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(kind, name, e)),
        }
    }

    fn delete_many(&self, kind: FileKind, names: &[String]) -> Result<()> {
        let paths = names.iter().map(|n| self.path(kind, n)).collect::<Result<Vec<_>>>()?;
        // S3 batches these (DeleteObjects, up to 1000 a request); the
        // other services delete one by one inside opendal.
        match self.call(self.op.delete_iter(paths)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.other(kind_dir(kind), e)),
        }
    }

    fn stat(&self, kind: FileKind, name: &str) -> Result<FileStat> {
        let path = self.path(kind, name)?;
        self.stat_path(kind, name, &path)
    }

    fn list_stat(&self, kind: FileKind) -> Result<Vec<(String, FileStat)>> {
        if kind == FileKind::Config {
            return match self.stat(kind, "config") {
                Ok(s) => Ok(vec![("config".into(), s)]),
                Err(Error::Missing { .. }) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        self.list_dir(kind, kind_dir(kind))
    }

    fn concurrency(&self) -> usize {
        self.opts.connections
    }

    fn put_new(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<bool> {
        if !self.honours_conditional_writes()? {
            // A check, then a put that replaces whatever is there (SFTP,
            // WebDAV, Garage): two writers that both found nothing both
            // put, and the later one's file stays. Two `arc init`s of one
            // location at once (a fleet's provisioning) both said
            // "created", and the earlier one's key file opened nothing.
            // Read back after a wait longer than the other writer's check
            // and put can take (as long as ours took, twice): the earlier
            // writer finds the other's file and reports it as there
            // before. A writer slower than that still wins unseen.
            let started = std::time::Instant::now();
            if self.exists(kind, name)? {
                return Ok(false);
            }
            crate::fault::pause_at("put-new");
            self.put(kind, name, data)?;
            std::thread::sleep((started.elapsed() * 2).max(Duration::from_millis(500)));
            return Ok(self.get(kind, name)? == data);
        }
        let path = self.path(kind, name)?;
        if let Some(l) = &self.upload {
            l.take(data.len());
        }
        let w = self.op.write_with(&path, opendal::Buffer::from(data.to_vec())).if_not_exists(true);
        match self.call(w) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(self.err(kind, name, e)),
        }
    }

    fn list_tmp(&self) -> Result<Vec<(String, FileStat)>> {
        self.list_dir(FileKind::Lock, "tmp")
    }

    fn delete_tmp(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::InvalidArgument { what: "file name", reason: format!("{name:?}") });
        }
        let path = format!("tmp/{name}");
        match self.call(self.op.delete(&path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.other(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fake_http::{self, Reply, Request};

    const NAME: &str = "ab12000000000000000000000000000000000000000000000000000000000000";

    /// What a healthy S3 answers to each request the tests below make.
    fn s3_ok(req: &Request) -> String {
        const MODIFIED: &str = "Last-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\nETag: \"x\"\r\n";
        match req.method.as_str() {
            "HEAD" => format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n{MODIFIED}Connection: close\r\n\r\n"),
            "GET" if req.target.contains("list-type=2") => fake_http::response(
                "200 OK",
                "Content-Type: application/xml\r\n",
                &format!(
                    "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name><KeyCount>1</KeyCount>\
                     <IsTruncated>false</IsTruncated><Contents><Key>repo/index/{NAME}</Key>\
                     <LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"x\"</ETag><Size>5</Size>\
                     </Contents></ListBucketResult>"
                ),
            ),
            "GET" => fake_http::response("200 OK", MODIFIED, "hello"),
            "PUT" => fake_http::response("200 OK", "ETag: \"x\"\r\n", ""),
            "DELETE" => "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into(),
            _ => fake_http::response("400 Bad Request", "", ""),
        }
    }

    fn s3(port: u16, retries: usize) -> RemoteStorage {
        std::env::set_var("AWS_ACCESS_KEY_ID", "GK0123456789abcdef01234567");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let location =
            Location::S3 { endpoint: format!("http://127.0.0.1:{port}"), bucket: "b".into(), prefix: "repo".into() };
        RemoteStorage::open(&location, RemoteOptions { retries, ..Default::default() }).unwrap()
    }

    /// One call of each request kind, by the method it is sent with (a
    /// listing is a GET with `list-type=2`).
    type Call = fn(&RemoteStorage) -> Result<()>;
    const KINDS: [(&str, Call); 5] = [
        ("GET", |s| {
            assert_eq!(s.get(FileKind::Config, "config")?, b"hello");
            Ok(())
        }),
        ("HEAD", |s| {
            assert_eq!(s.stat(FileKind::Index, NAME)?.len, 5);
            Ok(())
        }),
        ("LIST", |s| {
            assert_eq!(s.list(FileKind::Index)?, vec![(NAME.to_string(), 5)]);
            Ok(())
        }),
        ("PUT", |s| s.put(FileKind::Index, NAME, b"hello")),
        ("DELETE", |s| s.delete(FileKind::Index, NAME)),
    ];

    fn is_kind(req: &Request, kind: &str) -> bool {
        match kind {
            "LIST" => req.method == "GET" && req.target.contains("list-type=2"),
            "GET" => req.method == "GET" && !req.target.contains("list-type=2"),
            m => req.method == m,
        }
    }

    /// Runs each request kind against its own server answering `script`
    /// then `then`; returns per kind the outcome and the requests of that
    /// kind the server saw.
    fn each_kind(script: &[Reply], then: Reply, retries: usize) -> Vec<(&'static str, Result<()>, usize)> {
        std::thread::scope(|scope| {
            let runs: Vec<_> = KINDS
                .iter()
                .map(|&(kind, call)| {
                    let script = script.to_vec();
                    scope.spawn(move || {
                        let (port, log) = fake_http::serve(script, then, s3_ok);
                        let outcome = call(&s3(port, retries));
                        let sent = log.lock().unwrap().iter().filter(|r| is_kind(r, kind)).count();
                        (kind, outcome, sent)
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        })
    }

    #[test]
    fn server_errors_are_retried_on_every_request_kind() {
        let script = [Reply::Fail(503, "ServiceUnavailable"), Reply::Fail(500, "InternalError")];
        for (kind, outcome, sent) in each_kind(&script, Reply::Ok, 3) {
            assert!(outcome.is_ok(), "{kind}: {outcome:?}");
            assert_eq!(sent, 3, "{kind}: two failures and the success");
        }
    }

    #[test]
    fn a_request_that_keeps_failing_says_it_gave_up_after_its_attempts() {
        for (kind, outcome, sent) in each_kind(&[], Reply::Fail(503, "ServiceUnavailable"), 2) {
            let e = outcome.expect_err(kind).to_string();
            assert_eq!(sent, 3, "{kind}: {e}");
            assert!(e.contains("gave up after 3 attempts"), "{kind}: {e}");
            assert!(e.contains("503") || e.contains("ServiceUnavailable"), "{kind}: {e}");
        }
        // A refusal is final at once, and says nothing of retries.
        for (kind, outcome, sent) in each_kind(&[], Reply::Fail(403, "AccessDenied"), 2) {
            let e = outcome.expect_err(kind).to_string();
            assert_eq!(sent, 1, "{kind}: {e}");
            assert!(!e.contains("gave up"), "{kind}: {e}");
        }
    }

    #[test]
    fn a_request_waiting_to_retry_holds_no_slot() {
        // One slot. The first request is answered 503 and waits at least
        // 200 ms before it is sent again; a request made meanwhile goes
        // out before that retry, not after it.
        let (port, log) = fake_http::serve(vec![Reply::Fail(503, "ServiceUnavailable")], Reply::Ok, s3_ok);
        std::env::set_var("AWS_ACCESS_KEY_ID", "GK0123456789abcdef01234567");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let location =
            Location::S3 { endpoint: format!("http://127.0.0.1:{port}"), bucket: "b".into(), prefix: "repo".into() };
        let storage =
            RemoteStorage::open(&location, RemoteOptions { retries: 2, connections: 1, ..Default::default() }).unwrap();
        std::thread::scope(|scope| {
            let first = scope.spawn(|| storage.get(FileKind::Index, NAME));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while log.lock().unwrap().is_empty() {
                assert!(std::time::Instant::now() < deadline, "the first request never came");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(storage.stat(FileKind::Index, NAME).unwrap().len, 5);
            assert_eq!(first.join().unwrap().unwrap(), b"hello");
        });
        let methods: Vec<String> = log.lock().unwrap().iter().map(|r| r.method.clone()).collect();
        assert_eq!(methods, ["GET", "HEAD", "GET"], "the HEAD waited for the GET's retry");
    }

    #[test]
    fn a_missing_bucket_is_not_a_missing_file() {
        let (port, _) = fake_http::serve(Vec::new(), Reply::Fail(404, "NoSuchBucket"), s3_ok);
        let e = s3(port, 0).get(FileKind::Config, "config").unwrap_err();
        assert!(matches!(e, Error::Remote { .. }), "{e:?}");
        assert!(e.to_string().contains("NoSuchBucket"), "{e}");
        let (port, _) = fake_http::serve(Vec::new(), Reply::Fail(404, "NoSuchKey"), s3_ok);
        let e = s3(port, 0).get(FileKind::Config, "config").unwrap_err();
        assert!(matches!(e, Error::Missing { .. }), "{e:?}");
    }

    #[test]
    fn errors_read_as_one_short_line() {
        let body = opendal::Error::new(
            ErrorKind::PermissionDenied,
            r#"S3Error { code: "SignatureDoesNotMatch", message: "", resource: "", request_id: "" }"#,
        );
        assert_eq!(Reason::of(&body).line(1), "S3 error SignatureDoesNotMatch (PermissionDenied)");
        let with_message = opendal::Error::new(
            ErrorKind::Unexpected,
            r#"S3Error { code: "NoSuchBucket", message: "The specified bucket does not exist", resource: "" }"#,
        );
        assert_eq!(
            Reason::of(&with_message).line(1),
            "S3 error NoSuchBucket: The specified bucket does not exist (Unexpected)"
        );
        let head = opendal::Error::new(ErrorKind::Unexpected, "")
            .with_operation("stat")
            .with_context("service_operation", "HeadObject")
            .with_context("response", "Parts { status: 400, version: HTTP/1.1 }");
        assert_eq!(
            Reason::of(&head).line(1),
            "HeadObject answered HTTP 400 (bad request: a malformed bucket name or URL?) (Unexpected)"
        );
        let unavailable = opendal::Error::new(
            ErrorKind::Unexpected,
            r#"S3Error { code: "ServiceUnavailable", message: "Could not reach quorum: [\"Netapp error\"]", resource: "" }"#,
        );
        assert_eq!(
            Reason::of(&unavailable).line(7),
            r#"S3 error ServiceUnavailable: Could not reach quorum: ["Netapp error"] (Unexpected, gave up after 7 attempts)"#
        );
    }
}
