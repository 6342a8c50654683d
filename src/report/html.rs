//! `--format html`: one self-contained page (inline CSS and SVG, no scripts, no
//! external assets) with the verdict, the diagnoses, the evidence table and a chart
//! of latency against message size.
//!
//! The chart has one series per measurement, named by `data-protocol`:
//! `smtp` (SMTP total, messages the server accepted), `imap` and `pop3` (the
//! verifying FETCH / RETR, when it ran) and `delivery` (the first retrieval protocol
//! to see the message). Every point is a `<circle class="point">` carrying
//! `data-protocol`, `data-size` (attachment bytes, 0 = plain) and `data-ms` (the
//! report's value, written so that it parses back to the same number), so a test
//! can check the chart against the report. The x axis is logarithmic in size.
//! Everything taken from the report is HTML-escaped.

use std::fmt::Write;

use crate::core::phase::{Phase, Protocol};
use crate::core::units::{format_ms, format_size};
use crate::model::diagnosis::Severity;
use crate::model::report::{MessageReport, Report, Verdict};
use crate::model::result::ProtocolResult;

/// One series of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    SmtpTotal,
    ImapFetch,
    Pop3Fetch,
    Delivery,
}

impl Series {
    pub const ALL: [Series; 4] = [
        Series::SmtpTotal,
        Series::ImapFetch,
        Series::Pop3Fetch,
        Series::Delivery,
    ];
    /// The `data-protocol` value.
    pub fn key(self) -> &'static str {
        match self {
            Series::SmtpTotal => "smtp",
            Series::ImapFetch => "imap",
            Series::Pop3Fetch => "pop3",
            Series::Delivery => "delivery",
        }
    }
    pub(crate) fn label(self) -> &'static str {
        match self {
            Series::SmtpTotal => "SMTP total",
            Series::ImapFetch => "IMAP fetch",
            Series::Pop3Fetch => "POP3 fetch",
            Series::Delivery => "delivery",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Series::SmtpTotal => "#1f6fb4",
            Series::ImapFetch => "#2a9d3a",
            Series::Pop3Fetch => "#e0730c",
            Series::Delivery => "#8a4fbf",
        }
    }
    /// The value this series plots for one message, if any.
    pub(crate) fn value(self, m: &MessageReport) -> Option<f64> {
        let fetch =
            |r: Option<&ProtocolResult>| r.and_then(|r| r.phases_ms.get(&Phase::Fetch).copied());
        match self {
            Series::SmtpTotal => m.smtp.ok.then_some(m.smtp.total_ms),
            Series::ImapFetch => fetch(m.imap.as_ref()),
            Series::Pop3Fetch => fetch(m.pop3.as_ref()),
            Series::Delivery => m
                .retrievals()
                .filter_map(|(_, r)| r.delivery_ms)
                .reduce(f64::min),
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
    }
}

/// The chart's data: (series, size in bytes, ms), in message order per series.
pub fn chart_points(report: &Report) -> Vec<(Series, u64, f64)> {
    let mut points = Vec::new();
    for series in Series::ALL {
        for m in &report.messages {
            if let Some(ms) = series.value(m) {
                points.push((series, m.size_bytes, ms));
            }
        }
    }
    points
}

