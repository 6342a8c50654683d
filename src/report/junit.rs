//! `--format junit`: JUnit XML for CI dashboards. One `<testcase>` per message and
//! protocol (`mailprobe.smtp`, `mailprobe.imap`, `mailprobe.pop3`), named
//! `<size> <plain|attachment>`, and one per diagnosis (`mailprobe.diagnosis`);
//! every diagnosis is a failure, typed `failing` or `degraded`.

use std::fmt::Write;

use super::{MessageReport, Report};
use crate::diagnosis::Severity;
use crate::phase::Protocol;
use crate::prober::ProtocolResult;

enum Outcome {
    Passed,
    Failed {
        message: String,
        kind: String,
        detail: String,
    },
    Skipped(String),
}

struct Case {
    classname: String,
    name: String,
    seconds: f64,
    outcome: Outcome,
}

pub fn render(report: &Report) -> Vec<u8> {
    let mut cases: Vec<Case> = Vec::new();
    for m in &report.messages {
        let results = std::iter::once((Protocol::Smtp, &m.smtp)).chain(m.retrievals());
        for (protocol, r) in results {
            cases.push(Case {
                classname: format!("mailprobe.{}", protocol.as_str()),
                name: message_name(m),
                seconds: r.total_ms / 1000.0,
                outcome: outcome(r),
            });
        }
    }
    for d in &report.diagnoses {
        let severity = match d.severity {
            Severity::Degraded => "degraded",
            Severity::Failing => "failing",
        };
        let mut detail: Vec<String> = d.evidence.clone();
        detail.extend(d.hints.iter().map(|h| format!("check: {h}")));
        cases.push(Case {
            classname: "mailprobe.diagnosis".into(),
            name: match d.cause {
                Some(c) => format!("{}/{}", d.code.as_str(), c.as_str()),
                None => d.code.as_str().to_string(),
            },
            seconds: 0.0,
            outcome: Outcome::Failed {
                message: d.summary.clone(),
                kind: severity.into(),
                detail: detail.join("\n"),
            },
        });
    }

    let tests = cases.len();
    let failures = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Failed { .. }))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .count();
    let time = seconds(report.duration_ms / 1000.0);

    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<testsuites name="mailprobe" tests="{tests}" failures="{failures}" errors="0" skipped="{skipped}" time="{time}">"#
    );
    let _ = writeln!(
        o,
        r#"  <testsuite name="mailprobe" tests="{tests}" failures="{failures}" errors="0" skipped="{skipped}" time="{time}" timestamp="{}">"#,
        attr(&report.started_at)
    );
    for c in &cases {
        let open = format!(
            r#"    <testcase classname="{}" name="{}" time="{}""#,
            attr(&c.classname),
            attr(&c.name),
            seconds(c.seconds)
        );
        match &c.outcome {
            Outcome::Passed => {
                let _ = writeln!(o, "{open}/>");
            }
            Outcome::Skipped(why) => {
                let _ = writeln!(o, "{open}>");
                let _ = writeln!(o, r#"      <skipped message="{}"/>"#, attr(why));
                let _ = writeln!(o, "    </testcase>");
            }
            Outcome::Failed {
                message,
                kind,
                detail,
            } => {
                let _ = writeln!(o, "{open}>");
                let _ = writeln!(
                    o,
                    r#"      <failure message="{}" type="{}">{}</failure>"#,
                    attr(message),
                    attr(kind),
                    text(detail)
                );
                let _ = writeln!(o, "    </testcase>");
            }
        }
    }
    let _ = writeln!(o, "  </testsuite>");
    let _ = writeln!(o, "</testsuites>");
    o.into_bytes()
}

fn outcome(r: &ProtocolResult) -> Outcome {
    if let Some(why) = &r.skipped {
        return Outcome::Skipped(why.clone());
    }
    if r.ok {
        return Outcome::Passed;
    }
    let (message, kind) = match &r.error {
        Some(e) => (e.to_string(), e.kind.as_str().to_string()),
        None => ("not ok".to_string(), "failed".to_string()),
    };
    let mut detail = vec![message.clone()];
    if let Some(v) = &r.verification {
        detail.extend(v.problems.iter().cloned());
    }
    detail.dedup();
    Outcome::Failed {
        message,
        kind,
        detail: detail.join("\n"),
    }
}

