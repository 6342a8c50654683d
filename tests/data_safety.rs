//! Data safety under faults (issue #7): mailprobe deletes only its own messages,
//! whatever breaks while it reads and deletes.
//!
//! A mailbox (test23) is filled with 300 foreign messages dropped straight into its
//! Maildir: ordinary mail (some with attachments, some already flagged \Deleted by
//! their owner), probe lookalikes (probe-like subjects, probe header in the body,
//! malformed `X-Mailprobe-Id` values, a folded header, a similar header name), and
//! messages carrying well-formed probe ids no run created (recent, future and old).
//! Then 12 bounded probe runs go through two connection-cutting proxies
//! (`tests/data_safety/cutter.rs`), one in front of IMAP and one in front of POP3,
//! that reset the connection mid-FETCH, mid-RETR, mid-TOP, mid-UIDL, mid-SEARCH, on
//! STORE, UID EXPUNGE, DELE and QUIT (before or after the server got the command),
//! one run with UIDPLUS hidden. After every run:
//!
//! * every foreign message is byte-identical (matched by Message-ID, since Dovecot
//!   renames the files), and
//! * every message the run reports as cleaned up is really gone.
//!
//! Finally `mailprobe cleanup` through the direct (proxy-free) endpoints:
//! `--older-than 1h` deletes only the old well-formed foreign ids (they are probe
//! leftovers by definition) and keeps the recent ones; `--older-than 0s` then
//! deletes every probe message the runs left and the recent well-formed ids, and
//! nothing else: the malformed lookalikes and all ordinary mail stay byte-identical.
//!
//! Run: `cargo test --test data_safety` (`DATA_SAFETY_VERBOSE=1` prints each run).

mod common;
#[path = "data_safety/cutter.rs"]
mod cutter;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestServer, contains, run_binary_timeout};
use cutter::{Cut, Cutter};
use mailprobe::core::endpoint::StarttlsPolicy;
use mailprobe::model::report::Report;

const LOCAL: &str = "test23";
const FOREIGN_COUNT: usize = 300;
/// Longest one probe run may take (its own timeouts end it much earlier).
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// What a foreign message is, and so which sweeps may delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Ordinary mail: never deleted.
    Plain,
    /// Ordinary mail its owner flagged \Deleted (not yet expunged): never deleted,
    /// in particular not by an EXPUNGE of the probe's own messages.
    FlaggedDeleted,
    /// Looks like a probe (subject, probe header in the body, malformed header
    /// value, folded header, similar header name): never deleted.
    Lookalike,
    /// A well-formed probe id no run created, sent a few minutes ago or in the
    /// future: kept by the runs and by `cleanup --older-than 1h`.
    RecentProbe,
    /// A well-formed probe id no run created, hours or decades old: kept by the
    /// runs, deleted by `cleanup --older-than 1h` (a leftover by definition).
    OldProbe,
}

struct Foreign {
    message_id: String,
    bytes: Vec<u8>,
    kind: Kind,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A small deterministic generator (no seed file, same mailbox every time).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn base64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect()
}

/// Probe-header values that are not well-formed probe ids: never candidates.
fn malformed_values() -> Vec<String> {
    vec![
        "hello".into(),
        "mailprobe-x".into(),
        "mailprobe-".into(),
        "mailprobe--00".into(),
        "mailprobe-12a-00".into(),
        "mailprobe-123-ab_c".into(),
        "mailprobe-123-abc def".into(),
        "mailprobe-123-abc;".into(),
        "Mailprobe-123-abc".into(),
        "xmailprobe-123-abc".into(),
        "<mailprobe-1-00>".into(),
        format!("mailprobe-1-{}", "a".repeat(80)),
        format!("mailprobe-{}-00", "9".repeat(60)),
    ]
}