pub(crate) fn render(report: &Report) -> Vec<u8> {
    let mut o = String::new();
    let (verdict_class, verdict_word) = match report.verdict {
        Verdict::Healthy => ("healthy", "HEALTHY"),
        Verdict::Degraded => ("degraded", "DEGRADED"),
        Verdict::Failing => ("failing", "FAILING"),
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>mailprobe {verdict_word}: {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n",
        esc(&report.summary)
    );
    let _ = writeln!(
        o,
        "<header>\n<h1><span class=\"verdict {verdict_class}\" id=\"verdict\">{verdict_word}</span> {}</h1>",
        esc(&report.summary)
    );
    let mut endpoints = vec![esc(&report.target.smtp)];
    endpoints.extend(report.target.imap.iter().map(|s| esc(s)));
    endpoints.extend(report.target.pop3.iter().map(|s| esc(s)));
    let _ = writeln!(
        o,
        "<p class=\"meta\">server {} &middot; {} &rarr; {} &middot; started {} &middot; took {} &middot; mailprobe {}</p>",
        endpoints.join(", "),
        esc(&report.target.from),
        esc(&report.target.to),
        esc(&report.started_at),
        esc(&format_ms(report.duration_ms)),
        esc(&report.mailprobe_version)
    );
    if report.target.insecure {
        o.push_str("<p class=\"warning\">TLS certificates were NOT verified (--insecure).</p>\n");
    }
    o.push_str("</header>\n");

    diagnoses(&mut o, report);
    timeline_section(&mut o, report);
    evidence_table(&mut o, report);
    o.push_str("<section id=\"chart-section\">\n<h2>Latency by message size</h2>\n");
    chart(&mut o, report);
    o.push_str("</section>\n");
    details(&mut o, report);
    let _ = writeln!(
        o,
        "<footer>mailprobe {} &middot; verdict {}</footer>\n</body>\n</html>",
        esc(&report.mailprobe_version),
        report.verdict.as_str()
    );
    o.into_bytes()
}

fn diagnoses(o: &mut String, report: &Report) {
    o.push_str("<section id=\"diagnoses\">\n<h2>Diagnoses</h2>\n");
    if report.diagnoses.is_empty() {
        o.push_str("<p class=\"ok\">Nothing wrong was found.</p>\n");
    }
    for d in &report.diagnoses {
        let (class, word) = match d.severity {
            Severity::Failing => ("failing", "FAIL"),
            Severity::Degraded => ("degraded", "WARN"),
        };
        let code = match d.cause {
            Some(c) => format!("{}/{}", d.code.as_str(), c.as_str()),
            None => d.code.as_str().to_string(),
        };
        let _ = writeln!(
            o,
            "<article class=\"diagnosis {class}\" data-code=\"{}\">\n<h3><span class=\"badge {class}\">{word}</span> <code>{}</code> {}</h3>",
            esc(d.code.as_str()),
            esc(&code),
            esc(&d.summary)
        );
        if !d.evidence.is_empty() {
            o.push_str("<h4>Evidence</h4>\n<ul class=\"evidence\">\n");
            for e in &d.evidence {
                let _ = writeln!(o, "<li>{}</li>", esc(e));
            }
            o.push_str("</ul>\n");
        }
        if !d.hints.is_empty() {
            o.push_str("<h4>What to check</h4>\n<ul class=\"hints\">\n");
            for h in &d.hints {
                let _ = writeln!(o, "<li>{}</li>", esc(h));
            }
            o.push_str("</ul>\n");
        }
        o.push_str("</article>\n");
    }
    o.push_str("</section>\n");
}

/// The liveness timeline: one bar per service, its spans as segments as wide as
/// they lasted (green up, red down), each titled with its times and how it began.
fn timeline_section(o: &mut String, report: &Report) {
    let Some(t) = &report.timeline else {
        return;
    };
    let _ = writeln!(
        o,
        "<section id=\"timeline\">\n<h2>Service timeline</h2>\n<p class=\"meta\">each service sampled every {} over {} from {} (greeting only, no login)</p>\n<table class=\"timeline\" style=\"width:100%\">",
        esc(&format_ms(t.interval_ms)),
        esc(&format_ms(t.duration_ms)),
        esc(&t.started_at)
    );
    for service in &t.services {
        let _ = write!(
            o,
            "<tr data-protocol=\"{p}\"><th>{p}</th><td style=\"width:70%\"><div class=\"lane\" style=\"display:flex;height:16px;background:#eef1f4\">",
            p = esc(service.protocol.as_str())
        );
        for span in &service.spans {
            let (state, color) = match span.state {
                crate::model::timeline::Liveness::Up => ("up", "#2a9d3a"),
                crate::model::timeline::Liveness::Down => ("down", "#c62828"),
            };
            let mut title = format!(
                "{state} +{} to +{}",
                format_ms(span.start_ms),
                format_ms(span.end_ms)
            );
            if let Some(c) = span.began {
                title.push_str(&format!(", began: {}", c.as_str()));
            }
            if span.restart {
                title.push_str(", restart");
            }
            if let Some(d) = &span.detail {
                title.push_str(&format!(": {d}"));
            }
            let _ = write!(
                o,
                "<span class=\"{state}\" title=\"{}\" style=\"flex:{} 0 0;background:{color}\"></span>",
                esc(&title),
                number(span.duration_ms().max(0.001))
            );
        }
        let _ = writeln!(
            o,
            "</div></td><td>{}</td></tr>",
            esc(&crate::report::timeline::lane_note(service))
        );
    }
    o.push_str("</table>\n</section>\n");
}

fn evidence_table(o: &mut String, report: &Report) {
    o.push_str(
        "<section id=\"evidence\">\n<h2>Messages</h2>\n<table class=\"evidence\">\n<thead><tr>\
         <th>size</th><th>attachment</th><th>encoded</th><th>SMTP</th><th>SMTP time</th>\
         <th>delivery</th><th>IMAP</th><th>POP3</th></tr></thead>\n<tbody>\n",
    );
    for m in &report.messages {
        let smtp_class = if m.smtp.ok { "ok" } else { "fail" };
        let delivery = Series::Delivery
            .value(m)
            .map(format_ms)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "<tr data-size=\"{}\"><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"{smtp_class}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{}{}</tr>",
            m.size_bytes,
            esc(&format_size(m.size_bytes)),
            if m.attachment { "yes" } else { "no" },
            esc(&format_size(m.encoded_bytes)),
            smtp_cell(&m.smtp),
            esc(&format_ms(m.smtp.total_ms)),
            esc(&delivery),
            retrieval_cell(m.imap.as_ref()),
            retrieval_cell(m.pop3.as_ref()),
        );
    }
    o.push_str("</tbody>\n</table>\n</section>\n");
}

