//! The HTML report, opened in a real headless Chromium: a report from a real run
//! against the test mail server (mailbox test20) is rendered, Chromium loads it
//! from a file and dumps its DOM, and the chart's SVG points must be there and
//! match the report (count, sizes, milliseconds per series). A screenshot is taken
//! too and must be a PNG of real size.
//!
//! Needs Chromium: on Debian/Ubuntu `apt-get install chromium` (scripts/test.sh
//! does it). Without it this test fails, saying so.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, run_in_process, shared_server};
use mailprobe::model::report::Report;
use mailprobe::report::Format;
use mailprobe::report::html::{Series, chart_points};

const CHROMIUM_CANDIDATES: [&str; 3] = [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("MAILPROBE_CHROMIUM") {
        return PathBuf::from(p);
    }
    CHROMIUM_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is not installed: install it to run this test, e.g. \
                 `apt-get install chromium` on Debian/Ubuntu (scripts/test.sh does), \
                 or point MAILPROBE_CHROMIUM at a Chromium/Chrome binary"
            )
        })
}

/// Run headless Chromium with `extra` arguments on `url`, bounded to 90 s.
fn run_chromium(extra: &[&str], url: &str) -> (String, String) {
    let profile = tempfile::tempdir().expect("temp dir");
    let user_data = format!("--user-data-dir={}", profile.path().display());
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &user_data,
        ])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Chromium: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        match child.try_wait().expect("wait for Chromium") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Chromium did not finish within 90 s");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    assert!(status.success(), "Chromium failed ({status}):\n{stderr}");
    (stdout, stderr)
}

/// The value of `name="..."` in one tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// Every start tag `<name ...>` inside `html`.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let tail = &rest[i..];
        let end = tail.find('>').map(|e| e + 1).unwrap_or(tail.len());
        found.push(&tail[..end]);
        rest = &tail[end..];
    }
    found
}

/// A real check against the test server with a small ladder.
fn real_report() -> Report {
    let server = TestServer::get();
    let _turn = shared_server();
    let mut args = server.args("test20");
    args.smtp = Some(server.submission_url());
    args.mailbox.imap = Some(server.imap_url());
    args.mailbox.pop3 = Some(server.pop3s_url());
    args.sizes = Some("0,10KiB,200KiB,1MiB".into());
    run_in_process(args)
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn chromium_renders_the_chart_with_the_reports_data() {
    let report = real_report();
    let expected = chart_points(&report);
    assert!(
        !expected.is_empty(),
        "the real run produced no timings:\n{}",
        String::from_utf8_lossy(&Format::Human.render(&report))
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, Format::Html.render(&report)).unwrap();

    let (dom, _) = run_chromium(&["--dump-dom"], &file_url(&page));
    assert!(dom.contains("<body"), "Chromium dumped no DOM:\n{dom}");
    // The verdict and summary as Chromium parsed them.
    assert!(
        dom.contains(&format!(
            "id=\"verdict\">{}",
            report.verdict.as_str().to_uppercase()
        )),
        "verdict missing from the DOM"
    );
    // The chart is an SVG element in the parsed DOM, and the points are inside it.
    let svg_start = dom
        .find("<svg ")
        .unwrap_or_else(|| panic!("no <svg> in the DOM:\n{dom}"));
    let svg_len = dom[svg_start..].find("</svg>").expect("unterminated <svg>");
    let svg = &dom[svg_start..svg_start + svg_len];
    assert_eq!(attr(&dom[svg_start..], "id"), Some("latency-chart"));
    let points = tags(svg, "circle");
    assert_eq!(
        points.len(),
        expected.len(),
        "the chart has {} points, the report {}",
        points.len(),
        expected.len()
    );
    let mut seen: Vec<(String, u64, f64)> = points
        .iter()
        .map(|tag| {
            let protocol = attr(tag, "data-protocol")
                .expect("data-protocol")
                .to_string();
            let size: u64 = attr(tag, "data-size").expect("data-size").parse().unwrap();
            let ms: f64 = attr(tag, "data-ms").expect("data-ms").parse().unwrap();
            let cx: f64 = attr(tag, "cx").expect("cx").parse().unwrap();
            let cy: f64 = attr(tag, "cy").expect("cy").parse().unwrap();
            assert!(
                (0.0..=760.0).contains(&cx) && (0.0..=380.0).contains(&cy),
                "point outside the chart: {tag}"
            );
            (protocol, size, ms)
        })
        .collect();
    let mut want: Vec<(String, u64, f64)> = expected
        .iter()
        .map(|(s, size, ms)| (s.key().to_string(), *size, *ms))
        .collect();
    let key = |p: &(String, u64, f64)| (p.0.clone(), p.1, (p.2 * 1000.0) as i64);
    seen.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(seen, want, "chart points differ from the report");

    // Every series with data has its points and a legend entry; the real run over
    // a healthy server has all four series at every size.
    for series in Series::ALL {
        let n = expected.iter().filter(|p| p.0 == series).count();
        let legend = format!("class=\"legend\" data-protocol=\"{}\"", series.key());
        assert!(
            dom.contains(&legend),
            "no legend entry for {}",
            series.key()
        );
        if report.verdict == mailprobe::model::report::Verdict::Healthy {
            assert_eq!(n, report.messages.len(), "series {}", series.key());
        }
    }
    // Each size in the ladder has a row in the evidence table.
    for m in &report.messages {
        assert!(
            dom.contains(&format!("<tr data-size=\"{}\">", m.size_bytes)),
            "no table row for {}",
            m.size_bytes
        );
    }

    // A screenshot: a PNG of real size (kept next to the target dir for a look).
    let shot = dir.path().join("report.png");
    run_chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1000,1800",
            "--hide-scrollbars",
        ],
        &file_url(&page),
    );
    let png = std::fs::read(&shot).expect("Chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "suspiciously small screenshot: {} bytes",
        png.len()
    );
    if let Some(keep) = std::env::var_os("MAILPROBE_KEEP_SCREENSHOT") {
        let keep = PathBuf::from(keep);
        let _ = std::fs::copy(&shot, &keep);
        let _ = std::fs::copy(&page, keep.with_extension("html"));
    }
}
