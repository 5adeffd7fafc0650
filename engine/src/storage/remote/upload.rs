//! Uploads of a local file (a staged pack) without holding it in memory:
//! one PUT whose body is read from the file as the connection takes it,
//! with the file's length as Content-Length. S3 sends every pack this way;
//! WebDAV every put (remote/staged_put.rs), from a file or from memory.
//!
//! opendal cannot send such a body: every request it makes carries a
//! `Buffer` that is in memory whole before the request starts, so an
//! upload through it held its pack twice over the wire's time (16-18 MiB,
//! up to 8 at once: 103-121 MB peak on a first backup of www to s3s-fs).
//! So the PUT is presigned by opendal (its public presign API: the same
//! SigV4 signing and credentials, computed locally, no request; WebDAV:
//! the URL and Basic authorization as opendal's WebDAV service makes them)
//! and sent here with reqwest, the HTTP client opendal itself uses. What
//! opendal's layers gave its own requests is done again here, as they do
//! it: retries of transient failures (a retry reads the file again from
//! its start), the no-progress timeout, the process's limit of requests in
//! flight (the same slots, shared with opendal's layer) and one-line
//! errors naming the object, never the presigned URL (it is a credential
//! for as long as it is valid).
//!
//! Objects above `single_put_max` go as a multipart upload through
//! opendal's writer, fed from the file part by part: at most a few parts
//! in memory, never the whole object.

use std::io::Read;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};

use super::{Reason, RemoteStorage};
use crate::error::{Error, Result};
use crate::storage::FileKind;

/// Bytes read from the file and handed to the connection at a time: a few
/// of these per upload are in memory (the one being read, the one being
/// written to the socket), where the whole pack was.
pub(super) const PIECE: usize = 256 * 1024;

/// How long a presigned request stays valid. A server checks the signature
/// when the request arrives, so only the start of the upload must fall
/// within this (each attempt is signed afresh).
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);

/// What an upload sends: a local file (a staged pack) or bytes in memory.
pub(super) enum Source<'a> {
    File(&'a Path),
    Memory(Bytes),
}

impl Source<'_> {
    pub(super) fn len(&self) -> Result<u64> {
        match self {
            Source::File(path) => Ok(std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len()),
            Source::Memory(b) => Ok(b.len() as u64),
        }
    }
}

/// Why one attempt failed.
pub(super) enum Failure {
    /// Worth another attempt: no answer, a dropped connection, no progress
    /// for the timeout, a 5xx, 408 or 429 (as opendal's retry layer
    /// judges its own requests).
    Transient(Reason),
    /// The server refused the request (403, 400, ...): repeating it cannot
    /// help.
    Refused(Reason),
    /// The local file could not be read.
    Local(Error),
}

/// When the body last made progress, shared with the watchdog.
struct Progress {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    /// The body's own read error, if it failed: the request then fails
    /// for a local reason, not the server's.
    file_error: Mutex<Option<std::io::Error>>,
}

impl Progress {
    fn new() -> Progress {
        Progress { start: Instant::now(), last: AtomicU64::new(0), file_error: Mutex::new(None) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// A body from memory, handed over a piece at a time like [`FileBody`]'s
/// so that the no-progress timeout sees it move.
struct MemoryBody {
    data: Bytes,
    progress: Arc<Progress>,
}

impl http_body::Body for MemoryBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(PIECE);
        let piece = self.data.split_to(n);
        self.progress.touch();
        Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.data.len() as u64)
    }
}

/// A PUT's body: `left` more bytes of `file`, a piece at a time.
struct FileBody {
    file: tokio::fs::File,
    left: u64,
    /// The piece being read (kept across a pending read).
    piece: Vec<u8>,
    progress: Arc<Progress>,
}

impl FileBody {
    fn fail(&self, e: std::io::Error) -> std::io::Error {
        let copy = std::io::Error::new(e.kind(), e.to_string());
        if let Ok(mut slot) = self.progress.file_error.lock() {
            *slot = Some(e);
        }
        copy
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.left).unwrap_or(PIECE).min(PIECE);
        if this.piece.len() != want {
            this.piece.resize(want, 0);
        }
        let mut buf = ReadBuf::new(&mut this.piece);
        match Pin::new(&mut this.file).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(this.fail(e)))),
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n == 0 {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the file ended {} bytes early", this.left),
                    );
                    return Poll::Ready(Some(Err(this.fail(e))));
                }
                let mut piece = std::mem::take(&mut this.piece);
                piece.truncate(n);
                this.left -= n as u64;
                this.progress.touch();
                Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(piece)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// reqwest's error in one line, without the URL (a presigned URL carries
