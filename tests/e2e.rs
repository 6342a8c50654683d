//! End-to-end acceptance tests against the real test mail server (Postfix +
//! Dovecot on loopback): start it with `scripts/testserver.sh start` (as root).
//! The tests panic with that instruction when it is not running.
//!
//! Mailboxes: test01..test11, one per test, so parallel tests never share mail.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;

use common::{BinOutput, TestServer, contains, exclusive_server, run_binary, run_in_process};
use mailprobe::app::cli::CheckArgs;
use mailprobe::core::endpoint::StarttlsPolicy;
use mailprobe::core::phase::{Phase, Protocol};
use mailprobe::model::diagnosis::Code;
use mailprobe::model::report::{Report, Verdict};
use mailprobe::model::result::ProtocolResult;
use mailprobe::report::Format;
use serde_json::Value;

const LADDER: &str = "0,10KiB,300KiB";
const LADDER_BYTES: [u64; 3] = [0, 10 * 1024, 300 * 1024];

/// How one protocol secured its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain connection upgraded with STARTTLS / STLS.
    Starttls,
    /// TLS from the first byte (smtps, imaps, pop3s).
    Implicit,
    /// No TLS at all.
    Plain,
}

struct Expect {
    smtp: Security,
    smtp_auth: bool,
    imap: Security,
    pop3: Security,
}

fn human(report: &Report) -> String {
    String::from_utf8_lossy(&Format::Human.render(report)).into_owned()
}

fn check_security(what: &str, r: &ProtocolResult, security: Security, report: &Report) {
    let has = |p: Phase| r.phases_ms.contains_key(&p);
    match security {
        Security::Starttls => assert!(
            has(Phase::Starttls) && has(Phase::Tls),
            "{what}: expected starttls and tls phases, got {:?}\n{}",
            r.phases_ms.keys().collect::<Vec<_>>(),
            human(report)
        ),
        Security::Implicit => assert!(
            has(Phase::Tls) && !has(Phase::Starttls),
            "{what}: expected tls without starttls, got {:?}\n{}",
            r.phases_ms.keys().collect::<Vec<_>>(),
            human(report)
        ),
        Security::Plain => assert!(
            !has(Phase::Tls) && !has(Phase::Starttls),
            "{what}: expected neither tls nor starttls, got {:?}\n{}",
            r.phases_ms.keys().collect::<Vec<_>>(),
            human(report)
        ),
    }
    match (security, &r.tls) {
        (Security::Plain, None) => {}
        (Security::Plain, Some(tls)) => panic!("{what}: plain connection reports TLS {tls:?}"),
        (_, None) => panic!("{what}: TLS was used but the result has no TLS info"),
        (_, Some(tls)) => {
            assert!(tls.verified, "{what}: certificate not verified: {tls:?}");
            assert!(tls.verify_error.is_none(), "{what}: {tls:?}");
            assert!(tls.version.starts_with("TLS"), "{what}: {tls:?}");
            assert!(!tls.cipher.is_empty(), "{what}: {tls:?}");
            assert!(tls.certificate.is_some(), "{what}: no certificate: {tls:?}");
        }
    }
}

fn require_phases(what: &str, r: &ProtocolResult, phases: &[Phase], report: &Report) {
    for p in phases {
        assert!(
            r.phases_ms.contains_key(p),
            "{what}: phase {} missing from {:?}\n{}",
            p.as_str(),
            r.phases_ms.keys().collect::<Vec<_>>(),
            human(report)
        );
    }
}

