//! The `stats` section of a report: latency distributions and failure counts,
//! the round log, the stability analysis, constant-rate figures and the
//! comparison with a baseline.

use serde::{Deserialize, Serialize};

use crate::core::error::ErrorKind;
use crate::core::phase::Protocol;
use crate::model::report::Verdict;

/// The whole conversation of one protocol for one message.
pub const TOTAL: &str = "total";
/// From SMTP acceptance until the retrieval protocol saw the message.
pub const DELIVERY: &str = "delivery";
/// Constant-rate mode: from the intended send time until SMTP accepted.
pub const INTENDED: &str = "intended_to_accepted";

/// One latency distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub protocol: Protocol,
    /// A phase name (`connect`, `data`, ...), `total` or `delivery`.
    pub phase: String,
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
    pub protocol: Protocol,
    pub size_bytes: u64,
    pub kind: ErrorKind,
    pub count: u64,
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
    pub fn get(&self, protocol: Protocol, phase: &str, size: u64) -> Option<&LatencyStats> {
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
    /// Changes between up and not up.
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
}

impl Stability {
    pub fn describe(&self) -> String {
        format!(
            "{} after {} round(s): {} up, {} down, {} degraded; {} transition(s); longest up {} round(s), longest down {}; up streak {}/{}{}",
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
    pub phase: String,
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
