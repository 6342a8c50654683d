//! Diagnosis is pure: a finished report's results in, verdicts with evidence out.
//!
//! The signature this tool exists for is `attachments_fail`: small or plain mail
//! gets through end to end while larger messages or ones with attachments do not.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, ProbeError};
use crate::phase::{Phase, Protocol};
use crate::prober::ProtocolResult;
use crate::report::{MessageReport, Report, Verdict};
use crate::units::{format_ms, format_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    SharedOutage,
    EndpointDown,
    AuthFailed,
    TlsInvalid,
    AttachmentsFail,
    NotDelivered,
    SendFailed,
    MessageAltered,
    Intermittent,
    RetrievalPartial,
    Slow,
    CleanupIncomplete,
    DnsFailed,
    NullMx,
    MxUnreachable,
    /// Rounds alternate between up and down (`verify`).
    Flapping,
    /// `verify` ended without the stability target (down or degraded).
    NotStable,
    /// Slower than, or failing where it worked in, the `--baseline`.
    Regression,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::SharedOutage => "shared_outage",
            Code::EndpointDown => "endpoint_down",
            Code::AuthFailed => "auth_failed",
            Code::TlsInvalid => "tls_invalid",
            Code::AttachmentsFail => "attachments_fail",
            Code::NotDelivered => "not_delivered",
            Code::SendFailed => "send_failed",
            Code::MessageAltered => "message_altered",
            Code::Intermittent => "intermittent",
            Code::RetrievalPartial => "retrieval_partial",
            Code::Slow => "slow",
            Code::CleanupIncomplete => "cleanup_incomplete",
            Code::DnsFailed => "dns_failed",
            Code::NullMx => "null_mx",
            Code::MxUnreachable => "mx_unreachable",
            Code::Flapping => "flapping",
            Code::NotStable => "not_stable",
            Code::Regression => "regression",
        }
    }
}

/// How messages fail, for `attachments_fail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    SizeLimit,
    SessionDropped,
    Rejected,
    Timeout,
    NotDelivered,
    Altered,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::SizeLimit => "size_limit",
            Cause::SessionDropped => "session_dropped",
            Cause::Rejected => "rejected",
            Cause::Timeout => "timeout",
            Cause::NotDelivered => "not_delivered",
            Cause::Altered => "altered",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Degraded,
    Failing,
}

impl Severity {
    pub fn verdict(self) -> Verdict {
        match self {
            Severity::Degraded => Verdict::Degraded,
            Severity::Failing => Verdict::Failing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub code: Code,
    pub severity: Severity,
    /// One line in plain words.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// What was observed: messages, phases, replies, timings.
    pub evidence: Vec<String>,
    /// What to check.
    pub hints: Vec<String>,
}

/// When a phase counts as slow, and when a certificate expires too soon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Any command phase (connect, greeting, EHLO, login, ...).
    pub phase_ms: f64,
    /// Delivery into the mailbox.
    pub delivery_ms: f64,
    /// Body transfers (DATA, FETCH): a base allowance plus this much per MiB.
    pub transfer_ms_per_mib: f64,
    pub cert_warn_days: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            phase_ms: 2000.0,
            delivery_ms: 15_000.0,
            transfer_ms_per_mib: 1000.0,
            cert_warn_days: 14,
        }
    }
}

/// Diagnose the report and set its diagnoses, verdict and summary.
pub fn apply(report: &mut Report, thresholds: &Thresholds) {
    report.diagnoses = diagnose(report, thresholds);
    report.verdict = report
        .diagnoses
        .iter()
        .map(|d| d.severity.verdict())
        .max()
        .unwrap_or(Verdict::Healthy);
    report.summary = match report.diagnoses.first() {
        Some(d) => d.summary.clone(),
        None => healthy_summary(report),
    };
}

