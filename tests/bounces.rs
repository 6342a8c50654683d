//! Bounces, delivery status notifications and Junk against the real Postfix and
//! Dovecot (issue 12): a quota bounce, a later hop refusing large messages, a
//! server without DSN, a Sieve rule filing attachments into Junk, and foreign
//! bounces and Junk mail that must stay byte-identical with their flags.
//!
//! Mailboxes: test29, test30, test31. Faults (quota, junk, `dsn off`,
//! `bounce-large`) reload the shared server: they are applied with
//! `scripts/testserver.sh` under the exclusive turn and undone by a guard (which
//! also purges the queue of what a fault kept there).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    TestServer, contains, exclusive_server, run_binary_timeout, run_in_process, shared_server,
};
use mailprobe::app::cli::CheckArgs;
use mailprobe::model::bounce::{BounceAction, BounceReason};
use mailprobe::model::diagnosis::{Cause, Code, Severity};
use mailprobe::model::report::{Report, Verdict};

/// Run `scripts/testserver.sh ARGS`; panics with its output when it fails.
fn testserver(args: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/testserver.sh"))
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/testserver.sh: {e}"));
    assert!(
        out.status.success(),
        "scripts/testserver.sh {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fault that is undone when the test ends, passed or not.
struct Fault(Vec<&'static str>);

impl Fault {
    fn on(apply: &[&str], undo: &[&'static str]) -> Fault {
        // A fault left over by an aborted run would change what this test sees.
        testserver(undo);
        testserver(apply);
        Fault(undo.to_vec())
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        // Purge first: with the fault undone, a queued message would be delivered.
        let users: Vec<String> = ["test29", "test30", "test31"]
            .iter()
            .map(|u| format!("{u}@mailprobe.test"))
            .collect();
        let mut purge = vec!["purge-queue"];
        purge.extend(users.iter().map(String::as_str));
        testserver(&purge);
        testserver(&self.0);
    }
}

fn check_args(server: &TestServer, local: &str, sizes: &str) -> CheckArgs {
    let mut a = server.args(local);
    a.smtp = Some(server.submission_url());
    a.mailbox.imap = Some(server.imap_url());
    a.sizes = Some(sizes.into());
    a
}

/// A message file put into `<folder>/cur` of a Maildir with Maildir flags
/// (`FS`: flagged and seen), owned like the Maildir. `folder` "" is INBOX.
fn plant(server: &TestServer, local: &str, folder: &str, content: &[u8], n: usize) -> PathBuf {
    let root = server.maildir(local);
    let dir = if folder.is_empty() {
        root.clone()
    } else {
        root.join(format!(".{folder}"))
    };
    let meta = std::fs::metadata(&root).expect("Maildir");
    for sub in ["", "cur", "new", "tmp"] {
        let d = dir.join(sub);
        if !d.is_dir() {
            std::fs::create_dir_all(&d).expect("create the folder");
            std::os::unix::fs::chown(&d, Some(meta.uid()), Some(meta.gid())).expect("chown (root)");
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let name = format!(
        "{}.M{}P{}Q{n}.bounces-test,S={}:2,FS",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        content.len()
    );
    let tmp = dir.join("tmp").join(&name);
    let cur = dir.join("cur").join(&name);
    std::fs::write(&tmp, content).expect("write tmp");
    std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid())).expect("chown (root)");
    std::fs::rename(&tmp, &cur).expect("move to cur/");
    cur
}

/// A standard DSN about a message the probe never sent (no probe id at all).
fn foreign_bounce(rcpt: &str) -> Vec<u8> {
    format!(
        "Return-Path: <>\r\nFrom: MAILER-DAEMON@mail.mailprobe.test (Mail Delivery System)\r\n\
         To: {rcpt}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <foreign-bounce-1@mail.mailprobe.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"F\"\r\n\r\n\
         --F\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
         --F\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mail.mailprobe.test\r\n\
         Original-Envelope-Id: someone-elses-envelope\r\n\r\n\
         Final-Recipient: rfc822; nobody@example.test\r\nAction: failed\r\nStatus: 5.2.2\r\n\
         Diagnostic-Code: smtp; 552 5.2.2 Quota exceeded\r\n\r\n\
         --F\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: {rcpt}\r\n\
         Message-ID: <quarterly-report-7@example.test>\r\nSubject: quarterly report\r\n\r\n--F--\r\n"
    )
    .into_bytes()
}

/// Mail from a person that quotes a probe message's headers: no notification.
fn foreign_quote(rcpt: &str) -> Vec<u8> {
    format!(
        "Return-Path: <alice@example.test>\r\nFrom: Alice <alice@example.test>\r\nTo: {rcpt}\r\n\
         Subject: what is this message?\r\nMessage-ID: <alice-asks-1@example.test>\r\n\r\n\
         I got this, is it yours?\r\n> X-Mailprobe-Id: mailprobe-1-00\r\n"
    )
    .into_bytes()
}

/// Every file of a Maildir folder (`""`: INBOX) that mentions one of the ids.
fn files_mentioning(
    server: &TestServer,
    local: &str,
    folder: &str,
    ids: &[String],
) -> Vec<PathBuf> {
    let root = server.maildir(local);
    let dir = if folder.is_empty() {
        root
    } else {
        root.join(format!(".{folder}"))
    };
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten().take(10_000) {
            if let Ok(bytes) = std::fs::read(e.path())
                && ids.iter().any(|id| contains(&bytes, id.as_bytes()))
            {
                out.push(e.path());
            }
        }
    }
    out
}

fn ids(report: &Report) -> Vec<String> {
    report.messages.iter().map(|m| m.probe_id.clone()).collect()
}

fn leading(report: &Report) -> &mailprobe::model::diagnosis::Diagnosis {
    report
        .diagnoses
        .first()
        .unwrap_or_else(|| panic!("no diagnosis: {}", report.summary))
}

fn assert_unchanged(path: &Path, bytes: &[u8]) {
    let now = std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "foreign message {} is gone or renamed (flags changed?): {e}",
            path.display()
        )
    });
    assert_eq!(now, bytes, "foreign message {} was altered", path.display());
}

