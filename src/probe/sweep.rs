//! Deleting probe messages after the fact: `mailprobe cleanup` sweeps leftovers
//! by probe id and age over IMAP (INBOX, Junk and watched folders) and POP3 (only
//! messages carrying a well-formed probe id are candidates) with the
//! notifications about them, and `serve` deletes the late arrivals of a check it
//! answered at its deadline.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::error::{ErrorKind, ProbeError};
use crate::core::phase::{Phase, Protocol};
use crate::core::probe_id::probe_id_time_ms;
use crate::io::transcript::Transcript;
use crate::model::report::Report;
use crate::probe::bounces;
use crate::probe::context::Context;
use crate::probe::imap::ImapMailbox;
use crate::probe::pop3::Pop3Mailbox;
use crate::probe::settings::Settings;
use crate::probe::watch::{self, Wanted};

/// What one sweep did, per protocol.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    pub(crate) deleted: Vec<(Protocol, String)>,
    /// Notifications (bounces, delays) about probe messages that were deleted.
    pub(crate) notifications: usize,
    pub(crate) errors: Vec<ProbeError>,
}

/// Whether a probe id is at least `min_age` old at `now`.
pub(crate) fn old_enough(id: &str, min_age: Duration, now: SystemTime) -> bool {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    probe_id_time_ms(id).is_some_and(|sent| now_ms.saturating_sub(sent) >= min_age.as_millis())
}

/// Delete the probe messages at least `min_age` old, recording into `transcript`.
pub(crate) async fn sweep(
    settings: Settings,
    min_age: Duration,
    transcript: Option<Arc<Transcript>>,
) -> Result<Sweep, ProbeError> {
    let ctx = Context::new(settings, transcript)?;
    let now = SystemTime::now();
    let select = |id: &str| old_enough(id, min_age, now);
    let mut result = Sweep::default();
    if ctx.settings.target.imap.is_some() {
        let (deleted, notifications) =
            bounces::imap_cleanup(&ctx, None, Wanted::AllProbes, &select).await;
        match deleted {
            Ok(ids) => result
                .deleted
                .extend(ids.into_iter().map(|id| (Protocol::Imap, id))),
            Err(e) => result.errors.push(e),
        }
        match notifications {
            Ok(n) => result.notifications = n,
            Err(e) => result.errors.push(e),
        }
    }
    if ctx.settings.target.pop3.is_some() {
        match watch::delete_matching::<Pop3Mailbox>(&ctx, Wanted::AllProbes, &select).await {
            Ok(ids) => result
                .deleted
                .extend(ids.into_iter().map(|id| (Protocol::Pop3, id))),
            Err(e) => result.errors.push(e),
        }
    }
    Ok(result)
}

/// Probe messages of a finished check that may still be (or arrive) in the
/// mailbox: its leftovers, and messages whose DATA timed out or was cut off (the
/// server may have accepted them all the same; a refusal is definite).
pub(crate) fn unconfirmed_ids(report: &Report) -> Vec<String> {
    let mut ids = report.cleanup.leftovers.clone();
    for m in &report.messages {
        let maybe_accepted = !m.smtp.ok
            && m.smtp
                .error
                .as_ref()
                .is_some_and(|e| e.phase == Some(Phase::Data) && e.kind != ErrorKind::Rejected);
        if maybe_accepted && !ids.contains(&m.probe_id) {
            ids.push(m.probe_id.clone());
        }
    }
    ids
}

/// Delete the probe messages `ids` a check left behind as they arrive, through
/// IMAP and POP3, for at most `patience`. Nothing else is touched.
pub(crate) async fn late_cleanup(settings: Settings, mut ids: Vec<String>, patience: Duration) {
    let Ok(ctx) = Context::new(settings, None) else {
        return;
    };
    let deadline = Instant::now() + patience;
    let rounds = patience.as_secs() + 2;
    for _ in 0..rounds {
        if ids.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut deleted = Vec::new();
        if ctx.settings.target.imap.is_some()
            && let Ok(d) = watch::cleanup::<ImapMailbox>(&ctx, &wanted).await
        {
            deleted.extend(d);
        }
        if ctx.settings.target.pop3.is_some()
            && let Ok(d) = watch::cleanup::<Pop3Mailbox>(&ctx, &wanted).await
        {
            deleted.extend(d);
        }
        ids.retain(|id| !deleted.contains(id));
    }
    if !ids.is_empty() {
        eprintln!(
            "mailprobe: {} probe message(s) never arrived to be deleted: {}; `mailprobe cleanup` removes them later",
            ids.len(),
            ids.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_filter_uses_the_time_in_the_probe_id() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000_000);
        let hour = Duration::from_secs(3600);
        assert!(old_enough("mailprobe-1000-ab", Duration::from_secs(1), now));
        assert!(!old_enough("mailprobe-9999000-ab", hour, now));
        assert!(!old_enough("not-a-probe", Duration::ZERO, now));
    }
}
