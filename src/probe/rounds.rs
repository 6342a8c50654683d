//! Rounds: repeat the ladder (`check --rounds N --interval D --concurrency C`),
//! aggregate the rounds into one report with latency statistics, compare with a
//! baseline; and `verify`: repeat until the server has been healthy for
//! `--stable N` rounds in a row or a deadline passes. Both (and a single check
//! when asked) run the liveness sampler alongside and report its timeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::analysis::baseline::{self, Baseline};
use crate::analysis::diagnosis;
use crate::analysis::stability::{self, RoundOutcome};
use crate::analysis::stats;
use crate::analysis::timeline::{self, Run};
use crate::core::error::ProbeError;
use crate::core::phase::{Protocol, millis};
use crate::io::transcript::Transcript;
use crate::model::diagnosis::Diagnosis;
use crate::model::report::Report;
use crate::model::stats::{RoundSummary, Stability, Stats};
use crate::model::timeline::Timeline;
use crate::probe::check;
use crate::probe::overlap;
use crate::probe::sampler::Sampler;
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
    /// `--sample-interval`: the liveness sampler's period (None: off).
    pub(crate) sample_interval: Option<Duration>,
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

/// `check`, with rounds, constant rate and baseline when asked, and the liveness
/// sampler when `plan.sample_interval` is set.
pub(crate) async fn check(
    settings: Settings,
    plan: &RoundPlan,
    transcript: Option<Arc<Transcript>>,
) -> Result<Report, ProbeError> {
    let sampler = plan
        .sample_interval
        .map(|interval| Sampler::start(&settings, interval))
        .transpose()?;
    let outcome = run_plan(settings, plan, transcript, sampler.as_ref()).await;
    let timeline = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    let mut report = outcome?;
    if let Some(t) = timeline {
        attach_timeline(&mut report, t, Run::Check);
    }
    Ok(report)
}

async fn run_plan(
    settings: Settings,
    plan: &RoundPlan,
    transcript: Option<Arc<Transcript>>,
    sampler: Option<&Sampler>,
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
        run_rounds(&settings, n, plan.interval, transcript.as_ref(), sampler).await?
    };
    if let Some((baseline, threshold)) = &plan.baseline {
        apply_baseline(&mut report, baseline, *threshold);
    }
    Ok(report)
}

/// Find the timeline's crash loops, add its diagnoses and keep it in the report.
pub fn attach_timeline(report: &mut Report, mut t: Timeline, run: Run) {
    timeline::analyze(&mut t);
    let found = timeline::diagnoses(&t, run);
    report.timeline = Some(t);
    diagnosis::add(report, found);
}

/// One finished round.
pub(crate) struct Round {
    pub(crate) report: Report,
    pub(crate) summary: RoundSummary,
}

impl Round {
    /// Round `number` from its own report: every message marked with the round,
    /// the round's state and verdict from its messages alone; `sampled_down`: the
    /// services the liveness sampler saw disturbed while it ran.
    pub(crate) fn judged(
        mut report: Report,
        number: u32,
        duration_ms: f64,
        sampled_down: Vec<Protocol>,
    ) -> Round {
        for m in &mut report.messages {
            m.round = Some(number);
        }
        let (state, down) = stability::classify(&report);
        let summary = RoundSummary {
            round: number,
            state,
            verdict: report.verdict,
            duration_ms,
            down,
            sampled_down,
            summary: report.summary.clone(),
        };
        Round { report, summary }
    }
}

/// Services the sampler (if any) saw disturbed between `from` and `to`.
pub(crate) fn sampled_down(sampler: Option<&Sampler>, from: Instant, to: Instant) -> Vec<Protocol> {
    sampler.map_or_else(Vec::new, |s| {
        s.snapshot()
            .disturbed_within(s.offset_ms(from), s.offset_ms(to))
    })
}

