//! `mailprobe cleanup`: delete leftover probe messages, by probe id and age, over
//! IMAP and POP3. Only messages carrying a well-formed probe id are candidates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Settings;
use crate::error::ProbeError;
use crate::message::probe_id_time_ms;
use crate::phase::Protocol;
use crate::prober::imap::ImapMailbox;
use crate::prober::pop3::Pop3Mailbox;
use crate::prober::{self, Context, Wanted};

/// What one sweep did, per protocol.
#[derive(Debug, Default)]
pub struct Sweep {
    pub deleted: Vec<(Protocol, String)>,
    pub errors: Vec<ProbeError>,
}

/// Whether a probe id is at least `min_age` old at `now`.
pub fn old_enough(id: &str, min_age: Duration, now: SystemTime) -> bool {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    probe_id_time_ms(id).is_some_and(|sent| now_ms.saturating_sub(sent) >= min_age.as_millis())
}

pub async fn sweep(settings: Settings, min_age: Duration) -> Result<Sweep, ProbeError> {
    let ctx = Context::new(settings)?;
    let now = SystemTime::now();
    let select = |id: &str| old_enough(id, min_age, now);
    let mut result = Sweep::default();
    if ctx.settings.imap.is_some() {
        match prober::delete_matching::<ImapMailbox>(&ctx, Wanted::AllProbes, &select).await {
            Ok(ids) => result
                .deleted
                .extend(ids.into_iter().map(|id| (Protocol::Imap, id))),
            Err(e) => result.errors.push(e),
        }
    }
    if ctx.settings.pop3.is_some() {
        match prober::delete_matching::<Pop3Mailbox>(&ctx, Wanted::AllProbes, &select).await {
            Ok(ids) => result
                .deleted
                .extend(ids.into_iter().map(|id| (Protocol::Pop3, id))),
            Err(e) => result.errors.push(e),
        }
    }
    Ok(result)
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
