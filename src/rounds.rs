//! Rounds: repeat the ladder (`check --rounds N --interval D --concurrency C`),
//! aggregate the rounds into one report with latency statistics, and `verify`:
//! repeat until the server has been healthy for `--stable N` rounds in a row or a
//! deadline passes, one progress line per round.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::baseline::{self, Baseline};
use crate::check;
use crate::cli::CheckArgs;
use crate::config::{self, Settings};
use crate::diagnosis::{self, Diagnosis};
use crate::error::ProbeError;
use crate::phase::millis;
use crate::report::{self, Destination, Format, Report, Verdict};
use crate::stability::{self, RoundOutcome, Stability};
use crate::stats::{self, RoundSummary, Stats};
use crate::units::parse_duration;

/// Flags shared by `check` and `verify` (flattened into [`CheckArgs`]).
#[derive(Debug, Clone, Default, Args)]
pub struct RoundArgs {
    /// Repeat the ladder N times; the report aggregates every round and adds
    /// latency statistics (verify: the most rounds to run).
    #[arg(long, value_name = "N")]
    pub rounds: Option<u32>,
    /// Time from the start of one round to the start of the next (check: 0s,
    /// verify: 5s).
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Messages in flight at once over SMTP (default 1).
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// Constant-rate mode: send this many messages per second (the ladder's sizes in
    /// turn) for --duration; latency counts from the intended send time.
    #[arg(long, value_name = "MSGS_PER_SEC", requires = "duration")]
    pub rate: Option<f64>,
    /// How long the constant-rate mode runs (at most 1h).
    #[arg(long, value_name = "DURATION", requires = "rate")]
    pub duration: Option<String>,
    /// Compare with an earlier JSON report: flag slower phases and sizes that fail now.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Save this run's JSON report as a baseline for later comparisons.
    #[arg(long, value_name = "FILE")]
    pub save_baseline: Option<PathBuf>,
    /// How much slower a phase's p50 or p99 may get before it is a regression
    /// (percent; and always at least 5 ms).
    #[arg(long, value_name = "PERCENT", default_value = "50%")]
    pub regression_threshold: Option<String>,
    /// ... and at least this much slower (default 5ms; delivery, seen by polling,
    /// also at least twice the poll interval).
    #[arg(long, value_name = "DURATION")]
    pub regression_min: Option<String>,
}

/// Most rounds `check --rounds` runs.
pub const MAX_ROUNDS: u32 = 100_000;
/// Longest constant-rate run.
pub const MAX_RATE_DURATION: Duration = Duration::from_secs(3600);

impl RoundArgs {
    /// `--concurrency`, validated (config.rs puts it into the settings).
    pub fn concurrency(&self) -> Result<usize, String> {
        match self.concurrency {
            None => Ok(1),
            Some(0) => Err("--concurrency must be at least 1".into()),
            Some(c) if c > 256 => Err("--concurrency is at most 256".into()),
            Some(c) => Ok(c),
        }
    }
    fn interval(&self, default: Duration) -> Result<Duration, String> {
        self.interval
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map(|d| d.unwrap_or(default))
    }
    fn threshold(&self, settings: Option<&Settings>) -> Result<baseline::Threshold, String> {
        let mut t = match &self.regression_threshold {
            Some(t) => baseline::parse_threshold(t)?,
            None => baseline::Threshold::default(),
        };
        if let Some(min) = &self.regression_min {
            t.min_ms = millis(parse_duration(min)?);
        }
        t.delivery_min_ms = t
            .min_ms
            .max(settings.map_or(0.0, |s| 2.0 * millis(s.poll_interval)));
        Ok(t)
    }
    fn load_baseline(&self) -> Result<Option<Baseline>, String> {
        self.baseline.as_deref().map(Baseline::load).transpose()
    }
    /// Anything beyond one plain check?
    fn multi(&self) -> bool {
        self.rounds.is_some_and(|n| n > 1) || self.rate.is_some() || self.baseline.is_some()
    }
}

/// Outputs the round flags add: `--save-baseline FILE` is a JSON report.
pub fn extra_outputs(args: &RoundArgs) -> Vec<(Format, Destination)> {
    args.save_baseline
        .iter()
        .map(|p| (Format::Json, Destination::File(p.clone())))
        .collect()
}

