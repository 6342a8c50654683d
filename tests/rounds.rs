//! Rounds, latency statistics, baseline comparison and `verify` against real
//! servers: the main test server (healthy) and a second, private instance that the
//! flapping test stops and starts in a bounded loop.
//!
//! Mailbox: `probe@` on the main server (tests/e2e.rs and tests/faults.rs use
//! test01..test16 and clear their Maildirs; these tests never clear or count a
//! Maildir, they only look for their own probe ids); the overlapping-rounds test
//! uses test06.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, run_binary};
use mailprobe::app::cli::RoundArgs;
use mailprobe::app::cli::{CheckArgs, MailboxArgs};
use mailprobe::app::rounds;
use mailprobe::core::phase::Protocol;
use mailprobe::model::diagnosis::Code;
use mailprobe::model::report::{Report, Verdict};
use mailprobe::model::stats::RoundState;
use mailprobe::probe::rounds::VerifyPlan;

const LOCAL: &str = "test25";
const OVERLAP_BOX: &str = "test06";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn run_rounds(args: CheckArgs) -> Report {
    let settings = mailprobe::app::profile::resolve(&args)
        .unwrap_or_else(|e| panic!("the test's arguments do not resolve: {e}"));
    runtime()
        .block_on(rounds::check(settings, &args.rounds))
        .unwrap_or_else(|e| panic!("rounds failed: {e}"))
}

fn human(report: &Report) -> String {
    String::from_utf8_lossy(&mailprobe::report::Format::Human.render(report)).into_owned()
}

// ------------------------------------------------------------ statistics

#[test]
fn twenty_rounds_statistics_are_consistent() {
    let _shared = common::shared_server();
    let server = TestServer::get();
    let mut args = server.args(LOCAL);
    args.smtp = Some(server.submission_url());
    args.mailbox.imap = Some(server.imap_url());
    args.mailbox.pop3 = Some(server.pop3s_url());
    args.sizes = Some("0,10KiB".into());
    args.rounds = RoundArgs {
        rounds: Some(20),
        concurrency: Some(4),
        ..Default::default()
    };
    let report = run_rounds(args);
    let text = human(&report);
    let stats = report.stats.as_ref().expect("stats section");
    assert_eq!(stats.rounds, 20, "{text}");
    assert_eq!(stats.messages, 40, "{text}");
    assert_eq!(report.messages.len(), 40);
    for round in 1..=20 {
        let n = report
            .messages
            .iter()
            .filter(|m| m.round == Some(round))
            .count();
        assert_eq!(n, 2, "round {round} has {n} messages");
    }
    assert!(stats.failures.is_empty(), "{text}");
    assert_eq!(stats.round_log.len(), 20);
    for size in [0u64, 10240] {
        for protocol in [Protocol::Smtp, Protocol::Imap, Protocol::Pop3] {
            let total = stats
                .get(protocol, mailprobe::model::stats::StatPhase::Total, size)
                .unwrap_or_else(|| panic!("no {protocol:?} total for {size}: {text}"));
            assert_eq!(total.count, 20, "{total:?}");
            assert_eq!(stats.failures_of(protocol, size), 0);
        }
        for protocol in [Protocol::Imap, Protocol::Pop3] {
            let d = stats
                .get(protocol, mailprobe::model::stats::StatPhase::Delivery, size)
                .unwrap();
            assert_eq!(d.count, 20, "{d:?}");
        }
    }
    for l in &stats.latency {
        assert!(l.count > 0 && l.count <= 20, "{l:?}");
        assert!(
            l.min_ms <= l.p50_ms
                && l.p50_ms <= l.p90_ms
                && l.p90_ms <= l.p99_ms
                && l.p99_ms <= l.max_ms,
            "{l:?}"
        );
    }
    // A busy machine may make a phase slow; nothing else may go wrong.
    assert!(
        report.diagnoses.iter().all(|d| d.code == Code::Slow),
        "{text}"
    );
    assert!(report.cleanup.leftovers.is_empty(), "{text}");
    assert!(
        text.contains("latency statistics (40 messages in 20 round(s)"),
        "{text}"
    );
    // JSON: the stats section and the round of every message.
    let json: serde_json::Value =
        serde_json::from_slice(&mailprobe::report::Format::Json.render(&report)).unwrap();
    assert_eq!(json["stats"]["messages"], 40);
    assert_eq!(
        json["messages"][39]["round"].as_u64().map(|r| r >= 1),
        Some(true)
    );
}

