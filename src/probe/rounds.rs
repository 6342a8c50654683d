//! Rounds: repeat the ladder (`check --rounds N --interval D --concurrency C`),
//! aggregate the rounds into one report with latency statistics, compare with a
//! baseline; and `verify`: repeat until the server has been healthy for
//! `--stable N` rounds in a row or a deadline passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::analysis::baseline::{self, Baseline};
use crate::analysis::diagnosis;
use crate::analysis::stability::{self, RoundOutcome};
use crate::analysis::stats;
use crate::core::error::ProbeError;
use crate::core::phase::millis;
use crate::io::transcript::Transcript;
use crate::model::report::Report;
use crate::model::stats::{RoundSummary, Stability, Stats};
use crate::probe::check;
use crate::probe::settings::Settings;

/// Most rounds `check --rounds` runs.
pub(crate) const MAX_ROUNDS: u32 = 100_000;
/// Longest constant-rate run.
pub(crate) const MAX_RATE_DURATION: Duration = Duration::from_secs(3600);

/// What `check` repeats: rounds, a constant rate, a baseline to compare with.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundPlan {
    /// `--rounds N`.
    pub(crate) rounds: Option<u32>,
    /// Time from the start of one round to the start of the next.
    pub(crate) interval: Duration,
    /// `--rate`: messages per second, for how long, at most how many in flight.
    pub(crate) rate: Option<RatePlan>,
    pub(crate) baseline: Option<(Baseline, baseline::Threshold)>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RatePlan {
    pub(crate) per_sec: f64,
    pub(crate) duration: Duration,
    pub(crate) in_flight: usize,
}

impl RoundPlan {
    /// Anything beyond one plain check?
    pub(crate) fn multi(&self) -> bool {
        self.rounds.is_some_and(|n| n > 1) || self.rate.is_some() || self.baseline.is_some()
    }
}

/// `check`, with rounds, constant rate and baseline when asked.
pub(crate) async fn check(
    settings: Settings,
    plan: &RoundPlan,
    transcript: Option<Arc<Transcript>>,
) -> Result<Report, ProbeError> {
    if !plan.multi() {
        return check::run_recorded(settings, transcript).await;
    }
    let mut report = if let Some(rate) = plan.rate {
        crate::probe::rate::run(settings, rate, transcript).await?
    } else {
        let n = plan.rounds.unwrap_or(1);
        if n == 0 || n > MAX_ROUNDS {
            return Err(ProbeError::config(format!(
                "--rounds must be between 1 and {MAX_ROUNDS}"
            )));
        }
        run_rounds(&settings, n, plan.interval, transcript.as_ref()).await?
    };
    if let Some((baseline, threshold)) = &plan.baseline {
        apply_baseline(&mut report, baseline, *threshold);
    }
    Ok(report)
}

/// One finished round.
struct Round {
    report: Report,
    summary: RoundSummary,
}

async fn one_round(
    settings: &Settings,
    number: u32,
    transcript: Option<&Arc<Transcript>>,
) -> Result<Round, ProbeError> {
    let started = Instant::now();
    let mut report = check::run_recorded(settings.clone(), transcript.cloned()).await?;
    for m in &mut report.messages {
        m.round = Some(number);
    }
    let (state, down) = stability::classify(&report);
    let summary = RoundSummary {
        round: number,
        state,
        verdict: report.verdict,
        duration_ms: millis(started.elapsed()),
        down,
        summary: report.summary.clone(),
    };
    Ok(Round { report, summary })
}

/// Sleep until `next` (bounded by `limit` when given).
async fn pause_until(next: Instant, limit: Option<Instant>) {
    let until = match limit {
        Some(l) => next.min(l),
        None => next,
    };
    tokio::time::sleep_until(until.into()).await;
}

async fn run_rounds(
    settings: &Settings,
    n: u32,
    interval: Duration,
    transcript: Option<&Arc<Transcript>>,
) -> Result<Report, ProbeError> {
    let started = Instant::now();
    let mut rounds = Vec::with_capacity(n as usize);
    for number in 1..=n {
        let started = Instant::now();
        rounds.push(one_round(settings, number, transcript).await?);
        if number < n {
            pause_until(started + interval, None).await;
        }
    }
    Ok(merge(rounds, settings, millis(started.elapsed())))
}

