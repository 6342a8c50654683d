//! `--format json`: the report as stable JSON (documented in the README).

use crate::model::report::Report;

pub(crate) fn render(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(report).expect("a report always serializes");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
pub(crate) mod tests {
    use super::render;
    use crate::model::fixtures::{report as sample, snapshot};

    /// The sample with every optional section filled: size limit, SMTP server,
    /// cleanup, MX, statistics with a round log, stability, rate and baseline.
    fn full_sample() -> crate::model::report::Report {
        use crate::core::phase::Protocol;
        let mut r = sample();
        r.smtp_server = Some(crate::model::result::SmtpServerInfo {
            banner: "h ESMTP".into(),
            capabilities: vec!["SIZE 10240000".into(), "STARTTLS".into()],
            advertised_size: Some(10_240_000),
            ..Default::default()
        });
        r.size_limit = Some(crate::model::report::SizeLimit {
            largest_accepted_bytes: 1_000_000,
            smallest_refused_bytes: 1_100_000,
            estimate_bytes: 1_050_000,
            sends: 4,
            advertised_bytes: Some(10_240_000),
            advertised_disagrees: true,
        });
        r.cleanup = crate::model::report::Cleanup {
            deleted: 3,
            leftovers: vec!["mailprobe-1-0".into()],
            errors: vec![crate::core::error::ProbeError::new(
                crate::core::error::ErrorKind::Timeout,
                "no answer",
            )],
            ..Default::default()
        };
        r.mx = Some(crate::model::mx::MxReport {
            domain: "h".into(),
            source: crate::model::mx::MxSource::Mx,
            resolver: "127.0.0.1:53".into(),
            note: Some("a note".into()),
            dns_error: None,
            exchangers: vec![crate::model::mx::Exchanger {
                host: "mx.h".into(),
                preference: 10,
                addresses: vec!["127.0.0.1".parse().unwrap()],
                address: Some("127.0.0.1".parse().unwrap()),
                smtp: r.messages[0].smtp.clone(),
                banner: Some("mx.h ESMTP".into()),
            }],
            used: Some("mx.h".into()),
        });
        let mut stats = crate::analysis::stats::build(&r.messages, 2);
        stats.round_log = vec![crate::model::stats::RoundSummary {
            round: 1,
            state: crate::model::stats::RoundState::Down,
            verdict: crate::model::report::Verdict::Failing,
            duration_ms: 100.0,
            down: vec![Protocol::Imap],
            sampled_down: vec![Protocol::Imap],
            summary: "IMAP is down".into(),
        }];
        stats.stability = Some(crate::analysis::stability::analyze(
            &[crate::analysis::stability::RoundOutcome {
                state: crate::model::stats::RoundState::Down,
                down: vec![Protocol::Imap],
                sampled_down: vec![Protocol::Imap],
            }],
            3,
        ));
        stats.rate = Some(crate::model::stats::RateStats {
            intended_per_sec: 10.0,
            achieved_per_sec: 9.5,
            scheduled: 30,
            sent: 30,
            duration_ms: 3000.0,
            max_start_lag_ms: 12.0,
        });
        stats.baseline = Some(crate::model::stats::Comparison {
            baseline_started_at: "2026-11-24T00:00:00Z".into(),
            threshold_percent: 50.0,
            threshold_min_ms: 5.0,
            regressions: vec![crate::model::stats::Regression {
                protocol: Protocol::Smtp,
                phase: crate::model::stats::StatPhase::Phase(crate::core::phase::Phase::Data),
                size_bytes: 0,
                percentile: "p50".into(),
                baseline_ms: 10.0,
                current_ms: 66.0,
            }],
            newly_failing_sizes: vec![5 << 20],
        });
        r.stats = Some(stats);
        r.messages[1].round = Some(2);
        let tls = r.messages[0].imap.as_ref().and_then(|i| i.tls.clone());
        let refused = &mut r.messages[2].smtp;
        refused.reply = Some(crate::core::reply::Reply::smtp(552, "5.3.4 too big"));
        if let Some(e) = refused.error.as_mut() {
            e.reply = refused.reply.clone();
            e.tls = tls.clone().map(Box::new);
        }
        refused.tls = tls;
        refused.skipped = None;
        r.timeline = Some(timeline_sample());
        r
    }

    /// SMTP down once and back (a restart) while sampled every 250 ms.
    pub(crate) fn timeline_sample() -> crate::model::timeline::Timeline {
        use crate::model::timeline::{DownCause, Sample, ServiceTimeline, Timeline};
        let mut smtp =
            ServiceTimeline::new(crate::core::phase::Protocol::Smtp, "smtp://h:587".into());
        smtp.record(0.0, Sample::Up("220 h ESMTP".into()));
        smtp.record(
            250.0,
            Sample::Down(DownCause::Refused, "connection refused".into()),
        );
        smtp.record(500.0, Sample::Up("220 h ESMTP".into()));
        smtp.finish(750.0);
        let mut t = Timeline {
            started_at: "2026-11-25T00:00:00Z".into(),
            interval_ms: 250.0,
            duration_ms: 750.0,
            services: vec![smtp],
            crash_loops: Vec::new(),
        };
        t.crash_loops = vec![crate::model::timeline::CrashLoop {
            protocols: vec![crate::core::phase::Protocol::Smtp],
            shared: false,
            restarts: 1,
            median_up_ms: 250.0,
            median_down_ms: 250.0,
            first_restart_ms: 500.0,
            last_restart_ms: 500.0,
            began: vec![crate::model::timeline::CauseCount {
                cause: DownCause::Refused,
                count: 1,
            }],
        }];
        t
    }

    /// The JSON report is a contract: these bytes only ever gain fields.
    #[test]
    fn snapshot_matches() {
        let got = String::from_utf8(render(&sample())).unwrap();
        snapshot(
            "json.json",
            include_str!("../../tests/snapshots/json.json"),
            &got,
        );
        let got = String::from_utf8(render(&full_sample())).unwrap();
        snapshot(
            "json_full.json",
            include_str!("../../tests/snapshots/json_full.json"),
            &got,
        );
    }
}
