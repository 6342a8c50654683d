//! `mailprobe verify`: rounds until the server is stable or the deadline passes,
//! with one progress line per round (human or JSON lines) and the final report.

use std::time::Duration;

use serde::Serialize;

use crate::app::cli::VerifyArgs;
use crate::app::output::{self, Destination};
use crate::app::rounds::extra_outputs;
use crate::app::{EXIT_UNKNOWN, profile};
use crate::core::secret::{scrub, scrub_value};
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
/// [`output::write_outputs`]).
fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|_| out.flush());
}

/// Run the verify command; returns the exit code.
pub async fn run(args: VerifyArgs) -> i32 {
    let usage = |m: &str| {
        eprintln!("mailprobe: {m}");
        EXIT_UNKNOWN
    };
    let c = &args.check;
    let jsonl = c.format == Format::Jsonl;
    let mut outputs: Vec<(Format, Destination)> = Vec::new();
    if !c.quiet && !jsonl {
        outputs.push((c.format, Destination::Stdout));
    }
    for spec in &c.output {
        match output::parse_output(spec) {
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
    let sample_interval = match c
        .rounds
        .sample_interval(Some(crate::probe::sampler::DEFAULT_INTERVAL))
    {
        Ok(i) => i,
        Err(e) => return usage(&e),
    };
    let baseline = match c.rounds.load_baseline() {
        Ok(b) => b,
        Err(e) => return usage(&e),
    };
    if c.rounds.rate.is_some() {
        return usage("verify runs rounds; --rate belongs to check");
    }
    let settings = match profile::resolve(c) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let threshold = match c.rounds.threshold(Some(&settings)) {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    // A server may echo a password: no progress line or report ever shows one.
    let secrets = settings.target.secrets();
    let human = c.format == Format::Human && !c.quiet;
    let progress = (human || jsonl) && !c.quiet;
    let report = match rounds::verify(
        &settings,
        VerifyPlan {
            stable: args.stable,
            deadline,
            interval,
            max_rounds: c.rounds.rounds.unwrap_or(MAX_ROUNDS).max(1),
            sample_interval,
        },
        |summary, s| {
            if progress {
                let line = progress_line(summary, s, jsonl);
                emit(&scrub(&line, &secrets));
            }
        },
    )
    .await
    {
        Ok(mut r) => {
            if let Some(b) = &baseline {
                rounds::apply_baseline(&mut r, b, threshold);
            }
            scrub_value(&mut r, &secrets);
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
    if let Err(e) = output::write_outputs(&report, &outputs) {
        eprintln!("mailprobe: {e}");
        return EXIT_UNKNOWN;
    }
    report.verdict.exit_code()
}

#[cfg(test)]
mod tests {
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
}
