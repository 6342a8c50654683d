//! Diagnosis is pure: a finished report's results in, verdicts with evidence out.
//! One file per topic; [`apply`] and [`add`] are the one place the verdict and
//! summary are derived from the diagnoses.
//!
//! The signature this tool exists for is `attachments_fail`: small or plain mail
//! gets through end to end while larger messages or ones with attachments do not.

use crate::core::error::{ErrorKind, ProbeError};
use crate::core::phase::{Phase, Protocol};
use crate::core::units::format_size;
use crate::model::diagnosis::{Code, Diagnosis, Severity, Thresholds};
use crate::model::report::{MessageReport, Report, Verdict};
use crate::model::result::ProtocolResult;

mod auth;
mod deadline;
mod elsewhere;
mod endpoints;
mod messages;
mod mx;
mod refusals;
mod slow;
#[cfg(test)]
mod tests;
mod tls;

use deadline::time_limit_diagnosis;
use endpoints::{endpoint_failure, endpoint_hints};
use messages::message_diagnoses;
use mx::mx_diagnoses;
use refusals::{plaintext_diagnoses, refusal_diagnoses};
use slow::slow_diagnoses;
use tls::tls_diagnoses;

/// Diagnose the report and set its diagnoses, verdict and summary.
pub(crate) fn apply(report: &mut Report, thresholds: &Thresholds) {
    report.diagnoses = diagnose(report, thresholds);
    conclude(report, healthy_summary);
}

/// Judge a cleanup sweep's report (no messages): failing when a mailbox could
/// not be swept.
pub(crate) fn apply_sweep(report: &mut Report) {
    report.diagnoses = Vec::new();
    if let Some(first) = report.cleanup.errors.first() {
        report.diagnoses.push(Diagnosis {
            code: Code::CleanupIncomplete,
            severity: Severity::Failing,
            summary: format!("the cleanup could not sweep every mailbox: {first}"),
            cause: None,
            reason: None,
            protocol: first.protocol,
            evidence: report.cleanup.errors.iter().map(ToString::to_string).collect(),
            hints: vec![
                "check the mailbox settings and run `mailprobe cleanup` again; it deletes only probe messages".into(),
            ],
        });
    }
    conclude(report, |r| {
        format!(
            "{} leftover probe message(s) deleted; nothing else was touched",
            r.cleanup.deleted
        )
    });
}

/// Add diagnoses after [`apply`]: verdict and summary follow the worst.
pub(crate) fn add(report: &mut Report, extra: Vec<Diagnosis>) {
    if extra.is_empty() {
        return;
    }
    report.diagnoses.extend(extra);
    conclude(report, healthy_summary);
}

/// The one place the verdict and summary follow from the diagnoses: worst first,
/// the verdict is the worst severity, the summary the worst diagnosis in words
/// (healthy: what `healthy` says).
fn conclude(report: &mut Report, healthy: fn(&Report) -> String) {
    report
        .diagnoses
        .sort_by_key(|d| (std::cmp::Reverse(d.severity), d.code));
    report.verdict = report
        .diagnoses
        .iter()
        .map(|d| d.severity.verdict())
        .max()
        .unwrap_or(Verdict::Healthy);
    report.summary = match report.diagnoses.first() {
        Some(d) => d.summary.clone(),
        None => healthy(report),
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

fn diagnose(report: &Report, t: &Thresholds) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    let configured: Vec<Protocol> = [
        Some(Protocol::Smtp),
        report.target.imap.as_ref().map(|_| Protocol::Imap),
        report.target.pop3.as_ref().map(|_| Protocol::Pop3),
    ]
    .into_iter()
    .flatten()
    .collect();

    // Logins refused: over plaintext where TLS is wanted, or for the credentials.
    plaintext_diagnoses(report, &mut out);
    for &protocol in &configured {
        if out.iter().any(|d| d.protocol == Some(protocol)) {
            continue;
        }
        let refused = results_of(report, protocol)
            .find_map(|(_, r)| r.error.as_ref().filter(|e| e.is_auth()).cloned());
        if let Some(err) = refused {
            out.push(Diagnosis {
                code: Code::AuthFailed,
                severity: Severity::Failing,
                summary: format!("{} refuses the login: {}", protocol.label(), err.message),
                cause: err.auth_reason.map(auth::cause),
                reason: None,
                protocol: Some(protocol),
                evidence: vec![err.to_string()],
                hints: auth::hints(&err),
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
            reason: None,
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
                reason: None,
                protocol: Some(*protocol),
                evidence: vec![err.to_string()],
                hints: endpoint_hints(err),
            });
        }
    }

    refusal_diagnoses(report, &mut out);
    message_diagnoses(report, &mut out);
    out.extend(time_limit_diagnosis(report));
    elsewhere::junk_diagnoses(report, t, &mut out);
    out.extend(mx_diagnoses(report));
    slow_diagnoses(report, t, &mut out);

    if !report.cleanup.leftovers.is_empty() {
        let mut evidence: Vec<String> = report
            .cleanup
            .leftovers
            .iter()
            .map(|id| {
                let place = report.cleanup.places.iter().find(|p| &p.probe_id == id);
                match place.map(|p| p.place.as_str()) {
                    Some("not_arrived") => format!("not arrived yet (may still arrive): {id}"),
                    Some(folder) => format!("left in {folder}: {id}"),
                    None => format!("left in the mailbox: {id}"),
                }
            })
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
            reason: None,
            protocol: None,
            evidence,
            hints: vec!["run `mailprobe cleanup` later; it deletes only probe messages".into()],
        });
    }
    out
}

pub(super) fn results_of(
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
