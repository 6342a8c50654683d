//! The check's own time limit (`--timeout`) ran out: which phase used up the time,
//! what was left unchecked, and how the limit relates to the monitoring system's.

use crate::core::units::format_ms;
use crate::model::diagnosis::{Code, Diagnosis, Severity};
use crate::model::report::Report;

pub(super) fn time_limit_diagnosis(report: &Report) -> Option<Diagnosis> {
    let limit = report.time_limit.as_ref().filter(|t| t.reached)?;
    let timeout = format_ms(limit.timeout_ms);
    let during = match (limit.protocol, limit.phase) {
        (Some(p), Some(ph)) => format!("{} {}", p.label(), ph.as_str()),
        (Some(p), None) => p.label().to_string(),
        _ => "the check".to_string(),
    };
    let unchecked = report
        .messages
        .iter()
        .filter(|m| {
            m.retrievals()
                .chain(std::iter::once((
                    crate::core::phase::Protocol::Smtp,
                    &m.smtp,
                )))
                .any(|(_, r)| r.error.as_ref().is_some_and(|e| e.is_time_limit()))
        })
        .count();
    let mut evidence = vec![format!("time limit {timeout}, used up during {during}")];
    if unchecked > 0 {
        evidence.push(format!(
            "{unchecked} of {} message(s) not fully checked before the limit",
            report.messages.len()
        ));
    }
    Some(Diagnosis {
        code: Code::TimeLimit,
        severity: Severity::Failing,
        summary: format!("The check's time limit ({timeout}) ran out during {during}"),
        cause: None,
        reason: None,
        protocol: limit.protocol,
        evidence,
        hints: vec![
            format!("the server did not finish {during} in time: check its load and the phase's log"),
            "if the ladder needs longer, raise --timeout, and keep it below the monitoring system's own check timeout (Nagios/Icinga: 60 s)".into(),
        ],
    })
}
