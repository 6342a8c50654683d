//! Constant-rate mode (`check --rate R --duration D`): messages are scheduled at
//! fixed times, the ladder's sizes in turn, with a bound on messages in flight.
//! When the server falls behind, sends start late; their latency still counts from
//! the intended send time (coordinated omission corrected), and the report shows
//! the intended and the achieved rate.

use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::check;
use crate::config::Settings;
use crate::diagnosis;
use crate::error::ProbeError;
use crate::message::{ProbeMessage, new_probe_id};
use crate::phase::{Protocol, millis};
use crate::prober::imap::ImapMailbox;
use crate::prober::pop3::Pop3Mailbox;
use crate::prober::{self, Accepted, Context, smtp};
use crate::report::{MessageReport, Report, Target};
use crate::stats::{Collector, INTENDED, RateStats};

/// Highest rate accepted.
pub const MAX_RATE: f64 = 1000.0;
/// Most messages one run schedules.
pub const MAX_MESSAGES: usize = 100_000;
/// Default bound on messages in flight.
pub const DEFAULT_IN_FLIGHT: usize = 64;

/// How many messages a run of `rate` per second for `duration` schedules.
pub fn scheduled(rate: f64, duration: Duration) -> usize {
    ((rate * duration.as_secs_f64()).round() as usize).clamp(1, MAX_MESSAGES)
}

/// The intended send time of message `i`, relative to the start.
pub fn intended_offset(i: usize, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Achieved rate: messages over the span from the first intended start to the last
/// actual start, plus one interval (so that a perfect schedule gives the intended rate).
pub fn achieved_rate(rate: f64, last_start_offset: Duration, sent: usize) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    sent as f64 / (last_start_offset.as_secs_f64() + 1.0 / rate)
}

pub async fn run(
    settings: Settings,
    rate: f64,
    duration: Duration,
    in_flight: usize,
) -> Result<Report, ProbeError> {
    if !(rate > 0.0 && rate <= MAX_RATE) {
        return Err(ProbeError::config(format!(
            "--rate must be more than 0 and at most {MAX_RATE} messages per second"
        )));
    }
    if duration.is_zero() || duration > crate::rounds::MAX_RATE_DURATION {
        return Err(ProbeError::config(
            "--duration must be more than 0 and at most 1h",
        ));
    }
    let started_at = SystemTime::now();
    let started = Instant::now();
    let ctx = Context::new(settings)?;
    let s = &ctx.settings;
    let n = scheduled(rate, duration);
    let messages: Vec<ProbeMessage> = {
        let (from, to, sizes) = (s.from.clone(), s.to.clone(), s.sizes.clone());
        tokio::task::spawn_blocking(move || {
            (0..n)
                .map(|i| ProbeMessage::build(&new_probe_id(), &from, &to, sizes[i % sizes.len()]))
                .collect()
        })
        .await
        .map_err(|e| ProbeError::config(format!("building messages failed: {e}")))?
    };

    let (imap_tx, imap_rx) = mpsc::unbounded_channel::<Accepted>();
    let (pop3_tx, pop3_rx) = mpsc::unbounded_channel::<Accepted>();
    let senders: Vec<mpsc::UnboundedSender<Accepted>> = [
        s.imap.as_ref().map(|_| imap_tx),
        s.pop3.as_ref().map(|_| pop3_tx),
    ]
    .into_iter()
    .flatten()
    .collect();

    let t0 = Instant::now() + Duration::from_millis(20);
    let (ctx_ref, messages_ref) = (&ctx, &messages);
    let send_all = async move {
        let senders = &senders;
        let mut done: Vec<(usize, smtp::Sent, Duration, Option<Duration>)> =
            futures::stream::iter(messages_ref.iter().enumerate())
                .map(|(index, message)| async move {
                    let intended = t0 + intended_offset(index, rate);
                    tokio::time::sleep_until(intended.into()).await;
                    let start = Instant::now();
                    let outcome = smtp::send(ctx_ref, message).await;
                    let from_intended = outcome
                        .accepted_at
                        .map(|a| a.saturating_duration_since(intended));
                    if let Some(accepted_at) = outcome.accepted_at {
                        let accepted = Accepted {
                            index,
                            expected: message.expected.clone(),
                            accepted_at,
                            encoded_len: message.encoded_len(),
                        };
                        for tx in senders {
                            let _ = tx.send(accepted.clone());
                        }
                    }
                    (
                        index,
                        outcome,
                        start.saturating_duration_since(t0),
                        from_intended,
                    )
                })
                .buffer_unordered(in_flight.max(1))
                .collect()
                .await;
        done.sort_by_key(|d| d.0);
        done
    };
    let watch_imap = async {
        match s.imap {
            Some(_) => Some(prober::watch::<ImapMailbox>(&ctx, imap_rx).await),
            None => None,
        }
    };
    let watch_pop3 = async {
        match s.pop3 {
            Some(_) => Some(prober::watch::<Pop3Mailbox>(&ctx, pop3_rx).await),
            None => None,
        }
    };
    let (done, imap, pop3) = tokio::join!(send_all, watch_imap, watch_pop3);

    let mut reports: Vec<MessageReport> = messages
        .iter()
        .zip(done.iter())
        .enumerate()
        .map(|(index, (message, (_, sent, _, _)))| MessageReport {
            probe_id: message.probe_id().to_string(),
            size_bytes: message.attachment_size(),
            attachment: message.attachment_size() > 0,
            encoded_bytes: message.encoded_len(),
            smtp: sent.result.clone(),
            imap: imap.as_ref().map(|w| check::take_result(w, index)),
            pop3: pop3.as_ref().map(|w| check::take_result(w, index)),
            round: None,
        })
        .collect();
    let last_start = done.iter().map(|d| d.2).max().unwrap_or_default();
    let max_lag = done
        .iter()
        .map(|d| d.2.saturating_sub(intended_offset(d.0, rate)))
        .max()
        .unwrap_or_default();
    let mut collector = Collector::default();
    for m in &reports {
        collector.message(m);
    }
    for (m, d) in reports.iter().zip(&done) {
        if let Some(ms) = d.3 {
            collector.record(Protocol::Smtp, INTENDED, m.size_bytes, millis(ms));
        }
    }
    let sent_count = done.len();
    let sent: Vec<smtp::Sent> = done.into_iter().map(|d| d.1).collect();
    let smtp_server = sent.iter().rev().find_map(|s| s.server.clone());
    let cleanup = check::clean_up(&ctx, &mut reports, &sent, &[]).await;
    let mut stats = collector.finish(1);
    stats.rate = Some(RateStats {
        intended_per_sec: rate,
        achieved_per_sec: achieved_rate(rate, last_start, sent_count),
        scheduled: n as u64,
        sent: sent_count as u64,
        duration_ms: millis(started.elapsed()),
        max_start_lag_ms: millis(max_lag),
    });

    let mut report = Report {
        mailprobe_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: crate::report::rfc3339(started_at),
        duration_ms: millis(started.elapsed()),
        verdict: crate::report::Verdict::Healthy,
        summary: String::new(),
        target: Target::from_settings(s),
        smtp_server,
        messages: reports,
        cleanup,
        size_limit: None,
        diagnoses: Vec::new(),
        mx: None,
        stats: None,
    };
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
