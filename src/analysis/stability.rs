//! Is the server healthy, and does it stay healthy? Pure: round reports in,
//! round states, a stability analysis and its diagnosis out.
//!
//! A round is `up` when its check was healthy, `down` when nothing got through
//! (no message was accepted and read back), and `degraded` otherwise (some sizes or
//! some protocols fail). Any change of state is a transition; rounds that change
//! state again and again, some of them down, are `flapping` (also "all down"
//! alternating with "attachments fail"). A round that passed while the liveness
//! sampler saw a service down or restarting does not count towards stability.

use crate::core::error::{ErrorKind, ProbeError};
use crate::core::phase::{Phase, Protocol};
use crate::model::diagnosis::{Code, Diagnosis, Severity};
use crate::model::report::{MessageReport, Report, Verdict};
use crate::model::stats::{RoundState, Stability};

/// A failure that means the service itself is not there (or is going away).
pub(crate) fn is_connection_failure(err: &ProbeError) -> bool {
    let before_session = matches!(
        err.phase,
        Some(Phase::Connect | Phase::Greeting | Phase::Tls)
    );
    err.is_connection_lost()
        || (err.kind == ErrorKind::Timeout && before_session)
        || err.status() == Some(421)
        || (err.kind == ErrorKind::NotDelivered
            && ["(refused)", "(reset)", "(closed)"]
                .iter()
                .any(|k| err.message.contains(k)))
}

/// How one round went, and which protocols were down in it (failed at
/// connection level: refused, reset, closed, no greeting, 421).
pub(crate) fn classify(report: &Report) -> (RoundState, Vec<Protocol>) {
    let mut down: Vec<Protocol> = Vec::new();
    for m in &report.messages {
        let results = [
            (Protocol::Smtp, Some(&m.smtp)),
            (Protocol::Imap, m.imap.as_ref()),
            (Protocol::Pop3, m.pop3.as_ref()),
        ];
        for (protocol, r) in results {
            if let Some(err) = r.and_then(|r| r.error.as_ref())
                && is_connection_failure(err)
            {
                let p = err.protocol.unwrap_or(protocol);
                if !down.contains(&p) {
                    down.push(p);
                }
            }
        }
    }
    down.sort();
    // Through: accepted, and read back by at least one retrieval protocol when any was asked.
    let through = |m: &MessageReport| {
        let mut retrievals = m.retrievals().peekable();
        m.smtp.ok && (retrievals.peek().is_none() || retrievals.any(|(_, r)| r.ok))
    };
    let state = if report.verdict == Verdict::Healthy {
        RoundState::Up
    } else if !report.messages.is_empty() && !report.messages.iter().any(through) {
        RoundState::Down
    } else {
        RoundState::Degraded
    };
    (state, down)
}

/// One round as the analysis needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RoundOutcome {
    pub(crate) state: RoundState,
    pub(crate) down: Vec<Protocol>,
    /// Services the liveness sampler saw down or restarting during the round (and
    /// the pause before it).
    pub(crate) sampled_down: Vec<Protocol>,
}

/// Analyse the rounds so far. `stable_target` is the number of consecutive up
/// rounds asked for (`--stable`). Once the server has flapped, an up stretch only
/// counts as stable when it also outlasts every earlier up stretch: a server that
/// ran for K rounds and crashed has not proven anything by running K rounds again.
pub(crate) fn analyze(rounds: &[RoundOutcome], stable_target: u32) -> Stability {
    let is_up = |r: &RoundOutcome| r.state == RoundState::Up;
    // Runs of one state; a change between any two states is a transition.
    let mut runs: Vec<(RoundState, u32)> = Vec::new();
    for r in rounds {
        match runs.last_mut() {
            Some((state, n)) if *state == r.state => *n += 1,
            _ => runs.push((r.state, 1)),
        }
    }
    // Stretches of up and not up, for the longest up and down.
    let mut stretches: Vec<(bool, u32)> = Vec::new();
    for r in rounds {
        match stretches.last_mut() {
            Some((up, n)) if *up == is_up(r) => *n += 1,
            _ => stretches.push((is_up(r), 1)),
        }
    }
    let transitions = runs.len().saturating_sub(1) as u32;
    let count = |s: RoundState| rounds.iter().filter(|r| r.state == s).count() as u32;
    let (up_rounds, down_rounds, degraded_rounds) = (
        count(RoundState::Up),
        count(RoundState::Down),
        count(RoundState::Degraded),
    );
    let sampled_down_rounds = rounds
        .iter()
        .filter(|r| is_up(r) && !r.sampled_down.is_empty())
        .count() as u32;
    let longest = |want: bool| {
        stretches
            .iter()
            .filter(|(up, _)| *up == want)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    };
    // Up rounds at the end during which the sampler saw every service up.
    let streak = rounds
        .iter()
        .rev()
        .take_while(|r| is_up(r) && r.sampled_down.is_empty())
        .count() as u32;
    let flapping = transitions >= 2 && down_rounds > 0;
    let earlier_up = stretches
        .iter()
        .rev()
        .skip(usize::from(streak > 0))
        .filter(|(up, _)| *up)
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0);
    let target = stable_target.max(1);
    let required = if flapping {
        target.max(earlier_up + 1)
    } else {
        target
    };
    let stable = streak >= required;
    let mut protocols: Vec<Protocol> = rounds.iter().flat_map(|r| r.down.iter().copied()).collect();
    protocols.sort();
    protocols.dedup();
    let last = rounds.last();
    let state = if stable {
        "stable"
    } else if flapping {
        "flapping"
    } else if last.is_some_and(|r| is_up(r) && !r.sampled_down.is_empty()) {
        "restarting"
    } else if streak > 0 {
        "recovering"
    } else if last.map(|r| r.state) == Some(RoundState::Down) {
        "down"
    } else {
        "degraded"
    };
    Stability {
        state: state.to_string(),
        rounds: rounds.len() as u32,
        up_rounds,
        down_rounds,
        degraded_rounds,
        transitions,
        longest_up: longest(true),
        longest_down: longest(false),
        streak,
        required,
        stable,
        flapping,
        protocols,
        sampled_down_rounds,
    }
}

