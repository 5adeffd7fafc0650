//! Command-line arguments (clap derive). Parsing only; validation that
//! needs the repository happens in the commands.
// The doc comments below are clap's help text, written for the terminal
// (`SNAPSHOT[:PATH]`, `--keep-<period>`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "arc",
    version,
    about = "Content-addressed, deduplicating backups with every snapshot a full tree",
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 snapshot written but some files could not be read.\n\
                  The repository is --repo, else $ARC_REPO, else $XDG_DATA_HOME/arc/repository."
)]
pub struct Cli {
    /// Repository: a directory, s3:http(s)://host[:port]/bucket[/prefix],
    /// sftp://[user@]host[:port]/path or webdav:http(s)://host[:port]/path.
    #[arg(long, short = 'r', global = true, env = "ARC_REPO", value_name = "PATH|URL")]
    pub repo: Option<PathBuf>,

    /// Machine-readable JSON output on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress display; backup, restore, check, forget, prune, copy and run also print nothing
    /// when all went well, only warnings and errors (so cron mails only when something is wrong).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    /// backup: -v lists the files and directories stored new or changed, -vv unchanged ones too
    /// (restic's -vv, borg's --list); on stdout, one a line, or `verbose_status` lines with --json.
    /// restore: -v lists each file restored.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Read the repository's passphrase from FILE (restic's --password-file); wins over ARC_PASSWORD*.
    #[arg(long, short = 'p', global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// Run COMMAND (sh -c) and use what it prints as the passphrase (restic's --password-command);
    /// wins over ARC_PASSWORD*.
    #[arg(long, global = true, value_name = "COMMAND", conflicts_with = "password_file")]
    pub password_command: Option<String>,

    /// Read without taking a lock (commands that only read; automatic,
    /// with a warning, when the repository cannot be written).
    #[arg(long, global = true)]
    pub no_lock: bool,

