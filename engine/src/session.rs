//! Sessions and the storage clock of the v2 commit and prune protocol
//! (format-spec/v2/protocol.md §3, §4): a running backup, prune or copy
//! announces itself with a file under `sessions/` that it rewrites while it
//! runs, learns the storage's clock from the timestamps the storage gives
//! that file, and keeps the set of packs that prune marks name, so that
//! dedup never relies on them. Prune marks are read here too.
//!
//! Nothing here reads a host clock to decide anything: ages are differences
//! of two storage timestamps; the host's monotonic clock only paces the
//! refreshes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::config::ProtocolSettings;
use crate::format::mark::{self, MarkFile};
use crate::format::session::{self, SessionFile};
use crate::id::Id;
use crate::lock::{hostname, pid_alive, username};
use crate::storage::{FileKind, Storage};

/// A prune mark and its storage time.
#[derive(Debug, Clone)]
pub struct Mark {
    pub name: String,
    pub time: SystemTime,
    pub file: MarkFile,
}

/// Opens (authenticates and decodes) every session file and prune mark,
/// for check: the error of each that does not open, which names the file.
/// A file removed between the listing and its read (a session that ended,
/// a mark a sweep finished) is skipped, as is a name that is not an id
/// (nothing of arc's). A damaged mark stops every prune (the packs it
/// names cannot be known), and a damaged session holds back every sweep
/// until it expires: both are worth an error rather than silence.
pub fn damaged_protocol_files(storage: &dyn Storage, keys: &Keys) -> Result<Vec<Error>> {
    let mut out = Vec::new();
    for kind in [FileKind::Session, FileKind::Mark] {
        for (name, _) in storage.list(kind)? {
            if name.parse::<Id>().is_err() {
                continue;
            }
            let opened = storage.get(kind, &name).and_then(|data| match kind {
                FileKind::Session => session::decode(keys, &data, &name).map(drop),
                _ => mark::decode(keys, &data, &name).map(drop),
            });
            match opened {
                Ok(()) | Err(Error::Missing { .. }) => {}
                Err(e) => out.push(e),
            }
        }
    }
    Ok(out)
}

/// A session file seen by someone else.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub name: String,
    /// The storage time of its last write.
    pub modified: SystemTime,
    /// Its start in storage time (§2.1).
    pub start: SystemTime,
    /// `None` when the file cannot be read.
    pub file: Option<SessionFile>,
}

impl SessionInfo {
    pub fn describe(&self) -> String {
        match &self.file {
            Some(f) => format!(
                "a running {} (session {} of {}@{} pid {})",
                f.operation,
                f.session.short(),
                f.username,
                f.host,
                f.pid
            ),
            None => format!("an unreadable session file {}", self.name),
        }
    }
}