fn healthy_summary(report: &Report) -> String {
    let protocols: Vec<&str> = [
        report.target.imap.as_ref().map(|_| "IMAP"),
        report.target.pop3.as_ref().map(|_| "POP3"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let largest = report
        .messages
        .iter()
        .map(|m| m.size_bytes)
        .max()
        .unwrap_or(0);
    if protocols.is_empty() {
        format!(
            "All {} messages were accepted by SMTP (up to {} attachments); retrieval was not checked.",
            report.messages.len(),
            format_size(largest)
        )
    } else {
        format!(
            "All {} messages (plain and up to {} attachments) were delivered and verified over {}.",
            report.messages.len(),
            format_size(largest),
            protocols.join(" and ")
        )
    }
}

/// How one message fared end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delivered,
    /// Failed before the transaction (connect, TLS, greeting, EHLO, AUTH).
    SmtpUnreachable,
    Failed(Cause),
}

fn smtp_cause(err: &ProbeError) -> Option<Cause> {
    let phase = err.phase?;
    let in_transaction = matches!(
        phase,
        Phase::MailFrom | Phase::RcptTo | Phase::Data | Phase::Quit
    );
    if !in_transaction {
        return None;
    }
    if err.reply.as_ref().is_some_and(|r| r.is_size_limit()) {
        return Some(Cause::SizeLimit);
    }
    Some(match err.kind {
        ErrorKind::Timeout => Cause::Timeout,
        ErrorKind::Rejected => Cause::Rejected,
        _ if err.is_connection_lost() => Cause::SessionDropped,
        ErrorKind::Network | ErrorKind::Protocol => Cause::SessionDropped,
        _ => Cause::Rejected,
    })
}

fn fate(m: &MessageReport) -> Fate {
    if let Some(err) = &m.smtp.error {
        return match smtp_cause(err) {
            Some(cause) => Fate::Failed(cause),
            None => Fate::SmtpUnreachable,
        };
    }
    let retrievals: Vec<&ProtocolResult> = m.retrievals().map(|(_, r)| r).collect();
    if retrievals.is_empty() || retrievals.iter().any(|r| r.ok) {
        return Fate::Delivered;
    }
    if retrievals
        .iter()
        .any(|r| r.found == Some(true) && r.verified == Some(false) && r.verification.is_some())
    {
        return Fate::Failed(Cause::Altered);
    }
    if retrievals.iter().any(|r| {
        r.error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::NotDelivered)
    }) {
        return Fate::Failed(Cause::NotDelivered);
    }
    // Every retrieval failed for reasons of its own (endpoint down): not a message fate.
    Fate::Delivered
}

fn describe(m: &MessageReport) -> String {
    if m.attachment {
        format!("{} attachment", format_size(m.size_bytes))
    } else {
        "plain message".to_string()
    }
}

fn error_line(m: &MessageReport, err: &ProbeError) -> String {
    let mut line = format!("{} ({}): {}", describe(m), m.probe_id, err);
    if let Some(reply) = &err.reply
        && !err.message.contains(&reply.to_string())
    {
        line.push_str(&format!(" [reply: {reply}]"));
    }
    line
}

/// Did this protocol fail before its session could do anything, for every message it tried?
fn endpoint_failure(report: &Report, protocol: Protocol) -> Option<ProbeError> {
    let results: Vec<&ProtocolResult> = results_of(report, protocol)
        .map(|(_, r)| r)
        .filter(|r| r.skipped.is_none())
        .collect();
    if results.is_empty() {
        return None;
    }
    let mut first = None;
    for r in &results {
        let err = r.error.as_ref()?;
        let before_session = matches!(
            err.phase,
            Some(
                Phase::Connect
                    | Phase::Tls
                    | Phase::Greeting
                    | Phase::Ehlo
                    | Phase::Starttls
                    | Phase::Capability
            )
        );
        if !before_session || err.kind == ErrorKind::Auth {
            return None;
        }
        first.get_or_insert_with(|| err.clone());
    }
    first
}