    /// Send at most RATE bytes per second to a remote repository (e.g. 20MiB), all uploads together.
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_rate)]
    pub limit_upload: Option<u64>,

    /// Receive at most RATE bytes per second from a remote repository, all downloads together.
    #[arg(long, global = true, value_name = "RATE", value_parser = parse_rate)]
    pub limit_download: Option<u64>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository (the first backup creates the default one).
    Init(InitArgs),
    /// Back up files, directories and streams into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// List the contents of a snapshot directory.
    Ls(LsArgs),
    /// Restore a snapshot, or parts of it, into a directory.
    Restore(RestoreArgs),
    /// Mount the repository read-only: every snapshot as a directory tree (FUSE).
    Mount(MountArgs),
    /// Write one file of a snapshot to stdout: SNAPSHOT:PATH.
    Cat(CatArgs),
    /// Write a snapshot path as a pax tar archive: SNAPSHOT[:PATH].
    Dump(DumpArgs),
    /// Verify the repository's structure; --read-data also re-hashes all data.
    Check(CheckArgs),
    /// Logical versus stored size, dedup and compression ratios.
    Stats,
    /// Rebuild the index from the packs, or take damaged packs out of it.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Low-level listings for scripts and debugging.
    List(ListArgs),
    /// Show or clean up the local caches of repositories ($XDG_CACHE_HOME/arc).
    Cache(CacheArgs),
    /// Remove stale locks left by processes that are gone.
    Unlock(UnlockArgs),
    /// Copy snapshots from another repository into this one (--repo), sending only what it lacks;
    /// also the way to move a format v1 repository to v2.
    Copy(CopyArgs),
    /// Remove snapshots by retention policy (--keep-*) or by id; --prune also frees their data.
    Forget(ForgetArgs),
    /// Delete data no snapshot uses and rewrite mostly unused packs.
    Prune(PruneArgs),
    /// Manage the passphrases (key files) that open the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show what changed between two snapshots: + added, - removed, M content, U metadata only, T type.
    Diff(DiffArgs),
    /// Find entries matching patterns in snapshots: in which, with size and mtime.
    Find(FindArgs),
    /// Add, remove or set the tags of snapshots.
    Tag(TagArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completion(CompletionArgs),
    /// Print the manual page (roff) of arc, or of one command.
    Man(ManArgs),
    /// Run the jobs of a configuration file (all, or those named); see docs/config.md.
    Run(RunArgs),
    /// Per job: last successful backup, its age, size and result; exit 1 when one is older than its max-age.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "Exit codes: 0 every job succeeded (or was already running), 1 a job failed \
                        (the summary line names it).\n\n\
                        Cron, every minute with spread (-q: output only when something went wrong):\n  \
                        * * * * * root arc -q run --config /etc/arc/arc.toml --due")]
pub struct RunArgs {
    /// The configuration file (default: ~/.config/arc/arc.toml, else /etc/arc/arc.toml).
    #[arg(long, short = 'c', env = "ARC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Jobs to run (default: all).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,
    /// Show what each job would do and the commands it would run; run nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run only the jobs whose time has come (spread), each at most once per window.
    #[arg(long)]
    pub due: bool,
    /// Print each job's offset in its spread window and next start (with --json: for scripts).
    #[arg(long, conflicts_with_all = ["dry_run", "due", "print_systemd"])]
    pub schedule: bool,
    /// Print a systemd service and timer for this configuration.
    #[arg(long, conflicts_with_all = ["dry_run", "due"])]
    pub print_systemd: bool,
    /// Take this as the current time for --due and --schedule (for tests and what-if checks).
    #[arg(long, value_parser = parse_loose_time, hide = true)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The configuration file (default: ~/.config/arc/arc.toml, else /etc/arc/arc.toml).
    #[arg(long, short = 'c', env = "ARC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also write the metrics as a node-exporter textfile (written atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Also write a self-contained HTML report with a chart per job.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// `arc status --json` outputs of several hosts, combined into one --html page.
    #[arg(value_name = "JSON", conflicts_with = "config")]
    pub reports: Vec<PathBuf>,
    /// Take this as the current time (for tests).
    #[arg(long, value_parser = parse_loose_time, hide = true)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The first snapshot (id prefix or "latest").
    pub snapshot1: String,
    /// The second snapshot (id prefix or "latest").
    pub snapshot2: String,
    /// Leave out metadata-only changes (U).
    #[arg(long)]
    pub content_only: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    /// Patterns (gitignore-style, matched on the snapshot path; `name` matches at any depth).
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Match ignoring case.
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
    /// Only entries modified at or before TIME (RFC 3339, YYYY-MM-DD or "YYYY-MM-DD HH:MM:SS", UTC).
    #[arg(long, short = 'N', value_name = "TIME", value_parser = parse_loose_time)]
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
    /// Only entries modified at or after TIME.
    #[arg(long, short = 'O', value_name = "TIME", value_parser = parse_loose_time)]
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
    /// Search only these snapshots (id prefix or "latest"; repeatable; default: all matching the filter).
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)))]
pub struct TagArgs {
    /// Snapshots to change (id prefix or "latest"; default: all matching the filter).
    #[arg(value_name = "ID")]
    pub snapshots: Vec<String>,
    /// Add TAG (TAG1,TAG2 or repeated for several).
    #[arg(long, value_name = "TAG", group = "change")]
    pub add: Vec<String>,
    /// Remove TAG (TAG1,TAG2 or repeated for several).
    #[arg(long, value_name = "TAG", group = "change")]
    pub remove: Vec<String>,
    /// Replace all tags with these (TAG1,TAG2 or repeated; --set "" removes all).
    #[arg(long, value_name = "TAG", group = "change", conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct CompletionArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print (default: arc itself).
    pub command: Option<String>,
    /// Write a page for arc and for every command into DIR (arc.1, arc-backup.1, ...).
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// `none` stores the key unprotected (still format v2, same code paths);
    /// the default asks for a passphrase (ARC_PASSWORD, ARC_PASSWORD_FILE,
    /// ARC_PASSWORD_COMMAND, or the terminal, twice).
    #[arg(long, value_enum, default_value = "passphrase")]
    pub encryption: EncryptionMode,
    /// Minimum chunk size for files (e.g. 256K).
    #[arg(long, value_parser = parse_size)]
    pub chunk_min: Option<u64>,
    /// Average chunk size for files, a power of two (e.g. 1M).
    #[arg(long, value_parser = parse_size)]
    pub chunk_avg: Option<u64>,
    /// Maximum chunk size for files (e.g. 4M).
    #[arg(long, value_parser = parse_size)]
    pub chunk_max: Option<u64>,
    /// Minimum chunk size for stdin streams (e.g. 64K).
    #[arg(long, value_parser = parse_size)]
    pub stream_chunk_min: Option<u64>,
    /// Average chunk size for stdin streams, a power of two (e.g. 256K).
    #[arg(long, value_parser = parse_size)]
    pub stream_chunk_avg: Option<u64>,
    /// Maximum chunk size for stdin streams (e.g. 1M).
    #[arg(long, value_parser = parse_size)]
    pub stream_chunk_max: Option<u64>,
    /// zstd level of files and directories, 1-22.
    #[arg(long, default_value_t = 3)]
    pub compression: i32,
    /// zstd level of streams (--stdin, --stdin-from-command, --command-stream: database
    /// dumps), 1-22. Level 1 compresses a dump about 40% faster than 3 and stores it
    /// less than 1% larger.
    #[arg(long, value_name = "LEVEL", default_value_t = 1)]
    pub stream_compression: i32,
    /// Target pack size (e.g. 16M).
    #[arg(long, value_parser = parse_size)]
    pub pack_size: Option<u64>,
    /// Files smaller than this are compressed together with their neighbours, in frames of
    /// about this many bytes (e.g. 1M): larger frames store small files smaller, and a
    /// reader decompresses a whole frame to get one of them.
    #[arg(long, value_parser = parse_size)]
    pub frame_size: Option<u64>,
    /// How long `prune` waits between marking unused data and deleting it, so that backups
    /// running meanwhile are safe (e.g. 24h, 90m, 30s; default 24h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_secs)]
    pub prune_grace: Option<u64>,
    /// Name and cut content exactly as repository REPO does (its chunk sizes and its secret
    /// content keys), so that `arc copy` between the two sends only what the target lacks.
    /// REPO's passphrase from ARC_FROM_PASSWORD, ARC_FROM_PASSWORD_FILE or
    /// ARC_FROM_PASSWORD_COMMAND, else as this repository's.
    #[arg(
        long,
        value_name = "REPO",
        conflicts_with_all = ["chunk_min", "chunk_avg", "chunk_max", "stream_chunk_min", "stream_chunk_avg", "stream_chunk_max"]
    )]
    pub copy_chunker_params_from: Option<PathBuf>,
    /// REPO's storage variables (AWS_ACCESS_KEY_ID, ...) from this file of NAME=value lines instead
    /// of the environment, as `copy --from-env-file`.
    #[arg(long, value_name = "FILE", requires = "copy_chunker_params_from")]
    pub from_env_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots with this tag (TAG1,TAG2: all of them; repeated: any of the values; "": no tags).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots that include this backed-up path (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

#[derive(Args, Debug)]
#[command(
    group(ArgGroup::new("stdin_source").multiple(false)),
    group(ArgGroup::new("any_stream").multiple(true)),
    after_help = "Dump commands (--stdin-from-command, --command-stream) run without a shell unless the \
                  command line has shell syntax (| ; & < > $ ` quotes * ? ...), then as `sh -c CMD`. \
                  They all start before the files are read, their output is read side by side, and their \
                  stderr is passed through. The snapshot is written only if every command exits with \
                  status 0; otherwise arc exits 1 with the command's status and last stderr lines, and \
                  the data already stored is reused by the next try.\n\n\
                  Examples:\n  \
                  mysqldump --single-transaction shop | arc backup --stdin --stdin-name mysql/shop.sql\n  \
                  arc backup --stdin-from-command 'pg_dump -Fp app' --stdin-name pg/app.sql\n  \
                  arc backup /var/www --command-stream mysql/shop.sql='mysqldump --single-transaction shop'\n  \
                  arc cat latest:mysql/shop.sql | mysql shop"
)]
pub struct BackupArgs {
    /// Files and directories to back up.
    pub paths: Vec<PathBuf>,
    /// Read a stream from standard input (e.g. a database dump).
    #[arg(long, groups = ["stdin_source", "any_stream"])]
    pub stdin: bool,
    /// Run CMD and back up its standard output as the stdin stream; no snapshot unless CMD exits 0.
    #[arg(long, value_name = "CMD", groups = ["stdin_source", "any_stream"])]
    pub stdin_from_command: Option<String>,
    /// Path of the --stdin or --stdin-from-command stream inside the snapshot, e.g. mysql/shop.sql.
    #[arg(
        long,
        visible_alias = "stdin-filename",
        value_name = "NAME",
        default_value = "stdin",
        requires = "stdin_source"
    )]
    pub stdin_name: String,
    /// Run CMD and store its output as NAME in the snapshot (repeatable; with paths: one point in time).
    #[arg(long = "command-stream", value_name = "NAME=CMD", group = "any_stream",
          value_parser = crate::cmd::parse_named_command)]
    pub command_streams: Vec<(String, String)>,
    /// Store an empty stream instead of refusing it.
    #[arg(long, requires = "any_stream")]
    pub allow_empty: bool,
    /// Tag the snapshot (TAG1,TAG2 or repeated for several).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name to record (default: this host).
    #[arg(long)]
    pub host: Option<String>,
    /// Snapshot time, RFC 3339 (default: now), for imports and tests.
    #[arg(long, value_parser = parse_time)]
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// Parent snapshot for change detection (default: latest of the same host and paths).
    #[arg(long)]
    pub parent: Option<String>,
    /// Read every file, even those unchanged since the parent snapshot.
    #[arg(long)]
    pub force_read: bool,
    /// Leave out paths matching PATTERN (gitignore-style, see the README; repeatable).
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN", help_heading = "Selection")]
    pub excludes: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN", help_heading = "Selection")]
    pub iexcludes: Vec<String>,
    /// Read exclude patterns from FILE, one a line (# comments, blank lines allowed; repeatable).
    #[arg(long = "exclude-file", value_name = "FILE", help_heading = "Selection")]
    pub exclude_files: Vec<PathBuf>,
    /// Like --exclude-file, ignoring case.
    #[arg(long = "iexclude-file", value_name = "FILE", help_heading = "Selection")]
    pub iexclude_files: Vec<PathBuf>,
    /// Leave out the contents of directories holding a valid CACHEDIR.TAG (the tag is kept).
    #[arg(long, help_heading = "Selection")]
    pub exclude_caches: bool,
    /// Leave out the contents of directories holding NAME (starting with CONTENT if given; repeatable).
    #[arg(long, value_name = "NAME[:CONTENT]", help_heading = "Selection")]
    pub exclude_if_present: Vec<String>,
    /// Leave out files larger than SIZE (e.g. 2G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Selection")]
    pub exclude_larger_than: Option<u64>,
    /// Do not cross into other file systems or bind mounts (paths given are always read).
    #[arg(long, short = 'x', help_heading = "Selection")]
    pub one_file_system: bool,
    /// Back up the paths listed in FILE, one a line (# comments; - for stdin; repeatable).
    #[arg(long, value_name = "FILE", help_heading = "Selection")]
    pub files_from: Vec<PathBuf>,
    /// Back up the paths listed in FILE, NUL-separated (as find -print0 writes; repeatable).
    #[arg(long, value_name = "FILE", help_heading = "Selection")]
    pub files_from0: Vec<PathBuf>,
    /// List what would be read and count what would be backed up; write nothing.
    #[arg(long, short = 'n', conflicts_with = "any_stream")]
    pub dry_run: bool,
    /// Read at most RATE bytes per second from files and streams together (e.g. 60MiB), so the
    /// backup does not starve a live service of disk bandwidth.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_read: Option<u64>,
    /// Store dump streams plainly instead of as deltas against the parent snapshot's stream:
    /// more storage, but no chunk of the parent is downloaded (for a remote store that bills
    /// downloads).
    #[arg(long)]
    pub no_stream_deltas: bool,
    /// Record the one PATH given under this absolute path instead, e.g. a filesystem snapshot
    /// mounted at /mnt/snap/srv recorded as /srv (restores, latest: and the mount show /srv).
    #[arg(long = "as", value_name = "PATH")]
    pub record_as: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only these snapshots (id prefixes or "latest"; restic's form); default: all.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only the newest N snapshots of each host and set of paths (restic's --latest).
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// With keep rules, a "Kept by" column shows which rules keep each snapshot.
    #[command(flatten)]
    pub keep: KeepArgs,
}

