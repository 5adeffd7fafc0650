//! Where passphrases come from: `--password-file` or `--password-command`,
//! ARC_PASSWORD, ARC_PASSWORD_FILE, ARC_PASSWORD_COMMAND, the default
//! repository's key file, or a prompt on the terminal. Without any of them
//! and without a terminal, arc fails at once naming the variables, so
//! scripts and cron never hang on a prompt.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use zeroize::Zeroizing;

pub const SOURCES: &str = "ARC_PASSWORD, ARC_PASSWORD_FILE or ARC_PASSWORD_COMMAND";

/// A passphrase file or command output ends in a newline that is not part
/// of the passphrase (as restic and borg read them).
fn strip_newline(mut s: String) -> Zeroizing<String> {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Zeroizing::new(s)
}

pub(crate) fn read_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let s = std::fs::read_to_string(path).with_context(|| format!("{what} {}", path.display()))?;
    Ok(strip_newline(s))
}

pub(crate) fn run_command(cmd: &str, var: &str) -> Result<Zeroizing<String>> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("{var}: cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{var}: {cmd:?} failed ({})", out.status);
    }
    let s =
        String::from_utf8(out.stdout).map_err(|_| anyhow!("{var}: {cmd:?} printed a passphrase that is not UTF-8"))?;
    Ok(strip_newline(s))
}

/// `prefix`'s passphrase variables, in the order they are read.
const VARIABLES: [&str; 3] = ["PASSWORD", "PASSWORD_FILE", "PASSWORD_COMMAND"];