pub fn diagnose(report: &Report, t: &Thresholds) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    let configured: Vec<Protocol> = [
        Some(Protocol::Smtp),
        report.target.imap.as_ref().map(|_| Protocol::Imap),
        report.target.pop3.as_ref().map(|_| Protocol::Pop3),
    ]
    .into_iter()
    .flatten()
    .collect();

    // Logins refused.
    for &protocol in &configured {
        let refused = results_of(report, protocol)
            .find_map(|(_, r)| r.error.as_ref().filter(|e| e.is_auth()).cloned());
        if let Some(err) = refused {
            out.push(Diagnosis {
                code: Code::AuthFailed,
                severity: Severity::Failing,
                summary: format!("{} refuses the login: {}", protocol.label(), err.message),
                cause: None,
                protocol: Some(protocol),
                evidence: vec![err.to_string()],
                hints: vec![
                    "check the user name and the password source (variable or file)".into(),
                    "check the account is not locked and the auth backend (SASL, LDAP, passdb) answers".into(),
                ],
            });
        }
    }

    // TLS problems: a failed handshake or an invalid certificate accepted with --insecure.
    tls_diagnoses(report, t, &mut out);

    // Endpoints down, or everything down together.
    let down: Vec<(Protocol, ProbeError)> = configured
        .iter()
        .filter_map(|&p| endpoint_failure(report, p).map(|e| (p, e)))
        .filter(|(_, e)| e.kind != ErrorKind::Tls)
        .collect();
    if down.len() == configured.len() && configured.len() > 1 {
        out.push(Diagnosis {
            code: Code::SharedOutage,
            severity: Severity::Failing,
            summary: format!(
                "{} all fail together: the mail server (or its shared front end) is down",
                configured.iter().map(|p| p.label()).collect::<Vec<_>>().join(", ")
            ),
            cause: None,
            protocol: None,
            evidence: down.iter().map(|(_, e)| e.to_string()).collect(),
            hints: vec![
                "check whether the host, its firewall or load balancer is up".into(),
                "services of one process (e.g. Exchange front end, one container) fail together: check that process, its crash/restart log (Windows event 7031, systemd journal) and recent updates (antivirus, configuration)".into(),
            ],
        });
    } else {
        for (protocol, err) in &down {
            out.push(Diagnosis {
                code: Code::EndpointDown,
                severity: Severity::Failing,
                summary: format!(
                    "{} is unreachable: {} in the {} phase",
                    protocol.label(),
                    err.kind.as_str(),
                    err.phase.map_or("connect", Phase::as_str)
                ),
                cause: None,
                protocol: Some(*protocol),
                evidence: vec![err.to_string()],
                hints: endpoint_hints(err),
            });
        }
    }

    message_diagnoses(report, &mut out);
    out.extend(crate::mx::diagnoses(report));
    slow_diagnoses(report, t, &mut out);

    if !report.cleanup.leftovers.is_empty() {
        let mut evidence: Vec<String> = report
            .cleanup
            .leftovers
            .iter()
            .map(|id| format!("left in the mailbox: {id}"))
            .collect();
        evidence.extend(report.cleanup.errors.iter().map(ToString::to_string));
        out.push(Diagnosis {
            code: Code::CleanupIncomplete,
            severity: Severity::Degraded,
            summary: format!(
                "{} probe message(s) could not be deleted and may still arrive or remain",
                report.cleanup.leftovers.len()
            ),
            cause: None,
            protocol: None,
            evidence,
            hints: vec!["run `mailprobe cleanup` later; it deletes only probe messages".into()],
        });
    }
    out.sort_by_key(|d| (std::cmp::Reverse(d.severity), d.code));
    out
}

fn endpoint_hints(err: &ProbeError) -> Vec<String> {
    match err.kind {
        ErrorKind::Refused => vec![
            "nothing listens on that port: is the service running, or crashing and restarting?".into(),
        ],
        ErrorKind::Timeout => vec!["no answer in time: check firewalls, the service's load and its worker limits".into()],
        ErrorKind::Reset | ErrorKind::Closed => vec![
            "the server drops connections: check its log for crashes, connection limits or a proxy in front".into(),
        ],
        _ => vec!["check the service's log for the moment of the probe".into()],
    }
}

