//! `copy`: snapshots from one repository into another (restic's `copy
//! --from-repo`), sending only what the target lacks. It is also the way
//! from format v1 to v2.
//!
//! ```text
//! for each snapshot (oldest first) not already in the target:
//!   packer on the target ─ walk the source tree depth first:
//!     same blob ids (same id scheme and chunkers): every blob keeps its id;
//!       a data blob is read from the source only if the target lacks it
//!     different ids (v1 -> v2 keyed ids, other chunker parameters): each
//!       file's content is read from the source, cut by the target's
//!       chunker and stored under the target's ids
//!     trees are re-encoded bottom up with the new ids
//!   packs and index files durable ─ (v2) commit check ─ snapshot put last
//! ```
//! The target is written like a backup writes it (a v2 session, or a
//! shared lock), so a copy killed at any point leaves only packs the next
//! copy or backup reuses, and a snapshot exists only complete.

use std::io::Read;

use super::tree_store;
use crate::chunker::{Chunker, StreamChunker};
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::SnapshotFile;
use crate::format::tree::{Node, Tree};
use crate::format::tree_v2;
use crate::id::Id;
use crate::index::IndexReader;
use crate::packer::{self, BlobSink};
use crate::progress::Progress;
use crate::repo::{Repository, Snapshot};

#[derive(Default)]
pub struct CopyOptions {
    /// Source snapshots to copy; every one when empty.
    pub snapshots: Vec<Id>,
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CopiedSnapshot {
    pub source: Id,
    /// The snapshot's id in the target.
    pub target: Id,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub copied: Vec<CopiedSnapshot>,
    /// Source snapshots the target already had (same time, host, user,
    /// paths and tags).
    pub skipped: Vec<Id>,
    /// Whether content had to be re-cut because the two repositories name
    /// blobs differently.
    pub rechunked: bool,
    pub blobs_added: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
}

/// Whether a blob has the same id in both repositories: same id scheme and
/// chunker parameters and, in v2, the same chunk-id key and gear seed
/// (two v2 repositories share them only when made from one master secret;
/// otherwise every id and every cut point differs, so content is re-cut).
fn same_ids(src: &Repository, dst: &Repository) -> bool {
    let (a, b) = (src.config(), dst.config());
    // A keyed id of a fixed probe tells whether the chunk-id keys are equal
    // without exposing them.
    let probe = |r: &Repository| r.keys().map(|k| (k.chunk_id(b"arc copy: same chunk-id key?"), k.gear_seed()));
    a.id_scheme == b.id_scheme
        && a.file_chunker == b.file_chunker
        && a.stream_chunker == b.stream_chunker
        && probe(src) == probe(dst)
}

fn same_snapshot(a: &SnapshotFile, b: &SnapshotFile) -> bool {
    a.time == b.time && a.host == b.host && a.username == b.username && a.paths == b.paths && a.tags == b.tags
}

pub fn copy(src: &Repository, dst: &Repository, opts: &CopyOptions, progress: &dyn Progress) -> Result<CopyReport> {
    let _src_lock = src.lock_shared("copy (source)")?;
    let (_dst_lock, session) = match dst.protocol() {
        Some(_) => (None, Some(dst.start_session("copy")?)),
        None => (Some(dst.lock_shared("copy")?), None),
    };
    if session.is_some() {
        dst.refresh_index()?;
    }
    let mut wanted: Vec<Snapshot> = if opts.snapshots.is_empty() {
        src.snapshots()?
    } else {
        opts.snapshots.iter().map(|id| src.load_snapshot(id)).collect::<Result<_>>()?
    };
    wanted.sort_by(|a, b| a.file.time.cmp(&b.file.time).then(a.id.cmp(&b.id)));
    let mut report = CopyReport { rechunked: !same_ids(src, dst), ..Default::default() };
    let existing = dst.snapshots()?;
    // Source parent id -> target id, for the parents of later snapshots.
    let mut mapped: std::collections::HashMap<Id, Id> = std::collections::HashMap::new();
    for snap in wanted {
        if let Some(e) = existing.iter().find(|e| same_snapshot(&e.file, &snap.file)) {
            mapped.insert(snap.id, e.id);
            report.skipped.push(snap.id);
            continue;
        }
        let (adopt, _writer) = dst.packs_to_adopt()?;
        dst.index()?.add_packs(&adopt, None)?;
        let copier = Copier {
            src,
            dst,
            rechunk: report.rechunked,
            file_chunker: dst.chunker(&dst.config().file_chunker),
            cancel: opts.cancel.clone(),
            session_lost: session.as_ref().map(|s| s.lost_flag()),
        };
        let (root, stats) = packer::run(dst, adopt, &|| copier.stopped(), |sink| {
            let mut cache = None;
            copier.tree(sink, &mut cache, &snap.file.tree, progress)
        })?;
        if let Some(s) = &session {
            s.check()?;
        }
        packer::list_unlisted_packs(dst)?;
        report.blobs_added += stats.blobs_added;
        report.bytes_added += stats.bytes_added;
        report.bytes_stored += stats.bytes_stored;
        let mut file = snap.file.clone();
        file.tree = root;
        file.parent = file.parent.and_then(|p| mapped.get(&p).copied());
        if let Some(s) = &session {
            super::commit::verify(dst, s, root)?;
        }
        let id = dst.save_snapshot(&file)?;
        mapped.insert(snap.id, id);
        report.copied.push(CopiedSnapshot { source: snap.id, target: id });
    }
    Ok(report)
}

struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    rechunk: bool,
    file_chunker: Chunker,
    cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    session_lost: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Copier<'_> {
    fn stopped(&self) -> bool {
        let raised = |f: &Option<std::sync::Arc<std::sync::atomic::AtomicBool>>| {
            f.as_ref().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
        };
        raised(&self.cancel) || raised(&self.session_lost)
    }

