//! One module per command: each converts its arguments into engine options,
//! calls the engine and presents the result.

mod backup;
mod browse;
mod cache;
mod check;
pub(crate) mod command_stream;
mod copy;
mod diff;
mod docs;
pub mod env_file;
mod find;
mod init;
mod key;
mod maintenance;
mod mount;
pub(crate) mod remote;
mod restore;
mod retention;
pub(crate) mod select;
mod snapshots;
mod stdin_stream;
mod tag;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use arc_engine::storage::Location;
use arc_engine::{Repository, Snapshot, SnapshotFilter};

use crate::args::{Cli, Command, FilterArgs};

pub use command_stream::parse_named_command;
pub use retention::print_table;

/// What every command gets besides its own arguments.
pub struct Env {
    /// The local directory, or for a remote repository its string as given.
    pub repo_path: PathBuf,
    /// What --repo names: a directory or a remote store.
    pub location: Location,
    /// The path came from neither --repo nor ARC_REPO.
    pub is_default: bool,
    /// The default repository's key file, when --repo names the default
    /// repository (by any spelling, or by saying nothing).
    pub default_key: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
    /// -v: 1, -vv: 2.
    pub verbose: u8,
    pub no_lock: bool,
    pub cancel: Arc<AtomicBool>,
}

pub fn run(cli: Cli, cancel: Arc<AtomicBool>) -> Result<u8> {
    // Commands that never open --repo (their repositories, if any, come
    // from a configuration file) do not fail on a bad ARC_REPO or a
    // missing HOME: `source <(arc completion bash)` in a profile, `arc
    // run` from cron with ARC_REPO set for manual use.
    let uses_repo = !matches!(
        cli.command,
        Command::Completion(_) | Command::Man(_) | Command::Cache(_) | Command::Run(_) | Command::Status(_)
    );
    let (repo_path, is_default) = match cli.repo {
        Some(p) => (p, false),
        None => match default_repo_path() {
            Ok(p) => (p, true),
            Err(_) if !uses_repo => (PathBuf::new(), true),
            Err(e) => return Err(e),
        },
    };
    let location = match parse_location(&repo_path) {
        Ok(l) => l,
        Err(_) if !uses_repo => Location::Local(repo_path.clone()),
        Err(e) => return Err(e),
    };
    let default_key = if is_default {
        crate::passphrase::default_key_path().ok()
    } else {
        location.local_path().and_then(default_key_for)
    };
    remote::set_limits(remote::Limits { upload: cli.limit_upload, download: cli.limit_download });
    let env = Env {
        repo_path,
        location,
        is_default,
        default_key,
        json: cli.json,
        quiet: cli.quiet || cli.json,
        verbose: cli.verbose,
        no_lock: cli.no_lock,
        cancel,
    };
    match cli.command {
        Command::Init(a) => init::run(&env, a),
        Command::Backup(a) => backup::run(&env, a),
        Command::Snapshots(a) => snapshots::run(&env, a),
        Command::Ls(a) => browse::ls(&env, a),
        Command::Restore(a) => restore::run(&env, a),
        Command::Mount(a) => mount::run(&env, a),
        Command::Cat(a) => browse::cat(&env, a),
        Command::Dump(a) => browse::dump(&env, a),
        Command::Check(a) => check::run(&env, a),
        Command::Stats => maintenance::stats(&env),
        Command::Repair(r) => maintenance::repair(&env, r),
        Command::List(a) => maintenance::list(&env, a),
        Command::Cache(a) => cache::run(&env, a),
        Command::Unlock(a) => maintenance::unlock(&env, a),
        Command::Copy(a) => copy::run(&env, a),
        Command::Forget(a) => retention::forget(&env, a),
        Command::Prune(a) => retention::prune(&env, a),
        Command::Diff(a) => diff::run(&env, a),
        Command::Find(a) => find::run(&env, a),
        Command::Tag(a) => tag::run(&env, a),
        Command::Completion(a) => docs::completion(a),
        Command::Man(a) => docs::man(a),
        Command::Key(k) => key::run(&env, k),
        Command::Run(a) => crate::job::run(&env, a),
        Command::Status(a) => crate::job::status(&env, a),
    }
}

/// `$XDG_DATA_HOME/arc/repository` (`~/.local/share/arc/repository`).
fn default_repo_path() -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| anyhow!("cannot find a data directory: set HOME, or use --repo"))?;
    Ok(base.join("arc").join("repository"))
}

/// The default repository's key file, if `repo` is the default repository
/// under another name (`--repo ~/.local/share/arc/repository`, ARC_REPO,
/// `copy --from-repo`, a job's `repository`): arc made that repository
/// with the key file, so every way of naming it opens it alike.
pub(crate) fn default_key_for(repo: &std::path::Path) -> Option<PathBuf> {
    let default = default_repo_path().ok()?;
    let same = repo == default
        || matches!((std::fs::canonicalize(repo), std::fs::canonicalize(&default)), (Ok(a), Ok(b)) if a == b);
    if !same {
        return None;
    }
    crate::passphrase::default_key_path().ok().filter(|p| p.exists())
}

