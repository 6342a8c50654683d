//! The liveness sampler and crash-loop diagnosis against real Postfix and Dovecot:
//! a private test server instance (its own directory and ports) that these tests
//! stop and start themselves in bounded loops, one test at a time. The shared test
//! server is never touched.
//!
//! * every service restarting together, plus a proxy that kills the SMTP session
//!   on attachments: `crash_loop` (shared by SMTP, IMAP, POP3) and
//!   `attachments_fail/session_dropped`, failing, within 30 s;
//! * only Dovecot restarting: `crash_loop` for IMAP and POP3, not shared with SMTP;
//! * one restart, then steady: `verify` becomes stable after it, the restart in
//!   the timeline, no `crash_loop`;
//! * a healthy server: 100 rounds with the sampler on, nothing found.

mod common;
#[allow(dead_code)] // the other faults belong to tests/faults.rs
#[path = "faults/proxy.rs"]
mod proxy;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailprobe::app::cli::{CheckArgs, MailboxArgs, RoundArgs};
use mailprobe::core::endpoint::StarttlsPolicy;
use mailprobe::core::phase::Protocol;
use mailprobe::model::diagnosis::{Cause, Code, Severity};
use mailprobe::model::report::{Report, Verdict};
use mailprobe::probe::rounds::VerifyPlan;
use proxy::{Fault, Proxy};

/// The private instance: its own state directory and ports (see the header of
/// scripts/testserver.sh).
const DIR: &str = "/var/lib/mailprobe-crashloop-1";
const PORTS: [(&str, u16); 7] = [
    ("MAILPROBE_TEST_SMTP_PORT", 5525),
    ("MAILPROBE_TEST_SUBMISSION_PORT", 5587),
    ("MAILPROBE_TEST_SMTPS_PORT", 5465),
    ("MAILPROBE_TEST_IMAP_PORT", 5143),
    ("MAILPROBE_TEST_IMAPS_PORT", 5993),
    ("MAILPROBE_TEST_POP3_PORT", 5110),
    ("MAILPROBE_TEST_POP3S_PORT", 5995),
];
const SMTP: u16 = 5525;
const SUBMISSION: u16 = 5587;
const IMAP: u16 = 5143;
const IMAPS: u16 = 5993;
const POP3: u16 = 5110;
const POP3S: u16 = 5995;

/// One test at a time owns the instance.
static TURN: Mutex<()> = Mutex::new(());

fn quiet(cmd: &mut Command) -> &mut Command {
    // The daemons inherit these: never a pipe somebody waits on.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

fn script(action: &str) -> bool {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/testserver.sh"))
        .arg(action)
        .env("MAILPROBE_TEST_DIR", DIR);
    for (k, v) in PORTS {
        cmd.env(k, v.to_string());
    }
    quiet(&mut cmd)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether `port` answers with a first line within a second.
fn greets(port: u16) -> bool {
    use std::io::Read;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0)
}

fn refuses(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

fn wait_for(what: &str, limit: Duration, condition: impl FnMut() -> bool) {
    assert!(
        common::eventually(limit, Duration::from_millis(50), condition),
        "{what} within {limit:?}"
    );
}

/// Which daemons a loop restarts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Daemons {
    All,
    Dovecot,
}

/// Stop and start the instance's daemons directly (faster than the script, and
/// what a crashing service manager does): Postfix with `postfix -c`, Dovecot by
/// SIGTERM to its master and `dovecot -c`.
fn stop(which: Daemons) {
    if which == Daemons::All {
        let _ = quiet(Command::new("postfix").args(["-c", &format!("{DIR}/etc/postfix"), "stop"]))
            .status();
    }
    let pidfile = format!("{DIR}/run/dovecot/master.pid");
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let _ = quiet(Command::new("kill").args(["-TERM", pid.trim()])).status();
    }
    let mut ports = vec![IMAP, POP3];
    if which == Daemons::All {
        ports.push(SMTP);
    }
    // A Dovecot login process started just as its master died can wait 5 s for
    // the stats service while it keeps the port open without greeting (seen in
    // CI). A crash frees its ports: so do its leftovers.
    let stopped = || ports.iter().all(|&p| refuses(p));
    if !common::eventually(Duration::from_secs(1), Duration::from_millis(50), stopped) {
        for pid in ports.iter().flat_map(|&p| listeners(p)) {
            let _ = quiet(Command::new("kill").args(["-KILL", &pid.to_string()])).status();
        }
    }
    wait_for("the services stop", Duration::from_secs(10), stopped);
}

