//! Dump commands whose output is backed up as a stream
//! (`--stdin-from-command`, `--command-stream NAME=CMD`).
//!
//! A command is started before the repository is opened, so one that cannot
//! be run fails before anything is written. Its stdout becomes the stream;
//! its stderr is forwarded line by line to arc's stderr, and the last lines
//! are kept for the error message. The stream's reader waits for the command
//! when its output ends and turns a non-zero exit (or a signal) into a read
//! error, which makes the engine fail the backup: a dump that died half way
//! never becomes a snapshot.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Result};
use arc_engine::ops::backup::StreamSource;
use indicatif::ProgressBar;

/// Stderr lines kept for the error message of a failed command.
const TAIL_LINES: usize = 10;
/// Longer stderr lines are cut in the error message (they are forwarded whole).
const TAIL_LINE_CHARS: usize = 200;

/// Characters that only a shell gives a meaning to: a command line with any
/// of them runs as `sh -c CMD`; any other is split on whitespace and run
/// directly, without a shell between arc and the dump program.
const SHELL_CHARS: &[char] = &['|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '\n'];

/// `NAME=CMD` of `--command-stream`; the name ends at the first `=`.
pub fn parse_named_command(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, cmd)) if !name.trim().is_empty() && !cmd.trim().is_empty() => {
            Ok((name.trim().to_string(), cmd.to_string()))
        }
        _ => Err(format!("{s:?} is not NAME=COMMAND (for example mysql/shop.sql='mysqldump shop')")),
    }
}

/// Whether `cmdline` needs `sh -c`: shell syntax, a leading `VAR=value`
/// assignment, or a word starting with `~` (home) or `#` (comment).
fn needs_shell(cmdline: &str) -> bool {
    let mut words = cmdline.split_whitespace();
    cmdline.contains(SHELL_CHARS)
        || words.next().is_some_and(|w| w.contains('=') || w.starts_with('~') || w.starts_with('#'))
        || words.any(|w| w.starts_with('~') || w.starts_with('#'))
}

/// The program and arguments that run `cmdline`.
fn argv(cmdline: &str) -> Result<Vec<String>> {
    if cmdline.trim().is_empty() {
        return Err(anyhow!("empty command"));
    }
    if needs_shell(cmdline) {
        return Ok(vec!["sh".into(), "-c".into(), cmdline.into()]);
    }
    Ok(cmdline.split_whitespace().map(str::to_string).collect())
}

/// Where forwarded stderr lines go: arc's stderr, above the progress bar
/// once there is one (set after the commands started).
#[derive(Clone, Default)]
pub struct StderrOut(Arc<OnceLock<ProgressBar>>);

impl StderrOut {
    pub fn set_bar(&self, bar: Option<ProgressBar>) {
        if let Some(bar) = bar {
            let _ = self.0.set(bar);
        }
    }

    fn line(&self, line: &str) {
        let print = || {
            let mut err = std::io::stderr().lock();
            // Nowhere to report a failing stderr to.
            let _ = writeln!(err, "{line}");
        };
        match self.0.get() {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }
}

/// A started command and what its readers share with the stop hook.
struct Proc {
    child: Mutex<Child>,
    /// The command line as the user gave it, for messages.
    cmdline: String,
    tail: Mutex<VecDeque<String>>,
}

impl Proc {
    /// Kills the command unless it has exited already. Kill and reap go
    /// through the same lock, so a pid is never signalled after it was
    /// reaped (and perhaps reused).
    fn kill(&self) {
        if let Ok(mut child) = self.child.lock() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
        }
    }

