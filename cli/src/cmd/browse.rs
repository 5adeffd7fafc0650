//! Reading a snapshot without restoring it: ls, cat, dump.

use std::io::{IsTerminal, Write};

use anyhow::{anyhow, Context, Result};
use arc_engine::format::tree::{Node, NodeKind};
use arc_engine::ops::browse;

use super::{split_target, usage, Env};
use crate::args::{CatArgs, DumpArgs, LsArgs};

fn kind_char(k: NodeKind) -> char {
    match k {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::File | NodeKind::Hardlink => '-',
    }
}

fn mode_string(n: &Node) -> String {
    let m = n.mode;
    let mut s = String::with_capacity(10);
    s.push(kind_char(n.kind));
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (bit, c) in bits {
        s.push(if m & bit != 0 { c } else { '-' });
    }
    s
}

fn time_string(t: arc_engine::format::tree::Timestamp) -> String {
    chrono::DateTime::from_timestamp(t.sec, t.nsec)
        .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| t.sec.to_string())
}

/// One entry of `ls --json` (docs/json.md, `ls`): one line each, so a
/// listing of millions of entries is never held in memory.
#[derive(serde::Serialize)]
struct NodeLine {
    /// restic's `struct_type`, as `message_type` like arc's other lines.
    message_type: &'static str,
    path: String,
    name: String,
    #[serde(rename = "type")]
    kind: NodeKind,
    mode: u32,
    permissions: String,
    uid: u32,
    gid: u32,
    user: String,
    group: String,
    size: u64,
    mtime: Option<String>,
    ctime: Option<String>,
    inode: u64,
    links: u32,
    target: Option<String>,
    rdev: u64,
    xattrs: Vec<String>,
    chunks: usize,
}

impl NodeLine {
    fn new(path: &[u8], n: &Node) -> NodeLine {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let time = |t: arc_engine::format::tree::Timestamp| {
            chrono::DateTime::from_timestamp(t.sec, t.nsec)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        };
        NodeLine {
            message_type: "node",
            path: format!("/{}", lossy(path)),
            name: lossy(&n.name),
            kind: n.kind,
            mode: n.mode,
            permissions: mode_string(n),
            uid: n.uid,
            gid: n.gid,
            user: lossy(&n.user),
            group: lossy(&n.group),
            size: n.size,
            mtime: time(n.mtime),
            ctime: time(n.ctime),
            inode: n.inode,
            links: n.nlink,
            target: (!n.target.is_empty()).then(|| lossy(&n.target)),
            rdev: n.rdev,
            xattrs: n.xattrs.iter().map(|(k, _)| lossy(k)).collect(),
            chunks: n.chunks.len(),
        }
    }
}

pub fn ls(env: &Env, a: LsArgs) -> Result<u8> {
    let repo = env.open_read()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut emit = |p: &[u8], n: &Node| -> arc_engine::Result<()> {
        if env.json {
            serde_json::to_writer(&mut out, &NodeLine::new(p, n))
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
                .map_err(|e| arc_engine::Error::io("<stdout>", e))?;
            return Ok(());
        }
        let mut full = Vec::with_capacity(p.len() + 1);
        full.push(b'/');
        full.extend_from_slice(p);
        // A name with a newline would read as two entries.
        let shown = crate::ui::shown_bytes(&full);
        let res = if a.long {
            let mut line = format!(
                "{} {:>8} {:>8} {:>12} {} {}",
                mode_string(n),
                String::from_utf8_lossy(&n.user).into_owned().chars().take(8).collect::<String>(),
                String::from_utf8_lossy(&n.group).into_owned().chars().take(8).collect::<String>(),
                n.size,
                time_string(n.mtime),
                shown
            );
            if !n.target.is_empty() {
                let arrow = if n.kind == NodeKind::Hardlink { " => /" } else { " -> " };
                line.push_str(&format!("{arrow}{}", crate::ui::shown_bytes(&n.target)));
            }
            writeln!(out, "{line}")
        } else {
            writeln!(out, "{shown}")
        };
        res.map_err(|e| arc_engine::Error::io("<stdout>", e))
    };
    let opts = browse::LsOptions { recursive: a.recursive };
    browse::ls(&repo, &a.snapshot, &a.filter.clone().into(), &a.path, opts, &mut emit)?;
    out.flush()?;
    Ok(0)
}

pub fn cat(env: &Env, a: CatArgs) -> Result<u8> {
    if let Some(path) = &a.extra {
        return Err(usage(format!(
            "arc cat takes one argument, SNAPSHOT:PATH: `arc cat {}:{path}`",
            a.target.trim_end_matches(':')
        )));
    }
    let (spec, path) = split_target(&a.target, false)?;
    let repo = env.open_read()?;
    let mut out = std::io::stdout().lock();
    browse::cat(&repo, &spec, &a.filter.clone().into(), &path, &mut out)?;
    Ok(0)
}

pub fn dump(env: &Env, a: DumpArgs) -> Result<u8> {
    let (spec, path) = split_target(&a.target, true)?;
    if a.output.is_none() && std::io::stdout().is_terminal() {
        return Err(anyhow!("refusing to write a tar archive to a terminal; redirect stdout or use --output FILE"));
    }
    let repo = env.open_read()?;
    // Resolve the path before creating any output file.
    let (snap, _) = browse::resolve(&repo, &spec, &a.filter.clone().into(), &[&path])?;
    let stats = match &a.output {
        Some(file) => {
            let f = std::fs::File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let s = arc_engine::ops::tar::dump_tar(&repo, &snap, &path, &mut w)?;
            w.flush()?;
            s
        }
        None => {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let s = arc_engine::ops::tar::dump_tar(&repo, &snap, &path, &mut w)?;
            w.flush()?;
            s
        }
    };
    if !env.quiet {
        eprintln!("arc: dumped {} entries, {}", stats.entries, crate::ui::size(stats.bytes));
    }
    Ok(0)
}