/// Every rung sent, delivered, verified over IMAP and POP3, cleaned up, no diagnosis.
fn assert_healthy(report: &Report, sizes: &[u64], expect: &Expect) {
    let text = human(report);
    assert_eq!(report.verdict, Verdict::Healthy, "{text}");
    assert!(report.diagnoses.is_empty(), "{text}");
    assert_eq!(report.verdict.exit_code(), 0);
    assert_eq!(report.messages.len(), sizes.len(), "{text}");
    let mut ids = BTreeSet::new();
    for (m, &size) in report.messages.iter().zip(sizes) {
        let what = format!("{} B message {}", size, m.probe_id);
        assert!(ids.insert(m.probe_id.clone()), "duplicate probe id: {text}");
        assert!(m.probe_id.starts_with("mailprobe-"), "{what}");
        assert_eq!(m.size_bytes, size, "{what}");
        assert_eq!(m.attachment, size > 0, "{what}");
        assert!(
            m.encoded_bytes > size,
            "{what}: encoded {}",
            m.encoded_bytes
        );

        // SMTP
        let smtp = &m.smtp;
        assert!(smtp.ok, "{what}: SMTP not ok\n{text}");
        assert_eq!(smtp.accepted, Some(true), "{what}\n{text}");
        assert!(smtp.error.is_none(), "{what}: {:?}", smtp.error);
        let reply = smtp.reply.as_ref().expect("the final SMTP reply");
        assert_eq!(reply.code, Some(250), "{what}: {reply:?}");
        let mut phases = vec![
            Phase::Connect,
            Phase::Greeting,
            Phase::Ehlo,
            Phase::MailFrom,
            Phase::RcptTo,
            Phase::Data,
        ];
        if expect.smtp_auth {
            phases.push(Phase::Auth);
        } else {
            assert!(
                !smtp.phases_ms.contains_key(&Phase::Auth),
                "{what}: SMTP AUTH without a login\n{text}"
            );
        }
        require_phases(&format!("{what} SMTP"), smtp, &phases, report);
        // Postfix offers PIPELINING on every port.
        assert_eq!(smtp.pipelined, Some(true), "{what}\n{text}");
        check_security(&format!("{what} SMTP"), smtp, expect.smtp, report);

        assert!(
            [m.imap.as_ref(), m.pop3.as_ref()]
                .into_iter()
                .flatten()
                .any(|r| r.deleted == Some(true))
                || (m.imap.is_none() && m.pop3.is_none()),
            "{what}: deleted by neither IMAP nor POP3\n{text}"
        );
        // IMAP and POP3
        for (protocol, result, security) in [
            (Protocol::Imap, m.imap.as_ref(), expect.imap),
            (Protocol::Pop3, m.pop3.as_ref(), expect.pop3),
        ] {
            let what = format!("{what} {}", protocol.label());
            let r = result.unwrap_or_else(|| panic!("{what}: no result\n{text}"));
            assert!(r.ok, "{what}: not ok\n{text}");
            assert_eq!(r.found, Some(true), "{what}\n{text}");
            assert_eq!(r.verified, Some(true), "{what}\n{text}");
            assert!(r.error.is_none(), "{what}: {:?}", r.error);
            assert!(r.skipped.is_none(), "{what}: {:?}", r.skipped);
            let delivery = r
                .delivery_ms
                .unwrap_or_else(|| panic!("{what}: no delivery_ms"));
            assert!(delivery >= 0.0, "{what}: delivery_ms {delivery}");
            // Each protocol reports only its own deletion (issue 13): one of them deleted it.
            assert!(r.deleted.is_some(), "{what}: no deletion outcome\n{text}");
            let v = r.verification.as_ref().expect("verification");
            assert!(v.verified && v.problems.is_empty(), "{what}: {v:?}");
            match (&v.attachment, size) {
                (None, 0) => {}
                (Some(a), size) if size > 0 => assert_eq!(a.size, size, "{what}: {a:?}"),
                (a, _) => panic!("{what}: attachment {a:?} for a {size} B rung"),
            }
            let phases = [
                Phase::Connect,
                Phase::Greeting,
                Phase::Login,
                Phase::Search,
                Phase::Fetch,
            ];
            require_phases(&what, r, &phases, report);
            if protocol == Protocol::Imap {
                require_phases(&what, r, &[Phase::Select], report);
            }
            check_security(&what, r, security, report);
        }
    }
    assert!(
        report.cleanup.leftovers.is_empty() && report.cleanup.errors.is_empty(),
        "cleanup: {:?}\n{text}",
        report.cleanup
    );
    assert_eq!(report.cleanup.deleted, sizes.len(), "{text}");
}

/// No file of the mailbox holds any of the run's messages.
fn assert_gone(server: &TestServer, local: &str, report: &Report) {
    for m in &report.messages {
        let left = server.files_containing(local, m.probe_id.as_bytes());
        assert!(
            left.is_empty(),
            "probe message {} is still in the Maildir: {:?}",
            m.probe_id,
            left.iter().map(|f| &f.path).collect::<Vec<_>>()
        );
    }
}

