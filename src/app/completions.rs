//! Shell completions and the man page, generated from the clap definition of the
//! command line (so they never drift from it).

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::app::cli::{Cli, CompletionsArgs};

/// The completion script for `shell`.
pub(crate) fn completion_script(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "mailprobe", &mut out);
    out
}

/// The man page (roff) of `mailprobe` with a section per subcommand.
pub(crate) fn man_page() -> std::io::Result<Vec<u8>> {
    let command = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        if name == "help" {
            continue;
        }
        let _ = writeln!(out, ".SH \"MAILPROBE {}\"", name.to_uppercase());
        let man = clap_mangen::Man::new(sub.clone());
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
    }
    Ok(out)
}

fn print(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|_| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mailprobe: cannot write: {e}");
            crate::app::EXIT_UNKNOWN
        }
    }
}

/// `mailprobe completions SHELL`.
pub(crate) fn run_completions(args: &CompletionsArgs) -> i32 {
    print(&completion_script(args.shell))
}

/// `mailprobe man`.
pub(crate) fn run_man() -> i32 {
    match man_page() {
        Ok(page) => print(&page),
        Err(e) => {
            eprintln!("mailprobe: cannot render the man page: {e}");
            crate::app::EXIT_UNKNOWN
        }
    }
}
