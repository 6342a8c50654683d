//! `--bisect`: when the size limit refuses a rung (at SMTP, or by a size bounce
//! from a later hop), find the real limit by sending messages between the largest
//! accepted and the smallest refused size.

use tokio::sync::mpsc;

use crate::core::probe_id::new_probe_id;
use crate::model::bounce::{BounceAction, BounceReason};
use crate::model::report::{MessageReport, SizeLimit};
use crate::probe::bounces;
use crate::probe::context::Context;
use crate::probe::imap::ImapMailbox;
use crate::probe::pop3::Pop3Mailbox;
use crate::probe::smtp;
use crate::probe::wait::Handover;
use crate::probe::watch::{self, Accepted};
use crate::protocol::message::ProbeMessage;

/// Most extra messages bisection may send.
const MAX_BISECT_SENDS: u32 = 12;
/// Stop when the interval is this narrow relative to its upper end.
const BISECT_PRECISION: f64 = 0.025;

/// Find the real size limit between the largest accepted and the smallest rung
/// refused for size. Accepted bisection messages are delivered: they are waited
/// for and their ids added to `sent_ids` so that cleanup removes them.
pub(crate) async fn bisect_size_limit(
    ctx: &Context,
    reports: &[MessageReport],
    advertised: Option<u64>,
    sent_ids: &mut Vec<String>,
) -> Option<SizeLimit> {
    let refused_for_size =
        |m: &&MessageReport| m.smtp.error.as_ref().is_some_and(|e| e.is_size_refusal());
    let refused = reports
        .iter()
        .filter(|m| refused_for_size(m) || bounces::bounced_for_size(m))
        .min_by_key(|m| m.size_bytes)?;
    // A later hop that bounces for size: every accepted probe must be waited for
    // to know whether it bounces too.
    let after_acceptance = !refused_for_size(&refused);
    let accepted = reports
        .iter()
        .filter(|m| m.smtp.ok && !bounces::bounced_for_size(m) && m.size_bytes < refused.size_bytes)
        .max_by_key(|m| m.size_bytes)?;
    let s = &ctx.settings;
    let (mut lo, mut lo_bytes) = (accepted.size_bytes, accepted.encoded_bytes);
    let (mut hi, mut hi_bytes) = (refused.size_bytes, refused.encoded_bytes);
    let mut sends = 0;
    let mut delivered = Vec::new();
    while sends < MAX_BISECT_SENDS
        && (hi_bytes - lo_bytes) as f64 / hi_bytes as f64 > BISECT_PRECISION
        && hi - lo > 1
    {
        let size = lo + (hi - lo) / 2;
        let (from, to) = (s.target.from.clone(), s.target.to.clone());
        let message = tokio::task::spawn_blocking(move || {
            ProbeMessage::build(&new_probe_id(), &from, &to, size)
        })
        .await
        .ok()?;
        sends += 1;
        let outcome = smtp::send(ctx, &message).await;
        if let Some(accepted_at) = outcome.accepted_at
            && after_acceptance
        {
            let accepted = Accepted {
                index: 0,
                expected: message.expected.clone(),
                accepted_at,
                encoded_len: message.encoded_len(),
            };
            let result = bounces::deliver_or_bounce(ctx, accepted).await;
            let bounced = result.as_ref().and_then(|r| r.bounce.as_ref());
            // Cleanup removes it, or the notification about it.
            sent_ids.push(message.probe_id().to_string());
            if bounced
                .is_some_and(|b| b.reason == BounceReason::Size && b.action == BounceAction::Failed)
            {
                (hi, hi_bytes) = (size, message.encoded_len());
            } else {
                if result.is_some_and(|r| r.ok) {
                    (lo, lo_bytes) = (size, message.encoded_len());
                } else {
                    break; // neither delivered nor refused for size: stop here
                }
            }
        } else if let Some(accepted_at) = outcome.accepted_at {
            (lo, lo_bytes) = (size, message.encoded_len());
            sent_ids.push(message.probe_id().to_string());
            delivered.push(Accepted {
                index: delivered.len(),
                expected: message.expected.clone(),
                accepted_at,
                encoded_len: message.encoded_len(),
            });
        } else if refused_for_size(&&MessageReport {
            smtp: outcome.result,
            ..refused.clone()
        }) {
            (hi, hi_bytes) = (size, message.encoded_len());
        } else {
            break; // another failure: the interval found so far stands
        }
    }
    // Wait until the accepted ones are in the mailbox so that cleanup finds them.
    if !delivered.is_empty() {
        let (tx, rx) = mpsc::unbounded_channel();
        for a in delivered {
            let _ = tx.send(a);
        }
        drop(tx);
        if s.target.imap.is_some() {
            watch::watch::<ImapMailbox>(ctx, rx, &Handover::new(false)).await;
        } else if s.target.pop3.is_some() {
            watch::watch::<Pop3Mailbox>(ctx, rx, &Handover::new(false)).await;
        }
    }
    let estimate = lo_bytes + (hi_bytes - lo_bytes) / 2;
    Some(SizeLimit {
        largest_accepted_bytes: lo_bytes,
        smallest_refused_bytes: hi_bytes,
        estimate_bytes: estimate,
        sends,
        advertised_bytes: advertised.filter(|a| *a > 0),
        advertised_disagrees: advertised
            .filter(|a| *a > 0)
            .is_some_and(|a| (a as f64 - estimate as f64).abs() / estimate as f64 > 0.05),
    })
}
