//! Mail that went elsewhere: messages that bounced or are delayed after SMTP
//! accepted them (cause `bounced` / `deferred` with the reason from the
//! notification), and messages filed into Junk (`delivered_to_junk`).

use super::messages::describe;
use crate::core::units::format_size;
use crate::model::bounce::{Bounce, BounceAction, BounceReason};
use crate::model::diagnosis::{Cause, Code, Diagnosis, Severity, Thresholds};
use crate::model::report::{MessageReport, Report};

/// The notification any retrieval protocol recorded for this message, failures first.
pub(super) fn bounce_of(m: &MessageReport) -> Option<&Bounce> {
    let bounces = || m.retrievals().filter_map(|(_, r)| r.bounce.as_ref());
    bounces()
        .find(|b| b.action == BounceAction::Failed)
        .or_else(|| bounces().next())
}

/// `bounced` when a failure notification came back, `deferred` for a delay.
pub(super) fn bounce_cause(m: &MessageReport) -> Option<Cause> {
    bounce_of(m).map(|b| match b.action {
        BounceAction::Failed => Cause::Bounced,
        BounceAction::Delayed => Cause::Deferred,
    })
}

/// The notification about the smallest message that failed with `cause`.
fn lead_bounce<'a>(failed: &[(&'a MessageReport, Cause)], cause: Cause) -> Option<&'a Bounce> {
    failed
        .iter()
        .filter(|(_, c)| *c == cause)
        .min_by_key(|(m, _)| m.size_bytes)
        .and_then(|(m, _)| bounce_of(m))
}

/// The reason of the lead failure, when it bounced or is delayed.
pub(super) fn lead_reason(failed: &[(&MessageReport, Cause)], lead: Cause) -> Option<BounceReason> {
    if !matches!(lead, Cause::Bounced | Cause::Deferred) {
        return None;
    }
    lead_bounce(failed, lead).map(|b| b.reason)
}

/// Words for the summary: how the larger messages fail.
pub(super) fn how(failed: &[(&MessageReport, Cause)], cause: Cause) -> String {
    let bounce = lead_bounce(failed, cause);
    let detail = bounce
        .map(|b| {
            let status = b
                .status
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            format!(" ({}{status})", b.reason.as_str().replace('_', " "))
        })
        .unwrap_or_default();
    match cause {
        Cause::Deferred => {
            format!("are accepted but delivery is delayed{detail}: the server keeps retrying")
        }
        _ => format!("are accepted, then bounced{detail}"),
    }
}

/// What to check for a bounce or delay with this reason.
pub(super) fn hints(cause: Cause, reason: Option<BounceReason>) -> Vec<String> {
    let by_reason: &[&str] = match reason {
        Some(BounceReason::Quota) => &[
            "the mailbox is over its quota: raise the quota (Dovecot quota_rule, Exchange mailbox limits) or empty the mailbox",
        ],
        Some(BounceReason::Size) => &[
            "a later hop (delivery agent, relay, content filter) has a smaller size limit than the submission server: align the limits (Postfix message_size_limit on every hop, lmtp/relay limits, Exchange transport limits)",
        ],
        Some(BounceReason::Policy) => &[
            "a content, virus or spam policy refuses these messages after acceptance: check the filter's log and rules for attachments",
        ],
        Some(BounceReason::UnknownRecipient) => &[
            "the final mailbox does not exist: check aliases, the user database and the recipient address",
        ],
        Some(BounceReason::Other) | None => {
            &["read the notification's diagnostic text and the reporting MTA's log"]
        }
    };
    let mut out: Vec<String> = by_reason.iter().map(|s| s.to_string()).collect();
    if cause == Cause::Deferred {
        out.push("the queue keeps the message and retries: check the queue (postqueue -p / Get-Queue) and the delivery agent's log".into());
    }
    out
}