/// `--password-file` or `--password-command`: which of the ARC variables it
/// stands for, and its value. Set once, from the command line.
static FLAG: OnceLock<(&'static str, OsString)> = OnceLock::new();

/// Takes restic's `--password-file FILE` / `--password-command CMD`: they
/// stand for ARC_PASSWORD_FILE / ARC_PASSWORD_COMMAND, and a flag wins over
/// every ARC_PASSWORD* variable (a command line says more than a profile).
/// A flag, not the environment: the variables stay as they were for hooks
/// and `--stdin-from-command` children.
pub fn set_flags(file: Option<&Path>, command: Option<&str>) {
    let flag = match (file, command) {
        (Some(f), _) => ("PASSWORD_FILE", f.as_os_str().to_owned()),
        (None, Some(c)) => ("PASSWORD_COMMAND", OsString::from(c)),
        (None, None) => return,
    };
    let _ = FLAG.set(flag);
}

/// `{prefix}_{name}`, unless unset or empty (an empty one counts as unset,
/// here and in [`from_env`] alike); for ARC, a `--password-*` flag instead
/// of the variables when one was given.
fn var(prefix: &str, name: &str) -> Option<OsString> {
    if let (Some((flag, value)), "ARC") = (FLAG.get(), prefix) {
        return (*flag == name).then(|| value.clone()).filter(|v| !v.is_empty());
    }
    std::env::var_os(format!("{prefix}_{name}")).filter(|v| !v.is_empty())
}

/// What the error messages call `{prefix}_{name}`: the flag that stands for
/// it when one was given.
fn source_name(prefix: &str, name: &str) -> String {
    match (FLAG.get(), prefix) {
        (Some(("PASSWORD_FILE", _)), "ARC") => "--password-file".into(),
        (Some(("PASSWORD_COMMAND", _)), "ARC") => "--password-command".into(),
        _ => format!("{prefix}_{name}"),
    }
}

/// Is any of `prefix`'s passphrase variables set (and not empty)?
pub fn env_set(prefix: &str) -> bool {
    VARIABLES.iter().any(|name| var(prefix, name).is_some())
}

/// The passphrase from the environment (`prefix` = "ARC" or "ARC_NEW"),
/// if one of its variables is set. Empty passphrases are refused.
pub fn from_env(prefix: &str) -> Result<Option<Zeroizing<String>>> {
    let [password, file, command] = VARIABLES;
    let get = |name: &str| var(prefix, name);
    let pw = if let Some(v) = get(password) {
        Some(Zeroizing::new(v.into_string().map_err(|_| anyhow!("{prefix}_PASSWORD is not UTF-8"))?))
    } else if let Some(p) = get(file) {
        Some(read_file(Path::new(&p), &source_name(prefix, file))?)
    } else if let Some(c) = get(command) {
        let name = source_name(prefix, command);
        let c = c.into_string().map_err(|_| anyhow!("{name} is not UTF-8"))?;
        Some(run_command(&c, &name)?)
    } else {
        None
    };
    if pw.as_ref().is_some_and(|p| p.is_empty()) {
        let from = match FLAG.get() {
            Some((flag, _)) if prefix == "ARC" => source_name(prefix, flag),
            _ => format!("{prefix}_PASSWORD*"),
        };
        bail!("the passphrase from {from} is empty");
    }
    Ok(pw)
}

fn prompt(text: &str) -> Result<Zeroizing<String>> {
    let pw = Zeroizing::new(rpassword::prompt_password(text).context("cannot read the passphrase from the terminal")?);
    if pw.is_empty() {
        bail!("empty passphrase");
    }
    Ok(pw)
}

fn have_tty() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The passphrase of an existing repository.
pub fn existing(local_key: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(pw) = from_env("ARC")? {
        return Ok(pw);
    }
    if let Some(path) = local_key.filter(|p| p.exists()) {
        return read_file(path, "key file");
    }
    if have_tty() {
        return prompt("repository passphrase: ");
    }
    bail!("this repository is encrypted: set {SOURCES} (no terminal to ask on)")
}

/// The passphrase of `copy`'s source repository: `ARC_FROM_PASSWORD*`
/// (restic's `RESTIC_FROM_PASSWORD`), else the default repository's key
/// file when the source is the default repository (`local_key`), else the
/// `ARC_PASSWORD*` of the target (the common case of one passphrase for
/// both), else the terminal.
pub fn existing_source(local_key: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(pw) = from_env("ARC_FROM")? {
        return Ok(pw);
    }
    if let Some(path) = local_key.filter(|p| p.exists()) {
        return read_file(path, "key file");
    }
    if let Some(pw) = from_env("ARC")? {
        return Ok(pw);
    }
    if have_tty() {
        return prompt("source repository passphrase: ");
    }
    let vars = SOURCES.replace("ARC_", "ARC_FROM_");
    bail!(
        "the --from-repo repository is encrypted: set {vars} (or {SOURCES} if it is the same) (no terminal to ask on)"
    )
}

/// A new passphrase (init, key add/passwd): `prefix` variables, then
/// `file`, then the terminal, asked twice.
pub fn new(prefix: &str, file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(pw) = from_env(prefix)? {
        return Ok(pw);
    }
    if let Some(f) = file {
        let pw = read_file(f, "passphrase file")?;
        if pw.is_empty() {
            bail!("passphrase file {} is empty", f.display());
        }
        return Ok(pw);
    }
    if have_tty() {
        let a = prompt("new passphrase: ")?;
        let b = prompt("repeat the passphrase: ")?;
        if a != b {
            bail!("the passphrases differ");
        }
        return Ok(a);
    }
    let vars = SOURCES.replace("ARC_", &format!("{prefix}_"));
    bail!("no passphrase for the new key: set {vars} (no terminal to ask on)")
}

/// `$XDG_CONFIG_HOME/arc/repository.key`: the random passphrase of the
/// default repository.
pub fn default_key_path() -> Result<PathBuf> {
    let base = dirs::config_dir().ok_or_else(|| anyhow!("cannot find a configuration directory: set HOME"))?;
    Ok(base.join("arc").join("repository.key"))
}

/// Creates the default repository's key file: 256 random bits, hex,
/// mode 0600, written completely before it is renamed into place.
pub fn create_default_key(path: &Path) -> Result<Zeroizing<String>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = Zeroizing::new([0u8; 32]);
    arc_engine::crypto::fill_random(&mut raw[..])?;
    let pw = Zeroizing::new(hex_encode(&raw[..]));
    let dir = path.parent().ok_or_else(|| anyhow!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".repository.key.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(pw.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(pw)
}

/// Whether `p` has the form [`create_default_key`] writes: 64 hex digits,
/// 256 bits.
pub fn is_generated_key(p: &str) -> bool {
    p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