/// The processes listening on TCP `port` (from /proc: the socket's inode, then
/// the processes holding it open).
fn listeners(port: u16) -> Vec<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let local_port = f.get(1)?.rsplit(':').next()?;
                    let listening = f.get(3) == Some(&"0A");
                    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                        .then(|| f.get(9).map(|i| format!("socket:[{i}]")))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
                })
            })
        })
        .collect()
}

fn start(which: Daemons) {
    // Dovecot's children may hold its ports for a moment after the master left.
    wait_for("Dovecot starts", Duration::from_secs(10), || {
        greets(IMAP)
            || (quiet(
                Command::new("dovecot").args(["-c", &format!("{DIR}/etc/dovecot/dovecot.conf")]),
            )
            .status()
            .is_ok_and(|s| s.success())
                && common::eventually(Duration::from_secs(2), Duration::from_millis(50), || {
                    greets(IMAP)
                }))
    });
    if which == Daemons::All {
        let _ = quiet(Command::new("postfix").args(["-c", &format!("{DIR}/etc/postfix"), "start"]))
            .status();
        wait_for("Postfix starts", Duration::from_secs(10), || greets(SMTP));
    }
    wait_for("POP3 answers", Duration::from_secs(5), || greets(POP3));
}

/// The private instance, started for the test (idempotent) and made whole again
/// when dropped; holding it is holding the turn.
struct Instance {
    _turn: MutexGuard<'static, ()>,
}

impl Instance {
    fn get() -> Instance {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            script("start"),
            "could not start the private test server in {DIR} (run the tests as root; see scripts/testserver.sh)"
        );
        Instance { _turn: turn }
    }

    /// Check arguments for mailbox `local`, short timeouts (a loop's down phase
    /// must not stall a round for long).
    fn args(&self, local: &str) -> CheckArgs {
        CheckArgs {
            smtp: Some(format!("smtp://127.0.0.1:{SMTP}")),
            mailbox: MailboxArgs {
                imap: Some(format!("imap://127.0.0.1:{IMAP}")),
                pop3: Some(format!("pop3://127.0.0.1:{POP3}")),
                user: Some(format!("{local}@mailprobe.test")),
                password_file: Some(PathBuf::from(DIR).join("password")),
                ca_file: Some(PathBuf::from(DIR).join("tls/ca.pem")),
                connect_timeout: Some("1s".into()),
                greeting_timeout: Some("2s".into()),
                command_timeout: Some("3s".into()),
                data_timeout: Some("5s".into()),
                ..Default::default()
            },
            no_smtp_auth: true,
            sizes: Some("0".into()),
            delivery_timeout: Some("3s".into()),
            ..Default::default()
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // The next test finds everything up (also after a panic mid-loop).
        script("start");
    }
}

/// A bounded restart loop on its own thread: `cycles` times up for `up`, then
/// down for `down`; ends up. Stops early when the handle is dropped or stopped.
struct Looper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u32>>,
}

impl Looper {
    fn start(which: Daemons, cycles: u32, up: Duration, down: Duration) -> Looper {
        let stop_flag = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop_flag);
        let thread = std::thread::spawn(move || {
            let mut restarts = 0;
            for _ in 0..cycles {
                std::thread::sleep(up);
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                stop(which);
                std::thread::sleep(down);
                start(which);
                restarts += 1;
            }
            restarts
        });
        Looper {
            stop: stop_flag,
            thread: Some(thread),
        }
    }
    /// Stop after the current cycle; the number of restarts done.
    fn finish(mut self) -> u32 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Looper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn human(report: &Report) -> String {
    String::from_utf8_lossy(&mailprobe::report::Format::Human.render(report)).into_owned()
}

fn codes(report: &Report) -> Vec<&'static str> {
    report.diagnoses.iter().map(|d| d.code.as_str()).collect()
}

// ------------------------------------------------------------------ tests

