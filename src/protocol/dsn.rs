//! Delivery status notifications on the wire: RFC 3464 `multipart/report;
//! report-type=delivery-status` and common non-standard bounces that quote the
//! original headers, parsed (with mail-parser) from a bounded prefix of the
//! notification, and tied to a probe message by envelope id, probe header or
//! Message-ID. Also the DSN parameters the probe asks for (RFC 3461).

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::core::probe_id::{PROBE_HEADER, is_probe_id};
use crate::core::reply::EnhancedCode;
use crate::model::bounce::{Bounce, BounceAction, BounceReason};

/// The most of a notification that is read: the report parts come first; a
/// returned full message behind them is not needed.
pub(crate) const MAX_NOTIFICATION_BYTES: usize = 128 * 1024;
/// Longest diagnostic text kept in a report.
const MAX_DIAGNOSTIC: usize = 300;

/// `MAIL FROM` parameters asking for headers-only returns, tagged with the probe id.
pub(crate) fn mail_parameters(probe_id: &str) -> [(&'static str, String); 2] {
    [("RET", "HDRS".to_string()), ("ENVID", probe_id.to_string())]
}

/// `RCPT TO` parameter: tell the sender about failures and delays only.
pub(crate) const RCPT_NOTIFY: (&str, &str) = ("NOTIFY", "FAILURE,DELAY");

/// The status of one recipient in a notification.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RecipientStatus {
    pub(crate) action: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) diagnostic: Option<String>,
    pub(crate) remote_mta: Option<String>,
    pub(crate) final_recipient: Option<String>,
}

/// What a notification says and which original message it is about.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Notification {
    /// A standard delivery-status report.
    pub(crate) standard: bool,
    pub(crate) envelope_id: Option<String>,
    pub(crate) reporting_mta: Option<String>,
    /// `X-Mailprobe-Id` of the returned or quoted original headers.
    pub(crate) original_probe_id: Option<String>,
    /// `Message-ID` of the returned or quoted original headers, without `<>`.
    pub(crate) original_message_id: Option<String>,
    pub(crate) recipients: Vec<RecipientStatus>,
}

/// Header fields (`Name: value`, folded lines joined) of a block of text; quoting
/// (`> `) and indentation of a bounce that pastes the original headers are removed.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if line.starts_with([' ', '\t'])
            && !line.trim().is_empty()
            && let Some((_, value)) = out.last_mut()
        {
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let line = line.trim_start_matches(['>', ' ', '\t']);
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty()
                && name.len() < 40
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                out.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    out
}

/// `dns; mail.example` -> `mail.example`: the type prefix of a DSN field.
fn typed_value(value: &str) -> String {
    match value.split_once(';') {
        Some((kind, rest)) if !kind.contains(' ') && kind.len() < 16 => rest.trim().to_string(),
        _ => value.trim().to_string(),
    }
}

fn truncate(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(MAX_DIAGNOSTIC) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    }
}

