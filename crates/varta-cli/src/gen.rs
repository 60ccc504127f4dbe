//! `varta completions SHELL` and `varta man`: generated from the same
//! clap definition the parser uses, so they never drift from it.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::{fail, finish_output, Cli, EXIT_OK};

/// Arguments of `varta completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `varta man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write varta.1 and one page per subcommand (varta-status.1, …) into
    /// this directory instead of printing varta.1 on standard output.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`.
pub fn completions(args: &CompletionsArgs) -> u8 {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "varta", &mut buf);
    finish_output(io::stdout().lock().write_all(&buf))
}

/// Prints the top man page, or writes every page into `--out`.
pub fn man(args: &ManArgs) -> u8 {
    let cmd = Cli::command();
    match &args.out {
        Some(dir) => match clap_mangen::generate_to(cmd, dir) {
            Ok(()) => EXIT_OK,
            Err(e) => fail(format_args!(
                "cannot write the man pages into {}: {e}",
                dir.display()
            )),
        },
        None => {
            let mut buf = Vec::new();
            if let Err(e) = clap_mangen::Man::new(cmd).render(&mut buf) {
                return fail(format_args!("rendering the man page: {e}"));
            }
            finish_output(io::stdout().lock().write_all(&buf))
        }
    }
}
