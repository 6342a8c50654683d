//! What the server said about a message after accepting it: a delivery status
//! notification (or a non-standard bounce) about one probe message, and why.

use serde::{Deserialize, Serialize};

/// What the notification reports (RFC 3464 `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceAction {
    /// The message will not be delivered.
    Failed,
    /// Delivery is being retried (a warning; the message may still arrive).
    Delayed,
}

/// Why a message bounced, from its status code and diagnostic text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceReason {
    /// Mailbox full (x.2.2).
    Quota,
    /// Message too big for a later hop (5.3.4, 5.2.3, 552).
    Size,
    /// Refused by policy: content, virus, spam (5.7.x).
    Policy,
    /// The recipient does not exist (5.1.1).
    UnknownRecipient,
    Other,
}

impl BounceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BounceReason::Quota => "quota",
            BounceReason::Size => "size",
            BounceReason::Policy => "policy",
            BounceReason::UnknownRecipient => "unknown_recipient",
            BounceReason::Other => "other",
        }
    }
}

/// One notification about one probe message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounce {
    pub action: BounceAction,
    pub reason: BounceReason,
    /// Enhanced status code (`Status:`), e.g. `5.2.2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `Diagnostic-Code:` (or the quoted reply of a non-standard bounce).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_mta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_recipient: Option<String>,
    /// How the notification was tied to the probe message: `envelope_id`,
    /// `probe_header` or `message_id`.
    pub matched_by: String,
    /// A standard `multipart/report; report-type=delivery-status` (RFC 3464).
    pub standard: bool,
    /// The folder the notification was found in.
    pub folder: String,
    /// From SMTP acceptance until the notification was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_acceptance_ms: Option<f64>,
}

impl Bounce {
    /// One line of evidence: status, diagnostic text, MTAs and timing.
    pub fn describe(&self) -> String {
        let mut parts = vec![match self.action {
            BounceAction::Failed => "bounced".to_string(),
            BounceAction::Delayed => "delivery delayed".to_string(),
        }];
        if let Some(s) = &self.status {
            parts.push(format!("status {s}"));
        }
        parts.push(format!("reason {}", self.reason.as_str()));
        if let Some(d) = &self.diagnostic {
            parts.push(format!("diagnostic {d:?}"));
        }
        if let Some(m) = &self.reporting_mta {
            parts.push(format!("reported by {m}"));
        }
        if let Some(m) = &self.remote_mta {
            parts.push(format!("remote MTA {m}"));
        }
        if let Some(ms) = self.after_acceptance_ms {
            parts.push(format!("{:.1} s after SMTP acceptance", ms / 1000.0));
        }
        parts.join(", ")
    }
}