#[test]
fn quota_bounce_is_bounced_quota_at_once_and_cleaned_up_with_foreign_bounces_untouched() {
    let _turn = exclusive_server();
    let server = TestServer::get();
    let local = "test29";
    server.clear_maildir(local);
    let rcpt = server.user(local);
    let bounce = foreign_bounce(&rcpt);
    let quote = foreign_quote(&rcpt);
    let planted_bounce = plant(server, local, "", &bounce, 1);
    let planted_quote = plant(server, local, "", &quote, 2);
    // Plain mail and a few bounces fit, a 1 MiB attachment does not.
    let _quota = Fault::on(&["quota", local, "96k"], &["quota", local, "off"]);

    let report = run_in_process(check_args(server, local, "0,1MiB"));

    let d = leading(&report);
    assert_eq!(d.code, Code::AttachmentsFail, "{report:#?}");
    assert_eq!(d.cause, Some(Cause::Bounced), "{}", d.summary);
    assert_eq!(d.reason, Some(BounceReason::Quota), "{}", d.summary);
    assert!(
        d.evidence.iter().any(|e| e.contains("5.2.2")),
        "evidence without the status: {:?}",
        d.evidence
    );
    let big = &report.messages[1];
    assert_eq!(big.smtp.dsn_requested, Some(true), "Postfix offers DSN");
    let b = big
        .imap
        .as_ref()
        .and_then(|r| r.bounce.clone())
        .expect("the bounce");
    assert_eq!(b.action, BounceAction::Failed);
    assert_eq!(b.status.as_deref(), Some("5.2.2"));
    assert_eq!(b.matched_by, "envelope_id");
    assert!(b.reporting_mta.is_some() && b.diagnostic.is_some(), "{b:?}");
    // The bounce comes back within a second here; it ends the wait at once, not
    // after the 30 s delivery timeout.
    let seen = b.after_acceptance_ms.expect("seen after acceptance");
    assert!(seen < 5_000.0, "bounce seen {seen} ms after acceptance");
    assert!(
        report.duration_ms < 15_000.0,
        "the check waited {} ms: the bounce did not end the wait",
        report.duration_ms
    );
    // Nothing of the run is left: the plain message and the bounce are deleted,
    // the bounced message is no leftover.
    assert!(report.cleanup.leftovers.is_empty(), "{:?}", report.cleanup);
    assert!(
        report.cleanup.notifications_deleted >= 1,
        "{:?}",
        report.cleanup
    );
    assert!(
        report
            .cleanup
            .places
            .iter()
            .any(|p| p.probe_id == big.probe_id && p.place == "bounced"),
        "{:?}",
        report.cleanup.places
    );
    assert!(
        !report
            .diagnoses
            .iter()
            .any(|d| d.code == Code::CleanupIncomplete)
    );
    let left = files_mentioning(server, local, "", &ids(&report));
    assert!(left.is_empty(), "left in the mailbox: {left:?}");
    assert_unchanged(&planted_bounce, &bounce);
    assert_unchanged(&planted_quote, &quote);
    server.clear_maildir(local);
}

