//! The report: everything a check found, with its verdict and diagnoses. Exporters
//! turn a finished report into bytes; [`write_outputs`] is the one place that writes.

pub mod html;
pub mod human;
pub mod json;
pub mod jsonl;
pub mod junit;
pub mod nagios;
pub mod prometheus;
#[cfg(test)]
mod sample;

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::diagnosis::Diagnosis;
use crate::error::ProbeError;
use crate::prober::ProtocolResult;
use crate::prober::smtp::SmtpServerInfo;

/// The overall outcome; its order is its severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Degraded,
    Failing,
}

impl Verdict {
    /// Monitoring-plugins exit code: 0 healthy, 1 degraded, 2 failing (3 is "could not run").
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Healthy => 0,
            Verdict::Degraded => 1,
            Verdict::Failing => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Failing => "failing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub smtp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pop3: Option<String>,
    pub from: String,
    pub to: String,
    pub sizes: Vec<u64>,
    /// TLS certificate verification was turned off by the user.
    pub insecure: bool,
}

impl Target {
    pub fn from_settings(s: &Settings) -> Self {
        Target {
            smtp: s.smtp.to_string(),
            imap: s.imap.as_ref().map(ToString::to_string),
            pop3: s.pop3.as_ref().map(ToString::to_string),
            from: s.from.clone(),
            to: s.to.clone(),
            sizes: s.sizes.clone(),
            insecure: s.tls.insecure,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageReport {
    pub probe_id: String,
    /// Attachment size in bytes; 0 is the plain text message.
    pub size_bytes: u64,
    pub attachment: bool,
    /// Size of the whole encoded message as sent.
    pub encoded_bytes: u64,
    pub smtp: ProtocolResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imap: Option<ProtocolResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pop3: Option<ProtocolResult>,
    /// The round this message belongs to (`--rounds`, `verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
}

impl MessageReport {
    pub fn retrievals(&self) -> impl Iterator<Item = (crate::phase::Protocol, &ProtocolResult)> {
        [
            self.imap
                .as_ref()
                .map(|r| (crate::phase::Protocol::Imap, r)),
            self.pop3
                .as_ref()
                .map(|r| (crate::phase::Protocol::Pop3, r)),
        ]
        .into_iter()
        .flatten()
    }
    /// Sent, and verified by every retrieval protocol that was asked.
    pub fn fully_ok(&self) -> bool {
        self.smtp.ok && self.retrievals().all(|(_, r)| r.ok)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cleanup {
    /// Probe messages deleted.
    pub deleted: usize,
    /// Probe ids that may still be in the mailbox.
    pub leftovers: Vec<String>,
    pub errors: Vec<ProbeError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mailprobe_version: String,
    pub started_at: String,
    pub duration_ms: f64,
    pub verdict: Verdict,
    /// One line: the verdict in plain words.
    pub summary: String,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_server: Option<SmtpServerInfo>,
    pub messages: Vec<MessageReport>,
    /// The real size limit found by bisection (`--bisect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<SizeLimit>,
    pub diagnoses: Vec<Diagnosis>,
    pub cleanup: Cleanup,
    /// `--domain`: the domain's mail exchangers and the SMTP check on each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<crate::mx::MxReport>,
    /// Latency statistics, round log, stability and baseline comparison (rounds,
    /// `--rate`, `verify`, `--baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::stats::Stats>,
}

/// Where the server's size limit really is, found by sending between the largest
/// accepted and the smallest refused message (sizes are whole encoded messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeLimit {
    pub largest_accepted_bytes: u64,
    pub smallest_refused_bytes: u64,
    /// Midpoint of the final interval.
    pub estimate_bytes: u64,
    /// Extra messages sent to find it.
    pub sends: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_bytes: Option<u64>,
    /// The advertised SIZE is more than 5 % away from the real limit.
    pub advertised_disagrees: bool,
}

impl Report {
    /// A report for `settings` that started at `started_at` / `started`; verdict,
    /// summary and diagnoses are set by [`crate::diagnosis::apply`].
    pub fn new(
        settings: &Settings,
        started_at: SystemTime,
        started: std::time::Instant,
        messages: Vec<MessageReport>,
        cleanup: Cleanup,
    ) -> Report {
        Report {
            mailprobe_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: rfc3339(started_at),
            duration_ms: crate::phase::millis(started.elapsed()),
            verdict: Verdict::Healthy,
            summary: String::new(),
            target: Target::from_settings(settings),
            smtp_server: None,
            messages,
            size_limit: None,
            diagnoses: Vec::new(),
            cleanup,
            mx: None,
            stats: None,
        }
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Nagios,
    Prometheus,
    Junit,
    Html,
    Jsonl,
}

impl Format {
    pub fn parse(name: &str) -> Result<Format, String> {
        <Format as clap::ValueEnum>::from_str(name, true).map_err(|_| {
            format!("unknown report format {name:?} (use human, json, jsonl, nagios, prometheus, junit or html)")
        })
    }
    /// Render a finished report.
    pub fn render(self, report: &Report) -> Vec<u8> {
        match self {
            Format::Human => human::render(report),
            Format::Json => json::render(report),
            Format::Nagios => nagios::render(report),
            Format::Prometheus => prometheus::render(report),
            Format::Junit => junit::render(report),
            Format::Html => html::render(report),
            Format::Jsonl => jsonl::render(report),
        }
    }
}

/// Where a report goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

/// Parse `--output FORMAT=PATH`.
pub fn parse_output(spec: &str) -> Result<(Format, Destination), String> {
    let (format, path) = spec
        .split_once('=')
        .ok_or_else(|| format!("--output {spec:?}: write FORMAT=PATH, e.g. json=report.json"))?;
    if path.is_empty() {
        return Err(format!("--output {spec:?}: the path is empty"));
    }
    Ok((
        Format::parse(format)?,
        Destination::File(PathBuf::from(path)),
    ))
}

/// The one place that writes reports.
pub fn write_outputs(report: &Report, outputs: &[(Format, Destination)]) -> Result<(), String> {
    for (format, destination) in outputs {
        write_to(destination, &format.render(report), "report")?;
    }
    Ok(())
}

/// `--transcript FILE`, written the same way as the reports.
pub fn write_transcript(
    transcript: &crate::transcript::Transcript,
    path: &std::path::Path,
) -> Result<(), String> {
    write_to(
        &Destination::File(path.to_path_buf()),
        &transcript.render(),
        "transcript",
    )
}

fn write_to(destination: &Destination, bytes: &[u8], what: &str) -> Result<(), String> {
    match destination {
        Destination::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)
                .and_then(|_| out.flush())
                .map_err(|e| format!("cannot write the {what}: {e}"))
        }
        Destination::File(path) => std::fs::write(path, bytes)
            .map_err(|e| format!("cannot write the {what} to {}: {e}", path.display())),
    }
}
