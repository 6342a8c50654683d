//! `--format nagios`: the monitoring-plugins convention. The first line is
//! `MAILPROBE OK|WARNING|CRITICAL - <summary> | <perfdata>`; every further line is
//! one diagnosis, `code: summary`. The exit code comes from [`super::Verdict::exit_code`].
//!
//! Perfdata is `'label'=value[UOM];warn;crit;min;max`, durations in seconds (`s`),
//! sizes in bytes (`B`); thresholds are left empty.

use std::fmt::Write;

use crate::core::phase::{Phase, Protocol};
use crate::model::report::{MessageReport, Report, Verdict};
use crate::model::result::ProtocolResult;

pub(crate) fn render(report: &Report) -> Vec<u8> {
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

    for service in report.timeline.iter().flat_map(|t| t.services.iter()) {
        perf.push(metric(
            &format!("{}_restarts", service.protocol.as_str()),
            &service.restarts.to_string(),
            "",
        ));
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
        crate::core::units::size_label(m.size_bytes)
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

    use crate::model::fixtures::{report as sample, snapshot};
    use crate::model::report::Verdict;

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