fn strip_angle(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// The probe id a Message-ID of a probe message carries (`<probe-id@domain>`).
pub(crate) fn probe_id_of_message_id(message_id: &str) -> Option<String> {
    let local = strip_angle(message_id);
    let id = local.split('@').next()?;
    is_probe_id(id).then(|| id.to_string())
}

impl Notification {
    /// Parse the first bytes of a message. `None` when it is no notification: not
    /// a delivery-status report and no bounce quoting original headers, or a probe
    /// message itself.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Notification> {
        let bytes = &bytes[..bytes.len().min(MAX_NOTIFICATION_BYTES)];
        let message = MessageParser::default().parse(bytes)?;
        // A probe message (or a forward of one) carries the probe header on top.
        if message.header_raw(PROBE_HEADER).is_some() {
            return None;
        }
        let mut n = Notification::default();
        let mut quoted_text = Vec::new();
        for part in &message.parts {
            let ctype = part.content_type();
            let (ctype_main, subtype) = ctype
                .map(|c| {
                    (
                        c.ctype().to_ascii_lowercase(),
                        c.subtype().unwrap_or("").to_ascii_lowercase(),
                    )
                })
                .unwrap_or_default();
            match (&part.body, ctype_main.as_str(), subtype.as_str()) {
                (_, "message", s) if s.ends_with("delivery-status") => {
                    n.standard = true;
                    let text = String::from_utf8_lossy(part.contents());
                    n.read_status(&text);
                }
                (PartType::Message(original), _, _) => {
                    if let Some(id) = original.header_raw(PROBE_HEADER) {
                        n.original_probe_id.get_or_insert(id.trim().to_string());
                    }
                    if let Some(id) = original.message_id() {
                        n.original_message_id.get_or_insert(strip_angle(id));
                    }
                }
                (PartType::Text(text), _, _) => quoted_text.push(text.to_string()),
                _ => {}
            }
        }
        // Returned headers (text/rfc822-headers) and bounces pasting the original.
        for text in &quoted_text {
            for (name, value) in fields(text) {
                if name == PROBE_HEADER.to_ascii_lowercase() && n.original_probe_id.is_none() {
                    n.original_probe_id = Some(value);
                } else if name == "message-id" && n.original_message_id.is_none() {
                    n.original_message_id = Some(strip_angle(&value));
                }
            }
        }
        if n.standard {
            return Some(n);
        }
        if n.original_probe_id.is_none() && n.original_message_id.is_none() {
            return None;
        }
        if !looks_like_bounce(&message) {
            return None;
        }
        n.recipients.push(status_from_text(&quoted_text.join("\n")));
        Some(n)
    }

    fn read_status(&mut self, text: &str) {
        let mut recipient: Option<RecipientStatus> = None;
        // Groups are separated by blank lines: per-message fields, then one per recipient.
        for group in text.replace("\r\n", "\n").split("\n\n") {
            for (name, value) in fields(group) {
                match name.as_str() {
                    "original-envelope-id" => self.envelope_id = Some(value.trim().to_string()),
                    "reporting-mta" => self.reporting_mta = Some(typed_value(&value)),
                    "final-recipient" | "original-recipient" => {
                        let r = recipient.get_or_insert_with(Default::default);
                        if name == "final-recipient" || r.final_recipient.is_none() {
                            r.final_recipient = Some(typed_value(&value));
                        }
                    }
                    "action" => {
                        recipient.get_or_insert_with(Default::default).action =
                            Some(value.to_ascii_lowercase())
                    }
                    "status" => {
                        recipient.get_or_insert_with(Default::default).status =
                            Some(value.split_whitespace().next().unwrap_or("").to_string())
                    }
                    "diagnostic-code" => {
                        recipient.get_or_insert_with(Default::default).diagnostic =
                            Some(truncate(&typed_value(&value)))
                    }
                    "remote-mta" => {
                        recipient.get_or_insert_with(Default::default).remote_mta =
                            Some(typed_value(&value))
                    }
                    _ => {}
                }
            }
            if let Some(r) = recipient.take() {
                self.recipients.push(r);
            }
        }
    }

    /// The probe message this notification is about, and how that was seen; only
    /// ids `ours` accepts count.
    pub(crate) fn about(&self, ours: impl Fn(&str) -> bool) -> Option<(String, &'static str)> {
        if let Some(id) = self.envelope_id.as_deref().filter(|id| ours(id)) {
            return Some((id.to_string(), "envelope_id"));
        }
        if let Some(id) = self.original_probe_id.as_deref().filter(|id| ours(id)) {
            return Some((id.to_string(), "probe_header"));
        }
        self.original_message_id
            .as_deref()
            .and_then(probe_id_of_message_id)
            .filter(|id| ours(id))
            .map(|id| (id, "message_id"))
    }

    /// The bounce this notification reports: the first failed recipient, else the
    /// first delayed one. Relayed/delivered/expanded reports are not bounces.
    pub(crate) fn bounce(&self, matched_by: &str, folder: &str) -> Option<Bounce> {
        let action_of = |r: &RecipientStatus| match r.action.as_deref() {
            Some("failed") => Some(BounceAction::Failed),
            Some("delayed") => Some(BounceAction::Delayed),
            Some(_) => None,
            // No Action field: the status class decides.
            None => match r.status.as_deref().and_then(EnhancedCode::parse) {
                Some(c) if c.class == 4 => Some(BounceAction::Delayed),
                Some(c) if c.class == 2 => None,
                _ => Some(BounceAction::Failed),
            },
        };
        let (r, action) = self
            .recipients
            .iter()
            .filter_map(|r| action_of(r).map(|a| (r, a)))
            .min_by_key(|(_, a)| *a != BounceAction::Failed)?;
        Some(Bounce {
            action,
            reason: classify(r.status.as_deref(), r.diagnostic.as_deref()),
            status: r.status.clone(),
            diagnostic: r.diagnostic.clone(),
            reporting_mta: self.reporting_mta.clone(),
            remote_mta: r.remote_mta.clone(),
            final_recipient: r.final_recipient.clone(),
            matched_by: matched_by.to_string(),
            standard: self.standard,
            folder: folder.to_string(),
            after_acceptance_ms: None,
        })
    }
}

/// A non-standard bounce: from the mailer daemon or postmaster, with a null return
/// path, or with a subject bounces commonly use.
fn looks_like_bounce(message: &mail_parser::Message<'_>) -> bool {
    let from = message
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_ascii_lowercase();
    let daemon = ["mailer-daemon", "postmaster", "mail delivery"]
        .iter()
        .any(|w| from.contains(w));
    let null_path = message
        .header_raw("Return-Path")
        .is_some_and(|p| p.trim() == "<>");
    let subject = message.subject().unwrap_or("").to_ascii_lowercase();
    let bounce_subject = [
        "undeliver",
        "undelivered",
        "delivery status",
        "delivery failure",
        "failure notice",
        "returned mail",
        "delivery has failed",
        "could not be delivered",
        "non-delivery",
    ]
    .iter()
    .any(|w| subject.contains(w));
    daemon || null_path || bounce_subject
}

