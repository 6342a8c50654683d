//! `--format jsonl`: the report as one JSON object on one line (`verify` writes one
//! line per round before it).

use crate::model::report::Report;

pub(crate) fn render(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(report).expect("a report always serializes");
    bytes.push(b'\n');
    bytes
}
