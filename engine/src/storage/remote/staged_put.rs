//! Puts on SFTP and WebDAV, which write a file in place: each put writes
//! a fresh `tmp/<name>.<pid>.<n>`, checks that the server holds all of it,
//! and renames it over the final name (SFTP's posix-rename extension,
//! WebDAV's MOVE with Overwrite: T), so a reader never sees a partial file
//! (format-spec/v2/remote.md §3).
//!
//! The bytes go out a piece at a time, from the staged file of a pack or
//! from memory: SFTP through opendal's writer, which sends each write as it
//! comes; WebDAV in one PUT whose body is read as the connection takes it
//! (remote/upload.rs), because opendal's WebDAV writer gathers the whole
//! body in memory before its one PUT. A pack read whole into memory for
//! its upload cost 16-18 MiB per upload in flight (more with a larger
//! `--pack-size`).
//!
//! Retries are made here, not by opendal's retry layer, whose retry of a
//! writer's `write` sends the whole buffer again after part of it may have
//! been written (on SFTP, those bytes would be appended twice). A failed
//! attempt is given up with its temporary file (deleted, best effort: one
//! left behind is prune's to clean from `tmp/`), and the next starts from
//! the first byte, under a new temporary name. Nothing is renamed unless
//! the server reports exactly the length sent for.

use std::sync::atomic::Ordering;

use opendal::raw::{build_rooted_abs_path, format_authorization_by_basic, normalize_root, percent_encode_path};
use tokio::io::AsyncReadExt;

use super::upload::{backoff, Failure, Source};
use super::{Reason, RemoteStorage};
use crate::error::{Error, Result};
use crate::storage::FileKind;

/// Bytes read from a staged file and handed to the SFTP writer at a time
/// (it sends them as write requests of the server's maximum length, with
/// a bounded number in flight).
const SFTP_PIECE: usize = 1 << 20;

/// Where a WebDAV path lives and how to sign in, as opendal's WebDAV
/// service makes its own requests (its URL encoding and root handling).
pub(super) struct Dav {
    endpoint: String,
    root: String,
    authorization: Option<String>,
}

impl Dav {
    pub(super) fn new(endpoint: &str, root: &str, user: Option<&str>, password: Option<&str>) -> opendal::Result<Dav> {
        let authorization = match user {
            Some(u) => Some(format_authorization_by_basic(u, password.unwrap_or_default())?),
            None => None,
        };
        Ok(Dav { endpoint: endpoint.to_string(), root: normalize_root(root), authorization })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint, percent_encode_path(&build_rooted_abs_path(&self.root, path)))
    }
}

/// opendal's verdict on one attempt's error: its own temporary marking
/// (the operator these attempts use has no retry layer, which would have
/// erased it).
fn judged(e: opendal::Error) -> Failure {
    if e.is_temporary() {
        Failure::Transient(Reason::of(&e))
    } else {
        Failure::Refused(Reason::of(&e))
    }
}

impl RemoteStorage {
    /// Stores `source` as `kind`/`name` through a temporary file and a
    /// rename.
    pub(super) fn put_staged(&self, kind: FileKind, name: &str, source: Source<'_>) -> Result<()> {
        let object = self.path(kind, name)?;
        let len = source.len()?;
        if let Some(l) = &self.upload {
            l.take(usize::try_from(len).unwrap_or(usize::MAX));
        }
        let mut attempt = 0;
        let tmp = loop {
            let tmp = format!("tmp/{name}.{}.{}", std::process::id(), self.tmp_counter.fetch_add(1, Ordering::Relaxed));
            let outcome = self.block(self.write_tmp(&tmp, &source, len));
            let Err(failure) = outcome else { break tmp };
            let _ = self.call(self.op.delete(&tmp));
            match failure {
                Failure::Local(e) => return Err(e),
                Failure::Refused(reason) => return Err(self.remote_error(&object, &reason, 1)),
                Failure::Transient(_) if attempt < self.opts.retries => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Failure::Transient(reason) => {
                    return Err(self.remote_error(&object, &reason, u32::try_from(attempt + 1).unwrap_or(u32::MAX)))
                }
            }
        };
        if let Err(e) = self.call(self.op.rename(&tmp, &object)) {
            if e.kind() == opendal::ErrorKind::NotFound && self.renamed_before(&object, len) {
                return Ok(());
            }
            let _ = self.call(self.op.delete(&tmp));
            return Err(self.err(kind, name, e));
        }
        Ok(())
    }

