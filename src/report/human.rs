//! The human report: diagnoses first in plain words, then the evidence table.

use std::fmt::Write;

use crate::core::error::ErrorKind;
use crate::core::phase::{Phase, Phases};
use crate::core::tls_info::TlsInfo;
use crate::core::units::{format_ms, format_size};
use crate::model::diagnosis::Severity;
use crate::model::mx::{MxReport, MxSource};
use crate::model::report::{MessageReport, Report, Verdict};
use crate::model::result::ProtocolResult;
use crate::model::stats::{LatencyStats, StatPhase, Stats};

pub(crate) fn render(report: &Report) -> Vec<u8> {
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
    for note in report.smtp_server.iter().flat_map(|s| &s.notes) {
        let _ = writeln!(o, "  note: {note}");
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
                Severity::Failing => "FAIL",
                Severity::Degraded => "WARN",
            },
            d.code.as_str(),
            cause,
            one_line(&d.summary)
        );
        // A blank evidence or hint line would print an empty bullet.
        for e in d.evidence.iter().filter(|e| !e.trim().is_empty()) {
            let _ = writeln!(o, "    - {}", one_line(e));
        }
        for h in d.hints.iter().filter(|h| !h.trim().is_empty()) {
            let _ = writeln!(o, "    check: {}", one_line(h));
        }
    }
    timeline_lanes(&mut o, report);

    if let Some(mx) = &report.mx {
        let _ = writeln!(o);
        for line in mx_lines(mx) {
            let _ = writeln!(o, "{line}");
        }
    }
    let tls_lines = tls_lines(report);
    if !tls_lines.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "tls:");
        for line in tls_lines {
            let _ = writeln!(o, "  {line}");
        }
    }

    let sessions = session_lines(report);
    if !sessions.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "sessions:");
        for line in sessions {
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
    // One IMAP or POP3 session usually serves every rung: its phases (connect,
    // tls, login, select ...) are shown where the session starts, once, and each
    // rung shows only its own message phases.
    let mut last_session: [Option<Phases>; 2] = [None, None];
    for m in &report.messages {
        let label = format!(
            "{} {}",
            format_size(m.size_bytes),
            if m.attachment { "attachment" } else { "plain" }
        );
        let _ = writeln!(o, "  {label}");
        if !m.smtp.phases_ms.is_empty() {
            let _ = writeln!(o, "    {:<5} {}", "smtp", phases_line(&m.smtp.phases_ms));
        }
        for (i, (name, r)) in [("imap", m.imap.as_ref()), ("pop3", m.pop3.as_ref())]
            .into_iter()
            .enumerate()
        {
            let Some(r) = r else { continue };
            let (session, message): (Phases, Phases) = r
                .phases_ms
                .iter()
                .map(|(p, ms)| (*p, *ms))
                .partition(|(p, _)| !is_message_phase(*p));
            if !session.is_empty() && last_session[i].as_ref() != Some(&session) {
                let _ = writeln!(o, "    {name:<5} session: {}", phases_line(&session));
                last_session[i] = Some(session);
            }
            if !message.is_empty() {
                let _ = writeln!(o, "    {name:<5} {}", phases_line(&message));
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
        o.push_str(&stats_section(stats));
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "verdict: {} in {}: {}",
        report.verdict.as_str(),
        format_ms(report.duration_ms),
        one_line(&report.summary)
    );
    o.into_bytes()
}

/// Phases that belong to one message (found, fetched, waited for, deleted), as
/// opposed to those of the session that served it.
fn is_message_phase(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Search | Phase::Stat | Phase::Fetch | Phase::Delivery | Phase::Delete
    )
}

/// Text on one line: runs of whitespace (line breaks included) become one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table cell for a failure: what went wrong, in a word or two.
fn failure_word(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Tls => "tls error",
        ErrorKind::Network => "network error",
        ErrorKind::Auth => "login failed",
        ErrorKind::Protocol => "protocol error",
        ErrorKind::NotDelivered => "not delivered",
        ErrorKind::Altered => "ALTERED",
        ErrorKind::Config => "config error",
        // timeout, refused, reset, closed, rejected, unsupported, and kinds added later.
        other => other.as_str(),
    }
}

