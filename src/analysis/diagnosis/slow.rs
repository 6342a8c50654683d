//! Slow phases and slow delivery, against the configured thresholds.

use super::messages::describe;
use crate::core::phase::{Phase, Protocol};
use crate::core::units::format_ms;
use crate::model::diagnosis::{Code, Diagnosis, Severity, Thresholds};
use crate::model::report::Report;

pub(super) fn slow_diagnoses(report: &Report, t: &Thresholds, out: &mut Vec<Diagnosis>) {
    let mut evidence = Vec::new();
    let mut worst: Option<(Protocol, Phase)> = None;
    for m in &report.messages {
        let mib = m.encoded_bytes as f64 / (1u64 << 20) as f64;
        for (protocol, r) in std::iter::once((Protocol::Smtp, &m.smtp)).chain(m.retrievals()) {
            for (&phase, &ms) in &r.phases_ms {
                let limit = match phase {
                    Phase::Data | Phase::Fetch => t.phase_ms + t.transfer_ms_per_mib * mib,
                    _ => t.phase_ms,
                };
                if ms > limit {
                    evidence.push(format!(
                        "{} {} took {} for the {} (threshold {})",
                        protocol.label(),
                        phase.as_str(),
                        format_ms(ms),
                        describe(m),
                        format_ms(limit)
                    ));
                    worst.get_or_insert((protocol, phase));
                }
            }
            if let Some(ms) = r.delivery_ms.filter(|ms| *ms > t.delivery_ms) {
                evidence.push(format!(
                    "delivery of the {} took {} (threshold {})",
                    describe(m),
                    format_ms(ms),
                    format_ms(t.delivery_ms)
                ));
                worst.get_or_insert((protocol, Phase::Delivery));
            }
        }
    }
    if let Some((protocol, phase)) = worst {
        out.push(Diagnosis {
            code: Code::Slow,
            severity: Severity::Degraded,
            summary: format!("{} is slow in the {} phase", protocol.label(), phase.as_str()),
            cause: None,
            reason: None,
            protocol: Some(protocol),
            evidence,
            hints: vec!["check the server's load, DNS lookups it makes (greeting/EHLO delays), filters and disk I/O".into()],
        });
    }
}
