//! `arc key list|add|remove|passwd|export`.

use anyhow::Result;
use arc_engine::ops::keys;

use super::Env;
use crate::args::KeyCommand;

pub fn run(env: &Env, cmd: KeyCommand) -> Result<u8> {
    let repo = env.open()?;
    match cmd {
        KeyCommand::List => {
            let list = keys::list_keys(&repo)?;
            if env.json {
                super::print_json(&list)?;
            } else {
                outln!("  {:<12} {:<20} {:<30} protected", "id", "created", "user@host")?;
                for k in &list {
                    outln!(
                        "{} {:<12} {:<20} {:<30} {}",
                        if k.current { "*" } else { " " },
                        &k.id[..12],
                        k.created.format("%Y-%m-%d %H:%M:%S"),
                        format!("{}@{}", k.username, k.host),
                        if k.protected { "passphrase" } else { "no (--encryption none)" }
                    )?;
                }
            }
        }
        KeyCommand::Add(a) => {
            let pw = crate::passphrase::new("ARC_NEW", a.new_password_file.as_deref())?;
            let id = keys::add_key(&repo, pw)?;
            report(env, "added", &id)?;
        }
        KeyCommand::Remove { id } => {
            let id = keys::remove_key(&repo, &id)?;
            report(env, "removed", &id)?;
        }
        KeyCommand::Passwd(a) => {
            let pw = crate::passphrase::new("ARC_NEW", a.new_password_file.as_deref())?;
            let id = keys::change_passphrase(&repo, pw)?;
            report(env, "changed passphrase; new key", &id)?;
            // The default repository was opened with arc's key file, which
            // holds the old passphrase: say so now, not at the next backup.
            if let Some(path) = env.default_key.as_deref().filter(|p| p.exists() && !crate::passphrase::env_set("ARC"))
            {
                eprintln!(
                    "arc: note: {} holds the old passphrase, which no longer opens the repository; set {} \
                     from now on, or write the new passphrase into that file",
                    path.display(),
                    crate::passphrase::SOURCES
                );
            }
        }
        KeyCommand::Export => {
            let (id, bytes) = keys::export_key(&repo)?;
            // The default repository's generated passphrase is what a user
            // needs to open it from another machine; the key file is what
            // restores keys/ if it is ever lost.
            let generated = match &env.default_key {
                Some(path) if !crate::passphrase::env_set("ARC") => {
                    std::fs::read_to_string(path).ok().map(|s| s.trim_end().to_string())
                }
                _ => None,
            };
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            if env.json {
                super::print_json(&KeyExport {
                    repository: repo.config().id,
                    key_id: &id,
                    passphrase: generated.as_deref(),
                    key_file: &hex,
                })?;
            } else {
                outln!("repository  {}", repo.config().id)?;
                if let Some(p) = &generated {
                    outln!("passphrase  {p}")?;
                }
                outln!("key file    keys/{id}")?;
                outln!("{hex}")?;
            }
        }
    }
    Ok(0)
}

/// `key export --json` (docs/json.md, `key`).
#[derive(serde::Serialize)]
struct KeyExport<'a> {
    repository: arc_engine::Id,
    key_id: &'a str,
    /// The default repository's generated passphrase, else `null`.
    passphrase: Option<&'a str>,
    /// The key file's bytes in hex.
    key_file: &'a str,
}

/// `key add|remove|passwd --json` (docs/json.md, `key`).
#[derive(serde::Serialize)]
struct KeyAction<'a> {
    action: &'a str,
    id: &'a str,
}

fn report(env: &Env, what: &str, id: &str) -> Result<()> {
    if env.json {
        super::print_json(&KeyAction { action: what, id })
    } else {
        outln!("{what} {}", &id[..12.min(id.len())])?;
        Ok(())
    }
}