/// The liveness timeline under the diagnoses: one lane per service.
fn timeline_lanes(o: &mut String, report: &Report) {
    if let Some(timeline) = &report.timeline {
        let _ = writeln!(o);
        for line in crate::report::timeline::human_section(timeline) {
            let _ = writeln!(o, "{line}");
        }
    }
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
        return format!("accepted {}", format_ms(r.total_ms));
    }
    match &r.error {
        Some(e) => match e.reply.as_ref().and_then(|reply| reply.code) {
            Some(code) => format!("{} {code}", failure_word(e.kind)),
            None => failure_word(e.kind).into(),
        },
        None => "failed".into(),
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
            format_ms(r.phases_ms.get(&Phase::Fetch).copied().unwrap_or(0.0))
        ),
        Some(r) if r.found == Some(true) => "ALTERED".into(),
        Some(r) => match &r.error {
            Some(e) => failure_word(e.kind).into(),
            None => "failed".into(),
        },
    }
}

/// How often each retrieval protocol connected and logged in, and how it watched.
fn session_lines(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for (protocol, c) in &report.sessions {
        if *protocol == crate::core::phase::Protocol::Smtp {
            continue;
        }
        let mut line = format!(
            "{:<5} {} session(s), {} login(s)",
            protocol.as_str(),
            c.sessions,
            c.logins
        );
        if c.idle_commands > 0 {
            line.push_str(&format!(", {} IDLE", c.idle_commands));
        }
        if c.status_polls > 0 {
            line.push_str(&format!(", {} STATUS poll(s)", c.status_polls));
        }
        if let Some(d) = c.login_delay_s {
            line.push_str(&format!(", LOGIN-DELAY {d} s"));
        }
        lines.push(line);
        lines.extend(c.notes.iter().map(|n| format!("      {n}")));
    }
    lines
}

/// One line per protocol that used TLS: version, cipher, subject, days to expiry.
pub(crate) fn tls_lines(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let pick = |f: &dyn Fn(&MessageReport) -> Option<&TlsInfo>| {
        report.messages.iter().find_map(f).cloned()
    };
    let per_protocol = [
        ("smtp", pick(&|m| m.smtp.tls.as_ref())),
        (
            "imap",
            pick(&|m| m.imap.as_ref().and_then(|r| r.tls.as_ref())),
        ),
        (
            "pop3",
            pick(&|m| m.pop3.as_ref().and_then(|r| r.tls.as_ref())),
        ),
    ];
    for (name, tls) in per_protocol {
        if let Some(tls) = tls {
            out.push(format!("{name:<5} {}", describe_tls(&tls)));
        }
    }
    out
}

/// `TLSv1.3 TLS13_AES_256_GCM_SHA384, CN=mail.example.com, expires in 80 days, verified`.
pub(crate) fn describe_tls(tls: &TlsInfo) -> String {
    // Without a version the handshake never completed: say so instead of
    // printing empty version and cipher fields.
    let mut line = if tls.version.is_empty() {
        "handshake failed, no TLS session".to_string()
    } else {
        format!("{} {}", tls.version, tls.cipher).trim().to_string()
    };
    if let Some(c) = &tls.certificate {
        let shown = if tls.version.is_empty() {
            "the server showed "
        } else {
            ""
        };
        line.push_str(&format!(", {shown}{}", c.subject));
        if c.days_to_expiry < 0 {
            line.push_str(&format!(", EXPIRED {} days ago", -c.days_to_expiry));
        } else {
            line.push_str(&format!(", expires in {} days", c.days_to_expiry));
        }
    }
    match (&tls.verify_error, tls.verified) {
        (_, true) => line.push_str(", verified"),
        (Some(why), false) if !why.trim().is_empty() => {
            line.push_str(&format!(", NOT verified: {}", one_line(why)))
        }
        _ => line.push_str(", NOT verified"),
    }
    if !tls.name_matches {
        line.push_str(", name does not match");
    }
    line
}

