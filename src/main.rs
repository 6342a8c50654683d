//! The `mailprobe` binary: parse the command line, run it on one thread, exit
//! with its code.

use clap::Parser;

fn main() {
    // A usage error (unknown flag, bad value) is "could not run" (3, UNKNOWN to a
    // monitoring system), not clap's 2, which would read as CRITICAL.
    let cli = match mailprobe::app::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() {
                mailprobe::app::EXIT_UNKNOWN
            } else {
                0 // --help, --version
            });
        }
    };
    // One thread: the probe's work is waiting on the server; worker threads only
    // add hand-offs between them (measured 10-15 % slower sending).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailprobe: cannot start the async runtime: {e}");
            std::process::exit(mailprobe::app::EXIT_UNKNOWN);
        }
    };
    let code = runtime.block_on(mailprobe::app::run(cli));
    std::process::exit(code);
}
