//! Constant-rate mode (`check --rate R --duration D`): messages are scheduled at
//! fixed times, the ladder's sizes in turn, with a bound on messages in flight.
//! When the server falls behind, sends start late; their latency still counts from
//! the intended send time (coordinated omission corrected), and the report shows
//! the intended and the achieved rate.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::analysis::diagnosis;
use crate::analysis::stats::Collector;
use crate::core::error::ProbeError;
use crate::core::phase::{Protocol, millis};
use crate::io::transcript::Transcript;
use crate::model::report::Report;
use crate::model::stats::{RateStats, StatPhase};
use crate::probe::check;
use crate::probe::context::Context;
use crate::probe::rounds::{MAX_RATE_DURATION, RatePlan};
use crate::probe::settings::Settings;
use crate::probe::smtp;

/// Highest rate accepted.
pub(crate) const MAX_RATE: f64 = 1000.0;
/// Most messages one run schedules.
pub(crate) const MAX_MESSAGES: usize = 100_000;
/// Default bound on messages in flight.
pub(crate) const DEFAULT_IN_FLIGHT: usize = 64;

/// How many messages a run of `rate` per second for `duration` schedules.
pub(crate) fn scheduled(rate: f64, duration: Duration) -> usize {
    ((rate * duration.as_secs_f64()).round() as usize).clamp(1, MAX_MESSAGES)
}

/// The intended send time of message `i`, relative to the start.
pub(crate) fn intended_offset(i: usize, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Achieved rate: messages over the span from the first intended start to the last
/// actual start, plus one interval (so that a perfect schedule gives the intended rate).
pub(crate) fn achieved_rate(rate: f64, last_start_offset: Duration, sent: usize) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    sent as f64 / (last_start_offset.as_secs_f64() + 1.0 / rate)
}

/// Run the constant-rate mode of `plan`.
pub(crate) async fn run(
    settings: Settings,
    plan: RatePlan,
    transcript: Option<Arc<Transcript>>,
) -> Result<Report, ProbeError> {
    let RatePlan {
        per_sec: rate,
        duration,
        in_flight,
    } = plan;
    if !(rate > 0.0 && rate <= MAX_RATE) {
        return Err(ProbeError::config(format!(
            "--rate must be more than 0 and at most {MAX_RATE} messages per second"
        )));
    }
    if duration.is_zero() || duration > MAX_RATE_DURATION {
        return Err(ProbeError::config(
            "--duration must be more than 0 and at most 1h",
        ));
    }
    let started_at = SystemTime::now();
    let started = Instant::now();
    // --timeout bounds what comes after the sending window.
    let mut settings = settings;
    settings.timeouts.check += duration;
    let ctx = Context::new(settings, transcript)?;
    let s = &ctx.settings;
    let n = scheduled(rate, duration);
    let sizes = (0..n)
        .map(|i| s.plan.sizes[i % s.plan.sizes.len()])
        .collect();
    let messages = check::build_messages(s, sizes).await?;

    let t0 = Instant::now() + Duration::from_millis(20);
    let intended = |index: usize| t0 + intended_offset(index, rate);
    let mut dispatched =
        check::send_and_watch(&ctx, &messages, in_flight, &|index| Some(intended(index))).await;
    let mut reports = check::message_reports(&messages, &dispatched);
    let starts: Vec<Duration> = dispatched
        .sent
        .iter()
        .map(|d| d.started.saturating_duration_since(t0))
        .collect();
    let last_start = starts.iter().copied().max().unwrap_or_default();
    let max_lag = dispatched
        .sent
        .iter()
        .zip(&starts)
        .map(|(d, start)| start.saturating_sub(intended_offset(d.index, rate)))
        .max()
        .unwrap_or_default();
    let mut collector = Collector::default();
    for m in &reports {
        collector.message(m);
    }
    // Latency from the intended send time: a stalling server cannot hide its stall.
    for (m, d) in reports.iter().zip(&dispatched.sent) {
        if let Some(accepted_at) = d.sent.accepted_at {
            let from_intended = accepted_at.saturating_duration_since(intended(d.index));
            collector.record(
                Protocol::Smtp,
                StatPhase::IntendedToAccepted,
                m.size_bytes,
                millis(from_intended),
            );
        }
    }
    let sent_count = dispatched.sent.len();
    let watched = dispatched.watched();
    let sent: Vec<smtp::Sent> = dispatched.sent.into_iter().map(|d| d.sent).collect();
    let smtp_server = sent.iter().rev().find_map(|s| s.server.clone());
    let cleanup = check::clean_up(&ctx, &mut reports, &sent, &[], watched).await;
    let mut stats = collector.finish(1);
    stats.rate = Some(RateStats {
        intended_per_sec: rate,
        achieved_per_sec: achieved_rate(rate, last_start, sent_count),
        scheduled: n as u64,
        sent: sent_count as u64,
        duration_ms: millis(started.elapsed()),
        max_start_lag_ms: millis(max_lag),
    });

    let mut report = Report::new(s.report_target(), started_at, started, reports, cleanup);
    report.smtp_server = smtp_server;
    check::record_pacing(&ctx, &mut report);
    diagnosis::apply(&mut report, &s.thresholds);
    report.stats = Some(stats);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_achieved_rate() {
        assert_eq!(scheduled(10.0, Duration::from_secs(3)), 30);
        assert_eq!(scheduled(0.1, Duration::from_secs(1)), 1);
        assert_eq!(intended_offset(5, 10.0), Duration::from_millis(500));
        // A perfect schedule: 30 starts, the last at 2.9 s.
        let r = achieved_rate(10.0, Duration::from_millis(2900), 30);
        assert!((r - 10.0).abs() < 1e-9, "{r}");
        // Fell behind: the last start at 5.9 s.
        let r = achieved_rate(10.0, Duration::from_millis(5900), 30);
        assert!((r - 5.0).abs() < 1e-9, "{r}");
        assert_eq!(achieved_rate(10.0, Duration::ZERO, 0), 0.0);
    }
}
