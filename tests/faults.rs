//! Real faults on the real test mail server (Postfix + Dovecot on loopback, see
//! `scripts/testserver.sh`), each checked for the diagnosis code AND its cause,
//! each followed by a healthy control run once the fault is switched off.
//!
//! * Server-side faults reconfigure the shared Postfix/Dovecot: they hold [`LOCK`]
//!   (every test of this file does, so proxies never see a reconfigured server)
//!   and restore the pristine configuration in [`ServerFault`]'s `Drop`, so a
//!   failing test restores too.
//! * Network faults go through a fault-injecting proxy (`tests/faults/proxy.rs`)
//!   on 127.0.0.1:0 that stops when the test ends.
//! * Mailboxes test12..test16 only (other test files use test01..test11).
//!
//! Run: `cargo test --test faults -- --test-threads=1` (`FAULTS_VERBOSE=1` prints
//! every report's diagnoses and per-message results).

mod common;
#[path = "faults/proxy.rs"]
mod proxy;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{TestServer, run_in_process};
use mailprobe::app::cli::CheckArgs;
use mailprobe::core::endpoint::StarttlsPolicy;
use mailprobe::core::error::ErrorKind;
use mailprobe::core::phase::{Phase, Protocol};
use mailprobe::model::diagnosis::{Cause, Code, Diagnosis};
use mailprobe::model::report::{Report, Verdict};
use proxy::{Fault, Proxy};

/// Serializes every test of this file: faults reconfigure the one shared server.
static LOCK: Mutex<()> = Mutex::new(());

/// This file's turn, and the server to itself across test processes too
/// (other test files take the shared side of the same lock).
fn lock() -> (MutexGuard<'static, ()>, common::ServerTurn) {
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    (guard, common::exclusive_server())
}

const LADDER: &str = "0,10KiB,2MiB";
/// For content-filter faults: odd sizes whose attachment names
/// (`mailprobe-10.7KiB.bin`, `mailprobe-2.2MiB.bin`) no other test file sends, so
/// a filter rule matching them leaves concurrent runs of other files alone.
const FILTER_LADDER: &str = "0,11000,2300000";
const FILTER_NAMES: &str = r#"filename="mailprobe-(10\.7KiB|2\.2MiB)\.bin""#;

// ------------------------------------------------------------------ helpers

/// Run `scripts/testserver.sh ARGS...` with a time limit; Err with its output on failure.
fn script(args: &[&str]) -> Result<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("bash")
        .arg(root.join("scripts/testserver.sh"))
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run scripts/testserver.sh: {e}"))?;
    let limit = Duration::from_secs(120);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "testserver.sh {args:?} did not finish in {limit:?}"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for testserver.sh failed: {e}")),
        }
    };
    let output = child
        .wait_with_output()
        .map_err(|e| format!("testserver.sh output: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if status.success() {
        Ok(text)
    } else {
        Err(format!("testserver.sh {args:?} failed ({status}):\n{text}"))
    }
}

/// A server-side fault in effect. Dropping it deletes the test users' queued
/// mail (held or deferred probes must never arrive later) and restores the
/// pristine configuration, also when the test fails.
struct ServerFault {
    users: Vec<String>,
}

impl ServerFault {
    /// Apply a fault with `scripts/testserver.sh ARGS...`; further steps with [`ServerFault::also`].
    fn apply(users: &[String], args: &[&str]) -> ServerFault {
        let guard = ServerFault {
            users: users.to_vec(),
        };
        guard.also(args);
        guard
    }
    fn also(&self, args: &[&str]) {
        if let Err(e) = script(args) {
            panic!("cannot inject the fault: {e}");
        }
    }
    /// Switch the fault off now (the control run follows); Drop does it again harmlessly.
    fn restore(&self) {
        let users: Vec<&str> = self.users.iter().map(String::as_str).collect();
        let mut purge = vec!["purge-queue"];
        purge.extend(&users);
        if let Err(e) = script(&purge) {
            eprintln!("warning: {e}");
        }
        if let Err(e) = script(&["reset-config"]) {
            eprintln!("warning: {e}");
        }
    }
}