/// `delivered_to_junk`: probe messages found (and verified) in Junk or another
/// watched folder instead of INBOX.
pub(super) fn junk_diagnoses(report: &Report, t: &Thresholds, out: &mut Vec<Diagnosis>) {
    let filed: Vec<(&MessageReport, &str)> = report
        .messages
        .iter()
        .filter_map(|m| {
            m.retrievals()
                .find_map(|(_, r)| r.folder.as_deref().filter(|_| r.found == Some(true)))
                .map(|f| (m, f))
        })
        .collect();
    if filed.is_empty() {
        return;
    }
    let mut folders: Vec<&str> = filed.iter().map(|(_, f)| *f).collect();
    folders.sort_unstable();
    folders.dedup();
    let kinds: Vec<String> = filed.iter().map(|(m, _)| describe(m)).collect();
    let all = filed.len() == report.messages.len();
    let mut evidence: Vec<String> = filed
        .iter()
        .map(|(m, folder)| {
            let verified = m
                .retrievals()
                .any(|(_, r)| r.folder.is_some() && r.verified == Some(true));
            format!(
                "{} ({}): in {folder}{}",
                describe(m),
                m.probe_id,
                if verified { ", verified" } else { "" }
            )
        })
        .collect();
    let in_inbox = report
        .messages
        .iter()
        .filter(|m| !filed.iter().any(|(f, _)| f.probe_id == m.probe_id))
        .map(|m| format!("{} ({}): in INBOX", describe(m), m.probe_id));
    evidence.extend(in_inbox);
    if report.target.pop3.is_some() {
        evidence.push(
            "POP3 sees only INBOX: messages filed into other folders are invisible to POP3 clients"
                .into(),
        );
    }
    let smallest = filed.iter().map(|(m, _)| m.size_bytes).min().unwrap_or(0);
    let which = if all {
        "every probe message".to_string()
    } else if filed.iter().all(|(m, _)| m.attachment) {
        format!(
            "messages with attachments of {} and more",
            format_size(smallest)
        )
    } else {
        kinds.join(", ")
    };
    out.push(Diagnosis {
        code: Code::DeliveredToJunk,
        severity: if t.junk_is_failure {
            Severity::Failing
        } else {
            Severity::Degraded
        },
        summary: format!(
            "Mail is delivered, but {which} {} filed into {}",
            if filed.len() == 1 && !all { "is" } else { "are" },
            folders.join(", ")
        ),
        cause: None,
        reason: None,
        protocol: None,
        evidence,
        hints: vec![
            "check the spam filter's rules and scores for these messages (Sieve scripts, SpamAssassin/rspamd, Exchange content filter), e.g. rules on attachments".into(),
            "check the sender's reputation and authentication (SPF, DKIM, DMARC)".into(),
        ],
    });
}

#[cfg(test)]
mod tests {
    use super::super::apply;
    use crate::core::error::{ErrorKind, ProbeError};
    use crate::core::phase::{Phase, Protocol};
    use crate::model::bounce::{Bounce, BounceAction, BounceReason};
    use crate::model::diagnosis::{Cause, Code, Severity, Thresholds};
    use crate::model::report::{Cleanup, MessageReport, Report, Target, Verdict};
    use crate::model::result::ProtocolResult;

    fn message(size: u64, imap: ProtocolResult, pop3: Option<ProtocolResult>) -> MessageReport {
        MessageReport {
            probe_id: format!("mailprobe-1-{size:x}"),
            size_bytes: size,
            attachment: size > 0,
            encoded_bytes: size * 4 / 3 + 800,
            smtp: ProtocolResult {
                ok: true,
                accepted: Some(true),
                ..Default::default()
            },
            imap: Some(imap),
            pop3,
            round: None,
        }
    }

    fn found(folder: Option<&str>) -> ProtocolResult {
        ProtocolResult {
            ok: true,
            found: Some(true),
            verified: Some(true),
            delivery_ms: Some(30.0),
            folder: folder.map(str::to_string),
            ..Default::default()
        }
    }

