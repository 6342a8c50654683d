//! `--format junit`: JUnit XML for CI dashboards. One `<testcase>` per message and
//! protocol (`mailprobe.smtp`, `mailprobe.imap`, `mailprobe.pop3`), named
//! `<size> <plain|attachment>`, and one per diagnosis (`mailprobe.diagnosis`);
//! every diagnosis is a failure, typed `failing` or `degraded`.

use std::fmt::Write;

use crate::core::phase::Protocol;
use crate::model::diagnosis::Severity;
use crate::model::report::{MessageReport, Report};
use crate::model::result::ProtocolResult;

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

pub(crate) fn render(report: &Report) -> Vec<u8> {
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
        crate::core::units::size_label(m.size_bytes),
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

    use crate::model::fixtures::{report as sample, snapshot};

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