impl Drop for ServerFault {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A check of mailbox `local` over plain SMTP (port-25 style, no AUTH), IMAP and
/// POP3, with a small ladder and a short delivery timeout.
fn check_args(server: &TestServer, local: &str, starttls: StarttlsPolicy) -> CheckArgs {
    let mut args = server.args(local);
    args.smtp = Some(server.smtp_url());
    args.mailbox.imap = Some(server.imap_url());
    args.mailbox.pop3 = Some(server.pop3_url());
    args.mailbox.starttls = Some(starttls);
    args.no_smtp_auth = true;
    args.sizes = Some(LADDER.into());
    args.delivery_timeout = Some("8s".into());
    args
}

fn upstream(server: &TestServer, port: u16) -> SocketAddr {
    format!("{}:{port}", server.host)
        .parse()
        .expect("the test server host is an IP address")
}

/// A loopback port where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Run one check (its own timeouts bound it). Failed logins of other tests make
/// Dovecot delay logins from 127.0.0.1 (auth penalty), which a run would rightly
/// call `slow`: one good login first resets it.
fn run(server: &TestServer, args: CheckArgs) -> Report {
    if let Some(local) = args
        .mailbox
        .user
        .as_deref()
        .and_then(|u| u.split('@').next())
    {
        server.reset_auth_penalty(local);
    }
    let started = Instant::now();
    let report = run_in_process(args);
    eprintln!(
        "check took {:.1} s: verdict {}, diagnoses {:?}",
        started.elapsed().as_secs_f64(),
        report.verdict.as_str(),
        report
            .diagnoses
            .iter()
            .map(|d| (d.code.as_str(), d.cause.map(Cause::as_str)))
            .collect::<Vec<_>>()
    );
    if std::env::var_os("FAULTS_VERBOSE").is_some() {
        eprintln!("{}", explain(&report));
    }
    report
}

/// The diagnoses as JSON plus one line per message and protocol, for failure messages.
fn explain(report: &Report) -> String {
    let mut out = format!(
        "verdict {}; summary: {}\ndiagnoses: {}\n",
        report.verdict.as_str(),
        report.summary,
        serde_json::to_string_pretty(&report.diagnoses).unwrap_or_default()
    );
    for m in &report.messages {
        out.push_str(&format!(
            "message {} ({} B, attachment {}):\n",
            m.probe_id, m.size_bytes, m.attachment
        ));
        for (name, r) in [
            ("smtp", Some(&m.smtp)),
            ("imap", m.imap.as_ref()),
            ("pop3", m.pop3.as_ref()),
        ] {
            let Some(r) = r else { continue };
            out.push_str(&format!(
                "  {name}: ok={} found={:?} verified={:?} error={} reply={} skipped={:?} problems={:?}\n",
                r.ok,
                r.found,
                r.verified,
                r.error
                    .as_ref()
                    .map(|e| serde_json::to_string(e).unwrap_or_default())
                    .unwrap_or_else(|| "-".into()),
                r.reply
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "-".into()),
                r.skipped,
                r.verification.as_ref().map(|v| &v.problems),
            ));
        }
    }
    out.push_str(&format!(
        "cleanup: deleted {}, leftovers {:?}, errors {:?}\n",
        report.cleanup.deleted, report.cleanup.leftovers, report.cleanup.errors
    ));
    out
}

/// The leading diagnosis must be `code` (with `cause` when given); returns it.
fn assert_leading(report: &Report, code: Code, cause: Option<Cause>) -> &Diagnosis {
    let Some(first) = report.diagnoses.first() else {
        panic!(
            "expected {} / {:?}, got no diagnosis\n{}",
            code.as_str(),
            cause.map(Cause::as_str),
            explain(report)
        );
    };
    assert!(
        first.code == code && first.cause == cause,
        "expected the leading diagnosis {} / {:?}, got {} / {:?}\n{}",
        code.as_str(),
        cause.map(Cause::as_str),
        first.code.as_str(),
        first.cause.map(Cause::as_str),
        explain(report)
    );
    assert_eq!(
        report.verdict,
        first.severity.verdict(),
        "{}",
        explain(report)
    );
    first
}

