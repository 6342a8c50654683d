//! The password never leaks: not on standard output or error, not in any report
//! format (human, json, nagios, prometheus, junit, html), not in the transcript,
//! not in the process arguments (read from /proc/<pid>/cmdline while it runs).
//!
//! Three runs: a successful one against the real test server (test21, STARTTLS
//! submission + IMAP + POP3), one with a wrong password, and one against fakes
//! that echo the password they were sent in their refusal (SMTP AUTH, IMAP
//! LOGIN, POP3 PASS). Every form the password takes on the wire (plain, quoted,
//! base64, SASL PLAIN) is searched for. The same for an OAuth access token
//! (accepted and refused, XOAUTH2 and OAUTHBEARER, against the private OAuth
//! server of tests/common/oauth.rs, mailbox test24), including the servers' logs.

mod common;
#[path = "hostile/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::TestServer;
use server::{Conn, Fake};

const LIMIT: Duration = Duration::from_secs(120);

/// The two runs against the real server take turns: a refused login makes
/// Dovecot slow down the next logins from this address (auth penalty).
static REAL_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Outcome {
    code: i32,
    /// Every file the run wrote plus stdout, stderr and the command lines seen.
    texts: Vec<(String, Vec<u8>)>,
}

/// Report formats to write: html only if this build has it.
fn formats() -> Vec<&'static str> {
    let mut f = vec!["json", "nagios", "prometheus", "junit"];
    if mailprobe::report::Format::parse("html").is_ok() {
        f.push("html");
    }
    f
}

/// Run the binary with the password in `MAILPROBE_PASSWORD`, every report format
/// and a transcript; collect everything it wrote and its command line as seen
/// in /proc while it ran.
fn run(args: Vec<String>, password: &str) -> Outcome {
    run_with(args, "MAILPROBE_PASSWORD", password)
}

