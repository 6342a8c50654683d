//! Diagnosis on hand-built reports: each signature, and never healthy when a
//! message failed.

use super::*;
use crate::core::classify::ReplyClass;
use crate::core::error::ProbeError;
use crate::core::phase::Phases;
use crate::core::reply::Reply;
use crate::model::diagnosis::Cause;
use crate::model::fixtures;
use crate::model::report::{Cleanup, Target};
use crate::model::result::SmtpServerInfo;

fn phases(list: &[(Phase, f64)]) -> Phases {
    list.iter().copied().collect()
}

fn delivered(size: u64) -> MessageReport {
    let ok = ProtocolResult {
        ok: true,
        found: Some(true),
        verified: Some(true),
        delivery_ms: Some(40.0),
        phases_ms: phases(&[(Phase::Connect, 1.0), (Phase::Fetch, 2.0)]),
        ..Default::default()
    };
    MessageReport {
        probe_id: format!("mailprobe-1-{size:x}"),
        size_bytes: size,
        attachment: size > 0,
        encoded_bytes: size * 4 / 3 + 800,
        smtp: ProtocolResult {
            ok: true,
            accepted: Some(true),
            phases_ms: phases(&[(Phase::Connect, 1.0), (Phase::Data, 5.0)]),
            ..Default::default()
        },
        imap: Some(ok.clone()),
        pop3: Some(ok),
        round: None,
    }
}

fn smtp_failed(size: u64, err: ProbeError) -> MessageReport {
    let mut m = delivered(size);
    m.smtp = ProtocolResult {
        accepted: Some(false),
        reply: err.reply.clone(),
        error: Some(err),
        ..Default::default()
    };
    let skipped = ProtocolResult {
        skipped: Some("SMTP did not accept the message".into()),
        ..Default::default()
    };
    m.imap = Some(skipped.clone());
    m.pop3 = Some(skipped);
    m
}

fn retrieval(m: &mut MessageReport, f: impl Fn(&mut ProtocolResult)) {
    for r in [m.imap.as_mut(), m.pop3.as_mut()].into_iter().flatten() {
        f(r);
    }
}

fn not_delivered(size: u64) -> MessageReport {
    let mut m = delivered(size);
    retrieval(&mut m, |r| *r = fixtures::not_delivered(Protocol::Imap));
    m
}

fn altered(size: u64) -> MessageReport {
    let mut m = delivered(size);
    retrieval(&mut m, fixtures::make_altered);
    m
}

fn report(messages: Vec<MessageReport>) -> Report {
    let mut r = Report {
        mailprobe_version: "0".into(),
        started_at: "2026-11-25T00:00:00Z".into(),
        duration_ms: 1.0,
        verdict: Verdict::Healthy,
        summary: String::new(),
        target: Target {
            smtp: "smtp://h:587".into(),
            imap: Some("imaps://h:993".into()),
            pop3: Some("pop3s://h:995".into()),
            from: "a@h".into(),
            to: "a@h".into(),
            sizes: messages.iter().map(|m| m.size_bytes).collect(),
            insecure: false,
        },
        smtp_server: Some(SmtpServerInfo {
            banner: "h ESMTP".into(),
            capabilities: vec!["SIZE 10240000".into()],
            advertised_size: Some(10_240_000),
            ..Default::default()
        }),
        messages,
        size_limit: None,
        diagnoses: Vec::new(),
        cleanup: Cleanup::default(),
        mx: None,
        stats: None,
        timeline: None,
        sessions: Default::default(),
        time_limit: None,
    };
    apply(&mut r, &Thresholds::default());
    r
}

fn codes(r: &Report) -> Vec<(Code, Option<Cause>)> {
    r.diagnoses.iter().map(|d| (d.code, d.cause)).collect()
}

fn data_error(kind: ErrorKind, reply: Option<Reply>) -> ProbeError {
    let mut e = match reply {
        Some(r) => ProbeError::rejected(r),
        None => ProbeError::new(kind, "connection reset by peer"),
    };
    e.kind = kind;
    e.at(Protocol::Smtp, Phase::Data)
}

