//! TLS for every protocol: one client configuration (system roots plus an optional
//! private CA, or an explicit opt-out), and what the handshake revealed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::tls_info::{CertificateInfo, TlsInfo, TlsProblem};
use crate::io::net::{BoxStream, MailStream};
use crate::io::trust::{Trust, explain, parse_pins};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    /// Extra trust anchors (PEM), e.g. a private CA or a self-signed server certificate.
    pub(crate) ca_file: Option<PathBuf>,
    /// Accept any certificate. The report says so.
    pub(crate) insecure: bool,
    /// `--pin-sha256`: the server key must hash to one of these (`sha256//BASE64`,
    /// several separated by `;`).
    pub(crate) pin_sha256: Option<String>,
}

/// Built once per run and shared by every connection.
#[derive(Clone)]
pub(crate) struct TlsClient {
    verifier: Arc<Trust>,
    insecure: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("insecure", &self.insecure)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pem_certs(path: &Path) -> ProbeResult<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path)
        .map_err(|e| ProbeError::config(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &data[..])
        .collect::<Result<_, _>>()
        .map_err(|e| ProbeError::config(format!("CA file {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ProbeError::config(format!(
            "CA file {} holds no certificate (expected PEM 'BEGIN CERTIFICATE')",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsClient {
    pub(crate) fn new(settings: &TlsSettings) -> ProbeResult<Self> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut exact = Vec::new();
        if let Some(path) = &settings.ca_file {
            for cert in load_pem_certs(path)? {
                // A server certificate (not a CA) is no trust anchor for WebPKI,
                // but is still trusted as an exact match: only CAs go to the store.
                if roots.add(cert.clone()).is_err() && describe_certificate(&cert).is_none() {
                    return Err(ProbeError::config(format!(
                        "CA file {} holds a certificate that cannot be read",
                        path.display()
                    )));
                }
                exact.push(cert);
            }
        }
        let pins = match &settings.pin_sha256 {
            Some(text) => parse_pins(text)?,
            None => Vec::new(),
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ProbeError::config(format!("cannot build TLS verifier: {e}")))?;
        let verifier = Arc::new(Trust::new(webpki, exact, pins));
        // Checked once here; each handshake builds its connector (with a recorder
        // of the presented chain) in `crate::io::tls_inspect::connector`.
        crate::io::tls_inspect::connector(&verifier, settings.insecure)?;
        Ok(TlsClient {
            verifier,
            insecure: settings.insecure,
        })
    }

    /// Handshake over `stream` for `host`, returning the encrypted stream and what it showed.
    pub(crate) async fn handshake<S: MailStream + 'static>(
        &self,
        stream: S,
        host: &str,
    ) -> ProbeResult<(BoxStream, TlsInfo)> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ProbeError::config(format!("{host:?} is not a valid TLS server name")))?;
        let (connector, recorder) =
            crate::io::tls_inspect::connector(&self.verifier, self.insecure)?;
        let tls = connector
            .connect(name.clone(), crate::io::net::ReadAhead::new(stream))
            .await
            .map_err(|e| {
                let mut err = ProbeError::io(&e);
                if matches!(err.kind, ErrorKind::Protocol | ErrorKind::Network) {
                    err.kind = ErrorKind::Tls;
                }
                err.message = format!("TLS handshake with {host} failed: {}", readable_io(&e));
                // What the server presented, so a failure still names the certificate.
                if let Some(chain) = recorder.chain() {
                    let info = self.inspect(&chain, &name, host, String::new(), String::new());
                    if let Some(why) = &info.verify_error {
                        err.message = format!("TLS handshake with {host} failed: {why}");
                    }
                    err.tls = Some(Box::new(info));
                }
                err
            })?;
        let (_, session) = tls.get_ref();
        let chain: Vec<CertificateDer<'static>> = session
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default();
        let version = session
            .protocol_version()
            .map(|v| format!("{v:?}").replace('_', "."))
            .unwrap_or_default();
        let cipher = session
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default();
        let info = self.inspect(&chain, &name, host, version, cipher);
        Ok((Box::new(tls), info))
    }

    /// Verify the presented chain again (the handshake may have skipped that with
    /// `--insecure`) and describe it, with a failure in words.
    fn inspect(
        &self,
        chain: &[CertificateDer<'static>],
        name: &ServerName<'static>,
        host: &str,
        version: String,
        cipher: String,
    ) -> TlsInfo {
        let certificate = chain.first().and_then(|leaf| describe_certificate(leaf));
        let verify = match chain.split_first() {
            Some((leaf, intermediates)) => self
                .verifier
                .verify_server_cert(leaf, intermediates, name, &[], UnixTime::now())
                .map(|_| ())
                .map_err(|e| explain(&e, certificate.as_ref(), chain.len(), host)),
            None => Err((
                TlsProblem::Other,
                "the server presented no certificate".to_string(),
            )),
        };
        let (problem, verify_error) = match verify {
            Ok(()) => (None, None),
            Err((p, text)) => (Some(p), Some(text)),
        };
        TlsInfo {
            version,
            cipher,
            verified: problem.is_none(),
            verify_error,
            name_matches: certificate
                .as_ref()
                .is_some_and(|c| crate::io::tls_inspect::name_matches(&c.sans, host)),
            certificate,
            problem,
        }
    }
}

/// A handshake's I/O error in words: rustls errors without their debug forms.
fn readable_io(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => explain(tls, None, 0, "").1,
        None => e.to_string(),
    }
}

/// Subject, issuer, names and validity of a DER certificate.
pub(crate) fn describe_certificate(der: &[u8]) -> Option<CertificateInfo> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push((*d).to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let not_after = cert.validity().not_after;
    let now = ASN1Time::now();
    let days_to_expiry = (not_after.timestamp() - now.timestamp()).div_euclid(86_400);
    Some(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: rfc3339(cert.validity().not_before),
        not_after: rfc3339(not_after),
        days_to_expiry,
    })
}

fn rfc3339(t: x509_parser::time::ASN1Time) -> String {
    t.to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