/// Retention rules (restic/borg semantics): each --keep-<period> N keeps the
/// newest snapshot of each of the last N periods that have one.
#[derive(Args, Debug, Clone, Default)]
pub struct KeepArgs {
    /// Keep the last N snapshots.
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours.
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days.
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N decades (1st-10th, 11th-20th, 21st-end of a month).
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub keep_decades: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks.
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months.
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years.
    #[arg(long, value_name = "N", help_heading = "Retention")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than the newest one minus DURATION (e.g. 30d, 2y5m; units y m w d h).
    #[arg(long, value_name = "DURATION", help_heading = "Retention")]
    pub keep_within: Option<String>,
    /// Keep snapshots carrying these tags (TAG or TAG1,TAG2 for all of them; repeatable).
    #[arg(long = "keep-tag", value_name = "TAGS", help_heading = "Retention")]
    pub keep_tags: Vec<String>,
    /// Apply the rules to each group of snapshots with the same FIELDS (host, paths, tags; "" for one group).
    #[arg(long, value_name = "FIELDS", default_value = "host,paths", help_heading = "Retention")]
    pub group_by: String,
    /// Count days, months... in the local time zone instead of UTC.
    #[arg(long, help_heading = "Retention")]
    pub local: bool,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget (id prefixes), instead of --keep-* rules.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub keep: KeepArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show exactly what would be removed; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Prune afterwards: free the space of the data only forgotten snapshots used.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: rewrite packs whose unused share exceeds this (e.g. 10%).
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = parse_percent, requires = "prune")]
    pub max_unused: f64,
    /// With --prune: delete at once under an exclusive lock (see `prune --instant`).
    #[arg(long, requires = "prune")]
    pub instant: bool,
}

