//! Hostile servers: a probe that hangs when the server misbehaves is worse than
//! no probe. Each case runs the real binary against a scripted fake
//! (`tests/hostile/server.rs`) on 127.0.0.1:0 and asserts:
//!
//! * a classified error naming the protocol and phase (`ErrorKind`, `Phase`),
//! * the run ends within its bound (short timeouts, 30 s outer limit: a hang fails),
//! * no panic, exit code 2 or 3, and the JSON report is written and parses,
//! * peak memory (from `/usr/bin/time -f %M`) below [`run::MAX_RSS_KIB`].
//!
//! SMTP cases talk to the fake alone (`--smtp-only`). Retrieval cases send through
//! the real test server (port 2525, no AUTH) so the message is really accepted,
//! and read it back from the fake IMAP/POP3 server. IMAP cases use test21 (the
//! fake learns the probe id from the SEARCH); POP3 cases use test22 and run one
//! at a time (the fake finds the probe id in test22's Maildir).
//!
//! Needs `/usr/bin/time` (`apt-get install time`) and the test server
//! (`scripts/testserver.sh start`).

mod common;
#[path = "hostile/run.rs"]
mod run;
#[path = "hostile/server.rs"]
mod server;

use std::sync::Mutex;
use std::time::Duration;

use common::TestServer;
use mailprobe::core::error::{ErrorKind, ProbeError};
use mailprobe::core::phase::{Phase, Protocol};
use mailprobe::model::report::Report;
use server::{Conn, Fake, filler, garbage};

/// The outer bound of one run: every timeout below is 1-3 s.
const LIMIT: Duration = Duration::from_secs(30);
/// A single run should not take longer than this either (timeouts plus retries).
const EXPECTED_MAX: Duration = Duration::from_secs(20);

static POP3_TURN: Mutex<()> = Mutex::new(());

fn timeouts() -> Vec<String> {
    [
        "--connect-timeout",
        "2s",
        "--greeting-timeout",
        "1500ms",
        "--command-timeout",
        "2s",
        "--data-timeout",
        "3s",
        "--delivery-timeout",
        "3s",
    ]
    .map(String::from)
    .to_vec()
}

/// A password file for the fakes (written once: runs read it concurrently).
fn password_file() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostile-password");
        std::fs::write(&path, "hostile-test-password\n").expect("password file");
        path
    })
    .clone()
}

/// SMTP alone against the fake.
fn smtp_args(url: &str, size: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "check",
        "--smtp",
        url,
        "--smtp-only",
        "--no-smtp-auth",
        "--from",
        "test21@mailprobe.test",
        "--to",
        "test21@mailprobe.test",
        "--sizes",
        size,
    ]
    .map(String::from)
    .to_vec();
    a.extend(timeouts());
    a
}

/// The real SMTP server, and the fake for `protocol` (IMAP test21, POP3 test22).
fn retrieval_args(protocol: Protocol, url: &str) -> Vec<String> {
    let server = TestServer::get();
    let local = if protocol == Protocol::Imap {
        "test21"
    } else {
        "test22"
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
        password_file().to_string_lossy().into_owned(),
        "--ca-file".into(),
        server.ca_file.to_string_lossy().into_owned(),
        "--sizes".into(),
        "0".into(),
    ];
    a.extend(timeouts());
    a
}

/// Where a report's first error for `protocol` lies.
fn error_of(report: &Report, protocol: Protocol) -> ProbeError {
    let m = report.messages.first().expect("one message in the report");
    let r = match protocol {
        Protocol::Smtp => Some(&m.smtp),
        Protocol::Imap => m.imap.as_ref(),
        Protocol::Pop3 => m.pop3.as_ref(),
    };
    r.and_then(|r| r.error.clone())
        .unwrap_or_else(|| panic!("no {protocol:?} error in the report: {report:#?}"))
}