    /// Waits for the command to exit without holding the lock for long, so
    /// that the stop hook can still kill it (a command may close its stdout
    /// and carry on).
    fn wait(&self) -> std::io::Result<ExitStatus> {
        loop {
            {
                let mut child = self.child.lock().map_err(|_| std::io::Error::other("command state poisoned"))?;
                if let Some(status) = child.try_wait()? {
                    return Ok(status);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn failure(&self, status: ExitStatus) -> String {
        let how = match (status.code(), status.signal()) {
            (Some(127), _) => "exited with status 127 (command not found?)".to_string(),
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
            (None, None) => format!("ended with {status}"),
        };
        let tail = self.tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        if tail.is_empty() {
            format!("command '{}' {how} (it wrote nothing to stderr)", self.cmdline)
        } else {
            format!("command '{}' {how}; its last stderr lines: {}", self.cmdline, tail.join(" | "))
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

enum State {
    Reading,
    Succeeded,
    Failed(String),
}

/// The command's stdout as a stream: at its end, the command's exit status
/// decides between a clean end and an error.
struct CommandReader {
    stdout: ChildStdout,
    proc: Arc<Proc>,
    /// Signalled when the stderr forwarder has seen the end of stderr.
    stderr_done: Receiver<()>,
    state: State,
}

impl CommandReader {
    fn finish(&mut self) -> State {
        let status = match self.proc.wait() {
            Ok(s) => s,
            Err(e) => return State::Failed(format!("cannot wait for command '{}': {e}", self.proc.cmdline)),
        };
        // The last stderr lines usually say why the command failed; they
        // may still be in the pipe when it exits. A grandchild holding
        // stderr open must not hang the backup, hence the bound.
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        if status.success() {
            State::Succeeded
        } else {
            State::Failed(self.proc.failure(status))
        }
    }
}

impl Read for CommandReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match &self.state {
                State::Succeeded => return Ok(0),
                State::Failed(msg) => return Err(std::io::Error::other(msg.clone())),
                State::Reading => {}
            }
            match self.stdout.read(buf) {
                Ok(0) => self.state = self.finish(),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.proc.kill();
                    self.state = State::Failed(format!("reading the output of '{}' failed: {e}", self.proc.cmdline));
                }
            }
        }
    }
}

impl Drop for CommandReader {
    /// A reader dropped before the end of its output (the backup failed
    /// elsewhere or was cancelled) leaves no dump running behind arc, and
    /// no zombie either.
    fn drop(&mut self) {
        if let Ok(mut child) = self.proc.child.lock() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts `cmdline` for the stream `name`. `prefix_stderr` puts `[name] `
/// before each forwarded line (useful when several commands run at once).
pub fn start(
    name: &str,
    cmdline: &str,
    allow_empty: bool,
    prefix_stderr: bool,
    out: &StderrOut,
) -> Result<StreamSource> {
    let argv = argv(cmdline).map_err(|e| anyhow!("stream {name}: {e}"))?;
    start_argv(name, cmdline, &argv, &Extra::default(), allow_empty, prefix_stderr, out)
}

/// What `arc run` adds to a dump command: its environment (passwords for
/// the database clients) and the job's CPU and I/O priority.
#[derive(Default, Clone)]
pub struct Extra {
    pub env: Vec<(String, String)>,
    pub priority: crate::job::priority::Priority,
}

/// [`start`] with the program and arguments given (no splitting, no shell),
/// `cmdline` being how they are shown.
pub fn start_argv(
    name: &str,
    cmdline: &str,
    argv: &[String],
    extra: &Extra,
    allow_empty: bool,
    prefix_stderr: bool,
    out: &StderrOut,
) -> Result<StreamSource> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.envs(extra.env.iter().cloned());
    let priority = extra.priority;
    // SAFETY: prctl is async-signal-safe. If arc dies without cleaning up
    // (SIGKILL, a second Ctrl-C), the kernel kills the command as well
    // rather than leaving a dump running for nobody. The signal is sent
    // when the spawning thread ends: `arc backup` spawns commands from its
    // main thread, which lives as long as the process; `arc run` from the
    // stream's reading thread, which lives until the command has exited.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            priority.apply()
        });
    }
    let mut child = cmd.spawn().map_err(|e| anyhow!("cannot run '{}': {}", argv[0], strip_os_error(&e)))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(anyhow!("cannot run '{}': its output pipes were not set up", argv[0]));
    };
    super::stdin_stream::widen_pipe(std::os::fd::AsRawFd::as_raw_fd(&stdout));
    let proc = Arc::new(Proc { child: Mutex::new(child), cmdline: cmdline.to_string(), tail: Mutex::default() });
    let (done_tx, stderr_done) = mpsc::channel();
    {
        let proc = proc.clone();
        let out = out.clone();
        let prefix = if prefix_stderr { format!("[{name}] ") } else { String::new() };
        std::thread::spawn(move || {
            forward_stderr(stderr, &proc, &prefix, &out);
            let _ = done_tx.send(());
        });
    }
    let hook = proc.clone();
    Ok(StreamSource {
        name: name.to_string(),
        reader: Box::new(CommandReader { stdout, proc, stderr_done, state: State::Reading }),
        allow_empty,
        stop: Some(Box::new(move || hook.kill())),
    })
}