fn results_of(
    report: &Report,
    protocol: Protocol,
) -> impl Iterator<Item = (&MessageReport, &ProtocolResult)> {
    report.messages.iter().filter_map(move |m| {
        let r = match protocol {
            Protocol::Smtp => Some(&m.smtp),
            Protocol::Imap => m.imap.as_ref(),
            Protocol::Pop3 => m.pop3.as_ref(),
        }?;
        Some((m, r))
    })
}

fn tls_diagnoses(report: &Report, t: &Thresholds, out: &mut Vec<Diagnosis>) {
    for protocol in Protocol::ALL {
        if let Some(err) =
            results_of(report, protocol).find_map(|(_, r)| r.error.as_ref().filter(|e| e.is_tls()))
        {
            out.push(Diagnosis {
                code: Code::TlsInvalid,
                severity: Severity::Failing,
                summary: format!("{} TLS fails: {}", protocol.label(), err.message),
                cause: None,
                protocol: Some(protocol),
                evidence: std::iter::once(err.to_string())
                    .chain(err.tls.as_deref().map(cert_evidence).unwrap_or_default())
                    .collect(),
                hints: vec![
                    "check the certificate chain, its names and dates (openssl s_client -connect host:port, with -starttls where used)".into(),
                    "for a private CA pass --ca-file; --insecure skips verification".into(),
                ],
            });
            continue;
        }
        let Some(tls) = results_of(report, protocol).find_map(|(_, r)| r.tls.as_ref()) else {
            continue;
        };
        let days = tls.certificate.as_ref().map(|c| c.days_to_expiry);
        if !tls.verified {
            out.push(Diagnosis {
                code: Code::TlsInvalid,
                severity: Severity::Degraded,
                summary: format!(
                    "{} certificate does not verify ({}); accepted only because of --insecure",
                    protocol.label(),
                    tls.verify_error.as_deref().unwrap_or("unknown reason")
                ),
                cause: None,
                protocol: Some(protocol),
                evidence: cert_evidence(tls),
                hints: vec!["install a certificate that verifies for this name, or pass the private CA with --ca-file".into()],
            });
        } else if let Some(days) = days.filter(|d| *d < t.cert_warn_days) {
            out.push(Diagnosis {
                code: Code::TlsInvalid,
                severity: Severity::Degraded,
                summary: format!("{} certificate expires in {days} day(s)", protocol.label()),
                cause: None,
                protocol: Some(protocol),
                evidence: cert_evidence(tls),
                hints: vec!["renew the certificate and reload the service".into()],
            });
        }
    }
}

fn cert_evidence(tls: &crate::tls::TlsInfo) -> Vec<String> {
    let mut e = vec![format!("{} {}", tls.version, tls.cipher)];
    if let Some(c) = &tls.certificate {
        e.push(format!(
            "subject {}; names {}; issuer {}; expires {} ({} days)",
            c.subject,
            c.sans.join(", "),
            c.issuer,
            c.not_after,
            c.days_to_expiry
        ));
        if !tls.name_matches {
            e.push(format!(
                "no certificate name matches the server name (names: {})",
                c.sans.join(", ")
            ));
        }
    }
    e
}

fn cause_hints(cause: Cause) -> Vec<String> {
    let v: &[&str] = match cause {
        Cause::SizeLimit => &[
            "raise the size limit where it is enforced (Postfix message_size_limit, Exchange receive connector / transport limits, a proxy or filter in front)",
            "keep the advertised EHLO SIZE equal to the real limit",
        ],
        Cause::SessionDropped => &[
            "a content filter or antivirus scanner is probably crashing the SMTP service or process on attachments: check its log and crash events (Windows event 7031) around the probe",
            "look for a recent antivirus/filter update or a broken configuration (e.g. a corrupt IIS/front-end configuration)",
        ],
        Cause::Rejected => &[
            "a content filter or policy rejects these messages: check the filter's rules for attachments and its log",
        ],
        Cause::Timeout => &[
            "large transfers stall: check filters that scan attachments, disk space of the queue, and network MTU/proxy timeouts",
        ],
        Cause::NotDelivered => &[
            "the server accepts but never delivers: check the queue (postqueue -p / Get-Queue), held or deferred mail, and the delivery agent's log",
        ],
        Cause::Altered => &[
            "a filter strips or rewrites attachments: check attachment policies, disclaimers and antivirus actions",
        ],
    };
    v.iter().map(|s| s.to_string()).collect()
}

