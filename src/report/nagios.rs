//! `--format nagios`: the monitoring-plugins convention. The first line is
//! `MAILPROBE OK|WARNING|CRITICAL - <summary> | <perfdata>`; every further line is
//! one diagnosis, `code: summary`. The exit code comes from [`super::Verdict::exit_code`].
//!
//! Perfdata is `'label'=value[UOM];warn;crit;min;max`, durations in seconds (`s`),
//! sizes in bytes (`B`); thresholds are left empty.

use std::fmt::Write;

use super::{MessageReport, Report, Verdict};
use crate::phase::{Phase, Protocol};
use crate::prober::ProtocolResult;

pub fn render(report: &Report) -> Vec<u8> {
    let status = match report.verdict {
        Verdict::Healthy => "OK",
        Verdict::Degraded => "WARNING",
        Verdict::Failing => "CRITICAL",
    };
    let summary = if report.summary.trim().is_empty() {
        report.verdict.as_str().to_string()
    } else {
        one_line(&report.summary)
    };
    let mut perf: Vec<String> = Vec::new();
    perf.push(metric("duration", &seconds(report.duration_ms), "s"));
    for m in &report.messages {
        let size = message_label(m);
        perf.push(metric(
            &format!("encoded_{size}"),
            &m.encoded_bytes.to_string(),
            "B",
        ));
        let results = std::iter::once((Protocol::Smtp, &m.smtp)).chain(m.retrievals());
        for (protocol, result) in results {
            push_protocol(&mut perf, protocol, &size, result);
        }
    }

    let mut o = String::new();
    let _ = writeln!(o, "MAILPROBE {status} - {summary} | {}", perf.join(" "));
    for d in &report.diagnoses {
        let _ = writeln!(o, "{}: {}", d.code.as_str(), one_line(&d.summary));
    }
    o.into_bytes()
}

fn push_protocol(perf: &mut Vec<String>, protocol: Protocol, size: &str, r: &ProtocolResult) {
    let p = protocol.as_str();
    for (phase, ms) in &r.phases_ms {
        // Delivery is reported from `delivery_ms` below, under the same label.
        if *phase == Phase::Delivery && r.delivery_ms.is_some() {
            continue;
        }
        perf.push(metric(
            &format!("{p}_{}_{size}", phase.as_str()),
            &seconds(*ms),
            "s",
        ));
    }
    if let Some(ms) = r.delivery_ms {
        perf.push(metric(&format!("{p}_delivery_{size}"), &seconds(ms), "s"));
    }
}

/// `plain` for the plain text message, else the attachment size (`10KiB`, `1MiB`).
fn message_label(m: &MessageReport) -> String {
    if m.attachment {
        crate::units::size_label(m.size_bytes)
    } else {
        "plain".to_string()
    }
}

/// `'label'=value;;;0` with an empty warn/crit and a minimum of 0.
fn metric(label: &str, value: &str, uom: &str) -> String {
    // Quote labels; a quote inside a label is written twice.
    let label = one_line(label).replace('\'', "''").replace('=', "_");
    format!("'{label}'={value}{uom};;;0")
}

/// Milliseconds as seconds, without trailing zeros: `66.0` → `0.066`.
fn seconds(ms: f64) -> String {
    if !ms.is_finite() {
        return "0".to_string();
    }
    let s = format!("{:.6}", ms.max(0.0) / 1000.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() { "0".into() } else { s.into() }
}

/// Plugin output is line-oriented and `|` starts performance data.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\r' | '\n' => ' ',
            '|' => '/',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::render;

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
            "nagios.txt",
            include_str!("../../tests/snapshots/nagios.txt"),
            &got,
        );
    }

    #[test]
    fn status_follows_verdict_and_output_stays_line_oriented() {
        let mut r = sample();
        for (verdict, status) in [
            (Verdict::Healthy, "MAILPROBE OK - "),
            (Verdict::Degraded, "MAILPROBE WARNING - "),
            (Verdict::Failing, "MAILPROBE CRITICAL - "),
        ] {
            r.verdict = verdict;
            let out = String::from_utf8(render(&r)).unwrap();
            assert!(out.starts_with(status), "{out}");
        }
        let out = String::from_utf8(render(&r)).unwrap();
        // One status line plus one line per diagnosis; the newline and `|` of the
        // summary do not break lines or start perfdata.
        assert_eq!(out.lines().count(), 1 + r.diagnoses.len());
        assert_eq!(out.matches('|').count(), 1);
        assert!(out.contains("attachments_fail: Attachments fail: \"<&>' second line / x\n"));
        assert!(out.contains("'smtp_data_plain'=0.066s;;;0"));
        assert!(out.contains("'imap_delivery_1MiB'=0.5s;;;0"));
    }
}
