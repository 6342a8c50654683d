//! TLS for every protocol: one client configuration (system roots plus an optional
//! private CA, or an explicit opt-out), and what the handshake revealed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsConnector;

use crate::error::{ErrorKind, ProbeError, ProbeResult};
use crate::net::{BoxStream, MailStream};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Extra trust anchors (PEM), e.g. a private CA or a self-signed server certificate.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. The report says so.
    pub insecure: bool,
}

/// Built once per run and shared by every connection.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    verifier: Arc<WebPkiServerVerifier>,
    insecure: bool,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// What one handshake revealed, for the report and for diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    /// Whether the chain verified against the trust anchors for the server name.
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    /// RFC 3339 timestamps.
    pub not_before: String,
    pub not_after: String,
    /// Negative once expired.
    pub days_to_expiry: i64,
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
    pub fn new(settings: &TlsSettings) -> ProbeResult<Self> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &settings.ca_file {
            for cert in load_pem_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| ProbeError::config(format!("CA file {}: {e}", path.display())))?;
            }
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ProbeError::config(format!("cannot build TLS verifier: {e}")))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProbeError::config(e.to_string()))?;
        let config = if settings.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
                .with_no_client_auth()
        } else {
            builder
                .with_webpki_verifier(Arc::clone(&verifier))
                .with_no_client_auth()
        };
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            verifier,
            insecure: settings.insecure,
        })
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Handshake over `stream` for `host`, returning the encrypted stream and what it showed.
    pub async fn handshake<S: MailStream + 'static>(
        &self,
        stream: S,
        host: &str,
    ) -> ProbeResult<(BoxStream, TlsInfo)> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ProbeError::config(format!("{host:?} is not a valid TLS server name")))?;
        let tls = self
            .connector
            .connect(name.clone(), stream)
            .await
            .map_err(|e| {
                let mut err = ProbeError::io(&e);
                if matches!(err.kind, ErrorKind::Protocol | ErrorKind::Network) {
                    err.kind = ErrorKind::Tls;
                }
                err.message = format!("TLS handshake with {host} failed: {e}");
                err
            })?;
        let (_, session) = tls.get_ref();
        let chain: Vec<CertificateDer<'static>> = session
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default();
        let verify_result = match chain.split_first() {
            Some((leaf, intermediates)) => self
                .verifier
                .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Err("the server presented no certificate".to_string()),
        };
        let info = TlsInfo {
            version: session
                .protocol_version()
                .map(|v| format!("{v:?}").replace('_', "."))
                .unwrap_or_default(),
            cipher: session
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default(),
            verified: verify_result.is_ok(),
            verify_error: verify_result.err(),
            certificate: chain.first().and_then(|leaf| describe_certificate(leaf)),
        };
        Ok((Box::new(tls), info))
    }
}

/// Subject, issuer, names and validity of a DER certificate.
pub fn describe_certificate(der: &[u8]) -> Option<CertificateInfo> {
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

/// The explicit opt-out: accepts any certificate (the handshake still checks the
/// signatures, so the session is at least with the key-holder of what was shown).
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
