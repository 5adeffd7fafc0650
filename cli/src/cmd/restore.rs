use anyhow::Result;
use arc_engine::ops::restore::{restore, RestoreOptions};

use super::{select, Env};
use crate::args::RestoreArgs;
use crate::ui::{size, CliProgress};

/// `restore --json` (docs/json.md, `restore`).
#[derive(serde::Serialize)]
struct RestoreReport<'a, R: serde::Serialize> {
    snapshot_id: arc_engine::Id,
    target: &'a std::path::Path,
    result: &'a R,
}

pub fn run(env: &Env, a: RestoreArgs) -> Result<u8> {
    // restic's `restore SNAPSHOT:PATH` (and arc's own `cat` form): said
    // before the repository is opened, with the form restore takes.
    if let Some((snap, path)) = a.snapshot.split_once(':') {
        return Err(super::usage(format!(
            "restore takes a snapshot, not {:?}; restore one path with `arc restore {snap} --include {path} --target DIR`",
            a.snapshot
        )));
    }
    // Plain paths are looked up directly (a missing one is an error);
    // with any glob character every include is a pattern, matched while
    // walking the whole snapshot.
    let is_glob = |s: &String| s.contains(['*', '?', '[', '\\', '!']);
    let patterns = !a.iincludes.is_empty() || a.includes.iter().any(is_glob);
    let given = a.includes.iter().chain(&a.iincludes).map(String::as_str).collect::<Vec<_>>().join(" ");
    let (includes, include_patterns) = if patterns {
        (
            Vec::new(),
            select::pattern_set(&[], &[], &[("--include", &a.includes, false), ("--iinclude", &a.iincludes, true)])?,
        )
    } else {
        (a.includes, Default::default())
    };
    let exclude_patterns =
        select::pattern_set(&[], &[], &[("--exclude", &a.excludes, false), ("--iexclude", &a.iexcludes, true)])?;
    let repo = env.open_read()?;
    // `latest` is the newest snapshot that holds every plain --include.
    let held: Vec<&str> = includes.iter().map(String::as_str).collect();
    let (snap, _) = arc_engine::ops::browse::resolve(&repo, &a.snapshot, &a.filter.clone().into(), &held)?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes,
        include_patterns,
        exclude_patterns,
        overwrite: a.overwrite,
        cancel: Some(env.cancel.clone()),
    };
    // -v lists each file restored, in the order they are written (one
    // JSON document stays one: --json lists nothing).
    let progress = CliProgress::new(env.quiet, "restore").listing_files(env.verbose > 0 && !env.json);
    if opts.includes.is_empty() && opts.include_patterns.is_empty() && opts.exclude_patterns.is_empty() {
        arc_engine::progress::Progress::total(&progress, snap.file.summary.total_files, snap.file.summary.total_bytes);
    }
    let target_existed = a.target.exists();
    let result = restore(&repo, &snap, &opts, &progress);
    progress.finish();
    let r = result?;
    if !opts.include_patterns.is_empty() && r.files + r.dirs + r.other == 0 {
        // A mistyped pattern restores nothing: say so, and take back the
        // empty target directory made for it.
        if !target_existed {
            let _ = std::fs::remove_dir(&a.target);
        }
        return Err(anyhow::anyhow!(
            "nothing in snapshot {} matches --include {}; nothing was restored (`arc ls -R {} PATH` shows what it holds)",
            snap.id.short(),
            given,
            snap.id.short()
        ));
    }
    if env.json {
        super::print_json(&RestoreReport { snapshot_id: snap.id, target: &a.target, result: &r })?;
    } else if !env.quiet {
        outln!(
            "restored snapshot {} to {}: {} files, {} dirs, {} other, {}",
            snap.id.short(),
            a.target.display(),
            r.files,
            r.dirs,
            r.other,
            size(r.bytes)
        )?;
    }
    if r.errors > 0 {
        eprintln!("arc: error: {} item(s) could not be restored (see warnings above)", r.errors);
        return Ok(1);
    }
    Ok(0)
}
