//! The whole check's time limit (issue 14): against servers that never answer, a
//! default check of the 4-rung ladder ends within 30 s with exit 2 and the phase
//! that hung named; `--timeout 8s` ends within 10 s; no endpoint is waited on twice
//! (later rungs and cleanup are not attempted); a too-short `--timeout` is a
//! diagnosis, not a crash; usage errors exit 3.
//!
//! Fakes from `tests/hostile/server.rs` on 127.0.0.1:0. Retrieval cases send
//! through the real test server (port 2525, no AUTH) to mailbox test26 (IMAP) or
//! test27 (POP3). Elapsed times are upper bounds with generous margins.
//!
//! Needs `/usr/bin/time` and the test server (`scripts/testserver.sh start`).

mod common;
#[path = "hostile/run.rs"]
mod run;
#[path = "hostile/server.rs"]
mod server;

use std::time::Duration;

use common::TestServer;
use mailprobe::core::error::ErrorKind;
use mailprobe::core::phase::{Phase, Protocol};
use mailprobe::model::diagnosis::Code;
use mailprobe::model::report::Report;
use server::{Conn, Fake};

/// Kill a run after this long: a hang fails the test rather than the suite.
const HANG: Duration = Duration::from_secs(90);
/// A default check of a dead endpoint must end within this (issue 14).
const DEFAULT_BOUND: Duration = Duration::from_secs(30);
/// `--timeout 8s` must end within this.
const SHORT_BOUND: Duration = Duration::from_secs(10);

fn silent() -> Fake {
    Fake::spawn(|mut c: Conn| c.silence())
}

fn trickle() -> Fake {
    Fake::spawn(|mut c: Conn| c.trickle("220 fake.test ESMTP very slowly indeed\r\n"))
}

/// Agrees to STARTTLS, then never says a word of TLS.
fn smtp_starttls_stall() -> Fake {
    Fake::spawn(|mut c: Conn| {
        if server::smtp::hello(&mut c, &["STARTTLS"])
            && c.line().is_some_and(|l| l.eq_ignore_ascii_case("STARTTLS"))
            && c.send("220 go ahead\r\n")
        {
            c.silence();
        }
    })
}