/// `--concurrency` larger than the ladder: the rounds overlap (several SMTP
/// sessions at once although each round has one message), and each message keeps
/// its round, each round its own verdict.
#[test]
fn rounds_overlap_when_concurrency_exceeds_the_ladder() {
    let _shared = common::shared_server();
    let server = TestServer::get();
    let proxy = SlowProxy::start(
        (server.host.clone(), server.submission_port),
        Duration::ZERO,
    );
    let mut args = server.args(OVERLAP_BOX);
    args.smtp = Some(format!("smtp://127.0.0.1:{}", proxy.port));
    args.mailbox.imap = Some(server.imap_url());
    args.mailbox.pop3 = Some(server.pop3s_url());
    args.sizes = Some("0".into());
    args.rounds = RoundArgs {
        rounds: Some(12),
        concurrency: Some(4),
        ..Default::default()
    };
    let report = run_rounds(args);
    let peak = proxy.open.peak.load(Ordering::SeqCst);
    drop(proxy);
    let text = human(&report);
    assert!(
        peak >= 2,
        "rounds did not overlap: at most {peak} SMTP session(s) at once\n{text}"
    );
    let stats = report.stats.as_ref().expect("stats section");
    assert_eq!((stats.rounds, stats.messages), (12, 12), "{text}");
    assert_eq!(stats.round_log.len(), 12, "{text}");
    for (i, entry) in stats.round_log.iter().enumerate() {
        assert_eq!(entry.round, i as u32 + 1, "{text}");
        assert!(entry.duration_ms > 0.0, "{entry:?}");
        let own: Vec<_> = report
            .messages
            .iter()
            .filter(|m| m.round == Some(entry.round))
            .collect();
        assert_eq!(
            own.len(),
            1,
            "round {} has {} messages",
            entry.round,
            own.len()
        );
        assert!(
            own[0].imap.as_ref().is_some_and(|r| r.ok)
                && own[0].pop3.as_ref().is_some_and(|r| r.ok),
            "round {}: {text}",
            entry.round
        );
    }
    assert!(
        report.diagnoses.iter().all(|d| d.code == Code::Slow),
        "{text}"
    );
    assert!(report.cleanup.leftovers.is_empty(), "{text}");
    assert_eq!(report.cleanup.deleted, 12, "{text}");
}

// -------------------------------------------------------- baseline compare