#[test]
fn healthy_has_no_diagnoses() {
    let r = report(vec![delivered(0), delivered(10240), delivered(1 << 20)]);
    assert!(r.diagnoses.is_empty(), "{:?}", r.diagnoses);
    assert_eq!(r.verdict, Verdict::Healthy);
    assert!(r.summary.contains("verified"));
}

#[test]
fn size_limit_signature_names_the_reply_and_advertised_size() {
    let refused = Reply::smtp(552, "5.3.4 Message size exceeds fixed limit");
    let r = report(vec![
        delivered(0),
        delivered(10240),
        smtp_failed(
            1 << 20,
            data_error(ErrorKind::Rejected, Some(refused.clone())),
        ),
        smtp_failed(5 << 20, data_error(ErrorKind::Rejected, Some(refused))),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::SizeLimit))]
    );
    assert_eq!(r.verdict, Verdict::Failing);
    assert!(r.summary.contains("552 5.3.4"), "{}", r.summary);
    assert!(r.summary.contains("1 MiB"), "{}", r.summary);
    assert!(
        r.summary.contains("Advertised SIZE 10240000"),
        "{}",
        r.summary
    );
}

#[test]
fn bisected_limit_that_disagrees_with_the_advertised_size() {
    let refused = Reply::smtp(552, "5.3.4 Message size exceeds fixed limit");
    let mut r = report(vec![
        delivered(0),
        smtp_failed(5 << 20, data_error(ErrorKind::Rejected, Some(refused))),
    ]);
    r.size_limit = Some(crate::model::report::SizeLimit {
        largest_accepted_bytes: 1_030_000,
        smallest_refused_bytes: 1_060_000,
        estimate_bytes: 1_045_000,
        sends: 7,
        advertised_bytes: Some(10_240_000),
        advertised_disagrees: true,
    });
    apply(&mut r, &Thresholds::default());
    assert!(
        r.summary
            .contains("Advertised SIZE 10240000 but the real limit is about 1020.5 KiB"),
        "{}",
        r.summary
    );
    assert!(
        r.diagnoses[0]
            .evidence
            .iter()
            .any(|e| e.contains("7 extra sends"))
    );
}

#[test]
fn size_limit_at_mail_from_counts_too() {
    let refused = Reply::smtp(552, "5.3.4 Message size exceeds fixed maximum message size");
    let mut e = ProbeError::rejected(refused).at(Protocol::Smtp, Phase::MailFrom);
    e.kind = ErrorKind::Rejected;
    let r = report(vec![delivered(0), smtp_failed(5 << 20, e)]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::SizeLimit))]
    );
}

#[test]
fn dropped_session_on_attachments() {
    let r = report(vec![
        delivered(0),
        smtp_failed(10240, data_error(ErrorKind::Reset, None)),
        smtp_failed(1 << 20, data_error(ErrorKind::Closed, None)),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::SessionDropped))]
    );
    assert!(r.diagnoses[0].hints.iter().any(|h| h.contains("7031")));
}

#[test]
fn content_rejection_and_timeout() {
    let r = report(vec![
        delivered(0),
        smtp_failed(
            10240,
            data_error(
                ErrorKind::Rejected,
                Some(Reply::smtp(554, "5.7.1 attachments not allowed")),
            ),
        ),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::Rejected))]
    );
    let r = report(vec![
        delivered(0),
        delivered(10240),
        smtp_failed(5 << 20, data_error(ErrorKind::Timeout, None)),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::Timeout))]
    );
}

#[test]
fn accepted_but_not_delivered() {
    let r = report(vec![
        delivered(0),
        not_delivered(10240),
        not_delivered(1 << 20),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::NotDelivered))]
    );
    let r = report(vec![not_delivered(0), not_delivered(10240)]);
    assert_eq!(
        codes(&r),
        vec![(Code::NotDelivered, Some(Cause::NotDelivered))]
    );
}

#[test]
fn altered_attachments() {
    let r = report(vec![delivered(0), altered(10240)]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::Altered))]
    );
}

