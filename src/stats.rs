//! Latency statistics over many messages (rounds, constant rate): pure, built from
//! finished message reports with HdrHistogram, per protocol, phase and size class.
//!
//! Only successful results feed the latency histograms; failures are counted by
//! kind instead, so that a refused connection's 0.3 ms never looks like a fast phase.

use std::collections::BTreeMap;
use std::fmt::Write;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::phase::Protocol;
use crate::prober::ProtocolResult;
use crate::report::MessageReport;
use crate::units::format_size;

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
    /// `up`, `down` or `degraded` (see [`crate::stability::RoundState`]).
    pub state: crate::stability::RoundState,
    pub verdict: crate::report::Verdict,
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
    pub stability: Option<crate::stability::Stability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateStats>,
    /// Comparison with `--baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::baseline::Comparison>,
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
#[derive(Default)]
pub struct Collector {
    samples: BTreeMap<(Protocol, String, u64), Samples>,
    failures: BTreeMap<(Protocol, u64, ErrorKindKey), u64>,
    messages: u64,
}

/// ErrorKind has no Ord: key it by its name.
type ErrorKindKey = &'static str;

struct Samples {
    histogram: Histogram<u64>,
    min: f64,
    max: f64,
}

impl Samples {
    fn new() -> Self {
        Samples {
            histogram: Histogram::new(3).expect("3 significant digits is valid"),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

/// Histograms hold microseconds.
fn to_us(ms: f64) -> u64 {
    (ms.max(0.0) * 1000.0).round() as u64
}

impl Collector {
    pub fn record(&mut self, protocol: Protocol, phase: &str, size: u64, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        let s = self
            .samples
            .entry((protocol, phase.to_string(), size))
            .or_insert_with(Samples::new);
        // Auto-resizing histogram: recording never fails for finite values.
        let _ = s.histogram.record(to_us(ms));
        s.min = s.min.min(ms);
        s.max = s.max.max(ms);
    }

    pub fn failure(&mut self, protocol: Protocol, size: u64, kind: ErrorKind) {
        *self
            .failures
            .entry((protocol, size, kind.as_str()))
            .or_insert(0) += 1;
    }

    /// One protocol's result for one message.
    pub fn result(&mut self, protocol: Protocol, size: u64, r: &ProtocolResult) {
        if r.skipped.is_some() {
            return;
        }
        if !r.ok {
            let kind = r
                .error
                .as_ref()
                .map(|e| e.kind)
                .unwrap_or(ErrorKind::Protocol);
            self.failure(protocol, size, kind);
            return;
        }
        for (phase, ms) in &r.phases_ms {
            self.record(protocol, phase.as_str(), size, *ms);
        }
        self.record(protocol, TOTAL, size, r.total_ms);
        if let Some(d) = r.delivery_ms {
            self.record(protocol, DELIVERY, size, d);
        }
    }

    pub fn message(&mut self, m: &MessageReport) {
        self.messages += 1;
        self.result(Protocol::Smtp, m.size_bytes, &m.smtp);
        for (protocol, r) in m.retrievals() {
            self.result(protocol, m.size_bytes, r);
        }
    }

    pub fn finish(self, rounds: u32) -> Stats {
        let kinds: BTreeMap<&str, ErrorKind> = ALL_KINDS.iter().map(|k| (k.as_str(), *k)).collect();
        let latency = self
            .samples
            .into_iter()
            .map(|((protocol, phase, size_bytes), s)| {
                let q = |quantile: f64| {
                    // HdrHistogram answers with a bucket's highest equivalent value:
                    // keep it within the exact extremes.
                    (s.histogram.value_at_quantile(quantile) as f64 / 1000.0).clamp(s.min, s.max)
                };
                LatencyStats {
                    protocol,
                    phase,
                    size_bytes,
                    count: s.histogram.len(),
                    min_ms: s.min,
                    p50_ms: q(0.50),
                    p90_ms: q(0.90),
                    p99_ms: q(0.99),
                    max_ms: s.max,
                }
            })
            .collect();
        let failures = self
            .failures
            .into_iter()
            .map(|((protocol, size_bytes, kind), count)| FailureCount {
                protocol,
                size_bytes,
                kind: kinds.get(kind).copied().unwrap_or(ErrorKind::Protocol),
                count,
            })
            .collect();
        Stats {
            rounds,
            messages: self.messages,
            latency,
            failures,
            ..Default::default()
        }
    }
}

const ALL_KINDS: [ErrorKind; 13] = [
    ErrorKind::Timeout,
    ErrorKind::Refused,
    ErrorKind::Reset,
    ErrorKind::Closed,
    ErrorKind::Network,
    ErrorKind::Tls,
    ErrorKind::Rejected,
    ErrorKind::Auth,
    ErrorKind::Protocol,
    ErrorKind::NotDelivered,
    ErrorKind::Altered,
    ErrorKind::Unsupported,
    ErrorKind::Config,
];

/// Statistics over these messages (of `rounds` rounds).
pub fn build(messages: &[MessageReport], rounds: u32) -> Stats {
    let mut c = Collector::default();
    for m in messages {
        c.message(m);
    }
    c.finish(rounds)
}

/// The human report's statistics section.
pub fn render_human(stats: &Stats) -> String {
    let mut o = String::new();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "latency statistics ({} messages in {} round(s); ms):",
        stats.messages, stats.rounds
    );
    let _ = writeln!(
        o,
        "  {:<5} {:<22} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "proto", "phase", "size", "count", "min", "p50", "p90", "p99", "max"
    );
    let mut rows: Vec<&LatencyStats> = stats.latency.iter().collect();
    rows.sort_by(|a, b| {
        (a.protocol, a.size_bytes, phase_rank(&a.phase), &a.phase).cmp(&(
            b.protocol,
            b.size_bytes,
            phase_rank(&b.phase),
            &b.phase,
        ))
    });
    for l in rows {
        let _ = writeln!(
            o,
            "  {:<5} {:<22} {:>9} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            l.protocol.as_str(),
            l.phase,
            format_size(l.size_bytes),
            l.count,
            l.min_ms,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms
        );
    }
    if stats.failures.is_empty() {
        let _ = writeln!(o, "  failures: none");
    } else {
        let _ = writeln!(o, "  failures:");
        for f in &stats.failures {
            let _ = writeln!(
                o,
                "    {:<5} {:>9} {:<14} {}",
                f.protocol.as_str(),
                format_size(f.size_bytes),
                f.kind.as_str(),
                f.count
            );
        }
    }
    if let Some(r) = &stats.rate {
        let _ = writeln!(
            o,
            "  rate: intended {:.2}/s, achieved {:.2}/s ({} of {} scheduled sent in {:.1} s; worst start lag {:.1} ms)",
            r.intended_per_sec,
            r.achieved_per_sec,
            r.sent,
            r.scheduled,
            r.duration_ms / 1000.0,
            r.max_start_lag_ms
        );
    }
    if let Some(s) = &stats.stability {
        let _ = writeln!(o, "  stability: {}", s.describe());
    }
    if let Some(c) = &stats.baseline {
        let _ = writeln!(
            o,
            "  baseline {}: {} regression(s)",
            c.baseline_started_at,
            c.regressions.len() + c.newly_failing_sizes.len()
        );
    }
    o
}

/// `total` and `delivery` after the protocol phases.
fn phase_rank(phase: &str) -> u8 {
    match phase {
        INTENDED => 0,
        TOTAL => 2,
        DELIVERY => 3,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProbeError;
    use crate::phase::{Phase, Phases};

    fn ok(phases: &[(Phase, f64)], delivery: Option<f64>) -> ProtocolResult {
        let phases_ms: Phases = phases.iter().copied().collect();
        ProtocolResult {
            ok: true,
            total_ms: phases_ms.values().sum(),
            phases_ms,
            delivery_ms: delivery,
            ..Default::default()
        }
    }

    fn message(size: u64, smtp: ProtocolResult, imap: Option<ProtocolResult>) -> MessageReport {
        MessageReport {
            probe_id: format!("mailprobe-{size}"),
            size_bytes: size,
            attachment: size > 0,
            encoded_bytes: size + 500,
            smtp,
            imap,
            pop3: None,
            round: None,
        }
    }

    #[test]
    fn percentiles_are_ordered_and_counts_match() {
        let mut messages = Vec::new();
        for i in 1..=100 {
            messages.push(message(
                0,
                ok(
                    &[(Phase::Connect, i as f64 / 10.0), (Phase::Data, 5.0)],
                    None,
                ),
                Some(ok(&[(Phase::Fetch, 2.0)], Some(i as f64))),
            ));
        }
        let s = build(&messages, 100);
        assert_eq!(s.messages, 100);
        let c = s.get(Protocol::Smtp, "connect", 0).unwrap();
        assert_eq!(c.count, 100);
        assert_eq!(c.min_ms, 0.1);
        assert_eq!(c.max_ms, 10.0);
        assert!(c.min_ms <= c.p50_ms && c.p50_ms <= c.p90_ms);
        assert!(c.p90_ms <= c.p99_ms && c.p99_ms <= c.max_ms);
        assert!((c.p50_ms - 5.0).abs() < 0.05, "{c:?}");
        assert!((c.p90_ms - 9.0).abs() < 0.05, "{c:?}");
        let d = s.get(Protocol::Imap, DELIVERY, 0).unwrap();
        assert_eq!((d.count, d.min_ms, d.max_ms), (100, 1.0, 100.0));
        assert!((d.p99_ms - 99.0).abs() < 0.1, "{d:?}");
        let t = s.get(Protocol::Smtp, TOTAL, 0).unwrap();
        assert_eq!(t.count, 100);
        assert!(s.failures.is_empty());
    }

    #[test]
    fn failures_are_counted_by_kind_and_kept_out_of_latency() {
        let refused = ProtocolResult::failed(
            ProbeError::new(ErrorKind::Refused, "refused").at(Protocol::Smtp, Phase::Connect),
            [(Phase::Connect, 0.2)].into_iter().collect(),
        );
        let skipped = ProtocolResult {
            skipped: Some("SMTP did not accept the message".into()),
            ..Default::default()
        };
        let messages = vec![
            message(10240, refused.clone(), Some(skipped.clone())),
            message(10240, refused, Some(skipped)),
            message(
                10240,
                ok(&[(Phase::Connect, 1.0)], None),
                Some(ok(&[], Some(3.0))),
            ),
        ];
        let s = build(&messages, 3);
        assert_eq!(s.failures_of(Protocol::Smtp, 10240), 2);
        assert_eq!(s.failures[0].kind, ErrorKind::Refused);
        assert_eq!(s.failures_of(Protocol::Imap, 10240), 0);
        let c = s.get(Protocol::Smtp, "connect", 10240).unwrap();
        assert_eq!((c.count, c.min_ms, c.max_ms), (1, 1.0, 1.0));
        assert_eq!((c.p50_ms, c.p99_ms), (1.0, 1.0));
        let text = render_human(&s);
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains("10 KiB") || text.contains("10KiB"), "{text}");
    }

    #[test]
    fn json_round_trips() {
        let s = build(&[message(0, ok(&[(Phase::Ehlo, 1.5)], None), None)], 1);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"p99_ms\""), "{json}");
        assert!(!json.contains("round_log"), "{json}");
        let back: Stats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
