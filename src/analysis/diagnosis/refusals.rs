//! Refusals that are about the session or the account, not the message: AUTH
//! or TLS required, relaying denied, an unknown recipient, rate limits and
//! greylisting over SMTP, and IMAP/POP3 refusing a password without TLS. Each has
//! its own code and hints; the message fates leave these messages out.

use super::messages::{describe, error_line};
use super::results_of;
use crate::core::classify::ReplyClass;
use crate::core::phase::Protocol;
use crate::model::diagnosis::{Code, Diagnosis, Severity};
use crate::model::report::{MessageReport, Report};

/// The SMTP refusal classes diagnosed here rather than as a message fate.
pub(super) fn session_refusal(class: ReplyClass) -> Option<(Code, Severity)> {
    Some(match class {
        ReplyClass::AuthRequired => (Code::AuthRequired, Severity::Failing),
        ReplyClass::TlsRequired => (Code::TlsRequired, Severity::Failing),
        ReplyClass::RelayDenied => (Code::RelayDenied, Severity::Failing),
        ReplyClass::UnknownRecipient => (Code::UnknownRecipient, Severity::Failing),
        // A transient refusal a real sender retries: mail is late, not lost.
        ReplyClass::RateLimited => (Code::RateLimited, Severity::Degraded),
        ReplyClass::Greylisted => (Code::Greylisted, Severity::Degraded),
        _ => return None,
    })
}

/// The SMTP session refusal of this message, if it had one.
pub(super) fn refusal_of(m: &MessageReport) -> Option<ReplyClass> {
    m.smtp
        .error
        .as_ref()
        .and_then(|e| e.class)
        .filter(|c| session_refusal(*c).is_some())
}

fn summary(class: ReplyClass, count: usize, reply: &str) -> String {
    let what = match class {
        ReplyClass::AuthRequired => "SMTP requires authentication before it takes mail",
        ReplyClass::TlsRequired => "SMTP requires TLS (STARTTLS) before it takes mail",
        ReplyClass::RelayDenied => "SMTP refuses to relay to the recipient",
        ReplyClass::UnknownRecipient => "SMTP does not know the recipient",
        ReplyClass::RateLimited => "SMTP is rate limiting the probe",
        ReplyClass::Greylisted => "SMTP greylists the probe (a temporary refusal)",
        _ => "SMTP refuses the message",
    };
    format!("{what}: {reply} ({count} message(s))")
}

fn hints(class: ReplyClass) -> Vec<String> {
    let v: &[&str] = match class {
        ReplyClass::AuthRequired => &[
            "give the SMTP login (--user and a password source) and do not pass --no-smtp-auth; on a submission port (587/465) AUTH is the rule",
            "if AUTH was not offered, check that the server offers AUTH (often only after STARTTLS)",
        ],
        ReplyClass::TlsRequired => &[
            "allow STARTTLS (--starttls auto or require) or use smtps://; this port takes mail only over TLS",
        ],
        ReplyClass::RelayDenied => &[
            "send to a recipient in a domain this server delivers locally (--to), or authenticate: servers relay to other domains only for logged-in users",
        ],
        ReplyClass::UnknownRecipient => &[
            "check the recipient address (--to) and that the mailbox exists on this server (aliases, virtual mailbox maps, the user directory)",
        ],
        ReplyClass::RateLimited => &[
            "the server limits connections or messages per client: probe less often or with fewer messages, or exempt the probe's address from the limit",
        ],
        ReplyClass::Greylisted => &[
            "greylisting delays first mail from a new sender: a real sender retries and gets through; whitelist the probe's sender or address to test delivery now",
        ],
        _ => &[],
    };
    v.iter().map(|s| s.to_string()).collect()
}

pub(super) fn refusal_diagnoses(report: &Report, out: &mut Vec<Diagnosis>) {
    let mut classes: Vec<ReplyClass> = report.messages.iter().filter_map(refusal_of).collect();
    classes.sort();
    classes.dedup();
    let notes: Vec<String> = report
        .smtp_server
        .as_ref()
        .map(|s| s.notes.clone())
        .unwrap_or_default();
    for class in classes {
        let Some((code, severity)) = session_refusal(class) else {
            continue;
        };
        let refused: Vec<&MessageReport> = report
            .messages
            .iter()
            .filter(|m| refusal_of(m) == Some(class))
            .collect();
        let reply = refused
            .iter()
            .find_map(|m| m.smtp.error.as_ref())
            .map(|e| {
                e.reply
                    .as_ref()
                    .map_or_else(|| e.message.clone(), ToString::to_string)
            })
            .unwrap_or_default();
        let mut evidence: Vec<String> = refused
            .iter()
            .filter_map(|m| m.smtp.error.as_ref().map(|e| error_line(m, e)))
            .collect();
        evidence.extend(notes.iter().cloned());
        out.push(Diagnosis {
            code,
            severity,
            summary: summary(class, refused.len(), &reply),
            cause: None,
            reason: None,
            protocol: Some(Protocol::Smtp),
            evidence,
            hints: hints(class),
        });
    }
}

/// IMAP or POP3 refusing the password because the session is not encrypted.
pub(super) fn plaintext_diagnoses(report: &Report, out: &mut Vec<Diagnosis>) {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        let Some((m, err)) = results_of(report, protocol).find_map(|(m, r)| {
            r.error
                .as_ref()
                .filter(|e| e.is_class(ReplyClass::PlaintextDisabled))
                .map(|e| (m, e))
        }) else {
            continue;
        };
        let scheme = protocol.as_str();
        out.push(Diagnosis {
            code: Code::PlaintextDisabled,
            severity: Severity::Failing,
            summary: format!(
                "{} refuses the password without TLS: {}",
                protocol.label(),
                err.reply
                    .as_ref()
                    .map_or_else(|| err.message.clone(), ToString::to_string)
            ),
            cause: None,
            reason: None,
            protocol: Some(protocol),
            evidence: vec![format!("{}: {}", describe(m), err)],
            hints: vec![format!(
                "use {scheme}s:// or allow STARTTLS (--starttls auto or require): the server takes logins only over TLS, which is right"
            )],
        });
    }
}