fn error_line(r: &ProtocolResult) -> String {
    match &r.error {
        Some(e) => format!("<div class=\"err\">{}</div>", esc(&e.to_string())),
        None => String::new(),
    }
}

fn smtp_cell(r: &ProtocolResult) -> String {
    if r.ok {
        return "accepted".into();
    }
    let head = match &r.error {
        Some(e) => {
            let what = match e.reply.as_ref().and_then(|r| r.code) {
                Some(code) => format!("{} {code}", e.kind.as_str()),
                None => e.kind.as_str().to_string(),
            };
            match e.phase {
                Some(p) => format!("{what} at {}", p.as_str()),
                None => what,
            }
        }
        None => "failed".into(),
    };
    format!("{}{}", esc(&head), error_line(r))
}

fn retrieval_cell(r: Option<&ProtocolResult>) -> String {
    let Some(r) = r else {
        return "<td class=\"none\">-</td>".into();
    };
    if let Some(why) = &r.skipped {
        return format!("<td class=\"skip\" title=\"{}\">skipped</td>", esc(why));
    }
    if r.ok {
        let fetch = r.phases_ms.get(&Phase::Fetch).copied().unwrap_or(0.0);
        return format!("<td class=\"ok\">verified {}</td>", esc(&format_ms(fetch)));
    }
    let head = if r.found == Some(true) {
        "ALTERED".to_string()
    } else {
        match &r.error {
            Some(e) => match e.phase {
                Some(p) => format!("{} at {}", e.kind.as_str(), p.as_str()),
                None => e.kind.as_str().to_string(),
            },
            None => "failed".into(),
        }
    };
    let problems: String = r
        .verification
        .iter()
        .flat_map(|v| v.problems.iter())
        .map(|p| format!("<div class=\"err\">{}</div>", esc(p)))
        .collect();
    format!(
        "<td class=\"fail\">{}{}{problems}</td>",
        esc(&head),
        error_line(r)
    )
}

