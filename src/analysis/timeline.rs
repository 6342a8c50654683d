//! Reading the liveness timeline: crash loops (a service down and back at least
//! twice), whether services go down together (one process or front end), and the
//! diagnoses `crash_loop` and `restarted`. Pure: a timeline in, findings out.

use crate::core::phase::Protocol;
use crate::core::units::format_ms;
use crate::model::diagnosis::{Code, Diagnosis, Severity};
use crate::model::timeline::{CauseCount, CrashLoop, Liveness, ServiceTimeline, Span, Timeline};

/// Restarts in the window that make a crash loop.
pub const LOOP_RESTARTS: u32 = 2;
/// Share of a service's down time that another must also be down for the two to
/// count as failing together (measured on the one that was down less: a service
/// that takes longer to start again is still down with the other).
pub(crate) const SHARED_OVERLAP: f64 = 0.8;

/// Where the timeline comes from, which decides how its findings weigh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Run {
    /// A check, or its rounds: every restart seen counts.
    Check,
    /// `verify` that reached stability (the stable window had no down and no
    /// restart): what came before is history, reported but not failing.
    VerifyStable,
    /// `verify` that did not reach stability.
    VerifyUnstable,
}

/// Find the crash loops and store them in the timeline.
pub fn analyze(timeline: &mut Timeline) {
    timeline.crash_loops = crash_loops(timeline);
}

/// Services that restarted at least [`LOOP_RESTARTS`] times, grouped by overlapping
/// down time.
pub fn crash_loops(timeline: &Timeline) -> Vec<CrashLoop> {
    let slack = timeline.interval_ms;
    let looping: Vec<&ServiceTimeline> = timeline
        .services
        .iter()
        .filter(|s| s.restarts >= LOOP_RESTARTS)
        .collect();
    let mut groups: Vec<Vec<&ServiceTimeline>> = Vec::new();
    for service in looping {
        let together = |members: &Vec<&ServiceTimeline>| {
            members.iter().all(|m| {
                let shorter_first = if service.down_ms() <= m.down_ms() {
                    (service, *m)
                } else {
                    (*m, service)
                };
                overlap_share(shorter_first.0, shorter_first.1, slack) >= SHARED_OVERLAP
            })
        };
        match groups.iter_mut().find(|g| together(g)) {
            Some(group) => group.push(service),
            None => groups.push(vec![service]),
        }
    }
    groups.into_iter().map(|g| describe_loop(&g)).collect()
}

