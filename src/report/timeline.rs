//! The liveness timeline drawn as lanes, one per service (`smtp  ████▁▁▁████`),
//! for the human report; the HTML report draws the same spans as bars.

use crate::core::units::format_ms;
use crate::model::timeline::{Liveness, ServiceTimeline, Timeline};

/// Columns of a lane.
pub const LANE_WIDTH: usize = 60;

/// One character per column: `█` up the whole column, `▁` down the whole
/// column, `▄` both, ` ` not sampled yet.
pub fn lane(service: &ServiceTimeline, duration_ms: f64, width: usize) -> String {
    let width = width.max(1);
    let step = duration_ms.max(1.0) / width as f64;
    (0..width)
        .map(|i| {
            let (from, to) = (i as f64 * step, (i + 1) as f64 * step);
            let mut up = false;
            let mut down = false;
            for s in &service.spans {
                // A span covers [start, end); a one-sample span at the very end
                // still marks its column.
                let end = if s.end_ms > s.start_ms {
                    s.end_ms
                } else {
                    s.start_ms + 1e-6
                };
                if s.start_ms < to && end > from {
                    match s.state {
                        Liveness::Up => up = true,
                        Liveness::Down => down = true,
                    }
                }
            }
            match (up, down) {
                (true, false) => '█',
                (false, true) => '▁',
                (true, true) => '▄',
                (false, false) => ' ',
            }
        })
        .collect()
}

/// What a service's lane says in words: restarts, downs, how they began.
pub fn lane_note(service: &ServiceTimeline) -> String {
    let downs = service.down_spans().count();
    if downs == 0 && service.restarts == 0 {
        return "up".into();
    }
    let mut began: Vec<&str> = service
        .down_spans()
        .filter_map(|s| s.began.map(|c| c.as_str()))
        .collect();
    began.sort();
    began.dedup();
    format!(
        "{} restart(s), down {} time(s) for {}{}",
        service.restarts,
        downs,
        format_ms(service.down_ms()),
        if began.is_empty() {
            String::new()
        } else {
            format!(" ({})", began.join(", "))
        }
    )
}

/// The human report's timeline section: a heading and one lane per service.
pub fn human_section(timeline: &Timeline) -> Vec<String> {
    let mut out = vec![format!(
        "timeline (each service sampled every {} over {}; █ up, ▁ down, ▄ both):",
        format_ms(timeline.interval_ms),
        format_ms(timeline.duration_ms)
    )];
    for s in &timeline.services {
        out.push(format!(
            "  {:<5} {}  {}",
            s.protocol.as_str(),
            lane(s, timeline.duration_ms, LANE_WIDTH),
            lane_note(s)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::phase::Protocol;
    use crate::model::timeline::{DownCause, Sample};

    #[test]
    fn lanes_show_up_down_and_both() {
        let mut s = ServiceTimeline::new(Protocol::Smtp, "smtp://h:25".into());
        for i in 0..40 {
            let t = i as f64 * 250.0;
            let sample = if (10..20).contains(&i) {
                Sample::Down(DownCause::Refused, "refused".into())
            } else {
                Sample::Up("220 h".into())
            };
            s.record(t, sample);
        }
        s.finish(10_000.0);
        assert_eq!(lane(&s, 10_000.0, 8), "██▁▁████");
        assert_eq!(lane(&s, 10_000.0, 3), "▄▄█");
        assert_eq!(
            lane_note(&s),
            "1 restart(s), down 1 time(s) for 2.5 s (refused)"
        );
        let t = Timeline {
            started_at: "t".into(),
            interval_ms: 250.0,
            duration_ms: 10_000.0,
            services: vec![s],
            crash_loops: vec![],
        };
        let lines = human_section(&t);
        assert!(lines[1].starts_with("  smtp  ████"), "{lines:?}");
        assert_eq!(
            lines[1].chars().filter(|c| *c == '▁').count(),
            15,
            "{lines:?}"
        );
    }
}