/// `check`, with rounds, constant rate and baseline when asked.
pub async fn check(settings: Settings, args: &RoundArgs) -> Result<Report, ProbeError> {
    if !args.multi() {
        return check::run_check(settings).await;
    }
    let baseline = args.load_baseline().map_err(ProbeError::config)?;
    let threshold = args
        .threshold(Some(&settings))
        .map_err(ProbeError::config)?;
    let mut report = if let Some(rate) = args.rate {
        let duration = parse_duration(args.duration.as_deref().unwrap_or("10s"))
            .map_err(ProbeError::config)?;
        crate::rate::run(
            settings,
            rate,
            duration,
            args.concurrency.unwrap_or(crate::rate::DEFAULT_IN_FLIGHT),
        )
        .await?
    } else {
        let n = args.rounds.unwrap_or(1);
        if n == 0 || n > MAX_ROUNDS {
            return Err(ProbeError::config(format!(
                "--rounds must be between 1 and {MAX_ROUNDS}"
            )));
        }
        let interval = args.interval(Duration::ZERO).map_err(ProbeError::config)?;
        run_rounds(&settings, n, interval).await?
    };
    apply_baseline(&mut report, baseline.as_ref(), threshold);
    Ok(report)
}

/// One finished round.
struct Round {
    report: Report,
    summary: RoundSummary,
}

