//! Whom to trust, as curl does it: a certificate given with `--ca-file` that is
//! exactly the server's certificate is trusted as it is, `CA:TRUE` or not
//! (OpenSSL's partial-chain rule; WebPKI alone refuses a CA certificate used as a
//! server's own). Everything else goes to the WebPKI verifier. `--pin-sha256`
//! additionally requires the server key's SPKI hash. Failures are put into words
//! that name the date, the issuer or the names involved.

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::core::error::{ProbeError, ProbeResult};
use crate::core::tls_info::{CertificateInfo, TlsProblem};
use crate::io::tls_inspect::name_matches;

/// The verifier every handshake of a run uses.
#[derive(Debug)]
pub(crate) struct Trust {
    webpki: Arc<WebPkiServerVerifier>,
    /// The certificates of `--ca-file`, trusted when the server presents one of them.
    exact: Vec<CertificateDer<'static>>,
    /// SHA-256 hashes of accepted server keys (SPKI DER).
    pins: Vec<[u8; 32]>,
}

/// Why a pin check failed: the server key's hash, in the form `--pin-sha256` takes.
#[derive(Debug)]
struct PinMismatch(String);

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server key sha256//{} matches no --pin-sha256",
            self.0
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Parse `--pin-sha256`: `sha256//BASE64` (the prefix optional), several
/// separated by `;` as curl takes them.
pub(crate) fn parse_pins(text: &str) -> ProbeResult<Vec<[u8; 32]>> {
    text.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let b64 = p.strip_prefix("sha256//").unwrap_or(p);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    ProbeError::config(format!(
                        "--pin-sha256 {p:?} is not base64 (expected sha256//BASE64 of the server key, as curl --pinnedpubkey takes it)"
                    ))
                })?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                ProbeError::config(format!(
                    "--pin-sha256 {p:?} is not a SHA-256 hash (32 bytes)"
                ))
            })
        })
        .collect()
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo.
pub(crate) fn spki_sha256(der: &[u8]) -> Option<[u8; 32]> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(Sha256::digest(cert.tbs_certificate.subject_pki.raw).into())
}

impl Trust {
    pub(crate) fn new(
        webpki: Arc<WebPkiServerVerifier>,
        exact: Vec<CertificateDer<'static>>,
        pins: Vec<[u8; 32]>,
    ) -> Self {
        Trust {
            webpki,
            exact,
            pins,
        }
    }

    /// With pins given, the server key must be one of them (also with `--insecure`).
    pub(crate) fn check_pins(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.pins.is_empty() {
            return Ok(());
        }
        let hash = spki_sha256(end_entity);
        if hash.is_some_and(|h| self.pins.contains(&h)) {
            return Ok(());
        }
        let shown = hash
            .map(|h| base64::engine::general_purpose::STANDARD.encode(h))
            .unwrap_or_else(|| "(unreadable)".into());
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(PinMismatch(shown))),
        )))
    }

    /// An exact `--ca-file` match still has to be valid now and name the server.
    fn check_exact(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let now = now.as_secs() as i64;
        let validity = cert.validity();
        if now > validity.not_after.timestamp() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        if now < validity.not_before.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        let sans = crate::io::tls::describe_certificate(end_entity)
            .map(|c| c.sans)
            .unwrap_or_default();
        let host = match server_name {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => String::new(),
        };
        if !name_matches(&sans, &host) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(())
    }
}

