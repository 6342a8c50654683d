//! `mailprobe cleanup`: delete leftover probe messages older than `--older-than`
//! (in INBOX, Junk and `--folders`, with the notifications about them) over IMAP
//! and POP3. Its report (what was deleted, what failed) goes through the
//! same outputs as every other; on a terminal's human format it lists the deletions.

use std::time::{Instant, SystemTime};

use crate::analysis::diagnosis;
use crate::app::cli::CleanupArgs;
use crate::app::output::Outputs;
use crate::app::{profile, usage_error};
use crate::core::units;
use crate::model::report::{Cleanup, Report};
use crate::probe::sweep;
use crate::report::Format;

/// Run `mailprobe cleanup`; returns the exit code.
pub(crate) async fn run(args: CleanupArgs) -> i32 {
    let outputs = match Outputs::new(&args.output, Vec::new()) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    // The human form is the list of deletions, printed here.
    let listing = !args.output.quiet && args.output.format == Format::Human;
    let mut outputs = if listing {
        outputs.without_stdout()
    } else {
        outputs
    };
    let settings = match profile::resolve_mailbox(&args.mailbox) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    if settings.target.imap.is_none() && settings.target.pop3.is_none() {
        return usage_error("cleanup needs --imap and/or --pop3 (or a profile with them)");
    }
    let min_age = match units::parse_duration(&args.older_than) {
        Ok(d) => d,
        Err(e) => return usage_error(&e),
    };
    outputs.protect(settings.target.secrets());
    let started_at = SystemTime::now();
    let started = Instant::now();
    let mut target = settings.report_target();
    // Nothing is sent: no SMTP endpoint, no ladder.
    target.smtp = String::new();
    target.sizes = Vec::new();
    let done = match sweep::sweep(settings, min_age, outputs.transcript()).await {
        Ok(done) => done,
        Err(e) => return outputs.finish(Err(e.to_string()), |_| {}),
    };
    for e in &done.errors {
        eprintln!("mailprobe: cleanup: {}", outputs.scrub(&e.to_string()));
    }
    let cleanup = Cleanup {
        deleted: done.deleted.len(),
        leftovers: Vec::new(),
        errors: done.errors,
        notifications_deleted: done.notifications,
        ..Cleanup::default()
    };
    let mut report = Report::new(target, started_at, started, Vec::new(), cleanup);
    diagnosis::apply_sweep(&mut report);
    outputs.finish(Ok(report), |report| {
        if listing {
            for (protocol, id) in &done.deleted {
                println!("deleted {id} ({})", protocol.label());
            }
            if report.cleanup.notifications_deleted > 0 {
                println!(
                    "deleted {} notification(s) (bounces, delays) about probe messages",
                    report.cleanup.notifications_deleted
                );
            }
            println!(
                "{} leftover probe message(s) deleted; nothing else was touched",
                report.cleanup.deleted
            );
        }
    })
}
