//! The report: everything a check found, with its verdict and diagnoses. Its JSON
//! form is a contract (fields are added, never renamed or dropped).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::core::error::ProbeError;
use crate::core::phase::{Protocol, millis};
use crate::core::time::rfc3339;
use crate::model::diagnosis::Diagnosis;
use crate::model::mx::MxReport;
use crate::model::result::{ProtocolResult, SmtpServerInfo};
use crate::model::stats::Stats;
use crate::model::timeline::Timeline;

/// The overall outcome; its order is its severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Degraded,
    Failing,
}

impl Verdict {
    /// Monitoring-plugins exit code: 0 healthy, 1 degraded, 2 failing (3 is "could not run").
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => 1,
            Verdict::Failing => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Failing => "failing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub smtp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pop3: Option<String>,
    pub from: String,
    pub to: String,
    pub sizes: Vec<u64>,
    /// TLS certificate verification was turned off by the user.
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageReport {
    pub probe_id: String,
    /// Attachment size in bytes; 0 is the plain text message.
    pub size_bytes: u64,
    pub attachment: bool,
    /// Size of the whole encoded message as sent.
    pub encoded_bytes: u64,
    pub smtp: ProtocolResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<ProtocolResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pop3: Option<ProtocolResult>,
    /// The round this message belongs to (`--rounds`, `verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

impl MessageReport {
    pub fn retrievals(&self) -> impl Iterator<Item = (Protocol, &ProtocolResult)> {
        [
            self.imap.as_ref().map(|r| (Protocol::Imap, r)),
            self.pop3.as_ref().map(|r| (Protocol::Pop3, r)),
        ]
        .into_iter()
        .flatten()
    }
    /// Sent, and verified by every retrieval protocol that was asked.
    pub fn fully_ok(&self) -> bool {
        self.smtp.ok && self.retrievals().all(|(_, r)| r.ok)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cleanup {
    /// Probe messages deleted.
    pub deleted: usize,
    /// Probe ids that may still be in the mailbox.
    pub leftovers: Vec<String>,
    pub errors: Vec<ProbeError>,
    /// Notifications (bounces, delays) about probe messages that were deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub notifications_deleted: usize,
    /// Where each probe message not deleted is: a folder (`INBOX`, `Junk`),
    /// `bounced` (never in the mailbox; not a leftover) or `not_arrived` (may
    /// still arrive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub places: Vec<Place>,
}

/// Where one probe message the cleanup did not delete is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    pub probe_id: String,
    pub place: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mailprobe_version: String,
    pub started_at: String,
    pub duration_ms: f64,
    pub verdict: Verdict,
    /// One line: the verdict in plain words.
    pub summary: String,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_server: Option<SmtpServerInfo>,
    pub messages: Vec<MessageReport>,
    /// The real size limit found by bisection (`--bisect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<SizeLimit>,
    pub diagnoses: Vec<Diagnosis>,
    pub cleanup: Cleanup,
    /// `--domain`: the domain's mail exchangers and the SMTP check on each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<MxReport>,
    /// Latency statistics, round log, stability and baseline comparison (rounds,
    /// `--rate`, `verify`, `--baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// What the liveness sampler saw of each service (`verify`, rounds,
    /// `--sample-interval`): up and down spans, restarts, crash loops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// Sessions and logins per retrieval protocol (and SMTP), with notes on pacing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sessions: BTreeMap<Protocol, SessionCounts>,
    /// The check's time limit (`--timeout`) and, when it was reached, where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<TimeLimit>,
}

/// How often one protocol connected and logged in during a check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// Connections opened.
    pub sessions: u32,
    /// Login attempts (LOGIN, USER/PASS, AUTH).
    pub logins: u32,
    /// IMAP IDLE commands issued (always 0 for SMTP and POP3).
    #[serde(default)]
    pub idle_commands: u32,
    /// IMAP STATUS polls (servers whose IDLE stays silent, or without IDLE).
    #[serde(default)]
    pub status_polls: u32,
    /// The POP3 server's LOGIN-DELAY in seconds, when it announced or enforced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_delay_s: Option<u64>,
    /// How the mailbox was watched, in plain words, when it differs from the usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl SessionCounts {
    /// Add another round's counts.
    pub fn add(&mut self, other: &SessionCounts) {
        self.sessions += other.sessions;
        self.logins += other.logins;
        self.idle_commands += other.idle_commands;
        self.status_polls += other.status_polls;
        self.login_delay_s = self.login_delay_s.or(other.login_delay_s);
        for n in &other.notes {
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
    }
}

/// The whole check's time limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeLimit {
    /// `--timeout` in milliseconds.
    pub timeout_ms: f64,
    /// The limit was reached before the check was done.
    pub reached: bool,
    /// The protocol whose phase used up the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The phase that used up the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::core::phase::Phase>,
}

/// Where the server's size limit really is, found by sending between the largest
/// accepted and the smallest refused message (sizes are whole encoded messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeLimit {
    pub largest_accepted_bytes: u64,
    pub smallest_refused_bytes: u64,
    /// Midpoint of the final interval.
    pub estimate_bytes: u64,
    /// Extra messages sent to find it.
    pub sends: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_bytes: Option<u64>,
    /// The advertised SIZE is more than 5 % away from the real limit.
    pub advertised_disagrees: bool,
}

impl Report {
    /// A report on `target` that started at `started_at` / `started`; verdict,
    /// summary and diagnoses are set by the analysis.
    pub(crate) fn new(
        target: Target,
        started_at: SystemTime,
        started: Instant,
        messages: Vec<MessageReport>,
        cleanup: Cleanup,
    ) -> Report {
        Report {
            mailprobe_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: rfc3339(started_at),
            duration_ms: millis(started.elapsed()),
            verdict: Verdict::Healthy,
            summary: String::new(),
            target,
            smtp_server: None,
            messages,
            size_limit: None,
            diagnoses: Vec::new(),
            cleanup,
            mx: None,
            stats: None,
            timeline: None,
            sessions: BTreeMap::new(),
            time_limit: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_counts_add_up_over_rounds() {
        let mut a = SessionCounts {
            sessions: 2,
            logins: 2,
            idle_commands: 1,
            ..Default::default()
        };
        let b = SessionCounts {
            sessions: 1,
            logins: 1,
            status_polls: 3,
            login_delay_s: Some(60),
            notes: vec!["n".into()],
            ..Default::default()
        };
        a.add(&b);
        a.add(&b);
        assert_eq!(
            (a.sessions, a.logins, a.idle_commands, a.status_polls),
            (4, 4, 1, 6)
        );
        assert_eq!(a.login_delay_s, Some(60));
        assert_eq!(a.notes, vec!["n".to_string()]);
    }
}