/// Run one case and check everything the suite promises.
fn check_case(
    what: &str,
    args: Vec<String>,
    protocol: Protocol,
    kinds: &[ErrorKind],
    phase: Phase,
) {
    let run = run::run(&args, &[], LIMIT);
    let report = run.assert_contained(what);
    let err = error_of(report, protocol);
    assert_eq!(err.protocol, Some(protocol), "{what}: {err}");
    assert!(
        kinds.contains(&err.kind),
        "{what}: error kind {:?} (expected one of {kinds:?}): {err}",
        err.kind
    );
    assert_eq!(err.phase, Some(phase), "{what}: phase of {err}");
    assert!(
        run.elapsed < EXPECTED_MAX,
        "{what}: took {:?} (timeouts are 1-3 s)",
        run.elapsed
    );
    eprintln!(
        "{what}: {err} [{} ms, peak {} KiB, exit {}]",
        run.elapsed.as_millis(),
        run.max_rss_kib,
        run.code
    );
}

fn smtp_case(what: &str, fake: &Fake, scheme: &str, size: &str, kinds: &[ErrorKind], phase: Phase) {
    check_case(
        what,
        smtp_args(&fake.url(scheme), size),
        Protocol::Smtp,
        kinds,
        phase,
    );
}

fn imap_case(what: &str, fake: &Fake, scheme: &str, kinds: &[ErrorKind], phase: Phase) {
    let _shared = common::shared_server();
    check_case(
        what,
        retrieval_args(Protocol::Imap, &fake.url(scheme)),
        Protocol::Imap,
        kinds,
        phase,
    );
    TestServer::get().clear_maildir("test21");
}

fn pop3_case(what: &str, fake: &Fake, scheme: &str, kinds: &[ErrorKind], phase: Phase) {
    let _turn = POP3_TURN.lock().unwrap_or_else(|e| e.into_inner());
    let _shared = common::shared_server();
    TestServer::get().clear_maildir("test22");
    check_case(
        what,
        retrieval_args(Protocol::Pop3, &fake.url(scheme)),
        Protocol::Pop3,
        kinds,
        phase,
    );
    TestServer::get().clear_maildir("test22");
}

/// The probe id of the newest probe message in test22's Maildir (the POP3 fake's view).
fn test22_probe_id() -> Option<String> {
    let server = TestServer::get();
    let files = server.files_containing("test22", common::PROBE_MARKER);
    let file = files.last()?;
    let text = String::from_utf8_lossy(&file.bytes);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Mailprobe-Id: "))
        .map(|s| s.trim().to_string())
}

use ErrorKind::*;

// ------------------------------------------------------- behaviours shared by all

fn silent() -> Fake {
    Fake::spawn(|mut c: Conn| c.silence())
}
fn trickle(greeting: &'static str) -> Fake {
    Fake::spawn(move |mut c: Conn| c.trickle(greeting))
}
fn endless_line(prefix: &'static str) -> Fake {
    Fake::spawn(move |mut c: Conn| c.flood(prefix.as_bytes(), filler(b'A')))
}
fn binary_garbage() -> Fake {
    Fake::spawn(|mut c: Conn| c.flood(&garbage(99), garbage))
}
fn closes_mid_reply(partial: &'static str) -> Fake {
    Fake::spawn(move |mut c: Conn| {
        c.send(partial);
        c.close();
    })
}
/// Implicit TLS port that answers the ClientHello with garbage.
fn garbage_tls() -> Fake {
    Fake::spawn(|mut c: Conn| {
        let mut hello = [0u8; 5];
        let _ = std::io::Read::read(&mut c.stream(), &mut hello);
        c.flood(b"HTTP/1.1 400 Bad Request\r\n\r\n", garbage);
    })
}

// ------------------------------------------------------------------------ SMTP

#[test]
fn smtp_silent() {
    smtp_case(
        "smtp silent",
        &silent(),
        "smtp",
        "0",
        &[Timeout],
        Phase::Greeting,
    );
}

#[test]
fn smtp_one_byte_per_second() {
    let fake = trickle("220 fake.test ESMTP slowly\r\n");
    smtp_case(
        "smtp trickle",
        &fake,
        "smtp",
        "0",
        &[Timeout],
        Phase::Greeting,
    );
}