/// its signature).
fn describe_http(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// `<Code>` and `<Message>` of an S3 error body, as "S3 error X: M".
fn s3_error(body: &str) -> Option<String> {
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let len = body[start..].find(&format!("</{name}>"))?;
        Some(body[start..start + len].trim().to_string())
    };
    let code = tag("Code").filter(|c| !c.is_empty())?;
    Some(match tag("Message").filter(|m| !m.is_empty()) {
        Some(m) => format!("S3 error {code}: {m}"),
        None => format!("S3 error {code}"),
    })
}

/// The delay before retry `attempt` (0-based): doubling from 200 ms up to
/// 10 s, plus a jitter of up to as much again, as opendal's retry layer
/// (backon 1.6's `with_jitter`, remote.rs) waits, so that a store that
/// stays away is given the same time on every path. The jitter only
/// spreads retries of concurrent uploads apart, so the clock's nanoseconds
/// are random enough.
pub(super) fn backoff(attempt: usize) -> Duration {
    let base = Duration::from_millis(200).saturating_mul(1 << attempt.min(10)).min(Duration::from_secs(10));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    base.mul_f64(1.0 + f64::from(nanos % 1000) / 1000.0)
}

impl RemoteStorage {
    /// Stores the `len` bytes of the file at `path` as `kind`/`name` on S3:
    /// streamed in one PUT, or a multipart upload above `single_put_max`.
    pub(super) fn put_file_s3(&self, http: &reqwest::Client, kind: FileKind, name: &str, path: &Path) -> Result<()> {
        let object = self.path(kind, name)?;
        let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if let Some(l) = &self.upload {
            l.take(usize::try_from(len).unwrap_or(usize::MAX));
        }
        if len > self.opts.single_put_max as u64 {
            return self.put_file_multipart(kind, name, &object, path);
        }
        let mut attempt = 0;
        let (reason, attempts) = loop {
            match self.block(self.put_attempt(http, &object, path, len)) {
                Ok(()) => return Ok(()),
                Err(Failure::Local(e)) => return Err(e),
                Err(Failure::Refused(reason)) => break (reason, 1),
                Err(Failure::Transient(_)) if attempt < self.opts.retries => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(Failure::Transient(reason)) => break (reason, u32::try_from(attempt + 1).unwrap_or(u32::MAX)),
            }
        };
        Err(self.remote_error(&object, &reason, attempts))
    }

    async fn put_attempt(
        &self,
        http: &reqwest::Client,
        object: &str,
        path: &Path,
        len: u64,
    ) -> std::result::Result<(), Failure> {
        // Signed before a slot is taken: the presign passes through
        // opendal's layers, whose limit shares these slots, so signing while
        // holding one could wait for itself when every slot is an upload.
        let signed = self.op.presign_write(object, SIGNED_FOR).await.map_err(|e| Failure::Refused(Reason::of(&e)))?;
        let request = http.request(signed.method().clone(), signed.uri().to_string()).headers(signed.header().clone());
        self.send_body(request, &Source::File(path), len, "PutObject").await
    }