async fn one_round(settings: &Settings, number: u32) -> Result<Round, ProbeError> {
    let started = Instant::now();
    let mut report = check::run_check(settings.clone()).await?;
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

async fn run_rounds(settings: &Settings, n: u32, interval: Duration) -> Result<Report, ProbeError> {
    let started = Instant::now();
    let mut rounds = Vec::with_capacity(n as usize);
    for number in 1..=n {
        let started = Instant::now();
        rounds.push(one_round(settings, number).await?);
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

/// Add diagnoses after [`diagnosis::apply`]: verdict and summary follow the worst.
pub fn add_diagnoses(report: &mut Report, extra: Vec<Diagnosis>) {
    if extra.is_empty() {
        return;
    }
    report.diagnoses.extend(extra);
    report
        .diagnoses
        .sort_by_key(|d| (std::cmp::Reverse(d.severity), d.code));
    report.verdict = report
        .diagnoses
        .iter()
        .map(|d| d.severity.verdict())
        .max()
        .unwrap_or(Verdict::Healthy);
    if let Some(first) = report.diagnoses.first() {
        report.summary = first.summary.clone();
    }
}

fn apply_baseline(
    report: &mut Report,
    baseline: Option<&Baseline>,
    threshold: baseline::Threshold,
) {
    let Some(baseline) = baseline else {
        return;
    };
    let stats = report
        .stats
        .get_or_insert_with(|| stats::build(&report.messages, 1));
    let comparison = baseline::compare(baseline, stats, &report.messages, threshold);
    let found = baseline::diagnoses(&comparison);
    stats.baseline = Some(comparison);
    add_diagnoses(report, found);
}

// ------------------------------------------------------------------- verify

/// `mailprobe verify`: repeat rounds until the server is stable or the deadline passes.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub check: CheckArgs,
    /// Consecutive healthy rounds that prove the server stable (after flapping, the
    /// streak must also outlast every earlier up stretch).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub stable: u32,
    /// Give up after this long (a round running at the deadline finishes first).
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub deadline: String,
}

/// One progress line of `verify --format jsonl`.
#[derive(Debug, Serialize)]
struct RoundEvent<'a> {
    event: &'static str,
    #[serde(flatten)]
    round: &'a RoundSummary,
    stability: &'a Stability,
}

/// Render a round's progress line (human or JSON line).
fn progress_line(summary: &RoundSummary, s: &Stability, jsonl: bool) -> String {
    if jsonl {
        let event = RoundEvent {
            event: "round",
            round: summary,
            stability: s,
        };
        return serde_json::to_string(&event).expect("a round serializes") + "\n";
    }
    let down = if summary.down.is_empty() {
        String::new()
    } else {
        format!(
            " ({} down)",
            summary
                .down
                .iter()
                .map(|p| p.label())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "round {:>3}: {:<8}{} {:>6.1} s  streak {}/{}  transitions {}{}  {}\n",
        summary.round,
        summary.state.as_str().to_uppercase(),
        down,
        summary.duration_ms / 1000.0,
        s.streak,
        s.required,
        s.transitions,
        if s.flapping { "  FLAPPING" } else { "" },
        crate::reply::truncate(&summary.summary, 160)
    )
}

/// Progress goes to standard output as it happens (the final report goes through
/// [`report::write_outputs`]).
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
}

/// Run the verify command; returns the exit code.
pub async fn run_verify(args: VerifyArgs) -> i32 {
    let usage = |m: &str| {
        eprintln!("mailprobe: {m}");
        crate::EXIT_UNKNOWN
    };
    let c = &args.check;
    let jsonl = c.format == crate::cli::Format::Jsonl;
    let mut outputs: Vec<(Format, Destination)> = Vec::new();
    if !c.quiet && !jsonl {
        outputs.push((stdout_format(c.format), Destination::Stdout));
    }
    for spec in &c.output {
        match report::parse_output(spec) {
            Ok(o) => outputs.push(o),
            Err(e) => return usage(&e),
        }
    }
    outputs.extend(extra_outputs(&c.rounds));
    let deadline = match parse_duration(&args.deadline) {
        Ok(d) => d,
        Err(e) => return usage(&e),
    };
    let interval = match c.rounds.interval(Duration::from_secs(5)) {
        Ok(d) => d,
        Err(e) => return usage(&e),
    };
    let baseline = match c.rounds.load_baseline() {
        Ok(b) => b,
        Err(e) => return usage(&e),
    };
    if c.rounds.rate.is_some() {
        return usage("verify runs rounds; --rate belongs to check");
    }
    let settings = match config::resolve(c) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let threshold = match c.rounds.threshold(Some(&settings)) {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    // A server may echo a password: no progress line or report ever shows one.
    let secrets = crate::redact::settings_secrets(&settings);
    let human = c.format == crate::cli::Format::Human && !c.quiet;
    let progress = (human || jsonl) && !c.quiet;
    let report = match verify(
        &settings,
        VerifyPlan {
            stable: args.stable,
            deadline,
            interval,
            max_rounds: c.rounds.rounds.unwrap_or(MAX_ROUNDS).max(1),
        },
        |summary, s| {
            if progress {
                let line = progress_line(summary, s, jsonl);
                emit(&crate::redact::scrub(&line, &secrets));
            }
        },
    )
    .await
    {
        Ok(mut r) => {
            apply_baseline(&mut r, baseline.as_ref(), threshold);
            crate::redact::scrub_value(&mut r, &secrets);
            r
        }
        Err(e) => return usage(&e.to_string()),
    };
    if jsonl && !c.quiet {
        let mut value = serde_json::to_value(&report).expect("a report serializes");
        if let Some(o) = value.as_object_mut() {
            o.insert("event".into(), "report".into());
        }
        emit(&(value.to_string() + "\n"));
    } else if human {
        emit("\n");
    }
    if let Err(e) = report::write_outputs(&report, &outputs) {
        eprintln!("mailprobe: {e}");
        return crate::EXIT_UNKNOWN;
    }
    report.verdict.exit_code()
}

fn stdout_format(f: crate::cli::Format) -> Format {
    use crate::cli::Format as F;
    match f {
        F::Human => Format::Human,
        F::Json | F::Jsonl => Format::Json,
        F::Nagios => Format::Nagios,
        F::Prometheus => Format::Prometheus,
        F::Junit => Format::Junit,
        F::Html => Format::Html,
    }
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
        let round = one_round(settings, number).await?;
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
        add_diagnoses(&mut report, vec![d]);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::Protocol;
    use crate::stability::RoundState;

    #[test]
    fn progress_lines() {
        let summary = RoundSummary {
            round: 4,
            state: RoundState::Down,
            verdict: Verdict::Failing,
            duration_ms: 120.0,
            down: vec![Protocol::Smtp],
            summary: "SMTP is unreachable".into(),
        };
        let outcomes = vec![
            RoundOutcome {
                state: RoundState::Down,
                down: vec![Protocol::Smtp],
            },
            RoundOutcome {
                state: RoundState::Up,
                down: vec![],
            },
            RoundOutcome {
                state: RoundState::Down,
                down: vec![Protocol::Smtp],
            },
        ];
        let s = stability::analyze(&outcomes, 3);
        let line = progress_line(&summary, &s, false);
        assert!(line.starts_with("round   4: DOWN"), "{line}");
        assert!(
            line.contains("(SMTP down)") && line.contains("FLAPPING"),
            "{line}"
        );
        let json = progress_line(&summary, &s, true);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["event"], "round");
        assert_eq!(v["round"], 4);
        assert_eq!(v["state"], "down");
        assert_eq!(v["stability"]["flapping"], true);
        assert_eq!(json.matches('\n').count(), 1);
    }

    #[test]
    fn round_flags_validate() {
        let a = RoundArgs {
            concurrency: Some(0),
            ..Default::default()
        };
        assert!(a.concurrency().is_err());
        assert_eq!(RoundArgs::default().concurrency(), Ok(1));
        assert!(!RoundArgs::default().multi());
        let a = RoundArgs {
            rounds: Some(2),
            save_baseline: Some("b.json".into()),
            ..Default::default()
        };
        assert!(a.multi());
        assert_eq!(extra_outputs(&a).len(), 1);
    }
}
