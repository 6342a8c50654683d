//! `--format prometheus`: the text exposition format, for the node-exporter
//! textfile collector. Every family is a gauge, written once with `# HELP` and
//! `# TYPE`, its samples in a fixed order; families without samples are left out.
//! Certificate expiry is `mailprobe_tls_cert_expiry_seconds` (whole days × 86400),
//! as promtool's lint wants base units. `probe_success`, `probe_duration_seconds`
//! and `probe_ssl_earliest_cert_expiry` carry the blackbox_exporter's names and
//! meanings, so that dashboards and alerts written for it work on `serve`.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::core::phase::Protocol;
use crate::model::diagnosis::Severity;
use crate::model::report::{MessageReport, Report, Verdict};

/// One metric family: name, help, and samples as (label pairs, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }
    /// Add a sample; a label set already present keeps its first value.
    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        if !self.samples.iter().any(|(l, _)| *l == labels) {
            self.samples.push((labels, value));
        }
    }
    fn write(&self, o: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(o, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(o, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            o.push_str(self.name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = write!(o, "{{{}}}", pairs.join(","));
            }
            let _ = writeln!(o, " {}", number(*value));
        }
    }
}

pub(crate) fn render(report: &Report) -> Vec<u8> {
    let mut success = Family::new(
        "mailprobe_success",
        "Whether the mail check was healthy (1) or not (0).",
    );
    success.add(vec![], bool_value(report.verdict == Verdict::Healthy));

    let mut probe_success = Family::new(
        "probe_success",
        "Whether the probe succeeded: 1 when the mail check was healthy (blackbox_exporter's name).",
    );
    probe_success.add(vec![], bool_value(report.verdict == Verdict::Healthy));

    let mut verdict = Family::new(
        "mailprobe_verdict",
        "The verdict of the mail check: 1 for the current verdict, 0 for the others.",
    );
    for v in [Verdict::Healthy, Verdict::Degraded, Verdict::Failing] {
        verdict.add(
            vec![("verdict", v.as_str().to_string())],
            bool_value(report.verdict == v),
        );
    }

    let mut phases = Family::new(
        "mailprobe_phase_duration_seconds",
        "Duration of one protocol phase for one probe message.",
    );
    let mut delivery = Family::new(
        "mailprobe_delivery_seconds",
        "Time from SMTP acceptance until the retrieval protocol saw the message.",
    );
    let mut message_ok = Family::new(
        "mailprobe_message_ok",
        "Whether the protocol handled the probe message (sent, or found and verified).",
    );
    let mut expiry: BTreeMap<Protocol, i64> = BTreeMap::new();
    let mut earliest_not_after: Option<f64> = None;
    for m in &report.messages {
        let size = message_label(m);
        let results = std::iter::once((Protocol::Smtp, &m.smtp)).chain(m.retrievals());
        for (protocol, r) in results {
            let p = protocol.as_str();
            for (phase, ms) in &r.phases_ms {
                phases.add(
                    vec![
                        ("protocol", p.to_string()),
                        ("phase", phase.as_str().to_string()),
                        ("size", size.clone()),
                    ],
                    ms / 1000.0,
                );
            }
            if let Some(ms) = r.delivery_ms {
                delivery.add(
                    vec![("protocol", p.to_string()), ("size", size.clone())],
                    ms / 1000.0,
                );
            }
            message_ok.add(
                vec![("protocol", p.to_string()), ("size", size.clone())],
                bool_value(r.ok),
            );
            if let Some(cert) = r.tls.as_ref().and_then(|t| t.certificate.as_ref()) {
                let days = expiry.entry(protocol).or_insert(cert.days_to_expiry);
                *days = (*days).min(cert.days_to_expiry);
                if let Some(at) = unix_seconds(&cert.not_after) {
                    earliest_not_after = Some(earliest_not_after.map_or(at, |e| e.min(at)));
                }
            }
        }
    }

    let mut diagnosis = Family::new(
        "mailprobe_diagnosis",
        "Diagnoses of the mail check: the number found with these labels.",
    );
    let mut counts: Vec<(Vec<(&'static str, String)>, f64)> = Vec::new();
    for d in &report.diagnoses {
        let labels = vec![
            ("code", d.code.as_str().to_string()),
            (
                "severity",
                match d.severity {
                    Severity::Degraded => "degraded",
                    Severity::Failing => "failing",
                }
                .to_string(),
            ),
            (
                "cause",
                d.cause.map(|c| c.as_str().to_string()).unwrap_or_default(),
            ),
        ];
        match counts.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, n)) => *n += 1.0,
            None => counts.push((labels, 1.0)),
        }
    }
    for (labels, n) in counts {
        diagnosis.add(labels, n);
    }

    // Seconds, not days: Prometheus names use base units (`promtool check metrics`).
    let mut cert = Family::new(
        "mailprobe_tls_cert_expiry_seconds",
        "Seconds until the server certificate expires (the soonest seen, whole days); negative once expired.",
    );
    for (protocol, days) in expiry {
        cert.add(
            vec![("protocol", protocol.as_str().to_string())],
            (days * 86_400) as f64,
        );
    }

    let mut earliest_cert = Family::new(
        "probe_ssl_earliest_cert_expiry",
        "Unix time in seconds when the soonest expiring server certificate seen expires (blackbox_exporter's name).",
    );
    if let Some(at) = earliest_not_after {
        earliest_cert.add(vec![], at);
    }

    let mut restarts = Family::new(
        "mailprobe_restarts",
        "Restarts the liveness sampler saw during the check, per service (down and back, or a changed greeting).",
    );
    for service in report.timeline.iter().flat_map(|t| t.services.iter()) {
        restarts.add(
            vec![("protocol", service.protocol.as_str().to_string())],
            f64::from(service.restarts),
        );
    }

    let mut duration = Family::new(
        "mailprobe_duration_seconds",
        "Wall-clock duration of the whole mail check.",
    );
    duration.add(vec![], report.duration_ms / 1000.0);
    let mut probe_duration = Family::new(
        "probe_duration_seconds",
        "How long the probe took to complete in seconds (blackbox_exporter's name).",
    );
    probe_duration.add(vec![], report.duration_ms / 1000.0);

    let mut o = String::new();
    for family in [
        probe_success,
        probe_duration,
        earliest_cert,
        success,
        verdict,
        phases,
        delivery,
        message_ok,
        diagnosis,
        cert,
        restarts,
        duration,
    ] {
        family.write(&mut o);
    }
    o.into_bytes()
}

