//! The job configuration file (`arc run --config F`, `arc status`): TOML,
//! read with serde and `deny_unknown_fields`, so a misspelt key is an error
//! rather than a silently ignored setting. Every error names the file, the
//! line and the key (toml's spans give the byte offset). docs/config.md
//! documents every key; the names there are the interface.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Deserializer};

/// The file as written: top-level keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    repository: Option<String>,
    #[serde(default)]
    repositories: BTreeMap<String, RepoEntry>,
    #[serde(default)]
    run: RunSettings,
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    jobs: Vec<toml::Spanned<JobEntry>>,
}

/// `[repositories.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepoEntry {
    /// A local path or a URL (`s3:…`, `sftp://…`, `webdav:…`), as --repo.
    #[serde(alias = "url")]
    pub path: PathBuf,
    /// Read the passphrase from this file (else ARC_PASSWORD*).
    pub password_file: Option<PathBuf>,
    /// Run this through `sh -c` for the passphrase.
    pub password_command: Option<String>,
    /// A file of this repository's storage variables (NAME=value), used
    /// instead of the environment's (env_file.rs).
    pub env_file: Option<PathBuf>,
}

/// `[run]`: how one `arc run` behaves as a whole.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunSettings {
    /// Jobs run at once (default 1).
    pub jobs: Option<usize>,
    /// Append the event lines to this file too.
    pub log_file: Option<PathBuf>,
    /// Where job results, locks and the prune clock live (default
    /// $XDG_STATE_HOME/arc).
    pub state_dir: Option<PathBuf>,
    /// The host name recorded in snapshots (default: this host's name).
    pub host: Option<String>,
}

/// Settings a job takes from `[defaults]` unless it sets them itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub nice: Option<i32>,
    pub ionice: Option<Ionice>,
    pub limit_read: Option<Rate>,
    pub limit_upload: Option<Rate>,
    pub limit_download: Option<Rate>,
    pub keep: Option<Keep>,
    pub max_age: Option<Dur>,
    pub spread: Option<Dur>,
    pub notify: Option<Notify>,
    pub prune: Option<PruneEvery>,
    pub hook_timeout: Option<Dur>,
    pub repositories: Option<Vec<String>>,
    pub fan_out: Option<FanOut>,
    pub stream_deltas: Option<bool>,
}

/// How a job with several repositories fills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FanOut {
    /// Back up into each repository in turn (each reads the sources).
    #[default]
    Backup,
    /// Back up into the first, then `arc copy` the new snapshot into each
    /// of the others: the sources are read (and databases dumped) once.
    Copy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ionice {
    Idle,
    BestEffort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Files,
    Mysql,
    Postgresql,
    Mongodb,
    Redis,
    Command,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Files => "files",
            Kind::Mysql => "mysql",
            Kind::Postgresql => "postgresql",
            Kind::Mongodb => "mongodb",
            Kind::Redis => "redis",
            Kind::Command => "command",
        })
    }
}

/// `keep = { daily = 10, ... }`: the keep rules of `arc forget`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Keep {
    pub last: Option<u32>,
    pub hourly: Option<u32>,
    pub daily: Option<u32>,
    pub decades: Option<u32>,
    pub weekly: Option<u32>,
    pub monthly: Option<u32>,
    pub yearly: Option<u32>,
    pub within: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    #[default]
    Failure,
    Always,
}

/// `notify = { webhook = URL, email = ADDR, on = "failure" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Notify {
    pub webhook: Option<String>,
    pub email: Option<String>,
    #[serde(default)]
    pub on: NotifyOn,
}

/// `databases = "all"` or a list.
#[derive(Debug, Clone)]
pub enum Databases {
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Databases {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::One(s) if s == "all" => Ok(Databases::All),
            Raw::One(s) => Err(serde::de::Error::custom(format!("{s:?}: give \"all\" or a list of names"))),
            Raw::List(l) => Ok(Databases::List(l)),
        }
    }
}

