//! Progress of a backup: on a terminal, a bar with files and bytes done of
//! the total (from the scan beside the backup), percentage, rate, ETA and
//! the file being read; with --json, one restic-style `status` object per
//! line every [`STATUS_EVERY`], and one `error` object per unreadable item.
//! With -v, each entry stored new or changed (-vv: every entry) is listed
//! on stdout as the snapshot stores it, above the bar.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_engine::progress::{Item, ItemChange, ItemKind, Items, Progress};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Interval of --json `status` lines (restic's default for scripts is
/// slower; one a second is what a log shipper or a dashboard wants).
pub const STATUS_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Counts {
    files_done: AtomicU64,
    bytes_done: AtomicU64,
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    scan_complete: AtomicBool,
    streams: u64,
    errors: AtomicU64,
    current: Mutex<PathBuf>,
}

impl Counts {
    /// A restic `status` message.
    fn status(&self, start: Instant) -> Status {
        let elapsed = start.elapsed().as_secs_f64();
        let (files, bytes) = (self.files_done.load(Ordering::Relaxed), self.bytes_done.load(Ordering::Relaxed));
        let (total_files, total_bytes) =
            (self.total_files.load(Ordering::Relaxed), self.total_bytes.load(Ordering::Relaxed));
        let percent = if total_bytes > 0 {
            (bytes as f64 / total_bytes as f64).min(1.0)
        } else if total_files > 0 {
            (files as f64 / total_files as f64).min(1.0)
        } else {
            0.0
        };
        // Only once the total is known and something was done is an
        // estimate honest.
        let seconds_remaining = (self.scan_complete.load(Ordering::Relaxed) && bytes > 0 && elapsed > 0.0)
            .then(|| (total_bytes.saturating_sub(bytes) as f64 / (bytes as f64 / elapsed)).round() as u64);
        let current_files = match self.current.lock() {
            Ok(c) if !c.as_os_str().is_empty() => Some(vec![c.display().to_string()]),
            _ => None,
        };
        Status {
            message_type: "status",
            seconds_elapsed: elapsed as u64,
            percent_done: percent,
            total_files,
            files_done: files,
            total_bytes,
            bytes_done: bytes,
            error_count: self.errors.load(Ordering::Relaxed),
            seconds_remaining,
            current_files,
        }
    }
}

/// restic's `status` line of `backup --json` (docs/json.md).
#[derive(serde::Serialize)]
struct Status {
    message_type: &'static str,
    seconds_elapsed: u64,
    percent_done: f64,
    total_files: u64,
    files_done: u64,
    total_bytes: u64,
    bytes_done: u64,
    error_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds_remaining: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_files: Option<Vec<String>>,
}

/// restic's `error` line of `backup --json`: the item and why.
#[derive(serde::Serialize)]
struct ErrorLine<'a> {
    message_type: &'static str,
    error: ErrorMessage<'a>,
    during: &'static str,
    item: String,
}

#[derive(serde::Serialize)]
struct ErrorMessage<'a> {
    message: &'a str,
}

/// restic's `verbose_status` line (`backup -v --json`, `backup --dry-run
/// --json`): an entry stored, or one a dry run would read.
#[derive(serde::Serialize)]
pub struct VerboseStatus {
    pub message_type: &'static str,
    pub action: ItemChange,
    /// A directory's path ends in `/`, as in restic's.
    pub item: String,
    pub data_size: u64,
}

impl VerboseStatus {
    pub fn of(change: ItemChange, path: &Path, kind: ItemKind, size: u64) -> VerboseStatus {
        let mut item = path.display().to_string();
        if kind == ItemKind::Dir && !item.ends_with('/') {
            item.push('/');
        }
        VerboseStatus { message_type: "verbose_status", action: change, item, data_size: size }
    }
}

pub struct BackupProgress {
    counts: Arc<Counts>,
    /// What -v lists.
    items: Items,
    /// -q or --json: no notes on stderr.
    quiet: bool,
    /// Listed lines go past the bar only when both are on the terminal
    /// (`arc backup -vv > list.txt` keeps the bar and writes the list
    /// without clearing and redrawing it for each line).
    stdout_tty: bool,
    bar: Option<ProgressBar>,
    json: bool,
    start: Instant,
    /// The --json status thread; dropping the sender wakes it at once.
    ticker: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
    /// The bar shows a total (set once the scan has counted bytes).
    with_total: AtomicBool,
    pub warnings: AtomicU64,
}

/// One JSON value on its own line on stdout; a closed stdout is left to
/// the final summary to notice.
fn json_line(v: &impl serde::Serialize) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if serde_json::to_writer(&mut out, v).is_ok() {
        let _ = writeln!(out);
    }
}

/// The last `max` characters of a path, for the bar.
fn tail(p: &Path, max: usize) -> String {
    let s = p.display().to_string();
    let n = s.chars().count();
    if n <= max {
        s
    } else {
        format!("…{}", s.chars().skip(n - max + 1).collect::<String>())
    }
}