fn message_diagnoses(report: &Report, out: &mut Vec<Diagnosis>) {
    let fates: Vec<(&MessageReport, Fate)> = report.messages.iter().map(|m| (m, fate(m))).collect();
    let delivered: Vec<&MessageReport> = fates
        .iter()
        .filter(|(_, f)| *f == Fate::Delivered)
        .map(|(m, _)| *m)
        .collect();
    let failed: Vec<(&MessageReport, Cause)> = fates
        .iter()
        .filter_map(|(m, f)| match f {
            Fate::Failed(c) => Some((*m, *c)),
            _ => None,
        })
        .collect();
    if failed.is_empty() {
        partial_retrieval(report, out);
        return;
    }
    let evidence: Vec<String> = failed
        .iter()
        .map(|(m, c)| {
            let err = m
                .smtp
                .error
                .as_ref()
                .or_else(|| m.retrievals().find_map(|(_, r)| r.error.as_ref()));
            match err {
                Some(e) => error_line(m, e),
                None => format!("{}: {}", describe(m), c.as_str()),
            }
        })
        .chain(
            delivered
                .iter()
                .map(|m| format!("{} ({}): delivered and verified", describe(m), m.probe_id)),
        )
        .collect();
    // The cause of the smallest failure leads; the others are in the evidence.
    let lead = failed
        .iter()
        .min_by_key(|(m, _)| m.size_bytes)
        .map(|(_, c)| *c)
        .expect("non-empty");
    let largest_ok = delivered.iter().map(|m| m.size_bytes).max();
    let smallest_failed = failed
        .iter()
        .map(|(m, _)| m.size_bytes)
        .min()
        .expect("non-empty");
    let all_failed_have_attachments = failed.iter().all(|(m, _)| m.attachment);

    match largest_ok {
        Some(ok_size)
            if all_failed_have_attachments
                && (smallest_failed > ok_size || delivered.iter().all(|m| !m.attachment)) =>
        {
            let summary = attachments_summary(report, &delivered, &failed, lead);
            out.push(Diagnosis {
                code: Code::AttachmentsFail,
                severity: Severity::Failing,
                summary,
                cause: Some(lead),
                protocol: None,
                evidence: with_size_evidence(report, evidence),
                hints: cause_hints(lead),
            });
        }
        Some(_) => out.push(Diagnosis {
            code: Code::Intermittent,
            severity: Severity::Failing,
            summary: format!(
                "{} of {} messages failed without a size pattern: the server is unstable",
                failed.len(),
                report.messages.len()
            ),
            cause: Some(lead),
            protocol: None,
            evidence,
            hints: vec![
                "check whether the service is crashing and restarting (run `mailprobe` repeatedly to see it flap)".into(),
            ],
        }),
        None => {
            let (code, summary) = match lead {
                Cause::NotDelivered if failed.iter().all(|(_, c)| *c == Cause::NotDelivered) => (
                    Code::NotDelivered,
                    "Every message was accepted by SMTP but none arrived in the mailbox".to_string(),
                ),
                Cause::Altered if failed.iter().all(|(_, c)| *c == Cause::Altered) => (
                    Code::MessageAltered,
                    "Every message arrives altered: content differs from what was sent".to_string(),
                ),
                _ => (
                    Code::SendFailed,
                    format!("No message got through: {}", failed[0].1.as_str().replace('_', " ")),
                ),
            };
            out.push(Diagnosis {
                code,
                severity: Severity::Failing,
                summary,
                cause: Some(lead),
                protocol: None,
                evidence,
                hints: cause_hints(lead),
            });
        }
    }
}