#[derive(Args, Debug)]
// One of the two is required, and clap's error then names both (with
// `required_unless_present` it named only <SNAPSHOT>, and `--all` had to
// be found in --help).
#[command(group(ArgGroup::new("which").required(true).args(["snapshots", "all"])))]
pub struct CopyArgs {
    /// The repository to copy from (the target is --repo); its passphrase from ARC_FROM_PASSWORD,
    /// ARC_FROM_PASSWORD_FILE or ARC_FROM_PASSWORD_COMMAND, else as the target's.
    #[arg(long, value_name = "PATH")]
    pub from_repo: std::path::PathBuf,
    /// Snapshots of the source to copy (id prefixes or `latest`).
    #[arg(value_name = "SNAPSHOT", conflicts_with = "all")]
    pub snapshots: Vec<String>,
    /// Copy every snapshot of the source.
    #[arg(long)]
    pub all: bool,
    /// Read the source's storage variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
    /// ARC_SFTP_KEY, ARC_WEBDAV_PASSWORD, ...) from this file of NAME=value lines instead of the
    /// environment, which then serves the target: for copying between two providers.
    #[arg(long, value_name = "FILE")]
    pub from_env_file: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Rewrite packs whose unused share (dead blobs, in stored bytes) exceeds this (0% to 100%).
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Report what would be deleted and rewritten; change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Delete unused data at once under an exclusive lock, instead of marking it and deleting it
    /// on a later run after the grace period (only when no other arc uses the repository).
    #[arg(long)]
    pub instant: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix or "latest" (the newest snapshot that holds PATH).
    pub snapshot: String,
    /// Directory (or file) inside the snapshot.
    #[arg(default_value = "/")]
    pub path: String,
    /// Long listing: type, mode, owner, size, time.
    #[arg(long, short = 'l')]
    pub long: bool,
    /// List subdirectories too.
    #[arg(long, short = 'R')]
    pub recursive: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id prefix or "latest".
    pub snapshot: String,
    /// Directory to restore into (created if missing).
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Restore only what matches PATTERN (a path or a gitignore-style pattern) and what is below it (repeatable).
    #[arg(long = "include", short = 'i', value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Like --include, ignoring case.
    #[arg(long = "iinclude", value_name = "PATTERN")]
    pub iincludes: Vec<String>,
    /// Do not restore what matches PATTERN, nor anything below it (repeatable).
    #[arg(long = "exclude", short = 'e', value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Like --exclude, ignoring case.
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
    /// Restore into a non-empty target, replacing entries in the way.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Empty directory to mount on; unmount with Ctrl-C (or `fusermount3 -u`).
    pub mountpoint: PathBuf,
    /// Let other users in (the recorded owners and modes still apply).
    #[arg(long)]
    pub allow_other: bool,
    /// Name snapshots and read at/ times in UTC instead of the local time zone.
    #[arg(long)]
    pub utc: bool,
    /// Memory for cached file data, e.g. 256M.
    #[arg(long, value_parser = parse_size, default_value = "128M", value_name = "SIZE")]
    pub cache_size: u64,
    /// Poll for the next request for this long after each one instead of
    /// sleeping, so tree walks are not slowed by CPUs waking up (nothing
    /// polls while the mount is idle); 0 turns it off.
    #[arg(long, default_value_t = 200, value_name = "MICROSECONDS")]
    pub busy_poll_us: u64,
    /// Count the kernel's requests by kind and print the counts when
    /// unmounting (for measuring how many round trips a tool needs).
    #[arg(long, hide = true)]
    pub count_requests: bool,
    /// Do not push small files' data into the kernel's page cache when
    /// their directory's first file is read (for measuring what the push saves).
    #[arg(long, hide = true)]
    pub no_push: bool,
    /// List directories with plain READDIR, not READDIRPLUS (for measuring
    /// what listing with attributes saves).
    #[arg(long, hide = true)]
    pub no_readdirplus: bool,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// SNAPSHOT:PATH, e.g. latest:/etc/hosts or latest:mysql/shop.sql
    /// (latest: the newest snapshot that holds PATH).
    pub target: String,
    /// restic's spelling `cat latest /path`: refused with a hint.
    #[arg(hide = true)]
    pub extra: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// SNAPSHOT[:PATH], e.g. latest:/var/www (latest: the newest snapshot that holds PATH).
    pub target: String,
    /// Write the archive to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Read every pack and re-hash every blob.
    #[arg(long)]
    pub read_data: bool,
    /// Read one share of the packs: n/m (group n of m) or P% (the next group of 100/P on each run,
    /// so a daily cron job reads every pack over the cycle).
    #[arg(long, value_name = "n/m|P%", conflicts_with = "read_data", value_parser = parse_subset)]
    pub read_data_subset: Option<Subset>,
}

