//! `arc completion SHELL` and `arc man`: generated from the same clap
//! definitions that parse the command line, so they never drift from it.

use anyhow::{anyhow, Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionArgs, ManArgs};

pub fn completion(a: CompletionArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "arc", &mut std::io::stdout());
    Ok(0)
}

pub fn man(a: ManArgs) -> Result<u8> {
    let cmd = Cli::command();
    if let Some(dir) = a.dir {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        clap_mangen::generate_to(cmd, &dir).with_context(|| format!("cannot write pages into {}", dir.display()))?;
        return Ok(0);
    }
    let page = match &a.command {
        None => cmd,
        Some(name) => {
            let sub = cmd
                .get_subcommands()
                .find(|c| c.get_name() == name)
                .ok_or_else(|| anyhow!("no command {name:?}; see `arc --help`"))?
                .clone();
            let full: &'static str = Box::leak(format!("arc-{name}").into_boxed_str());
            sub.name(full)
        }
    };
    clap_mangen::Man::new(page).render(&mut std::io::stdout())?;
    Ok(0)
}
