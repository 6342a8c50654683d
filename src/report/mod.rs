//! Rendering a finished report: one file per output format, each turning the
//! `model` report into bytes. Writing them out is the app's job.

pub mod html;
pub(crate) mod human;
pub(crate) mod json;
pub(crate) mod jsonl;
pub(crate) mod junit;
pub(crate) mod nagios;
pub(crate) mod prometheus;
pub(crate) mod timeline;

use crate::model::report::Report;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
    Nagios,
    Prometheus,
    Junit,
    Html,
    Jsonl,
}

impl Format {
    pub(crate) const ALL: [Format; 7] = [
        Format::Human,
        Format::Json,
        Format::Nagios,
        Format::Prometheus,
        Format::Junit,
        Format::Html,
        Format::Jsonl,
    ];

    /// The name on the command line (`--format`, `--output NAME=PATH`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Json => "json",
            Format::Nagios => "nagios",
            Format::Prometheus => "prometheus",
            Format::Junit => "junit",
            Format::Html => "html",
            Format::Jsonl => "jsonl",
        }
    }

    pub fn parse(name: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
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