/// `plain` for the plain text message, else the attachment size (`10KiB`, `1MiB`).
fn message_label(m: &MessageReport) -> String {
    if m.attachment {
        crate::core::units::size_label(m.size_bytes)
    } else {
        "plain".to_string()
    }
}

/// An RFC 3339 time (a certificate's `not_after`) as Unix seconds.
fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let at = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    Some(match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => after.as_secs() as f64,
        Err(before) => -(before.duration().as_secs() as f64),
    })
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// A sample value: Go-style special values, otherwise the shortest exact decimal.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        // Round away float noise from ms → s (durations are kept to the microsecond).
        let rounded = (v * 1e9).round() / 1e9;
        format!("{rounded}")
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text escapes backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::{escape_label, number, render};

    use crate::model::fixtures::{report as sample, snapshot};
    use crate::model::report::Verdict;

    #[test]
    fn snapshot_matches() {
        let got = String::from_utf8(render(&sample())).unwrap();
        snapshot(
            "prometheus.txt",
            include_str!("../../tests/snapshots/prometheus.txt"),
            &got,
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"<&>\\\nb"), "a\\\"<&>\\\\\\nb");
        assert_eq!(number(0.066000000000001), "0.066");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(-3.0), "-3");
    }

    #[test]
    fn every_family_once_and_well_formed() {
        let mut r = sample();
        r.verdict = Verdict::Healthy;
        let out = String::from_utf8(render(&r)).unwrap();
        assert!(
            out.contains("\nmailprobe_success 1\n") || out.starts_with("# HELP mailprobe_success")
        );
        let mut names = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(kind, "gauge");
                assert!(!names.contains(&name.to_string()), "{name} twice");
                names.push(name.to_string());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(
                    Some(&name.to_string()),
                    names.last(),
                    "{line}: sample outside its family"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(out.ends_with('\n'));
        for name in [
            "probe_success",
            "probe_duration_seconds",
            "probe_ssl_earliest_cert_expiry",
        ] {
            assert!(names.contains(&name.to_string()), "{name} missing:\n{out}");
        }
        assert!(out.contains("\nprobe_success 1\n"), "{out}");
    }

    #[test]
    fn earliest_certificate_expiry_is_unix_seconds() {
        assert_eq!(
            super::unix_seconds("2027-01-01T00:00:00Z"),
            Some(1_798_761_600.0)
        );
        assert_eq!(super::unix_seconds("not a time"), None);
    }

    /// The output passes `promtool check metrics` (format and lint), also with an
    /// expired certificate and markup and newlines in a summary. Needs promtool
    /// (`apt-get install prometheus`); without it the test fails and says so.
    #[test]
    fn passes_promtool() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut report = sample();
        for m in &mut report.messages {
            if let Some(c) = m
                .imap
                .as_mut()
                .and_then(|r| r.tls.as_mut())
                .and_then(|t| t.certificate.as_mut())
            {
                c.days_to_expiry = -2;
            }
        }
        let metrics = render(&report);
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run promtool ({e}): install it to run this test, e.g. \
                     `apt-get install prometheus` on Debian/Ubuntu (scripts/test.sh does)"
                )
            });
        child.stdin.take().unwrap().write_all(&metrics).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed ({}):\n{}{}\n--- metrics ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&metrics)
        );
    }
}
