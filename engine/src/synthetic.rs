//! Synthetic repositories for the scale benchmarks and memory-ceiling
//! tests (issue #16): an index of any number of chunks written through the
//! engine's own index writer, with no data. The data packs are sparse
//! files of the length their index entries record (a local repository
//! only), so everything that does not read chunk contents (the index
//! cache, dedup lookups, `check` without `--read-data`, prune's plan and
//! its deletion of dead packs) runs on it as on a real repository of that
//! size.
//!
//! Shape, all derived from `seed` (the same arguments always give the same
//! repository, up to the snapshot's time and the keys of an encrypted
//! one): `chunks` chunk ids (BLAKE3 of seed, pack, record) in packs of
//! `chunks_per_pack`, each chunk 64 KiB raw and 32 KiB stored in a frame of
//! its own; one snapshot with a file per live pack (1,000 files a
//! directory) listing that pack's chunks; every tenth pack (pack number 9
//! modulo 10) is referenced by nothing, so that prune has dead packs to
//! delete and nothing to repack.

use crate::error::{Error, Result};
use crate::format::index_file::PackEntry;
use crate::format::pack::{self, BlobKind, BlobRecord, FrameCodec, FrameRecord, Trailer};
use crate::format::snapshot::{SnapshotFile, Summary};
use crate::format::tree::{Node, NodeKind, Timestamp, Tree};
use crate::id::Id;
use crate::ops::tree_store;
use crate::repo::Repository;
use crate::storage::FileKind;
use crate::storage::LocalDir;

/// Raw and stored bytes of every synthetic chunk.
const RAW_LEN: u32 = 64 * 1024;
const STORED_LEN: u32 = 32 * 1024;
/// Files in one synthetic directory.
const FILES_PER_DIR: u64 = 1000;
/// Packs per synthetic index file.
const PACKS_PER_INDEX_FILE: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct SyntheticIndex {
    pub chunks: u64,
    pub chunks_per_pack: u32,
    pub seed: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyntheticReport {
    pub packs: u64,
    pub dead_packs: u64,
    pub chunks: u64,
    pub live_chunks: u64,
    pub index_files: u64,
    pub snapshot: Option<Id>,
}

/// Chunk `record` of synthetic pack `pack`.
pub fn chunk_id(seed: u64, pack: u64, record: u32) -> Id {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..16].copy_from_slice(&pack.to_le_bytes());
    b[16..].copy_from_slice(&record.to_le_bytes());
    Id::hash(&b)
}

fn is_dead(pack: u64) -> bool {
    pack % 10 == 9
}

fn pack_entry(spec: &SyntheticIndex, pack: u64, records: u32, sealed: bool) -> PackEntry {
    let mut id_seed = [0u8; 24];
    id_seed[..8].copy_from_slice(b"syntpack");
    id_seed[8..16].copy_from_slice(&spec.seed.to_le_bytes());
    id_seed[16..].copy_from_slice(&pack.to_le_bytes());
    sparse_entry(Id::hash(&id_seed), (0..records).map(|r| chunk_id(spec.seed, pack, r)), sealed)
}

/// The entry of a synthetic pack `pack` holding `chunks`, a frame each.
pub(crate) fn sparse_entry(pack: Id, chunks: impl Iterator<Item = Id>, sealed: bool) -> PackEntry {
    let mut frames = Vec::new();
    let mut blobs = Vec::new();
    let mut offset = pack::HEADER_LEN;
    for (r, id) in chunks.enumerate() {
        frames.push(FrameRecord { offset, stored_len: STORED_LEN, raw_len: RAW_LEN, codec: FrameCodec::Zstd });
        blobs.push(BlobRecord { id, kind: BlobKind::Data, frame: r as u32, offset_in_frame: 0, raw_len: RAW_LEN });
        offset += u64::from(STORED_LEN);
    }
    let trailer = Trailer { frames, blobs };
    // A v2 pack's trailer is sealed: its stored length has the seal's.
    let overhead = if sealed { crate::format::sealed::OVERHEAD as u64 } else { 0 };
    let pack_len = offset + trailer.encode().len() as u64 + overhead + pack::FOOTER_LEN;
    PackEntry { pack, pack_len, trailer }
}

