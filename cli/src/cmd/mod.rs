//! One module per command: each converts its arguments into engine options,
//! calls the engine and presents the result.

mod backup;
mod browse;
mod check;
mod command_stream;
mod init;
mod maintenance;
mod mount;
mod restore;
mod retention;
mod snapshots;
mod stdin_stream;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use arc_engine::{Repository, Snapshot, SnapshotFilter};

use crate::args::{Cli, Command, FilterArgs};

pub use command_stream::parse_named_command;

/// What every command gets besides its own arguments.
pub struct Env {
    pub repo_path: PathBuf,
    /// The path came from neither --repo nor ARC_REPO.
    pub is_default: bool,
    pub json: bool,
    pub quiet: bool,
    pub cancel: Arc<AtomicBool>,
}

pub fn run(cli: Cli, cancel: Arc<AtomicBool>) -> Result<u8> {
    let (repo_path, is_default) = match cli.repo {
        Some(p) => (p, false),
        None => (default_repo_path()?, true),
    };
    let env = Env { repo_path, is_default, json: cli.json, quiet: cli.quiet || cli.json, cancel };
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
        Command::Unlock(a) => maintenance::unlock(&env, a),
        Command::Forget(a) => retention::forget(&env, a),
        Command::Prune(a) => retention::prune(&env, a),
    }
}

/// `$XDG_DATA_HOME/arc/repository` (`~/.local/share/arc/repository`).
fn default_repo_path() -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| anyhow!("cannot find a data directory: set HOME, or use --repo"))?;
    Ok(base.join("arc").join("repository"))
}

impl Env {
    pub fn open(&self) -> Result<Repository> {
        if self.is_default && !self.repo_path.join("config").exists() {
            return Err(anyhow!(
                "no repository at {} (the default); run `arc init` or `arc backup PATH`, or pass --repo",
                self.repo_path.display()
            ));
        }
        match Repository::open_local(&self.repo_path) {
            Err(arc_engine::Error::NotARepository { path }) => Err(anyhow!(
                "{}: not an arc repository (no config file); create one with `arc init --repo {}`",
                path.display(),
                path.display()
            )),
            other => Ok(other?),
        }
    }
}

impl From<FilterArgs> for SnapshotFilter {
    fn from(a: FilterArgs) -> Self {
        SnapshotFilter { hosts: a.hosts, tags: a.tags, paths: a.paths }
    }
}

pub fn find_snapshot(repo: &Repository, spec: &str, filter: &FilterArgs) -> Result<Snapshot> {
    Ok(repo.find_snapshot(spec, &filter.clone().into())?)
}

/// Splits `SNAPSHOT:PATH` (PATH optional when `path_optional`).
pub fn split_target(target: &str, path_optional: bool) -> Result<(String, String)> {
    match target.split_once(':') {
        Some((snap, path)) if !snap.is_empty() => Ok((snap.to_string(), path.to_string())),
        None if path_optional => Ok((target.to_string(), "/".to_string())),
        _ => Err(anyhow!("{target:?} is not SNAPSHOT:PATH (for example latest:/etc/hosts)")),
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}
