//! Writing what a command produced: reports to standard output or `--output`
//! files, and the `--transcript` file, with every form of the run's passwords
//! scrubbed first. [`Outputs`] is the one path every command's report takes.

use std::borrow::Cow;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::app::cli::OutputArgs;
use crate::app::{EXIT_UNKNOWN, usage_error};
use crate::core::secret::{scrub, scrub_value};
use crate::io::transcript::Transcript;
use crate::model::report::Report;
use crate::report::Format;

/// Where one command's report and transcript go, and what they must never show.
#[derive(Debug)]
pub(crate) struct Outputs {
    targets: Vec<(Format, Destination)>,
    transcript_path: Option<PathBuf>,
    transcript: Option<Arc<Transcript>>,
    secrets: Vec<String>,
}

impl Outputs {
    /// What `--format`, `--output`, `--quiet` and `--transcript` ask for, plus
    /// `extra` outputs (e.g. `--save-baseline`). Errors are usage errors.
    pub(crate) fn new(
        args: &OutputArgs,
        extra: Vec<(Format, Destination)>,
    ) -> Result<Outputs, String> {
        let mut targets = Vec::new();
        if !args.quiet {
            targets.push((args.format, Destination::Stdout));
        }
        for spec in &args.output {
            targets.push(parse_output(spec)?);
        }
        targets.extend(extra);
        Ok(Outputs {
            targets,
            transcript_path: args.transcript.clone(),
            transcript: None,
            secrets: Vec::new(),
        })
    }

    /// Leave standard output to the command (it prints something of its own there).
    pub(crate) fn without_stdout(mut self) -> Outputs {
        self.targets.retain(|(_, d)| *d != Destination::Stdout);
        self
    }

    /// Keep `secrets` (every form of the run's passwords) out of the report, the
    /// error and the transcript; the transcript, if asked for, starts now.
    pub(crate) fn protect(&mut self, secrets: Vec<String>) {
        if self.transcript_path.is_some() {
            self.transcript = Some(Transcript::new(secrets.clone()));
        }
        self.secrets = secrets;
    }

    /// The transcript the run records into, when `--transcript` was given.
    pub(crate) fn transcript(&self) -> Option<Arc<Transcript>> {
        self.transcript.clone()
    }

    /// `text` without the secrets (for lines a command prints itself).
    pub(crate) fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        scrub(text, &self.secrets)
    }

    /// Write the transcript, then the scrubbed report (after `before` saw it) to
    /// every output; the exit code: the verdict's, or 3 when the run or a write failed.
    pub(crate) fn finish(
        self,
        outcome: Result<Report, String>,
        before: impl FnOnce(&Report),
    ) -> i32 {
        if let (Some(path), Some(t)) = (&self.transcript_path, &self.transcript)
            && let Err(e) = write_transcript(t, path)
        {
            eprintln!("mailprobe: {e}");
            return EXIT_UNKNOWN;
        }
        let mut report = match outcome {
            Ok(report) => report,
            Err(e) => return usage_error(&self.scrub(&e)),
        };
        scrub_value(&mut report, &self.secrets);
        before(&report);
        if let Err(e) = write_outputs(&report, &self.targets) {
            eprintln!("mailprobe: {e}");
            return EXIT_UNKNOWN;
        }
        report.verdict.exit_code()
    }
}

/// Where a report goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Destination {
    Stdout,
    File(PathBuf),
}

/// Parse `--output FORMAT=PATH`.
pub(crate) fn parse_output(spec: &str) -> Result<(Format, Destination), String> {
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
pub(crate) fn write_outputs(
    report: &Report,
    outputs: &[(Format, Destination)],
) -> Result<(), String> {
    for (format, destination) in outputs {
        write_to(destination, &format.render(report), "report")?;
    }
    Ok(())
}

/// `--transcript FILE`, written the same way as the reports.
pub(crate) fn write_transcript(
    transcript: &Transcript,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::secret::secret_forms;
    use crate::model::fixtures;

    /// Every command's report takes this path: transcript first, then the report
    /// without the secrets, in every format asked for.
    #[test]
    fn finish_writes_the_transcript_and_a_scrubbed_report() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("r.json");
        let transcript = dir.path().join("t.txt");
        let args = OutputArgs {
            format: Format::Json,
            output: vec![format!("json={}", json.display())],
            quiet: true,
            transcript: Some(transcript.clone()),
        };
        let mut outputs = Outputs::new(&args, Vec::new()).unwrap();
        assert!(
            outputs.transcript().is_none(),
            "no transcript before the secrets are known"
        );
        outputs.protect(secret_forms("a@h", "hunter22"));
        assert!(outputs.transcript().is_some());
        let mut report = fixtures::report();
        report.summary = "the server said: hunter22".into();
        let mut seen = String::new();
        let code = outputs.finish(Ok(report), |r| seen = r.summary.clone());
        assert_eq!(code, 2, "the sample is failing");
        assert_eq!(seen, "the server said: <redacted>");
        let written = std::fs::read_to_string(&json).unwrap();
        assert!(
            written.contains("<redacted>") && !written.contains("hunter22"),
            "{written}"
        );
        assert!(
            std::fs::read_to_string(&transcript)
                .unwrap()
                .starts_with("# mailprobe transcript")
        );

        let mut outputs = Outputs::new(&OutputArgs::default(), Vec::new()).unwrap();
        outputs.protect(secret_forms("a@h", "hunter22"));
        assert_eq!(
            outputs.finish(Err("no: hunter22".into()), |_| {}),
            EXIT_UNKNOWN
        );
    }
}