fn healthy_run(local: &str, expect: Expect, configure: impl FnOnce(&TestServer, &mut CheckArgs)) {
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir(local);
    let mut args = server.args(local);
    args.sizes = Some(LADDER.into());
    configure(server, &mut args);
    let report = run_in_process(args);
    assert_healthy(&report, &LADDER_BYTES, &expect);
    assert_gone(server, local, &report);
    assert_eq!(server.count_probe_messages(local), 0);
}

// ------------------------------------------------------------------ 1. healthy

/// Submission with STARTTLS + AUTH, IMAP with STARTTLS, POP3 over implicit TLS.
#[test]
fn healthy_submission_starttls_imap_starttls_pop3s() {
    let expect = Expect {
        smtp: Security::Starttls,
        smtp_auth: true,
        imap: Security::Starttls,
        pop3: Security::Implicit,
    };
    healthy_run("test01", expect, |s, a| {
        a.smtp = Some(s.submission_url());
        a.mailbox.imap = Some(s.imap_url());
        a.mailbox.pop3 = Some(s.pop3s_url());
        a.mailbox.starttls = Some(StarttlsPolicy::Require);
    });
}

/// SMTPS (implicit TLS) + AUTH, IMAPS, POP3 with STLS.
#[test]
fn healthy_smtps_imaps_pop3_stls() {
    let expect = Expect {
        smtp: Security::Implicit,
        smtp_auth: true,
        imap: Security::Implicit,
        pop3: Security::Starttls,
    };
    healthy_run("test02", expect, |s, a| {
        a.smtp = Some(s.smtps_url());
        a.mailbox.imap = Some(s.imaps_url());
        a.mailbox.pop3 = Some(s.pop3_url());
        a.mailbox.starttls = Some(StarttlsPolicy::Require);
    });
}

/// Everything in plain text: SMTP without AUTH, IMAP and POP3 logins on loopback.
#[test]
fn healthy_plain_smtp_imap_pop3() {
    let expect = Expect {
        smtp: Security::Plain,
        smtp_auth: false,
        imap: Security::Plain,
        pop3: Security::Plain,
    };
    healthy_run("test03", expect, |s, a| {
        a.smtp = Some(s.smtp_url());
        a.no_smtp_auth = true;
        a.mailbox.imap = Some(s.imap_url());
        a.mailbox.pop3 = Some(s.pop3_url());
        a.mailbox.starttls = Some(StarttlsPolicy::Never);
    });
}

// --------------------------------------------------------------- 2. data safety

#[test]
fn cleanup_deletes_only_this_runs_messages() {
    let local = "test04";
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir(local);
    let to = server.user(local);
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let message = |tag: &str, subject: &str, extra: &str| -> (String, Vec<u8>) {
        let mid = format!("<foreign-{tag}-{unique}@example.org>");
        let body = format!(
            "Return-Path: <someone@example.org>\n\
             From: Someone <someone@example.org>\n\
             To: <{to}>\n\
             Subject: {subject}\n\
             Date: Tue, 25 Nov 2025 10:00:00 +0000\n\
             Message-ID: {mid}\n\
             {extra}\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=us-ascii\n\
             \n\
             This message is not the probe's and must survive the probe untouched ({tag}).\n"
        );
        (mid, body.into_bytes())
    };
    let foreign = [
        message("ordinary", "Quarterly numbers", ""),
        message("lookalike", "mailprobe test 10KiB mailprobe-123-abc", ""),
        message(
            "header",
            "mailprobe test plain mailprobe-1-0000000000000000",
            "X-Mailprobe-Id: mailprobe-1-0000000000000000\n",
        ),
    ];
    for (_, bytes) in &foreign {
        server.drop_foreign(local, bytes);
    }
    assert_eq!(server.maildir_files(local).len(), 3);

    let mut args = server.args(local);
    args.smtp = Some(server.submission_url());
    args.mailbox.imap = Some(server.imap_url());
    args.mailbox.pop3 = Some(server.pop3s_url());
    args.sizes = Some(LADDER.into());
    let report = run_in_process(args);
    let text = human(&report);

    // The run itself is healthy and cleaned up after itself...
    assert_healthy(
        &report,
        &LADDER_BYTES,
        &Expect {
            smtp: Security::Starttls,
            smtp_auth: true,
            imap: Security::Starttls,
            pop3: Security::Implicit,
        },
    );
    assert!(report.cleanup.leftovers.is_empty(), "{text}");
    assert_gone(server, local, &report);

    // ...and left everything else exactly as it was.
    let files = server.maildir_files(local);
    assert_eq!(
        files.len(),
        3,
        "only the three foreign messages may remain: {:?}\n{text}",
        files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    for (mid, bytes) in &foreign {
        let matching: Vec<_> = files
            .iter()
            .filter(|f| contains(&f.bytes, mid.as_bytes()))
            .collect();
        assert_eq!(matching.len(), 1, "foreign message {mid}: {matching:?}");
        assert!(
            matching[0].bytes == *bytes,
            "foreign message {mid} was altered: now {:?}",
            String::from_utf8_lossy(&matching[0].bytes)
        );
    }
    server.clear_maildir(local);
}

// -------------------------------------------------------- 3. failure exit codes

/// A run of the binary: human report on stdout, JSON report in a file.
struct Run {
    out: BinOutput,
    json: Value,
}

fn run_reported(args: &[String], envs: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let mut args = args.to_vec();
    args.push("--output".into());
    args.push(format!("json={}", path.display()));
    let out = run_binary(&args, envs);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        )
    });
    assert!(
        !contains(text.as_bytes(), TestServer::get().password().as_bytes()),
        "the password appears in the JSON report"
    );
    let json: Value = serde_json::from_str(&text).expect("the JSON report parses");
    Run { out, json }
}