#[test]
fn ambiguous_mix_without_size_pattern_is_intermittent() {
    // The plain message fails while a larger one passes: not the attachment signature.
    let r = report(vec![
        smtp_failed(0, data_error(ErrorKind::Reset, None)),
        delivered(10240),
        smtp_failed(1 << 20, data_error(ErrorKind::Reset, None)),
    ]);
    assert_eq!(codes(&r)[0].0, Code::Intermittent);
    assert_eq!(r.verdict, Verdict::Failing);
}

#[test]
fn mixed_causes_lead_with_the_smallest_failure() {
    let refused = Reply::smtp(552, "5.3.4 too big");
    let r = report(vec![
        delivered(0),
        smtp_failed(10240, data_error(ErrorKind::Reset, None)),
        smtp_failed(5 << 20, data_error(ErrorKind::Rejected, Some(refused))),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::SessionDropped))]
    );
    assert_eq!(
        r.diagnoses[0]
            .evidence
            .iter()
            .filter(|e| e.contains("attachment"))
            .count(),
        2
    );
}

#[test]
fn one_endpoint_down_and_everything_down() {
    let refused = |p: Protocol| {
        ProbeError::new(ErrorKind::Refused, "connection refused").at(p, Phase::Connect)
    };
    let mut pop3_down = vec![delivered(0), delivered(10240)];
    for m in &mut pop3_down {
        m.pop3 = Some(ProtocolResult::failed(
            refused(Protocol::Pop3),
            Phases::new(),
        ));
    }
    let r = report(pop3_down);
    assert_eq!(codes(&r), vec![(Code::EndpointDown, None)]);
    assert_eq!(r.diagnoses[0].protocol, Some(Protocol::Pop3));
    assert!(r.diagnoses[0].summary.contains("connect"));

    let mut all_down = vec![
        smtp_failed(0, refused(Protocol::Smtp)),
        smtp_failed(10240, refused(Protocol::Smtp)),
    ];
    for m in &mut all_down {
        m.imap = Some(ProtocolResult::failed(
            refused(Protocol::Imap),
            Phases::new(),
        ));
        m.pop3 = Some(ProtocolResult::failed(
            refused(Protocol::Pop3),
            Phases::new(),
        ));
    }
    let r = report(all_down);
    assert_eq!(codes(&r), vec![(Code::SharedOutage, None)]);
    assert_eq!(r.verdict, Verdict::Failing);
}

#[test]
fn auth_failure_names_the_protocol() {
    let e = ProbeError::rejected(Reply::textual(
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
    ))
    .with_kind(ErrorKind::Auth)
    .at(Protocol::Imap, Phase::Login);
    let mut ms = vec![delivered(0)];
    ms[0].imap = Some(ProtocolResult::failed(e, Phases::new()));
    let r = report(ms);
    assert_eq!(r.diagnoses[0].code, Code::AuthFailed);
    assert_eq!(r.diagnoses[0].protocol, Some(Protocol::Imap));
    assert_eq!(r.verdict, Verdict::Failing);
}

#[test]
fn a_broken_fetch_on_the_only_retrieval_protocol_is_failing() {
    let mut ms = vec![delivered(0), delivered(10240)];
    for m in &mut ms {
        m.imap = None;
    }
    ms[1].pop3 = Some(ProtocolResult::failed(
        ProbeError::new(ErrorKind::Closed, "closed mid-transfer").at(Protocol::Pop3, Phase::Fetch),
        Phases::new(),
    ));
    let mut r = report(ms);
    r.target.imap = None;
    apply(&mut r, &Thresholds::default());
    assert_eq!(codes(&r), vec![(Code::RetrievalPartial, None)]);
    assert_eq!(r.verdict, Verdict::Failing);
    assert!(
        r.summary.contains("no protocol could retrieve"),
        "{}",
        r.summary
    );
}