/// A healthy control run: every message delivered and verified, no diagnosis at all.
fn assert_healthy(report: &Report) {
    assert!(
        report.diagnoses.is_empty() && report.verdict == Verdict::Healthy,
        "the control run after the fault is not healthy\n{}",
        explain(report)
    );
    assert!(
        report.messages.iter().all(|m| m.fully_ok()),
        "{}",
        explain(report)
    );
    assert!(report.cleanup.leftovers.is_empty(), "{}", explain(report));
}

fn evidence_mentions(d: &Diagnosis, any_of: &[&str]) -> bool {
    d.evidence
        .iter()
        .chain(std::iter::once(&d.summary))
        .any(|e| any_of.iter().any(|n| e.contains(n)))
}

/// Messages with an attachment failed over SMTP in this phase, the plain one got through.
fn assert_attachments_failed_in(report: &Report, phase: Phase) {
    for m in &report.messages {
        if m.attachment {
            let err = m.smtp.error.as_ref();
            assert!(
                !m.smtp.ok && err.is_some_and(|e| e.phase == Some(phase)),
                "the {} B message should fail in SMTP {}\n{}",
                m.size_bytes,
                phase.as_str(),
                explain(report)
            );
        } else {
            assert!(
                m.fully_ok(),
                "the plain message should get through\n{}",
                explain(report)
            );
        }
    }
}

// -------------------------------------------------------------------- tests

/// 1. Postfix message_size_limit below the largest rung: refused with 552 5.3.4.
#[test]
fn size_limit_is_attachments_fail_size_limit() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test12";
    server.clear_maildir(local);
    let fault = ServerFault::apply(
        &[server.user(local)],
        &["postconf", "message_size_limit=1048576"],
    );

    let mut args = check_args(server, local, StarttlsPolicy::Auto);
    args.bisect = true;
    let report = run(server, args);
    let d = assert_leading(&report, Code::AttachmentsFail, Some(Cause::SizeLimit));
    // Bisection finds the real limit within 5 % of 1 MiB, in a bounded number of sends.
    let limit = report.size_limit.as_ref().expect("bisection ran");
    let off = (limit.estimate_bytes as f64 - 1_048_576.0).abs() / 1_048_576.0;
    assert!(
        off <= 0.05,
        "estimate {} is {:.1} % off",
        limit.estimate_bytes,
        off * 100.0
    );
    assert!(limit.largest_accepted_bytes <= 1_048_576 && limit.smallest_refused_bytes > 1_040_000);
    assert!(limit.sends <= 12, "{} sends", limit.sends);
    assert!(
        !limit.advertised_disagrees,
        "Postfix advertises its real limit"
    );
    assert!(
        report.cleanup.leftovers.is_empty(),
        "bisection messages are cleaned up: {:?}",
        report.cleanup
    );
    assert!(
        evidence_mentions(d, &["552", "5.3.4", "SIZE 1048576"]),
        "the evidence should name the 552 / 5.3.4 reply or the advertised SIZE\n{}",
        explain(&report)
    );
    assert_eq!(
        report.smtp_server.as_ref().and_then(|s| s.advertised_size),
        Some(1_048_576),
        "{}",
        explain(&report)
    );
    let big = report
        .messages
        .iter()
        .find(|m| m.size_bytes == 2 << 20)
        .expect("the 2 MiB rung");
    assert!(
        big.smtp
            .error
            .as_ref()
            .is_some_and(|e| e.reply.as_ref().is_some_and(|r| r.is_size_limit())),
        "{}",
        explain(&report)
    );
    let small = report.messages.iter().find(|m| m.size_bytes == 10 << 10);
    assert!(small.is_some_and(|m| m.fully_ok()), "{}", explain(&report));

    fault.restore();
    assert_healthy(&run(
        server,
        check_args(server, local, StarttlsPolicy::Auto),
    ));
}

