//! Compare a run with an earlier JSON report (`--baseline FILE`): per-phase p50/p99
//! regressions beyond a threshold, and sizes that worked before but fail now.
//! Pure: the baseline arrives as JSON text (the app reads the file).

use std::collections::BTreeSet;

use crate::analysis::stats;
use crate::core::units::format_size;
use crate::model::diagnosis::{Code, Diagnosis, Severity};
use crate::model::report::MessageReport;
use crate::model::stats::{Comparison, Regression, StatPhase, Stats};

/// When a slower percentile counts as a regression: both relatively and absolutely.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Threshold {
    /// 0.5 = 50 % slower.
    pub(crate) ratio: f64,
    pub(crate) min_ms: f64,
    /// Delivery is seen by polling: differences within this are noise.
    pub(crate) delivery_min_ms: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            ratio: 0.5,
            min_ms: 5.0,
            delivery_min_ms: 5.0,
        }
    }
}

/// Parse `--regression-threshold`: `50%`, `50` (percent) or `0.5`... as percent always.
pub(crate) fn parse_threshold(text: &str) -> Result<Threshold, String> {
    let t = text.trim().trim_end_matches('%').trim();
    let percent: f64 = t
        .parse()
        .map_err(|_| format!("--regression-threshold {text:?}: give a percentage such as 50%"))?;
    if !(percent > 0.0 && percent.is_finite()) {
        return Err(format!(
            "--regression-threshold {text:?} must be more than 0 %"
        ));
    }
    Ok(Threshold {
        ratio: percent / 100.0,
        ..Default::default()
    })
}

/// The earlier run, as far as the comparison needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Baseline {
    pub(crate) started_at: String,
    pub(crate) stats: Stats,
    /// Sizes with at least one message verified end to end.
    pub(crate) working_sizes: BTreeSet<u64>,
}

impl Baseline {
    /// From a JSON report of any mailprobe version with `messages[]` (and maybe `stats`).
    pub(crate) fn from_json(text: &str) -> Result<Baseline, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON report: {e}"))?;
        let messages: Vec<MessageReport> = match value.get("messages") {
            Some(m) => serde_json::from_value(m.clone())
                .map_err(|e| format!("its messages[] are not mailprobe's: {e}"))?,
            None => return Err("not a mailprobe JSON report (no messages[])".into()),
        };
        let stats = match value.get("stats").filter(|s| !s.is_null()) {
            Some(s) => serde_json::from_value(s.clone())
                .map_err(|e| format!("its stats section is not mailprobe's: {e}"))?,
            None => stats::build(&messages, 1),
        };
        Ok(Baseline {
            started_at: value
                .get("started_at")
                .and_then(|s| s.as_str())
                .unwrap_or("unknown")
                .to_string(),
            stats,
            working_sizes: working_sizes(&messages),
        })
    }
}

pub(crate) fn working_sizes(messages: &[MessageReport]) -> BTreeSet<u64> {
    messages
        .iter()
        .filter(|m| m.fully_ok())
        .map(|m| m.size_bytes)
        .collect()
}

/// Compare. Phases missing on either side are not compared.
pub(crate) fn compare(
    baseline: &Baseline,
    current: &Stats,
    current_messages: &[MessageReport],
    t: Threshold,
) -> Comparison {
    let mut regressions = Vec::new();
    for now in &current.latency {
        let Some(before) = baseline.stats.get(now.protocol, now.phase, now.size_bytes) else {
            continue;
        };
        for (name, b, c) in [
            ("p50", before.p50_ms, now.p50_ms),
            ("p99", before.p99_ms, now.p99_ms),
        ] {
            let min_ms = if now.phase == StatPhase::Delivery {
                t.min_ms.max(t.delivery_min_ms)
            } else {
                t.min_ms
            };
            if c > b * (1.0 + t.ratio) && c - b >= min_ms {
                regressions.push(Regression {
                    protocol: now.protocol,
                    phase: now.phase,
                    size_bytes: now.size_bytes,
                    percentile: name.into(),
                    baseline_ms: b,
                    current_ms: c,
                });
            }
        }
    }
    let working_now = working_sizes(current_messages);
    let tried_now: BTreeSet<u64> = current_messages.iter().map(|m| m.size_bytes).collect();
    let newly_failing_sizes = baseline
        .working_sizes
        .iter()
        .copied()
        .filter(|s| tried_now.contains(s) && !working_now.contains(s))
        .collect();
    Comparison {
        baseline_started_at: baseline.started_at.clone(),
        threshold_percent: t.ratio * 100.0,
        threshold_min_ms: t.min_ms,
        regressions,
        newly_failing_sizes,
    }
}

