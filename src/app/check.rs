//! `mailprobe check`: resolve the settings, run the check (with rounds, rate,
//! baseline, or through a domain's exchangers) and hand the report to the
//! outputs; the verdict is the exit code.

use crate::app::cli::CheckArgs;
use crate::app::output::Outputs;
use crate::app::rounds::{check_recorded, extra_outputs};
use crate::app::{profile, progress, usage_error};
use crate::model::report::Report;
use crate::probe::domain::{self, DEFAULT_MX_PORT, Domain};
use crate::protocol::dns::parse_resolver;

/// Run `mailprobe check`; returns the exit code.
pub(crate) async fn run(args: CheckArgs) -> i32 {
    let mut outputs = match Outputs::new(&args.output, extra_outputs(&args.rounds)) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    if args.domain.is_some() {
        let outcome = run_domain(&args, &mut outputs).await;
        return outputs.finish(outcome, |_| {});
    }
    let settings = match profile::resolve(&args) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    // A server may echo a password: no report or transcript ever shows one.
    outputs.protect(settings.target.secrets());
    let show_progress = progress::wanted(args.output.quiet);
    let expected_bytes = progress::expected_bytes(&settings);
    let check = check_recorded(settings, &args.rounds, outputs.transcript());
    let outcome = progress::track(show_progress, expected_bytes, check).await;
    outputs.finish(outcome.map_err(|e| e.to_string()), |_| {})
}

/// `check --domain`: validate the domain and the flags before asking DNS, then
/// probe the domain's exchangers. `Err` is a could-not-run error (exit 3).
async fn run_domain(args: &CheckArgs, outputs: &mut Outputs) -> Result<Report, String> {
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
    outputs.protect(base.target.secrets());
    let target = Domain {
        name,
        port,
        resolver,
    };
    domain::run(&target, base, outputs.transcript()).await
}

/// Whether IMAP or POP3 is configured (flags or profile) and not turned off.
fn retrieval_configured(args: &CheckArgs) -> Result<bool, String> {
    if args.smtp_only {
        return Ok(false);
    }
    if args.mailbox.imap.is_some() || args.mailbox.pop3.is_some() {
        return Ok(true);
    }
    Ok(match &args.mailbox.profile {
        Some(path) => {
            let p = profile::Profile::load(path)?;
            p.imap.is_some() || p.pop3.is_some()
        }
        None => false,
    })
}
