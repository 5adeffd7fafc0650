use anyhow::Result;
use arc_engine::ops::restore::{restore, RestoreOptions};

use super::Env;
use crate::args::RestoreArgs;
use crate::ui::{size, CliProgress};

pub fn run(env: &Env, a: RestoreArgs) -> Result<u8> {
    let repo = env.open_read()?;
    // `latest` is the newest snapshot that holds every --include.
    let includes: Vec<&str> = a.includes.iter().map(String::as_str).collect();
    let (snap, _) = arc_engine::ops::browse::resolve(&repo, &a.snapshot, &a.filter.clone().into(), &includes)?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        includes: a.includes,
        overwrite: a.overwrite,
        cancel: Some(env.cancel.clone()),
    };
    let progress = CliProgress::new(env.quiet, "restore");
    if opts.includes.is_empty() {
        arc_engine::progress::Progress::total(&progress, snap.file.summary.total_files, snap.file.summary.total_bytes);
    }
    let result = restore(&repo, &snap, &opts, &progress);
    progress.finish();
    let r = result?;
    if env.json {
        super::print_json(&serde_json::json!({
            "snapshot_id": snap.id,
            "target": a.target,
            "result": r,
        }))?;
    } else {
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
