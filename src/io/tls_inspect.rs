//! TLS certificate inspection: what a server presented, even when it does not
//! verify. A [`Recorder`] sits in front of the real verifier for one handshake and
//! keeps the chain, so a failed handshake can still say which certificate (names,
//! dates) the server showed; [`name_matches`] checks the names alone, independent
//! of chain trust.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::core::error::{ProbeError, ProbeResult};
use crate::io::trust::Trust;

/// Verifies through the run's [`Trust`] (or accepts anything with
/// `--insecure`), remembering the chain the server presented.
#[derive(Debug)]
pub(crate) struct Recorder {
    inner: Arc<Trust>,
    accept_anything: bool,
    seen: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl Recorder {
    /// The chain the server presented in this handshake, if it got that far.
    pub(crate) fn chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            let mut chain = vec![end_entity.clone().into_owned()];
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
            *seen = Some(chain);
        }
        if self.accept_anything {
            // Pins still hold with --insecure, as with curl.
            self.inner.check_pins(end_entity)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A connector for one handshake, with the recorder that watches it.
pub(crate) fn connector(
    verifier: &Arc<Trust>,
    accept_anything: bool,
) -> ProbeResult<(TlsConnector, Arc<Recorder>)> {
    let recorder = Arc::new(Recorder {
        inner: Arc::clone(verifier),
        accept_anything,
        seen: Mutex::new(None),
    });
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ProbeError::config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&recorder) as Arc<dyn ServerCertVerifier>)
            .with_no_client_auth();
    // Every probe measures a full handshake; and a client that offers no resumption
    // gets no session tickets, whose unacknowledged bytes otherwise hold the
    // server's next small reply in Nagle's algorithm for a delayed-ACK period (~40 ms).
    config.resumption = rustls::client::Resumption::disabled();
    Ok((TlsConnector::from(Arc::new(config)), recorder))
}

/// Whether one of the certificate's names (SANs) covers `host`, regardless of who
/// signed it. DNS names match case-insensitively, a leading `*.` covers exactly one
/// label; IP addresses match IP SANs only.
pub(crate) fn name_matches(sans: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return sans
            .iter()
            .any(|s| s.parse::<IpAddr>().is_ok_and(|a| a == ip));
    }
    let host = host.to_ascii_lowercase();
    sans.iter().any(|san| {
        let san = san.trim_end_matches('.').to_ascii_lowercase();
        match san.strip_prefix("*.") {
            Some(suffix) => host
                .split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => san == host,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_and_wildcard_names() {
        let sans = names(&["mail.example.com", "*.mx.example.com", "127.0.0.1"]);
        assert!(name_matches(&sans, "mail.example.com"));
        assert!(name_matches(&sans, "MAIL.example.com."));
        assert!(name_matches(&sans, "a.mx.example.com"));
        assert!(!name_matches(&sans, "mx.example.com"));
        assert!(!name_matches(&sans, "b.a.mx.example.com"));
        assert!(!name_matches(&sans, "other.example.com"));
        assert!(name_matches(&sans, "127.0.0.1"));
        assert!(!name_matches(&sans, "127.0.0.2"));
        assert!(!name_matches(&[], "mail.example.com"));
    }
}
