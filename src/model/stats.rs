//! The `stats` section of a report: latency distributions and failure counts,
//! the round log, the stability analysis, constant-rate figures and the
//! comparison with a baseline.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::core::error::ErrorKind;
use crate::core::phase::{Phase, Protocol};
use crate::model::report::Verdict;

/// What a latency distribution measures: one protocol phase, or a span.
/// Serialized as its name (`connect`, `data`, `total`, `delivery`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum StatPhase {
    /// A phase of the conversation (never `Phase::Delivery`: that is [`StatPhase::Delivery`]).
    Phase(Phase),
    /// The whole conversation of one protocol for one message.
    Total,
    /// From SMTP acceptance until the retrieval protocol saw the message.
    Delivery,
    /// Constant-rate mode: from the intended send time until SMTP accepted.
    IntendedToAccepted,
}

impl StatPhase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StatPhase::Phase(p) => p.as_str(),
            StatPhase::Total => "total",
            StatPhase::Delivery => "delivery",
            StatPhase::IntendedToAccepted => "intended_to_accepted",
        }
    }
}

impl From<Phase> for StatPhase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Delivery => StatPhase::Delivery,
            p => StatPhase::Phase(p),
        }
    }
}

impl From<StatPhase> for String {
    fn from(p: StatPhase) -> String {
        p.as_str().to_string()
    }
}

impl TryFrom<String> for StatPhase {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "total" => Ok(StatPhase::Total),
            "delivery" => Ok(StatPhase::Delivery),
            "intended_to_accepted" => Ok(StatPhase::IntendedToAccepted),
            other => serde_json::from_value::<Phase>(serde_json::Value::String(other.into()))
                .map(StatPhase::Phase)
                .map_err(|_| format!("unknown statistics phase {other:?}")),
        }
    }
}

impl fmt::Display for StatPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub protocol: Protocol,
    pub phase: StatPhase,
    /// Size class: the rung's attachment size in bytes (0 = plain message).
    pub size_bytes: u64,
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Failures of one protocol for one size class, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureCount {
    pub(crate) protocol: Protocol,
    pub(crate) size_bytes: u64,
    pub(crate) kind: ErrorKind,
    pub(crate) count: u64,
}

/// One round as it went (rounds and `verify`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub round: u32,
    /// `up`, `down` or `degraded` (see [`RoundState`]).
    pub state: RoundState,
    pub verdict: Verdict,
    pub duration_ms: f64,
    /// Protocols that failed at connection level (refused, reset, no greeting, 421).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<Protocol>,
    /// Services the liveness sampler saw down or restarting during the round
    /// (and the pause before it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sampled_down: Vec<Protocol>,
    /// The round's first diagnosis, in words.
    pub summary: String,
}

/// Constant-rate mode: what was intended and what was achieved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateStats {
    pub intended_per_sec: f64,
    pub achieved_per_sec: f64,
    /// Messages scheduled and messages whose SMTP conversation ended (either way).
    pub scheduled: u64,
    pub sent: u64,
    pub duration_ms: f64,
    /// Worst lag of an actual send start behind its intended time.
    pub max_start_lag_ms: f64,
}

/// The optional `stats` section of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub rounds: u32,
    pub messages: u64,
    pub latency: Vec<LatencyStats>,
    pub failures: Vec<FailureCount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub round_log: Vec<RoundSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stability: Option<Stability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateStats>,
    /// Comparison with `--baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Comparison>,
}

impl Stats {
    pub fn get(&self, protocol: Protocol, phase: StatPhase, size: u64) -> Option<&LatencyStats> {
        self.latency
            .iter()
            .find(|l| l.protocol == protocol && l.phase == phase && l.size_bytes == size)
    }
    pub fn failures_of(&self, protocol: Protocol, size: u64) -> u64 {
        self.failures
            .iter()
            .filter(|f| f.protocol == protocol && f.size_bytes == size)
            .map(|f| f.count)
            .sum()
    }
}

/// Collects samples; [`Collector::finish`] turns them into [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    Up,
    Down,
    Degraded,
}

impl RoundState {
    pub fn as_str(self) -> &'static str {
        match self {
            RoundState::Up => "up",
            RoundState::Down => "down",
            RoundState::Degraded => "degraded",
        }
    }
}

/// What the rounds so far say about the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stability {
    /// `stable`, `flapping`, `down`, `degraded` or `recovering` (up, not yet long enough).
    pub state: String,
    pub rounds: u32,
    pub up_rounds: u32,
    pub down_rounds: u32,
    pub degraded_rounds: u32,
    /// Changes of state between consecutive rounds (up, degraded, down).
    pub transitions: u32,
    /// Longest run of up rounds, and of rounds that were not up.
    pub longest_up: u32,
    pub longest_down: u32,
    /// Up rounds at the end.
    pub streak: u32,
    /// Up rounds needed at the end to call the server stable.
    pub required: u32,
    pub stable: bool,
    pub flapping: bool,
    /// Protocols seen down in any round.
    pub protocols: Vec<Protocol>,
    /// Up rounds during which the liveness sampler saw a service down or
    /// restarting (they do not count towards the streak).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sampled_down_rounds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Stability {
    pub fn describe(&self) -> String {
        format!(
            "{} after {} round(s): {} up, {} down, {} degraded; {} transition(s); longest up {} round(s), longest down {}; up streak {}/{}{}{}",
            self.state,
            self.rounds,
            self.up_rounds,
            self.down_rounds,
            self.degraded_rounds,
            self.transitions,
            self.longest_up,
            self.longest_down,
            self.streak,
            self.required,
            if self.sampled_down_rounds == 0 {
                String::new()
            } else {
                format!(
                    "; {} passing round(s) with a service seen down or restarting",
                    self.sampled_down_rounds
                )
            },
            if self.protocols.is_empty() {
                String::new()
            } else {
                format!(
                    "; down: {}",
                    self.protocols
                        .iter()
                        .map(|p| p.label())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub protocol: Protocol,
    pub phase: StatPhase,
    pub size_bytes: u64,
    /// `p50` or `p99`.
    pub percentile: String,
    pub baseline_ms: f64,
    pub current_ms: f64,
}

/// `stats.baseline` in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline_started_at: String,
    pub threshold_percent: f64,
    pub threshold_min_ms: f64,
    pub regressions: Vec<Regression>,
    /// Sizes verified in the baseline that no message of this run got through.
    pub newly_failing_sizes: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enum serializes to the names the report always had.
    #[test]
    fn stat_phases_keep_their_names() {
        for (p, name) in [
            (StatPhase::Phase(Phase::MailFrom), "mail_from"),
            (StatPhase::from(Phase::Delivery), "delivery"),
            (StatPhase::Total, "total"),
            (StatPhase::Delivery, "delivery"),
            (StatPhase::IntendedToAccepted, "intended_to_accepted"),
        ] {
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, serde_json::Value::String(name.into()));
            assert_eq!(serde_json::from_value::<StatPhase>(json).unwrap(), p);
        }
        assert!(serde_json::from_str::<StatPhase>("\"warp\"").is_err());
        let kinds = serde_json::to_string(&FailureCount {
            protocol: Protocol::Pop3,
            size_bytes: 1,
            kind: ErrorKind::NotDelivered,
            count: 2,
        })
        .unwrap();
        assert!(kinds.contains("\"kind\":\"not_delivered\""), "{kinds}");
    }
}
