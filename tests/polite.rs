//! Polite watching (issue 13 item 5, issue 16's POP3 part): bounded logins,
//! LOGIN-DELAY honoured, one IDLE kept open, and STATUS where IDLE stays silent.
//!
//! * Real Dovecot (`scripts/testserver.sh`), mailboxes test26 and test27: a
//!   default check of the 4-rung ladder logs in at most 3 times per retrieval
//!   protocol and keeps IDLE open instead of re-issuing it.
//! * GNU Mailutils (`scripts/interop.sh`), users test09..test16: pop3d on the
//!   `pop3_delay` port (LOGIN-DELAY 60, per user, so each test has its own user)
//!   and imap4d, which never tells an open session about new mail.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use mailprobe::core::phase::Protocol;
use mailprobe::model::report::{Report, SessionCounts, Verdict};

/// The interop servers' settings from `scripts/interop.sh env`.
struct Interop {
    vars: HashMap<String, String>,
}

impl Interop {
    fn get() -> Interop {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/interop.sh");
        let up = Command::new(script)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            up,
            "the interop servers are not running: start them with `scripts/interop.sh start` (as root)"
        );
        let out = Command::new(script)
            .arg("env")
            .output()
            .expect("scripts/interop.sh env");
        let mut vars = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                vars.insert(k.to_string(), v.replace('\\', ""));
            }
        }
        Interop { vars }
    }
    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("scripts/interop.sh env sets no {name}"))
    }
    fn url(&self, scheme: &str, port: &str) -> String {
        format!(
            "{scheme}://{}:{}",
            self.var("MAILPROBE_INTEROP_HOST"),
            self.var(port)
        )
    }
    fn args(&self, local: &str) -> Vec<String> {
        let user = format!("{local}@{}", self.var("MAILPROBE_INTEROP_DOMAIN"));
        [
            "check",
            "--smtp",
            &self.url("smtp", "MAILPROBE_INTEROP_SUBMISSION_PORT"),
            "--user",
            &user,
            "--password-file",
            self.var("MAILPROBE_INTEROP_PASSWORD_FILE"),
            "--ca-file",
            self.var("MAILPROBE_INTEROP_CA_FILE"),
        ]
        .map(String::from)
        .to_vec()
    }
    /// Remove what a test left in `local`'s Maildir (its own user only).
    fn clear_maildir(&self, local: &str) {
        let root = PathBuf::from(self.var("MAILPROBE_INTEROP_MAILDIR_ROOT"))
            .join(local)
            .join("Maildir");
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(root.join(sub)) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// The LOGIN-DELAY of `pop3_delay` is per user and lasts a minute: when this
/// test ran for `local` less than that ago (a rerun), wait out the rest first.
/// Call again after the test's last login.
fn login_delay_turn(local: &str) {
    let marker = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("login-delay-{local}"));
    let since = std::fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    if let Some(since) = since {
        let delay = Duration::from_secs(75);
        if since < delay {
            std::thread::sleep(delay - since);
        }
    }
    std::fs::write(&marker, b"").expect("marker file");
}

/// Run the binary with a JSON report; returns the exit code, the report, the
/// human output and how long it took.
fn run(args: &[String]) -> (i32, Report, String, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let mut args = args.to_vec();
    args.extend(["--output".into(), format!("json={}", json.display())]);
    let started = Instant::now();
    let out = common::run_binary_timeout(&args, &[], Duration::from_secs(120));
    let elapsed = started.elapsed();
    let report: Report = serde_json::from_slice(
        &std::fs::read(&json)
            .unwrap_or_else(|e| panic!("no JSON report ({e})\n{}\n{}", out.stdout, out.stderr)),
    )
    .expect("the report parses");
    (out.code, report, out.stdout, elapsed)
}

fn counts(report: &Report, protocol: Protocol) -> SessionCounts {
    report
        .sessions
        .get(&protocol)
        .cloned()
        .unwrap_or_else(|| panic!("no {protocol:?} session counts: {:?}", report.sessions))
}

