//! What each protocol did with each message: the per-protocol result of the
//! report, the SMTP server's self-description and the verification of a copy.

use serde::{Deserialize, Serialize};

use crate::core::error::ProbeError;
use crate::core::phase::Phases;
use crate::core::reply::Reply;
use crate::core::tls_info::TlsInfo;
use crate::model::bounce::Bounce;

/// What one protocol did with one message. The same shape for every protocol:
/// SMTP fills `accepted` and `reply`; IMAP and POP3 fill `found`, `verified`,
/// `delivery_ms`, `verification` and `deleted`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolResult {
    /// Accepted (SMTP) or found and verified (IMAP, POP3).
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Phase durations in milliseconds.
    pub phases_ms: Phases,
    pub total_ms: f64,
    /// From SMTP acceptance until this protocol saw the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_ms: Option<f64>,
    /// The server's final reply (SMTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Whether the probe removed its copy (retrieval protocols).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// Why this protocol did not try (e.g. SMTP never accepted the message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// SMTP: whether delivery status notifications were asked for (`RET`,
    /// `ENVID`, `NOTIFY`; only when EHLO offers DSN and `--dsn auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn_requested: Option<bool>,
    /// SMTP: whether MAIL, RCPT and DATA went in one write, with QUIT behind the
    /// body (RFC 2920; only when EHLO offers PIPELINING and it is not turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelined: Option<bool>,
    /// Retrieval: the notification that says the message bounced or is delayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<Bounce>,
    /// Retrieval: the folder the message was found in, when it is not INBOX (e.g. `Junk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
}

impl ProtocolResult {
    pub(crate) fn failed(error: ProbeError, phases: Phases) -> Self {
        ProtocolResult {
            total_ms: phases.values().sum(),
            phases_ms: phases,
            tls: error.tls.as_deref().cloned(),
            error: Some(error),
            ..Default::default()
        }
    }
}

/// What the server told about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmtpServerInfo {
    pub banner: String,
    /// EHLO keywords with their parameters, e.g. `SIZE 10240000`, `STARTTLS`.
    pub capabilities: Vec<String>,
    /// The SIZE the server advertised in EHLO (0 means no limit announced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_size: Option<u64>,
    /// What the probe did differently from what was asked, e.g. AUTH skipped
    /// because the server did not offer it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The outcome of verifying one retrieved copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub verified: bool,
    pub bytes: u64,
    /// Every difference found, in plain words; empty when verified.
    pub problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<AttachmentFound>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentFound {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}
