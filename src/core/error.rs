//! One opaque error type for every protocol, with predicates instead of strings.
//!
//! A probe failure must say *where* it happened (protocol and phase), *what* the
//! server answered (a typed reply, when there was one) and *what kind* of failure it
//! was, so that diagnosis can reason about it without parsing messages.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::core::auth::AuthReason;
use crate::core::classify::{Evidence, ReplyClass, classify};
use crate::core::phase::{Phase, Protocol};
use crate::core::reply::Reply;
use crate::core::tls_info::TlsInfo;

/// Names the check's time limit in its errors (and finds them again).
const TIME_LIMIT_FLAG: &str = "--timeout";

/// What went wrong, independent of protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The phase did not finish within its timeout.
    Timeout,
    /// TCP connection refused (nothing listening).
    Refused,
    /// The peer reset the connection.
    Reset,
    /// The peer closed the connection without a (complete) reply.
    Closed,
    /// Other network failure (unreachable, DNS, ...).
    Network,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The server answered with a negative reply (SMTP 4xx/5xx, IMAP NO/BAD, POP3 -ERR).
    Rejected,
    /// Login refused.
    Auth,
    /// The server's answer made no sense (garbage, over-long line, bad code).
    Protocol,
    /// The message was not found before the delivery deadline.
    NotDelivered,
    /// The message was found but its content differs from what was sent.
    Altered,
    /// A required capability is missing (e.g. STARTTLS required but not offered).
    Unsupported,
    /// Local problem: bad configuration, missing secret, unreadable file.
    Config,
}

impl ErrorKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Network => "network",
            ErrorKind::Tls => "tls",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Auth => "auth",
            ErrorKind::Protocol => "protocol",
            ErrorKind::NotDelivered => "not_delivered",
            ErrorKind::Altered => "altered",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "config",
        }
    }
}

/// A probe failure: kind, where it happened, the server's reply if any, and detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeError {
    pub kind: ErrorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    pub message: String,
    /// A failed TLS handshake: the certificate the server presented anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsInfo>>,
    /// A refused login: why, when the evidence says (`invalid_token`, `expired_token`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_reason: Option<AuthReason>,
    /// What the refusal means, from its codes, text and what the probe knew
    /// (`crate::core::classify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ReplyClass>,
}

impl ProbeError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProbeError {
            kind,
            protocol: None,
            phase: None,
            reply: None,
            message: message.into(),
            tls: None,
            auth_reason: None,
            class: None,
        }
    }

    pub(crate) fn timeout(after: std::time::Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!(
                "no answer within {}",
                crate::core::units::format_duration(after)
            ),
        )
    }

    pub(crate) fn rejected(reply: Reply) -> Self {
        let message = reply.to_string();
        ProbeError {
            reply: Some(reply),
            ..Self::new(ErrorKind::Rejected, message)
        }
    }

    pub(crate) fn protocol_violation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Classify an I/O error (refused, reset, closed, ...).
    pub(crate) fn io(err: &io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
            io::ErrorKind::BrokenPipe => ErrorKind::Reset,
            io::ErrorKind::UnexpectedEof => ErrorKind::Closed,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            io::ErrorKind::InvalidData => {
                // rustls reports handshake and certificate failures as InvalidData.
                if err
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
                {
                    ErrorKind::Tls
                } else {
                    ErrorKind::Protocol
                }
            }
            _ => ErrorKind::Network,
        };
        Self::new(kind, err.to_string())
    }

    pub(crate) fn closed() -> Self {
        Self::new(
            ErrorKind::Closed,
            "the server closed the connection without a reply",
        )
    }

    /// Attach the protocol and phase this failure belongs to (keeps an earlier one).
    pub(crate) fn at(mut self, protocol: Protocol, phase: Phase) -> Self {
        self.protocol.get_or_insert(protocol);
        self.phase.get_or_insert(phase);
        self
    }

    /// A refused login and why.
    pub(crate) fn auth_refused(reason: Option<AuthReason>, message: impl Into<String>) -> Self {
        ProbeError {
            auth_reason: reason,
            ..Self::new(ErrorKind::Auth, message)
        }
    }

    /// Classify the server's refusal (if this error carries one) from `evidence`
    /// filled in by the caller; the protocol, phase and reply come from the error.
    pub(crate) fn classified(mut self, evidence: impl FnOnce(&Reply) -> Evidence<'_>) -> Self {
        if let Some(reply) = &self.reply {
            let mut e = evidence(reply);
            e.protocol = self.protocol.unwrap_or(e.protocol);
            e.phase = self.phase.unwrap_or(e.phase);
            self.class = Some(classify(&e));
        }
        self
    }

    /// [`ProbeError::classified`] for a refused login. A login refused because the
    /// session is not encrypted is a setup the server does not support, not a
    /// wrong name or password.
    pub(crate) fn classified_login(
        self,
        protocol: Protocol,
        encrypted: bool,
        tls_offered: bool,
    ) -> Self {
        let e = self.classified(|reply| Evidence {
            protocol,
            phase: Phase::Login,
            reply,
            declared_size: None,
            advertised_size: None,
            encrypted,
            tls_offered,
        });
        if e.is_class(ReplyClass::PlaintextDisabled) {
            e.with_kind(ErrorKind::Unsupported)
        } else {
            e
        }
    }

    /// Refused for the message's size: by its class, or for an unclassified
    /// error (an older report) by its codes alone.
    pub(crate) fn is_size_refusal(&self) -> bool {
        match self.class {
            Some(class) => class == ReplyClass::SizeLimit,
            None => self.reply.as_ref().is_some_and(Reply::is_size_limit),
        }
    }

    /// The refusal's class, when it was classified.
    pub(crate) fn is_class(&self, class: ReplyClass) -> bool {
        self.class == Some(class)
    }

    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub(crate) fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// The check's own time limit (`--timeout`, `limit` in words) ran out.
    pub(crate) fn time_limit(limit: &str) -> Self {
        ProbeError::new(
            ErrorKind::Timeout,
            format!("the check's time limit ({TIME_LIMIT_FLAG} {limit}) ran out"),
        )
    }
    /// Made by [`ProbeError::time_limit`], also when read back from a report.
    pub(crate) fn is_time_limit(&self) -> bool {
        self.is_timeout() && self.message.contains(TIME_LIMIT_FLAG)
    }
    pub(crate) fn is_tls(&self) -> bool {
        self.kind == ErrorKind::Tls
    }
    pub(crate) fn is_auth(&self) -> bool {
        self.kind == ErrorKind::Auth
    }
    /// The connection went away: refused, reset or closed without a reply.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Refused | ErrorKind::Reset | ErrorKind::Closed
        )
    }
    /// A 5xx / permanent rejection.
    pub fn is_permanent(&self) -> bool {
        self.reply.as_ref().is_some_and(Reply::is_permanent)
    }
    /// The server's numeric reply code, when it gave one.
    pub(crate) fn status(&self) -> Option<u16> {
        self.reply.as_ref().and_then(|r| r.code)
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.protocol, self.phase) {
            (Some(p), Some(ph)) => write!(f, "{} {}: ", p.label(), ph.as_str())?,
            (Some(p), None) => write!(f, "{}: ", p.label())?,
            _ => {}
        }
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

impl std::error::Error for ProbeError {}

pub(crate) type ProbeResult<T> = Result<T, ProbeError>;
