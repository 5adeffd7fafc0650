use anyhow::Result;
use arc_engine::ops::check::{check, CheckOptions};

use super::Env;
use crate::args::{CheckArgs, Subset};
use crate::ui::{size, CliProgress};

pub fn run(env: &Env, a: CheckArgs) -> Result<u8> {
    let mut repo = env.open_read()?;
    // The repository's own bytes: a cached copy would hide damage to them.
    repo.bypass_cache();
    let read_data_subset = match a.read_data_subset {
        None => None,
        Some(Subset::Group(n, m)) => Some((n - 1, m)),
        Some(Subset::Percent(p)) => {
            let groups = (1.0 / p).round().max(1.0) as u32;
            Some((next_group(&repo, groups), groups))
        }
    };
    let progress = CliProgress::new(env.quiet, "check");
    let report = check(&repo, &CheckOptions { read_data: a.read_data, read_data_subset }, &progress);
    progress.finish();
    let report = report?;
    if env.json {
        super::print_json(&report)?;
    } else {
        // -q (cron): only what is wrong.
        if !env.quiet {
            outln!(
                "checked {} snapshots, {} trees, {} packs{}",
                report.snapshots,
                report.trees,
                report.packs,
                if let Some(sub) = &report.read_data_subset {
                    format!(
                        ", read subset {sub}: {} packs, {}, verified {} blobs",
                        report.packs_read,
                        size(report.bytes_read),
                        report.blobs_verified
                    )
                } else if a.read_data {
                    format!(", read {} and verified {} blobs", size(report.bytes_read), report.blobs_verified)
                } else {
                    String::new()
                }
            )?;
        }
        for w in &report.warnings {
            outln!("warning: {w}")?;
        }
        for p in &report.errors {
            outln!("error: {}", p.message)?;
            for f in &p.affected {
                outln!("  affects {f}")?;
            }
        }
        if report.index_damaged {
            outln!("hint: rebuild the index from the packs with `arc repair index`")?;
        }
        if !report.damaged_packs.is_empty() {
            let ids: Vec<String> = report.damaged_packs.iter().map(|p| p.to_string()).collect();
            outln!(
                "hint: `arc repair packs {}` moves what is intact in the damaged pack(s) into new packs and takes \
                 them out of the index; then `arc backup --force-read` of the same paths stores again what the \
                 sources still hold",
                ids.join(" ")
            )?;
        }
        if report.data_missing {
            outln!(
                "hint: `arc repair index`, then `arc backup --force-read` of the same paths, stores again what the \
                 sources still hold; the older snapshots that share it are repaired with it"
            )?;
        }
        if report.ok() && !env.quiet {
            outln!("no errors were found")?;
        }
    }
    if report.ok() {
        Ok(0)
    } else {
        eprintln!("arc: error: the repository has {} problem(s)", report.errors.len());
        Ok(1)
    }
}

/// The group a `P%` check reads this time: a counter per repository in the
/// cache directory, advanced on each run, so successive runs read
/// successive groups and a cycle of runs reads every pack. It lives on this
/// machine, not in the repository (check writes nothing there); without a
/// cache directory the day number picks the group instead.
fn next_group(repo: &arc_engine::Repository, groups: u32) -> u32 {
    let key = arc_engine::Id::hash(repo.location().as_bytes()).short();
    let Some(file) = dirs::cache_dir().map(|d| d.join("arc").join("check-subset").join(key)) else {
        return (chrono::Utc::now().timestamp() / 86_400) as u32 % groups;
    };
    let n: u64 = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&file, format!("{}\n", n + 1));
    (n % u64::from(groups)) as u32
}
