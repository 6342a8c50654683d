//! Overlapping rounds: `check --rounds N --concurrency C` with C larger than the
//! ladder sends the rounds' messages through one send-and-watch pipeline that keeps
//! C in flight (in windows of at most [`WINDOW`] messages, one IMAP and one POP3
//! session each), instead of letting each round drain before the next starts. Each
//! message keeps its round number and each round is judged from its own messages.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::analysis::diagnosis;
use crate::core::error::ProbeError;
use crate::core::phase::{Phase, millis};
use crate::io::transcript::Transcript;
use crate::model::report::{Cleanup, MessageReport, Report};
use crate::probe::check::{self, Dispatch};
use crate::probe::context::Context;
use crate::probe::rounds::{Round, sampled_down};
use crate::probe::sampler::Sampler;
use crate::probe::settings::Settings;
use crate::probe::smtp;

/// Most messages built and watched at once (bounds memory for many rounds).
pub(crate) const WINDOW: usize = 1024;

/// Rounds overlap when more may be in flight than one ladder holds, nothing paces
/// the rounds, and no round bisects (bisection probes the server on its own).
pub(crate) fn applies(settings: &Settings, interval: Duration) -> bool {
    interval.is_zero()
        && !settings.plan.bisect
        && settings.plan.concurrency > settings.plan.sizes.len()
}

/// Rounds `1..=n`, pipelined.
pub(crate) async fn run(
    settings: &Settings,
    n: u32,
    transcript: Option<&std::sync::Arc<Transcript>>,
    sampler: Option<&Sampler>,
) -> Result<Vec<Round>, ProbeError> {
    let ladder = settings.plan.sizes.len().max(1);
    let per_window = (WINDOW / ladder).max(1) as u32;
    let mut rounds = Vec::with_capacity(n as usize);
    let mut first = 1;
    while first <= n {
        let last = (first + per_window - 1).min(n);
        // A context per window: its session counts and time limit go with the window.
        let ctx = Context::new(settings.clone(), transcript.cloned())?;
        rounds.extend(window(&ctx, first, last, sampler).await?);
        first = last + 1;
    }
    Ok(rounds)
}

/// Rounds `first..=last` as one pipeline, then split into rounds.
async fn window(
    ctx: &Context,
    first: u32,
    last: u32,
    sampler: Option<&Sampler>,
) -> Result<Vec<Round>, ProbeError> {
    let s = &ctx.settings;
    let ladder = s.plan.sizes.len();
    let count = (last - first + 1) as usize;
    let started_at = SystemTime::now();
    let started = Instant::now();
    let messages = check::build_messages(s, s.plan.sizes.repeat(count)).await?;
    let mut dispatched = check::send_and_watch(ctx, &messages, s.plan.concurrency, &|_| None).await;
    let mut reports = check::message_reports(&messages, &dispatched);
    let starts: Vec<Instant> = dispatched.sent.iter().map(|d| d.started).collect();
    let ends: Vec<Instant> = dispatched
        .sent
        .iter()
        .zip(&reports)
        .map(|(d, r)| finished(d, r))
        .collect();
    let watched = dispatched.watched();
    let sent: Vec<smtp::Sent> = dispatched.sent.into_iter().map(|d| d.sent).collect();
    let mut cleanup = check::clean_up(ctx, &mut reports, &sent, &[], watched).await;

    let mut rounds = Vec::with_capacity(count);
    let mut reports = reports.into_iter();
    for (k, number) in (first..=last).enumerate() {
        let own: Vec<MessageReport> = reports.by_ref().take(ladder).collect();
        // From the round's first send to its last verification.
        let own_range = k * ladder..(k + 1) * ladder;
        let round_started = starts[own_range.clone()].iter().min().copied();
        let round_ended = ends[own_range].iter().max().copied();
        let (duration_ms, down) = match (round_started, round_ended) {
            (Some(a), Some(b)) => (
                millis(b.saturating_duration_since(a)),
                sampled_down(sampler, a, b),
            ),
            _ => (0.0, Vec::new()),
        };
        // What the window's cleanup did once (errors, notifications) is reported
        // with its first round.
        let own_cleanup = round_cleanup(&own, &mut cleanup, k == 0);
        let mut report = Report::new(s.report_target(), started_at, started, own, own_cleanup);
        report.smtp_server = sent
            .iter()
            .skip(k * ladder)
            .take(ladder)
            .rev()
            .find_map(|x| x.server.clone());
        if k == 0 {
            // The window's sessions and time limit, counted once (rounds sum them).
            check::record_pacing(ctx, &mut report);
        }
        diagnosis::apply(&mut report, &s.thresholds);
        rounds.push(Round::judged(report, number, duration_ms, down));
    }
    Ok(rounds)
}

/// When a message's trip ended: SMTP done, and each retrieval's fetch done.
fn finished(d: &Dispatch, r: &MessageReport) -> Instant {
    let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1000.0);
    let mut end = d.started + ms(d.sent.result.total_ms);
    if let Some(accepted) = d.sent.accepted_at {
        for res in [r.imap.as_ref(), r.pop3.as_ref()].into_iter().flatten() {
            if let Some(delivery) = res.delivery_ms {
                let fetch = res.phases_ms.get(&Phase::Fetch).copied().unwrap_or(0.0);
                end = end.max(accepted + ms(delivery + fetch));
            }
        }
    }
    end
}

/// A round's share of the window's cleanup: its deleted messages, leftovers and
/// places; the first round also takes the errors and deleted notifications.
fn round_cleanup(own: &[MessageReport], window: &mut Cleanup, first: bool) -> Cleanup {
    let ids: HashSet<&str> = own.iter().map(|m| m.probe_id.as_str()).collect();
    let deleted = own
        .iter()
        .filter(|m| {
            [m.imap.as_ref(), m.pop3.as_ref()]
                .into_iter()
                .flatten()
                .any(|r| r.deleted == Some(true))
        })
        .count();
    Cleanup {
        deleted,
        leftovers: window
            .leftovers
            .iter()
            .filter(|l| ids.contains(l.as_str()))
            .cloned()
            .collect(),
        places: window
            .places
            .iter()
            .filter(|p| ids.contains(p.probe_id.as_str()))
            .cloned()
            .collect(),
        errors: if first {
            std::mem::take(&mut window.errors)
        } else {
            Vec::new()
        },
        notifications_deleted: if first {
            std::mem::take(&mut window.notifications_deleted)
        } else {
            0
        },
    }
}