/// `regression` diagnoses: one for slower phases (degraded), one for sizes that
/// stopped working (failing).
pub(crate) fn diagnoses(c: &Comparison) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    if !c.newly_failing_sizes.is_empty() {
        let sizes: Vec<String> = c
            .newly_failing_sizes
            .iter()
            .map(|s| format_size(*s))
            .collect();
        out.push(Diagnosis {
            code: Code::Regression,
            severity: Severity::Failing,
            summary: format!(
                "messages of {} worked in the baseline ({}) and fail now",
                sizes.join(", "),
                c.baseline_started_at
            ),
            cause: None,
            reason: None,
            protocol: None,
            evidence: sizes
                .iter()
                .map(|s| format!("{s}: verified in the baseline, not now"))
                .collect(),
            hints: vec![
                "what changed since the baseline: configuration, size limits, filters, antivirus or updates".into(),
            ],
        });
    }
    if !c.regressions.is_empty() {
        let mut worst = c.regressions.clone();
        worst.sort_by(|a, b| {
            (b.current_ms - b.baseline_ms).total_cmp(&(a.current_ms - a.baseline_ms))
        });
        let w = &worst[0];
        out.push(Diagnosis {
            code: Code::Regression,
            severity: Severity::Degraded,
            summary: format!(
                "{} phase(s) slower than the baseline; worst: {} {} {} {} {:.1} ms -> {:.1} ms",
                c.regressions.len(),
                w.protocol.label(),
                w.phase,
                format_size(w.size_bytes),
                w.percentile,
                w.baseline_ms,
                w.current_ms
            ),
            cause: None,
            reason: None,
            protocol: Some(w.protocol),
            evidence: worst
                .iter()
                .map(|r| {
                    format!(
                        "{} {} ({}) {}: {:.1} ms -> {:.1} ms (+{:.0} %)",
                        r.protocol.label(),
                        r.phase,
                        format_size(r.size_bytes),
                        r.percentile,
                        r.baseline_ms,
                        r.current_ms,
                        if r.baseline_ms > 0.0 {
                            (r.current_ms / r.baseline_ms - 1.0) * 100.0
                        } else {
                            f64::INFINITY
                        }
                    )
                })
                .collect(),
            hints: vec![
                format!(
                    "threshold: more than {:.0} % and at least {:.0} ms slower (--regression-threshold)",
                    c.threshold_percent, c.threshold_min_ms
                ),
                "check the server's load, DNS lookups in greetings (reverse DNS, RBL), filters and disk".into(),
            ],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::phase::Protocol;
    use crate::model::stats::LatencyStats;

    fn lat(phase: &str, p50: f64, p99: f64) -> LatencyStats {
        LatencyStats {
            protocol: Protocol::Imap,
            phase: StatPhase::try_from(phase.to_string()).unwrap(),
            size_bytes: 0,
            count: 10,
            min_ms: p50 / 2.0,
            p50_ms: p50,
            p90_ms: p99,
            p99_ms: p99,
            max_ms: p99,
        }
    }

    fn baseline(latency: Vec<LatencyStats>, working: &[u64]) -> Baseline {
        Baseline {
            started_at: "2026-11-25T00:00:00Z".into(),
            stats: Stats {
                latency,
                ..Default::default()
            },
            working_sizes: working.iter().copied().collect(),
        }
    }

    #[test]
    fn regressions_need_both_ratio_and_absolute_difference() {
        let b = baseline(
            vec![
                lat("greeting", 2.0, 4.0),
                lat("login", 20.0, 30.0),
                lat("fetch", 1.0, 1.0),
            ],
            &[],
        );
        let now = Stats {
            latency: vec![
                lat("greeting", 160.0, 170.0), // +158 ms: regression (p50 and p99)
                lat("login", 26.0, 34.0),      // +30 %: within 50 %
                lat("fetch", 4.0, 4.5),        // +300 % but only 3 ms: noise
                lat("select", 500.0, 500.0),   // not in the baseline
            ],
            ..Default::default()
        };
        let c = compare(&b, &now, &[], Threshold::default());
        assert_eq!(c.regressions.len(), 2, "{c:?}");
        assert!(
            c.regressions
                .iter()
                .all(|r| r.phase == StatPhase::Phase(crate::core::phase::Phase::Greeting))
        );
        let d = diagnoses(&c);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::Regression);
        assert_eq!(d[0].severity, Severity::Degraded);
        assert!(d[0].summary.contains("IMAP greeting"), "{}", d[0].summary);
    }

    #[test]
    fn unchanged_flags_nothing_and_threshold_parses() {
        let b = baseline(vec![lat("greeting", 2.0, 4.0)], &[0]);
        let now = Stats {
            latency: vec![lat("greeting", 2.5, 5.0)],
            ..Default::default()
        };
        let c = compare(&b, &now, &[], Threshold::default());
        assert!(c.regressions.is_empty() && c.newly_failing_sizes.is_empty());
        assert!(diagnoses(&c).is_empty());
        assert_eq!(parse_threshold("50%").unwrap().ratio, 0.5);
        assert_eq!(parse_threshold("200").unwrap().ratio, 2.0);
        assert!(parse_threshold("fast").is_err());
        assert!(parse_threshold("0").is_err());
    }

    fn message(size: u64, ok: bool) -> MessageReport {
        let r = crate::model::result::ProtocolResult {
            ok,
            ..Default::default()
        };
        MessageReport {
            probe_id: format!("mailprobe-{size}"),
            size_bytes: size,
            attachment: size > 0,
            encoded_bytes: size + 400,
            smtp: r.clone(),
            imap: Some(r),
            pop3: None,
            round: None,
        }
    }

    #[test]
    fn sizes_that_stopped_working_are_failing() {
        let now = vec![
            message(0, true),
            message(10240, false),
            message(10240, false),
        ];
        let b = baseline(vec![], &[0, 10240, 999]);
        let c = compare(&b, &Stats::default(), &now, Threshold::default());
        assert_eq!(
            c.newly_failing_sizes,
            vec![10240],
            "999 was not tried: not compared"
        );
        let d = diagnoses(&c);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].severity, Severity::Failing);
        assert!(d[0].summary.contains("10"), "{}", d[0].summary);
    }

    #[test]
    fn loads_a_report_without_stats() {
        let messages = vec![message(0, true), message(10240, false)];
        let json = serde_json::json!({
            "started_at": "2026-11-25T01:02:03Z",
            "verdict": "failing",
            "messages": messages,
        })
        .to_string();
        let b = Baseline::from_json(&json).unwrap();
        assert_eq!(b.started_at, "2026-11-25T01:02:03Z");
        assert_eq!(b.working_sizes, [0u64].into_iter().collect());
        assert_eq!(b.stats.messages, 2);
        assert!(Baseline::from_json("{}").is_err());
        assert!(Baseline::from_json("nope").is_err());
    }
}
