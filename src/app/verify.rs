//! `mailprobe verify`: rounds until the server is stable or the deadline passes,
//! with one progress line per round (human or JSON lines) and the final report.

use std::time::Duration;

use serde::Serialize;

use crate::app::cli::VerifyArgs;
use crate::app::output::Outputs;
use crate::app::rounds::extra_outputs;
use crate::app::{profile, token, usage_error};
use crate::core::units::parse_duration;
use crate::model::stats::{RoundSummary, Stability};
use crate::probe::rounds::{self, MAX_ROUNDS, VerifyPlan};
use crate::report::Format;

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
        crate::core::reply::truncate(&summary.summary, 160)
    )
}

/// Progress goes to standard output as it happens (the final report goes through
/// [`Outputs::finish`]).
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
}

/// Run the verify command; returns the exit code.
pub(crate) async fn run(args: VerifyArgs) -> i32 {
    let c = &args.check;
    let jsonl = c.output.format == Format::Jsonl;
    let outputs = match Outputs::new(&c.output, extra_outputs(&c.rounds)) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    // JSON lines go out as the rounds end, the report as the last line.
    let mut outputs = if jsonl {
        outputs.without_stdout()
    } else {
        outputs
    };
    let deadline = match parse_duration(&args.deadline) {
        Ok(d) => d,
        Err(e) => return usage_error(&e),
    };
    let interval = match c.rounds.interval(Duration::from_secs(5)) {
        Ok(d) => d,
        Err(e) => return usage_error(&e),
    };
    let sample_interval = match c
        .rounds
        .sample_interval(Some(crate::probe::sampler::DEFAULT_INTERVAL))
    {
        Ok(i) => i,
        Err(e) => return usage_error(&e),
    };
    let baseline = match c.rounds.load_baseline() {
        Ok(b) => b,
        Err(e) => return usage_error(&e),
    };
    if c.rounds.rate.is_some() {
        return usage_error("verify runs rounds; --rate belongs to check");
    }
    if c.domain.is_some() {
        return usage_error(
            "verify repeats rounds against one server; --domain belongs to check (give the MX as --smtp)",
        );
    }
    let settings = match profile::resolve(c) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    let threshold = match c.rounds.threshold(Some(&settings)) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    // A server may echo a password: no progress line, report or transcript shows one.
    outputs.protect(settings.target.secrets());
    if let Some(warning) = token::expiry_warning(&settings, deadline) {
        eprintln!("mailprobe: {warning}");
    }
    let human = c.output.format == Format::Human && !c.output.quiet;
    let progress = (human || jsonl) && !c.output.quiet;
    let plan = VerifyPlan {
        stable: args.stable,
        deadline,
        interval,
        max_rounds: c.rounds.rounds.unwrap_or(MAX_ROUNDS).max(1),
        sample_interval,
    };
    let outcome = rounds::verify_recorded(&settings, plan, outputs.transcript(), |summary, s| {
        if progress {
            emit(&outputs.scrub(&progress_line(summary, s, jsonl)));
        }
    })
    .await
    .map(|mut r| {
        if let Some(b) = &baseline {
            rounds::apply_baseline(&mut r, b, threshold);
        }
        r
    })
    .map_err(|e| e.to_string());
    outputs.finish(outcome, |report| {
        if jsonl && !c.output.quiet {
            let mut value = serde_json::to_value(report).expect("a report serializes");
            if let Some(o) = value.as_object_mut() {
                o.insert("event".into(), "report".into());
            }
            emit(&(value.to_string() + "\n"));
        } else if human {
            emit("\n");
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::analysis::stability::{self, RoundOutcome};
    use crate::core::phase::Protocol;
    use crate::model::report::Verdict;
    use crate::model::stats::RoundState;

    #[test]
    fn progress_lines() {
        let summary = RoundSummary {
            round: 4,
            state: RoundState::Down,
            verdict: Verdict::Failing,
            duration_ms: 120.0,
            down: vec![Protocol::Smtp],
            sampled_down: vec![],
            summary: "SMTP is unreachable".into(),
        };
        let outcomes = vec![
            RoundOutcome {
                state: RoundState::Down,
                down: vec![Protocol::Smtp],
                sampled_down: vec![],
            },
            RoundOutcome {
                state: RoundState::Up,
                down: vec![],
                sampled_down: vec![],
            },
            RoundOutcome {
                state: RoundState::Down,
                down: vec![Protocol::Smtp],
                sampled_down: vec![],
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

    /// `verify` takes no `--domain` (it repeats rounds against one server).
    #[tokio::test]
    async fn verify_refuses_a_domain() {
        let cli = crate::app::cli::Cli::try_parse_from([
            "mailprobe",
            "verify",
            "--domain",
            "example.com",
            "--user",
            "a@example.com",
        ])
        .unwrap();
        let crate::app::cli::Command::Verify(args) = cli.command else {
            panic!("verify parses as verify")
        };
        assert_eq!(run(args).await, crate::app::EXIT_UNKNOWN);
    }
}
