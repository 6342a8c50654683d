//! `mailprobe cleanup`: delete leftover probe messages older than `--older-than`
//! (and the notifications about them) over IMAP and POP3, and say what was deleted.

use crate::app::cli::CleanupArgs;
use crate::app::{profile, usage_error};
use crate::core::units;
use crate::probe::sweep;

/// Run `mailprobe cleanup`; returns the exit code.
pub async fn run(args: CleanupArgs) -> i32 {
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
    match sweep::sweep(settings, min_age).await {
        Ok(done) => {
            for (protocol, id) in &done.deleted {
                println!("deleted {id} ({})", protocol.label());
            }
            if done.notifications > 0 {
                println!(
                    "deleted {} notification(s) (bounces, delays) about probe messages",
                    done.notifications
                );
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
