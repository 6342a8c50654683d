//! How the messages fared: the `attachments_fail` signature (small mail gets
//! through, larger or attached mail does not) with its cause, mail that was
//! not delivered or altered, and retrieval that works over one protocol only.

use super::refusals::refusal_of;
use super::{elsewhere, results_of};
use crate::core::error::{ErrorKind, ProbeError};
use crate::core::phase::{Phase, Protocol};
use crate::core::units::format_size;
use crate::model::diagnosis::{Cause, Code, Diagnosis, Severity};
use crate::model::report::{MessageReport, Report};
use crate::model::result::ProtocolResult;

/// How one message fared end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Delivered,
    /// Failed before the transaction (connect, TLS, greeting, EHLO, AUTH).
    SmtpUnreachable,
    /// Refused for the session or account (AUTH or TLS required, relaying, the
    /// recipient, rate limits, greylisting): diagnosed in `refusals`.
    SessionRefused,
    Failed(Cause),
}

pub(super) fn smtp_cause(err: &ProbeError) -> Option<Cause> {
    let phase = err.phase?;
    let in_transaction = matches!(
        phase,
        Phase::MailFrom | Phase::RcptTo | Phase::Data | Phase::Quit
    );
    if !in_transaction {
        return None;
    }
    if err.is_size_refusal() {
        return Some(Cause::SizeLimit);
    }
    Some(match err.kind {
        ErrorKind::Timeout => Cause::Timeout,
        ErrorKind::Rejected => Cause::Rejected,
        _ if err.is_connection_lost() => Cause::SessionDropped,
        ErrorKind::Network | ErrorKind::Protocol => Cause::SessionDropped,
        _ => Cause::Rejected,
    })
}

pub(super) fn fate(m: &MessageReport) -> Fate {
    if refusal_of(m).is_some() {
        return Fate::SessionRefused;
    }
    if let Some(err) = &m.smtp.error {
        return match smtp_cause(err) {
            Some(cause) => Fate::Failed(cause),
            None => Fate::SmtpUnreachable,
        };
    }
    let retrievals: Vec<&ProtocolResult> = m.retrievals().map(|(_, r)| r).collect();
    if retrievals.is_empty() || retrievals.iter().any(|r| r.ok) {
        return Fate::Delivered;
    }
    if retrievals
        .iter()
        .any(|r| r.found == Some(true) && r.verified == Some(false) && r.verification.is_some())
    {
        return Fate::Failed(Cause::Altered);
    }
    if let Some(cause) = elsewhere::bounce_cause(m) {
        return Fate::Failed(cause);
    }
    if retrievals.iter().any(|r| {
        r.error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::NotDelivered)
    }) {
        return Fate::Failed(Cause::NotDelivered);
    }
    // Every retrieval failed for reasons of its own (endpoint down): not a message fate.
    Fate::Delivered
}

pub(super) fn describe(m: &MessageReport) -> String {
    if m.attachment {
        format!("{} attachment", format_size(m.size_bytes))
    } else {
        "plain message".to_string()
    }
}

pub(super) fn error_line(m: &MessageReport, err: &ProbeError) -> String {
    let mut line = format!("{} ({}): {}", describe(m), m.probe_id, err);
    if let Some(reply) = &err.reply
        && !err.message.contains(&reply.to_string())
    {
        line.push_str(&format!(" [reply: {reply}]"));
    }
    line
}

/// Given for a size limit, and kept only where the advertised SIZE is off.
const ADVERTISED_SIZE_HINT: &str = "keep the advertised EHLO SIZE equal to the real limit";

