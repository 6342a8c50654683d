//! The `mx` section of a `--domain` report: where the exchangers came from and
//! the SMTP check on each.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::core::phase::Phase;
use crate::model::result::ProtocolResult;

/// The `mx` section of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MxReport {
    pub domain: String,
    /// Where the exchangers came from.
    pub source: MxSource,
    /// The DNS server asked (`system` for the system resolver).
    pub resolver: String,
    /// Something the reader should know, e.g. the implicit-MX fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why DNS gave no usable answer (NXDOMAIN, SERVFAIL, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_error: Option<String>,
    /// In preference order.
    pub exchangers: Vec<Exchanger>,
    /// The exchanger the ladder (`messages`) went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MxSource {
    /// MX records.
    Mx,
    /// No MX record: the domain's own A/AAAA (RFC 5321 5.1).
    Implicit,
    /// `MX 0 .`: the domain accepts no mail (RFC 7505).
    NullMx,
    /// NXDOMAIN, an error answer, or neither MX nor address records.
    DnsFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchanger {
    pub host: String,
    pub preference: u16,
    pub addresses: Vec<IpAddr>,
    /// The address the SMTP check reached (or tried last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The SMTP check: `ok` when the recipient was accepted; phases, reply, error, tls.
    pub smtp: ProtocolResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
}

impl Exchanger {
    /// The exchanger answered SMTP (greeting received), whatever came after.
    pub(crate) fn reachable(&self) -> bool {
        self.smtp.phases_ms.contains_key(&Phase::Greeting)
    }
}