fn assert_no_secret(out: &BinOutput, secrets: &[&str]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !out.stdout.contains(s) && !out.stderr.contains(s),
            "a password appears in the output:\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
}

fn has_diagnosis(json: &Value, code: &str, protocol: &str) -> bool {
    json["diagnoses"].as_array().is_some_and(|ds| {
        ds.iter()
            .any(|d| d["code"] == code && d["protocol"] == protocol)
    })
}

/// Set `--flag value`, replacing an earlier value (clap rejects repeated flags).
fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
}

fn strs(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A recipient Postfix refuses, pipelined (the default) and one command at a time:
/// the same refusal at RCPT TO either way, and the pipelined session stays in step
/// (MAIL, RCPT and DATA in one write, no message started after DATA was refused).
#[test]
fn refused_recipient_is_the_same_pipelined_or_not() {
    let server = TestServer::get();
    let dir = tempfile::tempdir().unwrap();
    for pipelining in [true, false] {
        let transcript = dir.path().join(format!("transcript-{pipelining}"));
        let mut args = server.cli("test07");
        args.extend(strs(&[
            "--smtp",
            &server.submission_url(),
            "--smtp-only",
            "--sizes",
            "0",
            "--to",
            "nobody-at-all@mailprobe.test",
            "--transcript",
            &transcript.display().to_string(),
        ]));
        if !pipelining {
            args.push("--no-pipelining".into());
        }
        let run = run_reported(&args, &[]);
        let what = format!("pipelining {pipelining}: {}", run.out.stdout);
        assert_eq!(run.out.code, 2, "{what}");
        assert!(
            has_diagnosis(&run.json, "unknown_recipient", "smtp"),
            "{what}"
        );
        let smtp = &run.json["messages"][0]["smtp"];
        assert_eq!(smtp["pipelined"], pipelining, "{what}");
        assert_eq!(smtp["error"]["phase"], "rcpt_to", "{what}");
        assert_eq!(smtp["error"]["reply"]["code"], 550, "{what}");
        let text = std::fs::read_to_string(&transcript).unwrap();
        let said: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" C: ") || l.contains(" S: "))
            .skip_while(|l| !l.contains("C: MAIL FROM"))
            .take(4)
            .map(|l| if l.contains(" C: ") { "C" } else { "S" })
            .collect();
        let expected = if pipelining {
            ["C", "C", "C", "S"]
        } else {
            ["C", "S", "C", "S"]
        };
        assert_eq!(said, expected, "who spoke after MAIL FROM:\n{text}");
        assert!(
            !text.lines().any(|l| l.ends_with(" C: .")),
            "a message was started after DATA was refused:\n{text}"
        );
    }
}