pub(super) fn cause_hints(cause: Cause) -> Vec<String> {
    let v: &[&str] = match cause {
        Cause::SizeLimit => &[
            "raise the size limit where it is enforced (Postfix message_size_limit, Exchange receive connector / transport limits, a proxy or filter in front)",
            ADVERTISED_SIZE_HINT,
        ],
        Cause::SessionDropped => &[
            "a content filter or antivirus scanner is probably crashing the SMTP service or process on attachments: check its log and crash events (Windows event 7031) around the probe",
            "look for a recent antivirus/filter update or a broken configuration (e.g. a corrupt IIS/front-end configuration)",
        ],
        Cause::Rejected => &[
            "a content filter or policy rejects these messages: check the filter's rules for attachments and its log",
        ],
        Cause::Timeout => &[
            "large transfers stall: check filters that scan attachments, disk space of the queue, and network MTU/proxy timeouts",
        ],
        Cause::NotDelivered => &[
            "the server accepts but never delivers: check the queue (postqueue -p / Get-Queue), held or deferred mail, and the delivery agent's log",
        ],
        Cause::Altered => &[
            "a filter strips or rewrites attachments: check attachment policies, disclaimers and antivirus actions",
        ],
        // Login causes never come from messages (see `auth::hints`).
        Cause::InvalidToken
        | Cause::ExpiredToken
        | Cause::InsufficientScope
        | Cause::UnknownUser
        | Cause::MechanismNotOffered => &[],
        Cause::Bounced | Cause::Deferred => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

pub(super) fn message_diagnoses(report: &Report, out: &mut Vec<Diagnosis>) {
    let fates: Vec<(&MessageReport, Fate)> = report.messages.iter().map(|m| (m, fate(m))).collect();
    let delivered: Vec<&MessageReport> = fates
        .iter()
        .filter(|(_, f)| *f == Fate::Delivered)
        .map(|(m, _)| *m)
        .collect();
    let failed: Vec<(&MessageReport, Cause)> = fates
        .iter()
        .filter_map(|(m, f)| match f {
            Fate::Failed(c) => Some((*m, *c)),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        partial_retrieval(report, out);
        return;
    }
    let evidence: Vec<String> = failed
        .iter()
        .map(|(m, c)| {
            let err = m
                .smtp
                .error
                .as_ref()
                .or_else(|| m.retrievals().find_map(|(_, r)| r.error.as_ref()));
            match err {
                Some(e) => error_line(m, e),
                None => format!("{}: {}", describe(m), c.as_str()),
            }
        })
        .chain(
            delivered
                .iter()
                .map(|m| format!("{} ({}): delivered and verified", describe(m), m.probe_id)),
        )
        .collect();
    // The cause of the smallest failure leads; the others are in the evidence.
    let lead = failed
        .iter()
        .min_by_key(|(m, _)| m.size_bytes)
        .map(|(_, c)| *c)
        .expect("non-empty");
    let largest_ok = delivered.iter().map(|m| m.size_bytes).max();
    let smallest_failed = failed
        .iter()
        .map(|(m, _)| m.size_bytes)
        .min()
        .expect("non-empty");
    let all_failed_have_attachments = failed.iter().all(|(m, _)| m.attachment);
    let reason = elsewhere::lead_reason(&failed, lead);
    let hints = match reason {
        Some(_) => elsewhere::hints(lead, reason),
        None => cause_hints(lead),
    };

    match largest_ok {
        Some(ok_size)
            if all_failed_have_attachments
                && (smallest_failed > ok_size || delivered.iter().all(|m| !m.attachment)) =>
        {
            let summary = attachments_summary(report, &delivered, &failed, lead);
            out.push(Diagnosis {
                code: Code::AttachmentsFail,
                severity: Severity::Failing,
                summary,
                cause: Some(lead),
                reason,
                protocol: None,
                evidence: with_size_evidence(report, evidence),
                hints: attachment_hints(report, lead, smallest_failed_encoded(&failed), hints),
            });
        }
        Some(_) => out.push(Diagnosis {
            code: Code::Intermittent,
            severity: Severity::Failing,
            summary: format!(
                "{} of {} messages failed without a size pattern: the server is unstable",
                failed.len(),
                report.messages.len()
            ),
            cause: Some(lead),
            reason,
            protocol: None,
            evidence,
            hints: vec![
                "check whether the service is crashing and restarting (run `mailprobe` repeatedly to see it flap)".into(),
            ],
        }),
        None => {
            let (code, summary) = match lead {
                Cause::NotDelivered | Cause::Bounced | Cause::Deferred
                    if failed.iter().all(|(_, c)| {
                        matches!(c, Cause::NotDelivered | Cause::Bounced | Cause::Deferred)
                    }) =>
                {
                    let bounced = match lead {
                        Cause::NotDelivered => String::new(),
                        _ => format!(": they {}", elsewhere::how(&failed, lead)),
                    };
                    (
                        Code::NotDelivered,
                        format!(
                            "Every message was accepted by SMTP but none arrived in the mailbox{bounced}"
                        ),
                    )
                }
                Cause::Altered if failed.iter().all(|(_, c)| *c == Cause::Altered) => (
                    Code::MessageAltered,
                    "Every message arrives altered: content differs from what was sent".to_string(),
                ),
                _ => (
                    Code::SendFailed,
                    format!("No message got through: {}", failed[0].1.as_str().replace('_', " ")),
                ),
            };
            out.push(Diagnosis {
                code,
                severity: Severity::Failing,
                summary,
                cause: Some(lead),
                reason,
                protocol: None,
                evidence,
                hints,
            });
        }
    }
}

fn smallest_failed_encoded(failed: &[(&MessageReport, Cause)]) -> u64 {
    failed
        .iter()
        .map(|(m, _)| m.encoded_bytes)
        .min()
        .unwrap_or(0)
}

/// The cause's `hints`; for a size limit, the advice on the advertised SIZE only
/// when the advertised value is off (bisection says so, or without bisection it
/// is above a size that was refused).
fn attachment_hints(
    report: &Report,
    cause: Cause,
    smallest_refused: u64,
    mut hints: Vec<String>,
) -> Vec<String> {
    if cause == Cause::SizeLimit {
        let advertised = report
            .smtp_server
            .as_ref()
            .and_then(|s| s.advertised_size)
            .filter(|a| *a > 0);
        let off = match (&report.size_limit, advertised) {
            (Some(l), Some(_)) => l.advertised_disagrees,
            (None, Some(a)) => a >= smallest_refused,
            (_, None) => false,
        };
        if !off {
            hints.retain(|h| h != ADVERTISED_SIZE_HINT);
        }
    }
    hints
}

pub(super) fn with_size_evidence(report: &Report, mut evidence: Vec<String>) -> Vec<String> {
    if let Some(l) = &report.size_limit {
        evidence.push(format!(
            "bisection ({} extra sends): {} bytes accepted, {} bytes refused; limit about {} bytes",
            l.sends, l.largest_accepted_bytes, l.smallest_refused_bytes, l.estimate_bytes
        ));
    }
    if let Some(size) = report.smtp_server.as_ref().and_then(|s| s.advertised_size) {
        evidence.push(if size == 0 {
            "EHLO advertises SIZE without a limit".to_string()
        } else {
            format!("EHLO advertises SIZE {size} ({})", format_size(size))
        });
    }
    evidence
}

pub(super) fn attachments_summary(
    report: &Report,
    delivered: &[&MessageReport],
    failed: &[(&MessageReport, Cause)],
    cause: Cause,
) -> String {
    let ok = if delivered.iter().all(|m| !m.attachment) {
        "Plain messages are delivered".to_string()
    } else {
        format!(
            "Messages up to {} are delivered",
            format_size(delivered.iter().map(|m| m.size_bytes).max().unwrap_or(0))
        )
    };
    let smallest = failed.iter().map(|(m, _)| m.size_bytes).min().unwrap_or(0);
    let how = match cause {
        Cause::SizeLimit => {
            let reply = failed
                .iter()
                .find_map(|(m, _)| m.smtp.error.as_ref().and_then(|e| e.reply.as_ref()))
                .map(|r| format!(" ({}{})", r.code.map(|c| c.to_string()).unwrap_or_default(), r.enhanced.map(|e| format!(" {e}")).unwrap_or_default()))
                .unwrap_or_default();
            let advertised = report
                .smtp_server
                .as_ref()
                .and_then(|s| s.advertised_size)
                .filter(|s| *s > 0);
            let limit = match (&report.size_limit, advertised) {
                (Some(l), Some(a)) if l.advertised_disagrees => format!(
                    ". Advertised SIZE {a} but the real limit is about {}",
                    format_size(l.estimate_bytes)
                ),
                (Some(l), _) => format!(
                    ". The real limit is about {} (between {} and {} bytes)",
                    format_size(l.estimate_bytes),
                    l.largest_accepted_bytes,
                    l.smallest_refused_bytes
                ),
                (None, Some(a)) => format!(". Advertised SIZE {a}"),
                (None, None) => String::new(),
            };
            format!("are refused by the server's size limit{reply}{limit}")
        }
        Cause::SessionDropped => "make the server drop the connection during DATA with no reply (a filter or scanner crashing the SMTP service?)".into(),
        Cause::Rejected => "are rejected by the server (content filter policy?)".into(),
        Cause::Timeout => "time out during transfer".into(),
        Cause::NotDelivered => "are accepted but never arrive in the mailbox".into(),
        Cause::Altered => "arrive altered: the attachment is stripped, renamed or changed".into(),
        // Login causes never come from messages.
        Cause::InvalidToken
        | Cause::ExpiredToken
        | Cause::InsufficientScope
        | Cause::UnknownUser
        | Cause::MechanismNotOffered => "fail".into(),
        Cause::Bounced | Cause::Deferred => elsewhere::how(failed, cause),
    };
    format!(
        "{ok}; messages with attachments of {} and more {how}.",
        format_size(smallest)
    )
}

fn partial_retrieval(report: &Report, out: &mut Vec<Diagnosis>) {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        if out
            .iter()
            .any(|d| d.protocol == Some(protocol) || d.code == Code::SharedOutage)
        {
            continue;
        }
        let failed: Vec<(&MessageReport, &ProtocolResult)> = results_of(report, protocol)
            .filter(|(_, r)| !r.ok && r.skipped.is_none())
            .collect();
        // Only a message another protocol did retrieve makes this a partial failure;
        // when no protocol could read it (e.g. the only one breaks mid-FETCH) it fails.
        let nobody_else = failed
            .iter()
            .any(|(m, _)| !m.retrievals().any(|(p, r)| p != protocol && r.ok));
        let failures: Vec<String> = failed
            .iter()
            .map(|(m, r)| match &r.error {
                Some(e) => error_line(m, e),
                None => format!("{}: not verified", describe(m)),
            })
            .collect();
        if !failures.is_empty() {
            out.push(Diagnosis {
                code: Code::RetrievalPartial,
                severity: if nobody_else {
                    Severity::Failing
                } else {
                    Severity::Degraded
                },
                summary: format!(
                    "{} fails for {} message(s) that {}",
                    protocol.label(),
                    failures.len(),
                    if nobody_else {
                        "no protocol could retrieve"
                    } else {
                        "another protocol retrieved"
                    }
                ),
                cause: None,
                reason: None,
                protocol: Some(protocol),
                evidence: failures,
                hints: vec![format!("check the {} service's log", protocol.label())],
            });
        }
    }
}