#[test]
fn sieve_junk_is_delivered_to_junk_verified_and_deleted_from_junk() {
    let _turn = exclusive_server();
    let server = TestServer::get();
    let local = "test30";
    server.clear_maildir(local);
    let _junk = Fault::on(&["junk", local, "on"], &["junk", local, "off"]);
    let rcpt = server.user(local);
    let foreign = foreign_quote(&rcpt);
    let planted = plant(server, local, "Junk", &foreign, 3);

    let mut args = check_args(server, local, "0,10KiB");
    args.mailbox.pop3 = Some(server.pop3_url());
    let report = run_in_process(args.clone());

    assert_eq!(report.verdict, Verdict::Degraded, "{report:#?}");
    let d = leading(&report);
    assert_eq!(d.code, Code::DeliveredToJunk, "{}", report.summary);
    assert_eq!(d.severity, Severity::Degraded);
    assert!(d.summary.contains("10 KiB"), "{}", d.summary);
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("POP3 sees only INBOX"))
    );
    let plain = report.messages[0].imap.as_ref().unwrap();
    assert!(plain.ok && plain.folder.is_none(), "{plain:?}");
    let filed = report.messages[1].imap.as_ref().unwrap();
    assert_eq!(filed.folder.as_deref(), Some("Junk"));
    assert_eq!(filed.verified, Some(true), "verified in Junk");
    assert_eq!(filed.deleted, Some(true));
    let pop3 = report.messages[1].pop3.as_ref().unwrap();
    assert!(
        pop3.skipped
            .as_deref()
            .is_some_and(|s| s.contains("POP3 sees only INBOX")),
        "{pop3:?}"
    );
    assert!(files_mentioning(server, local, "Junk", &ids(&report)).is_empty());
    assert!(files_mentioning(server, local, "", &ids(&report)).is_empty());
    assert_unchanged(&planted, &foreign);

    // --junk-is-failure makes the same finding failing.
    args.elsewhere.junk_is_failure = true;
    let strict = run_in_process(args);
    assert_eq!(strict.verdict, Verdict::Failing, "{}", strict.summary);
    assert_eq!(leading(&strict).code, Code::DeliveredToJunk);
    assert!(files_mentioning(server, local, "Junk", &ids(&strict)).is_empty());
    assert_unchanged(&planted, &foreign);
    server.clear_maildir(local);
}