fn with_size_evidence(report: &Report, mut evidence: Vec<String>) -> Vec<String> {
    if let Some(l) = &report.size_limit {
        evidence.push(format!(
            "bisection ({} extra sends): {} bytes accepted, {} bytes refused; limit about {} bytes",
            l.sends, l.largest_accepted_bytes, l.smallest_refused_bytes, l.estimate_bytes
        ));
    }
    if let Some(size) = report.smtp_server.as_ref().and_then(|s| s.advertised_size) {
        evidence.push(if size == 0 {
            "EHLO advertises SIZE without a limit".to_string()
        } else {
            format!("EHLO advertises SIZE {size} ({})", format_size(size))
        });
    }
    evidence
}

fn attachments_summary(
    report: &Report,
    delivered: &[&MessageReport],
    failed: &[(&MessageReport, Cause)],
    cause: Cause,
) -> String {
    let ok = if delivered.iter().all(|m| !m.attachment) {
        "Plain messages are delivered".to_string()
    } else {
        format!(
            "Messages up to {} are delivered",
            format_size(delivered.iter().map(|m| m.size_bytes).max().unwrap_or(0))
        )
    };
    let smallest = failed.iter().map(|(m, _)| m.size_bytes).min().unwrap_or(0);
    let how = match cause {
        Cause::SizeLimit => {
            let reply = failed
                .iter()
                .find_map(|(m, _)| m.smtp.error.as_ref().and_then(|e| e.reply.as_ref()))
                .map(|r| format!(" ({}{})", r.code.map(|c| c.to_string()).unwrap_or_default(), r.enhanced.map(|e| format!(" {e}")).unwrap_or_default()))
                .unwrap_or_default();
            let advertised = report
                .smtp_server
                .as_ref()
                .and_then(|s| s.advertised_size)
                .filter(|s| *s > 0);
            let limit = match (&report.size_limit, advertised) {
                (Some(l), Some(a)) if l.advertised_disagrees => format!(
                    ". Advertised SIZE {a} but the real limit is about {}",
                    format_size(l.estimate_bytes)
                ),
                (Some(l), _) => format!(
                    ". The real limit is about {} (between {} and {} bytes)",
                    format_size(l.estimate_bytes),
                    l.largest_accepted_bytes,
                    l.smallest_refused_bytes
                ),
                (None, Some(a)) => format!(". Advertised SIZE {a}"),
                (None, None) => String::new(),
            };
            format!("are refused by the server's size limit{reply}{limit}")
        }
        Cause::SessionDropped => "make the server drop the connection during DATA with no reply (a filter or scanner crashing the SMTP service?)".into(),
        Cause::Rejected => "are rejected by the server (content filter policy?)".into(),
        Cause::Timeout => "time out during transfer".into(),
        Cause::NotDelivered => "are accepted but never arrive in the mailbox".into(),
        Cause::Altered => "arrive altered: the attachment is stripped, renamed or changed".into(),
    };
    format!(
        "{ok}; messages with attachments of {} and more {how}.",
        format_size(smallest)
    )
}

fn partial_retrieval(report: &Report, out: &mut Vec<Diagnosis>) {
    for protocol in [Protocol::Imap, Protocol::Pop3] {
        if out
            .iter()
            .any(|d| d.protocol == Some(protocol) || d.code == Code::SharedOutage)
        {
            continue;
        }
        let failed: Vec<(&MessageReport, &ProtocolResult)> = results_of(report, protocol)
            .filter(|(_, r)| !r.ok && r.skipped.is_none())
            .collect();
        // Only a message another protocol did retrieve makes this a partial failure;
        // when no protocol could read it (e.g. the only one breaks mid-FETCH) it fails.
        let nobody_else = failed
            .iter()
            .any(|(m, _)| !m.retrievals().any(|(p, r)| p != protocol && r.ok));
        let failures: Vec<String> = failed
            .iter()
            .map(|(m, r)| match &r.error {
                Some(e) => error_line(m, e),
                None => format!("{}: not verified", describe(m)),
            })
            .collect();
        if !failures.is_empty() {
            out.push(Diagnosis {
                code: Code::RetrievalPartial,
                severity: if nobody_else {
                    Severity::Failing
                } else {
                    Severity::Degraded
                },
                summary: format!(
                    "{} fails for {} message(s) that {}",
                    protocol.label(),
                    failures.len(),
                    if nobody_else {
                        "no protocol could retrieve"
                    } else {
                        "another protocol retrieved"
                    }
                ),
                cause: None,
                protocol: Some(protocol),
                evidence: failures,
                hints: vec![format!("check the {} service's log", protocol.label())],
            });
        }
    }
}

