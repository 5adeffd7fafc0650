use anyhow::Result;
use arc_engine::ops::check::{check, CheckOptions};

use super::Env;
use crate::args::CheckArgs;
use crate::ui::{size, CliProgress};

pub fn run(env: &Env, a: CheckArgs) -> Result<u8> {
    let repo = env.open_read()?;
    let progress = CliProgress::new(env.quiet, "check");
    let report = check(&repo, &CheckOptions { read_data: a.read_data }, &progress);
    progress.finish();
    let report = report?;
    if env.json {
        super::print_json(&report)?;
    } else {
        outln!(
            "checked {} snapshots, {} trees, {} packs{}",
            report.snapshots,
            report.trees,
            report.packs,
            if a.read_data {
                format!(", read {} and verified {} blobs", size(report.bytes_read), report.blobs_verified)
            } else {
                String::new()
            }
        )?;
        for w in &report.warnings {
            outln!("warning: {w}")?;
        }
        for p in &report.errors {
            outln!("error: {}", p.message)?;
            for f in &p.affected {
                outln!("  affects {f}")?;
            }
        }
        if report.ok() {
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
