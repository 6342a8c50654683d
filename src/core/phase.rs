//! Protocols and the phases of their conversations, with durations in milliseconds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl Protocol {
    pub(crate) const ALL: [Protocol; 3] = [Protocol::Smtp, Protocol::Imap, Protocol::Pop3];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Imap => "IMAP",
            Protocol::Pop3 => "POP3",
        }
    }
}

/// A step of a protocol conversation whose duration is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Connect,
    Tls,
    Greeting,
    Ehlo,
    Starttls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    Quit,
    Capability,
    Login,
    Select,
    Search,
    Stat,
    Fetch,
    /// Waiting for the message to become visible in the mailbox.
    Delivery,
    Delete,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "ehlo",
            Phase::Starttls => "starttls",
            Phase::Auth => "auth",
            Phase::MailFrom => "mail_from",
            Phase::RcptTo => "rcpt_to",
            Phase::Data => "data",
            Phase::Quit => "quit",
            Phase::Capability => "capability",
            Phase::Login => "login",
            Phase::Select => "select",
            Phase::Search => "search",
            Phase::Stat => "stat",
            Phase::Fetch => "fetch",
            Phase::Delivery => "delivery",
            Phase::Delete => "delete",
        }
    }
}

/// Phase durations in milliseconds, in protocol order.
pub(crate) type Phases = std::collections::BTreeMap<Phase, f64>;

pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