#[derive(Debug, Clone, Copy)]
pub enum Subset {
    /// Group `.0` (from 1) of `.1`.
    Group(u32, u32),
    /// This share of the packs, rotating from run to run.
    Percent(f64),
}

pub fn parse_subset(s: &str) -> Result<Subset, String> {
    if let Some((n, m)) = s.split_once('/') {
        let (n, m): (u32, u32) = match (n.trim().parse(), m.trim().parse()) {
            (Ok(n), Ok(m)) => (n, m),
            _ => return Err(format!("{s:?} is not n/m like 1/20")),
        };
        if m == 0 || n == 0 || n > m {
            return Err(format!("{s:?}: n/m needs 1 <= n <= m"));
        }
        return Ok(Subset::Group(n, m));
    }
    let p = parse_percent(s)?;
    if p <= 0.0 {
        return Err(format!("{s:?}: the share must be more than 0%"));
    }
    Ok(Subset::Percent(p))
}

#[derive(Subcommand, Debug)]
#[command(after_help = "The new passphrase comes from ARC_NEW_PASSWORD, ARC_NEW_PASSWORD_FILE, \
                        ARC_NEW_PASSWORD_COMMAND, --new-password-file, or a terminal prompt (twice).")]
pub enum KeyCommand {
    /// List the key files: id, current, created, host (--json for scripts).
    List,
    /// Add a passphrase (a new key file wrapping the same master key).
    Add(NewPasswordArgs),
    /// Remove a key file by id (prefix); the last one and the one in use are refused.
    Remove {
        /// Key id or unique prefix (see `arc key list`).
        id: String,
    },
    /// Change the passphrase in use (adds the new key file, then removes the old).
    Passwd(NewPasswordArgs),
    /// Print what opens this repository elsewhere: the default repository's
    /// generated passphrase, and the current key file.
    Export,
}