#[test]
fn smtp_line_without_end() {
    smtp_case(
        "smtp endless line",
        &endless_line("220 "),
        "smtp",
        "0",
        &[Protocol],
        Phase::Greeting,
    );
}

#[test]
fn smtp_binary_garbage() {
    smtp_case(
        "smtp garbage",
        &binary_garbage(),
        "smtp",
        "0",
        &[Protocol],
        Phase::Greeting,
    );
}

#[test]
fn smtp_ten_thousand_line_ehlo() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("220 fake.test ESMTP\r\n");
        if c.line().is_none() {
            return;
        }
        let mut reply = String::new();
        for i in 0..10_000 {
            reply.push_str(&format!("250-X-EXTENSION-{i}\r\n"));
        }
        reply.push_str("250 OK\r\n");
        c.send(&reply);
        c.silence();
    });
    smtp_case(
        "smtp 10k EHLO",
        &fake,
        "smtp",
        "0",
        &[Protocol],
        Phase::Ehlo,
    );
}

#[test]
fn smtp_invalid_codes() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("220 fake.test ESMTP\r\n");
        if c.line().is_some() {
            c.send("2x0-what\r\n666 is this\r\n");
        }
        c.silence();
    });
    smtp_case(
        "smtp invalid code",
        &fake,
        "smtp",
        "0",
        &[Protocol],
        Phase::Ehlo,
    );
    let greeting = Fake::spawn(|mut c: Conn| {
        c.send("999 not a greeting\r\n");
        c.silence();
    });
    smtp_case(
        "smtp invalid greeting code",
        &greeting,
        "smtp",
        "0",
        &[Protocol],
        Phase::Greeting,
    );
}

#[test]
fn smtp_closes_mid_reply() {
    let fake = closes_mid_reply("220-fake.test ESMTP\r\n220-still");
    smtp_case(
        "smtp closes mid-reply",
        &fake,
        "smtp",
        "0",
        &[Closed],
        Phase::Greeting,
    );
}

/// A server that offers PIPELINING, refuses the recipient and still answers the
/// pipelined DATA with 354 (RFC 2920 says it must not): the probe ends the empty
/// message with a lone dot, reports the refusal at RCPT TO and does not hang.
#[test]
fn smtp_pipelined_data_accepted_after_a_refused_recipient() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let group_then_dot = Arc::new(AtomicBool::new(false));
    let seen = group_then_dot.clone();
    let fake = Fake::spawn(move |mut c: Conn| {
        if !server::smtp::hello(&mut c, &["PIPELINING"]) {
            return;
        }
        // The whole group arrives before any reply is sent.
        let group: Vec<String> = (0..3).map_while(|_| c.line()).collect();
        let upper: Vec<String> = group.iter().map(|l| l.to_ascii_uppercase()).collect();
        let in_order = upper.len() == 3
            && upper[0].starts_with("MAIL FROM")
            && upper[1].starts_with("RCPT TO")
            && upper[2] == "DATA";
        if !in_order
            || !c.send("250 2.1.0 ok\r\n550 5.1.1 no such user here\r\n354 go ahead anyway\r\n")
        {
            return;
        }
        if c.line().as_deref() == Some(".") {
            seen.store(true, Ordering::SeqCst);
            c.send("554 5.5.1 no valid recipients\r\n");
        }
        if c.line().is_some_and(|l| l.eq_ignore_ascii_case("QUIT")) {
            c.send("221 bye\r\n");
        }
    });
    smtp_case(
        "smtp 354 after a refused pipelined recipient",
        &fake,
        "smtp",
        "0",
        &[Rejected],
        Phase::RcptTo,
    );
    assert!(
        group_then_dot.load(Ordering::SeqCst),
        "the probe did not pipeline MAIL, RCPT and DATA, or did not end the empty message"
    );
}

