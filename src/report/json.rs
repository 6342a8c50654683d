//! `--format json`: the report as stable JSON (documented in the README).

use super::Report;

pub fn render(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(report).expect("a report always serializes");
    bytes.push(b'\n');
    bytes
}