/// Dovecot: the default ladder over IMAP and POP3, then POP3 alone.
#[test]
fn dovecot_default_ladder_logs_in_at_most_three_times() {
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir("test26");
    let dir = tempfile::tempdir().expect("temp dir");
    let transcript = dir.path().join("transcript.txt");
    let mut args = server.cli("test26");
    args.extend(
        [
            "--smtp",
            &server.submission_url(),
            "--imap",
            &server.imaps_url(),
            "--pop3",
            &server.pop3s_url(),
            "--transcript",
            transcript.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let (code, report, stdout, _) = run(&args);
    assert_eq!(code, 0, "{stdout}");
    let imap = counts(&report, Protocol::Imap);
    let pop3 = counts(&report, Protocol::Pop3);
    // The quick looks after each acceptance are bounded: searches by probe id at
    // most six per message (besides the first look, and the cleanup's one).
    let text = std::fs::read_to_string(&transcript).expect("transcript");
    let looks = text
        .lines()
        .filter(|l| {
            l.contains(" imap#")
                && l.contains("C: ")
                && l.contains("UID SEARCH")
                && l.contains("HEADER X-Mailprobe-Id")
                && !l.contains("NOT HEADER")
        })
        .count();
    assert!(
        looks <= 4 * 6 + 1 + imap.idle_commands as usize,
        "{looks} IMAP searches:\n{text}"
    );
    // A quick look is a NOOP (searching only when it shows new mail): at most nine
    // per message, each with the NOOP of the search it may lead to, and one for
    // each ordinary pass.
    let noops = text
        .lines()
        .filter(|l| l.contains(" imap#") && l.contains("C: ") && l.ends_with(" NOOP"))
        .count();
    assert!(
        noops <= 4 * 9 * 2 + 2 * 4 + 2 + imap.idle_commands as usize,
        "{noops} IMAP NOOPs:\n{text}"
    );
    // The watching session also cleans up: one IMAP login for the whole check.
    assert_eq!((imap.logins, imap.sessions), (1, 1), "IMAP: {imap:?}");
    assert!(pop3.logins <= 3 && pop3.sessions <= 3, "POP3: {pop3:?}");
    // POP3 may fetch beside IMAP on Dovecot, but logs in only once IMAP has found
    // every message (its fetch of the last one has begun).
    let at = |l: &str| -> f64 {
        l.strip_prefix('+')
            .and_then(|r| r.split('s').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no time in {l:?}"))
    };
    let last_found = text
        .lines()
        .filter(|l| l.contains(" imap#") && l.contains("C: mpf UID FETCH"))
        .map(at)
        .fold(f64::MIN, f64::max);
    let pop3_login = text
        .lines()
        .find(|l| l.contains(" pop3#") && (l.contains("C: USER") || l.contains("C: AUTH")))
        .map(at)
        .expect("a POP3 login in the transcript");
    assert!(
        pop3_login >= last_found,
        "POP3 logged in at +{pop3_login}s, before IMAP found the last message (+{last_found}s):\n{text}"
    );
    // IMAP is watched with IDLE kept open (before: about 10 IDLEs a second); none
    // at all when every rung was already there at the first search.
    assert!(imap.idle_commands <= 4, "IDLE re-issued: {imap:?}");
    // Dovecot announces new mail during IDLE: no fallback to STATUS.
    assert_eq!(imap.status_polls, 0, "{imap:?}");
    // POP3 logged in once IMAP had seen the messages: one session fetched them all.
    assert_eq!(pop3.logins, 1, "{pop3:?}");
    assert_eq!(server.count_probe_messages("test26"), 0);

    server.clear_maildir("test27");
    let mut args = server.cli("test27");
    args.extend(
        [
            "--smtp",
            &server.submission_url(),
            "--pop3",
            &server.pop3s_url(),
        ]
        .map(String::from),
    );
    let (code, report, stdout, _) = run(&args);
    assert_eq!(code, 0, "{stdout}");
    let pop3 = counts(&report, Protocol::Pop3);
    assert!(pop3.logins <= 3, "POP3 alone: {pop3:?}");
    assert_eq!(server.count_probe_messages("test27"), 0);
}

/// POP3 alone on a server with LOGIN-DELAY 60: one login sees, verifies and
/// deletes the ladder; a second check within the minute does not hammer the server.
#[test]
fn pop3_login_delay_is_honoured() {
    let interop = Interop::get();
    login_delay_turn("test12");
    interop.clear_maildir("test12");
    let mut args = interop.args("test12");
    args.extend([
        "--pop3".into(),
        interop.url("pop3", "MAILPROBE_INTEROP_POP3_DELAY_PORT"),
    ]);
    let (code, report, stdout, _) = run(&args);
    assert_eq!(code, 0, "{stdout}");
    let pop3 = counts(&report, Protocol::Pop3);
    assert_eq!(pop3.logins, 1, "{pop3:?}");
    assert_eq!(pop3.login_delay_s, Some(60), "{pop3:?}");
    assert!(
        pop3.notes.iter().any(|n| n.contains("LOGIN-DELAY")),
        "{pop3:?}"
    );
    assert!(report.cleanup.leftovers.is_empty(), "{:?}", report.cleanup);
    assert!(report.messages.iter().all(|m| {
        m.pop3
            .as_ref()
            .is_some_and(|r| r.ok && r.deleted == Some(true))
    }));

    // Within the minute: the one login is refused; no retry loop, no second wait.
    let (code, report, stdout, elapsed) = run(&args);
    assert_ne!(code, 0, "{stdout}");
    let pop3 = counts(&report, Protocol::Pop3);
    assert!(pop3.logins <= 1 && pop3.sessions <= 3, "{pop3:?}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    assert!(stdout.contains("LOGIN-DELAY"), "{stdout}");
    assert!(stdout.contains("mailprobe cleanup"), "{stdout}");
    login_delay_turn("test12");
    interop.clear_maildir("test12");
}

/// IMAP and POP3 (LOGIN-DELAY) together on Mailutils: POP3 waits for IMAP, logs
/// in once and fetches everything in that session.
#[test]
fn pop3_with_login_delay_follows_imap() {
    let interop = Interop::get();
    login_delay_turn("test13");
    interop.clear_maildir("test13");
    let mut args = interop.args("test13");
    args.extend([
        "--imap".into(),
        interop.url("imaps", "MAILPROBE_INTEROP_IMAPS_PORT"),
        "--pop3".into(),
        interop.url("pop3", "MAILPROBE_INTEROP_POP3_DELAY_PORT"),
    ]);
    let (_, report, stdout, _) = run(&args);
    let pop3 = counts(&report, Protocol::Pop3);
    assert_eq!(pop3.logins, 1, "{pop3:?}\n{stdout}");
    for m in &report.messages {
        let (imap, pop3) = (m.imap.as_ref().unwrap(), m.pop3.as_ref().unwrap());
        assert!(imap.ok && pop3.ok, "{}: {stdout}", m.probe_id);
    }
    login_delay_turn("test13");
    interop.clear_maildir("test13");
}

/// imap4d never reports new mail to an open session: STATUS finds it, the
/// mailbox is selected again, and the ladder is seen within a few seconds.
#[test]
fn mailutils_imap_delivery_seen_through_status() {
    let interop = Interop::get();
    interop.clear_maildir("test14");
    let mut args = interop.args("test14");
    args.extend([
        "--imap".into(),
        interop.url("imaps", "MAILPROBE_INTEROP_IMAPS_PORT"),
    ]);
    let (_, report, stdout, elapsed) = run(&args);
    for m in &report.messages {
        let r = m.imap.as_ref().unwrap();
        assert!(r.ok && r.found == Some(true), "{}: {stdout}", m.probe_id);
        assert!(r.delivery_ms.unwrap() < 15_000.0, "{stdout}");
    }
    let imap = counts(&report, Protocol::Imap);
    assert!(imap.status_polls >= 1, "{imap:?}");
    assert!(imap.idle_commands <= 3, "{imap:?}");
    // One more than on Dovecot: imap4d answers EXPUNGE with `* n EXPUNGED`, which
    // cannot be parsed, so cleanup checks in a fresh session what is really gone.
    assert!(imap.logins <= 4, "{imap:?}");
    assert!(imap.notes.iter().any(|n| n.contains("STATUS")), "{imap:?}");
    assert!(report.verdict <= Verdict::Degraded, "{stdout}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    interop.clear_maildir("test14");
}