/// Creates the sparse file of `entry`'s pack in the local repository at
/// `root`.
pub(crate) fn write_sparse(root: &std::path::Path, entry: &PackEntry) -> Result<()> {
    let path = LocalDir::new(root).file_path(FileKind::Pack, &entry.pack.to_hex())?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
    f.set_len(entry.pack_len).map_err(|e| Error::io(&path, e))
}

/// Writes the synthetic index, its sparse packs and its snapshot into the
/// (new, local) repository `repo`. `progress(packs written)` is called
/// now and then.
pub fn generate(repo: &Repository, spec: &SyntheticIndex, progress: &dyn Fn(u64)) -> Result<SyntheticReport> {
    let root = repo.storage().local_path().map(|p| p.to_path_buf()).ok_or_else(|| Error::InvalidArgument {
        what: "repository",
        reason: "a synthetic index needs a local repository (its packs are sparse files)".into(),
    })?;
    if spec.chunks_per_pack == 0 {
        return Err(Error::InvalidArgument { what: "chunks per pack", reason: "0".into() });
    }
    let per = u64::from(spec.chunks_per_pack);
    let packs = spec.chunks.div_ceil(per);
    let records = |pack: u64| (spec.chunks - pack * per).min(per) as u32;
    let mut report = SyntheticReport { packs, chunks: spec.chunks, ..Default::default() };

    // The snapshot's trees first, while the index database knows only
    // them: a directory of up to 1,000 files at a time, one file a live
    // pack.
    let live: Vec<u64> = (0..packs).filter(|p| !is_dead(*p)).collect();
    let node = |kind: NodeKind, name: String| {
        let mut n = Node::new(kind, name.into_bytes());
        n.mode = if kind == NodeKind::Dir { 0o040755 } else { 0o100644 };
        n.mtime = Timestamp { sec: 1_700_000_000, nsec: 0 };
        n.ctime = n.mtime;
        n
    };
    let (root_tree, _) = crate::packer::run(repo, Vec::new(), &|| false, |sink| {
        let reader = repo.index()?.reader()?;
        let mut top = Tree { nodes: Vec::new() };
        for (d, group) in live.chunks(FILES_PER_DIR as usize).enumerate() {
            let mut dir = Tree { nodes: Vec::new() };
            for &p in group {
                let mut f = node(NodeKind::File, format!("f{p:010}"));
                f.chunks = (0..records(p)).map(|r| chunk_id(spec.seed, p, r)).collect();
                f.size = u64::from(RAW_LEN) * f.chunks.len() as u64;
                dir.nodes.push(f);
            }
            let stored = tree_store::store_dir(repo, sink, &reader, &mut dir)?;
            let mut n = node(NodeKind::Dir, format!("d{d:06}"));
            n.subtree = Some(stored.id);
            top.nodes.push(n);
        }
        Ok(tree_store::store_dir(repo, sink, &reader, &mut top)?.id)
    })?;
    report.live_chunks = live.iter().map(|p| u64::from(records(*p))).sum();
    report.dead_packs = packs - live.len() as u64;

    // The index files, through the engine's index writer, and the packs
    // they list as sparse files of the recorded length.
    let mut group = Vec::with_capacity(PACKS_PER_INDEX_FILE);
    for p in 0..packs {
        let entry = pack_entry(spec, p, records(p), repo.keys().is_some());
        write_sparse(&root, &entry)?;
        group.push(entry);
        if group.len() == PACKS_PER_INDEX_FILE || p + 1 == packs {
            for (id, data, _) in repo.encode_index_files(&group, &[])? {
                repo.storage().put(FileKind::Index, &id.to_hex(), &data)?;
                report.index_files += 1;
            }
            group.clear();
            progress(p + 1);
        }
    }

    // The commit point, last (a fresh repository that nothing else uses:
    // no session is needed to guard it against a prune).
    let file = SnapshotFile {
        time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        host: "synthetic".into(),
        username: "synthetic".into(),
        uid: 0,
        gid: 0,
        paths: vec!["/synthetic".into()],
        tags: Vec::new(),
        tree: root_tree,
        parent: None,
        program_version: format!("arc {} (synthetic index)", env!("CARGO_PKG_VERSION")),
        summary: Summary { total_files: live.len() as u64, ..Default::default() },
        excludes: Vec::new(),
        original: None,
    };
    report.snapshot = Some(repo.save_snapshot(&file)?);
    Ok(report)
}