#[derive(Args, Debug)]
pub struct NewPasswordArgs {
    /// Read the new passphrase from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EncryptionMode {
    /// Key files wrap the master key with a passphrase (Argon2id).
    Passphrase,
    /// The key is stored unprotected in the repository: for a trusted local disk.
    None,
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild the index files and index database from the packs.
    Index,
    /// Copy the intact blobs of damaged packs into new packs and take the damaged packs out of the
    /// index (kept byte for byte under quarantine/), so that `backup --force-read` stores what was
    /// lost again.
    #[command(
        after_help = "Without PACK ids every pack is read and verified, as `check --read-data` does,                             and the damaged ones are repaired; listed packs that are gone are dropped from                             the index."
    )]
    Packs(RepairPacksArgs),
}

#[derive(Args, Debug)]
pub struct RepairPacksArgs {
    /// Packs to repair (ids as `check --read-data` names them, or a prefix naming one pack).
    #[arg(value_name = "PACK")]
    pub packs: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "Each repository's cache holds its index, snapshot files and recently used trees; \
                        a missing or damaged cache is rebuilt from the repository.")]
pub struct CacheArgs {
    /// List each cached repository: id, location, size, last used (the default).
    #[arg(long, conflicts_with = "cleanup")]
    pub list: bool,
    /// Remove the caches of repositories not used for --max-unused.
    #[arg(long)]
    pub cleanup: bool,
    /// With --cleanup: how long a cache may go unused (30s, 90m, 24h, 30d).
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = parse_duration, requires = "cleanup")]
    pub max_unused: std::time::Duration,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(value_enum)]
    pub what: ListWhat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ListWhat {
    /// Every blob in the index: kind, id, pack, length (sorted by id).
    Blobs,
    /// Every pack: id and size.
    Packs,
    /// Index file ids.
    Index,
    /// Snapshot ids.
    Snapshots,
    /// Lock files.
    Locks,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove all locks, also those of processes that may still run.
    #[arg(long)]
    pub remove_all: bool,
}