/// 2. A proxy that kills the SMTP session once an attachment goes through DATA.
#[test]
fn session_dropped_on_attachment_is_attachments_fail_session_dropped() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test13";
    server.clear_maildir(local);
    let proxy = Proxy::start(
        upstream(server, server.smtp_port),
        Fault::DropAfterDataOn(b"Content-Disposition: attachment"),
    );
    let mut args = check_args(server, local, StarttlsPolicy::Never);
    args.smtp = Some(proxy.url("smtp"));

    let report = run(server, args.clone());
    assert_leading(&report, Code::AttachmentsFail, Some(Cause::SessionDropped));
    assert_attachments_failed_in(&report, Phase::Data);
    for m in report.messages.iter().filter(|m| m.attachment) {
        let err = m.smtp.error.as_ref().expect("failed");
        assert!(
            err.is_connection_lost() || err.kind == ErrorKind::Network,
            "a dropped session, not {:?}\n{}",
            err.kind,
            explain(&report)
        );
        assert!(
            err.reply.is_none(),
            "no reply was sent\n{}",
            explain(&report)
        );
    }
    assert_eq!(
        proxy.triggered(),
        2,
        "the proxy dropped both attachment sessions"
    );

    proxy.set_fault(false);
    assert_healthy(&run(server, args));
    assert_eq!(proxy.triggered(), 2);
}

/// 3. A content filter (Postfix mime_header_checks) rejects attachments with 5.7.1.
#[test]
fn attachment_rejected_by_filter_is_attachments_fail_rejected() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test14";
    server.clear_maildir(local);
    let rule = format!(
        "/^Content-Disposition:.*attachment.*{FILTER_NAMES}/ REJECT 5.7.1 attachments not allowed"
    );
    let fault = ServerFault::apply(&[server.user(local)], &["checks", "mime_header", &rule]);
    let mut args = check_args(server, local, StarttlsPolicy::Auto);
    args.sizes = Some(FILTER_LADDER.into());

    let report = run(server, args.clone());
    let d = assert_leading(&report, Code::AttachmentsFail, Some(Cause::Rejected));
    assert!(
        evidence_mentions(d, &["5.7.1 attachments not allowed"]),
        "{}",
        explain(&report)
    );
    assert_attachments_failed_in(&report, Phase::Data);
    for m in report.messages.iter().filter(|m| m.attachment) {
        let err = m.smtp.error.as_ref().expect("failed");
        assert_eq!(err.kind, ErrorKind::Rejected, "{}", explain(&report));
        assert!(err.is_permanent(), "a 5xx reply\n{}", explain(&report));
    }

    fault.restore();
    assert_healthy(&run(server, args));
}

/// 4a. Everything accepted, nothing delivered: Postfix holds all mail for the
/// mailbox (header_checks HOLD on its To: header).
#[test]
fn all_mail_held_is_not_delivered() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test15";
    server.clear_maildir(local);
    let fault = ServerFault::apply(
        &[server.user(local)],
        &["checks", "header", "/^To:.*<test15@mailprobe\\.test>/ HOLD"],
    );

    let report = run(server, check_args(server, local, StarttlsPolicy::Auto));
    assert_leading(&report, Code::NotDelivered, Some(Cause::NotDelivered));
    for m in &report.messages {
        assert!(
            m.smtp.ok,
            "SMTP accepted every message\n{}",
            explain(&report)
        );
        for (_, r) in m.retrievals() {
            assert_eq!(r.found, Some(false), "{}", explain(&report));
            assert_eq!(
                r.error.as_ref().map(|e| e.kind),
                Some(ErrorKind::NotDelivered),
                "{}",
                explain(&report)
            );
        }
    }

    fault.restore();
    assert_healthy(&run(
        server,
        check_args(server, local, StarttlsPolicy::Auto),
    ));
    assert_eq!(server.count_probe_messages(local), 0, "held mail leaked");
}

