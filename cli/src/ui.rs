//! Terminal presentation: progress bars (only on a TTY), warnings, sizes.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_engine::progress::Progress;
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

/// What the user can do about an engine error, when the error alone does
/// not say it: the engine words errors without command names.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|e| match e.downcast_ref::<arc_engine::Error>()? {
        arc_engine::Error::ReadOnlyFormat { .. } => Some(
            "migrate it into a new repository: `arc init --repo NEW` then \
             `arc copy --repo NEW --from-repo OLD --all`"
                .to_string(),
        ),
        _ => None,
    })
}

pub fn size(n: u64) -> String {
    humansize::format_size(n, humansize::BINARY)
}

/// Progress on stderr: a bar when stderr is a terminal, nothing otherwise.
/// Warnings are always printed.
pub struct CliProgress {
    bar: Option<ProgressBar>,
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
        CliProgress { bar, files: AtomicU64::new(0), warnings: AtomicU64::new(0) }
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

    fn file_done(&self, _path: &Path, _bytes: u64) {
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