/// Wrong password: SMTP AUTH fails (exit 2, auth_failed, SMTP auth phase); with SMTP
/// not needing a login, IMAP and POP3 logins fail (auth_failed, login phase).
#[test]
fn wrong_password_is_auth_failed() {
    // Failed logins slow down every following login from 127.0.0.1 (Dovecot auth
    // penalty): keep the other tests out meanwhile.
    let _exclusive = exclusive_server();
    let server = TestServer::get();
    let password = server.password();
    let wrong = "Wr0ng-e2e-password-5d1f9c";
    let dir = tempfile::tempdir().unwrap();
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, format!("{wrong}\n")).unwrap();
    let with_wrong_password = |local: &str| -> Vec<String> {
        let mut args = server.cli(local);
        set_flag(
            &mut args,
            "--password-file",
            &wrong_file.display().to_string(),
        );
        // The auth penalty can hold a login for seconds: keep it an auth failure, not a timeout.
        set_flag(&mut args, "--command-timeout", "40s");
        set_flag(&mut args, "--delivery-timeout", "10s");
        args.extend(strs(&["--sizes", "0"]));
        args
    };

    // (1) SMTP AUTH refused.
    let local = "test05";
    server.clear_maildir(local);
    let mut args = with_wrong_password(local);
    args.extend(strs(&[
        "--smtp",
        &server.submission_url(),
        "--imap",
        &server.imap_url(),
        "--pop3",
        &server.pop3s_url(),
    ]));
    let run = run_reported(&args, &[]);
    let out = &run.out;
    assert_no_secret(out, &[&password, wrong]);
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(run.json["verdict"], "failing");
    assert!(
        has_diagnosis(&run.json, "auth_failed", "smtp"),
        "{}",
        out.stdout
    );
    let err = &run.json["messages"][0]["smtp"]["error"];
    assert_eq!(err["kind"], "auth", "{err}");
    assert_eq!(err["protocol"], "smtp", "{err}");
    assert_eq!(err["phase"], "auth", "{err}");
    assert!(out.stdout.contains("auth_failed"), "{}", out.stdout);
    assert!(out.stdout.contains("SMTP auth"), "{}", out.stdout);
    assert_eq!(server.count_probe_messages(local), 0);
    server.reset_auth_penalty(local);

    // (2) SMTP without AUTH delivers; IMAP and POP3 logins are refused.
    let local = "test09";
    server.clear_maildir(local);
    let mut args = with_wrong_password(local);
    args.extend(strs(&[
        "--smtp",
        &server.smtp_url(),
        "--no-smtp-auth",
        "--imap",
        &server.imap_url(),
        "--pop3",
        &server.pop3s_url(),
    ]));
    let run = run_reported(&args, &[]);
    let out = &run.out;
    assert_no_secret(out, &[&password, wrong]);
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(run.json["smtp_server"].is_object());
    let m = &run.json["messages"][0];
    assert_eq!(m["smtp"]["ok"], true, "{m}");
    for (protocol, label) in [("imap", "IMAP"), ("pop3", "POP3")] {
        assert!(
            has_diagnosis(&run.json, "auth_failed", protocol),
            "no auth_failed for {label}:\n{}",
            out.stdout
        );
        let err = &m[protocol]["error"];
        assert_eq!(err["kind"], "auth", "{err}");
        assert_eq!(err["protocol"], protocol, "{err}");
        assert_eq!(err["phase"], "login", "{err}");
        assert!(
            out.stdout.contains(&format!("{label} login")),
            "human report does not name {label} login:\n{}",
            out.stdout
        );
    }
    // The probe could not log in to delete its message, and says so.
    let id = m["probe_id"].as_str().unwrap();
    assert_eq!(
        run.json["cleanup"]["leftovers"][0], id,
        "{}",
        run.json["cleanup"]
    );
    assert!(out.stdout.contains(id));
    server.clear_maildir(local);
    server.reset_auth_penalty(local);
}

/// Nothing listens on the IMAP port while SMTP and POP3 work: endpoint_down, IMAP connect.
#[test]
fn refused_imap_port_is_endpoint_down() {
    let local = "test07";
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir(local);
    let free_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut args = server.cli(local);
    args.extend(strs(&[
        "--smtp",
        &server.submission_url(),
        "--imap",
        &format!("imap://127.0.0.1:{free_port}"),
        "--pop3",
        &server.pop3s_url(),
        "--sizes",
        "0",
    ]));
    // The IMAP watcher retries a refused port until the delivery deadline.
    set_flag(&mut args, "--delivery-timeout", "5s");
    let run = run_reported(&args, &[]);
    let out = &run.out;
    assert_no_secret(out, &[&server.password()]);
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(run.json["verdict"], "failing");
    assert!(
        has_diagnosis(&run.json, "endpoint_down", "imap"),
        "{}",
        out.stdout
    );
    let m = &run.json["messages"][0];
    assert_eq!(m["smtp"]["ok"], true, "{m}");
    assert_eq!(m["pop3"]["ok"], true, "{m}");
    let err = &m["imap"]["error"];
    assert_eq!(err["kind"], "refused", "{err}");
    assert_eq!(err["protocol"], "imap", "{err}");
    assert_eq!(err["phase"], "connect", "{err}");
    assert!(out.stdout.contains("endpoint_down"), "{}", out.stdout);
    assert!(out.stdout.contains("IMAP connect"), "{}", out.stdout);
    // POP3 still removed the message.
    assert_eq!(
        run.json["cleanup"]["leftovers"].as_array().map(Vec::len),
        Some(0),
        "{}",
        run.json["cleanup"]
    );
    assert_eq!(server.count_probe_messages(local), 0);
}