/// [`run`] with the secret in the variable `var`.
fn run_with(args: Vec<String>, var: &str, password: &str) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = args;
    let mut files: Vec<PathBuf> = Vec::new();
    for f in formats() {
        let path = dir.path().join(format!("report.{f}"));
        args.push("--output".into());
        args.push(format!("{f}={}", path.display()));
        files.push(path);
    }
    let transcript = dir.path().join("transcript.txt");
    args.push("--transcript".into());
    args.push(transcript.display().to_string());
    files.push(transcript);
    let out = std::fs::File::create(dir.path().join("stdout")).expect("stdout");
    let err = std::fs::File::create(dir.path().join("stderr")).expect("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailprobe"))
        .args(&args)
        .env(var, password)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start mailprobe");
    let cmdline = format!("/proc/{}/cmdline", child.id());
    let mut seen: Vec<u8> = Vec::new();
    let mut samples = 0;
    let started = Instant::now();
    let status = loop {
        if let Ok(bytes) = std::fs::read(&cmdline) {
            if !bytes.is_empty() {
                samples += 1;
            }
            seen.extend_from_slice(&bytes);
            seen.push(b'\n');
        }
        match child.try_wait().expect("wait") {
            Some(s) => break s,
            None if started.elapsed() > LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mailprobe {args:?} did not finish within {LIMIT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert!(samples > 0, "never saw the running process's command line");
    assert!(
        String::from_utf8_lossy(&seen).contains("--transcript"),
        "the command line read from /proc is not mailprobe's"
    );
    let mut texts = vec![("cmdline".to_string(), seen)];
    for name in ["stdout", "stderr"] {
        texts.push((
            name.to_string(),
            std::fs::read(dir.path().join(name)).unwrap_or_default(),
        ));
    }
    for f in files {
        let bytes =
            std::fs::read(&f).unwrap_or_else(|e| panic!("{} was not written: {e}", f.display()));
        assert!(!bytes.is_empty(), "{} is empty", f.display());
        texts.push((file_name(&f), bytes));
    }
    Outcome {
        code: status.code().unwrap_or(-1),
        texts,
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Every wire form of the password must be absent from every text.
fn assert_no_secret(what: &str, o: &Outcome, user: &str, password: &str) {
    let forms = mailprobe::core::secret::secret_forms(user, password);
    assert!(forms.len() >= 3);
    for (name, bytes) in &o.texts {
        for form in &forms {
            assert!(
                !common::contains(bytes, form.as_bytes()),
                "{what}: the password (as {form:?}) appears in {name}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

fn text<'a>(o: &'a Outcome, name: &str) -> std::borrow::Cow<'a, str> {
    let (_, bytes) = o
        .texts
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"));
    String::from_utf8_lossy(bytes)
}

fn real_args(server: &TestServer, local: &str) -> Vec<String> {
    let user = server.user(local);
    [
        "check",
        "--smtp",
        &server.submission_url(),
        "--starttls",
        "require",
        "--imap",
        &server.imap_url(),
        "--pop3",
        &server.pop3_url(),
        "--user",
        &user,
        "--ca-file",
        &server.ca_file.to_string_lossy(),
        "--sizes",
        "0,20KiB",
        "--command-timeout",
        "15s",
        "--delivery-timeout",
        "30s",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn successful_run_never_shows_the_password() {
    let _turn = REAL_SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let _shared = common::shared_server();
    let server = TestServer::get();
    let password = server.password();
    server.reset_auth_penalty("test21");
    let o = run(real_args(server, "test21"), &password);
    assert_eq!(o.code, 0, "a healthy run\n{}", text(&o, "stdout"));
    assert_no_secret("successful run", &o, &server.user("test21"), &password);
    // The transcript recorded the sessions, above TLS, with logins redacted.
    let t = text(&o, "transcript.txt");
    assert!(
        t.contains("C: AUTH PLAIN <redacted>") || t.contains("C: AUTH LOGIN"),
        "{t}"
    );
    assert!(
        t.contains("C: USER <redacted>") || t.contains("C: AUTH PLAIN"),
        "{t}"
    );
    assert!(t.contains("LOGIN <redacted>"), "{t}");
    assert!(t.contains("<TLS established>"), "{t}");
    assert!(
        t.contains("C: MAIL FROM:"),
        "SMTP after STARTTLS is recorded in plain text: {t}"
    );
    assert!(t.contains("<body: "), "bodies are summarized: {t}");
    assert!(
        t.len() < 200_000,
        "transcript of two small messages is small"
    );
}

#[test]
fn wrong_password_run_never_shows_it() {
    let _turn = REAL_SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let _shared = common::shared_server();
    let server = TestServer::get();
    let wrong = "Wr0ng-Pa55word-xyzzy";
    let o = run(real_args(server, "test21"), wrong);
    server.reset_auth_penalty("test21");
    assert_eq!(o.code, 2, "a refused login fails\n{}", text(&o, "stdout"));
    assert!(text(&o, "report.json").contains("auth_failed"));
    assert_no_secret("wrong password", &o, &server.user("test21"), wrong);
}

/// Fakes that answer every login with the password they were sent.
fn echoing_fakes() -> (Fake, Fake, Fake) {
    let smtp = Fake::spawn(|mut c: Conn| {
        if !server::smtp::hello(&mut c, &["AUTH PLAIN LOGIN"]) {
            return;
        }
        for _ in 0..20 {
            let Some(line) = c.line() else { return };
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("EHLO") {
                "250-fake.test\r\n250 AUTH PLAIN LOGIN\r\n".to_string()
            } else if upper.starts_with("AUTH PLAIN ") {
                let blob = &line["AUTH PLAIN ".len()..];
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(blob)
                    .unwrap_or_default();
                let password = decoded.rsplit(|&b| b == 0).next().unwrap_or_default();
                format!(
                    "535 5.7.8 Authentication failed: wrong password {} (blob {blob})\r\n",
                    String::from_utf8_lossy(password)
                )
            } else {
                "250 ok\r\n".to_string()
            };
            if !c.send(&reply) {
                return;
            }
        }
    });
    let imap = Fake::spawn(|mut c: Conn| {
        c.send("* OK [CAPABILITY IMAP4rev1] fake\r\n");
        for _ in 0..20 {
            let Some(line) = c.line() else { return };
            let (tag, upper, rest) = server::imap::split(&line);
            let reply = if upper.starts_with("LOGIN") {
                format!("{tag} NO [AUTHENTICATIONFAILED] you sent {rest}\r\n")
            } else {
                format!("{tag} OK done\r\n")
            };
            if !c.send(&reply) {
                return;
            }
        }
    });
    let pop3 = Fake::spawn(|mut c: Conn| {
        c.send("+OK fake\r\n");
        for _ in 0..20 {
            let Some(line) = c.line() else { return };
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("CAPA") {
                "+OK\r\nUSER\r\n.\r\n".to_string()
            } else if upper.starts_with("PASS ") {
                format!("-ERR wrong password {}\r\n", &line[5..])
            } else {
                "+OK\r\n".to_string()
            };
            if !c.send(&reply) {
                return;
            }
        }
    });
    (smtp, imap, pop3)
}

#[test]
fn a_server_echoing_the_password_does_not_leak_it() {
    let (smtp, imap, pop3) = echoing_fakes();
    let password = "Echo-Me-S3cret!";
    let user = "echo@mailprobe.test";
    let args: Vec<String> = [
        "check",
        "--smtp",
        &smtp.url("smtp"),
        "--imap",
        &imap.url("imap"),
        "--pop3",
        &pop3.url("pop3"),
        "--user",
        user,
        "--sizes",
        "0",
        "--command-timeout",
        "3s",
        "--delivery-timeout",
        "3s",
    ]
    .map(String::from)
    .to_vec();
    let o = run(args, password);
    assert_eq!(o.code, 2, "{}", text(&o, "stdout"));
    let json = text(&o, "report.json");
    // The refusals are there (so the echo really went through the probe)...
    assert!(json.contains("AUTHENTICATIONFAILED"), "{json}");
    assert!(json.contains("535"), "{json}");
    assert!(json.contains("<redacted>"), "{json}");
    assert!(
        text(&o, "transcript.txt")
            .contains("S: 535 5.7.8 Authentication failed: wrong password <redacted>")
    );
    // ... but never the password.
    assert_no_secret("echoing servers", &o, user, password);
}

/// Every form an access token takes in a bearer exchange with these endpoints.
fn token_forms(user: &str, token: &str, endpoints: &[(&str, u16)]) -> Vec<String> {
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let mut forms = vec![
        token.to_string(),
        b64(format!("user={user}\x01auth=Bearer {token}\x01\x01")),
        b64(format!("n,a={user},\x01auth=Bearer {token}\x01\x01")),
    ];
    for (host, port) in endpoints {
        forms.push(b64(format!(
            "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
        )));
    }
    forms
}

#[test]
fn access_tokens_never_show_accepted_or_refused() {
    let server = common::oauth::OauthServer::start();
    let user = server.user("test24");
    let logs = [
        "/var/lib/mailprobe-oauth/log/dovecot.log",
        "/var/lib/mailprobe-oauth/log/postfix.log",
    ];
    for (auth, good, code) in [
        ("oauthbearer", true, 0),
        ("xoauth2", true, 0),
        ("auto", false, 2),
    ] {
        let token = common::oauth::token(&user, 600, good);
        let args: Vec<String> = [
            "check",
            "--smtp",
            &server.url("smtp"),
            "--imap",
            &server.url("imaps"),
            "--pop3",
            &server.url("pop3s"),
            "--user",
            &user,
            "--ca-file",
            &server.ca_file.to_string_lossy(),
            "--auth",
            auth,
            "--token-env",
            "PROBE_TOKEN",
            "--sizes",
            "0",
            "--command-timeout",
            "20s",
            "--delivery-timeout",
            "30s",
        ]
        .map(String::from)
        .to_vec();
        let mut o = run_with(args, "PROBE_TOKEN", &token);
        assert_eq!(o.code, code, "{auth}: {}", text(&o, "stdout"));
        let t = text(&o, "transcript.txt");
        assert!(
            t.contains("C: AUTH OAUTHBEARER <redacted>")
                || t.contains("C: AUTH XOAUTH2 <redacted>"),
            "{t}"
        );
        assert!(t.contains("AUTHENTICATE"), "{t}");
        for log in logs {
            o.texts
                .push((log.to_string(), std::fs::read(log).unwrap_or_default()));
        }
        let endpoints = [
            ("127.0.0.1", 5787),
            ("127.0.0.1", 5793),
            ("127.0.0.1", 5795),
        ];
        for (name, bytes) in &o.texts {
            for form in token_forms(&user, &token, &endpoints) {
                assert!(
                    !common::contains(bytes, form.as_bytes()),
                    "{auth}: the token (as {form:?}) appears in {name}:\n{}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }
}