/// `$XDG_CACHE_HOME/arc` (`~/.cache/arc`): every repository's index
/// database lives under it, in a directory named by the repository id.
pub(crate) fn cache_root() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("arc"))
}

/// Can this process create files in the repository (its locks/)? False
/// on a read-only mount (EROFS) and for another user's repository.
fn repo_writable(repo: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // A missing locks/ is recreated by the first lock; then the repository
    // directory itself must be writable.
    let locks = repo.join("locks");
    let dir = if locks.is_dir() { locks } else { repo.to_path_buf() };
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: access(2) only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

impl Env {
    /// Opens the repository for a command that writes to it.
    pub fn open(&self) -> Result<Repository> {
        if self.no_lock {
            return Err(usage("--no-lock is only for commands that only read (snapshots, ls, cat, dump, restore, mount, check, stats, list)"));
        }
        self.open_repo()
    }

    /// Opens the repository for a command that only reads it: on a
    /// repository this process cannot write (a write-protected disk,
    /// another user's repository) or with --no-lock, without locks.
    pub fn open_read(&self) -> Result<Repository> {
        let mut repo = self.open_repo()?;
        if self.no_lock {
            repo.skip_shared_locks();
        } else if self.location.local_path().is_some_and(|p| !repo_writable(p)) {
            eprintln!(
                "arc: warning: {} is not writable: reading it without a lock (a prune running elsewhere could remove data while it is read)",
                self.repo_path.display()
            );
            repo.skip_shared_locks();
        }
        Ok(repo)
    }

    /// The repository as the user should see it (no credentials).
    pub fn shown(&self) -> String {
        self.location.to_string()
    }

    fn open_repo(&self) -> Result<Repository> {
        let path = &self.repo_path;
        if self.is_default && !path.join("config").exists() {
            return Err(anyhow!(
                "no repository at {} (the default); run `arc init` or `arc backup PATH`, or pass --repo",
                path.display()
            ));
        }
        let local_key = self.default_key.clone();
        // The key file answers only when no ARC_PASSWORD* is set; if it
        // then fails, the user should hear that it is the file.
        let key_file_in_use =
            local_key.as_deref().filter(|p| p.exists() && !crate::passphrase::env_set("ARC")).map(|p| p.to_path_buf());
        // The engine asks only if the repository needs a passphrase; a
        // failure to get one (no variable, no terminal) is ours to word.
        let failure: RefCell<Option<anyhow::Error>> = RefCell::new(None);
        let source = || {
            crate::passphrase::existing(local_key.as_deref()).map_err(|e| {
                *failure.borrow_mut() = Some(e);
                arc_engine::Error::PassphraseRequired
            })
        };
        if self.location.is_remote() {
            let opened = remote::open(&self.location, cache_root(), Some(&source));
            if let Some(e) = failure.into_inner() {
                return Err(e);
            }
            return opened;
        }
        let opened = match cache_root() {
            Some(cache) => Repository::open_local_cached_with(path, &cache, Some(&source)),
            None => Repository::open_local_with(path, Some(&source)),
        };
        if let Some(e) = failure.into_inner() {
            return Err(e);
        }
        match opened {
            Err(arc_engine::Error::NotARepository { .. }) => Err(not_a_repository(path)),
            Err(arc_engine::Error::WrongPassphrase) => match (&key_file_in_use, &local_key) {
                (Some(k), _) => Err(wrong_key_file(k)),
                // ARC_PASSWORD (set for another repository?) came first.
                (None, Some(k)) if k.exists() => Err(anyhow!(
                    "wrong passphrase: the one from {} does not open the default repository, which arc made with \
                     the key file {} (unset ARC_PASSWORD* to use it)",
                    crate::passphrase::SOURCES,
                    k.display()
                )),
                _ => Err(arc_engine::Error::WrongPassphrase.into()),
            },
            Err(arc_engine::Error::Io { path: p, source }) if cache_root().is_some_and(|c| p.starts_with(&c)) => {
                Err(anyhow!(
                    "cannot create the index cache {}: {source} (set XDG_CACHE_HOME to a writable directory)",
                    p.display()
                ))
            }
            other => Ok(other?),
        }
    }
}

/// How [`open_other`] reaches a remote repository beyond the environment.
#[derive(Default)]
pub struct OtherAccess<'a> {
    pub limits: Option<remote::Limits>,
    /// The env file and the option or key that named it.
    pub env_file: Option<(&'a std::path::Path, &'a str)>,
}

