//! `arc tag`: add, remove or set snapshot tags.

use anyhow::{anyhow, Result};
use arc_engine::ops::tag::{tag, TagOptions};
use arc_engine::{Snapshot, SnapshotFilter};

use super::{find_snapshot, Env};
use crate::args::TagArgs;

pub fn run(env: &Env, a: TagArgs) -> Result<u8> {
    let repo = env.open()?;
    let snapshots: Vec<Snapshot> = if a.snapshots.is_empty() {
        let filter: SnapshotFilter = a.filter.clone().into();
        repo.snapshots()?.into_iter().filter(|s| filter.matches(&s.file)).collect()
    } else {
        a.snapshots.iter().map(|s| find_snapshot(&repo, s, &a.filter)).collect::<Result<_>>()?
    };
    if snapshots.is_empty() {
        return Err(anyhow!("no snapshot matches the filter"));
    }
    let set = if a.set.is_empty() {
        None
    } else {
        Some(super::split_tags(a.set).into_iter().filter(|t| !t.is_empty()).collect())
    };
    let opts = TagOptions { set, add: super::split_tags(a.add), remove: super::split_tags(a.remove) };
    let done = tag(&repo, &snapshots, &opts)?;
    if env.json {
        super::print_json(&done)?;
    } else {
        for r in &done {
            match r.new_id {
                Some(id) => outln!("snapshot {} -> {}: tags {}", r.old_id.short(), id.short(), r.tags.join(","))?,
                None => outln!("snapshot {}: unchanged (tags {})", r.old_id.short(), r.tags.join(","))?,
            }
        }
    }
    Ok(0)
}