/// The story: SMTP, IMAP and POP3 restart together every ~6 s (up 3 s, down
/// 1.5 s plus stopping and starting), and while up a filter in front of SMTP drops
/// the session of every message with an attachment.
#[test]
fn all_services_looping_with_an_attachment_filter_is_a_shared_crash_loop_and_attachments_fail() {
    let instance = Instance::get();
    let proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], SMTP)),
        Fault::DropAfterDataOn(b"Content-Disposition: attachment"),
    );
    let a = instance.args("test01");
    let begun = Instant::now();
    let looper = Looper::start(
        Daemons::All,
        4,
        Duration::from_secs(3),
        Duration::from_millis(1500),
    );
    let out_dir = tempfile::tempdir().unwrap();
    let human_path = out_dir.path().join("report.txt");
    let mut args: Vec<String> = vec!["verify".into()];
    for (flag, value) in [
        ("--smtp", proxy.url("smtp")),
        ("--starttls", "never".into()),
        ("--imap", a.mailbox.imap.clone().unwrap()),
        ("--pop3", a.mailbox.pop3.clone().unwrap()),
        ("--user", a.mailbox.user.clone().unwrap()),
        ("--password-file", format!("{DIR}/password")),
        ("--sizes", "0,10KiB,1MiB".into()),
        ("--stable", "3".into()),
        ("--interval", "1s".into()),
        ("--deadline", "18s".into()),
        ("--connect-timeout", "1s".into()),
        ("--greeting-timeout", "1s".into()),
        ("--command-timeout", "2s".into()),
        ("--data-timeout", "4s".into()),
        ("--delivery-timeout", "2s".into()),
        ("--format", "json".into()),
        ("--output", format!("human={}", human_path.display())),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    args.push("--no-smtp-auth".into());
    let out = common::run_binary_timeout(&args, &[], Duration::from_secs(60));
    let took = begun.elapsed();
    let restarts = looper.finish();
    let dropped = proxy.triggered();
    drop(proxy);
    let text = std::fs::read_to_string(&human_path).unwrap_or_default();
    // Shown with --nocapture: the report this test judges.
    println!("{text}");
    assert!(
        dropped >= 2,
        "the filter dropped {dropped} session(s)\n{text}"
    );
    assert!(restarts >= 2, "the loop restarted {restarts} time(s)");
    assert_eq!(out.code, 2, "failing:\n{text}\n{}", out.stderr);
    assert!(
        took < Duration::from_secs(30),
        "named after {took:?}\n{text}"
    );
    let report: Report = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON report ({e}): {}", out.stdout));
    assert_eq!(report.verdict, Verdict::Failing, "{text}");

    let crash = report
        .diagnoses
        .iter()
        .find(|d| d.code == Code::CrashLoop)
        .unwrap_or_else(|| panic!("no crash_loop:\n{text}"));
    assert_eq!(crash.severity, Severity::Failing, "{text}");
    assert_eq!(crash.protocol, None, "{text}");
    assert!(crash.summary.contains("together"), "{text}");
    let timeline = report.timeline.as_ref().expect("timeline");
    assert_eq!(
        timeline.crash_loops.len(),
        1,
        "{:#?}\n{text}",
        timeline.crash_loops
    );
    let l = &timeline.crash_loops[0];
    assert!(l.shared, "{text}");
    assert_eq!(
        l.protocols,
        vec![Protocol::Smtp, Protocol::Imap, Protocol::Pop3],
        "{text}"
    );
    assert!(l.restarts >= 2, "{text}");
    assert!(
        l.median_down_ms > 500.0 && l.median_down_ms < 6000.0,
        "{l:?}\n{text}"
    );
    assert!(
        report
            .diagnoses
            .iter()
            .any(|d| d.code == Code::AttachmentsFail && d.cause == Some(Cause::SessionDropped)),
        "no attachments_fail/session_dropped: {:?}\n{text}",
        codes(&report)
    );
    // The rounds alternate between "all down" and "attachments fail": flapping.
    let stability = report
        .stats
        .as_ref()
        .and_then(|s| s.stability.clone())
        .unwrap();
    assert!(!stability.stable, "{text}");
    assert!(stability.transitions >= 2, "{text}");
    // The human report draws a lane per service under the diagnoses.
    for lane in ["  smtp  ", "  imap  ", "  pop3  "] {
        let line = text
            .lines()
            .find(|l| l.starts_with(lane))
            .unwrap_or_else(|| panic!("no {lane:?} lane:\n{text}"));
        assert!(line.contains('█') && line.contains('▁'), "{line}");
    }
    assert!(
        text.find("[FAIL] crash_loop").unwrap() < text.find("timeline (").unwrap(),
        "{text}"
    );
}

