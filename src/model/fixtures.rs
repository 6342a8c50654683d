//! The shared test fixtures: a hand-built report (plain mail gets through, 1 MiB
//! is altered over IMAP and never reaches POP3, 5 MiB is refused), its parts, and
//! variants of it (healthy, TLS failure, shared outage) and the snapshot
//! comparison the exporters' tests use.

use crate::core::error::{ErrorKind, ProbeError};
use crate::core::phase::{Phase, Phases, Protocol};
use crate::core::tls_info::{CertificateInfo, TlsInfo};
use crate::model::diagnosis::{Cause, Code, Diagnosis, Severity};
use crate::model::report::{Cleanup, MessageReport, Report, Target, Verdict};
use crate::model::result::{ProtocolResult, Verification};

pub(crate) fn phases(list: &[(Phase, f64)]) -> Phases {
    list.iter().copied().collect()
}

fn tls(days: i64) -> Option<TlsInfo> {
    Some(TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        verified: true,
        verify_error: None,
        problem: None,
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

pub(crate) fn sent(list: &[(Phase, f64)]) -> ProtocolResult {
    let phases_ms = phases(list);
    ProtocolResult {
        ok: true,
        accepted: Some(true),
        total_ms: phases_ms.values().sum(),
        phases_ms,
        ..Default::default()
    }
}

pub(crate) fn fetched(list: &[(Phase, f64)], delivery_ms: f64, days: i64) -> ProtocolResult {
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

pub(crate) fn message(
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
        round: None,
    }
}

/// `r` found a copy whose attachment was renamed.
pub(crate) fn make_altered(r: &mut ProtocolResult) {
    r.ok = false;
    r.verified = Some(false);
    r.verification = Some(Verification {
        verified: false,
        bytes: 100,
        problems: vec!["the attachment was renamed".into()],
        attachment: None,
    });
    r.error = Some(
        ProbeError::new(ErrorKind::Altered, "the attachment was renamed")
            .at(Protocol::Imap, Phase::Fetch),
    );
}

/// `protocol` never saw the message before its delivery deadline.
pub(crate) fn not_delivered(protocol: Protocol) -> ProtocolResult {
    ProtocolResult {
        found: Some(false),
        error: Some(
            ProbeError::new(
                ErrorKind::NotDelivered,
                "not in the mailbox 8 s after the server accepted it",
            )
            .at(protocol, Phase::Delivery),
        ),
        ..Default::default()
    }
}

/// Plain mail gets through; 1 MiB is altered over IMAP and never reaches POP3;
/// 5 MiB is refused by SMTP.
pub(crate) fn report() -> Report {
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
    make_altered(&mut altered);
    let missing = not_delivered(Protocol::Pop3);
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
                reason: None,
                protocol: Some(Protocol::Smtp),
                evidence: vec!["5 MiB: 552 <too big>".into()],
                hints: vec!["raise message_size_limit & retry".into()],
            },
            Diagnosis {
                code: Code::Slow,
                severity: Severity::Degraded,
                summary: "POP3 delivery is slow".into(),
                cause: None,
                reason: None,
                protocol: Some(Protocol::Pop3),
                evidence: Vec::new(),
                hints: Vec::new(),
            },
        ],
        cleanup: Cleanup::default(),
        mx: None,
        stats: None,
        timeline: None,
        sessions: Default::default(),
        time_limit: None,
    }
}