fn smtp_only(url: &str, extra: &[&str]) -> Vec<String> {
    let user = TestServer::get().user("test26");
    let mut a: Vec<String> = [
        "check",
        "--smtp",
        url,
        "--smtp-only",
        "--no-smtp-auth",
        "--from",
        &user,
        "--to",
        &user,
    ]
    .map(String::from)
    .to_vec();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The real SMTP server and a fake for `protocol` (IMAP test26, POP3 test27).
fn retrieval(protocol: Protocol, url: &str, extra: &[&str]) -> Vec<String> {
    let server = TestServer::get();
    let local = if protocol == Protocol::Imap {
        "test26"
    } else {
        "test27"
    };
    let flag = if protocol == Protocol::Imap {
        "--imap"
    } else {
        "--pop3"
    };
    let user = server.user(local);
    let mut a: Vec<String> = vec![
        "check".into(),
        "--smtp".into(),
        server.smtp_url(),
        "--no-smtp-auth".into(),
        flag.into(),
        url.into(),
        "--user".into(),
        user.clone(),
        "--from".into(),
        user.clone(),
        "--to".into(),
        user,
        "--password-file".into(),
        server.password_file.to_string_lossy().into_owned(),
        "--ca-file".into(),
        server.ca_file.to_string_lossy().into_owned(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn results(report: &Report, protocol: Protocol) -> Vec<mailprobe::model::result::ProtocolResult> {
    report
        .messages
        .iter()
        .map(|m| match protocol {
            Protocol::Smtp => m.smtp.clone(),
            Protocol::Imap => m.imap.clone().expect("an IMAP result"),
            Protocol::Pop3 => m.pop3.clone().expect("a POP3 result"),
        })
        .collect()
}

/// Run, and check: exit 2, within `bound`, 4 rungs, the first failure of
/// `protocol` a timeout in `phase`, and the other rungs not waited on again.
fn dead_endpoint(
    what: &str,
    args: Vec<String>,
    protocol: Protocol,
    phase: Phase,
    bound: Duration,
) -> Report {
    let run = run::run(&args, &[], HANG);
    let report = run.assert_contained(what).clone();
    assert_eq!(run.code, 2, "{what}: exit code\n{}", run.stdout);
    assert!(
        run.elapsed < bound,
        "{what}: took {:?}, more than {bound:?}\n{}",
        run.elapsed,
        run.stdout
    );
    assert_eq!(report.messages.len(), 4, "{what}: the default ladder");
    let rs = results(&report, protocol);
    let first = rs[0]
        .error
        .clone()
        .unwrap_or_else(|| panic!("{what}: no error: {report:#?}"));
    assert_eq!(first.kind, ErrorKind::Timeout, "{what}: {first}");
    assert_eq!(first.protocol, Some(protocol), "{what}: {first}");
    assert_eq!(first.phase, Some(phase), "{what}: {first}");
    for r in &rs[1..] {
        let e = r.error.as_ref().expect("later rungs fail too");
        if protocol == Protocol::Smtp {
            // Each rung is its own SMTP session: the later ones are not tried.
            assert!(
                r.skipped.is_some() && e.message.contains("not attempted"),
                "{what}: a later rung was waited on again: {e}"
            );
        } else {
            // Messages waiting together share the one failed session.
            assert!(
                e == &first || e.message.contains("not attempted"),
                "{what}: a later rung was waited on again: {e}"
            );
        }
    }
    // The diagnosis names the endpoint and the phase.
    let named = report.diagnoses.iter().any(|d| {
        d.protocol == Some(protocol)
            && (d.summary.contains(phase.as_str())
                || d.evidence.iter().any(|e| e.contains(phase.as_str())))
    });
    assert!(
        named,
        "{what}: no diagnosis names {protocol:?} {phase:?}: {:#?}",
        report.diagnoses
    );
    eprintln!(
        "{what}: {first} [{} ms, exit {}]",
        run.elapsed.as_millis(),
        run.code
    );
    report
}

#[test]
fn smtp_silent_default_and_short_timeout() {
    let fake = silent();
    dead_endpoint(
        "smtp silent",
        smtp_only(&fake.url("smtp"), &[]),
        Protocol::Smtp,
        Phase::Greeting,
        DEFAULT_BOUND,
    );
    let report = dead_endpoint(
        "smtp silent --timeout 8s",
        smtp_only(&fake.url("smtp"), &["--timeout", "8s"]),
        Protocol::Smtp,
        Phase::Greeting,
        SHORT_BOUND,
    );
    let limit = report
        .time_limit
        .as_ref()
        .expect("time_limit in the report");
    assert!(limit.reached && limit.timeout_ms == 8000.0, "{limit:?}");
    assert_eq!(
        (limit.protocol, limit.phase),
        (Some(Protocol::Smtp), Some(Phase::Greeting))
    );
    let d = report
        .diagnoses
        .iter()
        .find(|d| d.code == Code::TimeLimit)
        .expect("a time_limit diagnosis");
    assert!(
        d.summary.contains("SMTP greeting") && d.summary.contains("8.0 s"),
        "{}",
        d.summary
    );
}

#[test]
fn smtp_trickling_greeting() {
    let fake = trickle();
    dead_endpoint(
        "smtp trickle",
        smtp_only(&fake.url("smtp"), &[]),
        Protocol::Smtp,
        Phase::Greeting,
        DEFAULT_BOUND,
    );
    dead_endpoint(
        "smtp trickle --timeout 8s",
        smtp_only(&fake.url("smtp"), &["--timeout", "8s"]),
        Protocol::Smtp,
        Phase::Greeting,
        SHORT_BOUND,
    );
}

#[test]
fn smtp_stalled_tls_handshake() {
    let fake = silent();
    dead_endpoint(
        "smtps stall",
        smtp_only(&fake.url("smtps"), &[]),
        Protocol::Smtp,
        Phase::Tls,
        DEFAULT_BOUND,
    );
    let starttls = smtp_starttls_stall();
    dead_endpoint(
        "smtp STARTTLS stall",
        smtp_only(&starttls.url("smtp"), &[]),
        Protocol::Smtp,
        Phase::Tls,
        DEFAULT_BOUND,
    );
    dead_endpoint(
        "smtp STARTTLS stall --timeout 8s",
        smtp_only(&starttls.url("smtp"), &["--timeout", "8s"]),
        Protocol::Smtp,
        Phase::Tls,
        SHORT_BOUND,
    );
}

/// A retrieval endpoint whose TLS handshake stalls: watched once, cleanup not
/// attempted, and the report says the messages may remain.
fn retrieval_stall(protocol: Protocol, scheme: &str, local: &str) {
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir(local);
    let fake = silent();
    for (what, extra, bound) in [
        ("default", &[][..], DEFAULT_BOUND),
        ("--timeout 8s", &["--timeout", "8s"][..], SHORT_BOUND),
    ] {
        let what = format!("{scheme} stall {what}");
        let report = dead_endpoint(
            &what,
            retrieval(protocol, &fake.url(scheme), extra),
            protocol,
            Phase::Tls,
            bound,
        );
        assert!(
            report.messages.iter().all(|m| m.smtp.ok),
            "{what}: SMTP accepted all"
        );
        assert_eq!(
            report.cleanup.leftovers.len(),
            4,
            "{what}: {:?}",
            report.cleanup
        );
        assert!(
            report
                .cleanup
                .errors
                .iter()
                .any(|e| e.message.contains("not attempted")
                    && e.message.contains("mailprobe cleanup")),
            "{what}: cleanup waited again or did not say so: {:?}",
            report.cleanup.errors
        );
        let sessions = report.sessions.get(&protocol).expect("session counts");
        assert_eq!(
            sessions.sessions, 1,
            "{what}: one wait on the dead endpoint: {sessions:?}"
        );
        server.clear_maildir(local);
    }
}

#[test]
fn imap_stalled_tls_handshake() {
    retrieval_stall(Protocol::Imap, "imaps", "test26");
}

#[test]
fn pop3_stalled_tls_handshake() {
    retrieval_stall(Protocol::Pop3, "pop3s", "test27");
}

/// A time limit too short for the ladder: a clear diagnosis and a report, no crash.
/// Three 40 MiB rungs (POP3 streams them) cannot be sent and read back in 2 s.
#[test]
fn too_short_timeout_is_diagnosed() {
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir("test26");
    let mut args = server.cli("test26");
    args.extend(
        [
            "--smtp",
            &server.submission_url(),
            "--pop3",
            &server.pop3s_url(),
            "--sizes",
            "0,40MiB,40MiB,40MiB",
            "--timeout",
            "2s",
        ]
        .map(String::from),
    );
    let run = run::run(&args, &[], HANG);
    let report = run.assert_contained("--timeout 2s");
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.elapsed < Duration::from_secs(8),
        "took {:?}",
        run.elapsed
    );
    let d = report
        .diagnoses
        .iter()
        .find(|d| d.code == Code::TimeLimit)
        .unwrap_or_else(|| panic!("no time_limit diagnosis: {:#?}", report.diagnoses));
    assert!(
        d.summary.contains("time limit (2.0 s) ran out during"),
        "{}",
        d.summary
    );
    assert!(
        d.hints.iter().any(|h| h.contains("--timeout")),
        "{:?}",
        d.hints
    );
    assert!(run.stdout.contains("time_limit"), "{}", run.stdout);
    // Whatever got through was cleaned up in the reserved slice, or is listed.
    let sent = report.messages.iter().filter(|m| m.smtp.ok).count();
    assert_eq!(
        report.cleanup.deleted + report.cleanup.leftovers.len(),
        sent,
        "{:?}",
        report.cleanup
    );
    server.clear_maildir("test26");
}

#[test]
fn usage_errors_exit_3() {
    for args in [
        &["check", "--bogus-flag"][..],
        &["check", "--concurrency", "many"],
        &["verify", "--stable"],
        &["no-such-command"],
    ] {
        let out = common::run_binary(args, &[]);
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty(), "{args:?}: says why");
    }
    for args in [&["--help"][..], &["check", "--help"], &["--version"]] {
        let out = common::run_binary(args, &[]);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    let out = common::run_binary(
        &[
            "check",
            "--timeout",
            "10ms",
            "--smtp",
            "smtp://127.0.0.1:1",
            "--smtp-only",
            "--no-smtp-auth",
            "--from",
            "a@b.test",
            "--to",
            "a@b.test",
        ],
        &[],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("--timeout"), "{}", out.stderr);
}
