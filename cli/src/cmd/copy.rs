//! `arc copy --from-repo SRC [SNAPSHOT...|--all]`: the target is --repo.
//! The source's passphrase comes from `ARC_FROM_PASSWORD`,
//! `ARC_FROM_PASSWORD_FILE` or `ARC_FROM_PASSWORD_COMMAND`, else from the
//! target's variables, else the terminal.

use std::cell::RefCell;

use anyhow::{anyhow, Context, Result};
use arc_engine::ops::copy::{copy, CopyOptions};
use arc_engine::SnapshotFilter;

use super::Env;
use crate::args::CopyArgs;
use crate::ui::{size, CliProgress};

/// `copy --json` (docs/json.md).
#[derive(serde::Serialize)]
struct CopyJson {
    copied: Vec<Copied>,
    /// Source snapshots the target already had.
    skipped: Vec<String>,
    rechunked: bool,
    blobs_added: u64,
    bytes_added: u64,
    bytes_stored: u64,
}

/// A copied snapshot: its id in the source and in the target.
#[derive(serde::Serialize)]
struct Copied {
    source: String,
    target: String,
}

pub fn run(env: &Env, a: CopyArgs) -> Result<u8> {
    let dst = env.open()?;
    // As for --repo: the engine asks only if the source is encrypted, and
    // a failure to get a passphrase is ours to word.
    let failure: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let local_key =
        super::parse_location(&a.from_repo).ok().and_then(|l| l.local_path().and_then(super::default_key_for));
    let source = || {
        crate::passphrase::existing_source(local_key.as_deref()).map_err(|e| {
            *failure.borrow_mut() = Some(e);
            arc_engine::Error::PassphraseRequired
        })
    };
    let access = super::OtherAccess {
        env_file: a.from_env_file.as_deref().map(|p| (p, "--from-env-file")),
        ..Default::default()
    };
    let opened = super::open_other(&a.from_repo, "--from-repo", Some(&source), &access);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let src = opened?;
    if dst.config().id == src.config().id {
        return Err(anyhow!("--from-repo {} is the target repository itself", a.from_repo.display()));
    }
    let mut snapshots = Vec::new();
    for spec in &a.snapshots {
        snapshots.push(
            src.find_snapshot(spec, &SnapshotFilter::default())
                .with_context(|| format!("in --from-repo {}", a.from_repo.display()))?
                .id,
        );
    }
    let progress = CliProgress::new(env.quiet, "copy");
    let opts = CopyOptions { snapshots, cancel: Some(env.cancel.clone()) };
    let r = copy(&src, &dst, &opts, &progress);
    progress.finish();
    let r = r?;
    if env.json {
        super::print_json(&CopyJson {
            copied: r.copied.iter().map(|c| Copied { source: c.source.to_hex(), target: c.target.to_hex() }).collect(),
            skipped: r.skipped.iter().map(|s| s.to_hex()).collect(),
            rechunked: r.rechunked,
            blobs_added: r.blobs_added,
            bytes_added: r.bytes_added,
            bytes_stored: r.bytes_stored,
        })?;
        return Ok(0);
    }
    if env.quiet {
        return Ok(0);
    }
    for c in &r.copied {
        outln!("copied snapshot {} as {}", c.source.short(), c.target.short())?;
    }
    for s in &r.skipped {
        outln!("snapshot {} is already in the target", s.short())?;
    }
    outln!(
        "{} snapshot(s) copied, {} already there; added {} blobs ({}, {} stored){}",
        r.copied.len(),
        r.skipped.len(),
        r.blobs_added,
        size(r.bytes_added),
        size(r.bytes_stored),
        if r.rechunked { "; content was re-chunked for the target's chunker and ids" } else { "" }
    )?;
    Ok(0)
}
