use anyhow::{anyhow, Context, Result};
use arc_engine::ops::backup::{backup, check_sources, BackupOptions};
use arc_engine::repo::InitOptions;
use arc_engine::{Id, Repository};

use super::command_stream::{self, StderrOut};
use super::stdin_stream;
use super::Env;
use crate::args::BackupArgs;
use crate::ui::{size, CliProgress};

pub fn run(env: &Env, a: BackupArgs) -> Result<u8> {
    let stdin_stream = a.stdin || a.stdin_from_command.is_some();
    if a.paths.is_empty() && !stdin_stream && a.command_streams.is_empty() {
        return Err(anyhow!("nothing to back up: give paths, --stdin, --stdin-from-command or --command-stream"));
    }
    // Check the sources exist before creating a default repository for them.
    for p in &a.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(anyhow!("{}: no such file or directory", p.display()));
        }
    }
    // Stream names are checked before any dump command runs.
    let mut names: Vec<&str> = Vec::new();
    if stdin_stream {
        names.push(&a.stdin_name);
    }
    names.extend(a.command_streams.iter().map(|(n, _)| n.as_str()));
    check_sources(&a.paths, &names)?;

    // Dump commands start before the repository is opened (or created): one
    // that cannot be run stops arc before it writes anything, and all of
    // them start at one moment, before the files are read, so dumps and
    // files describe the same point in time.
    let mut commands: Vec<(&str, &str)> = Vec::new();
    if let Some(cmd) = &a.stdin_from_command {
        commands.push((&a.stdin_name, cmd));
    }
    commands.extend(a.command_streams.iter().map(|(n, c)| (n.as_str(), c.as_str())));
    let stderr_out = StderrOut::default();
    let mut streams = Vec::new();
    for (name, cmd) in commands {
        // Streams already started are dropped on error, which kills them.
        streams.push(command_stream::start(name, cmd, a.allow_empty, names.len() > 1, &stderr_out)?);
    }
    if a.stdin {
        streams.push(stdin_stream::source(a.stdin_name.clone(), a.allow_empty));
    }

    let repo = if env.is_default && !env.repo_path.join("config").exists() {
        let repo = Repository::init_local(&env.repo_path, &InitOptions::default())
            .with_context(|| format!("cannot create the default repository at {}", env.repo_path.display()))?;
        eprintln!("arc: created repository at {}", env.repo_path.display());
        repo
    } else {
        env.open()?
    };
    let parent = match &a.parent {
        Some(spec) => Some(repo.find_snapshot(spec, &Default::default())?.id),
        None => None,
    };
    let opts = BackupOptions {
        paths: a.paths,
        streams,
        tags: a.tags,
        host: a.host,
        time: a.time,
        parent,
        force_read: a.force_read,
        cancel: Some(env.cancel.clone()),
    };
    let progress = CliProgress::new(env.quiet, "backup");
    stderr_out.set_bar(progress.bar());
    let result = backup(&repo, opts, &progress);
    progress.finish();
    let result = result?;
    let s = &result.snapshot.summary;
    if env.json {
        super::print_json(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": result.snapshot_id,
            "short_id": result.snapshot_id.short(),
            "parent": result.snapshot.parent.map(|p: Id| p.to_hex()),
            "time": result.snapshot.time,
            "paths": result.snapshot.paths,
            "tags": result.snapshot.tags,
            "summary": s,
            "incomplete": result.warnings > 0,
        }))?;
    } else {
        let secs = match (s.backup_start, s.backup_end) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        println!(
            "files: {} new, {} changed, {} unchanged; {} dirs",
            s.files_new, s.files_changed, s.files_unchanged, s.dirs
        );
        println!(
            "read {}, added {} ({} stored) in {:.1}s",
            size(s.bytes_read),
            size(s.bytes_added),
            size(s.bytes_added_stored),
            secs
        );
        println!("snapshot {} saved", result.snapshot_id.short());
    }
    if result.warnings > 0 {
        eprintln!(
            "arc: warning: {} item(s) could not be read; snapshot {} is incomplete",
            result.warnings,
            result.snapshot_id.short()
        );
        return Ok(crate::EXIT_INCOMPLETE);
    }
    Ok(0)
}