/// 4b. Only attachments are held (mime_header_checks HOLD): accepted, never delivered.
#[test]
fn attachments_held_is_attachments_fail_not_delivered() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test15";
    server.clear_maildir(local);
    let rule = format!("/^Content-Disposition:.*attachment.*{FILTER_NAMES}/ HOLD");
    let fault = ServerFault::apply(&[server.user(local)], &["checks", "mime_header", &rule]);
    let mut args = check_args(server, local, StarttlsPolicy::Auto);
    args.sizes = Some(FILTER_LADDER.into());

    let report = run(server, args.clone());
    assert_leading(&report, Code::AttachmentsFail, Some(Cause::NotDelivered));
    assert!(
        report.messages.iter().all(|m| m.smtp.ok),
        "SMTP accepted every message\n{}",
        explain(&report)
    );
    for m in report.messages.iter().filter(|m| m.attachment) {
        for (_, r) in m.retrievals() {
            assert_eq!(
                r.error.as_ref().map(|e| e.kind),
                Some(ErrorKind::NotDelivered),
                "{}",
                explain(&report)
            );
        }
    }

    fault.restore();
    assert_healthy(&run(server, args));
    assert_eq!(server.count_probe_messages(local), 0, "held mail leaked");
}

/// 5. A proxy renames the attachment on the way in: it arrives altered.
#[test]
fn renamed_attachment_is_attachments_fail_altered() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test16";
    server.clear_maildir(local);
    let proxy = Proxy::start(
        upstream(server, server.smtp_port),
        Fault::Rewrite {
            from: b"filename=\"mailprobe-",
            to: b"filename=\"renamed01-",
        },
    );
    let mut args = check_args(server, local, StarttlsPolicy::Never);
    args.smtp = Some(proxy.url("smtp"));

    let report = run(server, args.clone());
    let d = assert_leading(&report, Code::AttachmentsFail, Some(Cause::Altered));
    assert!(
        evidence_mentions(d, &["renamed01-"]),
        "the evidence should show the new name\n{}",
        explain(&report)
    );
    for m in report.messages.iter().filter(|m| m.attachment) {
        assert!(m.smtp.ok, "{}", explain(&report));
        for (_, r) in m.retrievals() {
            assert_eq!(r.verified, Some(false), "{}", explain(&report));
            assert!(
                r.verification
                    .as_ref()
                    .is_some_and(|v| v.problems.iter().any(|p| p.contains("renamed01-"))),
                "{}",
                explain(&report)
            );
        }
    }
    assert_eq!(proxy.triggered(), 2, "both attachments were renamed");

    proxy.set_fault(false);
    assert_healthy(&run(server, args));
}

/// 6a. Only POP3 is down (Dovecot's POP3 listeners stopped for real) while SMTP
/// and IMAP work.
#[test]
fn pop3_down_is_endpoint_down_pop3() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test12";
    server.clear_maildir(local);
    let fault = ServerFault::apply(&[server.user(local)], &["pop3", "off"]);

    let mut args = check_args(server, local, StarttlsPolicy::Auto);
    args.delivery_timeout = Some("4s".into());
    let report = run(server, args.clone());
    let d = assert_leading(&report, Code::EndpointDown, None);
    assert_eq!(d.protocol, Some(Protocol::Pop3), "{}", explain(&report));
    assert_eq!(report.verdict, Verdict::Failing);
    assert_eq!(
        report.diagnoses.len(),
        1,
        "nothing but POP3 is wrong\n{}",
        explain(&report)
    );
    for m in &report.messages {
        assert!(
            m.smtp.ok && m.imap.as_ref().is_some_and(|r| r.ok),
            "{}",
            explain(&report)
        );
        let err = m.pop3.as_ref().and_then(|r| r.error.as_ref());
        assert!(
            err.is_some_and(|e| e.kind == ErrorKind::Refused && e.phase == Some(Phase::Connect)),
            "{}",
            explain(&report)
        );
    }

    fault.restore();
    assert_healthy(&run(server, args));
}

