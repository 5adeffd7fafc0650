//! The options that choose what a command works on: exclude files and
//! patterns (backup, restore), `--files-from` lists. Every pattern is
//! compiled here, before the repository is opened or a file is read, so a
//! bad one stops arc with the file and line at fault.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use arc_engine::exclude::{Excludes, IfPresent};
use arc_engine::patterns::{PatternSet, PatternSpec};

use crate::args::BackupArgs;

/// Patterns from an exclude file: one a line; blank lines and lines whose
/// first non-blank character is `#` are skipped; trailing blanks (and a
/// CR) are dropped.
fn read_pattern_file(path: &Path, case_insensitive: bool, out: &mut Vec<PatternSpec>) -> Result<()> {
    let text = std::fs::read(path).with_context(|| format!("cannot read exclude file {}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| anyhow!("{}: exclude file is not UTF-8", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches([' ', '\t', '\r']);
        if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        out.push(PatternSpec {
            pattern: line.to_string(),
            origin: format!("{}:{}", path.display(), i + 1),
            case_insensitive,
        });
    }
    Ok(())
}

fn specs(option: &str, patterns: &[String], case_insensitive: bool) -> Vec<PatternSpec> {
    patterns.iter().map(|p| PatternSpec { pattern: p.clone(), origin: option.to_string(), case_insensitive }).collect()
}

/// Compiles `--exclude`-style patterns: exclude files first, in the order
/// given, then the patterns on the command line, so a command-line `!`
/// pattern can re-include what a file excludes.
pub fn pattern_set(files: &[PathBuf], ifiles: &[PathBuf], patterns: &[(&str, &[String], bool)]) -> Result<PatternSet> {
    let mut all = Vec::new();
    for f in files {
        read_pattern_file(f, false, &mut all)?;
    }
    for f in ifiles {
        read_pattern_file(f, true, &mut all)?;
    }
    for (option, list, ci) in patterns {
        let given = specs(option, list, *ci);
        // A bad pattern on the command line is a usage error (exit 2), as a
        // bad value of any option is; one in a file is the file's (exit 1).
        PatternSet::new(given.clone()).map_err(|e| super::usage(e.to_string()))?;
        all.extend(given);
    }
    Ok(PatternSet::new(all)?)
}

/// The excludes of `arc backup`.
pub fn backup_excludes(a: &BackupArgs) -> Result<Excludes> {
    let patterns = pattern_set(
        &a.exclude_files,
        &a.iexclude_files,
        &[("--exclude", &a.excludes, false), ("--iexclude", &a.iexcludes, true)],
    )?;
    let if_present = a
        .exclude_if_present
        .iter()
        .map(|s| match s.split_once(':') {
            Some((name, content)) => IfPresent { name: name.to_string(), content: Some(content.to_string()) },
            None => IfPresent { name: s.clone(), content: None },
        })
        .collect::<Vec<_>>();
    if let Some(p) = if_present.iter().find(|p| p.name.is_empty() || p.name.contains('/')) {
        return Err(anyhow!("--exclude-if-present {:?}: give a file name (no /), e.g. .nobackup", p.name));
    }
    Ok(Excludes {
        patterns,
        caches: a.exclude_caches,
        if_present,
        larger_than: a.exclude_larger_than,
        one_file_system: a.one_file_system,
    })
}

/// The paths of `--files-from` (one a line; blank lines and `#` comments
/// skipped) and `--files-from0` (NUL-separated, taken verbatim).
pub fn files_from(lines: &[PathBuf], nul: &[PathBuf]) -> Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let read = |p: &Path| -> Result<Vec<u8>> {
        if p == Path::new("-") {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            return Ok(buf);
        }
        std::fs::read(p).with_context(|| format!("cannot read file list {}", p.display()))
    };
    for f in lines {
        for line in read(f)?.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            out.push(PathBuf::from(std::ffi::OsStr::from_bytes(line.trim_ascii_end())));
        }
    }
    for f in nul {
        for name in read(f)?.split(|&b| b == 0) {
            if !name.is_empty() {
                out.push(PathBuf::from(std::ffi::OsStr::from_bytes(name)));
            }
        }
    }
    Ok(out)
}
