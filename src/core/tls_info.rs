//! What a TLS handshake revealed: version, cipher, verification and the
//! certificate the server presented (for the report and for diagnosis).

use serde::{Deserialize, Serialize};

/// What one handshake revealed, for the report and for diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    /// Whether the chain verified against the trust anchors for the server name.
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// Whether a certificate name (SAN) covers the server name, whoever signed it.
    #[serde(default)]
    pub name_matches: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) sans: Vec<String>,
    /// RFC 3339 timestamps.
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    /// Negative once expired.
    pub(crate) days_to_expiry: i64,
}
