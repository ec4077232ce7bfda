//! `completions` and `man`: generated from the same clap definition as the parser, so they
//! can never disagree with the flags the binary takes.

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `s3invbackup completions bash > /etc/bash_completion.d/s3invbackup`
    pub shell: Shell,
}

pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    let mut out = super::output(None)?;
    clap_complete::generate(args.shell, &mut cmd, "s3invbackup", &mut out);
    out.flush()?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write s3invbackup.1 and one s3invbackup-COMMAND.1 per subcommand here (as git's pages
    /// are organised) instead of the top page to standard output
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

pub fn man(args: &ManArgs, cmd: clap::Command) -> Result<()> {
    let cmd = cmd.name("s3invbackup");
    let Some(dir) = &args.dir else {
        let mut out = super::output(None)?;
        clap_mangen::Man::new(cmd).render(&mut out)?;
        out.flush()?;
        return Ok(());
    };
    let mut pages = vec![("s3invbackup".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("s3invbackup-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name.clone()).bin_name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

use std::io::Write as _;