    /// Sends `request` with the first `len` bytes of `source` as its body
    /// (all of them but in a test's cut write), holding one of the request
    /// slots. Any 2xx answer is success; 5xx, 408, 409 and 429 are
    /// transient (409: a conflicting operation in progress on S3, a WebDAV
    /// collection that has gone missing), other answers a refusal. `what`
    /// names the request in errors ("PutObject").
    pub(super) async fn send_body(
        &self,
        request: reqwest::RequestBuilder,
        source: &Source<'_>,
        len: u64,
        what: &str,
    ) -> std::result::Result<(), Failure> {
        let _slot = self.slots.acquire_slot().await;
        let progress = Arc::new(Progress::new());
        let body = match source {
            Source::File(path) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| Failure::Local(Error::io(path, e)))?;
                reqwest::Body::wrap(FileBody { file, left: len, piece: Vec::new(), progress: progress.clone() })
            }
            Source::Memory(data) => {
                let data = data.slice(..usize::try_from(len).unwrap_or(data.len()).min(data.len()));
                reqwest::Body::wrap(MemoryBody { data, progress: progress.clone() })
            }
        };
        let request = request.header(reqwest::header::CONTENT_LENGTH, len).body(body);
        let sent = self.no_stall(request.send(), &progress).await;
        // Only a file body fails for a local reason.
        if let (Source::File(path), Some(e)) = (source, progress.file_error.lock().ok().and_then(|mut e| e.take())) {
            return Err(Failure::Local(Error::io(path, e)));
        }
        let response = sent?.map_err(|e| Failure::Transient(Reason::new(describe_http(e), None)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // An error body is a few hundred bytes of XML.
        progress.touch();
        let text = match self.no_stall(response.text(), &progress).await {
            Ok(Ok(t)) => t,
            _ => String::new(),
        };
        let reason = match s3_error(&text) {
            Some(s3) => Reason::new(s3, Some(format!("{what} answered HTTP {}", status.as_u16()))),
            None => Reason::new(format!("{what} answered HTTP {status}"), None),
        };
        if status.is_server_error() || [408, 409, 429].contains(&status.as_u16()) {
            Err(Failure::Transient(reason))
        } else {
            Err(Failure::Refused(reason))
        }
    }

    /// `f`, failed as transient once the body has made no progress for the
    /// I/O timeout (a request waiting for its answer counts from the end of
    /// its body): a server that hangs does not hang arc.
    async fn no_stall<F: std::future::Future>(
        &self,
        f: F,
        progress: &Progress,
    ) -> std::result::Result<F::Output, Failure> {
        let mut f = std::pin::pin!(f);
        loop {
            let deadline = tokio::time::Instant::from_std(progress.last() + self.opts.io_timeout);
            match tokio::time::timeout_at(deadline, f.as_mut()).await {
                Ok(out) => return Ok(out),
                Err(_) if progress.last() + self.opts.io_timeout <= Instant::now() => {
                    let stalled = format!("no progress for {} s", self.opts.io_timeout.as_secs_f64());
                    return Err(Failure::Transient(Reason::new(stalled, None)));
                }
                Err(_) => {}
            }
        }
    }

    /// A multipart upload fed from the file a part at a time (opendal's
    /// writer retries each part from its buffer).
    fn put_file_multipart(&self, kind: FileKind, name: &str, object: &str, path: &Path) -> Result<()> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let part = self.opts.part_size.max(5 << 20);
        let mut w =
            self.call(self.op.writer_with(object).chunk(part).concurrent(2)).map_err(|e| self.err(kind, name, e))?;
        let sent = (|| -> Result<()> {
            loop {
                let mut buf = Vec::with_capacity(part);
                (&mut file).take(part as u64).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
                if buf.is_empty() {
                    return Ok(());
                }
                self.call(w.write(buf)).map_err(|e| self.err(kind, name, e))?;
            }
        })();
        match sent {
            Ok(()) => {
                self.call(w.close()).map_err(|e| self.err(kind, name, e))?;
                Ok(())
            }
            Err(e) => {
                let _ = self.call(w.abort());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake_http::{self, Reply, Request};
    use super::*;
    use crate::storage::{Location, RemoteOptions, Storage};

    /// S3's answers to the requests of an upload: a single PUT, or the
    /// three requests of a multipart upload.
    fn s3_ok(req: &Request) -> String {
        let post = req.method == "POST";
        if post && req.target.contains("?uploads") {
            let body = "<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>";
            fake_http::response("200 OK", "", body)
        } else if req.target.contains("partNumber=") {
            fake_http::response("200 OK", "ETag: \"p\"\r\n", "")
        } else if post {
            let body = "<CompleteMultipartUploadResult><ETag>\"x\"</ETag></CompleteMultipartUploadResult>";
            fake_http::response("200 OK", "", body)
        } else {
            fake_http::response("200 OK", "", "")
        }
    }

    /// A loopback S3 answering one connection after the other by `script`,
    /// then refusing: its port and what it was sent.
    fn fake_s3(script: Vec<Reply>) -> (u16, fake_http::Requests) {
        fake_http::serve(script, Reply::Fail(403, "AccessDenied"), s3_ok)
    }

    fn s3(port: u16, opts: RemoteOptions) -> RemoteStorage {
        std::env::set_var("AWS_ACCESS_KEY_ID", "GK0123456789abcdef01234567");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
        let location =
            Location::S3 { endpoint: format!("http://127.0.0.1:{port}"), bucket: "b".into(), prefix: "repo".into() };
        RemoteStorage::open(&location, opts).unwrap()
    }

    /// A pack-sized file that is not a whole number of pieces.
    fn staged(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..3 * PIECE + 12_345).map(|i| (i * 7 + i / 251) as u8).collect();
        let path = dir.join("pack.1.0");
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    const NAME: &str = "ab00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_file_is_put_from_disk_and_a_retry_sends_it_again_from_its_start() {
        let (port, log) = fake_s3(vec![Reply::CutHalfway, Reply::Ok]);
        let storage = s3(port, RemoteOptions { retries: 2, ..Default::default() });
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = staged(dir.path());
        storage.put_file(FileKind::Pack, NAME, &path).unwrap();
        assert!(!path.exists(), "the staged file stays after its upload");
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2);
        for Request { target, .. } in log.iter() {
            assert!(target.starts_with(&format!("/b/repo/data/ab/{NAME}?")), "{target}");
            assert!(target.contains("X-Amz-Signature="), "{target}: not signed");
        }
        assert_eq!(log[0].body.len(), data.len() / 2);
        assert!(log[1].body == data, "the retried body differs from the file");
    }

    #[test]
    fn a_file_above_single_put_max_goes_in_parts_read_from_it() {
        let (port, log) = fake_s3(vec![Reply::Ok; 5]);
        let opts = RemoteOptions { single_put_max: 1 << 20, part_size: 5 << 20, ..Default::default() };
        let storage = s3(port, opts);
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(10 << 20) + 4321).map(|i: usize| (i * 13 + i / 4093) as u8).collect();
        let path = dir.path().join("pack.1.1");
        std::fs::write(&path, &data).unwrap();
        storage.put_file(FileKind::Pack, NAME, &path).unwrap();
        assert!(!path.exists(), "the staged file stays after its upload");
        let log = log.lock().unwrap();
        let part = |n: usize| log.iter().find(|r| r.target.contains(&format!("partNumber={n}&"))).map(|r| &r.body);
        let parts: Vec<&[u8]> = (1..=3).filter_map(part).map(|b| &b[..]).collect();
        assert_eq!(parts.len(), 3, "{:?}", log.iter().map(|r| (&r.target, r.body.len())).collect::<Vec<_>>());
        assert!(parts.concat() == data, "the parts differ from the file");
    }

    #[test]
    fn a_refused_put_is_not_retried_and_names_the_object_not_the_signed_url() {
        let (port, log) = fake_s3(vec![Reply::Fail(403, "AccessDenied"), Reply::Ok]);
        let storage = s3(port, RemoteOptions { retries: 3, ..Default::default() });
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = staged(dir.path());
        let e = storage.put_file(FileKind::Pack, NAME, &path).unwrap_err().to_string();
        assert!(e.contains(&format!("data/ab/{NAME}")) && e.contains("AccessDenied") && e.contains("403"), "{e}");
        assert!(!e.contains("Signature") && !e.contains("Credential"), "{e}");
        assert_eq!(log.lock().unwrap().len(), 1, "a refused PUT was repeated");
    }

    #[test]
    fn a_put_that_keeps_failing_gives_up_in_the_one_form_of_every_remote_error() {
        let (port, log) = fake_http::serve(Vec::new(), Reply::Fail(503, "SlowDown"), s3_ok);
        let storage = s3(port, RemoteOptions { retries: 2, ..Default::default() });
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = staged(dir.path());
        let e = storage.put_file(FileKind::Pack, NAME, &path).unwrap_err().to_string();
        assert_eq!(log.lock().unwrap().len(), 3, "{e}");
        assert!(
            e.ends_with("S3 error SlowDown: SlowDown (PutObject answered HTTP 503, gave up after 3 attempts)"),
            "{e}"
        );
    }

    #[test]
    fn a_put_that_makes_no_progress_is_given_up_and_retried() {
        let (port, log) = fake_s3(vec![Reply::Hang, Reply::Ok]);
        let opts = RemoteOptions { retries: 1, io_timeout: Duration::from_millis(300), ..Default::default() };
        let storage = s3(port, opts);
        let dir = tempfile::tempdir().unwrap();
        let (path, data) = staged(dir.path());
        storage.put_file(FileKind::Pack, NAME, &path).unwrap();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 1);
        assert!(log[0].body == data);
    }

    #[test]
    fn an_s3_error_body_reads_as_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(s3_error(body).as_deref(), Some("S3 error AccessDenied: Access Denied"));
        assert_eq!(s3_error("<Error><Code>SlowDown</Code></Error>").as_deref(), Some("S3 error SlowDown"));
        assert_eq!(s3_error("not xml"), None);
    }

    #[test]
    fn retries_back_off_from_200_ms_to_10_s() {
        assert!((200..400).contains(&backoff(0).as_millis()));
        assert!((10_000..20_000).contains(&backoff(9).as_millis()));
        assert!(backoff(60) < Duration::from_secs(20));
    }
}
