//! TLS: certificates that do not verify, names that do not match, expiry soon.

use super::results_of;
use crate::core::phase::Protocol;
use crate::core::tls_info::{TlsInfo, TlsProblem};
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
                hints: problem_hints(err.tls.as_deref().and_then(|t| t.problem)),
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

/// What to do about each kind of certificate failure.
fn problem_hints(problem: Option<TlsProblem>) -> Vec<String> {
    let specific = match problem {
        Some(TlsProblem::Expired) => {
            "renew the certificate and reload the service (check the renewal job, e.g. certbot's timer)"
        }
        Some(TlsProblem::NotYetValid) => {
            "the certificate starts in the future: check the clock of this host and of the machine that issued it"
        }
        Some(TlsProblem::UnknownIssuer) => {
            "the issuing CA is not trusted here: for a private CA pass its certificate with --ca-file"
        }
        Some(TlsProblem::IncompleteChain) => {
            "configure the server to send the intermediate certificate(s) with its own (the full chain file); for a private CA pass it with --ca-file"
        }
        Some(TlsProblem::NameMismatch) => {
            "connect with a name the certificate lists, or issue a certificate that lists the name you use"
        }
        Some(TlsProblem::SelfSigned) => {
            "to trust this self-signed certificate, pass the certificate itself with --ca-file (as curl --cacert does)"
        }
        Some(TlsProblem::PinMismatch) => {
            "the server key changed or the pin is wrong: compare with openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
        }
        Some(TlsProblem::Other) | None => {
            "for a private CA pass --ca-file; --insecure skips verification"
        }
    };
    vec![
        specific.into(),
        "check the certificate chain, its names and dates (openssl s_client -connect host:port, with -starttls where used)".into(),
    ]
}

pub(super) fn cert_evidence(tls: &TlsInfo) -> Vec<String> {
    // A failed handshake negotiated nothing: no version line then.
    let mut e: Vec<String> = Some(format!("{} {}", tls.version, tls.cipher))
        .filter(|line| !line.trim().is_empty())
        .into_iter()
        .collect();
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
