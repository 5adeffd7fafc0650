use anyhow::{anyhow, Context, Result};
use arc_engine::format::key_file::Protection;
use arc_engine::ops::backup::{backup, check_sources, BackupOptions, DryRunFile};
use arc_engine::progress::{ItemKind, Items};
use arc_engine::repo::InitOptions;
use arc_engine::{Id, Repository};

use super::command_stream::{self, StderrOut};
use super::stdin_stream;
use super::{select, Env};
use crate::args::BackupArgs;
use crate::backup_progress::{BackupProgress, VerboseStatus};
use crate::ui::{size, CliProgress};

pub fn run(env: &Env, mut a: BackupArgs) -> Result<u8> {
    // Patterns and lists are read first: a bad one stops arc before
    // anything is read or written.
    let excludes = select::backup_excludes(&a)?;
    a.paths.extend(select::files_from(&a.files_from, &a.files_from0)?);
    if a.paths.is_empty() && (!a.files_from.is_empty() || !a.files_from0.is_empty()) {
        return Err(anyhow!("the --files-from lists name no path"));
    }
    if a.record_as.is_some() && a.paths.len() != 1 {
        return Err(super::usage("--as records one path under another: give exactly one PATH"));
    }
    if a.stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // It would wait, silently, for a dump typed by hand.
        return Err(super::usage(
            "--stdin reads a stream piped into arc (mysqldump shop | arc backup --stdin ...), and standard input \
             is a terminal; use --stdin-from-command CMD to have arc run the dump",
        ));
    }
    let stdin_stream = a.stdin || a.stdin_from_command.is_some();
    if a.paths.is_empty() && !stdin_stream && a.command_streams.is_empty() {
        return Err(super::usage("nothing to back up: give paths, --stdin, --stdin-from-command or --command-stream"));
    }
    // Check the sources exist before creating a default repository for them.
    for p in &a.paths {
        if std::fs::symlink_metadata(p).is_err() {
            return Err(anyhow!("{}: no such file or directory", p.display()));
        }
    }
    if a.dry_run {
        return dry_run(env, a, excludes);
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

    if env.is_default && !env.repo_path.join("config").exists() {
        // The README's first command: no init, maybe no terminal. The
        // repository is encrypted with a passphrase from ARC_PASSWORD* if
        // given, else a random one kept in the user's configuration.
        let (protection, key_note) = match crate::passphrase::from_env("ARC")? {
            Some(p) => (Protection::passphrase(p), None),
            None => {
                let path = crate::passphrase::default_key_path()?;
                let p = if path.exists() {
                    crate::passphrase::existing(Some(&path))?
                } else {
                    crate::passphrase::create_default_key(&path)?
                };
                // A key file of arc's own making (256 random bits) needs no
                // stretching; anything else a user put there gets the
                // passphrase cost.
                let protection = if crate::passphrase::is_generated_key(&p) {
                    Protection::generated(p)
                } else {
                    Protection::passphrase(p)
                };
                (protection, Some(path))
            }
        };
        let opts = InitOptions { protection, ..InitOptions::default() };
        Repository::init_local(&env.repo_path, &opts)
            .with_context(|| format!("cannot create the default repository at {}", env.repo_path.display()))?;
        match key_note {
            Some(path) => eprintln!(
                "arc: created an encrypted repository at {}; its key is in {} (keep a copy elsewhere: \
                 `arc key export` prints it)",
                env.repo_path.display(),
                path.display()
            ),
            None => eprintln!("arc: created an encrypted repository at {}", env.repo_path.display()),
        }
    }
    let repo = env.open()?;
    let parent = parent_id(&repo, a.parent.as_deref())?;
    let opts = BackupOptions {
        paths: a.paths,
        streams,
        tags: super::split_tags(a.tags),
        host: a.host,
        time: a.time,
        parent,
        force_read: a.force_read,
        cancel: Some(env.cancel.clone()),
        excludes,
        limit_read: a.limit_read,
        record_as: a.record_as,
        no_stream_deltas: a.no_stream_deltas,
    };
    let mut progress = BackupProgress::new(env.quiet, env.json, names.len() as u64, listed(env));
    stderr_out.set_bar(progress.bar());
    let result = backup(&repo, opts, &progress);
    progress.finish();
    let result = match result {
        // Ctrl-C, SIGTERM: say what the user needs to know next.
        Err(arc_engine::Error::Interrupted) => {
            return Err(anyhow!(
                "interrupted: no snapshot was written; what was stored so far is reused by the next backup"
            ))
        }
        Err(e) => return Err(failed(e)),
        Ok(r) => r,
    };
    let s = &result.snapshot.summary;
    if env.json {
        let secs = match (s.backup_start, s.backup_end) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        super::print_json(&BackupSummary {
            message_type: "summary",
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unmodified: s.files_unchanged,
            data_blobs: s.blobs_added,
            data_added: s.bytes_added,
            data_added_packed: s.bytes_added_stored,
            total_files_processed: s.total_files,
            total_bytes_processed: s.total_bytes,
            total_duration: secs,
            backup_start: s.backup_start,
            backup_end: s.backup_end,
            snapshot_id: result.snapshot_id,
            short_id: result.snapshot_id.short(),
            parent: result.snapshot.parent,
            time: result.snapshot.time,
            paths: &result.snapshot.paths,
            tags: &result.snapshot.tags,
            summary: s,
            excludes: &result.snapshot.excludes,
            incomplete: result.warnings > 0,
            files_reread_missing: result.files_reread_missing,
        })?;
    } else if !env.quiet {
        // -q (cron): nothing on success; warnings and exit 3 still tell.
        let secs = match (s.backup_start, s.backup_end) {
            (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
            _ => 0.0,
        };
        outln!(
            "files: {} new, {} changed, {} unchanged; {} dirs{}",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            excluded_note(s.entries_excluded)
        )?;
        if s.bytes_read == 0 {
            // Nothing was read: what was added is the snapshot's directory
            // trees (new times, a new directory), not file data.
            outln!(
                "read nothing (no file changed); added {} of metadata, directory trees ({} stored) in {:.1}s",
                size(s.bytes_added),
                size(s.bytes_added_stored),
                secs
            )?;
        } else {
            outln!(
                "read {}, added {} ({} stored) in {:.1}s",
                size(s.bytes_read),
                size(s.bytes_added),
                size(s.bytes_added_stored),
                secs
            )?;
        }
        if result.files_reread_missing > 0 {
            outln!(
                "read {} unchanged file(s) again: their data was no longer in the repository (dropped by a repair)",
                result.files_reread_missing
            )?;
        }
        outln!("snapshot {} saved", result.snapshot_id.short())?;
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

/// A backup's error, saying what a user of a cron job asks next: whether a
/// snapshot was written (never, on an error) and what becomes of the data
/// read. The error and its hint stay first, on the one line.
fn failed(e: arc_engine::Error) -> anyhow::Error {
    let e = anyhow::Error::new(e);
    let hint = crate::ui::hint(&e).map(|h| format!("; {h}")).unwrap_or_default();
    anyhow!(
        "{}{hint}; no snapshot was written; what was stored before the failure is reused by the next backup",
        crate::ui::one_line(&e)
    )
}

/// What -v (new and changed entries) and -vv (every entry) list.
fn listed(env: &Env) -> Items {
    match env.verbose {
        0 => Items::None,
        1 => Items::Changed,
        _ => Items::All,
    }
}

fn excluded_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {n} excluded")
    }
}

/// The snapshot `--parent` names, if given.
fn parent_id(repo: &Repository, spec: Option<&str>) -> Result<Option<Id>> {
    Ok(match spec {
        Some(spec) => Some(repo.find_snapshot(spec, &Default::default())?.id),
        None => None,
    })
}

/// `arc backup --dry-run`: the files a backup would read, and its counts.
fn dry_run(env: &Env, a: BackupArgs, excludes: arc_engine::exclude::Excludes) -> Result<u8> {
    let repo = env.open()?;
    let parent = parent_id(&repo, a.parent.as_deref())?;
    let opts = BackupOptions {
        paths: a.paths,
        host: a.host,
        parent,
        force_read: a.force_read,
        cancel: Some(env.cancel.clone()),
        excludes,
        record_as: a.record_as,
        ..Default::default()
    };
    let json = env.json;
    // Printed as found, in the snapshot's order: the list can be long.
    let out = std::sync::Mutex::new(Ok(()));
    let on_file = |f: &DryRunFile| {
        let Ok(mut res) = out.lock() else { return };
        if res.is_err() {
            return;
        }
        *res = if json {
            super::print_json_line(&VerboseStatus::of(f.change, &f.path, ItemKind::File, f.size))
        } else {
            use std::io::Write;
            let line = crate::ui::item_line(f.change, &f.path, ItemKind::File, f.size);
            writeln!(std::io::stdout().lock(), "{line}").map_err(Into::into)
        };
    };
    let progress = CliProgress::new(env.quiet || !json, "dry run");
    let summary = arc_engine::ops::backup::dry_run(&repo, opts, &progress, listed(env) == Items::All, &on_file);
    progress.finish();
    out.into_inner().unwrap_or(Ok(()))?;
    let s = summary?;
    if json {
        super::print_json_line(&DryRunSummary { message_type: "summary", dry_run: true, summary: &s })?;
    } else {
        outln!(
            "dry run: would read {} in {} files ({} new, {} changed, {} unchanged); {} dirs{}; nothing written",
            size(s.bytes_read),
            s.files_new + s.files_changed,
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            excluded_note(s.entries_excluded)
        )?;
    }
    Ok(if s.errors > 0 { crate::EXIT_INCOMPLETE } else { 0 })
}

/// The last line of `backup --json` (docs/json.md, `backup`): restic's
/// summary fields where restic has them, arc's own summary (as in
/// `snapshots --json`) under `summary`.
#[derive(serde::Serialize)]
struct BackupSummary<'a> {
    message_type: &'static str,
    files_new: u64,
    files_changed: u64,
    files_unmodified: u64,
    data_blobs: u64,
    data_added: u64,
    data_added_packed: u64,
    total_files_processed: u64,
    total_bytes_processed: u64,
    total_duration: f64,
    backup_start: Option<chrono::DateTime<chrono::Utc>>,
    backup_end: Option<chrono::DateTime<chrono::Utc>>,
    snapshot_id: Id,
    short_id: String,
    parent: Option<Id>,
    time: chrono::DateTime<chrono::Utc>,
    paths: &'a [String],
    tags: &'a [String],
    summary: &'a arc_engine::format::snapshot::Summary,
    excludes: &'a [String],
    incomplete: bool,
    /// Unchanged files read again: their data had been dropped by a repair.
    #[serde(skip_serializing_if = "is_zero")]
    files_reread_missing: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The last line of a dry run (docs/json.md).
#[derive(serde::Serialize)]
struct DryRunSummary<'a> {
    message_type: &'static str,
    dry_run: bool,
    #[serde(flatten)]
    summary: &'a arc_engine::format::snapshot::Summary,
}