/// IMAPS with a certificate from an unknown CA: tls_invalid (failing) without
/// --ca-file; with --insecure the run succeeds but is degraded and says so.
#[test]
fn untrusted_certificate_is_tls_invalid() {
    let local = "test08";
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir(local);
    let mut args = server.cli(local);
    let at = args.iter().position(|a| a == "--ca-file").unwrap();
    args.drain(at..at + 2);
    // Only IMAP uses TLS here, so the failure is IMAP's alone.
    args.extend(strs(&[
        "--smtp",
        &server.smtp_url(),
        "--no-smtp-auth",
        "--starttls",
        "never",
        "--imap",
        &server.imaps_url(),
        "--pop3",
        &server.pop3_url(),
        "--sizes",
        "0",
    ]));
    set_flag(&mut args, "--delivery-timeout", "10s");
    let password = server.password();

    let run = run_reported(&args, &[]);
    let out = &run.out;
    assert_no_secret(out, &[&password]);
    assert_eq!(
        out.code, 2,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        has_diagnosis(&run.json, "tls_invalid", "imap"),
        "{}",
        out.stdout
    );
    let m = &run.json["messages"][0];
    let err = &m["imap"]["error"];
    assert_eq!(err["kind"], "tls", "{err}");
    assert_eq!(err["protocol"], "imap", "{err}");
    assert_eq!(err["phase"], "tls", "{err}");
    assert_eq!(m["pop3"]["ok"], true, "{m}");
    assert!(out.stdout.contains("tls_invalid"), "{}", out.stdout);
    assert!(out.stdout.contains("IMAP"), "{}", out.stdout);
    assert_eq!(server.count_probe_messages(local), 0);

    args.push("--insecure".into());
    let run = run_reported(&args, &[]);
    let out = &run.out;
    assert_no_secret(out, &[&password]);
    assert_eq!(
        out.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(run.json["verdict"], "degraded");
    assert_eq!(run.json["target"]["insecure"], true);
    let degraded_tls = run.json["diagnoses"].as_array().unwrap().iter().any(|d| {
        d["code"] == "tls_invalid" && d["protocol"] == "imap" && d["severity"] == "degraded"
    });
    assert!(degraded_tls, "{}", out.stdout);
    let m = &run.json["messages"][0];
    for p in ["smtp", "imap", "pop3"] {
        assert_eq!(m[p]["ok"], true, "{p}: {m}");
    }
    assert_eq!(m["imap"]["tls"]["verified"], false, "{m}");
    assert!(
        out.stdout.contains("NOT verified"),
        "the report must say certificates were not verified:\n{}",
        out.stdout
    );
    assert_eq!(server.count_probe_messages(local), 0);
}

/// Could not run at all: exit 3 and a message saying what to do.
#[test]
fn unusable_configuration_exits_3() {
    let server = TestServer::get();
    let password = server.password();
    let base = strs(&[
        "check",
        "--smtp",
        &server.submission_url(),
        "--imap",
        &server.imap_url(),
        "--user",
        &server.user("test09"),
    ]);

    // The default password variable is not set.
    let out = run_binary(&base, &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("MAILPROBE_PASSWORD") && out.stderr.contains("export"),
        "{out:?}"
    );

    // A named variable that is not set.
    let mut args = base.clone();
    args.extend(strs(&["--password-env", "MAILPROBE_E2E_NOT_SET"]));
    let out = run_binary(&args, &[("MAILPROBE_PASSWORD", &password)]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("MAILPROBE_E2E_NOT_SET") && out.stderr.contains("--password-file"),
        "{out:?}"
    );
    assert_no_secret(&out, &[&password]);

    // A profile that does not exist.
    let out = run_binary(
        &["check", "--profile", "/nonexistent/mailprobe-e2e.toml"],
        &[("MAILPROBE_PASSWORD", &password)],
    );
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr.contains("profile") && out.stderr.contains("/nonexistent/mailprobe-e2e.toml"),
        "{out:?}"
    );
    assert_no_secret(&out, &[&password]);
}