impl ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.exact.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            self.check_exact(end_entity, server_name, now)?;
        } else {
            self.webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            )?;
        }
        self.check_pins(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A verification failure in words, with its stable name. `leaf` describes the
/// server's certificate and `chain_len` counts what the server sent (leaf included).
pub(crate) fn explain(
    err: &rustls::Error,
    leaf: Option<&CertificateInfo>,
    chain_len: usize,
    host: &str,
) -> (TlsProblem, String) {
    let self_signed = leaf.is_some_and(|c| c.subject == c.issuer);
    let issuer = leaf.map_or("an unknown issuer", |c| c.issuer.as_str());
    let names = leaf.map_or_else(String::new, |c| c.sans.join(", "));
    let rustls::Error::InvalidCertificate(cert_err) = err else {
        return (TlsProblem::Other, err.to_string());
    };
    use CertificateError as E;
    match cert_err {
        E::Expired | E::ExpiredContext { .. } => (
            TlsProblem::Expired,
            format!(
                "the certificate expired on {}",
                leaf.map_or("(unknown date)", |c| c.not_after.as_str())
            ),
        ),
        E::NotValidYet | E::NotValidYetContext { .. } => (
            TlsProblem::NotYetValid,
            format!(
                "the certificate is not valid before {}",
                leaf.map_or("(unknown date)", |c| c.not_before.as_str())
            ),
        ),
        E::NotValidForName | E::NotValidForNameContext { .. } => (
            TlsProblem::NameMismatch,
            format!("the certificate is for {names}, not for {host}"),
        ),
        E::UnknownIssuer if self_signed => (
            TlsProblem::SelfSigned,
            format!("the certificate is self-signed ({issuer}) and not trusted"),
        ),
        E::UnknownIssuer if chain_len <= 1 => (
            TlsProblem::IncompleteChain,
            format!(
                "the certificate is issued by {issuer}, which is not trusted, and the server sent no intermediate certificate (incomplete chain, or a private CA)"
            ),
        ),
        E::UnknownIssuer => (
            TlsProblem::UnknownIssuer,
            format!("the certificate is issued by {issuer}, which is not a trusted CA"),
        ),
        E::Other(other) => {
            if let Some(pin) = other.0.downcast_ref::<PinMismatch>() {
                return (TlsProblem::PinMismatch, pin.to_string());
            }
            let what = other.0.to_string();
            if what.contains("CaUsedAsEndEntity") {
                if self_signed {
                    (
                        TlsProblem::SelfSigned,
                        format!(
                            "the certificate is self-signed ({issuer}, a CA:TRUE certificate) and not trusted"
                        ),
                    )
                } else {
                    (
                        TlsProblem::Other,
                        format!(
                            "the server's own certificate is a CA certificate (CA:TRUE) issued by {issuer}"
                        ),
                    )
                }
            } else {
                (
                    TlsProblem::Other,
                    format!("the certificate is refused: {what}"),
                )
            }
        }
        other => (
            TlsProblem::Other,
            format!("the certificate is refused: {other:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(subject: &str, issuer: &str) -> CertificateInfo {
        CertificateInfo {
            subject: subject.into(),
            issuer: issuer.into(),
            sans: vec!["localhost".into(), "127.0.0.1".into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            not_after: "2026-06-01T00:00:00Z".into(),
            days_to_expiry: -3,
        }
    }

    fn cert(e: CertificateError) -> rustls::Error {
        rustls::Error::InvalidCertificate(e)
    }

    #[test]
    fn every_failure_has_its_own_words() {
        let leaf = info("CN=localhost", "CN=Private CA");
        let own = info("CN=localhost", "CN=localhost");
        let rows: Vec<(rustls::Error, &CertificateInfo, usize, TlsProblem, &str)> = vec![
            (
                cert(CertificateError::Expired),
                &leaf,
                1,
                TlsProblem::Expired,
                "expired on 2026-06-01T00:00:00Z",
            ),
            (
                cert(CertificateError::NotValidYet),
                &leaf,
                1,
                TlsProblem::NotYetValid,
                "not valid before 2026-01-01T00:00:00Z",
            ),
            (
                cert(CertificateError::NotValidForName),
                &leaf,
                1,
                TlsProblem::NameMismatch,
                "for localhost, 127.0.0.1, not for mail.example.test",
            ),
            (
                cert(CertificateError::UnknownIssuer),
                &own,
                1,
                TlsProblem::SelfSigned,
                "self-signed (CN=localhost)",
            ),
            (
                cert(CertificateError::UnknownIssuer),
                &leaf,
                1,
                TlsProblem::IncompleteChain,
                "issued by CN=Private CA, which is not trusted, and the server sent no intermediate",
            ),
            (
                cert(CertificateError::UnknownIssuer),
                &leaf,
                2,
                TlsProblem::UnknownIssuer,
                "issued by CN=Private CA, which is not a trusted CA",
            ),
            (
                cert(CertificateError::Other(rustls::OtherError(Arc::new(
                    webpki_error(),
                )))),
                &own,
                1,
                TlsProblem::SelfSigned,
                "self-signed (CN=localhost, a CA:TRUE certificate)",
            ),
            (
                cert(CertificateError::Other(rustls::OtherError(Arc::new(
                    PinMismatch("abc=".into()),
                )))),
                &leaf,
                1,
                TlsProblem::PinMismatch,
                "sha256//abc= matches no --pin-sha256",
            ),
        ];
        for (i, (err, leaf, len, problem, words)) in rows.iter().enumerate() {
            let (p, text) = explain(err, Some(leaf), *len, "mail.example.test");
            assert_eq!(p, *problem, "row {i}: {text}");
            assert!(text.contains(words), "row {i}: {text}");
            assert!(!text.contains("OtherError"), "row {i}: {text}");
        }
    }

    fn webpki_error() -> impl std::error::Error + Send + Sync {
        #[derive(Debug)]
        struct CaUsedAsEndEntity;
        impl std::fmt::Display for CaUsedAsEndEntity {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "CaUsedAsEndEntity")
            }
        }
        impl std::error::Error for CaUsedAsEndEntity {}
        CaUsedAsEndEntity
    }

    #[test]
    fn pins_parse_like_curl() {
        let hash = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(hash);
        assert_eq!(parse_pins(&format!("sha256//{b64}")).unwrap(), vec![hash]);
        assert_eq!(
            parse_pins(&format!("sha256//{b64};{b64}")).unwrap(),
            vec![hash, hash]
        );
        assert!(parse_pins("sha256//not base64!").is_err());
        assert!(parse_pins("sha256//AAAA").is_err());
    }
}