#[test]
fn partial_retrieval_is_degraded() {
    let mut ms = vec![delivered(0), delivered(10240)];
    ms[1].pop3 = Some(ProtocolResult::failed(
        ProbeError::new(ErrorKind::Reset, "reset").at(Protocol::Pop3, Phase::Fetch),
        Phases::new(),
    ));
    let r = report(ms);
    assert_eq!(codes(&r), vec![(Code::RetrievalPartial, None)]);
    assert_eq!(r.verdict, Verdict::Degraded);
}

#[test]
fn slow_phase_is_degraded_and_named() {
    let mut ms = vec![delivered(0)];
    ms[0].smtp.phases_ms.insert(Phase::Greeting, 5000.0);
    let r = report(ms);
    assert_eq!(codes(&r), vec![(Code::Slow, None)]);
    assert!(r.diagnoses[0].summary.contains("greeting"));
    assert_eq!(r.verdict, Verdict::Degraded);
}

#[test]
fn tls_problems() {
    let mut ms = vec![delivered(0)];
    ms[0].imap = Some(ProtocolResult::failed(
        ProbeError::new(ErrorKind::Tls, "invalid peer certificate: UnknownIssuer")
            .at(Protocol::Imap, Phase::Tls),
        Phases::new(),
    ));
    let r = report(ms);
    assert_eq!(r.diagnoses[0].code, Code::TlsInvalid);
    assert_eq!(r.diagnoses[0].severity, Severity::Failing);

    let mut ms = vec![delivered(0)];
    ms[0].smtp.tls = Some(crate::core::tls_info::TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        verified: true,
        verify_error: None,
        problem: None,
        name_matches: true,
        certificate: Some(crate::core::tls_info::CertificateInfo {
            subject: "CN=h".into(),
            issuer: "CN=ca".into(),
            sans: vec!["h".into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2026-11-30T00:00:00Z".into(),
            days_to_expiry: 5,
        }),
    });
    let r = report(ms);
    assert_eq!(codes(&r), vec![(Code::TlsInvalid, None)]);
    assert_eq!(r.verdict, Verdict::Degraded);
    assert!(r.summary.contains("5 day"));
}

#[test]
fn leftovers_are_degraded() {
    let mut r = report(vec![delivered(0)]);
    r.cleanup.leftovers.push("mailprobe-1-0".into());
    apply(&mut r, &Thresholds::default());
    assert_eq!(codes(&r), vec![(Code::CleanupIncomplete, None)]);
    assert_eq!(r.verdict, Verdict::Degraded);
}

#[test]
fn never_healthy_when_a_message_failed() {
    let r = report(vec![smtp_failed(
        0,
        data_error(ErrorKind::Rejected, Some(Reply::smtp(554, "5.7.1 no"))),
    )]);
    assert_ne!(r.verdict, Verdict::Healthy);
    assert_eq!(codes(&r), vec![(Code::SendFailed, Some(Cause::Rejected))]);
}

#[test]
fn added_diagnoses_settle_verdict_and_summary_like_the_first_ones() {
    let extra = |code: Code, severity: Severity, summary: &str| Diagnosis {
        code,
        severity,
        summary: summary.into(),
        cause: None,
        reason: None,
        protocol: None,
        evidence: Vec::new(),
        hints: Vec::new(),
    };
    let mut r = report(vec![delivered(0)]);
    apply(&mut r, &Thresholds::default());
    assert_eq!(r.verdict, Verdict::Healthy);
    let healthy_summary = r.summary.clone();
    add(&mut r, Vec::new());
    assert_eq!(
        (r.verdict, &r.summary),
        (Verdict::Healthy, &healthy_summary)
    );
    add(
        &mut r,
        vec![extra(Code::Regression, Severity::Degraded, "slower")],
    );
    assert_eq!(
        (r.verdict, r.summary.as_str()),
        (Verdict::Degraded, "slower")
    );
    add(
        &mut r,
        vec![extra(Code::NotStable, Severity::Failing, "flapping")],
    );
    assert_eq!(
        (r.verdict, r.summary.as_str()),
        (Verdict::Failing, "flapping")
    );
    assert_eq!(r.diagnoses[0].code, Code::NotStable, "worst first");
    // Diagnosing again gives what `apply` gives from scratch.
    let mut again = r.clone();
    apply(&mut again, &Thresholds::default());
    assert_eq!(
        (again.verdict, again.summary),
        (Verdict::Healthy, healthy_summary)
    );
}