    /// Whether a rename that found its source gone had been done by an
    /// earlier attempt whose answer was lost (a connection dropped after
    /// the server moved the file; the retry then finds no `tmp/` file):
    /// the object is there with every byte. The temporary name is this
    /// process's alone and only its own rename moves it, so a source gone
    /// means the move happened; the length is checked as well because
    /// someone may have deleted the temporary file instead (a cleanup of
    /// `tmp/`), and then the object found is not this write.
    fn renamed_before(&self, object: &str, len: u64) -> bool {
        self.call(self.op.stat(object)).is_ok_and(|meta| meta.content_length() == len)
    }

    /// One attempt: `tmp` written with `source`'s `len` bytes, and found
    /// whole on the server.
    async fn write_tmp(&self, tmp: &str, source: &Source<'_>, len: u64) -> std::result::Result<(), Failure> {
        let sent = cut::sent(source, len, tmp);
        match self.dav.as_ref().zip(self.http.as_ref()) {
            Some((dav, http)) => self.put_dav(http, dav, tmp, source, sent).await?,
            None => self.write_sftp(tmp, source, sent).await?,
        }
        // A write that ended early without an error (a server that lost
        // its tail, a connection closed at a bad moment) must not become
        // the file: one stat per put is the price.
        let held = self.op_once.stat(tmp).await.map_err(judged)?.content_length();
        if held != len {
            return Err(Failure::Transient(Reason::new(
                format!("{tmp} holds {held} of the {len} bytes written"),
                None,
            )));
        }
        Ok(())
    }

    async fn write_sftp(&self, tmp: &str, source: &Source<'_>, len: u64) -> std::result::Result<(), Failure> {
        let mut w = self.op_once.writer(tmp).await.map_err(judged)?;
        match source {
            Source::Memory(data) => {
                let end = usize::try_from(len).unwrap_or(data.len()).min(data.len());
                w.write(data.slice(..end)).await.map_err(judged)?;
            }
            Source::File(path) => {
                let local = |e| Failure::Local(Error::io(path, e));
                let mut file = tokio::fs::File::open(path).await.map_err(local)?;
                let mut left = len;
                while left > 0 {
                    let mut piece = vec![0; usize::try_from(left).unwrap_or(SFTP_PIECE).min(SFTP_PIECE)];
                    file.read_exact(&mut piece).await.map_err(local)?;
                    left -= piece.len() as u64;
                    // Handed over, not copied: a Vec becomes the Buffer.
                    w.write(piece).await.map_err(judged)?;
                    crate::fault::pause_at("sftp-put");
                }
            }
        }
        w.close().await.map_err(judged)?;
        Ok(())
    }

    async fn put_dav(
        &self,
        http: &reqwest::Client,
        dav: &Dav,
        tmp: &str,
        source: &Source<'_>,
        len: u64,
    ) -> std::result::Result<(), Failure> {
        // `tmp/` is made once per process (a PROPFIND, and a MKCOL if it
        // is missing), where opendal's writer looked before every PUT; a
        // PUT that finds it gone (409) is retried and makes it again.
        if !self.dav_tmp_ready.load(Ordering::Relaxed) {
            self.op_once.create_dir("tmp/").await.map_err(judged)?;
            self.dav_tmp_ready.store(true, Ordering::Relaxed);
        }
        let mut request = http.put(dav.url(tmp));
        if let Some(a) = &dav.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, a);
        }
        let sent = self.send_body(request, source, len, "PUT").await;
        if sent.is_err() {
            self.dav_tmp_ready.store(false, Ordering::Relaxed);
        }
        sent
    }
}