/// A TCP proxy that holds back the server's first bytes (the greeting) by `delay`
/// and counts the connections open at once.
struct SlowProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    open: Arc<Connections>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Connections open now and the most open at once.
#[derive(Default)]
struct Connections {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl SlowProxy {
    fn start(target: (String, u16), delay: Duration) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let open = Arc::new(Connections::default());
        let open2 = Arc::clone(&open);
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes of 10 ms polls, and until told to stop.
            for _ in 0..60_000 {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                match listener.accept() {
                    Ok((client, _)) => {
                        let target = target.clone();
                        let open = Arc::clone(&open2);
                        let now = open.now.fetch_add(1, Ordering::SeqCst) + 1;
                        open.peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            proxy_one(client, target, delay);
                            open.now.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        SlowProxy {
            port,
            stop,
            open,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_one(client: TcpStream, target: (String, u16), delay: Duration) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = TcpStream::connect((target.0.as_str(), target.1)) else {
        return;
    };
    for s in [&client, &upstream] {
        let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    }
    let (mut c_read, mut u_write) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    loop {
        let n = match u_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if first {
            std::thread::sleep(delay);
            first = false;
        }
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

#[test]
fn baseline_flags_a_slowed_imap_greeting_and_nothing_when_unchanged() {
    let _shared = common::shared_server();
    let server = TestServer::get();
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.json");
    let run = |imap: &str, extra: &[&str]| {
        let mut args = server.cli(LOCAL);
        for a in [
            "--smtp",
            &server.submission_url(),
            "--imap",
            imap,
            "--sizes",
            "0",
            "--rounds",
            "5",
            "--regression-threshold",
            "100%",
            "--regression-min",
            // Well above the noise of a loaded 2-core machine (a search once took 85 ms).
            "200ms",
        ] {
            args.push(a.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        run_binary(&args, &[])
    };
    let direct = server.imap_url();
    let out = run(
        &direct,
        &["--quiet", "--save-baseline", baseline.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    assert_eq!(saved["stats"]["rounds"], 5, "{saved}");

    // Unchanged server: no regression.
    let out = run(
        &direct,
        &["--format", "json", "--baseline", baseline.to_str().unwrap()],
    );
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {out:?}");
    });
    let codes: Vec<&str> = json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["code"].as_str())
        .collect();
    assert!(!codes.contains(&"regression"), "{}", out.stdout);
    assert_eq!(
        json["stats"]["baseline"]["regressions"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "{}",
        out.stdout
    );

    // IMAP greeting held back 400 ms by a proxy: a regression, named.
    let proxy = SlowProxy::start(
        (server.host.clone(), server.imap_port),
        Duration::from_millis(400),
    );
    let slowed = format!("imap://127.0.0.1:{}", proxy.port);
    let out = run(&slowed, &["--baseline", baseline.to_str().unwrap()]);
    drop(proxy);
    assert_eq!(out.code, 1, "degraded: {out:?}");
    assert!(out.stdout.contains("[WARN] regression"), "{}", out.stdout);
    assert!(out.stdout.contains("IMAP greeting"), "{}", out.stdout);
}

// ------------------------------------------------------------- flapping

/// The second test server instance (its own directory and ports).
const FLAP_DIR: &str = "/var/lib/mailprobe-testserver-flap";
const FLAP_PORTS: [(&str, &str); 7] = [
    ("MAILPROBE_TEST_SMTP_PORT", "6525"),
    ("MAILPROBE_TEST_SUBMISSION_PORT", "6587"),
    ("MAILPROBE_TEST_SMTPS_PORT", "6465"),
    ("MAILPROBE_TEST_IMAP_PORT", "6143"),
    ("MAILPROBE_TEST_IMAPS_PORT", "6993"),
    ("MAILPROBE_TEST_POP3_PORT", "6110"),
    ("MAILPROBE_TEST_POP3S_PORT", "6995"),
];

fn flap_script(action: &str) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/testserver.sh"))
        .arg(action)
        .env("MAILPROBE_TEST_DIR", FLAP_DIR)
        // The daemons inherit these: never a pipe somebody waits on.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in FLAP_PORTS {
        cmd.env(k, v);
    }
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

/// Started in `new`, stopped when dropped (also when the test panics).
struct FlapServer;

impl FlapServer {
    fn start() -> FlapServer {
        assert!(
            flap_script("start"),
            "could not start the second test server in {FLAP_DIR} (run the tests as root)"
        );
        FlapServer
    }
    fn args(&self) -> CheckArgs {
        CheckArgs {
            smtp: Some("smtp://127.0.0.1:6587".into()),
            mailbox: MailboxArgs {
                imap: Some("imap://127.0.0.1:6143".into()),
                user: Some("test01@mailprobe.test".into()),
                password_file: Some(PathBuf::from(FLAP_DIR).join("password")),
                ca_file: Some(PathBuf::from(FLAP_DIR).join("tls/ca.pem")),
                connect_timeout: Some("1s".into()),
                greeting_timeout: Some("2s".into()),
                command_timeout: Some("3s".into()),
                data_timeout: Some("5s".into()),
                ..Default::default()
            },
            sizes: Some("0".into()),
            delivery_timeout: Some("3s".into()),
            ..Default::default()
        }
    }
}

impl Drop for FlapServer {
    fn drop(&mut self) {
        flap_script("stop");
    }
}

#[test]
fn verify_reports_flapping_during_a_restart_loop_and_stable_after() {
    let flap = FlapServer::start();
    let settings = mailprobe::app::profile::resolve(&flap.args()).expect("flap args resolve");
    // Begin down: the first up stretch must not look like stability.
    assert!(flap_script("stop"));

    // Bounded restart loop: 3 cycles of down ~1 s (plus stop/start) and up ~1 s.
    let loop_end: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let loop_end2 = Arc::clone(&loop_end);
    let looper = std::thread::spawn(move || {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_secs(1));
            flap_script("start");
            std::thread::sleep(Duration::from_secs(1));
            flap_script("stop");
        }
        std::thread::sleep(Duration::from_secs(1));
        let ok = flap_script("start");
        *loop_end2.lock().unwrap() = Some(Instant::now());
        ok
    });

    let events: Arc<Mutex<Vec<(Instant, RoundState, mailprobe::model::stats::Stability)>>> =
        Default::default();
    let events2 = Arc::clone(&events);
    let plan = VerifyPlan {
        stable: 6,
        deadline: Duration::from_secs(90),
        interval: Duration::from_millis(400),
        max_rounds: 300,
        // Round-level flapping on its own; the liveness sampler has tests/crashloop.rs.
        sample_interval: None,
    };
    let report = runtime()
        .block_on(mailprobe::probe::rounds::verify(
            &settings,
            plan,
            |round, s| {
                events2
                    .lock()
                    .unwrap()
                    .push((Instant::now(), round.state, s.clone()));
            },
        ))
        .expect("verify runs");
    assert!(looper.join().unwrap(), "the last start failed");
    let loop_end = loop_end.lock().unwrap().expect("loop ended");
    let events = events.lock().unwrap().clone();
    let log: Vec<String> = events
        .iter()
        .map(|(_, state, s)| format!("{} {}", state.as_str(), s.describe()))
        .collect();
    let log = log.join("\n");

    let during: Vec<_> = events.iter().filter(|(t, _, _)| *t < loop_end).collect();
    assert!(during.len() >= 6, "few rounds during the loop:\n{log}");
    assert!(
        during.iter().all(|(_, _, s)| !s.stable),
        "declared stable during the loop:\n{log}"
    );
    assert!(
        during
            .iter()
            .any(|(_, _, s)| s.flapping && s.state == "flapping"),
        "no flapping during the loop:\n{log}"
    );
    assert!(
        during.iter().any(|(_, st, _)| *st == RoundState::Down),
        "{log}"
    );
    assert!(
        during.iter().any(|(_, st, _)| *st == RoundState::Up),
        "{log}"
    );

    // Stable soon after the loop: the required streak plus a couple of rounds.
    let stability = report
        .stats
        .as_ref()
        .and_then(|s| s.stability.clone())
        .expect("stability");
    assert!(stability.stable, "{log}");
    assert!(stability.flapping && stability.transitions >= 3, "{log}");
    assert!(stability.protocols.contains(&Protocol::Smtp), "{log}");
    let after = events.iter().filter(|(t, _, _)| *t >= loop_end).count() as u32;
    assert!(
        after <= stability.required + 3,
        "{after} rounds after the loop:\n{log}"
    );
    assert_eq!(report.verdict, Verdict::Healthy, "{}", human(&report));
    assert!(report.diagnoses.is_empty(), "{}", human(&report));

    // The command itself: JSON lines, one per round, then the report; exit 0.
    let mut args: Vec<String> = vec!["verify".into()];
    let a = flap.args();
    for (flag, value) in [
        ("--smtp", a.smtp.clone().unwrap()),
        ("--imap", a.mailbox.imap.clone().unwrap()),
        ("--user", a.mailbox.user.clone().unwrap()),
        ("--password-file", format!("{FLAP_DIR}/password")),
        ("--ca-file", format!("{FLAP_DIR}/tls/ca.pem")),
        ("--sizes", "0".into()),
        ("--stable", "2".into()),
        ("--interval", "200ms".into()),
        ("--deadline", "30s".into()),
        ("--format", "jsonl".into()),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    let out = common::run_binary_timeout(&args, &[], Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert_eq!(lines[0]["event"], "round");
    assert_eq!(lines[1]["stability"]["stable"], true, "{}", out.stdout);
    assert_eq!(lines[2]["event"], "report");
    assert_eq!(lines[2]["verdict"], "healthy");
    drop(flap);
}

/// `verify --transcript FILE` records every round's sessions, without the password.
#[test]
fn verify_writes_its_transcript() {
    let _shared = common::shared_server();
    let server = TestServer::get();
    let local = "test27";
    server.clear_maildir(local);
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("verify.txt");
    let mut args = server.cli(local);
    args[0] = "verify".into();
    args.extend(
        [
            "--smtp",
            &server.smtps_url(),
            "--imap",
            &server.imaps_url(),
            "--sizes",
            "0",
            "--stable",
            "1",
            "--deadline",
            "60s",
            "--quiet",
            "--transcript",
            &transcript.to_string_lossy(),
        ]
        .map(String::from),
    );
    let out = run_binary(&args, &[]);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let text = std::fs::read_to_string(&transcript).expect("verify wrote its transcript");
    assert!(
        text.contains("SMTP session 1") && text.contains("IMAP session"),
        "{text}"
    );
    assert!(
        !text.contains(&server.password()),
        "the transcript shows the password"
    );
    assert_eq!(server.count_probe_messages(local), 0);
}