/// Sizes like 4096, 64K, 1M, 16MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 1M"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// Rates like `60MiB`, `60MiB/s`, `500K` (bytes per second; 0 is refused:
/// leave the option out for no limit).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    match parse_size(t)? {
        0 => Err(format!("{s:?}: a rate must be more than 0 (leave the limit out for none)")),
        n => Ok(n),
    }
}

/// Durations like `30s`, `90m`, `24h`, `2d` or `1h 30m` (humantime's
/// syntax; a bare number is seconds), more than 0: the one duration syntax
/// of the command line and the configuration file (job/config.rs).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(t.parse().map_err(|_| format!("{s:?} is too large"))?)
    } else {
        humantime::parse_duration(t).map_err(|e| format!("{s:?} is not a duration like 30s, 90m, 24h or 2d: {e}"))?
    };
    if d.is_zero() {
        return Err(format!("{s:?}: a duration must be more than 0"));
    }
    Ok(d)
}

/// [`parse_duration`] in whole seconds, for settings kept in seconds.
pub fn parse_duration_secs(s: &str) -> Result<u64, String> {
    let d = parse_duration(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?}: give whole seconds"));
    }
    Ok(d.as_secs())
}

/// Percentages like `10%` or `10`: the unit is always percent, so
/// `--max-unused 5` means 5 %. Returns the fraction (0.05).
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    let v: f64 = t.parse().map_err(|_| format!("{s:?} is not a percentage like 10%"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(v / 100.0)
}

/// Times as RFC 3339, `YYYY-MM-DD` (midnight) or `YYYY-MM-DD HH:MM[:SS]`, UTC.
pub fn parse_loose_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{s:?} is not a time like 2026-07-24, \"2026-07-24 12:00\" or 2026-07-24T12:00:00Z"))
}

pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time like 2026-07-24T12:00:00Z: {e}"))
}
