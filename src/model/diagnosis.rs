//! Diagnoses: what is wrong (a stable code), how bad (severity), in words, with
//! the evidence and hints; and the thresholds that decide "slow" and "expiring".

use serde::{Deserialize, Serialize};

use crate::core::phase::Protocol;
use crate::model::bounce::BounceReason;
use crate::model::report::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// A service went down and came back at least twice (the liveness timeline).
    CrashLoop,
    SharedOutage,
    EndpointDown,
    AuthFailed,
    TlsInvalid,
    AttachmentsFail,
    NotDelivered,
    SendFailed,
    MessageAltered,
    Intermittent,
    RetrievalPartial,
    Slow,
    CleanupIncomplete,
    DnsFailed,
    NullMx,
    MxUnreachable,
    /// Rounds alternate between up and down (`verify`).
    Flapping,
    /// `verify` ended without the stability target (down or degraded).
    NotStable,
    /// Slower than, or failing where it worked in, the `--baseline`.
    Regression,
    /// A service restarted once during the run (the liveness timeline).
    Restarted,
    /// Probe messages were filed into Junk (or another watched folder), not INBOX.
    DeliveredToJunk,
    /// The check's time limit (`--timeout`) ran out before it was done.
    TimeLimit,
    /// SMTP wants AUTH before it takes mail.
    AuthRequired,
    /// SMTP wants TLS before it takes mail.
    TlsRequired,
    /// SMTP does not relay to the recipient's domain.
    RelayDenied,
    /// SMTP does not know the recipient.
    UnknownRecipient,
    /// The server refuses because of too many connections or messages (transient).
    RateLimited,
    /// Greylisting: a temporary refusal that a real sender retries (degraded).
    Greylisted,
    /// IMAP or POP3 refuses a password over an unencrypted session.
    PlaintextDisabled,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::CrashLoop => "crash_loop",
            Code::SharedOutage => "shared_outage",
            Code::EndpointDown => "endpoint_down",
            Code::AuthFailed => "auth_failed",
            Code::TlsInvalid => "tls_invalid",
            Code::AttachmentsFail => "attachments_fail",
            Code::NotDelivered => "not_delivered",
            Code::SendFailed => "send_failed",
            Code::MessageAltered => "message_altered",
            Code::Intermittent => "intermittent",
            Code::RetrievalPartial => "retrieval_partial",
            Code::Slow => "slow",
            Code::CleanupIncomplete => "cleanup_incomplete",
            Code::DnsFailed => "dns_failed",
            Code::NullMx => "null_mx",
            Code::MxUnreachable => "mx_unreachable",
            Code::Flapping => "flapping",
            Code::NotStable => "not_stable",
            Code::Regression => "regression",
            Code::Restarted => "restarted",
            Code::DeliveredToJunk => "delivered_to_junk",
            Code::TimeLimit => "time_limit",
            Code::AuthRequired => "auth_required",
            Code::TlsRequired => "tls_required",
            Code::RelayDenied => "relay_denied",
            Code::UnknownRecipient => "unknown_recipient",
            Code::RateLimited => "rate_limited",
            Code::Greylisted => "greylisted",
            Code::PlaintextDisabled => "plaintext_disabled",
        }
    }
}

/// How messages fail, for `attachments_fail`; why a login was refused, for `auth_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    SizeLimit,
    SessionDropped,
    Rejected,
    Timeout,
    NotDelivered,
    Altered,
    /// `auth_failed`: the server refused the access token.
    InvalidToken,
    /// `auth_failed`: the token's `exp` has passed (found before connecting).
    ExpiredToken,
    /// `auth_failed`: the token lacks the scope the server wants.
    InsufficientScope,
    /// `auth_failed`: the token is for another user, or the user is unknown.
    UnknownUser,
    /// `auth_failed`: the server does not offer the mechanism the login needs.
    MechanismNotOffered,
    /// Accepted, then refused by a later hop: a failure notification came back.
    Bounced,
    /// Not delivered yet: a delay notification says the server keeps retrying.
    Deferred,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::SizeLimit => "size_limit",
            Cause::SessionDropped => "session_dropped",
            Cause::Rejected => "rejected",
            Cause::Timeout => "timeout",
            Cause::NotDelivered => "not_delivered",
            Cause::Altered => "altered",
            Cause::InvalidToken => "invalid_token",
            Cause::ExpiredToken => "expired_token",
            Cause::InsufficientScope => "insufficient_scope",
            Cause::UnknownUser => "unknown_user",
            Cause::MechanismNotOffered => "mechanism_not_offered",
            Cause::Bounced => "bounced",
            Cause::Deferred => "deferred",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Degraded,
    Failing,
}

impl Severity {
    pub fn verdict(self) -> Verdict {
        match self {
            Severity::Degraded => Verdict::Degraded,
            Severity::Failing => Verdict::Failing,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub code: Code,
    pub severity: Severity,
    /// One line in plain words.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Why the messages bounced or are delayed (cause `bounced` / `deferred`):
    /// from the notification's status code and text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<BounceReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// What was observed: messages, phases, replies, timings.
    pub evidence: Vec<String>,
    /// What to check.
    pub hints: Vec<String>,
}

/// When a phase counts as slow, and when a certificate expires too soon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Thresholds {
    /// Any command phase (connect, greeting, EHLO, login, ...).
    pub(crate) phase_ms: f64,
    /// Delivery into the mailbox.
    pub(crate) delivery_ms: f64,
    /// Body transfers (DATA, FETCH): a base allowance plus this much per MiB.
    pub(crate) transfer_ms_per_mib: f64,
    pub(crate) cert_warn_days: i64,
    /// `--junk-is-failure`: mail filed into Junk fails the check (else degraded).
    pub(crate) junk_is_failure: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            phase_ms: 2000.0,
            delivery_ms: 15_000.0,
            transfer_ms_per_mib: 1000.0,
            cert_warn_days: 14,
            junk_is_failure: false,
        }
    }
}