/// The diagnosis for a verification that ended without stability (None when stable).
pub(crate) fn diagnosis(s: &Stability, deadline_passed: bool) -> Option<Diagnosis> {
    if s.stable {
        return None;
    }
    let protocols = s
        .protocols
        .iter()
        .map(|p| p.label())
        .collect::<Vec<_>>()
        .join(", ");
    let evidence = vec![s.describe()];
    let ended = if deadline_passed {
        "by the deadline"
    } else {
        "yet"
    };
    if s.flapping {
        return Some(Diagnosis {
            code: Code::Flapping,
            severity: Severity::Failing,
            summary: format!(
                "the server is flapping: {} transition(s) between up, degraded and down in {} rounds ({}); longest up {} round(s), longest down {}",
                s.transitions,
                s.rounds,
                if protocols.is_empty() { "no protocol named".into() } else { format!("down: {protocols}") },
                s.longest_up,
                s.longest_down
            ),
            cause: None,
            reason: None,
            protocol: None,
            evidence,
            hints: vec![
                "services that come up and crash again: check the crash/restart log (systemd journal, Windows event 7031/7034) around the down rounds".into(),
                "look for what each crash has in common: a message being processed, a filter or antivirus scanning it, a watchdog restarting the service".into(),
            ],
        });
    }
    let (state_words, hints): (&str, Vec<String>) = match s.state.as_str() {
        "down" => (
            "consistently down",
            vec!["the service is not coming back: start it and check why it stopped".into()],
        ),
        "restarting" => (
            "restarting (rounds passed, but the liveness sampler saw a service go down or restart)",
            vec![
                "a service restarts between or during the checks: see the timeline and the crash_loop or restarted diagnosis".into(),
            ],
        ),
        "recovering" => (
            "up, but not for long enough",
            vec!["give it a longer --deadline, or check whether it crashes again".into()],
        ),
        _ => (
            "degraded",
            vec!["the server answers but the rounds fail or are slow: see the last round's diagnoses".into()],
        ),
    };
    Some(Diagnosis {
        code: Code::NotStable,
        severity: Severity::Failing,
        summary: format!(
            "the server did not become stable {ended}: {state_words} ({} of {} consecutive healthy rounds)",
            s.streak, s.required
        ),
        cause: None,
        reason: None,
        protocol: None,
        evidence,
        hints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use RoundState::*;

    fn rounds(states: &[RoundState]) -> Vec<RoundOutcome> {
        states
            .iter()
            .map(|&state| RoundOutcome {
                state,
                down: if state == Down {
                    vec![Protocol::Smtp, Protocol::Imap]
                } else {
                    vec![]
                },
                sampled_down: vec![],
            })
            .collect()
    }

    #[test]
    fn steady_up_is_stable_after_the_target() {
        let s = analyze(&rounds(&[Up, Up]), 3);
        assert!(!s.stable);
        assert_eq!(s.state, "recovering");
        let s = analyze(&rounds(&[Up, Up, Up]), 3);
        assert!(s.stable && !s.flapping);
        assert_eq!((s.transitions, s.streak, s.required), (0, 3, 3));
        assert!(diagnosis(&s, true).is_none());
    }

    #[test]
    fn recovery_once_is_not_flapping() {
        let s = analyze(&rounds(&[Down, Down, Up, Up, Up]), 3);
        assert!(s.stable && !s.flapping);
        assert_eq!(s.transitions, 1);
        assert_eq!(s.longest_down, 2);
    }

    #[test]
    fn alternation_is_flapping_with_stretches_and_protocols() {
        let s = analyze(&rounds(&[Down, Up, Up, Down, Down, Down, Up, Down]), 3);
        assert!(s.flapping && !s.stable);
        assert_eq!(s.state, "flapping");
        assert_eq!(s.transitions, 4);
        assert_eq!((s.longest_up, s.longest_down), (2, 3));
        assert_eq!(s.protocols, vec![Protocol::Smtp, Protocol::Imap]);
        let d = diagnosis(&s, true).unwrap();
        assert_eq!(d.code, Code::Flapping);
        assert_eq!(d.severity, Severity::Failing);
        assert!(d.summary.contains("4 transition"), "{}", d.summary);
        assert!(d.summary.contains("SMTP, IMAP"), "{}", d.summary);
    }

    #[test]
    fn after_flapping_stable_must_outlast_earlier_uptime() {
        // Up for 4 rounds, crashed, came back: 3 up rounds prove nothing yet.
        let mut seq = vec![Down, Up, Up, Up, Up, Down, Up, Up, Up];
        let s = analyze(&rounds(&seq), 3);
        assert!(s.flapping && !s.stable, "{s:?}");
        assert_eq!(s.required, 5);
        seq.extend([Up, Up]);
        let s = analyze(&rounds(&seq), 3);
        assert!(s.stable, "{s:?}");
        assert_eq!(s.state, "stable");
    }

    #[test]
    fn consistently_down_and_degraded() {
        let s = analyze(&rounds(&[Down, Down, Down]), 2);
        assert_eq!(s.state, "down");
        let d = diagnosis(&s, true).unwrap();
        assert_eq!(d.code, Code::NotStable);
        assert!(d.summary.contains("consistently down"), "{}", d.summary);
        let s = analyze(&rounds(&[Degraded, Up, Degraded]), 2);
        assert!(!s.flapping, "no down round: not flapping");
        assert_eq!(s.state, "degraded");
        assert!(diagnosis(&s, true).unwrap().summary.contains("degraded"));
        assert_eq!(analyze(&[], 2).rounds, 0);
    }

    #[test]
    fn all_down_alternating_with_attachments_failing_is_flapping() {
        let s = analyze(&rounds(&[Down, Degraded, Down, Degraded, Down]), 3);
        assert_eq!(s.transitions, 4);
        assert!(s.flapping && !s.stable);
        assert_eq!(s.state, "flapping");
        // Degraded and up alone: transitions, but nothing was down.
        let s = analyze(&rounds(&[Up, Degraded, Up, Degraded]), 3);
        assert_eq!(s.transitions, 3);
        assert!(!s.flapping);
    }

    #[test]
    fn passing_rounds_with_a_sampled_restart_do_not_count() {
        let mut seq = rounds(&[Up, Up, Up]);
        seq[1].sampled_down = vec![Protocol::Pop3];
        let s = analyze(&seq, 3);
        assert!(!s.stable, "{s:?}");
        assert_eq!((s.streak, s.sampled_down_rounds, s.transitions), (1, 1, 0));
        assert_eq!(s.state, "recovering");
        seq[2].sampled_down = vec![Protocol::Smtp];
        let s = analyze(&seq, 3);
        assert_eq!(s.state, "restarting");
        let d = diagnosis(&s, true).unwrap();
        assert_eq!(d.code, Code::NotStable);
        assert!(d.summary.contains("restarting"), "{}", d.summary);
        assert!(
            s.describe()
                .contains("2 passing round(s) with a service seen down")
        );
        seq.extend(rounds(&[Up, Up, Up]));
        assert!(analyze(&seq, 3).stable);
    }

    #[test]
    fn a_round_is_down_only_when_nothing_got_through() {
        use crate::model::fixtures;
        let mut r = fixtures::report();
        // The sample: the plain message got through, attachments fail.
        assert_eq!(classify(&r).0, Degraded);
        for m in &mut r.messages {
            m.smtp.ok = false;
        }
        assert_eq!(classify(&r).0, Down);
        r.verdict = Verdict::Healthy;
        assert_eq!(classify(&r).0, Up);
    }

    #[test]
    fn connection_failures_are_recognised() {
        let refused = ProbeError::new(ErrorKind::Refused, "x").at(Protocol::Smtp, Phase::Connect);
        assert!(is_connection_failure(&refused));
        let greeting = ProbeError::new(ErrorKind::Timeout, "x").at(Protocol::Imap, Phase::Greeting);
        assert!(is_connection_failure(&greeting));
        let data = ProbeError::new(ErrorKind::Timeout, "x").at(Protocol::Smtp, Phase::Data);
        assert!(!is_connection_failure(&data));
        let r421 = ProbeError::rejected(crate::core::reply::Reply::smtp(421, "shutting down"))
            .at(Protocol::Smtp, Phase::Greeting);
        assert!(is_connection_failure(&r421));
        let rejected = ProbeError::rejected(crate::core::reply::Reply::smtp(554, "no"));
        assert!(!is_connection_failure(&rejected));
    }
}