#[test]
fn time_limit_names_the_phase_that_used_it_up() {
    let mut m = delivered(5 << 20);
    retrieval(&mut m, |r| {
        *r = ProtocolResult {
            found: Some(false),
            error: Some(
                ProbeError::new(
                    ErrorKind::Timeout,
                    "the check's time limit (--timeout 8.0 s) ran out",
                )
                .at(Protocol::Imap, Phase::Delivery),
            ),
            ..Default::default()
        }
    });
    let mut r = report(vec![delivered(0), m]);
    assert!(!codes(&r).contains(&(Code::TimeLimit, None)), "not reached");
    r.time_limit = Some(crate::model::report::TimeLimit {
        timeout_ms: 8000.0,
        reached: true,
        protocol: Some(Protocol::Imap),
        phase: Some(Phase::Delivery),
    });
    apply(&mut r, &Thresholds::default());
    let d = r
        .diagnoses
        .iter()
        .find(|d| d.code == Code::TimeLimit)
        .expect("a time_limit diagnosis");
    assert_eq!(d.severity, Severity::Failing);
    assert!(d.summary.contains("IMAP delivery"), "{}", d.summary);
    assert!(
        d.evidence.iter().any(|e| e.contains("1 of 2 message(s)")),
        "{:?}",
        d.evidence
    );
    assert_eq!(r.verdict, Verdict::Failing);
}

fn classified(phase: Phase, reply: Reply, class: ReplyClass) -> ProbeError {
    let mut e = ProbeError::rejected(reply).at(Protocol::Smtp, phase);
    e.class = Some(class);
    e
}

#[test]
fn session_refusals_have_their_own_codes_not_the_content_filter_hint() {
    let rows = [
        (
            Phase::MailFrom,
            Reply::smtp(530, "5.7.0 Authentication required"),
            ReplyClass::AuthRequired,
            Code::AuthRequired,
            Severity::Failing,
        ),
        (
            Phase::MailFrom,
            Reply::smtp(530, "5.7.0 Must issue a STARTTLS command first"),
            ReplyClass::TlsRequired,
            Code::TlsRequired,
            Severity::Failing,
        ),
        (
            Phase::RcptTo,
            Reply::smtp(550, "relay not permitted"),
            ReplyClass::RelayDenied,
            Code::RelayDenied,
            Severity::Failing,
        ),
        (
            Phase::RcptTo,
            Reply::smtp(550, "Unrouteable address"),
            ReplyClass::UnknownRecipient,
            Code::UnknownRecipient,
            Severity::Failing,
        ),
        (
            Phase::MailFrom,
            Reply::smtp(421, "4.7.0 Too many connections"),
            ReplyClass::RateLimited,
            Code::RateLimited,
            Severity::Degraded,
        ),
        (
            Phase::RcptTo,
            Reply::smtp(450, "4.2.0 Greylisted, try again later"),
            ReplyClass::Greylisted,
            Code::Greylisted,
            Severity::Degraded,
        ),
    ];
    for (phase, reply, class, code, severity) in rows {
        let r = report(vec![
            smtp_failed(0, classified(phase, reply.clone(), class)),
            smtp_failed(10240, classified(phase, reply.clone(), class)),
        ]);
        assert_eq!(codes(&r), vec![(code, None)], "{reply}");
        assert_eq!(r.verdict, severity.verdict(), "{reply}");
        let d = &r.diagnoses[0];
        assert_eq!(d.protocol, Some(Protocol::Smtp));
        assert!(d.summary.contains(&reply.to_string()), "{}", d.summary);
        assert!(d.summary.contains("2 message(s)"), "{}", d.summary);
        assert!(
            !d.hints.iter().any(|h| h.contains("content filter")),
            "{:?}",
            d.hints
        );
        assert_eq!(d.evidence.len(), 2, "{:?}", d.evidence);
    }
}