/// 6a'. The same with the POP3 URL at a closed loopback port (no server change).
#[test]
fn pop3_closed_port_is_endpoint_down_pop3() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test12";
    server.clear_maildir(local);
    let mut args = check_args(server, local, StarttlsPolicy::Auto);
    args.delivery_timeout = Some("4s".into());
    args.mailbox.pop3 = Some(format!("pop3://127.0.0.1:{}", closed_port()));
    let report = run(server, args.clone());
    let d = assert_leading(&report, Code::EndpointDown, None);
    assert_eq!(d.protocol, Some(Protocol::Pop3), "{}", explain(&report));
    assert_eq!(report.diagnoses.len(), 1, "{}", explain(&report));

    args.mailbox.pop3 = Some(server.pop3_url());
    assert_healthy(&run(server, args));
}

/// 6b. Everything down together (all three URLs at closed loopback ports).
#[test]
fn everything_down_is_shared_outage() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test12";
    let mut args = check_args(server, local, StarttlsPolicy::Auto);
    args.delivery_timeout = Some("4s".into());
    args.mailbox.connect_timeout = Some("2s".into());
    args.smtp = Some(format!("smtp://127.0.0.1:{}", closed_port()));
    args.mailbox.imap = Some(format!("imap://127.0.0.1:{}", closed_port()));
    args.mailbox.pop3 = Some(format!("pop3://127.0.0.1:{}", closed_port()));
    let report = run(server, args);
    let d = assert_leading(&report, Code::SharedOutage, None);
    assert_eq!(d.severity.verdict(), Verdict::Failing);
    assert_eq!(report.verdict, Verdict::Failing);

    assert_healthy(&run(
        server,
        check_args(server, local, StarttlsPolicy::Auto),
    ));
}

/// 7. A proxy in front of IMAP holds the greeting back longer than the greeting timeout.
#[test]
fn slow_imap_greeting_is_reported_in_the_greeting_phase() {
    let _lock = lock();
    let server = TestServer::get();
    let local = "test13";
    server.clear_maildir(local);
    let proxy = Proxy::start(
        upstream(server, server.imap_port),
        Fault::DelayGreeting(Duration::from_secs(3)),
    );
    let mut args = check_args(server, local, StarttlsPolicy::Never);
    args.mailbox.imap = Some(proxy.url("imap"));
    args.mailbox.greeting_timeout = Some("1s".into());
    args.delivery_timeout = Some("4s".into());

    let report = run(server, args.clone());
    let d = report
        .diagnoses
        .iter()
        .find(|d| matches!(d.code, Code::EndpointDown | Code::Slow))
        .unwrap_or_else(|| panic!("no endpoint_down/slow diagnosis\n{}", explain(&report)));
    assert_eq!(d.protocol, Some(Protocol::Imap), "{}", explain(&report));
    assert!(
        d.summary.contains("greeting"),
        "the diagnosis names the greeting phase\n{}",
        explain(&report)
    );
    assert_leading(&report, d.code, None);
    for m in &report.messages {
        let err = m.imap.as_ref().and_then(|r| r.error.as_ref());
        assert!(
            err.is_some_and(|e| e.phase == Some(Phase::Greeting) && e.kind == ErrorKind::Timeout),
            "IMAP fails in the greeting phase\n{}",
            explain(&report)
        );
        assert!(
            m.smtp.ok && m.pop3.as_ref().is_some_and(|r| r.ok),
            "{}",
            explain(&report)
        );
    }
    assert!(proxy.triggered() > 0 && proxy.connections() >= proxy.triggered());

    proxy.set_fault(false);
    assert_healthy(&run(server, args));
}