/// The MX section of the human report.
pub(crate) fn mx_lines(mx: &MxReport) -> Vec<String> {
    let mut out = vec![format!(
        "mail exchangers of {} (DNS: {}):",
        mx.domain, mx.resolver
    )];
    if let Some(note) = &mx.note {
        out.push(format!("  note: {note}"));
    }
    if let Some(err) = &mx.dns_error {
        out.push(format!("  DNS: {err}"));
    }
    if mx.source == MxSource::NullMx {
        out.push("  null MX (0 .): the domain accepts no mail".into());
    }
    for e in &mx.exchangers {
        let addresses = e
            .addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let status = if e.smtp.ok {
            format!("ok, recipient accepted in {}", format_ms(e.smtp.total_ms))
        } else {
            match &e.smtp.error {
                Some(err) => format!("FAILED: {err}"),
                None => "FAILED".into(),
            }
        };
        let used = if mx.used.as_deref() == Some(e.host.as_str()) {
            "  (the ladder went through this one)"
        } else {
            ""
        };
        out.push(format!(
            "  {:>5} {} [{addresses}] {status}{used}",
            e.preference, e.host
        ));
        if let Some(tls) = &e.smtp.tls {
            out.push(format!("        tls {}", describe_tls(tls)));
        }
    }
    out
}

/// The human report's statistics section.
pub(crate) fn stats_section(stats: &Stats) -> String {
    let mut o = String::new();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "latency statistics ({} messages in {} round(s); ms):",
        stats.messages, stats.rounds
    );
    let _ = writeln!(
        o,
        "  {:<5} {:<22} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "proto", "phase", "size", "count", "min", "p50", "p90", "p99", "max"
    );
    let mut rows: Vec<&LatencyStats> = stats.latency.iter().collect();
    rows.sort_by(|a, b| {
        (
            a.protocol,
            a.size_bytes,
            phase_rank(a.phase),
            a.phase.as_str(),
        )
            .cmp(&(
                b.protocol,
                b.size_bytes,
                phase_rank(b.phase),
                b.phase.as_str(),
            ))
    });
    for l in rows {
        let _ = writeln!(
            o,
            "  {:<5} {:<22} {:>9} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            l.protocol.as_str(),
            l.phase,
            format_size(l.size_bytes),
            l.count,
            l.min_ms,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms
        );
    }
    if stats.failures.is_empty() {
        let _ = writeln!(o, "  failures: none");
    } else {
        let _ = writeln!(o, "  failures:");
        for f in &stats.failures {
            let _ = writeln!(
                o,
                "    {:<5} {:>9} {:<14} {}",
                f.protocol.as_str(),
                format_size(f.size_bytes),
                f.kind.as_str(),
                f.count
            );
        }
    }
    if let Some(r) = &stats.rate {
        let _ = writeln!(
            o,
            "  rate: intended {:.2}/s, achieved {:.2}/s ({} of {} scheduled sent in {:.1} s; worst start lag {:.1} ms)",
            r.intended_per_sec,
            r.achieved_per_sec,
            r.sent,
            r.scheduled,
            r.duration_ms / 1000.0,
            r.max_start_lag_ms
        );
    }
    if let Some(s) = &stats.stability {
        let _ = writeln!(o, "  stability: {}", s.describe());
    }
    if let Some(c) = &stats.baseline {
        let _ = writeln!(
            o,
            "  baseline {}: {} regression(s)",
            c.baseline_started_at,
            c.regressions.len() + c.newly_failing_sizes.len()
        );
    }
    o
}