/// A pipelined group answered with 421 and a hang-up: the refusal at MAIL FROM is
/// the outcome, not the closed connection behind it.
#[test]
fn smtp_pipelined_group_refused_with_421_and_a_hang_up() {
    let fake = Fake::spawn(|mut c: Conn| {
        if server::smtp::hello(&mut c, &["PIPELINING"])
            && c.line()
                .is_some_and(|l| l.to_ascii_uppercase().starts_with("MAIL FROM"))
        {
            c.send("421 4.3.2 shutting down\r\n");
        }
    });
    smtp_case(
        "smtp 421 to a pipelined group",
        &fake,
        "smtp",
        "0",
        &[Rejected],
        Phase::MailFrom,
    );
}

#[test]
fn smtp_reset_mid_data() {
    let fake = Fake::spawn(|mut c: Conn| {
        if !server::smtp::hello(&mut c, &[]) || !server::smtp::until_data(&mut c) {
            return;
        }
        // Take a little of the message, then drop the connection with data unread.
        for _ in 0..50 {
            if c.line().is_none() {
                return;
            }
        }
        c.reset();
    });
    smtp_case(
        "smtp reset mid-DATA",
        &fake,
        "smtp",
        "2MiB",
        &[Reset, Closed],
        Phase::Data,
    );
}

#[test]
fn smtp_data_reply_never_ends() {
    let fake = Fake::spawn(|mut c: Conn| {
        if !server::smtp::hello(&mut c, &[]) || !server::smtp::until_data(&mut c) {
            return;
        }
        if c.read_until_line(".") {
            c.flood(b"250-", |_| {
                b"250-queued and still talking\r\n".repeat(2048)
            });
        }
    });
    smtp_case(
        "smtp endless DATA reply",
        &fake,
        "smtp",
        "0",
        &[Protocol, Timeout],
        Phase::Data,
    );
}

#[test]
fn smtp_starttls_then_plain_text() {
    let fake = Fake::spawn(|mut c: Conn| {
        if !server::smtp::hello(&mut c, &["STARTTLS"]) {
            return;
        }
        if c.line().is_some() {
            c.send("220 2.0.0 Ready to start TLS\r\n");
            std::thread::sleep(Duration::from_millis(100));
            c.send("250 and now in plain text, no TLS at all\r\n");
        }
        c.silence();
    });
    smtp_case(
        "smtp STARTTLS then plain",
        &fake,
        "smtp",
        "0",
        &[Tls],
        Phase::Tls,
    );
}

#[test]
fn smtp_garbage_instead_of_tls() {
    smtp_case(
        "smtps garbage TLS",
        &garbage_tls(),
        "smtps",
        "0",
        &[Tls],
        Phase::Tls,
    );
}

// ------------------------------------------------------------------------ IMAP

const IMAP_GREETING: &str = "* OK [CAPABILITY IMAP4rev1] fake ready\r\n";

#[test]
fn imap_silent() {
    imap_case(
        "imap silent",
        &silent(),
        "imap",
        &[Timeout],
        Phase::Greeting,
    );
}

#[test]
fn imap_one_byte_per_second() {
    imap_case(
        "imap trickle",
        &trickle(IMAP_GREETING),
        "imap",
        &[Timeout],
        Phase::Greeting,
    );
}

#[test]
fn imap_line_without_end() {
    imap_case(
        "imap endless line",
        &endless_line("* OK "),
        "imap",
        &[Protocol],
        Phase::Greeting,
    );
}

#[test]
fn imap_binary_garbage() {
    imap_case(
        "imap garbage",
        &binary_garbage(),
        "imap",
        &[Protocol],
        Phase::Greeting,
    );
}

#[test]
fn imap_ten_thousand_line_capability() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("* OK fake ready\r\n");
        let Some(line) = c.line() else { return };
        let tag = line.split(' ').next().unwrap_or("*").to_string();
        let mut reply = String::new();
        for i in 0..10_000 {
            reply.push_str(&format!("* CAPABILITY IMAP4rev1 X-{i}\r\n"));
        }
        reply.push_str(&format!("{tag} OK done\r\n"));
        c.send(&reply);
        c.silence();
    });
    imap_case(
        "imap 10k CAPABILITY",
        &fake,
        "imap",
        &[Protocol],
        Phase::Capability,
    );
}