/// Only Dovecot restarts: IMAP and POP3 loop together, SMTP stays up.
#[test]
fn only_dovecot_looping_is_a_crash_loop_of_imap_and_pop3_not_shared_with_smtp() {
    let instance = Instance::get();
    let mut args = instance.args("test02");
    args.rounds = RoundArgs {
        rounds: Some(12),
        interval: Some("1s".into()),
        ..Default::default()
    };
    let looper = Looper::start(
        Daemons::Dovecot,
        3,
        Duration::from_millis(3000),
        Duration::from_millis(1500),
    );
    let settings = mailprobe::app::profile::resolve(&args).expect("args resolve");
    let report = runtime()
        .block_on(mailprobe::app::rounds::check(settings, &args.rounds))
        .expect("rounds run");
    let restarts = looper.finish();
    let text = human(&report);
    assert!(
        restarts >= 2,
        "the loop restarted {restarts} time(s)\n{text}"
    );
    let timeline = report
        .timeline
        .as_ref()
        .expect("the sampler runs with --rounds");
    assert_eq!(timeline.crash_loops.len(), 1, "{text}");
    let l = &timeline.crash_loops[0];
    assert_eq!(l.protocols, vec![Protocol::Imap, Protocol::Pop3], "{text}");
    assert!(l.shared, "IMAP and POP3 fail as one\n{text}");
    let smtp = timeline.service(Protocol::Smtp).unwrap();
    assert_eq!(smtp.restarts, 0, "{text}");
    assert_eq!(smtp.down_spans().count(), 0, "{text}");
    let crash = report
        .diagnoses
        .iter()
        .find(|d| d.code == Code::CrashLoop)
        .unwrap_or_else(|| panic!("no crash_loop:\n{text}"));
    assert_eq!(crash.severity, Severity::Failing);
    assert!(crash.summary.contains("IMAP and POP3"), "{text}");
    assert!(crash.summary.contains("SMTP stayed up"), "{text}");
    assert_eq!(report.verdict, Verdict::Failing, "{text}");
    // Prometheus and Nagios carry the restart counts.
    let prom = String::from_utf8(mailprobe::report::Format::Prometheus.render(&report)).unwrap();
    assert!(
        prom.contains("mailprobe_restarts{protocol=\"smtp\"} 0"),
        "{prom}"
    );
    assert!(
        prom.contains(&format!(
            "mailprobe_restarts{{protocol=\"imap\"}} {}",
            timeline.service(Protocol::Imap).unwrap().restarts
        )),
        "{prom}"
    );
    assert!(
        prom.contains("mailprobe_diagnosis{code=\"crash_loop\""),
        "{prom}"
    );
    let nagios = String::from_utf8(mailprobe::report::Format::Nagios.render(&report)).unwrap();
    assert!(nagios.contains("'pop3_restarts'="), "{nagios}");
}