/// `total` and `delivery` after the protocol phases.
fn phase_rank(phase: StatPhase) -> u8 {
    match phase {
        StatPhase::IntendedToAccepted => 0,
        StatPhase::Phase(_) => 1,
        StatPhase::Total => 2,
        StatPhase::Delivery => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::{render, stats_section};
    use crate::core::error::ErrorKind;
    use crate::core::phase::Protocol;
    use crate::model::fixtures::{self, snapshot};
    use crate::model::stats::{FailureCount, Stats};

    #[test]
    fn stats_section_names_failures_by_kind_and_size() {
        let stats = Stats {
            rounds: 3,
            messages: 3,
            failures: vec![FailureCount {
                protocol: Protocol::Smtp,
                size_bytes: 10240,
                kind: ErrorKind::Refused,
                count: 2,
            }],
            ..Default::default()
        };
        let text = stats_section(&stats);
        assert!(text.contains("refused"), "{text}");
        assert!(text.contains("10 KiB") || text.contains("10KiB"), "{text}");
    }

    fn text(report: &crate::model::report::Report) -> String {
        String::from_utf8(render(report)).unwrap()
    }

    /// What every human report must hold to: one summary line at the end with no
    /// full stop inside brackets, no empty bullets, no doubled words in the table.
    fn assert_clean(text: &str) {
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("verdict: "), "{last}");
        assert!(!last.contains(".)"), "{last}");
        for line in text.lines() {
            assert_ne!(line.trim(), "-", "empty bullet in\n{text}");
            assert!(!line.contains("tls tls"), "{line}");
            assert!(!line.contains("  ,"), "empty field: {line}");
        }
    }

    #[test]
    fn healthy_run_snapshot() {
        let got = text(&fixtures::healthy_report());
        assert_clean(&got);
        snapshot(
            "human_healthy.txt",
            include_str!("../../tests/snapshots/human_healthy.txt"),
            &got,
        );
        // The IMAP session's connect and login appear once, not once per rung.
        assert_eq!(got.matches("imap  session:").count(), 1, "{got}");
        assert_eq!(got.matches("imap  search").count(), 3, "{got}");
    }

    /// Size limit (5 MiB refused) and not delivered (1 MiB never reaches POP3).
    #[test]
    fn size_limit_and_not_delivered_snapshot() {
        let mut report = fixtures::report();
        // As the SMTP client records it: the refusal carries the server's reply.
        let refused = report.messages[2].smtp.error.as_mut().unwrap();
        refused.reply = Some(crate::core::reply::Reply {
            code: Some(552),
            enhanced: None,
            text: "5.3.4 Message size exceeds fixed limit".into(),
        });
        let got = text(&report);
        assert_clean(&got);
        snapshot(
            "human_size_limit.txt",
            include_str!("../../tests/snapshots/human_size_limit.txt"),
            &got,
        );
        assert!(got.contains("rejected 552"), "{got}");
        assert!(got.contains("not delivered"), "{got}");
    }

    #[test]
    fn tls_failure_snapshot() {
        let got = text(&fixtures::tls_failure_report());
        assert_clean(&got);
        snapshot(
            "human_tls_failure.txt",
            include_str!("../../tests/snapshots/human_tls_failure.txt"),
            &got,
        );
        assert!(got.contains("tls error"), "{got}");
        assert!(got.contains("handshake failed"), "{got}");
    }

    #[test]
    fn shared_outage_snapshot() {
        let got = text(&fixtures::outage_report());
        assert_clean(&got);
        snapshot(
            "human_outage.txt",
            include_str!("../../tests/snapshots/human_outage.txt"),
            &got,
        );
        assert!(got.contains("refused"), "{got}");
    }

    #[test]
    fn the_checks_notice_a_bad_report() {
        let bad = "x\n    -  \nverdict: healthy (All fine. in 3 ms)\n";
        assert!(std::panic::catch_unwind(|| assert_clean(bad)).is_err());
    }
}
