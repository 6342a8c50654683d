//! Writing what a command produced: reports to standard output or `--output`
//! files, and the `--transcript` file. The one place that writes them.

use std::io::Write;
use std::path::PathBuf;

use crate::io::transcript::Transcript;
use crate::model::report::Report;
use crate::report::Format;

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
pub fn write_transcript(transcript: &Transcript, path: &std::path::Path) -> Result<(), String> {
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