/// One restart early on, then steady: stable after it, with the restart in the
/// timeline and no crash loop.
#[test]
fn a_single_restart_then_steady_service_becomes_stable_with_the_restart_reported() {
    let instance = Instance::get();
    let mut args = instance.args("test03");
    args.smtp = Some(format!("smtp://127.0.0.1:{SUBMISSION}"));
    args.no_smtp_auth = false;
    args.mailbox.imap = Some(format!("imaps://127.0.0.1:{IMAPS}"));
    args.mailbox.pop3 = Some(format!("pop3s://127.0.0.1:{POP3S}"));
    args.mailbox.starttls = Some(StarttlsPolicy::Require);
    let settings = mailprobe::app::profile::resolve(&args).expect("args resolve");
    // Down for ~1.5 s starting 0.7 s in: inside what would be the first stable window.
    let looper = Looper::start(
        Daemons::All,
        1,
        Duration::from_millis(700),
        Duration::from_millis(1500),
    );
    let rounds: Arc<Mutex<Vec<(Instant, bool)>>> = Default::default();
    let seen = Arc::clone(&rounds);
    let report = runtime()
        .block_on(mailprobe::probe::rounds::verify(
            &settings,
            VerifyPlan {
                stable: 3,
                deadline: Duration::from_secs(40),
                interval: Duration::from_millis(700),
                max_rounds: 60,
                sample_interval: Some(Duration::from_millis(250)),
            },
            |_, s| seen.lock().unwrap().push((Instant::now(), s.stable)),
        ))
        .expect("verify runs");
    let restarts = looper.finish();
    let restarted_at = Instant::now();
    let text = human(&report);
    assert_eq!(restarts, 1);
    let stability = report
        .stats
        .as_ref()
        .and_then(|s| s.stability.clone())
        .unwrap();
    assert!(stability.stable, "{text}");
    assert_eq!(report.verdict, Verdict::Healthy, "{text}");
    assert!(
        !codes(&report).contains(&"crash_loop"),
        "{:?}\n{text}",
        codes(&report)
    );
    let timeline = report.timeline.as_ref().expect("timeline");
    for service in &timeline.services {
        assert_eq!(service.restarts, 1, "{:?}\n{text}", service.protocol);
    }
    assert!(timeline.crash_loops.is_empty(), "{text}");
    // Not stable before the restart was over: the rounds around it were disturbed.
    let log = &report.stats.as_ref().unwrap().round_log;
    assert!(
        log.iter()
            .any(|r| !r.sampled_down.is_empty()
                || r.state != mailprobe::model::stats::RoundState::Up),
        "no round saw the restart: {log:?}"
    );
    assert!(rounds.lock().unwrap().iter().filter(|(_, s)| *s).count() == 1);
    assert!(restarted_at.elapsed() < Duration::from_secs(60));
    assert!(text.contains("1 restart(s), down 1 time(s)"), "{text}");
}

/// A healthy server sampled through 100 short rounds: no restart, no crash loop,
/// no flapping, healthy.
#[test]
fn healthy_server_100_rounds_with_the_sampler_finds_nothing() {
    let instance = Instance::get();
    let mut args = instance.args("test04");
    args.smtp = Some(format!("smtp://127.0.0.1:{SUBMISSION}"));
    args.no_smtp_auth = false;
    args.mailbox.imap = Some(format!("imaps://127.0.0.1:{IMAPS}"));
    args.mailbox.pop3 = Some(format!("pop3s://127.0.0.1:{POP3S}"));
    args.rounds = RoundArgs {
        rounds: Some(100),
        interval: Some("50ms".into()),
        sample_interval: Some("100ms".into()),
        ..Default::default()
    };
    let settings = mailprobe::app::profile::resolve(&args).expect("args resolve");
    let report = runtime()
        .block_on(mailprobe::app::rounds::check(settings, &args.rounds))
        .expect("rounds run");
    let text = human(&report);
    let timeline = report.timeline.as_ref().expect("timeline");
    assert_eq!(timeline.interval_ms, 100.0);
    for service in &timeline.services {
        assert!(
            service.samples >= 20,
            "{:?}: {} samples",
            service.protocol,
            service.samples
        );
        assert_eq!(service.restarts, 0, "{text}");
        assert_eq!(service.spans.len(), 1, "{:?}\n{text}", service.spans);
    }
    let stability = report
        .stats
        .as_ref()
        .and_then(|s| s.stability.clone())
        .unwrap();
    assert!(!stability.flapping, "{text}");
    assert_eq!(stability.up_rounds, 100, "{text}");
    // A busy machine may make a phase slow; nothing else may be found.
    assert!(
        report.diagnoses.iter().all(|d| d.code == Code::Slow),
        "{text}"
    );
    if report.diagnoses.is_empty() {
        assert_eq!(report.verdict, Verdict::Healthy, "{text}");
    }
}

/// The leftover-finder sees a listener, and only on its port.
#[test]
fn listeners_finds_the_process_holding_a_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    assert_eq!(listeners(port), vec![std::process::id()]);
    drop(listener);
    assert!(listeners(port).is_empty());
}