/// Opens a repository named like --repo by another option (`copy
/// --from-repo`), reading it without writing anything but locks.
///
/// `access` carries what a remote one needs beyond the environment: a
/// fleet job's transfer limits, an env file of its storage variables
/// (env_file.rs) and where that file was named, for errors.
pub fn open_other(
    repo: &std::path::Path,
    option: &str,
    passphrase: Option<arc_engine::repo::PassphraseSource<'_>>,
    access: &OtherAccess<'_>,
) -> Result<Repository> {
    let location = parse_location(repo).map_err(|e| anyhow!("{option}: {e}"))?;
    let settings = match access.env_file {
        Some((path, named)) => Some(env_file::read(path, &location, named)?),
        None => None,
    };
    if location.is_remote() {
        let from = match access.env_file {
            Some((path, _)) => format!(" (storage variables from {} only)", path.display()),
            None => String::new(),
        };
        return remote::open_limited(&location, cache_root(), passphrase, access.limits, settings)
            .map_err(|e| anyhow!("{option} {location}: {e}{from}"));
    }
    let opened = match cache_root() {
        Some(cache) => Repository::open_local_cached_with(repo, &cache, passphrase),
        None => Repository::open_local_with(repo, passphrase),
    };
    match opened {
        Err(arc_engine::Error::NotARepository { .. }) => {
            Err(anyhow!("{option} {}: not an arc repository (no config file)", repo.display()))
        }
        other => other.map_err(|e| anyhow!("cannot open {option} {}: {e}", repo.display())),
    }
}

/// What a --repo string names; a string with a scheme is never a local
/// path (the engine's error names the schemes arc knows).
pub fn parse_location(repo: &std::path::Path) -> Result<Location> {
    let Some(s) = repo.to_str() else {
        // Not UTF-8: no URL, so a local path.
        return Ok(Location::Local(repo.to_path_buf()));
    };
    Location::parse(s).map_err(|e| match e {
        arc_engine::Error::InvalidArgument { reason, .. } => anyhow!("--repo {reason}"),
        other => other.into(),
    })
}

/// The default repository's key file no longer opens it: its passphrase
/// was changed or removed (`arc key passwd`, `arc key remove`).
pub(crate) fn wrong_key_file(key_file: &std::path::Path) -> anyhow::Error {
    anyhow!(
        "the default repository's key file {} does not open it (was its passphrase changed with `arc key passwd` \
         or removed with `arc key remove`?); set {}, or write the passphrase into that file",
        key_file.display(),
        crate::passphrase::SOURCES
    )
}

/// Why `path` is not a repository, and what to do about it: `arc init`
/// only where it would succeed.
fn not_a_repository(path: &std::path::Path) -> anyhow::Error {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => anyhow!("{shown} is a file, not a repository directory; --repo takes the directory a repository was created in"),
        Ok(_) if std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some()) => anyhow!(
            "{shown} is not an arc repository (no config file, and it holds other files); check --repo, or create a new repository in an empty directory with `arc init --repo DIR`"
        ),
        Ok(_) => anyhow!("{shown} is an empty directory, not a repository yet; create one with `arc init --repo {shown}`"),
        Err(_) => anyhow!("no repository at {shown}; create one with `arc init --repo {shown}`"),
    }
}

impl From<FilterArgs> for SnapshotFilter {
    fn from(a: FilterArgs) -> Self {
        SnapshotFilter { hosts: a.hosts, tags: tag_lists(a.tags), paths: a.paths }
    }
}

/// Tags as given to `--tag`, `--add`, `--remove`, `--set`: each value may
/// hold several, comma-separated (restic's `--tag daily,weekly`, and the
/// way `snapshots` shows them), so no tag holds a comma. A value that is
/// only commas or empty stays as given (`--set ""` removes every tag).
pub fn split_tags(values: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        let parts: Vec<String> = v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
        if parts.is_empty() {
            out.push(v);
        } else {
            out.extend(parts);
        }
    }
    out
}

/// `--tag` filters as restic reads them: each value is a list of tags a
/// snapshot must all carry (`daily,db`), and a snapshot matching any one
/// value is selected (`--tag daily --tag weekly`); `--tag ""` selects
/// snapshots without tags.
pub fn tag_lists(values: Vec<String>) -> Vec<Vec<String>> {
    values
        .into_iter()
        .map(|v| v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect())
        .collect()
}

/// A mistake in how arc was called, found after parsing: exits 2, like
/// clap's own usage errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The snapshot `spec` names (an id prefix, `latest`) among those `filter`
/// selects.
pub fn find_snapshot(repo: &Repository, spec: &str, filter: &FilterArgs) -> Result<Snapshot> {
    Ok(repo.find_snapshot(spec, &filter.clone().into())?)
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// Splits `SNAPSHOT:PATH` (PATH optional when `path_optional`).
pub fn split_target(target: &str, path_optional: bool) -> Result<(String, String)> {
    match target.split_once(':') {
        Some((snap, path)) if !snap.is_empty() => Ok((snap.to_string(), path.to_string())),
        None if path_optional => Ok((target.to_string(), "/".to_string())),
        _ => Err(usage(format!("{target:?} is not SNAPSHOT:PATH (for example latest:/etc/hosts)"))),
    }
}

/// One JSON object on one line (newline-delimited JSON, for lists and
/// status lines that a script reads as they come).
pub fn print_json_line<T: serde::Serialize>(v: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // Compact, one value per line: what jq pipelines and log shippers read.
    // serde_json's error hides the io::Error that a closed pipe is.
    serde_json::to_writer(&mut out, v).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}
