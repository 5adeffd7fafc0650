//! The commit check of a v2 backup or copy (format-spec/v2/protocol.md §4,
//! B6, B7, B9): run after every pack and index file of the new snapshot is
//! durable and right before the snapshot is put. It makes sure that no
//! blob the snapshot reaches lives only in a pack that a prune marked
//! since the session started (or, after the session lapsed, in any marked
//! or deleted pack): such blobs are copied into new packs first, and if
//! one is gone already, the snapshot is not written.
//!
//! In the common case (no prune marked anything meanwhile and the session
//! never lapsed) this costs one session refresh, whose listing of `marks/`
//! is the one the check uses.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::pack::{BlobKind, FrameCodec};
use crate::id::Id;
use crate::packer;
use crate::repo::Repository;
use crate::session::Session;

/// How often a check that keeps lapsing is repeated before giving up.
const ROUNDS: usize = 3;

/// What the check did.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitCheck {
    /// Blobs copied out of marked packs into new packs.
    pub blobs_copied: u64,
    /// Whether the tree had to be walked (a relevant mark, or a lapse).
    pub walked: bool,
}

fn gone(what: String) -> Error {
    Error::PrunedMeanwhile { what }
}

/// Verifies (and repairs by copying) everything the tree at `root` needs.
pub fn verify(repo: &Repository, session: &Session, root: Id) -> Result<CommitCheck> {
    let mut out = CommitCheck::default();
    let mut copied: HashSet<Id> = HashSet::new();
    let margin = std::time::Duration::from_secs(session.settings().margin_secs);
    let since = session.start_time().checked_sub(margin).unwrap_or(session.start_time());
    for _ in 0..ROUNDS {
        // B6: refresh, then the marks. The refresh lists `marks/` after its
        // put; a second listing here would tell nothing more (protocol.md
        // section 4, B6).
        let marks = session.refresh_now()?;
        let lapsed = session.lapsed();
        session.clear_lapse();
        let suspect: HashSet<Id> = marks
            .iter()
            .filter(|m| lapsed || m.time >= since)
            .flat_map(|m| m.file.packs.iter().map(|p| p.id))
            .collect();
        if suspect.is_empty() && !lapsed {
            return Ok(out);
        }
        out.walked = true;
        // A sweep replaces the index files that list what it deletes: the
        // database must not keep pointing at deleted packs.
        repo.refresh_index()?;
        let existing: Option<HashSet<Id>> = if lapsed { Some(repo.pack_sizes()?.into_keys().collect()) } else { None };
        let needs_copy = |pack: &Id| suspect.contains(pack) || existing.as_ref().is_some_and(|e| !e.contains(pack));
        // Only a lapsed session can find something gone (§6): say how long
        // it went unheard, which is what the user can act on.
        let why = |e: Error| match e {
            Error::PrunedMeanwhile { what } if lapsed => {
                let s = session.settings();
                let gap = session.longest_gap().as_secs_f64();
                let (expiry, margin) = (s.session_expiry_secs, s.margin_secs);
                Error::PrunedMeanwhile {
                    what: format!(
                        "{what} while this backup went unheard for {gap:.1} s \
                         (longer than the session expiry allows, {expiry} s less a margin of {margin} s)"
                    ),
                }
            }
            e => e,
        };
        let to_copy = walk(repo, root, &needs_copy, &copied).map_err(why)?;
        if !to_copy.is_empty() {
            let ((), _) = packer::run(repo, Vec::new(), &|| false, |sink| {
                for (id, kind) in &to_copy {
                    let data = repo.read_blob(id).map_err(|e| match e {
                        Error::Missing { .. } | Error::BlobNotInIndex(_) => gone(format!("blob {id} ({e})")),
                        e => e,
                    })?;
                    sink.store_copy(*id, *kind, &data)?;
                }
                Ok(())
            })
            .map_err(why)?;
            out.blobs_copied += to_copy.len() as u64;
            copied.extend(to_copy.iter().map(|(id, _)| *id));
        }
        // B9: no gap between this check and the snapshot's put.
        session.refresh_now()?;
        if !session.lapsed() {
            return Ok(out);
        }
    }
    Err(Error::SessionLost { reason: format!("the session lapsed {ROUNDS} times during the commit check") })
}

/// Every blob reachable from `root` whose (first) location is a pack for
/// which `needs_copy` holds, except those in `done`. A blob or tree that is
/// in no pack any more means a prune deleted it.
fn walk(
    repo: &Repository,
    root: Id,
    needs_copy: &dyn Fn(&Id) -> bool,
    done: &HashSet<Id>,
) -> Result<Vec<(Id, BlobKind)>> {
    let mut out = Vec::new();
    let mut seen: HashSet<Id> = HashSet::new();
    let mut frontier = vec![root];
    seen.insert(root);
    let locate = |id: &Id, what: &str| -> Result<Id> {
        match repo.lookup_blob(id)? {
            Some(loc) => Ok(loc.pack),
            None => Err(gone(format!("{what} {id}"))),
        }
    };
    while let Some(tree_id) = frontier.pop() {
        locate(&tree_id, "tree")?;
        // Every blob of the directory: a split v2 directory's nodes, leaves
        // and chunk lists too, which a parent's unchanged directory shares.
        let (tree, parts) = repo.load_tree_with_parts(&tree_id).map_err(|e| match e {
            Error::Missing { .. } | Error::BlobNotInIndex(_) => gone(format!("tree {tree_id} ({e})")),
            e => e,
        })?;
        for part in parts {
            if (part == tree_id || seen.insert(part)) && needs_copy(&locate(&part, "tree")?) && !done.contains(&part) {
                out.push((part, BlobKind::Tree));
            }
        }
        for node in &tree.nodes {
            if let Some(sub) = node.subtree {
                if seen.insert(sub) {
                    frontier.push(sub);
                }
            }
            for c in &node.chunks {
                if !seen.insert(*c) {
                    continue;
                }
                let loc = repo.lookup_blob(c)?.ok_or_else(|| gone(format!("chunk {c}")))?;
                if needs_copy(&loc.pack) && !done.contains(c) {
                    out.push((*c, BlobKind::Data));
                }
                // A stream chunk stored as a delta relies on its base as
                // much as on itself (streams.md §4.6). A copied delta is
                // stored plainly, but the copy happens after this walk.
                if loc.frame.codec == FrameCodec::Delta {
                    let base = repo.delta_base(&loc.pack, &loc.frame).map_err(|e| match e {
                        Error::Missing { .. } => gone(format!("chunk {c} ({e})")),
                        e => e,
                    })?;
                    if seen.insert(base) && needs_copy(&locate(&base, "chunk")?) && !done.contains(&base) {
                        out.push((base, BlobKind::Data));
                    }
                }
            }
        }
    }
    Ok(out)
}