#[test]
fn cleanup_sweeps_junk_and_notifications_about_probe_messages_only() {
    let _turn = shared_server();
    let server = TestServer::get();
    let local = "test31";
    server.clear_maildir(local);
    let rcpt = server.user(local);
    let old_id = "mailprobe-1000-00000000000000aa";
    let leftover = format!(
        "From: mailprobe <{rcpt}>\r\nTo: {rcpt}\r\nSubject: mailprobe test 10KiB {old_id}\r\n\
         Message-ID: <{old_id}@mailprobe.test>\r\nX-Mailprobe-Id: {old_id}\r\n\r\nprobe id: {old_id}\r\n"
    );
    let notice = format!(
        "Return-Path: <>\r\nFrom: MAILER-DAEMON@relay.example (Mail Delivery System)\r\n\
         To: {rcpt}\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example\r\n\
         Original-Envelope-Id: {old_id}\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\n\
         Action: failed\r\nStatus: 5.3.4\r\n\r\n--B--\r\n"
    );
    let in_junk = plant(server, local, "Junk", leftover.as_bytes(), 4);
    let bounce_about_probe = plant(server, local, "", notice.as_bytes(), 5);
    let foreign = foreign_bounce(&rcpt);
    let quote = foreign_quote(&rcpt);
    let kept_bounce = plant(server, local, "", &foreign, 6);
    let kept_quote = plant(server, local, "", &quote, 7);
    let kept_junk = plant(server, local, "Junk", &quote, 8);

    let mut args = server.cleanup_cli(local);
    args.extend([
        "--imap".into(),
        server.imap_url(),
        "--older-than".into(),
        "1h".into(),
    ]);
    let out = run_binary_timeout(&args, &[], Duration::from_secs(60));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("deleted {old_id}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("deleted 1 notification"),
        "{}",
        out.stdout
    );
    assert!(!in_junk.exists(), "the leftover in Junk was not swept");
    assert!(
        !bounce_about_probe.exists(),
        "the bounce about a probe message was not swept"
    );
    assert_unchanged(&kept_bounce, &foreign);
    assert_unchanged(&kept_quote, &quote);
    assert_unchanged(&kept_junk, &quote);
    server.clear_maildir(local);
}

#[test]
fn a_later_hop_refusing_large_messages_is_a_size_bounce_that_bisection_follows() {
    let _turn = exclusive_server();
    let server = TestServer::get();
    let local = "test30";
    server.clear_maildir(local);
    let _hop = Fault::on(&["bounce-large", "300k"], &["bounce-large", "off"]);

    let mut args = check_args(server, local, "0,10KiB,1MiB");
    args.bisect = true;
    let report = run_in_process(args);

    let d = leading(&report);
    assert_eq!(d.code, Code::AttachmentsFail, "{report:#?}");
    assert_eq!(d.cause, Some(Cause::Bounced), "{}", d.summary);
    assert_eq!(d.reason, Some(BounceReason::Size), "{}", d.summary);
    let limit = report
        .size_limit
        .as_ref()
        .expect("bisection ran on the size bounce");
    assert!(limit.sends >= 2, "{limit:?}");
    // The hop's limit is 300 KiB of whole message.
    assert!(
        limit.largest_accepted_bytes <= 300 * 1024 && limit.smallest_refused_bytes > 300 * 1024,
        "{limit:?}"
    );
    assert!(report.cleanup.leftovers.is_empty(), "{:?}", report.cleanup);
    let mut all = ids(&report);
    all.push("mailprobe-".into());
    let left = files_mentioning(server, local, "", &all);
    assert!(left.is_empty(), "left in the mailbox: {left:?}");
    server.clear_maildir(local);
}