/// Every rung gets through; one IMAP and one POP3 session serve all three.
pub(crate) fn healthy_report() -> Report {
    let mut r = report();
    let imap_session = [
        (Phase::Connect, 10.0),
        (Phase::Tls, 6.0),
        (Phase::Login, 20.0),
        (Phase::Select, 1.5),
    ];
    let pop3_session = [
        (Phase::Connect, 11.0),
        (Phase::Tls, 5.0),
        (Phase::Login, 9.0),
    ];
    r.messages = [0u64, 10 << 10, 1 << 20]
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let extra = i as f64 * 10.0;
            let imap: Vec<_> = imap_session
                .iter()
                .copied()
                .chain([(Phase::Search, 2.0 + extra), (Phase::Fetch, 5.0 + extra)])
                .collect();
            let pop3: Vec<_> = pop3_session
                .iter()
                .copied()
                .chain([(Phase::Stat, 1.0), (Phase::Fetch, 4.0 + extra)])
                .collect();
            message(
                size,
                sent(&[
                    (Phase::Connect, 12.5),
                    (Phase::Ehlo, 3.0),
                    (Phase::Data, 66.0 + extra),
                ]),
                fetched(&imap, 340.0 + extra, 30),
                fetched(&pop3, 1200.0 + extra, 30),
            )
        })
        .collect();
    r.target.sizes = r.messages.iter().map(|m| m.size_bytes).collect();
    r.verdict = Verdict::Healthy;
    r.summary =
        "All 3 messages (up to 1 MiB) were delivered and verified over IMAP and POP3.".into();
    r.diagnoses.clear();
    r
}

/// The SMTP STARTTLS handshake fails on certificate verification: nothing is sent.
pub(crate) fn tls_failure_report() -> Report {
    let mut r = report();
    let skipped = ProtocolResult {
        skipped: Some("SMTP did not accept the message".into()),
        ..Default::default()
    };
    for m in &mut r.messages {
        let mut tls = tls(30).unwrap();
        tls.version = String::new();
        tls.cipher = String::new();
        tls.verified = false;
        tls.verify_error = Some("invalid peer certificate: UnknownIssuer".into());
        m.smtp = ProtocolResult {
            accepted: Some(false),
            phases_ms: phases(&[(Phase::Connect, 2.0), (Phase::Ehlo, 1.0)]),
            total_ms: 3.0,
            tls: Some(tls),
            error: Some(
                ProbeError::new(ErrorKind::Tls, "invalid peer certificate: UnknownIssuer")
                    .at(Protocol::Smtp, Phase::Starttls),
            ),
            ..Default::default()
        };
        m.imap = Some(skipped.clone());
        m.pop3 = Some(skipped.clone());
    }
    r.summary = "SMTP TLS fails: the certificate is not trusted.".into();
    r.diagnoses = vec![Diagnosis {
        code: Code::TlsInvalid,
        severity: Severity::Failing,
        summary: "SMTP TLS handshake failed: invalid peer certificate (unknown issuer)".into(),
        cause: None,
        reason: None,
        protocol: Some(Protocol::Smtp),
        evidence: vec![
            "smtp starttls: invalid peer certificate: UnknownIssuer".into(),
            "".into(),
        ],
        hints: vec!["install the issuing CA or pass --ca-file".into()],
    }];
    r
}

/// Every protocol refuses the connection: a shared outage, not one service.
pub(crate) fn outage_report() -> Report {
    let mut r = report();
    let refused = |protocol| ProtocolResult {
        phases_ms: phases(&[(Phase::Connect, 0.4)]),
        total_ms: 0.4,
        error: Some(
            ProbeError::new(ErrorKind::Refused, "connection refused").at(protocol, Phase::Connect),
        ),
        ..Default::default()
    };
    for m in &mut r.messages {
        m.smtp = refused(Protocol::Smtp);
        m.imap = Some(refused(Protocol::Imap));
        m.pop3 = Some(refused(Protocol::Pop3));
    }
    r.summary = "The server is down: SMTP, IMAP and POP3 all refuse connections.".into();
    r.diagnoses = vec![Diagnosis {
        code: Code::SharedOutage,
        severity: Severity::Failing,
        summary: "SMTP, IMAP and POP3 all refuse connections".into(),
        cause: None,
        reason: None,
        protocol: None,
        evidence: vec!["smtp, imap, pop3 connect: connection refused".into()],
        hints: vec!["is the host up and are the services running?".into()],
    }];
    r
}

/// Compare with the reviewed snapshot; `MAILPROBE_BLESS=1` rewrites it.
pub(crate) fn snapshot(name: &str, expected: &str, got: &str) {
    if std::env::var_os("MAILPROBE_BLESS").is_some() {
        let path = format!("{}/tests/snapshots/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(path, got).unwrap();
        return;
    }
    assert_eq!(got, expected, "snapshot tests/snapshots/{name} differs");
}
