//! `arc cache`: the local caches of repositories under `$XDG_CACHE_HOME/arc`
//! (engine/src/cache.rs): list them, or remove those not used for a while
//! (restic's `cache --cleanup`).

use std::time::SystemTime;

use anyhow::{anyhow, Result};
use arc_engine::cache::{self, CacheInfo};
use serde::Serialize;

use super::Env;
use crate::args::CacheArgs;
use crate::ui::size;

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    /// The location last used (no credentials), or null if none recorded.
    location: Option<&'a str>,
    /// Every location the cache served, most recent first.
    locations: &'a [String],
    path: String,
    size: u64,
    last_used: chrono::DateTime<chrono::Utc>,
}

fn entry(c: &CacheInfo) -> Entry<'_> {
    Entry {
        id: &c.id,
        location: c.locations.first().map(String::as_str),
        locations: &c.locations,
        path: c.dir.display().to_string(),
        size: c.size,
        last_used: c.last_used.into(),
    }
}

fn age(t: SystemTime) -> String {
    let secs = SystemTime::now().duration_since(t).unwrap_or_default().as_secs();
    match secs {
        s if s < 120 => "just now".into(),
        s if s < 2 * 3600 => format!("{} min ago", s / 60),
        s if s < 2 * 86400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}

pub fn run(env: &Env, a: CacheArgs) -> Result<u8> {
    let root = super::cache_root().ok_or_else(|| anyhow!("no cache directory: set XDG_CACHE_HOME or HOME"))?;
    if a.cleanup {
        let removed = cache::remove_unused(&root, a.max_unused)?;
        if env.json {
            super::print_json(&removed.iter().map(entry).collect::<Vec<_>>())?;
        } else if !env.quiet {
            for c in &removed {
                outln!(
                    "removed {} ({}, {}, last used {})",
                    c.id,
                    c.locations.first().map(String::as_str).unwrap_or("location unknown"),
                    size(c.size),
                    age(c.last_used)
                )?;
            }
            let freed: u64 = removed.iter().map(|c| c.size).sum();
            outln!("removed {} cache(s), freed {}", removed.len(), size(freed))?;
        }
        return Ok(0);
    }
    let all = cache::list(&root)?;
    if env.json {
        super::print_json(&all.iter().map(entry).collect::<Vec<_>>())?;
        return Ok(0);
    }
    if all.is_empty() {
        outln!("no repository caches in {}", root.display())?;
        return Ok(0);
    }
    outln!("{:<10}  {:>10}  {:<16}  location", "id", "size", "last used")?;
    for c in &all {
        outln!(
            "{:<10}  {:>10}  {:<16}  {}",
            &c.id[..c.id.len().min(10)],
            size(c.size),
            age(c.last_used),
            c.locations.first().map(String::as_str).unwrap_or("-")
        )?;
        for other in c.locations.iter().skip(1) {
            outln!("{:<10}  {:>10}  {:<16}  {}", "", "", "", other)?;
        }
    }
    let total: u64 = all.iter().map(|c| c.size).sum();
    outln!("{} cache(s), {} in {}", all.len(), size(total), root.display())?;
    Ok(0)
}
