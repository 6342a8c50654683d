//! The human report: diagnoses first in plain words, then the evidence table.

use std::fmt::Write;

use super::{MessageReport, Report, Verdict};
use crate::phase::Phases;
use crate::prober::ProtocolResult;
use crate::units::{format_ms, format_size};

pub fn render(report: &Report) -> Vec<u8> {
    let mut o = String::new();
    let verdict = match report.verdict {
        Verdict::Healthy => "HEALTHY",
        Verdict::Degraded => "DEGRADED",
        Verdict::Failing => "FAILING",
    };
    let _ = writeln!(o, "mailprobe {verdict}: {}", report.summary);
    let _ = writeln!(
        o,
        "  server: {}{}{}",
        report.target.smtp,
        report
            .target
            .imap
            .as_ref()
            .map(|s| format!(", {s}"))
            .unwrap_or_default(),
        report
            .target
            .pop3
            .as_ref()
            .map(|s| format!(", {s}"))
            .unwrap_or_default()
    );
    if report.target.insecure {
        let _ = writeln!(
            o,
            "  WARNING: TLS certificates were NOT verified (--insecure)"
        );
    }
    for d in &report.diagnoses {
        let _ = writeln!(o);
        let cause = d
            .cause
            .map(|c| format!("/{}", c.as_str()))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "[{}] {}{}: {}",
            match d.severity {
                crate::diagnosis::Severity::Failing => "FAIL",
                crate::diagnosis::Severity::Degraded => "WARN",
            },
            d.code.as_str(),
            cause,
            d.summary
        );
        for e in &d.evidence {
            let _ = writeln!(o, "    - {e}");
        }
        for h in &d.hints {
            let _ = writeln!(o, "    check: {h}");
        }
    }

    if let Some(mx) = &report.mx {
        let _ = writeln!(o);
        for line in crate::mx::human_lines(mx) {
            let _ = writeln!(o, "{line}");
        }
    }
    let tls_lines = crate::tls_inspect::human_lines(report);
    if !tls_lines.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "tls:");
        for line in tls_lines {
            let _ = writeln!(o, "  {line}");
        }
    }

    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<12} {:<7} {:<22} {:>10} {:<16} {:<16}",
        "size", "attach", "smtp", "delivery", "imap", "pop3"
    );
    for m in &report.messages {
        let _ = writeln!(
            o,
            "{:<12} {:<7} {:<22} {:>10} {:<16} {:<16}",
            format_size(m.size_bytes),
            if m.attachment { "yes" } else { "no" },
            smtp_cell(&m.smtp),
            delivery_cell(m),
            retrieval_cell(m.imap.as_ref()),
            retrieval_cell(m.pop3.as_ref()),
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "phase timings (ms):");
    for m in &report.messages {
        let label = format!(
            "{} {}",
            format_size(m.size_bytes),
            if m.attachment { "attachment" } else { "plain" }
        );
        let _ = writeln!(o, "  {label}");
        for (name, r) in [
            ("smtp", Some(&m.smtp)),
            ("imap", m.imap.as_ref()),
            ("pop3", m.pop3.as_ref()),
        ] {
            if let Some(r) = r.filter(|r| !r.phases_ms.is_empty()) {
                let _ = writeln!(o, "    {name:<5} {}", phases_line(&r.phases_ms));
            }
        }
        for (name, r) in [
            ("smtp", Some(&m.smtp)),
            ("imap", m.imap.as_ref()),
            ("pop3", m.pop3.as_ref()),
        ] {
            if let Some(err) = r.and_then(|r| r.error.as_ref()) {
                let _ = writeln!(o, "    {name:<5} error: {err}");
            }
        }
    }
    if !report.cleanup.leftovers.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "left in the mailbox (run `mailprobe cleanup` later):");
        for id in &report.cleanup.leftovers {
            let _ = writeln!(o, "  {id}");
        }
    }
    if let Some(stats) = &report.stats {
        o.push_str(&crate::stats::render_human(stats));
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "verdict: {} ({} in {})",
        report.verdict.as_str(),
        report.summary,
        format_ms(report.duration_ms)
    );
    o.into_bytes()
}

fn phases_line(phases: &Phases) -> String {
    phases
        .iter()
        .map(|(p, ms)| format!("{} {:.1}", p.as_str(), ms))
        .collect::<Vec<_>>()
        .join("  ")
}

fn smtp_cell(r: &ProtocolResult) -> String {
    if r.ok {
        format!("accepted {}", format_ms(r.total_ms))
    } else {
        match &r.error {
            Some(e) => match &e.reply {
                Some(reply) => format!(
                    "{} {}",
                    e.phase.map_or("", |p| p.as_str()),
                    reply
                        .code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| e.kind.as_str().into())
                ),
                None => format!("{} {}", e.phase.map_or("", |p| p.as_str()), e.kind.as_str()),
            },
            None => "failed".into(),
        }
    }
}

fn delivery_cell(m: &MessageReport) -> String {
    m.retrievals()
        .filter_map(|(_, r)| r.delivery_ms)
        .reduce(f64::min)
        .map(format_ms)
        .unwrap_or_else(|| "-".into())
}

fn retrieval_cell(r: Option<&ProtocolResult>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r.skipped.is_some() => "skipped".into(),
        Some(r) if r.ok => format!(
            "verified {}",
            format_ms(
                r.phases_ms
                    .get(&crate::phase::Phase::Fetch)
                    .copied()
                    .unwrap_or(0.0)
            )
        ),
        Some(r) if r.found == Some(true) => "ALTERED".into(),
        Some(r) => match &r.error {
            Some(e) => format!("{} {}", e.phase.map_or("", |p| p.as_str()), e.kind.as_str()),
            None => "failed".into(),
        },
    }
}