#[test]
fn imap_invalid_status() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("* OK fake ready\r\n");
        let Some(line) = c.line() else { return };
        let tag = line.split(' ').next().unwrap_or("*").to_string();
        c.send(&format!("{tag} MAYBE who knows\r\n"));
        c.silence();
    });
    imap_case(
        "imap invalid status",
        &fake,
        "imap",
        &[Protocol],
        Phase::Capability,
    );
}

#[test]
fn imap_closes_mid_reply() {
    let fake = closes_mid_reply("* OK [CAPABILITY IMAP4rev1 ");
    imap_case(
        "imap closes mid-reply",
        &fake,
        "imap",
        &[Closed],
        Phase::Greeting,
    );
}

#[test]
fn imap_reset_mid_fetch() {
    let fake = Fake::spawn(|mut c: Conn| {
        server::imap::serve(&mut c, &|c, _tag, _id| {
            c.send("* 1 FETCH (UID 7 BODY[] {100000}\r\nReceived: from somewhere\r\n");
            c.reset();
        })
    });
    imap_case(
        "imap reset mid-FETCH",
        &fake,
        "imap",
        &[Reset, Closed],
        Phase::Fetch,
    );
}

#[test]
fn imap_fetch_never_ends() {
    let fake = Fake::spawn(|mut c: Conn| {
        server::imap::serve(&mut c, &|c, _tag, id| {
            let head =
                format!("* 1 FETCH (UID 7 BODY[] {{400000000}}\r\nX-Mailprobe-Id: {id}\r\n\r\n");
            c.flood(head.as_bytes(), |_| b"endless body line\r\n".repeat(3000));
        })
    });
    imap_case(
        "imap endless FETCH",
        &fake,
        "imap",
        &[Protocol, Timeout],
        Phase::Fetch,
    );
}

#[test]
fn imap_fetch_larger_than_announced() {
    let fake = Fake::spawn(|mut c: Conn| {
        server::imap::serve(&mut c, &|c, tag, id| {
            let head = format!("* 1 FETCH (UID 7 BODY[] {{200}}\r\nX-Mailprobe-Id: {id}\r\n\r\n");
            let mut body = head.into_bytes();
            body.extend(b"more than announced\r\n".repeat(200_000));
            body.extend(format!(")\r\n{tag} OK done\r\n").as_bytes());
            c.send_bytes(&body);
            c.silence();
        })
    });
    imap_case(
        "imap FETCH larger than announced",
        &fake,
        "imap",
        &[Protocol],
        Phase::Fetch,
    );
}

#[test]
fn imap_starttls_then_plain_text() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] fake ready\r\n");
        let Some(line) = c.line() else { return };
        let tag = line.split(' ').next().unwrap_or("*").to_string();
        c.send(&format!("{tag} OK Begin TLS negotiation now\r\n"));
        std::thread::sleep(Duration::from_millis(100));
        c.send("* OK this is not TLS at all\r\n");
        c.silence();
    });
    imap_case(
        "imap STARTTLS then plain",
        &fake,
        "imap",
        &[Tls],
        Phase::Tls,
    );
}

#[test]
fn imap_garbage_instead_of_tls() {
    imap_case(
        "imaps garbage TLS",
        &garbage_tls(),
        "imaps",
        &[Tls],
        Phase::Tls,
    );
}

// ------------------------------------------------------------------------ POP3

fn pop3_fake(on_retr: impl Fn(&mut Conn, &str) + Send + Sync + 'static) -> Fake {
    Fake::spawn(move |mut c: Conn| server::pop3::serve(&mut c, &test22_probe_id, &on_retr))
}

#[test]
fn pop3_silent() {
    pop3_case(
        "pop3 silent",
        &silent(),
        "pop3",
        &[Timeout],
        Phase::Greeting,
    );
}

#[test]
fn pop3_one_byte_per_second() {
    pop3_case(
        "pop3 trickle",
        &trickle("+OK fake POP3 ready\r\n"),
        "pop3",
        &[Timeout],
        Phase::Greeting,
    );
}