/// The 300 foreign messages, deterministic apart from the timestamps in the
/// well-formed ids.
fn foreign_messages(rcpt: &str) -> Vec<Foreign> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let now = now_ms();
    let malformed = malformed_values();
    let mut out = Vec::new();
    for i in 0..FOREIGN_COUNT {
        let message_id = format!("foreign-{i:04}-{:08x}@example.test", rng.next() as u32);
        let mut headers = String::new();
        let mut subject = format!("quarterly numbers #{i}");
        let mut body = format!("Hello,\r\n\r\nthis is foreign message {i}; leave it alone.\r\n");
        let kind = match i % 10 {
            0 => {
                // Malformed probe header values, a folded header, a similar name.
                let n = (i / 10) % (malformed.len() + 2);
                let v = malformed
                    .get(n)
                    .cloned()
                    .unwrap_or_else(|| "mailprobe-1-00".into());
                match n {
                    n if n == malformed.len() => {
                        headers.push_str("X-Mailprobe-Id:\r\n mailprobe-1-00\r\n")
                    }
                    n if n == malformed.len() + 1 => {
                        headers.push_str("X-Mailprobe-Id-Other: mailprobe-1-00\r\n")
                    }
                    _ => headers.push_str(&format!("X-Mailprobe-Id: {v}\r\n")),
                }
                subject = format!("mailprobe test 10KiB {v}");
                Kind::Lookalike
            }
            1 => {
                // Well-formed, recent (1..30 minutes ago) or in the future.
                let ts = match i % 7 {
                    0 => now + 86_400_000,
                    3 => 99_999_999_999_999_999_999u128,
                    _ => now - 60_000 * (1 + (i as u128 % 30)),
                };
                let id = format!("mailprobe-{ts}-f0e1{i:012}");
                headers.push_str(&format!("X-Mailprobe-Id: {id}\r\n"));
                subject = format!("mailprobe test plain {id}");
                Kind::RecentProbe
            }
            2 if i % 50 == 2 => {
                // Well-formed and old: `mailprobe-1-00` (twice: duplicate ids happen)
                // and ids two hours and a day old.
                let id = match i / 50 {
                    0 | 1 => "mailprobe-1-00".to_string(),
                    2 => format!("mailprobe-{}-0ld{i}", now - 2 * 3_600_000),
                    _ => format!("mailprobe-{}-0ld{i}", now - 86_400_000),
                };
                headers.push_str(&format!("x-mailprobe-id: {id}\r\n"));
                subject = format!("mailprobe test 10KiB {id}");
                Kind::OldProbe
            }
            3 => {
                // Probe-like subject, the probe header only in the body.
                subject = "mailprobe test 10KiB mailprobe-123-abc".into();
                body.push_str(
                    "X-Mailprobe-Id: mailprobe-1-00\r\nX-Mailprobe-Id: mailprobe-123-abc\r\n",
                );
                Kind::Lookalike
            }
            4 if i % 20 == 4 => Kind::FlaggedDeleted,
            _ => Kind::Plain,
        };
        let mut text = format!(
            "Return-Path: <someone@example.test>\r\nFrom: Someone <someone@example.test>\r\n\
             To: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n{headers}\
             Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        );
        if i % 4 == 1 {
            // An attachment of 1..60 KiB random bytes.
            let n = 1024 + (rng.next() as usize % (60 * 1024));
            text.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\n{body}--b{i}\r\n\
                 Content-Type: application/octet-stream; name=\"data{i}.bin\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"data{i}.bin\"\r\n\r\n{}--b{i}--\r\n",
                base64_lines(&rng.bytes(n))
            ));
        } else {
            text.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
            text.push_str(&body);
            // 8-bit text, sometimes long.
            for _ in 0..(rng.next() % 40) {
                text.push_str("Grüße, ça va — 8bit line of a foreign message.\r\n");
            }
        }
        let mut bytes = text.into_bytes();
        if i % 9 == 5 {
            // Bare LF line endings, as some MTAs store them.
            bytes = String::from_utf8(bytes)
                .unwrap()
                .replace("\r\n", "\n")
                .into_bytes();
        }
        out.push(Foreign {
            message_id,
            bytes,
            kind,
        });
    }
    out
}

/// Put a message into `cur/` flagged \Deleted (`:2,T`), owned like the Maildir.
fn drop_flagged_deleted(server: &TestServer, content: &[u8], n: usize) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let dir = server.maildir(LOCAL);
    let meta = std::fs::metadata(&dir).expect("Maildir");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let name = format!(
        "{}.M{}P{}Q{n}.data-safety,S={}:2,T",
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

/// The Message-ID of a stored message (header block only).
fn message_id_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("Message-ID")
        {
            return Some(value.trim().trim_matches(['<', '>']).to_string());
        }
    }
    None
}

/// Foreign messages that must still be there, byte-identical; returns problems.
fn check_foreign(
    server: &TestServer,
    foreign: &[Foreign],
    must_stay: &dyn Fn(Kind) -> bool,
    must_go: &dyn Fn(Kind) -> bool,
) -> Vec<String> {
    let mut stored: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for f in server.maildir_files(LOCAL) {
        if let Some(id) = message_id_of(&f.bytes) {
            stored.entry(id).or_default().push(f.bytes);
        }
    }
    let mut problems = Vec::new();
    for f in foreign {
        let copies = stored.get(&f.message_id).map(Vec::as_slice).unwrap_or(&[]);
        if must_stay(f.kind) {
            match copies {
                [one] if *one == f.bytes => {}
                [] => problems.push(format!("{:?} {} vanished", f.kind, f.message_id)),
                [_] => problems.push(format!("{:?} {} was altered", f.kind, f.message_id)),
                _ => problems.push(format!(
                    "{:?} {} is there {} times",
                    f.kind,
                    f.message_id,
                    copies.len()
                )),
            }
        } else if must_go(f.kind) && !copies.is_empty() {
            problems.push(format!(
                "{:?} {} should have been swept",
                f.kind, f.message_id
            ));
        }
    }
    problems
}