#[test]
fn without_dsn_nothing_is_requested_and_the_bounce_is_still_found_by_its_headers() {
    let _turn = exclusive_server();
    let server = TestServer::get();
    let local = "test31";
    server.clear_maildir(local);
    let _dsn = Fault::on(&["dsn", "off"], &["dsn", "on"]);
    let _quota = Fault::on(&["quota", local, "96k"], &["quota", local, "off"]);

    let report = run_in_process(check_args(server, local, "0,1MiB"));

    assert!(
        report
            .messages
            .iter()
            .all(|m| m.smtp.dsn_requested == Some(false)),
        "DSN requested from a server without DSN"
    );
    let d = leading(&report);
    assert_eq!(d.code, Code::AttachmentsFail, "{report:#?}");
    assert_eq!(d.cause, Some(Cause::Bounced));
    assert_eq!(d.reason, Some(BounceReason::Quota));
    let b = report.messages[1]
        .imap
        .as_ref()
        .and_then(|r| r.bounce.clone())
        .unwrap();
    assert_ne!(b.matched_by, "envelope_id", "no ENVID was sent");
    assert!(
        report.duration_ms < 15_000.0,
        "waited {} ms",
        report.duration_ms
    );
    assert!(files_mentioning(server, local, "", &ids(&report)).is_empty());
    server.clear_maildir(local);
}

#[test]
fn bounces_to_a_separate_sender_mailbox_are_read_with_bounce_mailbox() {
    // test29 sends, test31 receives (and is full): the bounce goes to test29.
    let _turn = exclusive_server();
    let server = TestServer::get();
    let (sender, rcpt) = ("test29", "test31");
    server.clear_maildir(sender);
    server.clear_maildir(rcpt);
    let _quota = Fault::on(&["quota", rcpt, "64k"], &["quota", rcpt, "off"]);

    let mut args = check_args(server, rcpt, "0,1MiB");
    args.from = Some(server.user(sender));
    args.mailbox.folders.bounce_mailbox = Some(server.user(sender));
    let report = run_in_process(args);

    let d = leading(&report);
    assert_eq!(d.code, Code::AttachmentsFail, "{report:#?}");
    assert_eq!(d.cause, Some(Cause::Bounced));
    assert_eq!(d.reason, Some(BounceReason::Quota));
    assert!(
        report.duration_ms < 15_000.0,
        "waited {} ms",
        report.duration_ms
    );
    assert!(
        report.cleanup.notifications_deleted >= 1,
        "{:?}",
        report.cleanup
    );
    assert!(files_mentioning(server, sender, "", &ids(&report)).is_empty());
    assert!(files_mentioning(server, rcpt, "", &ids(&report)).is_empty());
    server.clear_maildir(sender);
    server.clear_maildir(rcpt);
}

#[test]
fn a_delay_notification_makes_the_missing_message_deferred_with_its_reason() {
    let _turn = exclusive_server();
    let server = TestServer::get();
    let local = "test31";
    server.clear_maildir(local);
    // 452 4.2.2 at LMTP: Postfix keeps the large message queued and sends a
    // delay notice (Action: delayed) a second later.
    let _quota = Fault::on(
        &["quota", local, "96k", "tempfail"],
        &["quota", local, "off"],
    );

    let mut args = check_args(server, local, "0,1MiB");
    args.delivery_timeout = Some("8s".into());
    let report = run_in_process(args);

    let d = leading(&report);
    assert_eq!(d.code, Code::AttachmentsFail, "{report:#?}");
    assert_eq!(d.cause, Some(Cause::Deferred), "{}", d.summary);
    assert_eq!(d.reason, Some(BounceReason::Quota), "{}", d.summary);
    let b = report.messages[1]
        .imap
        .as_ref()
        .and_then(|r| r.bounce.clone())
        .unwrap();
    assert_eq!(b.action, BounceAction::Delayed);
    assert_eq!(b.status.as_deref(), Some("4.2.2"));
    // The delay notice is deleted with the run's messages.
    assert!(
        report.cleanup.notifications_deleted >= 1,
        "{:?}",
        report.cleanup
    );
    assert!(
        report
            .cleanup
            .places
            .iter()
            .any(|p| p.place == "not_arrived"),
        "{:?}",
        report.cleanup.places
    );
    assert!(files_mentioning(server, local, "", &ids(&report)).is_empty());
}