/// One round; `since` is where its window of the timeline opens (the end of the
/// round before: a restart in the pause counts against this round).
async fn one_round(
    settings: &Settings,
    number: u32,
    transcript: Option<&Arc<Transcript>>,
    sampler: Option<&Sampler>,
    since: Instant,
) -> Result<Round, ProbeError> {
    let started = Instant::now();
    let report = check::run_recorded(settings.clone(), transcript.cloned()).await?;
    let down = sampled_down(sampler, since, Instant::now());
    Ok(Round::judged(
        report,
        number,
        millis(started.elapsed()),
        down,
    ))
}

/// Sleep until `next` (bounded by `limit` when given).
async fn pause_until(next: Instant, limit: Option<Instant>) {
    let until = match limit {
        Some(l) => next.min(l),
        None => next,
    };
    // The timer rounds up to its next millisecond tick: a time already passed (as
    // with --interval 0) would still cost up to a millisecond per round.
    if until > Instant::now() {
        tokio::time::sleep_until(until.into()).await;
    }
}

async fn run_rounds(
    settings: &Settings,
    n: u32,
    interval: Duration,
    transcript: Option<&Arc<Transcript>>,
    sampler: Option<&Sampler>,
) -> Result<Report, ProbeError> {
    let started = Instant::now();
    if overlap::applies(settings, interval) {
        let rounds = overlap::run(settings, n, transcript, sampler).await?;
        return Ok(merge(rounds, settings, millis(started.elapsed())));
    }
    let mut rounds = Vec::with_capacity(n as usize);
    let mut since = started;
    for number in 1..=n {
        let started = Instant::now();
        rounds.push(one_round(settings, number, transcript, sampler, since).await?);
        since = Instant::now();
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
        add_pacing(&mut report, &r);
        report.messages.extend(r.messages);
        report.cleanup.deleted += r.cleanup.deleted;
        report.cleanup.leftovers.extend(r.cleanup.leftovers);
        report.cleanup.places.extend(r.cleanup.places);
        report.cleanup.notifications_deleted += r.cleanup.notifications_deleted;
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

/// Sum another round's sessions into `into`; a time limit reached in any round
/// is the one the report shows.
fn add_pacing(into: &mut Report, round: &Report) {
    for (protocol, counts) in &round.sessions {
        into.sessions.entry(*protocol).or_default().add(counts);
    }
    if round.time_limit.as_ref().is_some_and(|t| t.reached)
        && !into.time_limit.as_ref().is_some_and(|t| t.reached)
    {
        into.time_limit = round.time_limit.clone();
    }
}

fn outcomes(log: &[RoundSummary]) -> Vec<RoundOutcome> {
    log.iter()
        .map(|r| RoundOutcome {
            state: r.state,
            down: r.down.clone(),
            sampled_down: r.sampled_down.clone(),
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
    /// `--sample-interval`: the liveness sampler's period (None: off).
    pub sample_interval: Option<Duration>,
}

/// Repeat rounds until stable, the deadline or `max_rounds`. `on_round` sees every
/// round as it ends. The report is the last round's, with statistics over all
/// rounds, the round log, the stability analysis and the timeline; without
/// stability it is failing, says why (flapping, restarting, down, degraded) and
/// also carries what earlier rounds found that the last one did not (a crash loop
/// that alternates "all down" with "attachments fail" shows both).
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
    let sampler = plan
        .sample_interval
        .map(|interval| Sampler::start(settings, interval))
        .transpose()?;
    let mut log: Vec<RoundSummary> = Vec::new();
    let mut messages = Vec::new();
    let mut last: Option<Report> = None;
    let mut earlier = EarlierFindings::default();
    let mut analysis = stability::analyze(&[], plan.stable);
    let mut deadline_passed = false;
    let mut since = started;
    for number in 1..=plan.max_rounds {
        let round_started = Instant::now();
        let round = one_round(
            settings,
            number,
            transcript.as_ref(),
            sampler.as_ref(),
            since,
        )
        .await;
        let round = match round {
            Ok(r) => r,
            Err(e) => {
                if let Some(s) = sampler {
                    s.finish().await;
                }
                return Err(e);
            }
        };
        since = Instant::now();
        log.push(round.summary.clone());
        analysis = stability::analyze(&outcomes(&log), plan.stable);
        on_round(&round.summary, &analysis);
        messages.extend(round.report.messages.iter().cloned());
        earlier.note(number, &round.report.diagnoses);
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
    let rounds = log.len() as u32;
    let mut stats: Stats = stats::build(&messages, rounds);
    stats.round_log = log;
    stats.stability = Some(analysis.clone());
    report.stats = Some(stats);
    if !analysis.stable {
        let missing = earlier.missing_from(&report.diagnoses, rounds);
        diagnosis::add(&mut report, missing);
    }
    if let Some(d) = stability::diagnosis(&analysis, deadline_passed) {
        diagnosis::add(&mut report, vec![d]);
    }
    if let Some(s) = sampler {
        let run = if analysis.stable {
            Run::VerifyStable
        } else {
            Run::VerifyUnstable
        };
        attach_timeline(&mut report, s.finish().await, run);
    }
    report.duration_ms = millis(started.elapsed());
    Ok(report)
}

/// What each round of `verify` diagnosed, the first time, with the rounds it was
/// seen in.
#[derive(Default)]
struct EarlierFindings {
    seen: Vec<(Diagnosis, Vec<u32>)>,
}

fn same_finding(a: &Diagnosis, b: &Diagnosis) -> bool {
    (a.code, a.cause, a.protocol) == (b.code, b.cause, b.protocol)
}

impl EarlierFindings {
    fn note(&mut self, round: u32, diagnoses: &[Diagnosis]) {
        for d in diagnoses {
            match self.seen.iter_mut().find(|(s, _)| same_finding(s, d)) {
                Some((_, rounds)) => rounds.push(round),
                None => self.seen.push((d.clone(), vec![round])),
            }
        }
    }
    /// Earlier findings the last round's diagnoses do not have, each saying when it
    /// was seen.
    fn missing_from(&self, last: &[Diagnosis], total: u32) -> Vec<Diagnosis> {
        self.seen
            .iter()
            .filter(|(d, _)| !last.iter().any(|l| same_finding(l, d)))
            .map(|(d, rounds)| {
                let mut d = d.clone();
                let list: Vec<String> = rounds.iter().map(u32::to_string).collect();
                d.evidence.insert(
                    0,
                    format!(
                        "seen in round(s) {} of {total}, not in the last one",
                        list.join(", ")
                    ),
                );
                d
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::diagnosis::{Cause, Code, Severity};

    fn finding(code: Code, cause: Option<Cause>) -> Diagnosis {
        Diagnosis {
            code,
            severity: Severity::Failing,
            summary: code.as_str().into(),
            cause,
            reason: None,
            protocol: None,
            evidence: vec!["e".into()],
            hints: vec![],
        }
    }

    #[test]
    fn earlier_findings_missing_from_the_last_round_are_kept() {
        let mut e = EarlierFindings::default();
        let dropped = finding(Code::AttachmentsFail, Some(Cause::SessionDropped));
        let outage = finding(Code::SharedOutage, None);
        e.note(1, std::slice::from_ref(&outage));
        e.note(2, std::slice::from_ref(&dropped));
        e.note(3, std::slice::from_ref(&outage));
        e.note(4, std::slice::from_ref(&dropped));
        e.note(5, std::slice::from_ref(&outage));
        let missing = e.missing_from(std::slice::from_ref(&outage), 5);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].cause, Some(Cause::SessionDropped));
        assert_eq!(
            missing[0].evidence[0],
            "seen in round(s) 2, 4 of 5, not in the last one"
        );
        assert!(e.missing_from(&[outage, dropped], 5).is_empty());
    }
}