#[test]
fn pop3_line_without_end() {
    pop3_case(
        "pop3 endless line",
        &endless_line("+OK "),
        "pop3",
        &[Protocol],
        Phase::Greeting,
    );
}

#[test]
fn pop3_binary_garbage() {
    pop3_case(
        "pop3 garbage",
        &binary_garbage(),
        "pop3",
        &[Protocol],
        Phase::Greeting,
    );
}

#[test]
fn pop3_ten_thousand_line_capa() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("+OK fake POP3 ready\r\n");
        if c.line().is_none() {
            return;
        }
        let mut reply = String::from("+OK\r\n");
        for i in 0..10_000 {
            reply.push_str(&format!("X-CAPABILITY-{i}\r\n"));
        }
        reply.push_str(".\r\n");
        c.send(&reply);
        c.silence();
    });
    pop3_case(
        "pop3 10k CAPA",
        &fake,
        "pop3",
        &[Protocol],
        Phase::Capability,
    );
}

#[test]
fn pop3_invalid_status() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("+OK fake POP3 ready\r\n");
        if c.line().is_some() {
            c.send("+MAYBE who knows\r\n");
        }
        c.silence();
    });
    pop3_case(
        "pop3 invalid status",
        &fake,
        "pop3",
        &[Protocol],
        Phase::Capability,
    );
}

#[test]
fn pop3_closes_mid_reply() {
    pop3_case(
        "pop3 closes mid-reply",
        &closes_mid_reply("+OK fake PO"),
        "pop3",
        &[Closed],
        Phase::Greeting,
    );
}

#[test]
fn pop3_reset_mid_retr() {
    let fake = pop3_fake(|c, id| {
        c.send(&format!(
            "+OK 100000 octets\r\nX-Mailprobe-Id: {id}\r\nReceived: x\r\n"
        ));
        c.reset();
    });
    pop3_case(
        "pop3 reset mid-RETR",
        &fake,
        "pop3",
        &[Reset, Closed],
        Phase::Fetch,
    );
}

#[test]
fn pop3_retr_never_ends() {
    let fake = pop3_fake(|c, id| {
        let head = format!("+OK 500 octets\r\nX-Mailprobe-Id: {id}\r\n\r\n");
        c.flood(head.as_bytes(), |_| b"endless body line\r\n".repeat(3000));
    });
    pop3_case(
        "pop3 endless RETR",
        &fake,
        "pop3",
        &[Protocol, Timeout],
        Phase::Fetch,
    );
}

#[test]
fn pop3_retr_larger_than_announced() {
    let fake = pop3_fake(|c, id| {
        let mut body = format!("+OK 300 octets\r\nX-Mailprobe-Id: {id}\r\n\r\n").into_bytes();
        body.extend(b"more than announced\r\n".repeat(200_000));
        body.extend(b".\r\n");
        c.send_bytes(&body);
        c.silence();
    });
    pop3_case(
        "pop3 RETR larger than announced",
        &fake,
        "pop3",
        &[Protocol],
        Phase::Fetch,
    );
}

#[test]
fn pop3_stls_then_plain_text() {
    let fake = Fake::spawn(|mut c: Conn| {
        c.send("+OK fake POP3 ready\r\n");
        if c.line().is_none() {
            return;
        }
        c.send("+OK\r\nUSER\r\nSTLS\r\n.\r\n");
        if c.line().is_none() {
            return;
        }
        c.send("+OK Begin TLS negotiation\r\n");
        std::thread::sleep(Duration::from_millis(100));
        c.send("+OK this is not TLS at all\r\n");
        c.silence();
    });
    pop3_case("pop3 STLS then plain", &fake, "pop3", &[Tls], Phase::Tls);
}

#[test]
fn pop3_garbage_instead_of_tls() {
    pop3_case(
        "pop3s garbage TLS",
        &garbage_tls(),
        "pop3s",
        &[Tls],
        Phase::Tls,
    );
}