/// Phase timings, TLS, MX, size limit and cleanup: the rest of the evidence.
fn details(o: &mut String, report: &Report) {
    o.push_str("<section id=\"details\">\n<h2>Details</h2>\n");
    if let Some(limit) = &report.size_limit {
        let _ = writeln!(
            o,
            "<p>Size limit found by bisection: about {} (largest accepted {}, smallest refused {}, {} extra messages){}.</p>",
            esc(&format_size(limit.estimate_bytes)),
            esc(&format_size(limit.largest_accepted_bytes)),
            esc(&format_size(limit.smallest_refused_bytes)),
            limit.sends,
            match limit.advertised_bytes {
                Some(a) => format!("; the server advertises SIZE {}", esc(&format_size(a))),
                None => String::new(),
            }
        );
    }
    o.push_str("<table class=\"phases\">\n<thead><tr><th>message</th><th>protocol</th><th>phases (ms)</th></tr></thead>\n<tbody>\n");
    for m in &report.messages {
        let label = format!(
            "{} {}",
            format_size(m.size_bytes),
            if m.attachment { "attachment" } else { "plain" }
        );
        let results = std::iter::once((Protocol::Smtp, &m.smtp)).chain(m.retrievals());
        for (protocol, r) in results {
            if r.phases_ms.is_empty() {
                continue;
            }
            let phases: Vec<String> = r
                .phases_ms
                .iter()
                .map(|(p, ms)| format!("{} {ms:.1}", p.as_str()))
                .collect();
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&label),
                protocol.label(),
                esc(&phases.join("  "))
            );
        }
    }
    o.push_str("</tbody>\n</table>\n");
    let tls = super::human::tls_lines(report);
    if !tls.is_empty() {
        let _ = writeln!(o, "<h3>TLS</h3>\n<pre>{}</pre>", esc(&tls.join("\n")));
    }
    if let Some(mx) = &report.mx {
        let lines = super::human::mx_lines(mx);
        let _ = writeln!(
            o,
            "<h3>Mail exchangers</h3>\n<pre>{}</pre>",
            esc(&lines.join("\n"))
        );
    }
    let _ = writeln!(
        o,
        "<h3>Cleanup</h3>\n<p>{} probe message(s) deleted.</p>",
        report.cleanup.deleted
    );
    if !report.cleanup.leftovers.is_empty() {
        o.push_str("<p class=\"warning\">Left in the mailbox (run <code>mailprobe cleanup</code> later):</p>\n<ul>\n");
        for id in &report.cleanup.leftovers {
            let _ = writeln!(o, "<li><code>{}</code></li>", esc(id));
        }
        o.push_str("</ul>\n");
    }
    for e in &report.cleanup.errors {
        let _ = writeln!(o, "<p class=\"err\">{}</p>", esc(&e.to_string()));
    }
    o.push_str("</section>\n");
}

// Chart geometry.
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 62.0;
/// Room between the axis and the first / last size.
const X_PAD: f64 = 24.0;