/// One `[[jobs]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JobEntry {
    pub name: String,
    pub kind: Kind,
    // files
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub exclude_if_present: Vec<String>,
    #[serde(default)]
    pub exclude_caches: bool,
    #[serde(default)]
    pub one_file_system: bool,
    /// Record the job's one path under this path (`arc backup --as`).
    #[serde(rename = "as")]
    pub record_as: Option<PathBuf>,
    // every kind
    #[serde(default)]
    pub tags: Vec<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The disk (or RAID set) the job reads: jobs naming the same device
    /// never run at once, jobs on different devices do (with `[run] jobs`).
    pub device: Option<String>,
    // databases
    pub socket: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub defaults_file: Option<PathBuf>,
    pub uri: Option<String>,
    pub databases: Option<Databases>,
    #[serde(default)]
    pub exclude_databases: Vec<String>,
    #[serde(default)]
    pub dump_options: Vec<String>,
    #[serde(default)]
    pub check: bool,
    #[serde(default)]
    pub physical: bool,
    pub dump_parallel: Option<usize>,
    // command
    pub command: Option<String>,
    pub stream: Option<String>,
    // overrides of [defaults]
    pub nice: Option<i32>,
    pub ionice: Option<Ionice>,
    pub limit_read: Option<Rate>,
    pub limit_upload: Option<Rate>,
    pub limit_download: Option<Rate>,
    pub keep: Option<Keep>,
    pub max_age: Option<Dur>,
    pub spread: Option<Dur>,
    pub notify: Option<Notify>,
    pub prune: Option<PruneEvery>,
    pub hook_timeout: Option<Dur>,
    pub repositories: Option<Vec<String>>,
    pub fan_out: Option<FanOut>,
    pub stream_deltas: Option<bool>,
}

/// A job with its defaults applied and its repositories resolved.
#[derive(Debug, Clone)]
pub struct Job {
    pub entry: JobEntry,
    pub repositories: Vec<Repo>,
    pub nice: Option<i32>,
    pub ionice: Option<Ionice>,
    pub limit_read: Option<u64>,
    /// Bytes per second to and from a remote repository.
    pub limit_upload: Option<u64>,
    pub limit_download: Option<u64>,
    pub keep: Option<Keep>,
    pub max_age: Option<Duration>,
    pub spread: Option<Duration>,
    pub notify: Option<Notify>,
    pub prune: Option<PruneEvery>,
    pub hook_timeout: Duration,
    pub fan_out: FanOut,
    /// Dump streams may be stored as deltas against the parent's (`stream-deltas`, default true).
    pub stream_deltas: bool,
}

impl Job {
    /// The job's transfer limits for remote repositories.
    pub fn limits(&self) -> crate::cmd::remote::Limits {
        crate::cmd::remote::Limits { upload: self.limit_upload, download: self.limit_download }
    }

    pub fn name(&self) -> &str {
        &self.entry.name
    }
    pub fn kind(&self) -> Kind {
        self.entry.kind
    }
    /// The tag every snapshot of this job carries.
    pub fn tag(&self) -> String {
        format!("job:{}", self.entry.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// `default` for the top-level `repository`, else its table's name.
    pub name: String,
    pub path: PathBuf,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
    pub env_file: Option<PathBuf>,
}

impl Repo {
    /// Where the repository is, as the user should see it (a URL without
    /// credentials).
    pub fn shown(&self) -> String {
        match crate::cmd::parse_location(&self.path) {
            Ok(l) => l.to_string(),
            Err(_) => self.path.display().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub run: RunSettings,
    pub defaults_nice: Option<i32>,
    pub defaults_ionice: Option<Ionice>,
    pub jobs: Vec<Job>,
}

/// Hooks without a timeout of their own get this long.
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `"60MiB"` (bytes per second).
#[derive(Debug, Clone, Copy)]
pub struct Rate(pub u64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::args::parse_rate(&s).map(Rate).map_err(serde::de::Error::custom)
    }
}

/// `"26h"`, `"90m"`, `"7d"`, `"1h 30m"`: the command line's syntax
/// ([`crate::args::parse_duration`]).
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::args::parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// `prune = "weekly"`: how often a repository is pruned after retention
/// (daily, weekly, monthly, a duration, or "never").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneEvery(pub Option<Duration>);

impl<'de> Deserialize<'de> for PruneEvery {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let day = 86_400;
        let v = match s.as_str() {
            "never" => None,
            "always" => Some(Duration::ZERO),
            "daily" => Some(Duration::from_secs(day)),
            "weekly" => Some(Duration::from_secs(7 * day)),
            "monthly" => Some(Duration::from_secs(30 * day)),
            other => Some(crate::args::parse_duration(other).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{other:?} is not daily, weekly, monthly, always, never or a duration like 3d"
                ))
            })?),
        };
        Ok(PruneEvery(v))
    }
}