/// `<size> plain` or `<size> attachment`, e.g. `0B plain`, `1MiB attachment`.
fn message_name(m: &MessageReport) -> String {
    format!(
        "{} {}",
        crate::units::size_label(m.size_bytes),
        if m.attachment { "attachment" } else { "plain" }
    )
}

fn seconds(s: f64) -> String {
    format!("{:.3}", if s.is_finite() { s.max(0.0) } else { 0.0 })
}

/// Escape for element text: the five XML entities; characters XML 1.0 forbids
/// become U+FFFD.
fn text(s: &str) -> String {
    escape(s, false)
}

/// Escape for attribute values: as [`text`], and line breaks as character
/// references so that parsers keep them.
fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, attribute: bool) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\n' if attribute => o.push_str("&#10;"),
            '\r' if attribute => o.push_str("&#13;"),
            '\t' if attribute => o.push_str("&#9;"),
            '\n' | '\r' | '\t' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::{attr, render, text};

    use crate::diagnosis::{Cause, Code, Diagnosis, Severity};
    use crate::error::{ErrorKind, ProbeError};
    use crate::phase::{Phase, Phases, Protocol};
    use crate::prober::ProtocolResult;
    use crate::report::{Cleanup, MessageReport, Report, Target, Verdict};
    use crate::tls::{CertificateInfo, TlsInfo};

    fn phases(list: &[(Phase, f64)]) -> Phases {
        list.iter().copied().collect()
    }

    fn tls(days: i64) -> Option<TlsInfo> {
        Some(TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            verified: true,
            verify_error: None,
            name_matches: true,
            certificate: Some(CertificateInfo {
                subject: "CN=h".into(),
                issuer: "CN=ca".into(),
                sans: vec!["h".into()],
                not_before: "2026-01-01T00:00:00Z".into(),
                not_after: "2027-01-01T00:00:00Z".into(),
                days_to_expiry: days,
            }),
        })
    }

    fn sent(list: &[(Phase, f64)]) -> ProtocolResult {
        let phases_ms = phases(list);
        ProtocolResult {
            ok: true,
            accepted: Some(true),
            total_ms: phases_ms.values().sum(),
            phases_ms,
            ..Default::default()
        }
    }

    fn fetched(list: &[(Phase, f64)], delivery_ms: f64, days: i64) -> ProtocolResult {
        let phases_ms = phases(list);
        ProtocolResult {
            ok: true,
            found: Some(true),
            verified: Some(true),
            total_ms: phases_ms.values().sum(),
            phases_ms,
            delivery_ms: Some(delivery_ms),
            tls: tls(days),
            ..Default::default()
        }
    }

    fn message(
        size: u64,
        smtp: ProtocolResult,
        imap: ProtocolResult,
        pop3: ProtocolResult,
    ) -> MessageReport {
        MessageReport {
            probe_id: format!("mailprobe-1-{size:x}"),
            size_bytes: size,
            attachment: size > 0,
            encoded_bytes: size * 4 / 3 + 800,
            smtp,
            imap: Some(imap),
            pop3: Some(pop3),
        }
    }

    /// Plain mail gets through; 1 MiB is altered over IMAP and never reaches POP3;
    /// 5 MiB is refused by SMTP.
    fn sample() -> Report {
        let plain = message(
            0,
            sent(&[
                (Phase::Connect, 12.5),
                (Phase::Ehlo, 3.0),
                (Phase::Data, 66.0),
            ]),
            fetched(
                &[
                    (Phase::Connect, 10.0),
                    (Phase::Login, 20.0),
                    (Phase::Fetch, 5.0),
                ],
                340.0,
                30,
            ),
            fetched(&[(Phase::Connect, 11.0), (Phase::Stat, 2.0)], 1200.25, 29),
        );
        let mut altered = fetched(&[(Phase::Fetch, 40.0)], 500.0, 30);
        altered.ok = false;
        altered.verified = Some(false);
        altered.verification = Some(crate::verify::Verification {
            verified: false,
            bytes: 100,
            problems: vec!["the attachment was renamed".into()],
            attachment: None,
        });
        altered.error = Some(
            ProbeError::new(ErrorKind::Altered, "the attachment was renamed")
                .at(Protocol::Imap, Phase::Fetch),
        );
        let missing = ProtocolResult {
            found: Some(false),
            error: Some(
                ProbeError::new(
                    ErrorKind::NotDelivered,
                    "not in the mailbox 8 s after the server accepted it",
                )
                .at(Protocol::Pop3, Phase::Delivery),
            ),
            ..Default::default()
        };
        let one_mib = message(
            1 << 20,
            sent(&[(Phase::Connect, 9.0), (Phase::Data, 900.0)]),
            altered,
            missing,
        );
        let skipped = ProtocolResult {
            skipped: Some("SMTP did not accept the message".into()),
            ..Default::default()
        };
        let refused = ProtocolResult {
            accepted: Some(false),
            phases_ms: phases(&[(Phase::Connect, 8.0)]),
            total_ms: 8.0,
            error: Some(
                ProbeError::new(
                    ErrorKind::Rejected,
                    "552 5.3.4 Message size exceeds fixed limit",
                )
                .at(Protocol::Smtp, Phase::Data),
            ),
            ..Default::default()
        };
        let five_mib = message(5 << 20, refused, skipped.clone(), skipped);
        let messages = vec![plain, one_mib, five_mib];
        Report {
            mailprobe_version: "0.1.0".into(),
            started_at: "2026-11-25T00:00:00Z".into(),
            duration_ms: 4321.5,
            verdict: Verdict::Failing,
            summary: "attachments fail: 5 MiB is refused".into(),
            target: Target {
                smtp: "smtp://h:587".into(),
                imap: Some("imaps://h:993".into()),
                pop3: Some("pop3s://h:995".into()),
                from: "a@h".into(),
                to: "a@h".into(),
                sizes: messages.iter().map(|m| m.size_bytes).collect(),
                insecure: false,
            },
            smtp_server: None,
            messages,
            size_limit: None,
            diagnoses: vec![
                Diagnosis {
                    code: Code::AttachmentsFail,
                    severity: Severity::Failing,
                    summary: "Attachments fail: \"<&>'\nsecond line | x".into(),
                    cause: Some(Cause::SizeLimit),
                    protocol: Some(Protocol::Smtp),
                    evidence: vec!["5 MiB: 552 <too big>".into()],
                    hints: vec!["raise message_size_limit & retry".into()],
                },
                Diagnosis {
                    code: Code::Slow,
                    severity: Severity::Degraded,
                    summary: "POP3 delivery is slow".into(),
                    cause: None,
                    protocol: Some(Protocol::Pop3),
                    evidence: Vec::new(),
                    hints: Vec::new(),
                },
            ],
            cleanup: Cleanup::default(),
        }
    }

    /// Compare with the reviewed snapshot; `MAILPROBE_BLESS=1` rewrites it.
    fn snapshot(name: &str, expected: &str, got: &str) {
        if std::env::var_os("MAILPROBE_BLESS").is_some() {
            let path = format!("{}/tests/snapshots/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(path, got).unwrap();
            return;
        }
        assert_eq!(got, expected, "snapshot tests/snapshots/{name} differs");
    }
    #[test]
    fn snapshot_matches() {
        let got = String::from_utf8(render(&sample())).unwrap();
        snapshot(
            "junit.txt",
            include_str!("../../tests/snapshots/junit.txt"),
            &got,
        );
    }

    #[test]
    fn everything_is_escaped() {
        assert_eq!(text("\"<&>'\nx"), "&quot;&lt;&amp;&gt;&apos;\nx");
        assert_eq!(attr("\"<&>'\nx"), "&quot;&lt;&amp;&gt;&apos;&#10;x");
        assert_eq!(text("a\u{1}b"), "a\u{FFFD}b");
        let out = String::from_utf8(render(&sample())).unwrap();
        assert!(out.contains(
            r#"message="Attachments fail: &quot;&lt;&amp;&gt;&apos;&#10;second line | x""#
        ));
        assert!(!out.contains("\"<&>"));
    }
}
