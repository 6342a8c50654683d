//! Latency statistics over many messages (rounds, constant rate): pure, built from
//! finished message reports with HdrHistogram, per protocol, phase and size class.
//!
//! Only successful results feed the latency histograms; failures are counted by
//! kind instead, so that a refused connection's 0.3 ms never looks like a fast phase.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::core::error::ErrorKind;
use crate::core::phase::Protocol;
use crate::model::report::MessageReport;
use crate::model::result::ProtocolResult;
use crate::model::stats::{FailureCount, LatencyStats, StatPhase, Stats};

#[derive(Default)]
pub(crate) struct Collector {
    samples: BTreeMap<(Protocol, StatPhase, u64), Samples>,
    failures: BTreeMap<(Protocol, u64, ErrorKind), u64>,
    messages: u64,
}

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
    pub(crate) fn record(&mut self, protocol: Protocol, phase: StatPhase, size: u64, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        let s = self
            .samples
            .entry((protocol, phase, size))
            .or_insert_with(Samples::new);
        // Auto-resizing histogram: recording never fails for finite values.
        let _ = s.histogram.record(to_us(ms));
        s.min = s.min.min(ms);
        s.max = s.max.max(ms);
    }

    pub(crate) fn failure(&mut self, protocol: Protocol, size: u64, kind: ErrorKind) {
        *self.failures.entry((protocol, size, kind)).or_insert(0) += 1;
    }

    /// One protocol's result for one message.
    pub(crate) fn result(&mut self, protocol: Protocol, size: u64, r: &ProtocolResult) {
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
            self.record(protocol, StatPhase::from(*phase), size, *ms);
        }
        self.record(protocol, StatPhase::Total, size, r.total_ms);
        if let Some(d) = r.delivery_ms {
            self.record(protocol, StatPhase::Delivery, size, d);
        }
    }

    pub(crate) fn message(&mut self, m: &MessageReport) {
        self.messages += 1;
        self.result(Protocol::Smtp, m.size_bytes, &m.smtp);
        for (protocol, r) in m.retrievals() {
            self.result(protocol, m.size_bytes, r);
        }
    }

    pub(crate) fn finish(self, rounds: u32) -> Stats {
        let mut latency: Vec<LatencyStats> = self
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
        // Listed by name, as the report always has.
        latency.sort_by(|a, b| {
            (a.protocol, a.phase.as_str(), a.size_bytes).cmp(&(
                b.protocol,
                b.phase.as_str(),
                b.size_bytes,
            ))
        });
        let mut failures: Vec<FailureCount> = self
            .failures
            .into_iter()
            .map(|((protocol, size_bytes, kind), count)| FailureCount {
                protocol,
                size_bytes,
                kind,
                count,
            })
            .collect();
        failures.sort_by(|a, b| {
            (a.protocol, a.size_bytes, a.kind.as_str()).cmp(&(
                b.protocol,
                b.size_bytes,
                b.kind.as_str(),
            ))
        });
        Stats {
            rounds,
            messages: self.messages,
            latency,
            failures,
            ..Default::default()
        }
    }
}

/// Statistics over these messages (of `rounds` rounds).
pub(crate) fn build(messages: &[MessageReport], rounds: u32) -> Stats {
    let mut c = Collector::default();
    for m in messages {
        c.message(m);
    }
    c.finish(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::ProbeError;
    use crate::core::phase::{Phase, Phases};

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
        let c = s
            .get(Protocol::Smtp, StatPhase::Phase(Phase::Connect), 0)
            .unwrap();
        assert_eq!(c.count, 100);
        assert_eq!(c.min_ms, 0.1);
        assert_eq!(c.max_ms, 10.0);
        assert!(c.min_ms <= c.p50_ms && c.p50_ms <= c.p90_ms);
        assert!(c.p90_ms <= c.p99_ms && c.p99_ms <= c.max_ms);
        assert!((c.p50_ms - 5.0).abs() < 0.05, "{c:?}");
        assert!((c.p90_ms - 9.0).abs() < 0.05, "{c:?}");
        let d = s.get(Protocol::Imap, StatPhase::Delivery, 0).unwrap();
        assert_eq!((d.count, d.min_ms, d.max_ms), (100, 1.0, 100.0));
        assert!((d.p99_ms - 99.0).abs() < 0.1, "{d:?}");
        let t = s.get(Protocol::Smtp, StatPhase::Total, 0).unwrap();
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
        let c = s
            .get(Protocol::Smtp, StatPhase::Phase(Phase::Connect), 10240)
            .unwrap();
        assert_eq!((c.count, c.min_ms, c.max_ms), (1, 1.0, 1.0));
        assert_eq!((c.p50_ms, c.p99_ms), (1.0, 1.0));
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
