//! `--domain`: DNS that gave no exchanger, a null MX, exchangers that fail.

use crate::core::phase::Protocol;
use crate::model::diagnosis::{Code, Diagnosis, Severity};
use crate::model::mx::{Exchanger, MxSource};
use crate::model::report::Report;

/// Diagnoses from the `mx` section.
pub(super) fn mx_diagnoses(report: &Report) -> Vec<Diagnosis> {
    let Some(mx) = &report.mx else {
        return Vec::new();
    };
    let mut out = Vec::new();
    match mx.source {
        MxSource::DnsFailed => out.push(Diagnosis {
            code: Code::DnsFailed,
            severity: Severity::Failing,
            summary: mx
                .dns_error
                .clone()
                .unwrap_or_else(|| format!("DNS lookup for {} failed", mx.domain)),
            cause: None,
            reason: None,
            protocol: None,
            evidence: vec![format!("resolver: {}", mx.resolver)],
            hints: vec![
                format!(
                    "check the domain's spelling and its delegation (dig MX {})",
                    mx.domain
                ),
                "a SERVFAIL often means broken DNSSEC or unreachable authoritative servers".into(),
            ],
        }),
        MxSource::NullMx => out.push(Diagnosis {
            code: Code::NullMx,
            severity: Severity::Failing,
            summary: format!(
                "{} does not accept mail: it publishes a null MX (MX 0 \".\", RFC 7505)",
                mx.domain
            ),
            cause: None,
            reason: None,
            protocol: None,
            evidence: vec![format!("{} MX 0 .", mx.domain)],
            hints: vec![
                "if the domain should receive mail, replace the null MX with real MX records"
                    .into(),
            ],
        }),
        MxSource::Mx | MxSource::Implicit => {}
    }
    let failed: Vec<&Exchanger> = mx.exchangers.iter().filter(|e| !e.smtp.ok).collect();
    let working = mx.exchangers.iter().find(|e| e.smtp.ok);
    if failed.is_empty() {
        return out;
    }
    let line = |e: &Exchanger| {
        let why = e
            .smtp
            .error
            .as_ref()
            .map_or_else(|| "failed".to_string(), ToString::to_string);
        format!(
            "MX {} {} [{}]: {why}",
            e.preference,
            e.host,
            e.address.map(|a| a.to_string()).unwrap_or_default()
        )
    };
    match working {
        None => out.push(Diagnosis {
            code: Code::MxUnreachable,
            severity: Severity::Failing,
            summary: format!(
                "no mail exchanger of {} accepts mail for {}: {}",
                mx.domain,
                report.target.to,
                failed
                    .first()
                    .and_then(|e| e.smtp.error.as_ref())
                    .map_or_else(|| "failed".to_string(), |e| e.to_string())
            ),
            cause: None,
            reason: None,
            protocol: Some(Protocol::Smtp),
            evidence: failed.iter().map(|e| line(e)).collect(),
            hints: vec![
                "check that the MX hosts run an SMTP service on this port and that the firewall lets it through".into(),
                "a rejected RCPT TO means the MX does not take mail for this recipient".into(),
            ],
        }),
        Some(ok) => {
            for e in failed {
                out.push(Diagnosis {
                    code: Code::MxUnreachable,
                    severity: Severity::Degraded,
                    summary: format!(
                        "mail exchanger {} (preference {}) of {} fails; mail still goes through {}",
                        e.host, e.preference, mx.domain, ok.host
                    ),
                    cause: None,
                    reason: None,
                    protocol: Some(Protocol::Smtp),
                    evidence: vec![line(e)],
                    hints: vec![
                        "senders retry on the other exchangers, with delay: fix or remove this MX record".into(),
                    ],
                });
            }
        }
    }
    out
}