fn describe_loop(members: &[&ServiceTimeline]) -> CrashLoop {
    let spans = || members.iter().flat_map(|s| s.spans.iter());
    // Down spans between two up spans, and up spans between two down spans: the
    // ones the window did not cut.
    let inner = |s: &ServiceTimeline, state: Liveness| -> Vec<f64> {
        s.spans
            .windows(3)
            .filter(|w| w[1].state == state && w[0].state != state && w[2].state != state)
            .map(|w| w[1].duration_ms())
            .collect()
    };
    let mut ups: Vec<f64> = members
        .iter()
        .flat_map(|s| inner(s, Liveness::Up))
        .collect();
    if ups.is_empty() {
        ups = spans()
            .filter(|s| s.state == Liveness::Up)
            .map(Span::duration_ms)
            .collect();
    }
    let downs: Vec<f64> = members
        .iter()
        .flat_map(|s| inner(s, Liveness::Down))
        .collect();
    let restarts: Vec<f64> = spans().filter(|s| s.restart).map(|s| s.start_ms).collect();
    let mut began = CauseCount::tally(spans());
    began.sort_by_key(|c| (std::cmp::Reverse(c.count), c.cause));
    CrashLoop {
        protocols: members.iter().map(|s| s.protocol).collect(),
        shared: members.len() > 1,
        restarts: members.iter().map(|s| s.restarts).max().unwrap_or(0),
        median_up_ms: median(ups),
        median_down_ms: median(downs),
        first_restart_ms: restarts.iter().copied().fold(f64::INFINITY, f64::min),
        last_restart_ms: restarts.iter().copied().fold(0.0, f64::max),
        began,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The share of `a`'s down time during which `b` was down too. Each of `b`'s down
/// spans is widened by `slack` (a sample interval) on both sides: span edges are
/// only known to the nearest sample, and the services are sampled at different
/// moments.
pub fn overlap_share(a: &ServiceTimeline, b: &ServiceTimeline, slack: f64) -> f64 {
    let total = a.down_ms();
    if total <= 0.0 {
        return 0.0;
    }
    let mut widened: Vec<(f64, f64)> = b
        .down_spans()
        .map(|s| (s.start_ms - slack, s.end_ms + slack))
        .collect();
    widened.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (start, end) in widened {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let covered: f64 = a
        .down_spans()
        .flat_map(|s| {
            merged
                .iter()
                .map(move |&(start, end)| (s.end_ms.min(end) - s.start_ms.max(start)).max(0.0))
        })
        .sum();
    (covered / total).min(1.0)
}

fn labels(protocols: &[Protocol]) -> String {
    let names: Vec<&str> = protocols.iter().map(|p| p.label()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn at(ms: f64) -> String {
    format!("+{}", format_ms(ms))
}

/// One line per service: restarts, spans, how its downs began.
fn service_evidence(s: &ServiceTimeline) -> String {
    let downs: Vec<&Span> = s.down_spans().collect();
    let began: Vec<String> = CauseCount::tally(downs.iter().copied())
        .iter()
        .map(|c| format!("{} x{}", c.cause.as_str(), c.count))
        .collect();
    let restarts: Vec<String> = s
        .spans
        .iter()
        .filter(|sp| sp.restart)
        .map(|sp| at(sp.start_ms))
        .collect();
    format!(
        "{} ({}): {} restart(s){}; down {} time(s) for {} in total{}; {} samples",
        s.protocol.label(),
        s.endpoint,
        s.restarts,
        if restarts.is_empty() {
            String::new()
        } else {
            format!(" at {}", restarts.join(", "))
        },
        downs.len(),
        format_ms(s.down_ms()),
        if began.is_empty() {
            String::new()
        } else {
            format!(" (began: {})", began.join(", "))
        },
        s.samples
    )
}

fn loop_hints(shared: bool) -> Vec<String> {
    let mut hints = vec![
        "the service manager's restart/crash log: Windows Service Control Manager event 7031 (service terminated unexpectedly), systemd `systemctl show -p NRestarts` and the Restart= setting, `journalctl -u <service>` around the restart times".into(),
        "what each crash has in common: a recent update of a filter or antivirus, a message being processed when it dies".into(),
    ];
    if shared {
        hints.insert(
            0,
            "the services fail as one: look at the one process or front end behind them (e.g. an Exchange front end, a proxy, a container) and its configuration".into(),
        );
    }
    hints
}

/// The timeline's diagnoses: one `crash_loop` per loop found (run [`analyze`]
/// first), and `restarted` for services that restarted fewer times.
pub fn diagnoses(timeline: &Timeline, run: Run) -> Vec<Diagnosis> {
    let mut out = Vec::new();
    let window = format_ms(timeline.duration_ms);
    for l in &timeline.crash_loops {
        let others: Vec<Protocol> = timeline
            .services
            .iter()
            .map(|s| s.protocol)
            .filter(|p| !l.protocols.contains(p))
            .collect();
        let mut summary = if l.shared {
            format!(
                "{} go down and come back together in a loop: {} restarts in {window} (up ~{}, down ~{}); they fail as one, one process or front end restarting",
                labels(&l.protocols),
                l.restarts,
                format_ms(l.median_up_ms),
                format_ms(l.median_down_ms)
            )
        } else {
            format!(
                "{} goes down and comes back in a loop: {} restarts in {window} (up ~{}, down ~{})",
                labels(&l.protocols),
                l.restarts,
                format_ms(l.median_up_ms),
                format_ms(l.median_down_ms)
            )
        };
        if !others.is_empty() {
            let stayed: Vec<Protocol> = others
                .iter()
                .copied()
                .filter(|p| timeline.service(*p).is_some_and(|s| s.restarts == 0))
                .collect();
            if !stayed.is_empty() {
                summary.push_str(&format!("; {} stayed up", labels(&stayed)));
            }
        }
        let severity = if run == Run::VerifyStable {
            summary.push_str(", before the server became stable");
            Severity::Degraded
        } else {
            Severity::Failing
        };
        let mut evidence = vec![format!(
            "first restart at {}, last at {} (timeline from {}); downs began: {}",
            at(l.first_restart_ms),
            at(l.last_restart_ms),
            timeline.started_at,
            l.began
                .iter()
                .map(|c| format!("{} x{}", c.cause.as_str(), c.count))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        evidence.extend(
            l.protocols
                .iter()
                .filter_map(|p| timeline.service(*p))
                .map(service_evidence),
        );
        out.push(Diagnosis {
            code: Code::CrashLoop,
            severity,
            summary,
            cause: None,
            reason: None,
            protocol: match l.protocols.as_slice() {
                [one] => Some(*one),
                _ => None,
            },
            evidence,
            hints: loop_hints(l.shared),
        });
    }
    // A restart outside any loop: worth a word during a check (a passing check in
    // a brief up phase is not plain health); history once verify proved stability.
    if run != Run::VerifyStable {
        let in_loop = |p: Protocol| {
            timeline
                .crash_loops
                .iter()
                .any(|l| l.protocols.contains(&p))
        };
        let restarted: Vec<&ServiceTimeline> = timeline
            .services
            .iter()
            .filter(|s| s.restarts > 0 && !in_loop(s.protocol))
            .collect();
        if !restarted.is_empty() {
            let protocols: Vec<Protocol> = restarted.iter().map(|s| s.protocol).collect();
            out.push(Diagnosis {
                code: Code::Restarted,
                severity: Severity::Degraded,
                summary: format!(
                    "{} restarted during the run (went down and came back, or changed its greeting): the results may come from a brief up phase",
                    labels(&protocols)
                ),
                cause: None,
                reason: None,
                protocol: match protocols.as_slice() {
                    [one] => Some(*one),
                    _ => None,
                },
                evidence: restarted.iter().map(|s| service_evidence(s)).collect(),
                hints: vec![
                    "check the service manager's log for the restart (systemd journal, Windows event 7031) and whether it happens again (`mailprobe verify`)".into(),
                ],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::timeline::{DownCause, Sample};

    /// A service sampled every `step` ms (plus `jitter(i)`) from 0 to `end`, down
    /// during each of `downs` (start, end).
    fn service(
        protocol: Protocol,
        step: f64,
        end: f64,
        downs: &[(f64, f64)],
        jitter: impl Fn(usize) -> f64,
    ) -> ServiceTimeline {
        let mut s = ServiceTimeline::new(protocol, format!("{}://h", protocol.as_str()));
        let mut i = 0;
        loop {
            let t = (i as f64 * step + jitter(i)).max(0.0);
            if t > end {
                break;
            }
            let down = downs.iter().any(|&(a, b)| t >= a && t < b);
            s.record(
                t,
                if down {
                    Sample::Down(DownCause::Refused, "refused".into())
                } else {
                    Sample::Up(format!("{} ready", protocol.label()))
                },
            );
            i += 1;
        }
        s.finish(end);
        s
    }

    fn timeline(services: Vec<ServiceTimeline>, end: f64) -> Timeline {
        let mut t = Timeline {
            started_at: "2026-12-01T20:00:00Z".into(),
            interval_ms: 250.0,
            duration_ms: end,
            services,
            crash_loops: Vec::new(),
        };
        analyze(&mut t);
        t
    }

    /// Up ~6 s, down ~3 s, from 2 s on: the story's loop.
    const LOOP: [(f64, f64); 3] = [(2000.0, 5000.0), (11_000.0, 14_000.0), (20_000.0, 23_000.0)];

    fn no_jitter(_: usize) -> f64 {
        0.0
    }
    /// Deterministic jitter of up to +-60 ms around the interval.
    fn jitter(i: usize) -> f64 {
        ((i * 37 % 13) as f64 - 6.0) * 10.0
    }

    #[test]
    fn all_services_looping_together_is_one_shared_loop() {
        let t = timeline(
            vec![
                service(Protocol::Smtp, 250.0, 27_000.0, &LOOP, jitter),
                // Sampled at other moments and a little later to go down.
                service(
                    Protocol::Imap,
                    250.0,
                    27_000.0,
                    &LOOP.map(|(a, b)| (a + 120.0, b + 80.0)),
                    |i| jitter(i + 5) + 90.0,
                ),
                service(
                    Protocol::Pop3,
                    250.0,
                    27_000.0,
                    &LOOP.map(|(a, b)| (a + 200.0, b - 100.0)),
                    |i| jitter(i + 2) + 170.0,
                ),
            ],
            27_000.0,
        );
        assert_eq!(t.crash_loops.len(), 1, "{:#?}", t.crash_loops);
        let l = &t.crash_loops[0];
        assert_eq!(
            l.protocols,
            vec![Protocol::Smtp, Protocol::Imap, Protocol::Pop3]
        );
        assert!(l.shared);
        assert_eq!(l.restarts, 3);
        assert!((l.median_down_ms - 3000.0).abs() < 400.0, "{l:?}");
        assert!((l.median_up_ms - 6000.0).abs() < 400.0, "{l:?}");
        assert!((l.first_restart_ms - 5000.0).abs() < 400.0, "{l:?}");
        assert!((l.last_restart_ms - 23_000.0).abs() < 500.0, "{l:?}");
        assert_eq!(
            l.began,
            vec![CauseCount {
                cause: DownCause::Refused,
                count: 9
            }]
        );
        let d = diagnoses(&t, Run::Check);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(
            (d[0].code, d[0].severity, d[0].protocol),
            (Code::CrashLoop, Severity::Failing, None)
        );
        assert!(
            d[0].summary
                .contains("SMTP, IMAP and POP3 go down and come back together"),
            "{}",
            d[0].summary
        );
        assert!(
            d[0].hints.iter().any(|h| h.contains("7031"))
                && d[0].hints.iter().any(|h| h.contains("front end"))
        );
        assert!(
            d[0].evidence
                .iter()
                .any(|e| e.contains("POP3 (pop3://h): 3 restart(s)")),
            "{:?}",
            d[0].evidence
        );
    }

    #[test]
    fn services_down_one_after_another_are_not_shared() {
        let smtp_downs = [(2000.0, 4000.0), (10_000.0, 12_000.0), (18_000.0, 20_000.0)];
        let imap_downs = smtp_downs.map(|(_, b)| (b, b + 2000.0));
        let t = timeline(
            vec![
                service(Protocol::Smtp, 250.0, 25_000.0, &smtp_downs, no_jitter),
                service(Protocol::Imap, 250.0, 25_000.0, &imap_downs, |_| 100.0),
            ],
            25_000.0,
        );
        assert_eq!(t.crash_loops.len(), 2, "{:#?}", t.crash_loops);
        assert!(
            t.crash_loops
                .iter()
                .all(|l| !l.shared && l.protocols.len() == 1)
        );
        let share = overlap_share(&t.services[0], &t.services[1], 250.0);
        assert!(share < 0.3, "{share}");
        let d = diagnoses(&t, Run::Check);
        assert_eq!(d.iter().filter(|d| d.code == Code::CrashLoop).count(), 2);
        assert_eq!(d[0].protocol, Some(Protocol::Smtp));
        assert!(
            d[0].summary
                .starts_with("SMTP goes down and comes back in a loop"),
            "{}",
            d[0].summary
        );
    }

    #[test]
    fn a_service_slower_to_come_back_still_fails_with_the_other() {
        // SMTP comes back 2 s later each time: IMAP's downs lie inside SMTP's.
        let smtp = LOOP.map(|(a, b)| (a, b + 2000.0));
        let t = timeline(
            vec![
                service(Protocol::Smtp, 250.0, 27_000.0, &smtp, jitter),
                service(Protocol::Imap, 250.0, 27_000.0, &LOOP, |i| {
                    jitter(i) + 100.0
                }),
            ],
            27_000.0,
        );
        assert!(overlap_share(&t.services[0], &t.services[1], 250.0) < SHARED_OVERLAP);
        assert_eq!(t.crash_loops.len(), 1, "{:#?}", t.crash_loops);
        assert!(t.crash_loops[0].shared);
        // Downs that only touch are not shared, whichever is shorter.
        let later = LOOP.map(|(_, b)| (b - 500.0, b + 2500.0));
        let t = timeline(
            vec![
                service(Protocol::Smtp, 250.0, 27_000.0, &LOOP, jitter),
                service(Protocol::Imap, 250.0, 27_000.0, &later, jitter),
            ],
            27_000.0,
        );
        assert_eq!(t.crash_loops.len(), 2, "{:#?}", t.crash_loops);
    }

    #[test]
    fn only_the_retrieval_services_looping_is_not_shared_with_smtp() {
        let t = timeline(
            vec![
                service(Protocol::Smtp, 250.0, 27_000.0, &[], jitter),
                service(Protocol::Imap, 250.0, 27_000.0, &LOOP, jitter),
                service(Protocol::Pop3, 250.0, 27_000.0, &LOOP, |i| {
                    jitter(i) + 130.0
                }),
            ],
            27_000.0,
        );
        assert_eq!(t.crash_loops.len(), 1);
        assert_eq!(
            t.crash_loops[0].protocols,
            vec![Protocol::Imap, Protocol::Pop3]
        );
        let d = diagnoses(&t, Run::VerifyUnstable);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].summary.contains("IMAP and POP3 go down"),
            "{}",
            d[0].summary
        );
        assert!(d[0].summary.contains("SMTP stayed up"), "{}", d[0].summary);
    }

    #[test]
    fn one_long_outage_is_not_a_loop() {
        let t = timeline(
            vec![
                service(
                    Protocol::Smtp,
                    250.0,
                    30_000.0,
                    &[(3000.0, 25_000.0)],
                    jitter,
                ),
                service(
                    Protocol::Imap,
                    250.0,
                    30_000.0,
                    &[(3000.0, 25_000.0)],
                    |i| jitter(i) + 100.0,
                ),
            ],
            30_000.0,
        );
        assert!(t.crash_loops.is_empty());
        assert_eq!(t.restarts(), 2, "each came back once");
        let d = diagnoses(&t, Run::Check);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(
            (d[0].code, d[0].severity),
            (Code::Restarted, Severity::Degraded)
        );
        assert!(
            d[0].summary.starts_with("SMTP and IMAP restarted"),
            "{}",
            d[0].summary
        );
        // verify that reached stability afterwards: the restart is history.
        assert!(diagnoses(&t, Run::VerifyStable).is_empty());
    }

    #[test]
    fn down_at_the_start_and_steady_up_says_nothing() {
        let t = timeline(
            vec![service(
                Protocol::Smtp,
                250.0,
                10_000.0,
                &[(0.0, 2000.0)],
                jitter,
            )],
            10_000.0,
        );
        assert_eq!(t.restarts(), 0);
        assert!(diagnoses(&t, Run::Check).is_empty());
        let t = timeline(
            vec![service(Protocol::Smtp, 250.0, 10_000.0, &[], jitter)],
            10_000.0,
        );
        assert_eq!(
            t.services[0].spans.len(),
            1,
            "jitter alone never splits a span"
        );
        assert!(diagnoses(&t, Run::Check).is_empty());
    }

    #[test]
    fn a_loop_before_stability_is_degraded_history() {
        let t = timeline(
            vec![service(Protocol::Smtp, 250.0, 27_000.0, &LOOP, jitter)],
            27_000.0,
        );
        let d = diagnoses(&t, Run::VerifyStable);
        assert_eq!(
            (d[0].code, d[0].severity),
            (Code::CrashLoop, Severity::Degraded)
        );
        assert!(
            d[0].summary.ends_with("before the server became stable"),
            "{}",
            d[0].summary
        );
    }
}