/// Every round in one report: all messages (with their round), cleanup summed,
/// diagnosed together, with statistics and the round log.
fn merge(rounds: Vec<Round>, settings: &Settings, elapsed_ms: f64) -> Report {
    let n = rounds.len() as u32;
    let log: Vec<RoundSummary> = rounds.iter().map(|r| r.summary.clone()).collect();
    let outcomes = outcomes(&log);
    let mut iter = rounds.into_iter().map(|r| r.report);
    let mut report = iter.next().expect("at least one round");
    for r in iter {
        report.messages.extend(r.messages);
        report.cleanup.deleted += r.cleanup.deleted;
        report.cleanup.leftovers.extend(r.cleanup.leftovers);
        report.cleanup.errors.extend(r.cleanup.errors);
        if r.smtp_server.is_some() {
            report.smtp_server = r.smtp_server;
        }
        if report.size_limit.is_none() {
            report.size_limit = r.size_limit;
        }
    }
    diagnosis::apply(&mut report, &settings.thresholds);
    report.duration_ms = elapsed_ms;
    let mut stats = stats::build(&report.messages, n);
    stats.round_log = log;
    stats.stability = Some(stability::analyze(&outcomes, 1));
    report.stats = Some(stats);
    report
}

fn outcomes(log: &[RoundSummary]) -> Vec<RoundOutcome> {
    log.iter()
        .map(|r| RoundOutcome {
            state: r.state,
            down: r.down.clone(),
        })
        .collect()
}

/// Compare the report with `baseline` and add what regressed.
pub(crate) fn apply_baseline(
    report: &mut Report,
    baseline: &Baseline,
    threshold: baseline::Threshold,
) {
    let stats = report
        .stats
        .get_or_insert_with(|| stats::build(&report.messages, 1));
    let comparison = baseline::compare(baseline, stats, &report.messages, threshold);
    let found = baseline::diagnoses(&comparison);
    stats.baseline = Some(comparison);
    diagnosis::add(report, found);
}

#[derive(Debug, Clone, Copy)]
pub struct VerifyPlan {
    pub stable: u32,
    pub deadline: Duration,
    pub interval: Duration,
    pub max_rounds: u32,
}

/// Repeat rounds until stable, the deadline or `max_rounds`. `on_round` sees every
/// round as it ends. The report is the last round's, with statistics over all
/// rounds, the round log and the stability analysis; without stability it is failing
/// and says why (flapping, down, degraded).
pub async fn verify(
    settings: &Settings,
    plan: VerifyPlan,
    on_round: impl FnMut(&RoundSummary, &Stability),
) -> Result<Report, ProbeError> {
    verify_recorded(settings, plan, None, on_round).await
}

/// [`verify`], recording every session into `transcript` when given.
pub(crate) async fn verify_recorded(
    settings: &Settings,
    plan: VerifyPlan,
    transcript: Option<Arc<Transcript>>,
    mut on_round: impl FnMut(&RoundSummary, &Stability),
) -> Result<Report, ProbeError> {
    let started = Instant::now();
    let deadline_at = started + plan.deadline;
    let mut log: Vec<RoundSummary> = Vec::new();
    let mut messages = Vec::new();
    let mut last: Option<Report> = None;
    let mut analysis = stability::analyze(&[], plan.stable);
    let mut deadline_passed = false;
    for number in 1..=plan.max_rounds {
        let round_started = Instant::now();
        let round = one_round(settings, number, transcript.as_ref()).await?;
        log.push(round.summary.clone());
        analysis = stability::analyze(&outcomes(&log), plan.stable);
        on_round(&round.summary, &analysis);
        messages.extend(round.report.messages.iter().cloned());
        last = Some(round.report);
        if analysis.stable {
            break;
        }
        if Instant::now() >= deadline_at {
            deadline_passed = true;
            break;
        }
        if number < plan.max_rounds {
            pause_until(round_started + plan.interval, Some(deadline_at)).await;
        }
    }
    let mut report = last.expect("at least one round");
    let mut stats: Stats = stats::build(&messages, log.len() as u32);
    stats.round_log = log;
    stats.stability = Some(analysis.clone());
    report.stats = Some(stats);
    report.duration_ms = millis(started.elapsed());
    if let Some(d) = stability::diagnosis(&analysis, deadline_passed) {
        diagnosis::add(&mut report, vec![d]);
    }
    Ok(report)
}