/// "No such file or directory" rather than "... (os error 2)".
fn strip_os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn forward_stderr(stderr: impl Read, proc: &Proc, prefix: &str, out: &StderrOut) {
    let mut r = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        out.line(&format!("{prefix}{line}"));
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(mut tail) = proc.tail.lock() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            let cut: String = line.chars().take(TAIL_LINE_CHARS).collect();
            tail.push_back(if cut.len() < line.len() { format!("{cut}...") } else { cut });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_run_without_a_shell() {
        assert_eq!(argv("pg_dump  -Fp app").unwrap(), ["pg_dump", "-Fp", "app"]);
        assert_eq!(argv("pg_dump --restrict-key=k app").unwrap(), ["pg_dump", "--restrict-key=k", "app"]);
        assert_eq!(argv("mysqldump --single-transaction shop").unwrap(), ["mysqldump", "--single-transaction", "shop"]);
    }

    #[test]
    fn shell_syntax_runs_with_sh() {
        for c in [
            "pg_dump app | gzip",
            "pg_dump app > /dev/null; cat x",
            "mysqldump $DB",
            "echo 'a b'",
            "echo \"a\"",
            "ls *.sql",
            "PGPASSWORD=x pg_dump app",
            "cat ~/dump.sql",
            "a && b",
            "(cd /; ls)",
            "echo `date`",
        ] {
            assert_eq!(argv(c).unwrap(), ["sh", "-c", c], "{c}");
        }
        assert!(argv("   ").is_err());
    }

    #[test]
    fn named_commands() {
        assert_eq!(
            parse_named_command("pg/app.sql=pg_dump --restrict-key=k app").unwrap(),
            ("pg/app.sql".to_string(), "pg_dump --restrict-key=k app".to_string())
        );
        assert!(parse_named_command("pg_dump app").is_err());
        assert!(parse_named_command("=pg_dump app").is_err());
        assert!(parse_named_command("x=").is_err());
    }

    #[test]
    fn reader_ends_cleanly_only_on_exit_zero() {
        let out = StderrOut::default();
        let mut ok = start("ok", "printf 'abc\\n'; echo note >&2", false, false, &out).unwrap();
        let mut got = Vec::new();
        ok.reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abc\n");

        let mut bad = start("bad", "printf 'partial'; echo 'dump broke' >&2; exit 2", false, false, &out).unwrap();
        let mut got = Vec::new();
        let err = bad.reader.read_to_end(&mut got).unwrap_err().to_string();
        assert_eq!(got, b"partial");
        assert!(err.contains("exited with status 2") && err.contains("dump broke"), "{err}");

        let e = start("none", "arc-no-such-program-x --flag", false, false, &out).err().unwrap().to_string();
        assert_eq!(e, "cannot run 'arc-no-such-program-x': No such file or directory");
    }

    #[test]
    fn stop_hook_kills_a_silent_command() {
        let out = StderrOut::default();
        let mut s = start("slow", "sleep 30", false, false, &out).unwrap();
        let stop = s.stop.take().unwrap();
        let t = std::time::Instant::now();
        let h = std::thread::spawn(move || {
            let mut got = Vec::new();
            s.reader.read_to_end(&mut got).unwrap_err().to_string()
        });
        std::thread::sleep(Duration::from_millis(200));
        stop();
        let err = h.join().unwrap();
        assert!(err.contains("signal 9"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
