//! `mailprobe serve`, the blackbox-style exporter, scraped over loopback: the
//! binary is started on a free port with a temporary profiles directory whose
//! profiles point at the real test mail server (mailboxes test18, test19, test20).
//! Needs the test server (`scripts/testserver.sh start`) and promtool (see
//! tests/promtool.rs).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestServer, eventually, shared_server};

/// A running `mailprobe serve`, killed when dropped.
struct Exporter {
    child: Child,
    addr: String,
    _profiles: tempfile::TempDir,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A profile for mailbox `local` on the test server, like probes/local.toml.
fn profile(server: &TestServer, local: &str, sizes: &str) -> String {
    format!(
        r#"smtp = "{smtp}"
imap = "{imap}"
pop3 = "{pop3}"
starttls = "require"
user = "{user}"
password_file = "{password}"
ca_file = "{ca}"
sizes = [{sizes}]

[timeouts]
connect = "5s"
greeting = "10s"
command = "15s"
data = "60s"
delivery = "10s"
"#,
        smtp = server.submission_url(),
        imap = server.imap_url(),
        pop3 = server.pop3s_url(),
        user = server.user(local),
        password = server.password_file.display(),
        ca = server.ca_file.display(),
    )
}

fn start(profiles: &[(&str, &str)], max_concurrent: usize) -> Exporter {
    start_with_sizes(profiles, max_concurrent, r#""0", "10KiB""#)
}

fn start_with_sizes(profiles: &[(&str, &str)], max_concurrent: usize, sizes: &str) -> Exporter {
    let server = TestServer::get();
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, local) in profiles {
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            profile(server, local, sizes),
        )
        .unwrap();
    }
    start_in(dir, max_concurrent)
}

fn start_in(dir: tempfile::TempDir, max_concurrent: usize) -> Exporter {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailprobe"))
        .args(["serve", "--listen", "127.0.0.1:0", "--profiles"])
        .arg(dir.path())
        .args(["--max-concurrent", &max_concurrent.to_string()])
        .env_remove("MAILPROBE_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mailprobe serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {} // keep draining
    });
    let first = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!("mailprobe serve printed no listening address within 20 s");
        }
    };
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .to_string();
    Exporter {
        child,
        addr,
        _profiles: dir,
    }
}

/// (status, body) of `GET path`, with extra header lines; bounded to `limit`.
fn get(addr: &str, path: &str, headers: &[&str], limit: Duration) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the exporter");
    stream.set_read_timeout(Some(limit)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("GET {path}: no complete answer within {limit:?}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: malformed answer {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(body.len(), length, "GET {path}: body length");
    (status, body.to_string())
}

const SCRAPE: &str = "X-Prometheus-Scrape-Timeout-Seconds: 60";

/// The value of the sample `line_start` (metric name with labels) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_ok(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): `apt-get install prometheus` (scripts/test.sh does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn probe_answers_the_checks_metrics() {
    let _turn = shared_server();
    let exporter = start(&[("local", "test18")], 4);
    let (status, body) = get(
        &exporter.addr,
        "/probe?profile=local",
        &[SCRAPE],
        Duration::from_secs(90),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "mailprobe_success"), Some(1.0), "{body}");
    // The blackbox_exporter's names, which existing dashboards and alerts read.
    assert_eq!(sample(&body, "probe_success"), Some(1.0), "{body}");
    assert!(
        sample(&body, "probe_duration_seconds").is_some_and(|s| s > 0.0),
        "{body}"
    );
    assert!(
        sample(&body, "probe_ssl_earliest_cert_expiry").is_some_and(|t| t > 1.7e9),
        "{body}"
    );
    assert!(
        body.contains("mailprobe_verdict{verdict=\"healthy\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("mailprobe_delivery_seconds{protocol=\"imap\",size=\"10KiB\"}"),
        "{body}"
    );
    promtool_ok(&body);

    // `target=` replaces the host: 127.0.0.1 → localhost (the certificate names both).
    let (status, body) = get(
        &exporter.addr,
        "/probe?profile=local&target=localhost",
        &[SCRAPE],
        Duration::from_secs(90),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "mailprobe_success"), Some(1.0), "{body}");
}