/// A bar style with arc's own keys: `{files}` (done of total, `+` while
/// the scan goes on) and `{current}` (the end of the path being read).
fn styled(counts: &Arc<Counts>, template: &str) -> ProgressStyle {
    let (files, current) = (counts.clone(), counts.clone());
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("files", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let total = files.total_files.load(Ordering::Relaxed);
            let more = if files.scan_complete.load(Ordering::Relaxed) { "" } else { "+" };
            let _ = write!(w, "{}/{total}{more} files", files.files_done.load(Ordering::Relaxed));
        })
        .with_key("current", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            if let Ok(c) = current.current.lock() {
                let _ = write!(w, "{}", tail(&c, 40));
            }
        })
        .progress_chars("=> ")
}

impl BackupProgress {
    /// `streams`: how many streams the backup reads besides the files (each
    /// counts as one file done; the scan does not see them).
    pub fn new(quiet: bool, json: bool, streams: u64, items: Items) -> BackupProgress {
        let counts = Arc::new(Counts { streams, ..Default::default() });
        let start = Instant::now();
        let bar = (!quiet && !json && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            // Until the scan has counted something there is no total: no
            // bar and no percentage yet (an empty total would show 100%).
            b.set_style(styled(&counts, "{elapsed} {files} {bytes} {bytes_per_sec} {current}"));
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let ticker = json.then(|| {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let counts = counts.clone();
            let handle = std::thread::Builder::new()
                .name("arc-status".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(STATUS_EVERY) {
                        json_line(&counts.status(start));
                    }
                })
                .ok();
            handle.map(|h| (tx, h))
        });
        BackupProgress {
            counts,
            items,
            quiet,
            stdout_tty: std::io::stdout().is_terminal(),
            bar,
            json,
            start,
            ticker: ticker.flatten(),
            with_total: AtomicBool::new(false),
            warnings: AtomicU64::new(0),
        }
    }

    /// The bar, for output that must be printed above it.
    pub fn bar(&self) -> Option<ProgressBar> {
        self.bar.clone()
    }

    /// Stops the display; with --json prints a last `status` line with the
    /// final counts (the `summary` follows from the caller).
    pub fn finish(&mut self) {
        if let Some((tx, h)) = self.ticker.take() {
            drop(tx);
            let _ = h.join();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if self.json {
            json_line(&self.counts.status(self.start));
        }
    }

    fn done(&self, bytes: u64) {
        self.counts.files_done.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for BackupProgress {
    fn drop(&mut self) {
        if let Some((tx, h)) = self.ticker.take() {
            drop(tx);
            let _ = h.join();
        }
    }
}

impl Progress for BackupProgress {
    fn warn(&self, path: &Path, message: &str) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        self.counts.errors.fetch_add(1, Ordering::Relaxed);
        let line = format!("arc: warning: {}: {message}", path.display());
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
        if self.json {
            json_line(&ErrorLine {
                message_type: "error",
                error: ErrorMessage { message },
                during: "archival",
                item: path.display().to_string(),
            });
        }
    }

    fn note(&self, path: &Path, message: &str) {
        if self.quiet {
            return;
        }
        let line = format!("arc: note: {}: {message}", path.display());
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    fn file_done(&self, _path: &Path, bytes: u64) {
        // Bytes were counted as they were read (see `bytes`).
        let _ = bytes;
        self.counts.files_done.fetch_add(1, Ordering::Relaxed);
    }

    fn bytes(&self, n: u64) {
        self.counts.bytes_done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn unchanged(&self, _path: &Path, bytes: u64) {
        self.done(bytes);
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    fn reading(&self, path: &Path) {
        if let Ok(mut c) = self.counts.current.lock() {
            c.clear();
            c.push(path);
        }
    }

    fn items(&self) -> Items {
        self.items
    }

    fn item(&self, item: &Item<'_>) {
        if self.json {
            json_line(&VerboseStatus::of(item.change, item.path, item.kind, item.size));
            return;
        }
        let line = crate::ui::item_line(item.change, item.path, item.kind, item.size);
        let print = || {
            use std::io::Write;
            // A closed stdout is left to the summary to notice.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        };
        match &self.bar {
            Some(b) if self.stdout_tty => b.suspend(print),
            _ => print(),
        }
    }

    fn wants_totals(&self) -> bool {
        self.bar.is_some() || self.json
    }

    fn scanned(&self, files: u64, bytes: u64, complete: bool) {
        self.counts.total_files.store(files + self.counts.streams, Ordering::Relaxed);
        self.counts.total_bytes.store(bytes, Ordering::Relaxed);
        self.counts.scan_complete.store(complete, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            if bytes > 0 && !self.with_total.swap(true, Ordering::Relaxed) {
                b.set_style(styled(
                    &self.counts,
                    "{elapsed} {files} [{bar:20}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {current}",
                ));
            }
        }
    }
}
