//! Protocols, protocol phases and the clock that times them.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{ProbeError, ProbeResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Smtp, Protocol::Imap, Protocol::Pop3];

    pub fn as_str(self) -> &'static str {
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
    Logout,
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
            Phase::Logout => "logout",
        }
    }
}

/// Phase durations in milliseconds, in protocol order.
pub type Phases = std::collections::BTreeMap<Phase, f64>;

pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Records phase durations for one protocol conversation and applies each phase's
/// timeout, so that no step can hang and every failure names its phase.
#[derive(Debug)]
pub struct PhaseClock {
    protocol: Protocol,
    pub timings: Phases,
}

impl PhaseClock {
    pub fn new(protocol: Protocol) -> Self {
        PhaseClock {
            protocol,
            timings: Phases::new(),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Run `step` as `phase` under `limit`, recording its duration when it succeeds.
    pub async fn run<T, F>(&mut self, phase: Phase, limit: Duration, step: F) -> ProbeResult<T>
    where
        F: Future<Output = ProbeResult<T>>,
    {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(limit, step).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::timeout(limit)),
        };
        match outcome {
            Ok(value) => {
                self.record(phase, started.elapsed());
                Ok(value)
            }
            Err(err) => Err(err.at(self.protocol, phase)),
        }
    }

    /// Record a phase; a phase met again (a second EHLO, repeated polls) adds up.
    pub fn record(&mut self, phase: Phase, took: Duration) {
        *self.timings.entry(phase).or_insert(0.0) += millis(took);
    }

    pub fn into_timings(self) -> Phases {
        self.timings
    }
}