fn slow_diagnoses(report: &Report, t: &Thresholds, out: &mut Vec<Diagnosis>) {
    let mut evidence = Vec::new();
    let mut worst: Option<(Protocol, Phase)> = None;
    for m in &report.messages {
        let mib = m.encoded_bytes as f64 / (1u64 << 20) as f64;
        for (protocol, r) in std::iter::once((Protocol::Smtp, &m.smtp)).chain(m.retrievals()) {
            for (&phase, &ms) in &r.phases_ms {
                let limit = match phase {
                    Phase::Data | Phase::Fetch => t.phase_ms + t.transfer_ms_per_mib * mib,
                    _ => t.phase_ms,
                };
                if ms > limit {
                    evidence.push(format!(
                        "{} {} took {} for the {} (threshold {})",
                        protocol.label(),
                        phase.as_str(),
                        format_ms(ms),
                        describe(m),
                        format_ms(limit)
                    ));
                    worst.get_or_insert((protocol, phase));
                }
            }
            if let Some(ms) = r.delivery_ms.filter(|ms| *ms > t.delivery_ms) {
                evidence.push(format!(
                    "delivery of the {} took {} (threshold {})",
                    describe(m),
                    format_ms(ms),
                    format_ms(t.delivery_ms)
                ));
                worst.get_or_insert((protocol, Phase::Delivery));
            }
        }
    }
    if let Some((protocol, phase)) = worst {
        out.push(Diagnosis {
            code: Code::Slow,
            severity: Severity::Degraded,
            summary: format!("{} is slow in the {} phase", protocol.label(), phase.as_str()),
            cause: None,
            protocol: Some(protocol),
            evidence,
            hints: vec!["check the server's load, DNS lookups it makes (greeting/EHLO delays), filters and disk I/O".into()],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProbeError;
    use crate::phase::Phases;
    use crate::prober::smtp::SmtpServerInfo;
    use crate::reply::Reply;
    use crate::report::{Cleanup, Target};

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
        retrieval(&mut m, |r| {
            *r = ProtocolResult {
                found: Some(false),
                error: Some(
                    ProbeError::new(
                        ErrorKind::NotDelivered,
                        "not in the mailbox 8 s after the server accepted it",
                    )
                    .at(Protocol::Imap, Phase::Delivery),
                ),
                ..Default::default()
            }
        });
        m
    }

    fn altered(size: u64) -> MessageReport {
        let mut m = delivered(size);
        retrieval(&mut m, |r| {
            r.ok = false;
            r.verified = Some(false);
            r.verification = Some(crate::verify::Verification {
                verified: false,
                bytes: 100,
                problems: vec!["the attachment was renamed".into()],
                attachment: None,
            });
            r.error = Some(
                ProbeError::new(ErrorKind::Altered, "the attachment was renamed")
                    .at(Protocol::Imap, Phase::Fetch),
            );
        });
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
            }),
            messages,
            size_limit: None,
            diagnoses: Vec::new(),
            cleanup: Cleanup::default(),
            mx: None,
            stats: None,
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
        r.size_limit = Some(crate::report::SizeLimit {
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
            ProbeError::new(ErrorKind::Closed, "closed mid-transfer")
                .at(Protocol::Pop3, Phase::Fetch),
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
        ms[0].smtp.tls = Some(crate::tls::TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            verified: true,
            verify_error: None,
            name_matches: true,
            certificate: Some(crate::tls::CertificateInfo {
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
}