    /// Copies the tree `id` and everything below it; returns its id in the
    /// target. Depth first, so memory holds one path of trees.
    fn tree(
        &self,
        sink: &BlobSink<'_>,
        cache: &mut Option<(u64, IndexReader)>,
        id: &Id,
        progress: &dyn Progress,
    ) -> Result<Id> {
        if self.stopped() {
            return Err(Error::Interrupted);
        }
        let (tree, parts) = self.src.load_tree_with_parts(id)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(tree.nodes.len());
        for mut node in tree.nodes {
            if let Some(sub) = node.subtree {
                node.subtree = Some(self.tree(sink, cache, &sub, progress)?);
            }
            if node.kind.has_chunks() && !node.chunks.is_empty() {
                node.chunks = if self.rechunk {
                    self.recut(sink, cache, &node.chunks)?
                } else {
                    self.send(sink, cache, &node.chunks)?
                };
                progress.bytes(node.size);
            }
            nodes.push(node);
        }
        // A directory the source split (v2 tree) goes into a target whose
        // config lacks `trees-v2` re-encoded, like every directory whose ids
        // change: the target holds only encodings its features announce.
        let split = parts.len() > 1 || tree_v2::blob_version(&self.src.read_blob(id)?) == Some(tree_v2::VERSION);
        if self.rechunk || (split && !self.dst.writes_trees_v2()) {
            let stored = tree_store::store_dir(self.dst, sink, sink.index_reader(cache)?, &mut Tree { nodes })?;
            Ok(stored.id)
        } else {
            // Same ids: the directory is stored as the source has it (each
            // blob's bytes are what its id names), every blob of it (a
            // split directory's nodes, leaves and chunk lists), after
            // everything it refers to and the root last.
            for part in parts.iter().rev() {
                let raw = self.src.read_blob(part)?;
                sink.store_with_id(sink.index_reader(cache)?, *part, BlobKind::Tree, &raw)?;
            }
            Ok(*id)
        }
    }

    /// Same ids: each chunk is read from the source only if the target
    /// lacks it (in a pack no prune mark names).
    fn send(&self, sink: &BlobSink<'_>, cache: &mut Option<(u64, IndexReader)>, chunks: &[Id]) -> Result<Vec<Id>> {
        let marked = self.dst.marked_packs();
        for c in chunks {
            let present = match sink.index_reader(cache)?.lookup(c)? {
                Some(loc) => !marked.contains(&loc.pack),
                None => false,
            };
            if !present {
                let data = self.src.read_blob(c)?;
                sink.store_with_id(sink.index_reader(cache)?, *c, BlobKind::Data, &data)?;
            }
        }
        Ok(chunks.to_vec())
    }

    /// Different ids: the file's content, read chunk by chunk from the
    /// source, cut again by the target's chunker.
    fn recut(&self, sink: &BlobSink<'_>, cache: &mut Option<(u64, IndexReader)>, chunks: &[Id]) -> Result<Vec<Id>> {
        let mut content = BlobStream { src: self.src, chunks, next: 0, buf: Vec::new(), pos: 0, error: None };
        let mut cutter = StreamChunker::new(self.file_chunker.clone(), &mut content);
        let mut out = Vec::new();
        let cut = loop {
            if self.stopped() {
                return Err(Error::Interrupted);
            }
            match cutter.next_chunk() {
                Ok(Some(chunk)) => out.push(sink.store(sink.index_reader(cache)?, BlobKind::Data, chunk)?),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        drop(cutter);
        if let Err(e) = cut {
            // The reader parks the engine error it could not return
            // through `io::Read`.
            return Err(content.error.take().unwrap_or_else(|| Error::io("<copy source>", e)));
        }
        Ok(out)
    }
}

/// A file's content as a reader over its source blobs, one blob in memory
/// at a time.
struct BlobStream<'a> {
    src: &'a Repository,
    chunks: &'a [Id],
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    error: Option<Error>,
}

impl Read for BlobStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.chunks.get(self.next) else { return Ok(0) };
            self.next += 1;
            match self.src.read_blob(id) {
                Ok(b) => {
                    self.buf = b.to_vec();
                    self.pos = 0;
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
