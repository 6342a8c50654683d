//! The Prometheus report passes `promtool check metrics` (format and lint).
//!
//! Needs `promtool`: on Debian/Ubuntu `apt-get install prometheus`, or put the
//! `promtool` binary from a Prometheus release on PATH. Without it this test fails.

use std::io::Write;
use std::process::{Command, Stdio};

use mailprobe::diagnosis::{Cause, Code, Diagnosis, Severity};
use mailprobe::error::{ErrorKind, ProbeError};
use mailprobe::phase::{Phase, Protocol};
use mailprobe::prober::ProtocolResult;
use mailprobe::report::{Cleanup, Format, MessageReport, Report, Target, Verdict};
use mailprobe::tls::{CertificateInfo, TlsInfo};

fn result(ok: bool, list: &[(Phase, f64)], delivery_ms: Option<f64>) -> ProtocolResult {
    let phases_ms: mailprobe::phase::Phases = list.iter().copied().collect();
    ProtocolResult {
        ok,
        total_ms: phases_ms.values().sum(),
        phases_ms,
        delivery_ms,
        ..Default::default()
    }
}

fn report() -> Report {
    let mut imap = result(
        true,
        &[(Phase::Connect, 10.0), (Phase::Fetch, 5.5)],
        Some(340.0),
    );
    imap.tls = Some(TlsInfo {
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
            days_to_expiry: -2,
        }),
    });
    let plain = MessageReport {
        probe_id: "mailprobe-1-0".into(),
        size_bytes: 0,
        attachment: false,
        encoded_bytes: 800,
        smtp: result(true, &[(Phase::Connect, 12.5), (Phase::Data, 66.0)], None),
        imap: Some(imap),
        pop3: None,
        round: None,
    };
    let mut refused = result(false, &[(Phase::Connect, 8.0)], None);
    refused.error = Some(
        ProbeError::new(ErrorKind::Rejected, "552 message too big").at(Protocol::Smtp, Phase::Data),
    );
    let big = MessageReport {
        probe_id: "mailprobe-1-100000".into(),
        size_bytes: 1 << 20,
        attachment: true,
        encoded_bytes: 1_400_000,
        smtp: refused,
        imap: Some(ProtocolResult {
            skipped: Some("SMTP did not accept the message".into()),
            ..Default::default()
        }),
        pop3: None,
        round: None,
    };
    Report {
        mailprobe_version: "0.1.0".into(),
        started_at: "2026-11-25T00:00:00Z".into(),
        duration_ms: 1234.5,
        verdict: Verdict::Failing,
        summary: "attachments fail".into(),
        target: Target {
            smtp: "smtp://h:587".into(),
            imap: Some("imaps://h:993".into()),
            pop3: None,
            from: "a@h".into(),
            to: "a@h".into(),
            sizes: vec![0, 1 << 20],
            insecure: false,
        },
        smtp_server: None,
        messages: vec![plain, big],
        size_limit: None,
        diagnoses: vec![
            Diagnosis {
                code: Code::AttachmentsFail,
                severity: Severity::Failing,
                summary: "\"<&>\nsecond line".into(),
                cause: Some(Cause::SizeLimit),
                protocol: Some(Protocol::Smtp),
                evidence: vec![],
                hints: vec![],
            },
            Diagnosis {
                code: Code::TlsInvalid,
                severity: Severity::Failing,
                summary: "expired".into(),
                cause: None,
                protocol: Some(Protocol::Imap),
                evidence: vec![],
                hints: vec![],
            },
        ],
        cleanup: Cleanup::default(),
        mx: None,
        stats: None,
    }
}

#[test]
fn prometheus_report_passes_promtool() {
    let metrics = Format::Prometheus.render(&report());
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}): install it to run this test, e.g. \
             `apt-get install prometheus` on Debian/Ubuntu, or put the promtool binary \
             from https://prometheus.io/download/ on PATH"
        ),
    };
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