fn addr(server: &TestServer, port: u16) -> SocketAddr {
    (server.host.as_str(), port)
        .to_socket_addrs()
        .expect("resolve")
        .find(|a| a.ip().is_loopback())
        .expect("a loopback address")
}

/// One fault plan: (IMAP cut, budget, hide UIDPLUS, POP3 cut, budget, ladder).
type Plan = (Cut, usize, bool, Cut, usize, &'static str);

fn plans() -> Vec<Plan> {
    use Cut::*;
    let reply = |command, bytes| Reply { command, bytes };
    let command = |command, forward| Command { command, forward };
    vec![
        // Mid-body of the message being verified.
        (
            reply("BODY.PEEK[]", 200),
            1,
            false,
            reply("RETR", 200),
            1,
            "0,10KiB",
        ),
        (
            reply("BODY.PEEK[]", 40_000),
            2,
            false,
            reply("RETR", 60_000),
            2,
            "0,10KiB,200KiB",
        ),
        // Deleting: the command never reaches the server.
        (
            command("UID EXPUNGE", false),
            1,
            false,
            command("DELE", false),
            1,
            "0,10KiB",
        ),
        // Deleting: the server got the command, the client never hears back.
        (
            command("UID EXPUNGE", true),
            1,
            false,
            command("DELE", true),
            1,
            "0,10KiB",
        ),
        (
            command("STORE", true),
            1,
            false,
            command("QUIT", false),
            3,
            "0,10KiB",
        ),
        // Finding: mid-header fetch, mid-TOP.
        (
            reply("HEADER.FIELDS", 20),
            2,
            false,
            reply("TOP ", 30),
            2,
            "0,10KiB",
        ),
        (
            reply("UID SEARCH", 5),
            2,
            false,
            reply("UIDL", 500),
            2,
            "0,10KiB",
        ),
        // No UIDPLUS while the owner's \Deleted messages sit in the mailbox.
        (Off, 0, true, command("QUIT", true), 2, "0,10KiB"),
        (
            command("LOGOUT", false),
            2,
            true,
            reply("RETR", 0),
            2,
            "0,10KiB",
        ),
        (
            reply("BODY.PEEK[]", 0),
            3,
            false,
            command("DELE", true),
            1,
            "0,10KiB,200KiB",
        ),
        (
            command("UID EXPUNGE", true),
            1,
            false,
            reply("RETR", 100_000),
            1,
            "0,200KiB",
        ),
        (
            reply("NOOP", 3),
            2,
            false,
            command("STAT", false),
            2,
            "0,10KiB",
        ),
    ]
}

fn run_check(args: mailprobe::app::cli::CheckArgs) -> Report {
    let settings = mailprobe::app::profile::resolve(&args).expect("arguments resolve");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime
        .block_on(async {
            tokio::time::timeout(RUN_LIMIT, mailprobe::probe::check::run_check(settings)).await
        })
        .unwrap_or_else(|_| panic!("a probe run took longer than {RUN_LIMIT:?}"))
        .expect("run_check");
    runtime.shutdown_timeout(Duration::from_secs(5));
    report
}

fn cleanup(server: &TestServer, older_than: &str) -> common::BinOutput {
    let mut args = server.cleanup_cli(LOCAL);
    args.extend([
        "--imap".into(),
        server.imaps_url(),
        "--pop3".into(),
        server.pop3s_url(),
        "--older-than".into(),
        older_than.into(),
    ]);
    run_binary_timeout(&args, &[], Duration::from_secs(120))
}

#[test]
fn foreign_mail_survives_faults_and_cleanup_removes_only_probe_messages() {
    let _turn = common::shared_server();
    let server = TestServer::get();
    let verbose = std::env::var_os("DATA_SAFETY_VERBOSE").is_some();
    let started = Instant::now();
    server.clear_maildir(LOCAL);

    let foreign = foreign_messages(&server.user(LOCAL));
    for (n, f) in foreign.iter().enumerate() {
        if f.kind == Kind::FlaggedDeleted {
            drop_flagged_deleted(server, &f.bytes, n);
        } else {
            server.drop_foreign(LOCAL, &f.bytes);
        }
    }
    let kinds: HashSet<Kind> = foreign.iter().map(|f| f.kind).collect();
    assert_eq!(kinds.len(), 5, "every kind of foreign message is there");
    let everything = |_: Kind| true;
    let nothing = |_: Kind| false;
    let planted = check_foreign(server, &foreign, &everything, &nothing);
    assert!(planted.is_empty(), "planting failed: {planted:?}");

    let imap = Cutter::start(addr(server, server.imap_port));
    let pop3 = Cutter::start(addr(server, server.pop3_port));
    let uidplus: (&'static [u8], &'static [u8]) = (b"UIDPLUS", b"XIDPLUS");
    let mut run_ids: HashSet<String> = HashSet::new();
    let mut failures = Vec::new();
    for (run, (imap_cut, imap_budget, hide, pop3_cut, pop3_budget, sizes)) in
        plans().into_iter().enumerate()
    {
        imap.set(imap_cut, imap_budget, hide.then_some(uidplus));
        pop3.set(pop3_cut, pop3_budget, None);
        let (imap_before, pop3_before) = (imap.fired(), pop3.fired());
        let mut args = server.args(LOCAL);
        args.smtp = Some(server.smtp_url());
        args.no_smtp_auth = true;
        args.mailbox.imap = Some(imap.url("imap"));
        args.mailbox.pop3 = Some(pop3.url("pop3"));
        args.mailbox.starttls = Some(StarttlsPolicy::Never);
        args.sizes = Some(sizes.into());
        args.mailbox.command_timeout = Some("10s".into());
        args.delivery_timeout = Some("20s".into());
        let report = run_check(args);
        let (imap_cuts, pop3_cuts) = (imap.fired() - imap_before, pop3.fired() - pop3_before);
        if verbose {
            eprintln!(
                "run {run}: verdict {:?}, cuts imap {imap_cuts} pop3 {pop3_cuts}, leftovers {:?}, \
                 diagnoses {:?}",
                report.verdict,
                report.cleanup.leftovers,
                report.diagnoses.iter().map(|d| &d.code).collect::<Vec<_>>()
            );
        }
        for m in &report.messages {
            run_ids.insert(m.probe_id.clone());
        }
        let problems = check_foreign(server, &foreign, &everything, &nothing);
        if !problems.is_empty() {
            failures.push(format!("run {run}: {problems:?}"));
        }
        // What the run says it cleaned up is gone.
        let files = server.maildir_files(LOCAL);
        for m in &report.messages {
            let claimed_gone = m.smtp.ok && !report.cleanup.leftovers.contains(&m.probe_id);
            if claimed_gone
                && files
                    .iter()
                    .any(|f| contains(&f.bytes, m.probe_id.as_bytes()))
            {
                failures.push(format!(
                    "run {run}: {} is reported cleaned up but is still in the mailbox",
                    m.probe_id
                ));
            }
        }
    }
    let total_cuts = imap.fired() + pop3.fired();
    drop(imap);
    drop(pop3);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        total_cuts >= 12,
        "the faults fired only {total_cuts} times: the plans no longer match the conversation"
    );

    // The sweep keeps recent probe ids, malformed ones and all other mail.
    let swept = cleanup(server, "1h");
    assert!(
        swept.code == 0,
        "cleanup --older-than 1h: {}\n{}",
        swept.stdout,
        swept.stderr
    );
    let problems = check_foreign(server, &foreign, &|k| k != Kind::OldProbe, &|k| {
        k == Kind::OldProbe
    });
    assert!(
        problems.is_empty(),
        "after cleanup --older-than 1h: {problems:#?}\n{}",
        swept.stdout
    );

    // --older-than 0s: every well-formed probe id goes, nothing else.
    let swept = cleanup(server, "0s");
    assert!(
        swept.code == 0,
        "cleanup --older-than 0s: {}\n{}",
        swept.stdout,
        swept.stderr
    );
    let probe_kind = |k: Kind| matches!(k, Kind::OldProbe | Kind::RecentProbe);
    let problems = check_foreign(server, &foreign, &|k| !probe_kind(k), &probe_kind);
    assert!(
        problems.is_empty(),
        "after cleanup --older-than 0s: {problems:#?}\n{}",
        swept.stdout
    );
    let files = server.maildir_files(LOCAL);
    let leftovers: Vec<&String> = run_ids
        .iter()
        .filter(|id| files.iter().any(|f| contains(&f.bytes, id.as_bytes())))
        .collect();
    assert!(
        leftovers.is_empty(),
        "probe messages of the runs survived cleanup --older-than 0s: {leftovers:?}"
    );
    let kept = foreign.iter().filter(|f| !probe_kind(f.kind)).count();
    assert_eq!(
        files.len(),
        kept,
        "the mailbox holds exactly the foreign messages that must stay"
    );
    if verbose {
        eprintln!(
            "{} runs, {total_cuts} cuts, {} probe messages, {:?}",
            plans().len(),
            run_ids.len(),
            started.elapsed()
        );
    }
    server.clear_maildir(LOCAL);
}
