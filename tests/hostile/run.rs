//! Run the `mailprobe` binary under `/usr/bin/time` (peak memory), with an outer
//! time bound, and read back its JSON report.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailprobe::model::report::Report;

/// Peak resident memory any run may reach ("well under 100 MiB").
pub const MAX_RSS_KIB: u64 = 64 * 1024;

/// What one run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub elapsed: Duration,
    /// Peak resident set (KiB) from `/usr/bin/time -f %M`.
    pub max_rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
    /// The `--output json=FILE` report, parsed.
    pub report: Option<Report>,
    /// Report, output and peak-memory files (removed when the run is dropped).
    pub dir: tempfile::TempDir,
}

fn time_binary() -> &'static str {
    const TIME: &str = "/usr/bin/time";
    assert!(
        Path::new(TIME).is_file(),
        "{TIME} is missing: install it with `apt-get install time` (needed to measure peak memory)"
    );
    TIME
}

/// Kill the process `pid` started by us and its direct children (the binary under `time`).
fn kill_tree(pid: u32) {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", child]).status();
    }
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// Run `mailprobe ARGS` (plus `--output json=DIR/report.json`), with `envs`, killed
/// after `limit`. Panics when it had to be killed: a probe must never hang.
pub fn run(args: &[String], envs: &[(&str, &str)], limit: Duration) -> Run {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let json = dir.join("report.json");
    let rss = dir.join("rss");
    let out = std::fs::File::create(dir.join("stdout")).expect("stdout file");
    let err = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    let mut command = Command::new(time_binary());
    command
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_mailprobe"))
        .args(args)
        .arg("--output")
        .arg(format!("json={}", json.display()))
        .env_remove("MAILPROBE_PASSWORD")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in envs {
        command.env(k, v);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .expect("start mailprobe under /usr/bin/time");
    let status = loop {
        match child.try_wait().expect("wait for mailprobe") {
            Some(s) => break Some(s),
            None if started.elapsed() >= limit => {
                kill_tree(child.id());
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let elapsed = started.elapsed();
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "mailprobe {args:?} HUNG: still running after {limit:?} and killed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    let max_rss_kib = std::fs::read_to_string(&rss)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak memory from /usr/bin/time in {}", rss.display()));
    let report = std::fs::read(&json)
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("the JSON report parses"));
    Run {
        code: status.code().unwrap_or(-1),
        elapsed,
        max_rss_kib,
        stdout,
        stderr,
        report,
        dir: tmp,
    }
}

impl Run {
    /// No panic, exit 2 or 3, report written, memory bounded.
    pub fn assert_contained(&self, what: &str) -> &Report {
        assert!(
            !self.stderr.contains("panicked"),
            "{what}: mailprobe panicked:\n{}",
            self.stderr
        );
        assert!(
            matches!(self.code, 2 | 3),
            "{what}: exit code {} (expected 2 or 3)\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        assert!(
            self.max_rss_kib < MAX_RSS_KIB,
            "{what}: peak memory {} KiB is over {} KiB",
            self.max_rss_kib,
            MAX_RSS_KIB
        );
        self.report.as_ref().unwrap_or_else(|| {
            panic!(
                "{what}: no JSON report was written\nstderr:\n{}",
                self.stderr
            )
        })
    }
}
