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
    /// Why the certificate does not verify, as a stable word (`verify_error` says it in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<TlsProblem>,
}

/// Why a certificate does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsProblem {
    Expired,
    NotYetValid,
    /// Issued by a CA that is not trusted (the server sent intermediates).
    UnknownIssuer,
    /// The server sent only its own certificate, whose issuer is not trusted.
    IncompleteChain,
    NameMismatch,
    /// Self-signed and not given with `--ca-file`.
    SelfSigned,
    /// The server key matches no `--pin-sha256`.
    PinMismatch,
    Other,
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
