//! Terminal presentation: progress bars (only on a TTY), warnings, sizes.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_engine::progress::{ItemChange, ItemKind, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Renders an error chain on one line: "context: cause: root cause".
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.chain() {
        let s = e.to_string();
        // Skip causes already spelled out by their parent.
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}

/// The next step for an engine error, in the CLI's words: the engine's
/// errors carry what went wrong and on what; the commands that help are
/// named here.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    use arc_engine::Error as E;
    let e = err.chain().find_map(|e| e.downcast_ref::<E>())?;
    Some(match e {
        E::Locked { stale: true, .. } => "remove the stale lock with `arc unlock`".into(),
        E::UnreadableLock { .. } => "if no other arc runs, remove it with `arc unlock --remove-all`".into(),
        E::TargetNotEmpty { .. } => "use --overwrite to restore into it".into(),
        E::Damaged { .. } => "run `arc check`, and `arc repair index` if the index is damaged".into(),
        E::EmptyStream { .. } => "did the dump fail? use --allow-empty to store an empty stream".into(),
        E::Corrupt { what: "index file", .. } | E::IndexDb { .. } => {
            "rebuild the index from the packs with `arc repair index`".into()
        }
        E::ReadOnlyFormat { .. } => "migrate it into a new repository: `arc init --repo NEW` then \
                                     `arc copy --repo NEW --from-repo OLD --all`"
            .into(),
        E::KeyInUse { .. } => "open the repository with another passphrase to remove this key, or replace its \
                               passphrase with `arc key passwd`"
            .into(),
        E::Bug { .. } => "please report it with the command line and this message".into(),
        E::PathInNoSnapshot { .. } | E::PathNotInSnapshot { .. } => {
            "`arc ls SNAPSHOT PATH` shows what a snapshot holds".into()
        }
        E::Remote { object, reason, .. } => crate::cmd::remote::refusal_hint(object, reason)?.into(),
        _ => return None,
    })
}

pub fn size(n: u64) -> String {
    humansize::format_size(n, humansize::BINARY)
}

/// A path for a line of output: as it is, unless a control character (a
/// newline in a file name would read as two entries) or bytes that are not
/// UTF-8 are in it; then quoted with escapes (`"a\nb"`, `"caf\xE9"`), as
/// restic quotes such names.
pub fn shown(p: &Path) -> std::borrow::Cow<'_, str> {
    match p.to_str() {
        Some(s) if !s.chars().any(char::is_control) => s.into(),
        _ => format!("{p:?}").into(),
    }
}

/// [`shown`] for a path given as bytes (a snapshot's).
pub fn shown_bytes(b: &[u8]) -> std::borrow::Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt;
    shown(Path::new(std::ffi::OsStr::from_bytes(b)))
}

/// A line of `backup -v` and `backup --dry-run`: `new       /srv/a.txt (1.2 KiB)`,
/// `unchanged /srv/dir/` (restic's words and columns; a directory ends in `/`).
pub fn item_line(change: ItemChange, path: &Path, kind: ItemKind, size: u64) -> String {
    let word = change.word();
    match kind {
        ItemKind::Dir => format!("{word:<9} {}/", shown(path).trim_end_matches('/')),
        ItemKind::File => format!("{word:<9} {} ({})", shown(path), self::size(size)),
        ItemKind::Other => format!("{word:<9} {}", shown(path)),
    }
}

/// Progress on stderr: a bar when stderr is a terminal, nothing otherwise.
/// Warnings are always printed.
pub struct CliProgress {
    bar: Option<ProgressBar>,
    /// `restore -v`: each file written, on stdout.
    list_files: bool,
    files: AtomicU64,
    pub warnings: AtomicU64,
}

impl CliProgress {
    pub fn new(quiet: bool, what: &str) -> CliProgress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {elapsed} {msg} {bytes} ({bytes_per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(what.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        CliProgress { bar, list_files: false, files: AtomicU64::new(0), warnings: AtomicU64::new(0) }
    }

    /// Lists each file as it is done (`restore -v`): `restored  PATH (SIZE)`.
    pub fn listing_files(mut self, on: bool) -> CliProgress {
        self.list_files = on;
        self
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for CliProgress {
    fn warn(&self, path: &Path, message: &str) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        let line = format!("arc: warning: {}: {message}", path.display());
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn file_done(&self, path: &Path, bytes: u64) {
        if self.list_files {
            let line = format!("restored  {} ({})", shown(path), size(bytes));
            let print = || {
                use std::io::Write;
                // A closed stdout is left to the summary to notice.
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            };
            // Past the bar only when both are on the terminal.
            match &self.bar {
                Some(b) if std::io::stdout().is_terminal() => b.suspend(print),
                _ => print(),
            }
        }
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &self.bar {
            if n.is_multiple_of(64) {
                b.set_message(format!("{n} files"));
            }
        }
    }

    fn bytes(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn total(&self, _files: u64, bytes: u64) {
        if let Some(b) = &self.bar {
            if bytes > 0 {
                b.set_length(bytes);
                b.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
        }
    }
}
