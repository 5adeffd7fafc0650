use std::cell::RefCell;

use anyhow::{anyhow, Context, Result};
use arc_engine::format::config::{ChunkerParams, ProtocolSettings};
use arc_engine::repo::InitOptions;
use arc_engine::Repository;

use super::Env;
use crate::args::{EncryptionMode, InitArgs};
use arc_engine::format::key_file::Protection;

/// `init --json` (docs/json.md, `init`).
#[derive(serde::Serialize)]
struct InitReport<'a> {
    repository: &'a std::path::Path,
    id: arc_engine::Id,
    config: &'a arc_engine::format::config::Config,
}

fn u32_size(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).with_context(|| format!("{what} {v} is too large"))
}

pub fn options(a: &InitArgs) -> Result<InitOptions> {
    let mut opts = InitOptions::default();
    let d = opts.file_chunker;
    if a.chunk_min.is_some() || a.chunk_avg.is_some() || a.chunk_max.is_some() {
        opts.file_chunker = ChunkerParams::new(
            u32_size(a.chunk_min.unwrap_or(u64::from(d.min_size)), "--chunk-min")?,
            u32_size(a.chunk_avg.unwrap_or(u64::from(d.avg_size)), "--chunk-avg")?,
            u32_size(a.chunk_max.unwrap_or(u64::from(d.max_size)), "--chunk-max")?,
        )?;
    }
    let d = opts.stream_chunker;
    if a.stream_chunk_min.is_some() || a.stream_chunk_avg.is_some() || a.stream_chunk_max.is_some() {
        opts.stream_chunker = ChunkerParams::new(
            u32_size(a.stream_chunk_min.unwrap_or(u64::from(d.min_size)), "--stream-chunk-min")?,
            u32_size(a.stream_chunk_avg.unwrap_or(u64::from(d.avg_size)), "--stream-chunk-avg")?,
            u32_size(a.stream_chunk_max.unwrap_or(u64::from(d.max_size)), "--stream-chunk-max")?,
        )?;
    }
    opts.compression_level = a.compression;
    opts.stream_compression_level = a.stream_compression;
    if let Some(p) = a.pack_size {
        opts.pack_size = u32_size(p, "--pack-size")?;
    }
    if let Some(f) = a.frame_size {
        opts.frame_size = u32_size(f, "--frame-size")?;
    }
    if let Some(g) = a.prune_grace {
        opts.protocol = Some(ProtocolSettings::with_grace(g));
    }
    Ok(opts)
}

/// `--copy-chunker-params-from REPO`: REPO's chunker sizes and content
/// keys (crypto.md §2.4), read before anything is created.
fn copy_chunker_params(
    opts: &mut InitOptions,
    from: &std::path::Path,
    env_file: Option<&std::path::Path>,
) -> Result<()> {
    let failure: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let local_key = super::parse_location(from).ok().and_then(|l| l.local_path().and_then(super::default_key_for));
    let source = || {
        crate::passphrase::existing_source(local_key.as_deref()).map_err(|e| {
            *failure.borrow_mut() = Some(e);
            arc_engine::Error::PassphraseRequired
        })
    };
    let access = super::OtherAccess { env_file: env_file.map(|p| (p, "--from-env-file")), ..Default::default() };
    let opened = super::open_other(from, "--copy-chunker-params-from", Some(&source), &access);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let src = opened?;
    let Some(keys) = src.keys() else {
        return Err(anyhow!(
            "--copy-chunker-params-from {}: a format v{} repository names chunks by plain BLAKE3, which a v2 \
             repository never does; `arc copy --from-repo {}` migrates it (re-cutting its content once)",
            from.display(),
            src.config().version,
            from.display()
        ));
    };
    opts.file_chunker = src.config().file_chunker;
    opts.stream_chunker = src.config().stream_chunker;
    opts.content_keys = Some(keys.content_keys());
    Ok(())
}

pub fn run(env: &Env, a: InitArgs) -> Result<u8> {
    let mut opts = options(&a)?;
    // What can be refused without the passphrase is refused before it is
    // asked for (twice, on a terminal) and stretched.
    opts.validate().with_context(|| format!("cannot create repository at {}", env.shown()))?;
    if let Some(path) = env.location.local_path() {
        if path.join("config").exists() {
            return Err(arc_engine::Error::AlreadyExists { path: path.to_path_buf() }.into());
        }
    }
    if let Some(from) = &a.copy_chunker_params_from {
        copy_chunker_params(&mut opts, from, a.from_env_file.as_deref())?;
    }
    if a.encryption == EncryptionMode::Passphrase {
        opts.protection = Protection::passphrase(crate::passphrase::new("ARC", None)?);
    }
    let repo = if env.location.is_remote() {
        super::remote::init(&env.location, &opts, super::cache_root())?
    } else {
        Repository::init_local(&env.repo_path, &opts)
            .with_context(|| format!("cannot create repository at {}", env.repo_path.display()))?
    };
    if env.json {
        super::print_json(&InitReport { repository: &env.repo_path, id: repo.config().id, config: repo.config() })?;
    } else {
        outln!(
            "created arc repository {} at {}{}",
            repo.config().id.short(),
            env.shown(),
            if a.encryption == EncryptionMode::None { " (unencrypted: --encryption none)" } else { ", encrypted" }
        )?;
        if let Some(from) = &a.copy_chunker_params_from {
            outln!(
                "content is named and cut as in {}: `arc copy` between the two sends only chunks the target lacks",
                from.display()
            )?;
        }
    }
    Ok(0)
}