/// Sessions alive at storage time `now` (§3.3), except `own`.
pub fn live_sessions(
    storage: &dyn Storage,
    keys: &Keys,
    settings: &ProtocolSettings,
    now: SystemTime,
    own: Option<&str>,
) -> Result<Vec<SessionInfo>> {
    let expiry = Duration::from_secs(settings.session_expiry_secs);
    let here = hostname();
    let mut out = Vec::new();
    for (name, stat) in storage.list_stat(FileKind::Session)? {
        if Some(name.as_str()) == own || name.parse::<Id>().is_err() {
            continue;
        }
        if now.duration_since(stat.modified).is_ok_and(|age| age > expiry) {
            continue;
        }
        let file = match storage.get(FileKind::Session, &name) {
            Ok(d) => session::decode(keys, &d, &name).ok(),
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        if let Some(f) = &file {
            if f.host == here && !pid_alive(f.pid) {
                continue;
            }
        }
        let start = file.as_ref().and_then(|f| f.started_storage).map(SystemTime::from).unwrap_or(stat.modified);
        out.push(SessionInfo { name, modified: stat.modified, start, file });
    }
    Ok(out)
}

/// Removes session files left by processes that are gone: on this host by
/// their pid (a local fact), with `all` every session file. Others expire
/// by themselves (§3.3). Returns how many were removed. A v1 repository
/// (`keys` None) has no sessions.
pub fn remove_dead_sessions(storage: &dyn Storage, keys: Option<&Keys>, all: bool) -> Result<usize> {
    let Some(keys) = keys else { return Ok(0) };
    let here = hostname();
    let mut removed = 0;
    for (name, _) in storage.list(FileKind::Session)? {
        let dead = match storage.get(FileKind::Session, &name).and_then(|d| session::decode(keys, &d, &name)) {
            Ok(f) => f.host == here && !pid_alive(f.pid),
            Err(Error::Missing { .. }) => continue,
            Err(_) => false,
        };
        if all || dead {
            storage.delete(FileKind::Session, &name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

struct State {
    /// Storage time of the last successful write of the session file.
    last: SystemTime,
    /// Set once two consecutive storage times were further apart than the
    /// expiry allows (§4 B4); cleared by [`Session::clear_lapse`].
    lapsed: bool,
    /// The longest gap between consecutive storage times so far, to say
    /// how long a lapsed session went unheard.
    longest_gap: Duration,
    /// Why the last refresh failed; a failed session must not commit.
    failed: Option<String>,
    /// Marks read so far, by name.
    marks: HashMap<String, Mark>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    keys: Arc<Keys>,
    settings: ProtocolSettings,
    name: String,
    file: SessionFile,
    start: SystemTime,
    state: Mutex<State>,
    /// Packs named by any mark known to this session (shared with dedup).
    marked: Arc<RwLock<Arc<HashSet<Id>>>>,
    /// Raised when a refresh fails, so that long work stops early.
    lost: Arc<AtomicBool>,
}

/// A running session; deletes its file when dropped.
pub struct Session {
    inner: Arc<Inner>,
    stop: Option<crossbeam_channel::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl Session {
    /// Puts the session file (§4 B2), reads the marks, and starts
    /// refreshing. `marked` receives the packs the marks name.
    pub fn start(
        storage: Arc<dyn Storage>,
        keys: Arc<Keys>,
        settings: ProtocolSettings,
        operation: &str,
        marked: Arc<RwLock<Arc<HashSet<Id>>>>,
    ) -> Result<Session> {
        let host = hostname();
        let pid = std::process::id();
        let now = Utc::now();
        let session = Id::hash(
            format!(
                "session-{host}-{pid}-{}-{}",
                now.timestamp_nanos_opt().unwrap_or_default(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )
            .as_bytes(),
        );
        let name = session.to_hex();
        let mut file = SessionFile {
            session,
            operation: operation.to_string(),
            host,
            username: username(),
            pid,
            started: now,
            started_storage: None,
        };
        storage.put(FileKind::Session, &name, &session::encode(&keys, &file)?)?;
        let start = match storage.stat(FileKind::Session, &name) {
            Ok(s) => s.modified,
            Err(e) => {
                let _ = storage.delete(FileKind::Session, &name);
                return Err(e);
            }
        };
        file.started_storage = Some(DateTime::<Utc>::from(start));
        let inner = Arc::new(Inner {
            storage,
            keys,
            settings,
            name,
            file,
            start,
            state: Mutex::new(State {
                last: start,
                lapsed: false,
                longest_gap: Duration::ZERO,
                failed: None,
                marks: HashMap::new(),
            }),
            marked,
            lost: Arc::new(AtomicBool::new(false)),
        });
        let mut s = Session { inner, stop: None, refresher: None };
        s.inner.reload_marks()?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let inner = s.inner.clone();
        let every = Duration::from_secs(settings.session_refresh_secs);
        s.refresher = std::thread::Builder::new()
            .name("arc-session".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // A failure is recorded in the state; keep trying, so
                    // that a short outage is reported once, at the commit.
                    let _ = inner.refresh();
                }
            })
            .ok();
        s.stop = Some(stop);
        Ok(s)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn settings(&self) -> &ProtocolSettings {
        &self.inner.settings
    }

    /// The session's start, in storage time.
    pub fn start_time(&self) -> SystemTime {
        self.inner.start
    }

    /// The storage time of the last successful write of the session file:
    /// the latest "storage now" this session knows.
    pub fn storage_now(&self) -> SystemTime {
        self.inner.state.lock().map(|s| s.last).unwrap_or(self.inner.start)
    }

    /// Raised when a refresh fails.
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.inner.lost.clone()
    }

    /// Rewrites the session file now (§4 B3) and re-reads the marks; an
    /// error if this or any earlier refresh failed. Returns the readable
    /// marks of the listing it made after the put, which is what the
    /// commit check (B6) needs, without a second listing of `marks/`. A
    /// mark deleted between the listing and its read (a sweep finished it)
    /// is skipped; a damaged one is an error, since the packs it names
    /// cannot be known.
    pub fn refresh_now(&self) -> Result<Vec<Mark>> {
        let listed = self.inner.refresh()?;
        self.check()?;
        Ok(listed)
    }

    /// An error if a refresh failed since the start.
    pub fn check(&self) -> Result<()> {
        let state = self.inner.state.lock().map_err(|_| poisoned())?;
        match &state.failed {
            Some(reason) => Err(Error::SessionLost { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Whether the session lapsed since the last [`clear_lapse`](Self::clear_lapse).
    pub fn lapsed(&self) -> bool {
        self.inner.state.lock().map(|s| s.lapsed).unwrap_or(true)
    }

    /// The longest time between two consecutive writes of the session
    /// file, in storage time.
    pub fn longest_gap(&self) -> Duration {
        self.inner.state.lock().map(|s| s.longest_gap).unwrap_or_default()
    }

    pub fn clear_lapse(&self) {
        if let Ok(mut s) = self.inner.state.lock() {
            s.lapsed = false;
        }
    }

    /// Marks known to the session: right after [`start`](Self::start),
    /// those of the listing made after the session file was put, which is
    /// the listing prune's sweep (protocol.md §5 P6) decides on.
    pub fn marks(&self) -> Result<Vec<Mark>> {
        let state = self.inner.state.lock().map_err(|_| poisoned())?;
        Ok(state.marks.values().cloned().collect())
    }
}

fn poisoned() -> Error {
    Error::SessionLost { reason: "session state poisoned by a panic (a bug)".into() }
}

impl Inner {
    /// The marks listed after the put (see [`Inner::reload_marks`]).
    fn refresh(&self) -> Result<Vec<Mark>> {
        let written = session::encode(&self.keys, &self.file)
            .and_then(|data| self.storage.put(FileKind::Session, &self.name, &data))
            .and_then(|()| self.storage.stat(FileKind::Session, &self.name));
        let stat = match written {
            Ok(s) => s,
            Err(e) => {
                self.lost.store(true, Ordering::SeqCst);
                if let Ok(mut s) = self.state.lock() {
                    s.failed.get_or_insert_with(|| format!("refreshing session {}: {e}", self.name));
                }
                return Err(Error::SessionLost { reason: e.to_string() });
            }
        };
        {
            let mut s = self.state.lock().map_err(|_| poisoned())?;
            let limit =
                Duration::from_secs(self.settings.session_expiry_secs.saturating_sub(self.settings.margin_secs));
            // A storage clock that went backwards is no evidence of a gap.
            if let Ok(gap) = stat.modified.duration_since(s.last) {
                s.lapsed |= gap > limit;
                s.longest_gap = s.longest_gap.max(gap);
            }
            if stat.modified > s.last {
                s.last = stat.modified;
            }
        }
        self.reload_marks()
    }

    /// Reads marks not seen yet, then publishes the packs named by every
    /// mark seen since the session started. Returns the readable marks
    /// this listing found.
    fn reload_marks(&self) -> Result<Vec<Mark>> {
        let listed = self.storage.list_stat(FileKind::Mark)?;
        let mut new = Vec::new();
        {
            let s = self.state.lock().map_err(|_| poisoned())?;
            for (name, stat) in &listed {
                if !s.marks.contains_key(name) && name.parse::<Id>().is_ok() {
                    new.push((name.clone(), stat.modified));
                }
            }
        }
        let mut read = Vec::new();
        for (name, time) in new {
            match self.storage.get(FileKind::Mark, &name) {
                Ok(d) => read.push(Mark { file: mark::decode(&self.keys, &d, &name)?, name, time }),
                Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        for m in read {
            s.marks.insert(m.name.clone(), m);
        }
        // A mark that a sweep finished stays in the set for the rest of the
        // session: its packs may be gone while this process's index
        // database still names them, and dedup must not trust those.
        let packs: HashSet<Id> = s.marks.values().flat_map(|m| m.file.packs.iter().map(|p| p.id)).collect();
        if let Ok(mut slot) = self.marked.write() {
            *slot = Arc::new(packs);
        }
        Ok(listed.iter().filter_map(|(name, _)| s.marks.get(name).cloned()).collect())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let _ = self.inner.storage.delete(FileKind::Session, &self.inner.name);
    }
}