// ------------------------------------------------------------- 4. large message

#[test]
fn fifty_mib_attachment_round_trips() {
    let local = "test10";
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir(local);
    let mut args = server.args(local);
    args.smtp = Some(server.submission_url());
    args.mailbox.imap = Some(server.imap_url());
    args.mailbox.pop3 = Some(server.pop3s_url());
    args.sizes = Some("50MiB".into());
    args.mailbox.command_timeout = Some("60s".into());
    args.mailbox.data_timeout = Some("600s".into());
    args.delivery_timeout = Some("300s".into());
    let report = run_in_process(args);
    let text = human(&report);
    let m = &report.messages[0];
    assert_eq!(m.size_bytes, 50 * 1024 * 1024);
    assert!(m.smtp.ok, "{text}");
    for r in [m.imap.as_ref(), m.pop3.as_ref()] {
        let r = r.expect("retrieval result");
        assert!(r.ok && r.verified == Some(true), "{text}");
        let v = r.verification.as_ref().unwrap();
        assert_eq!(
            v.attachment.as_ref().map(|a| a.size),
            Some(50 * 1024 * 1024)
        );
        assert!(v.bytes > 50 * 1024 * 1024, "{v:?}");
    }
    assert!(
        [m.imap.as_ref(), m.pop3.as_ref()]
            .into_iter()
            .flatten()
            .any(|r| r.deleted == Some(true)),
        "deleted by neither IMAP nor POP3\n{text}"
    );
    // A debug build on a busy machine may be slow; anything else is a failure.
    assert!(
        report.diagnoses.iter().all(|d| d.code == Code::Slow),
        "{text}"
    );
    assert!(report.verdict <= Verdict::Degraded, "{text}");
    assert!(report.cleanup.leftovers.is_empty(), "{text}");
    assert_gone(server, local, &report);
}

// ---------------------------------------------------------------- 5. JSON output

#[test]
fn json_report_has_the_documented_shape() {
    let local = "test11";
    let _shared = common::shared_server();
    let server = TestServer::get();
    server.clear_maildir(local);
    let mut args = server.cli(local);
    args.extend(strs(&[
        "--smtp",
        &server.smtps_url(),
        "--imap",
        &server.imaps_url(),
        "--pop3",
        &server.pop3_url(),
        "--sizes",
        "0,10KiB",
        "--format",
        "json",
    ]));
    let out = run_binary(&args, &[]);
    assert_no_secret(&out, &[&server.password()]);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(json["verdict"], "healthy", "{json}");
    assert!(json["diagnoses"].is_array(), "{json}");
    assert_eq!(json["diagnoses"].as_array().unwrap().len(), 0, "{json}");
    assert!(json["summary"].is_string());
    let messages = json["messages"].as_array().expect("messages[]");
    assert_eq!(messages.len(), 2);
    for (m, size) in messages.iter().zip([0u64, 10240]) {
        assert_eq!(m["size_bytes"].as_u64(), Some(size), "{m}");
        assert_eq!(m["attachment"].as_bool(), Some(size > 0), "{m}");
        for p in ["smtp", "imap", "pop3"] {
            let r = &m[p];
            assert!(r.is_object(), "{p}: {m}");
            assert_eq!(r["ok"], true, "{p}: {m}");
            let phases = r["phases_ms"]
                .as_object()
                .unwrap_or_else(|| panic!("{p}: {m}"));
            assert!(!phases.is_empty(), "{p}: {m}");
            assert!(phases.values().all(Value::is_number), "{p}: {m}");
        }
        for p in ["imap", "pop3"] {
            assert!(m[p]["delivery_ms"].is_number(), "{p}: {m}");
            assert_eq!(m[p]["verified"], true, "{p}: {m}");
        }
    }
    common::assert_json_fields(&json, "json_fields_healthy.txt");
    assert_eq!(server.count_probe_messages(local), 0);
}
