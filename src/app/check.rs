//! `mailprobe check`: resolve the settings, run the check (with rounds, rate,
//! baseline, or through a domain's exchangers), write the outputs and the
//! transcript, and turn the verdict into the exit code.

use std::sync::Arc;

use crate::app::cli::CheckArgs;
use crate::app::output::{self, Destination};
use crate::app::rounds::{check_recorded, extra_outputs};
use crate::app::{EXIT_UNKNOWN, profile, progress, usage_error};
use crate::core::secret::{scrub, scrub_value};
use crate::io::transcript::Transcript;
use crate::probe::domain::{self, DEFAULT_MX_PORT, Domain};
use crate::protocol::dns::parse_resolver;
use crate::report::Format;

/// Run `mailprobe check`; returns the exit code.
pub async fn run(args: CheckArgs) -> i32 {
    let mut outputs: Vec<(Format, Destination)> = Vec::new();
    if !args.quiet {
        outputs.push((args.format, Destination::Stdout));
    }
    for spec in &args.output {
        match output::parse_output(spec) {
            Ok(o) => outputs.push(o),
            Err(e) => return usage_error(&e),
        }
    }
    outputs.extend(extra_outputs(&args.rounds));
    if args.domain.is_some() {
        return match run_domain(&args).await {
            Ok(report) => match output::write_outputs(&report, &outputs) {
                Ok(()) => report.verdict.exit_code(),
                Err(e) => usage_error(&e),
            },
            Err(e) => usage_error(&e),
        };
    }
    let settings = match profile::resolve(&args) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    // A server may echo a password: no report or transcript ever shows one.
    let secrets = settings.target.secrets();
    let transcript = args
        .transcript
        .clone()
        .map(|path| (path, Transcript::new(secrets.clone())));
    let show_progress = progress::wanted(args.quiet);
    let expected_bytes = progress::expected_bytes(&settings);
    let check = check_recorded(
        settings,
        &args.rounds,
        transcript.as_ref().map(|(_, t)| Arc::clone(t)),
    );
    let outcome = progress::track(show_progress, expected_bytes, check).await;
    if let Some((path, t)) = &transcript
        && let Err(e) = output::write_transcript(t, path)
    {
        eprintln!("mailprobe: {e}");
        return EXIT_UNKNOWN;
    }
    match outcome {
        Ok(mut report) => {
            scrub_value(&mut report, &secrets);
            if let Err(e) = output::write_outputs(&report, &outputs) {
                eprintln!("mailprobe: {e}");
                return EXIT_UNKNOWN;
            }
            report.verdict.exit_code()
        }
        Err(e) => usage_error(&scrub(&e.to_string(), &secrets)),
    }
}

/// `check --domain`: validate the domain and the flags before asking DNS, then
/// probe the domain's exchangers. `Err` is a could-not-run error (exit 3).
async fn run_domain(args: &CheckArgs) -> Result<crate::model::report::Report, String> {
    let name = args
        .domain
        .as_deref()
        .unwrap_or_default()
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if name.is_empty()
        || name.contains(|c: char| c.is_whitespace() || "@/:[]".contains(c))
        || !name.contains('.')
    {
        return Err(format!(
            "--domain {name:?} is not a mail domain like example.com"
        ));
    }
    let port = args.mx_port.unwrap_or(DEFAULT_MX_PORT);
    let resolver = args.resolver.as_deref().map(parse_resolver).transpose()?;

    // Validate everything else before asking DNS; SMTP to an MX has no AUTH.
    let mut base_args = args.clone();
    base_args.domain = None;
    base_args.no_smtp_auth = true;
    base_args.smtp = Some(format!("smtp://{name}:{port}"));
    if !retrieval_configured(args)? {
        base_args.smtp_only = true;
    }
    let base = profile::resolve(&base_args)?;
    let target = Domain {
        name,
        port,
        resolver,
    };
    domain::run(&target, base, None).await
}

/// Whether IMAP or POP3 is configured (flags or profile) and not turned off.
fn retrieval_configured(args: &CheckArgs) -> Result<bool, String> {
    if args.smtp_only {
        return Ok(false);
    }
    if args.imap.is_some() || args.pop3.is_some() {
        return Ok(true);
    }
    Ok(match &args.profile {
        Some(path) => {
            let p = profile::Profile::load(path)?;
            p.imap.is_some() || p.pop3.is_some()
        }
        None => false,
    })
}
