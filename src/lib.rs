//! mailprobe: prove a mail server really moves mail.
//!
//! `main.rs` parses arguments and calls [`run`]; tests drive the tool in-process
//! the same way.

pub mod baseline;
pub mod budget;
pub mod check;
pub mod cli;
pub mod completions;
pub mod config;
pub mod diagnosis;
pub mod endpoint;
pub mod error;
pub mod message;
pub mod mx;
pub mod net;
pub mod phase;
pub mod pop3;
pub mod prober;
pub mod progress;
pub mod rate;
pub mod redact;
pub mod reply;
pub mod report;
pub mod rounds;
pub mod serve;
pub mod stability;
pub mod stats;
pub mod sweep;
pub mod tls;
pub mod tls_inspect;
pub mod transcript;
pub mod units;
pub mod verify;

use cli::{Cli, Command};
use report::{Destination, Format};

/// Exit code when the tool could not run at all (bad usage, bad profile, missing secret).
pub const EXIT_UNKNOWN: i32 = 3;

/// Run the command and return the process exit code. Errors that stop the run are
/// printed to stderr with what to do; everything else is in the report.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Verify(args) => rounds::run_verify(args).await,
        Command::Completions(args) => completions::run_completions(&args),
        Command::Man => completions::run_man(),
        Command::Cleanup(args) => {
            let settings = match config::resolve_mailbox(&args.mailbox) {
                Ok(s) => s,
                Err(e) => return usage_error(&e),
            };
            if settings.imap.is_none() && settings.pop3.is_none() {
                return usage_error("cleanup needs --imap and/or --pop3 (or a profile with them)");
            }
            let min_age = match units::parse_duration(&args.older_than) {
                Ok(d) => d,
                Err(e) => return usage_error(&e),
            };
            match sweep::sweep(settings, min_age).await {
                Ok(done) => {
                    for (protocol, id) in &done.deleted {
                        println!("deleted {id} ({})", protocol.label());
                    }
                    for e in &done.errors {
                        eprintln!("mailprobe: cleanup: {e}");
                    }
                    println!(
                        "{} leftover probe message(s) deleted; nothing else was touched",
                        done.deleted.len()
                    );
                    if done.errors.is_empty() { 0 } else { 2 }
                }
                Err(e) => usage_error(&e.to_string()),
            }
        }
        Command::Check(args) => {
            let mut outputs: Vec<(Format, Destination)> = Vec::new();
            if !args.quiet {
                let format = match args.format {
                    cli::Format::Human => Format::Human,
                    cli::Format::Json => Format::Json,
                    cli::Format::Nagios => Format::Nagios,
                    cli::Format::Prometheus => Format::Prometheus,
                    cli::Format::Junit => Format::Junit,
                    cli::Format::Html => Format::Html,
                    cli::Format::Jsonl => Format::Jsonl,
                };
                outputs.push((format, Destination::Stdout));
            }
            for spec in &args.output {
                match report::parse_output(spec) {
                    Ok(o) => outputs.push(o),
                    Err(e) => return usage_error(&e),
                }
            }
            outputs.extend(rounds::extra_outputs(&args.rounds));
            if args.domain.is_some() {
                return match mx::run_domain_check(&args).await {
                    Ok(report) => match report::write_outputs(&report, &outputs) {
                        Ok(()) => report.verdict.exit_code(),
                        Err(e) => usage_error(&e),
                    },
                    Err(e) => usage_error(&e),
                };
            }
            let mut settings = match config::resolve(&args) {
                Ok(s) => s,
                Err(e) => return usage_error(&e),
            };
            // A server may echo a password: no report or transcript ever shows one.
            let secrets = redact::settings_secrets(&settings);
            let transcript = args.transcript.clone().map(|path| {
                let t = transcript::Transcript::new(secrets.clone());
                settings.transcript = Some(std::sync::Arc::clone(&t));
                (path, t)
            });
            let show_progress = progress::wanted(args.quiet);
            let expected_bytes = progress::expected_bytes(&settings);
            let check = rounds::check(settings, &args.rounds);
            let outcome = progress::track(show_progress, expected_bytes, check).await;
            if let Some((path, t)) = &transcript
                && let Err(e) = report::write_transcript(t, path)
            {
                eprintln!("mailprobe: {e}");
                return EXIT_UNKNOWN;
            }
            match outcome {
                Ok(mut report) => {
                    redact::scrub_value(&mut report, &secrets);
                    if let Err(e) = report::write_outputs(&report, &outputs) {
                        eprintln!("mailprobe: {e}");
                        return EXIT_UNKNOWN;
                    }
                    report.verdict.exit_code()
                }
                Err(e) => usage_error(&redact::scrub(&e.to_string(), &secrets)),
            }
        }
    }
}

fn usage_error(message: &str) -> i32 {
    eprintln!("mailprobe: {message}");
    EXIT_UNKNOWN
}