/// "arc.toml:12: key `limit-read`: ..." from a toml error.
fn located(file: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return anyhow!("{}: {msg}", file.display());
    };
    let line = line_of(text, span.start);
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    // The key is what stands before `=` on the line (a value's error), or
    // the span itself (an unknown key's error).
    let key = match line_text.split_once('=') {
        Some((k, _)) => k.trim().trim_matches('"').to_string(),
        None => text.get(span.clone()).unwrap_or("").trim().trim_matches(['[', ']']).to_string(),
    };
    if key.is_empty() {
        anyhow!("{}:{line}: {msg}", file.display())
    } else {
        anyhow!("{}:{line}: key `{key}`: {msg}", file.display())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// A job name becomes a tag, a file name and a label: keep it to what
/// fits everywhere.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
        && !name.starts_with('.')
}

impl Config {
    pub fn load(file: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow!("cannot read the configuration {}: {e}", file.display()))?;
        Self::parse(file, &text)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Config> {
        let raw: FileConfig = toml::from_str(text).map_err(|e| located(file, text, &e))?;
        let at = |line: usize, key: &str, msg: String| anyhow!("{}:{line}: key `{key}`: {msg}", file.display());

        let mut repos: BTreeMap<String, Repo> = BTreeMap::new();
        // A repository string is checked as --repo is (a known scheme, a
        // well-formed URL) before any job runs.
        // `after`: where the key's table starts; the key is the first line
        // after it that sets `key`.
        let check_location = |path: &Path, keys: &[&str], after: &str| {
            crate::cmd::parse_location(path).map(|_| ()).map_err(|e| {
                let start = text.find(after).unwrap_or(0);
                let (offset, key) = keys
                    .iter()
                    .filter_map(|k| text[start..].find(&format!("\n{k}")).map(|o| (start + o + 1, *k)))
                    .min()
                    .unwrap_or((start, keys[0]));
                // The engine's reason names the value already.
                let msg = e.to_string();
                at(line_of(text, offset), key, msg.trim_start_matches("--repo ").to_string())
            })
        };
        if let Some(r) = &raw.repository {
            check_location(Path::new(r), &["repository"], "")?;
            repos.insert(
                "default".into(),
                Repo {
                    name: "default".into(),
                    path: r.into(),
                    password_file: None,
                    password_command: None,
                    env_file: None,
                },
            );
        }
        for (name, e) in &raw.repositories {
            check_location(&e.path, &["path", "url"], &format!("[repositories.{name}]"))?;
            if repos.contains_key(name) {
                return Err(anyhow!("{}: repository name {name:?} is used twice", file.display()));
            }
            repos.insert(
                name.clone(),
                Repo {
                    name: name.clone(),
                    path: e.path.clone(),
                    password_file: e.password_file.clone(),
                    password_command: e.password_command.clone(),
                    env_file: e.env_file.clone(),
                },
            );
        }
        if raw.jobs.is_empty() {
            return Err(anyhow!("{}: no [[jobs]] (see docs/config.md)", file.display()));
        }
        if raw.run.jobs == Some(0) {
            return Err(anyhow!("{}: key `jobs` in [run]: must be at least 1", file.display()));
        }
        let d = &raw.defaults;
        // Offsets of line starts: a file of 10 000 jobs must not cost
        // 10 000 scans from the top.
        let starts: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let line_at = |offset: usize| starts.partition_point(|&s| s <= offset);
        let mut jobs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for spanned in &raw.jobs {
            let e = spanned.get_ref().clone();
            let span = spanned.span();
            let line = line_at(text[span.clone()].find("name").map(|o| span.start + o).unwrap_or(span.start));
            let bad = |key: &str, msg: String| at(line, key, format!("job {:?}: {msg}", e.name));
            if !valid_name(&e.name) {
                return Err(at(line, "name", format!("{:?}: use letters, digits and . _ - @ + (up to 128)", e.name)));
            }
            if !seen.insert(e.name.clone()) {
                return Err(at(line, "name", format!("{:?} names two jobs", e.name)));
            }
            check_kind_keys(&e).map_err(|(key, msg)| bad(key, msg))?;
            let wanted = e.repositories.clone().or_else(|| d.repositories.clone());
            let repositories = match wanted {
                Some(names) => names
                    .iter()
                    .map(|n| {
                        repos.get(n).cloned().ok_or_else(|| {
                            bad("repositories", format!("no repository {n:?} (define [repositories.{n}])"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
                None => match repos.get("default") {
                    Some(r) => vec![r.clone()],
                    None if repos.len() == 1 => repos.values().cloned().collect(),
                    None => {
                        return Err(bad(
                            "repositories",
                            "no repository: set `repository` at the top, or `repositories` in the job".into(),
                        ))
                    }
                },
            };
            if repositories.is_empty() {
                return Err(bad("repositories", "the list is empty".into()));
            }
            let keep = e.keep.clone().or_else(|| d.keep.clone());
            if let Some(k) = &keep {
                check_keep(k).map_err(|m| bad("keep", m))?;
            }
            jobs.push(Job {
                repositories,
                nice: e.nice.or(d.nice),
                ionice: e.ionice.or(d.ionice),
                limit_read: e.limit_read.or(d.limit_read).map(|r| r.0),
                limit_upload: e.limit_upload.or(d.limit_upload).map(|r| r.0),
                limit_download: e.limit_download.or(d.limit_download).map(|r| r.0),
                keep,
                max_age: e.max_age.or(d.max_age).map(|v| v.0),
                spread: e.spread.or(d.spread).map(|v| v.0),
                notify: e.notify.clone().or_else(|| d.notify.clone()),
                prune: e.prune.or(d.prune),
                fan_out: e.fan_out.or(d.fan_out).unwrap_or_default(),
                stream_deltas: e.stream_deltas.or(d.stream_deltas).unwrap_or(true),
                hook_timeout: e.hook_timeout.or(d.hook_timeout).map(|v| v.0).unwrap_or(DEFAULT_HOOK_TIMEOUT),
                entry: e,
            });
        }
        for n in [d.nice].into_iter().chain(jobs.iter().map(|j| j.nice)).flatten() {
            if !(-20..=19).contains(&n) {
                return Err(anyhow!("{}: key `nice`: {n} is not between -20 and 19", file.display()));
            }
        }
        Ok(Config { file: file.to_path_buf(), run: raw.run, defaults_nice: d.nice, defaults_ionice: d.ionice, jobs })
    }

    /// The jobs named (all when none are), in the file's order.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Job>> {
        for n in names {
            if !self.jobs.iter().any(|j| j.name() == n) {
                let all: Vec<&str> = self.jobs.iter().map(|j| j.name()).collect();
                return Err(crate::cmd::usage(format!(
                    "no job {n:?} in {} (jobs: {})",
                    self.file.display(),
                    all.join(", ")
                )));
            }
        }
        Ok(self.jobs.iter().filter(|j| names.is_empty() || names.iter().any(|n| n == j.name())).collect())
    }

    pub fn state_dir(&self) -> Result<PathBuf> {
        match &self.run.state_dir {
            Some(d) => Ok(d.clone()),
            None => dirs::state_dir()
                .map(|d| d.join("arc"))
                .ok_or_else(|| anyhow!("cannot find a state directory: set XDG_STATE_HOME or [run] state-dir")),
        }
    }

    pub fn host(&self) -> String {
        self.run.host.clone().unwrap_or_else(crate::job::hostname)
    }
}

fn check_keep(k: &Keep) -> std::result::Result<(), String> {
    let counts = [k.last, k.hourly, k.daily, k.decades, k.weekly, k.monthly, k.yearly];
    if counts.iter().all(|c| c.unwrap_or(0) == 0) && k.within.is_none() {
        return Err("keeps no snapshot: give a count of at least 1, e.g. keep = { daily = 7 }".into());
    }
    if let Some(w) = &k.within {
        w.parse::<arc_engine::ops::retention::Within>().map_err(|e| format!("within = {w:?}: {e}"))?;
    }
    Ok(())
}

/// Keys that only mean something for some kinds: a key given to a kind
/// that ignores it is an error, so a typo in `kind` shows at once.
fn check_kind_keys(e: &JobEntry) -> std::result::Result<(), (&'static str, String)> {
    let db = matches!(e.kind, Kind::Mysql | Kind::Postgresql | Kind::Mongodb | Kind::Redis);
    let only = |key: &'static str, given: bool, ok: bool, kinds: &str| {
        if given && !ok {
            Err((key, format!("`{key}` is only for kind {kinds}, not {}", e.kind)))
        } else {
            Ok(())
        }
    };
    let files = e.kind == Kind::Files;
    only("paths", !e.paths.is_empty(), files, "files")?;
    only("exclude", !e.exclude.is_empty(), files, "files")?;
    only("exclude-if-present", !e.exclude_if_present.is_empty(), files, "files")?;
    only("exclude-caches", e.exclude_caches, files, "files")?;
    only("one-file-system", e.one_file_system, files, "files")?;
    only("as", e.record_as.is_some(), files, "files")?;
    if e.record_as.is_some() && e.paths.len() != 1 {
        return Err(("as", "records one path under another: give exactly one path in `paths`".into()));
    }
    if e.record_as.as_ref().is_some_and(|p| !p.is_absolute()) {
        return Err(("as", "must be an absolute path".into()));
    }
    let dbs = "mysql, postgresql, mongodb or redis";
    only("socket", e.socket.is_some(), db, dbs)?;
    only("host", e.host.is_some(), db, dbs)?;
    only("port", e.port.is_some(), db, dbs)?;
    only("user", e.user.is_some(), db, dbs)?;
    only("password-file", e.password_file.is_some(), db, dbs)?;
    only("dump-options", !e.dump_options.is_empty(), db, dbs)?;
    let sql = matches!(e.kind, Kind::Mysql | Kind::Postgresql | Kind::Mongodb);
    only("databases", e.databases.is_some(), sql, "mysql, postgresql or mongodb")?;
    only("exclude-databases", !e.exclude_databases.is_empty(), sql, "mysql, postgresql or mongodb")?;
    only("dump-parallel", e.dump_parallel.is_some(), sql, "mysql, postgresql or mongodb")?;
    only("defaults-file", e.defaults_file.is_some(), e.kind == Kind::Mysql, "mysql")?;
    only("check", e.check, e.kind == Kind::Mysql, "mysql")?;
    only("physical", e.physical, matches!(e.kind, Kind::Mysql | Kind::Postgresql), "mysql or postgresql")?;
    only("uri", e.uri.is_some(), e.kind == Kind::Mongodb, "mongodb")?;
    only("command", e.command.is_some(), e.kind == Kind::Command, "command")?;
    only("stream", e.stream.is_some(), e.kind == Kind::Command, "command")?;
    match e.kind {
        Kind::Files if e.paths.is_empty() => return Err(("paths", "a files job needs paths".into())),
        Kind::Command if e.command.is_none() => return Err(("command", "a command job needs command".into())),
        Kind::Command if e.stream.is_none() => {
            return Err(("stream", "a command job needs stream (its path in the snapshot, e.g. ldap/data.ldif)".into()))
        }
        _ => {}
    }
    if e.dump_parallel == Some(0) {
        return Err(("dump-parallel", "must be at least 1".into()));
    }
    if e.physical && (e.databases.is_some() || !e.exclude_databases.is_empty()) {
        return Err(("physical", "a physical backup copies the whole instance; leave out databases".into()));
    }
    if e.socket.is_some() && e.host.is_some() {
        return Err(("socket", "give socket or host, not both".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config> {
        Config::parse(Path::new("arc.toml"), t)
    }

    /// The file and the command line (`init --prune-grace`) read durations
    /// with one parser.
    #[test]
    fn durations_share_the_command_line_syntax() {
        let job = "[[jobs]]\nname=\"a\"\nkind=\"files\"\npaths=[\"/\"]\n";
        let c =
            parse(&format!("repository = \"/r\"\n[defaults]\nmax-age = \"1h 30m\"\nspread = \"90\"\n{job}")).unwrap();
        assert_eq!(c.jobs[0].max_age, Some(Duration::from_secs(5400)));
        assert_eq!(c.jobs[0].spread, Some(Duration::from_secs(90)));
        let e = parse(&format!("repository = \"/r\"\n[defaults]\nmax-age = \"0s\"\n{job}")).unwrap_err().to_string();
        assert!(e.contains("key `max-age`") && e.contains("must be more than 0"), "{e}");
        assert_eq!(crate::args::parse_duration_secs("1h 30m"), Ok(5400));
        assert_eq!(crate::args::parse_duration_secs("2d"), Ok(172_800));
        assert!(crate::args::parse_duration_secs("1500ms").is_err());
        assert!(crate::args::parse_duration_secs("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e =
            parse("repository = \"/r\"\n[defaults]\nnicee = 3\n[[jobs]]\nname=\"a\"\nkind=\"files\"\npaths=[\"/\"]\n")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("arc.toml:3: key `nicee`: unknown field"), "{e}");
        let e = parse("repository = \"/r\"\n[defaults]\nlimit-read = \"fast\"\n[[jobs]]\nname=\"a\"\nkind=\"files\"\npaths=[\"/\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("arc.toml:3: key `limit-read`:"), "{e}");
        let e = parse("repository = \"/r\"\n\n[[jobs]]\nname = \"db\"\nkind = \"mysql\"\npaths = [\"/x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("arc.toml:4: key `paths`: job \"db\": `paths` is only for kind files"), "{e}");
        let e = parse("repository = \"/r\"\n[[jobs]]\nname = \"x\"\nkind = \"tape\"\n").unwrap_err().to_string();
        assert!(e.starts_with("arc.toml:4: key `kind`:"), "{e}");
    }

    #[test]
    fn defaults_apply_and_jobs_override() {
        let c = parse(
            "repository = \"/r\"\n[defaults]\nnice = 10\nlimit-read = \"60MiB\"\nlimit-upload = \"20MiB\"\nmax-age = \"26h\"\n\
             keep = { daily = 10, decades = 6, monthly = 12, yearly = 5 }\n\
             notify = { webhook = \"http://127.0.0.1:9/h\", on = \"always\" }\nstream-deltas = false\n\
             [[jobs]]\nname = \"www\"\nkind = \"files\"\npaths = [\"/var/www\"]\nnice = 5\nlimit-upload = \"1MiB/s\"\nlimit-download = \"2M\"\nstream-deltas = true\n\
             [[jobs]]\nname = \"mysql\"\nkind = \"mysql\"\ndatabases = \"all\"\nexclude-databases = [\"test\"]\n",
        )
        .unwrap();
        assert_eq!(c.jobs[0].nice, Some(5));
        assert_eq!(c.jobs[1].nice, Some(10));
        assert_eq!(c.jobs[1].limit_read, Some(60 << 20));
        assert_eq!((c.jobs[0].limit_upload, c.jobs[0].limit_download), (Some(1 << 20), Some(2 << 20)));
        assert_eq!((c.jobs[1].limit_upload, c.jobs[1].limit_download), (Some(20 << 20), None));
        assert_eq!(c.jobs[1].max_age, Some(Duration::from_secs(26 * 3600)));
        assert!(matches!(c.jobs[1].entry.databases, Some(Databases::All)));
        assert_eq!(c.jobs[0].repositories[0].path, PathBuf::from("/r"));
        assert_eq!(c.jobs[0].notify.as_ref().unwrap().on, NotifyOn::Always);
        assert_eq!((c.jobs[0].stream_deltas, c.jobs[1].stream_deltas), (true, false));
        let c = parse("repository = \"/r\"\n[[jobs]]\nname = \"db\"\nkind = \"postgresql\"\n").unwrap();
        assert!(c.jobs[0].stream_deltas, "deltas are on unless a job turns them off");
    }
}