fn chart(o: &mut String, report: &Report) {
    let points = chart_points(report);
    if points.is_empty() {
        o.push_str("<p class=\"none\" id=\"chart-empty\">No timings to chart.</p>\n");
        return;
    }
    let mut sizes: Vec<u64> = points.iter().map(|p| p.1).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let log = |s: u64| ((s as f64) + 1.0).log10();
    let (lo, hi) = (log(sizes[0]), log(*sizes.last().unwrap_or(&0)));
    let one_size = sizes.len() == 1;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |s: u64| {
        if one_size {
            LEFT + plot_w / 2.0
        } else {
            LEFT + X_PAD + (log(s) - lo) / (hi - lo) * (plot_w - 2.0 * X_PAD)
        }
    };
    let max_ms = points.iter().map(|p| p.2).fold(0.0, f64::max);
    let step = nice_step(max_ms / 5.0);
    let top_ms = (max_ms / step).ceil().max(1.0) * step;
    let y_of = |ms: f64| TOP + plot_h - ms / top_ms * plot_h;

    let _ = writeln!(
        o,
        "<svg class=\"chart\" id=\"latency-chart\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" \
         aria-label=\"Latency in milliseconds against message size\">"
    );
    let _ = writeln!(
        o,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
    );
    // Horizontal grid and y labels.
    let mut tick = 0.0;
    for _ in 0..=20 {
        if tick > top_ms + step / 2.0 {
            break;
        }
        let y = y_of(tick);
        let _ = writeln!(
            o,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            number(tick)
        );
        tick += step;
    }
    // Size ticks; a label too close to the previous one drops to a second row.
    let mut last_x = f64::NEG_INFINITY;
    let mut row = 0;
    for &s in &sizes {
        let x = x_of(s);
        row = if x - last_x < 64.0 { 1 - row } else { 0 };
        last_x = x;
        let label = if s == 0 {
            "plain".to_string()
        } else {
            format_size(s)
        };
        let _ = writeln!(
            o,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 16.0 + 13.0 * row as f64,
            esc(&label)
        );
    }
    let _ = writeln!(
        o,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\"/>\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\"/>",
        TOP + plot_h,
        WIDTH - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    let _ = writeln!(
        o,
        "<text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">message size (attachment bytes, log scale)</text>\
         <text class=\"axis-label\" x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">time (ms)</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // Legend across the top.
    let mut lx = LEFT;
    for series in Series::ALL {
        let _ = writeln!(
            o,
            "<g class=\"legend\" data-protocol=\"{}\"><rect x=\"{lx:.1}\" y=\"12\" width=\"14\" height=\"14\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"24\">{}</text></g>",
            series.key(),
            series.color(),
            lx + 20.0,
            series.label()
        );
        lx += 150.0;
    }
    // Series: a polyline through the points in size order, then the points.
    for series in Series::ALL {
        let mut mine: Vec<(u64, f64)> = points
            .iter()
            .filter(|p| p.0 == series)
            .map(|p| (p.1, p.2))
            .collect();
        if mine.is_empty() {
            continue;
        }
        mine.sort_by_key(|p| p.0);
        let dash = if series == Series::Delivery {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let _ = writeln!(o, "<g class=\"series\" data-protocol=\"{}\">", series.key());
        if mine.len() > 1 {
            let coords: Vec<String> = mine
                .iter()
                .map(|&(s, ms)| format!("{:.1},{:.1}", x_of(s), y_of(ms)))
                .collect();
            let _ = writeln!(
                o,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                series.color(),
                coords.join(" ")
            );
        }
        for &(s, ms) in &mine {
            let _ = writeln!(
                o,
                "<circle class=\"point\" data-protocol=\"{}\" data-size=\"{s}\" data-ms=\"{ms}\" \
                 cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"{}\"><title>{}, {}: {}</title></circle>",
                series.key(),
                x_of(s),
                y_of(ms),
                series.color(),
                series.label(),
                esc(&format_size(s)),
                esc(&format_ms(ms))
            );
        }
        o.push_str("</g>\n");
    }
    o.push_str("</svg>\n");
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// A tick value without float noise: `0`, `0.5`, `250`.
fn number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() { "0".into() } else { s.into() }
}

/// Escape text for HTML element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#f6f7f9;line-height:1.4}
header,section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 20px;margin-bottom:16px}
h1{font-size:1.4em;margin:4px 0}h2{font-size:1.15em;margin:4px 0 10px}h3{font-size:1em;margin:4px 0}h4{font-size:.9em;margin:8px 0 2px;color:#555}
.meta{color:#555;font-size:.9em;margin:4px 0}
.verdict,.badge{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:700}
.healthy{background:#2a9d3a}.degraded{background:#d08a00}.failing{background:#c62828}
.badge{font-size:.8em;padding:1px 6px}
article.diagnosis{border-left:5px solid #c62828;background:#fff5f5;padding:6px 12px;margin:8px 0}
article.diagnosis.degraded{border-left-color:#d08a00;background:#fffaf0}
ul{margin:2px 0 6px;padding-left:22px}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.ok{color:#1b6e28}td.fail{color:#b71c1c;font-weight:600}td.skip,td.none{color:#888}
.err{font-weight:400;font-size:.85em;color:#7a1c1c}
.warning{color:#b71c1c;font-weight:600}p.ok{color:#1b6e28}
pre{background:#f3f4f6;padding:8px;overflow-x:auto}
svg.chart{max-width:100%;height:auto;font-size:12px}
svg .grid{stroke:#e3e6ea;stroke-width:1}svg .axis{stroke:#444;stroke-width:1}
svg .tick{fill:#444}svg .axis-label{fill:#222;font-size:12px}svg .legend text{fill:#222}
footer{color:#777;font-size:.8em}
";

#[cfg(test)]
mod tests {
    use super::{Series, chart_points, esc, render};

    use crate::core::phase::Phase;
    use crate::model::fixtures as sample;
    use crate::model::report::{Cleanup, Report};

    /// The exporters' sample, plus a 10 KiB message that gets through, markup in
    /// text from the server (the page must show it, not run it), `--insecure` and a
    /// leftover.
    fn sample() -> Report {
        let mut r = sample::report();
        let small = sample::message(
            10 << 10,
            sample::sent(&[(Phase::Connect, 10.0), (Phase::Data, 90.0)]),
            sample::fetched(&[(Phase::Fetch, 7.0)], 410.0, 30),
            sample::fetched(&[(Phase::Fetch, 6.5)], 900.0, 30),
        );
        r.messages.insert(1, small);
        r.summary.push_str(" & <b>bold</b>");
        r.target.insecure = true;
        for m in &mut r.messages {
            if let Some(e) = m.smtp.error.as_mut() {
                e.message.push_str(" <script>alert(1)</script>");
            }
            if let Some(v) = m.imap.as_mut().and_then(|i| i.verification.as_mut()) {
                v.problems
                    .push("the attachment was renamed to <evil>.exe".into());
            }
        }
        r.cleanup = Cleanup {
            deleted: 3,
            leftovers: vec!["mailprobe-1-<x>".into()],
            errors: Vec::new(),
            ..Default::default()
        };
        r
    }

    /// Compare with the reviewed snapshot; `MAILPROBE_BLESS=1` rewrites it.
    #[test]
    fn snapshot_matches() {
        let got = String::from_utf8(render(&sample())).unwrap();
        if std::env::var_os("MAILPROBE_BLESS").is_some() {
            let path = format!("{}/tests/snapshots/html.html", env!("CARGO_MANIFEST_DIR"));
            std::fs::write(path, &got).unwrap();
            return;
        }
        assert_eq!(
            got,
            include_str!("../../tests/snapshots/html.html"),
            "snapshot tests/snapshots/html.html differs"
        );
    }

    #[test]
    fn everything_from_the_report_is_escaped() {
        let out = String::from_utf8(render(&sample())).unwrap();
        for raw in ["<script>", "<b>bold", "<too big>", "<evil>", "<&>", "-<x>"] {
            assert!(!out.contains(raw), "unescaped {raw:?}");
        }
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(out.contains("&amp; &lt;b&gt;bold&lt;/b&gt;"));
        assert_eq!(esc("a\"b'c"), "a&quot;b&#39;c");
        // Self-contained: no scripts, no external references.
        for banned in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!out.contains(banned), "{banned:?} found");
        }
    }

    #[test]
    fn chart_points_match_the_report() {
        let report = sample();
        let out = String::from_utf8(render(&report)).unwrap();
        let points = chart_points(&report);
        // smtp: 3 accepted; imap fetch: 3 (plain, 10 KiB, altered 1 MiB); pop3: only
        // 10 KiB has a fetch phase; delivery: 3.
        let count = |s: Series| points.iter().filter(|p| p.0 == s).count();
        assert_eq!(count(Series::SmtpTotal), 3);
        assert_eq!(count(Series::ImapFetch), 3);
        assert_eq!(count(Series::Pop3Fetch), 1);
        assert_eq!(count(Series::Delivery), 3);
        assert_eq!(out.matches("<circle class=\"point\"").count(), points.len());
        for (series, size, ms) in &points {
            let needle = format!(
                "data-protocol=\"{}\" data-size=\"{size}\" data-ms=\"{ms}\"",
                series.key()
            );
            assert!(out.contains(&needle), "missing point {needle}");
        }
        // Delivery is the first protocol to see the message.
        assert!(out.contains("data-protocol=\"delivery\" data-size=\"0\" data-ms=\"340\""));
        assert!(out.contains("data-protocol=\"smtp\" data-size=\"0\" data-ms=\"81.5\""));
    }

    #[test]
    fn the_timeline_is_drawn_one_bar_per_service() {
        let mut r = sample();
        assert!(
            !String::from_utf8(render(&r))
                .unwrap()
                .contains("id=\"timeline\"")
        );
        let mut t = crate::report::json::tests::timeline_sample();
        t.services[0].spans[1].detail = Some("<script>".into());
        r.timeline = Some(t);
        let out = String::from_utf8(render(&r)).unwrap();
        assert!(out.contains("<section id=\"timeline\">"), "{out}");
        assert!(out.contains("<tr data-protocol=\"smtp\">"), "{out}");
        assert_eq!(out.matches("<span class=\"up\"").count(), 2);
        assert_eq!(out.matches("<span class=\"down\"").count(), 1);
        assert!(out.contains("began: refused"), "{out}");
        assert!(out.contains("&lt;script&gt;") && !out.contains("<script>"));
        assert!(out.contains("1 restart(s), down 1 time(s)"), "{out}");
    }

    #[test]
    fn empty_report_renders_without_a_chart() {
        let mut r = sample();
        r.messages.clear();
        r.diagnoses.clear();
        let out = String::from_utf8(render(&r)).unwrap();
        assert!(out.contains("No timings to chart."));
        assert!(out.contains("Nothing wrong was found."));
        assert!(!out.contains("<svg"));
    }
}