/// Status, diagnostic and action of a non-standard bounce, from its text: the
/// first line with an enhanced status code or a 4xx/5xx reply.
fn status_from_text(text: &str) -> RecipientStatus {
    let mut r = RecipientStatus::default();
    for line in text.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == ';')
            .collect();
        let enhanced = words
            .iter()
            .find_map(|w| EnhancedCode::parse(w.trim_end_matches(['.', ':'])))
            .filter(|c| c.class != 2);
        let reply = words.iter().any(|w| {
            w.len() == 3 && w.starts_with(['4', '5']) && w.bytes().all(|b| b.is_ascii_digit())
        });
        if enhanced.is_some() || reply {
            r.status = enhanced.map(|c| c.to_string());
            r.diagnostic = Some(truncate(line.trim()));
            break;
        }
    }
    let lower = text.to_ascii_lowercase();
    let delayed = r.status.as_deref().is_some_and(|s| s.starts_with('4'))
        || lower.contains("will be retried")
        || lower.contains("still trying");
    r.action = Some(if delayed { "delayed" } else { "failed" }.to_string());
    r
}

/// Why a message bounced: the enhanced status code decides (from `Status` or
/// the diagnostic text); a bare 552 is a size refusal; only without any code do
/// common words in the diagnostic decide.
pub(crate) fn classify(status: Option<&str>, diagnostic: Option<&str>) -> BounceReason {
    let diagnostic = diagnostic.unwrap_or("");
    let enhanced = status.and_then(EnhancedCode::parse).or_else(|| {
        diagnostic
            .split_whitespace()
            .find_map(|w| EnhancedCode::parse(w.trim_end_matches(['.', ':', ','])))
    });
    if let Some(c) = enhanced {
        return match (c.subject, c.detail) {
            (2, 2) => BounceReason::Quota,
            (3, 4) | (2, 3) => BounceReason::Size,
            (7, _) => BounceReason::Policy,
            (1, 1) => BounceReason::UnknownRecipient,
            _ => BounceReason::Other,
        };
    }
    let lower = diagnostic.to_ascii_lowercase();
    if lower.split_whitespace().any(|w| w == "552") {
        return BounceReason::Size;
    }
    if lower.contains("quota")
        || lower.contains("mailbox full")
        || lower.contains("mailbox is full")
    {
        BounceReason::Quota
    } else if lower.contains("too large") || lower.contains("too big") {
        BounceReason::Size
    } else if lower.contains("user unknown") || lower.contains("no such user") {
        BounceReason::UnknownRecipient
    } else {
        BounceReason::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "mailprobe-1764620000000-00112233aabbccdd";

    fn postfix_dsn(envid: Option<&str>, status: &str, action: &str, diag: &str) -> String {
        let envid = envid
            .map(|e| format!("Original-Envelope-Id: {e}\r\n"))
            .unwrap_or_default();
        format!(
            "Return-Path: <>\r\nFrom: MAILER-DAEMON@mail.mailprobe.test (Mail Delivery System)\r\n\
             Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
             --B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n\r\n\
             --B\r\nContent-Type: message/delivery-status\r\n\r\n\
             Reporting-MTA: dns; mail.mailprobe.test\r\n{envid}Arrival-Date: Tue,  1 Dec 2026 20:00:00 +0000\r\n\r\n\
             Final-Recipient: rfc822; test29@mailprobe.test\r\nAction: {action}\r\nStatus: {status}\r\n\
             Remote-MTA: dns; mail.mailprobe.test\r\nDiagnostic-Code: smtp; {diag}\r\n\r\n\
             --B\r\nContent-Type: text/rfc822-headers\r\n\r\n\
             From: mailprobe <test29@mailprobe.test>\r\nMessage-ID: <{ID}@mailprobe.test>\r\n\
             X-Mailprobe-Id: {ID}\r\nSubject: mailprobe test 1MiB {ID}\r\n\r\n--B--\r\n"
        )
    }

    #[test]
    fn postfix_quota_bounce_is_matched_by_envelope_id() {
        let raw = postfix_dsn(
            Some(ID),
            "5.2.2",
            "failed",
            "552 5.2.2 <test29@mailprobe.test> Quota exceeded (mailbox for user is full)",
        );
        let n = Notification::parse(raw.as_bytes()).expect("a DSN");
        assert!(n.standard);
        assert_eq!(n.about(is_probe_id), Some((ID.to_string(), "envelope_id")));
        let b = n.bounce("envelope_id", "INBOX").expect("a bounce");
        assert_eq!(b.action, BounceAction::Failed);
        assert_eq!(b.reason, BounceReason::Quota);
        assert_eq!(b.status.as_deref(), Some("5.2.2"));
        assert_eq!(b.reporting_mta.as_deref(), Some("mail.mailprobe.test"));
        assert_eq!(b.remote_mta.as_deref(), Some("mail.mailprobe.test"));
        assert_eq!(b.final_recipient.as_deref(), Some("test29@mailprobe.test"));
        assert!(b.diagnostic.as_deref().unwrap().contains("Quota exceeded"));
    }

    #[test]
    fn without_envelope_id_the_returned_headers_match() {
        let raw = postfix_dsn(None, "5.3.4", "failed", "552 5.3.4 Message too big");
        let n = Notification::parse(raw.as_bytes()).unwrap();
        assert_eq!(n.about(is_probe_id), Some((ID.to_string(), "probe_header")));
        assert_eq!(n.bounce("x", "INBOX").unwrap().reason, BounceReason::Size);
        // Only ids the caller owns count: a foreign bounce is about nothing of ours.
        assert_eq!(n.about(|id| id == "mailprobe-1-other"), None);
    }

    #[test]
    fn delayed_reports_are_delays_and_delivered_ones_no_bounce() {
        let raw = postfix_dsn(Some(ID), "4.2.2", "delayed", "452 4.2.2 Mailbox full");
        let b = Notification::parse(raw.as_bytes())
            .unwrap()
            .bounce("envelope_id", "INBOX")
            .unwrap();
        assert_eq!(b.action, BounceAction::Delayed);
        assert_eq!(b.reason, BounceReason::Quota);
        let raw = postfix_dsn(Some(ID), "2.0.0", "delivered", "250 2.0.0 Ok");
        assert_eq!(
            Notification::parse(raw.as_bytes())
                .unwrap()
                .bounce("envelope_id", "INBOX"),
            None
        );
    }

    #[test]
    fn a_non_standard_bounce_quoting_the_original_headers_is_recognised() {
        let raw = format!(
            "From: Mail Delivery Subsystem <mailer-daemon@relay.example>\r\n\
             Subject: failure notice\r\n\r\n\
             Hi. This is the delivery program.\r\n\
             <test29@mailprobe.test>:\r\n550 5.7.1 Message rejected as spam\r\n\r\n\
             --- Below this line is a copy of the message.\r\n\r\n\
             Message-ID: <{ID}@mailprobe.test>\r\nX-Mailprobe-Id: {ID}\r\n"
        );
        let n = Notification::parse(raw.as_bytes()).expect("a bounce");
        assert!(!n.standard);
        assert_eq!(n.about(is_probe_id).unwrap().1, "probe_header");
        let b = n.bounce("probe_header", "INBOX").unwrap();
        assert_eq!(b.reason, BounceReason::Policy);
        assert_eq!(b.status.as_deref(), Some("5.7.1"));
        assert_eq!(b.action, BounceAction::Failed);
    }

    #[test]
    fn probe_messages_and_ordinary_mail_are_no_notifications() {
        let probe = format!("X-Mailprobe-Id: {ID}\r\nSubject: x\r\n\r\nprobe id: {ID}\r\n");
        assert_eq!(Notification::parse(probe.as_bytes()), None);
        // A person quoting a probe message is not a bounce.
        let reply = format!(
            "From: alice@example.com\r\nSubject: what is this?\r\n\r\n> X-Mailprobe-Id: {ID}\r\n"
        );
        assert_eq!(Notification::parse(reply.as_bytes()), None);
    }

    #[test]
    fn reasons_follow_the_codes() {
        let c = |s: Option<&str>, d: &str| classify(s, Some(d));
        assert_eq!(c(Some("4.2.2"), ""), BounceReason::Quota);
        assert_eq!(c(Some("5.2.3"), ""), BounceReason::Size);
        assert_eq!(
            c(None, "552 message size exceeds fixed limit"),
            BounceReason::Size
        );
        assert_eq!(c(Some("5.7.0"), "virus found"), BounceReason::Policy);
        assert_eq!(c(Some("5.1.1"), ""), BounceReason::UnknownRecipient);
        assert_eq!(
            c(None, "550 5.1.1 no such user"),
            BounceReason::UnknownRecipient
        );
        assert_eq!(c(Some("5.0.0"), "mailbox is full"), BounceReason::Other);
        assert_eq!(c(None, "mailbox is full"), BounceReason::Quota);
        assert_eq!(c(None, "host unreachable"), BounceReason::Other);
        assert_eq!(
            probe_id_of_message_id(&format!("<{ID}@x>")),
            Some(ID.into())
        );
    }
}