#[test]
fn a_skipped_auth_is_evidence_for_auth_required() {
    let reply = Reply::smtp(530, "5.7.0 Authentication required");
    let mut r = report(vec![smtp_failed(
        0,
        classified(Phase::MailFrom, reply, ReplyClass::AuthRequired),
    )]);
    r.smtp_server
        .as_mut()
        .unwrap()
        .notes
        .push("AUTH was not used: not offered".into());
    apply(&mut r, &Thresholds::default());
    assert!(
        r.diagnoses[0]
            .evidence
            .iter()
            .any(|e| e.contains("AUTH was not used"))
    );
}

#[test]
fn a_size_class_counts_as_size_limit_without_552() {
    let reply = Reply::smtp(550, "Message too big!");
    let r = report(vec![
        delivered(0),
        delivered(10240),
        smtp_failed(
            5 << 20,
            classified(Phase::MailFrom, reply, ReplyClass::SizeLimit),
        ),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::SizeLimit))]
    );
    assert!(r.summary.contains("size limit (550)"), "{}", r.summary);
    // Advertised SIZE 10240000 is above the refused size: the hint about it stays.
    assert!(
        r.diagnoses[0]
            .hints
            .iter()
            .any(|h| h.contains("advertised EHLO SIZE"))
    );
}

#[test]
fn the_advertised_size_hint_goes_when_bisection_agrees_with_it() {
    let refused = Reply::smtp(552, "Message size exceeds maximum permitted");
    let mut r = report(vec![
        delivered(0),
        smtp_failed(
            5 << 20,
            classified(Phase::MailFrom, refused, ReplyClass::SizeLimit),
        ),
    ]);
    r.size_limit = Some(crate::model::report::SizeLimit {
        largest_accepted_bytes: 10_100_000,
        smallest_refused_bytes: 10_300_000,
        estimate_bytes: 10_200_000,
        sends: 7,
        advertised_bytes: Some(10_240_000),
        advertised_disagrees: false,
    });
    apply(&mut r, &Thresholds::default());
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::SizeLimit))]
    );
    assert!(
        !r.diagnoses[0]
            .hints
            .iter()
            .any(|h| h.contains("advertised EHLO SIZE")),
        "{:?}",
        r.diagnoses[0].hints
    );
}

#[test]
fn a_full_mailbox_is_not_a_size_limit() {
    let reply = Reply::smtp(552, "5.2.2 Quota exceeded");
    let r = report(vec![
        delivered(0),
        smtp_failed(
            5 << 20,
            classified(Phase::Data, reply, ReplyClass::Rejected),
        ),
    ]);
    assert_eq!(
        codes(&r),
        vec![(Code::AttachmentsFail, Some(Cause::Rejected))]
    );
}

#[test]
fn plaintext_refused_is_plaintext_disabled_not_a_bad_password() {
    let mut r = report(vec![delivered(0)]);
    for (protocol, text) in [
        (Protocol::Imap, "NO LOGIN Command disabled"),
        (Protocol::Pop3, "Incorrect state"),
    ] {
        let mut e = ProbeError::rejected(Reply::textual(text))
            .with_kind(ErrorKind::Unsupported)
            .at(protocol, Phase::Login);
        e.class = Some(ReplyClass::PlaintextDisabled);
        let failed = ProtocolResult::failed(e, Phases::new());
        match protocol {
            Protocol::Imap => r.messages[0].imap = Some(failed),
            _ => r.messages[0].pop3 = Some(failed),
        }
    }
    apply(&mut r, &Thresholds::default());
    let got: Vec<(Code, Option<Protocol>)> =
        r.diagnoses.iter().map(|d| (d.code, d.protocol)).collect();
    assert_eq!(
        got,
        vec![
            (Code::PlaintextDisabled, Some(Protocol::Imap)),
            (Code::PlaintextDisabled, Some(Protocol::Pop3)),
        ]
    );
    assert!(
        r.diagnoses[0].hints[0].contains("imaps://"),
        "{:?}",
        r.diagnoses[0].hints
    );
    assert_eq!(r.verdict, Verdict::Failing);
}
