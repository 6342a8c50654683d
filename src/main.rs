use clap::Parser;

fn main() {
    let cli = mailprobe::cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailprobe: cannot start the async runtime: {e}");
            std::process::exit(mailprobe::EXIT_UNKNOWN);
        }
    };
    let code = runtime.block_on(mailprobe::run(cli));
    std::process::exit(code);
}