#[test]
fn concurrent_probes_both_succeed_and_are_counted() {
    let _turn = shared_server();
    let exporter = start(&[("a", "test19"), ("b", "test19")], 4);
    let addr = exporter.addr.clone();
    let handles: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                get(
                    &addr,
                    &format!("/probe?profile={name}"),
                    &[SCRAPE],
                    Duration::from_secs(90),
                )
            })
        })
        .collect();
    for h in handles {
        let (status, body) = h.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(sample(&body, "mailprobe_success"), Some(1.0), "{body}");
    }
    let (status, metrics) = get(&addr, "/metrics", &[], Duration::from_secs(10));
    assert_eq!(status, 200);
    assert_eq!(
        sample(&metrics, "mailprobe_exporter_probes_total{profile=\"a\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "mailprobe_exporter_probes_total{profile=\"b\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "mailprobe_exporter_probe_duration_seconds_count"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "mailprobe_exporter_probes_in_flight"),
        Some(0.0),
        "{metrics}"
    );
    promtool_ok(&metrics);
}

#[test]
fn a_too_short_scrape_timeout_answers_promptly_with_failure() {
    let _turn = shared_server();
    let server = TestServer::get();
    // A ladder up to 5 MiB cannot finish in 0.25 s - 0.125 s here.
    let exporter = start_with_sizes(&[("local", "test20")], 4, r#""0", "10KiB", "1MiB", "5MiB""#);
    let started = Instant::now();
    let (status, body) = get(
        &exporter.addr,
        "/probe?profile=local",
        &["X-Prometheus-Scrape-Timeout-Seconds: 0.25"],
        Duration::from_secs(30),
    );
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "mailprobe_success"), Some(0.0), "{body}");
    assert!(
        took < Duration::from_secs(3),
        "a 0.25 s scrape timeout was answered after {took:?}"
    );
    promtool_ok(&body);
    // The check finishes (and cleans up) in the background; then nothing is in flight.
    let addr = exporter.addr.clone();
    let settled = eventually(Duration::from_secs(90), Duration::from_millis(200), || {
        let (_, m) = get(&addr, "/metrics", &[], Duration::from_secs(10));
        sample(&m, "mailprobe_exporter_probes_in_flight") == Some(0.0)
    });
    assert!(
        settled,
        "the timed-out check never finished in the background"
    );
    let (_, m) = get(&addr, "/metrics", &[], Duration::from_secs(10));
    assert_eq!(
        sample(
            &m,
            "mailprobe_exporter_probe_errors_total{reason=\"timeout\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // What it sent was deleted, late arrivals included.
    assert_eq!(
        server.count_probe_messages("test20"),
        0,
        "probe messages left in test20"
    );
}

#[test]
fn beyond_max_concurrent_answers_503() {
    let _turn = shared_server();
    let exporter = start(&[("local", "test19")], 1);
    let addr = exporter.addr.clone();
    let first = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            get(
                &addr,
                "/probe?profile=local",
                &[SCRAPE],
                Duration::from_secs(90),
            )
        })
    };
    let busy = eventually(Duration::from_secs(20), Duration::from_millis(10), || {
        let (_, m) = get(&addr, "/metrics", &[], Duration::from_secs(10));
        sample(&m, "mailprobe_exporter_probes_in_flight") == Some(1.0)
    });
    assert!(busy, "the first probe never showed as in flight");
    let (status, body) = get(
        &addr,
        "/probe?profile=local",
        &[SCRAPE],
        Duration::from_secs(10),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many probes in flight"), "{body}");
    let (status, body) = first.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(sample(&body, "mailprobe_success"), Some(1.0), "{body}");
}

#[test]
fn bad_requests_are_refused() {
    let exporter = start(&[("local", "test18")], 4);
    let addr = &exporter.addr;
    let limit = Duration::from_secs(10);
    let (status, body) = get(addr, "/probe?profile=nosuch", &[], limit);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no profile"), "{body}");
    for bad in [
        "/probe?profile=../x",
        "/probe?profile=..%2Fmailprobe-serve-x",
        "/probe?profile=%2Fetc%2Fpasswd",
        "/probe?profile=.hidden",
        "/probe?profile=a%5Cb",
        "/probe?profile=",
        "/probe",
        "/probe?profile=local&target=evil%2Fhost",
    ] {
        let (status, body) = get(addr, bad, &[], limit);
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = get(addr, "/nothing-here", &[], limit);
    assert_eq!(status, 404);
    // An oversized request head is refused, not buffered.
    let huge = format!("X-Filler: {}", "a".repeat(12_000));
    let (status, _) = get(addr, "/metrics", &[&huge], limit);
    assert_eq!(status, 431);
    let (_, metrics) = get(addr, "/metrics", &[], limit);
    assert!(
        sample(
            &metrics,
            "mailprobe_exporter_probe_errors_total{reason=\"bad_request\"}"
        )
        .is_some_and(|n| n >= 8.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "mailprobe_exporter_probe_errors_total{reason=\"unknown_profile\"}"
        ),
        Some(1.0)
    );
}