    fn bounced(action: BounceAction, status: &str, reason: BounceReason) -> ProtocolResult {
        ProtocolResult {
            found: Some(false),
            error: Some(
                ProbeError::new(
                    ErrorKind::NotDelivered,
                    "the server accepted it, then bounced it",
                )
                .at(Protocol::Imap, Phase::Delivery),
            ),
            bounce: Some(Bounce {
                action,
                reason,
                status: Some(status.into()),
                diagnostic: Some(format!("552 {status} Quota exceeded")),
                reporting_mta: Some("mail.example".into()),
                remote_mta: Some("mail.example".into()),
                final_recipient: Some("a@h".into()),
                matched_by: "envelope_id".into(),
                standard: true,
                folder: "INBOX".into(),
                after_acceptance_ms: Some(120.0),
            }),
            ..Default::default()
        }
    }

    fn report(messages: Vec<MessageReport>, pop3: bool) -> Report {
        let target = Target {
            smtp: "smtp://h:587".into(),
            imap: Some("imap://h:143".into()),
            pop3: pop3.then(|| "pop3://h:110".into()),
            from: "a@h".into(),
            to: "a@h".into(),
            sizes: messages.iter().map(|m| m.size_bytes).collect(),
            insecure: false,
        };
        Report::new(
            target,
            std::time::SystemTime::now(),
            std::time::Instant::now(),
            messages,
            Cleanup::default(),
        )
    }

    #[test]
    fn a_quota_bounce_of_the_attachments_is_attachments_fail_bounced_quota() {
        let mut r = report(
            vec![
                message(0, found(None), None),
                message(
                    1 << 20,
                    bounced(BounceAction::Failed, "5.2.2", BounceReason::Quota),
                    None,
                ),
            ],
            false,
        );
        apply(&mut r, &Thresholds::default());
        let d = &r.diagnoses[0];
        assert_eq!(r.verdict, Verdict::Failing);
        assert_eq!(d.code, Code::AttachmentsFail);
        assert_eq!(d.cause, Some(Cause::Bounced));
        assert_eq!(d.reason, Some(BounceReason::Quota));
        assert!(d.summary.contains("bounced (quota 5.2.2)"), "{}", d.summary);
        assert!(d.hints[0].contains("quota"), "{:?}", d.hints);
    }

    #[test]
    fn every_message_bounced_or_delayed_is_not_delivered_with_the_reason() {
        let mut r = report(
            vec![message(
                0,
                bounced(BounceAction::Delayed, "4.2.2", BounceReason::Quota),
                None,
            )],
            false,
        );
        apply(&mut r, &Thresholds::default());
        let d = &r.diagnoses[0];
        assert_eq!(d.code, Code::NotDelivered);
        assert_eq!(d.cause, Some(Cause::Deferred));
        assert_eq!(d.reason, Some(BounceReason::Quota));
        assert!(d.summary.contains("delayed"), "{}", d.summary);
    }

    #[test]
    fn junk_is_degraded_or_failing_and_names_the_sizes() {
        let skipped = ProtocolResult {
            skipped: Some("IMAP found it in Junk; POP3 sees only INBOX".into()),
            folder: Some("Junk".into()),
            ..Default::default()
        };
        let messages = vec![
            message(0, found(None), Some(found(None))),
            message(10_240, found(Some("Junk")), Some(skipped)),
        ];
        let mut r = report(messages.clone(), true);
        apply(&mut r, &Thresholds::default());
        assert_eq!(r.verdict, Verdict::Degraded, "{:?}", r.diagnoses);
        assert_eq!(r.diagnoses.len(), 1, "{:?}", r.diagnoses);
        let d = &r.diagnoses[0];
        assert_eq!(d.code, Code::DeliveredToJunk);
        assert_eq!(d.severity, Severity::Degraded);
        assert!(d.summary.contains("10 KiB"), "{}", d.summary);
        assert!(d.evidence.iter().any(|e| e.contains("in Junk, verified")));
        assert!(
            d.evidence
                .iter()
                .any(|e| e.contains("POP3 sees only INBOX"))
        );

        let mut r = report(messages, true);
        let strict = Thresholds {
            junk_is_failure: true,
            ..Thresholds::default()
        };
        apply(&mut r, &strict);
        assert_eq!(r.verdict, Verdict::Failing);
    }
}
