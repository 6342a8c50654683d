//! TLS: certificates that do not verify, names that do not match, expiry soon.

use super::results_of;
use crate::core::phase::Protocol;
use crate::core::tls_info::TlsInfo;
use crate::model::diagnosis::{Code, Diagnosis, Severity, Thresholds};
use crate::model::report::Report;

pub(super) fn tls_diagnoses(report: &Report, t: &Thresholds, out: &mut Vec<Diagnosis>) {
    for protocol in Protocol::ALL {
        if let Some(err) =
            results_of(report, protocol).find_map(|(_, r)| r.error.as_ref().filter(|e| e.is_tls()))
        {
            out.push(Diagnosis {
                code: Code::TlsInvalid,
                severity: Severity::Failing,
                summary: format!("{} TLS fails: {}", protocol.label(), err.message),
                cause: None,
                reason: None,
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
                reason: None,
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
                reason: None,
                protocol: Some(protocol),
                evidence: cert_evidence(tls),
                hints: vec!["renew the certificate and reload the service".into()],
            });
        }
    }
}

pub(super) fn cert_evidence(tls: &TlsInfo) -> Vec<String> {
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