/// Test hook (fault-injection builds only): `ARC_FAULT_SHORT_PUTS=N` makes
/// the first N attempts to put a staged file (a pack) send only the first
/// half of its bytes and end as if that were all, a write cut short
/// without an error: the length check before the rename must catch each,
/// and the put must start again under a new name. Each cut is a step
/// "put cut short" in `ARC_FAULT_TRACE` (crate::fault), so a test knows
/// it happened.
mod cut {
    use super::Source;

    #[cfg(feature = "fault-injection")]
    pub(super) fn sent(source: &Source<'_>, len: u64, tmp: &str) -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LEFT: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
        if !matches!(source, Source::File(_)) {
            return len;
        }
        let left = LEFT.get_or_init(|| {
            AtomicU64::new(std::env::var("ARC_FAULT_SHORT_PUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(0))
        });
        match left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)) {
            Ok(_) => {
                crate::fault::step("put cut short", &tmp);
                len / 2
            }
            Err(_) => len,
        }
    }

    #[cfg(not(feature = "fault-injection"))]
    pub(super) fn sent(_: &Source<'_>, len: u64, _: &str) -> u64 {
        len
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake_http::{self, Reply, Request};
    use super::*;
    use crate::storage::{Location, RemoteOptions, Storage};

    /// The staged file's length: not a whole number of the body's pieces.
    const LEN: usize = 3 * super::super::upload::PIECE + 4321;

    const NAME: &str = "cd00000000000000000000000000000000000000000000000000000000000002";

    /// A WebDAV server that has every directory and holds every file with
    /// LEN bytes, and accepts every write.
    fn dav_ok(req: &Request) -> String {
        match req.method.as_str() {
            "PROPFIND" => {
                let prop = if req.target.ends_with('/') {
                    "<D:resourcetype><D:collection/></D:resourcetype>".to_string()
                } else {
                    format!("<D:getcontentlength>{LEN}</D:getcontentlength><D:resourcetype/>")
                };
                fake_http::response(
                    "207 Multi-Status",
                    "Content-Type: application/xml\r\n",
                    &format!(
                        "<?xml version=\"1.0\"?><D:multistatus xmlns:D=\"DAV:\"><D:response><D:href>{}</D:href>\
                         <D:propstat><D:prop><D:getlastmodified>Thu, 01 Jan 2026 00:00:00 GMT</D:getlastmodified>\
                         {prop}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>\
                         </D:multistatus>",
                        req.target
                    ),
                )
            }
            "PUT" | "MOVE" | "MKCOL" => fake_http::response("201 Created", "", ""),
            "DELETE" => "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into(),
            _ => fake_http::response("405 Method Not Allowed", "", ""),
        }
    }

    /// A WebDAV server with its password, at `port`.
    fn dav(port: u16) -> RemoteStorage {
        let location = Location::WebDav {
            endpoint: format!("http://127.0.0.1:{port}"),
            user: Some("u".into()),
            path: "repo".into(),
        };
        std::env::set_var("ARC_WEBDAV_PASSWORD", "pw");
        RemoteStorage::open(&location, RemoteOptions { retries: 2, ..Default::default() }).unwrap()
    }

    #[test]
    fn a_staged_put_that_keeps_failing_gives_up_in_the_one_form_of_every_remote_error() {
        // Every request answered 503: the look at tmp/ (opendal's, marked
        // temporary by it) fails each of the three attempts.
        let (port, _log) = fake_http::serve(Vec::new(), Reply::Fail(503, "ServiceUnavailable"), dav_ok);
        let e = dav(port).put(FileKind::Index, NAME, b"index").unwrap_err().to_string();
        assert!(e.contains(&format!("index/{NAME}")), "{e}");
        assert!(e.ends_with("(Unexpected, gave up after 3 attempts)"), "{e}");
    }

    #[test]
    fn a_move_whose_answer_was_lost_is_found_done() {
        // tmp/ is found, the PUT and its length check succeed; the rename
        // (opendal looks at the source and the target's directory, then
        // MOVEs) is done but its answer lost: the connection closes
        // unanswered. The retried rename finds no source, and the object
        // holds every byte.
        let mut script = vec![Reply::Ok; 5];
        script.extend([Reply::CutHalfway, Reply::Fail(404, "NotFound")]);
        let (port, log) = fake_http::serve(script, Reply::Ok, dav_ok);
        let storage = dav(port);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack.1.2");
        std::fs::write(&path, vec![7u8; LEN]).unwrap();
        storage.put_file(FileKind::Pack, NAME, &path).unwrap();
        let log = log.lock().unwrap();
        let seen: Vec<(&str, &str)> = log.iter().map(|r| (r.method.as_str(), r.target.as_str())).collect();
        assert_eq!(seen.iter().filter(|(m, _)| *m == "PUT").count(), 1, "{seen:?}");
        assert_eq!(seen[5].0, "MOVE", "{seen:?}");
        assert_eq!(seen[6], ("PROPFIND", seen[5].1), "the rename was not retried: {seen:?}");
        assert_eq!(seen[7], ("PROPFIND", format!("/repo/data/cd/{NAME}").as_str()), "{seen:?}");
    }

    #[test]
    fn a_move_whose_source_is_gone_and_whose_target_is_short_fails() {
        // As above, but the object found is not the one written.
        let mut script = vec![Reply::Ok; 5];
        script.extend([Reply::CutHalfway, Reply::Fail(404, "NotFound"), Reply::Fail(404, "NotFound")]);
        let (port, _log) = fake_http::serve(script, Reply::Ok, dav_ok);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack.1.2");
        std::fs::write(&path, vec![7u8; LEN]).unwrap();
        assert!(dav(port).put_file(FileKind::Pack, NAME, &path).is_err());
    }

    #[test]
    fn a_webdav_put_cut_halfway_is_sent_again_whole_under_a_new_name_then_moved() {
        // The first PROPFIND finds tmp/; the first PUT is cut halfway.
        let (port, log) = fake_http::serve(vec![Reply::Ok, Reply::CutHalfway], Reply::Ok, dav_ok);
        let storage = dav(port);
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| (i * 31 + i / 997) as u8).collect();
        let path = dir.path().join("pack.1.2");
        std::fs::write(&path, &data).unwrap();
        storage.put_file(FileKind::Pack, NAME, &path).unwrap();
        assert!(!path.exists(), "the staged file stays after its upload");

        let log = log.lock().unwrap();
        let puts: Vec<&Request> = log.iter().filter(|r| r.method == "PUT").collect();
        assert_eq!(puts.len(), 2, "{:?}", log.iter().map(|r| (&r.method, &r.target)).collect::<Vec<_>>());
        assert_eq!(puts[0].body.len(), LEN / 2);
        assert!(puts[1].body == data, "the second PUT is not the whole file");
        assert_ne!(puts[0].target, puts[1].target, "the retry wrote into the cut file's name");
        for put in &puts {
            assert!(put.target.starts_with(&format!("/repo/tmp/{NAME}.")), "{}", put.target);
            assert_eq!(put.header("authorization"), Some("Basic dTpwdw=="));
        }
        // The cut file was deleted, the whole one checked, then moved.
        assert!(log.iter().any(|r| r.method == "DELETE" && r.target == puts[0].target));
        let moved: Vec<&Request> = log.iter().filter(|r| r.method == "MOVE").collect();
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].target, puts[1].target);
        assert!(moved[0].header("destination").is_some_and(|d| d.ends_with(&format!("/repo/data/cd/{NAME}"))));
        let checked = log.iter().position(|r| r.method == "PROPFIND" && r.target == puts[1].target);
        let at_move = log.iter().position(|r| r.method == "MOVE");
        assert!(checked.is_some() && checked < at_move, "moved without a look at its length");
    }
}
