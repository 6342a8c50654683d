//! The command line: clap arguments, profile loading, each command's entry,
//! serve's HTTP side, progress, completions, writing outputs and exit codes. The
//! only layer that touches clap, the environment, stdout/stderr and exit codes.

pub(crate) mod check;
pub(crate) mod cleanup;
pub mod cli;
pub(crate) mod completions;
pub(crate) mod output;
pub mod profile;
pub(crate) mod progress;
pub mod rounds;
pub(crate) mod serve;
pub(crate) mod token;
pub(crate) mod verify;

use cli::{Cli, Command};

/// Exit code when the tool could not run at all (bad usage, bad profile, missing secret).
pub const EXIT_UNKNOWN: i32 = 3;

/// Run the command and return the process exit code. Errors that stop the run are
/// printed to stderr with what to do; everything else is in the report.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Completions(args) => completions::run_completions(&args),
        Command::Man => completions::run_man(),
        Command::Cleanup(args) => cleanup::run(args).await,
        Command::Check(args) => check::run(args).await,
    }
}

/// Say why the tool cannot run; the exit code for it.
pub(crate) fn usage_error(message: &str) -> i32 {
    eprintln!("mailprobe: {message}");
    EXIT_UNKNOWN
}
