//! `arc`: the command-line front end. It owns all output: human tables and
//! progress on a terminal, JSON with --json, warnings and errors on stderr,
//! and the exit codes (0 ok, 1 error, 2 usage error, 3 incomplete snapshot).

/// `println!` that returns the write error instead of panicking: a closed
/// stdout (`arc snapshots | head -2`) travels up as an io::Error and
/// [`main`] ends the command normally, with every lock released on the way.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod args;
mod backup_progress;
mod cmd;
mod job;
mod passphrase;
mod ui;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

/// Exit code for a snapshot that was written without some unreadable files.
pub const EXIT_INCOMPLETE: u8 = 3;

/// Exit code for a usage error (clap's, and arc's own after parsing).
pub const EXIT_USAGE: u8 = 2;

/// glibc raises its mmap threshold after large blocks are freed, after
/// which pack-sized buffers come from the heap and are never returned:
/// RSS then creeps up with every pack. A fixed threshold keeps buffers of
/// 256 KiB and more in their own mappings, and fewer arenas bound
/// fragmentation across the pipeline's threads.
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; it is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 5 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// A panic is a bug in arc: say so, with where and the panic's message, in
/// one line instead of Rust's default text. A worker's panic is then also
/// the command's error (arc_engine::Error::Bug), never "interrupted".
fn report_panics_as_bugs() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = arc_engine::sync::panic_message(info.payload());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!(
            "arc: internal error (a bug in arc; please report it): thread '{}' panicked{at}: {message}",
            thread.name().unwrap_or("?")
        );
    }));
}

fn main() -> ExitCode {
    tune_allocator();
    report_panics_as_bugs();
    let cli = args::Cli::parse();
    passphrase::set_flags(cli.password_file.as_deref(), cli.password_command.as_deref());
    if matches!(cli.command, args::Command::Mount(_)) {
        // Before any thread exists: setting the environment is only sound
        // while nothing else can read it.
        arc_fuse_mount::pin_fusermount_path();
    }
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // First Ctrl-C/SIGTERM asks the operation to stop cleanly (no
        // snapshot, packs kept); a second one exits at once, which is still
        // safe because every repository write is atomic.
        let _ = ctrlc::set_handler(move || {
            if cancel.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    match cmd::run(cli, cancel) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            match ui::hint(&err) {
                Some(hint) => eprintln!("arc: error: {}; {hint}", ui::one_line(&err)),
                None => eprintln!("arc: error: {}", ui::one_line(&err)),
            }
            if err.downcast_ref::<cmd::Usage>().is_some() {
                return ExitCode::from(EXIT_USAGE);
            }
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
