//! `check --domain`: MX discovery against a real DNS responder on loopback (a small
//! authoritative server written here with hickory-proto, as re-exported by
//! hickory-resolver), and SMTP to the real test Postfix through `--mx-port`.
//!
//! Postfix listens on 127.0.0.1 only, so an exchanger at 127.0.0.2 is refused: that
//! is the "backup MX down" case. The server certificate names
//! `mail.mailprobe.test`, so an MX of that name verifies (with the test CA) while
//! an MX named anything else does not: TLS checks the MX name, not the address.
//!
//! Mailboxes: test13 (IMAP) and test14 (POP3) end to end, so the probe cleans up;
//! checks that send nothing use test15.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{TestServer, run_binary, shared_server};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;

// ------------------------------------------------------------ the DNS responder

/// What the responder knows about one name.
#[derive(Clone, Default)]
struct Entry {
    mx: Vec<(u16, &'static str)>,
    a: Vec<Ipv4Addr>,
    /// Answer every question about this name with this code.
    rcode: Option<ResponseCode>,
}

/// An authoritative DNS server on 127.0.0.1 (UDP) for a fixed zone; names it does
/// not know are NXDOMAIN. Stops when dropped.
struct DnsServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    fn start(zone: HashMap<&'static str, Entry>) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS responder");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = socket.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Ok(bytes) = answer(&zone, &request).to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        DnsServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("a DNS name")
}

fn answer(zone: &HashMap<&'static str, Entry>, request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.clone());
    let Some(query) = request.queries.first() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    let asked = query
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let Some(entry) = zone.get(asked.as_str()) else {
        response.metadata.response_code = ResponseCode::NXDomain;
        return response;
    };
    if let Some(code) = entry.rcode {
        response.metadata.response_code = code;
        return response;
    }
    let owner = query.name().clone();
    match query.query_type() {
        RecordType::MX => {
            for (preference, exchange) in &entry.mx {
                response.add_answer(Record::from_rdata(
                    owner.clone(),
                    60,
                    RData::MX(MX::new(*preference, name(exchange))),
                ));
            }
        }
        RecordType::A => {
            for ip in &entry.a {
                response.add_answer(Record::from_rdata(owner.clone(), 60, RData::A(A(*ip))));
            }
        }
        _ => {} // NOERROR, no data (no AAAA anywhere)
    }
    response
}

/// The test zone.
fn zone() -> HashMap<&'static str, Entry> {
    let a = |ip: [u8; 4]| Entry {
        a: vec![Ipv4Addr::from(ip)],
        ..Default::default()
    };
    let mx = |list: Vec<(u16, &'static str)>| Entry {
        mx: list,
        ..Default::default()
    };
    HashMap::from([
        // Listed backup first: the probe must sort by preference.
        (
            "two.mxtest",
            mx(vec![
                (20, "backup.mailprobe.test."),
                (10, "mail.mailprobe.test."),
            ]),
        ),
        ("mail.mailprobe.test", a([127, 0, 0, 1])),
        ("backup.mailprobe.test", a([127, 0, 0, 2])),
        ("nomx.mxtest", a([127, 0, 0, 1])),
        ("null.mxtest", mx(vec![(0, ".")])),
        ("wrongname.mxtest", mx(vec![(10, "mx1.wrongname.mxtest.")])),
        ("mx1.wrongname.mxtest", a([127, 0, 0, 1])),
        ("down.mxtest", mx(vec![(10, "backup.mailprobe.test.")])),
        ("empty.mxtest", Entry::default()),
        (
            "broken.mxtest",
            Entry {
                rcode: Some(ResponseCode::ServFail),
                ..Default::default()
            },
        ),
    ])
}

// ------------------------------------------------------------------ helpers

fn domain_cli(server: &TestServer, dns: &DnsServer, domain: &str, local: &str) -> Vec<String> {
    let user = server.user(local);
    [
        "check",
        "--domain",
        domain,
        "--resolver",
        &dns.addr(),
        "--mx-port",
        &server.smtp_port.to_string(),
        "--from",
        &user,
        "--to",
        &user,
        "--ca-file",
        &server.ca_file.display().to_string(),
        "--sizes",
        "0,10KiB",
        "--connect-timeout",
        "3s",
        "--command-timeout",
        "15s",
        "--delivery-timeout",
        "30s",
        "--format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with_retrieval(
    mut cli: Vec<String>,
    server: &TestServer,
    local: &str,
    url: String,
) -> Vec<String> {
    let scheme = if url.starts_with("imap") {
        "--imap"
    } else {
        "--pop3"
    };
    cli.extend([
        scheme.to_string(),
        url,
        "--user".into(),
        server.user(local),
        "--password-file".into(),
        server.password_file.display().to_string(),
    ]);
    cli
}

fn run_json(cli: &[String]) -> (i32, Value, String) {
    let out = run_binary(cli, &[]);
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        )
    });
    (out.code, json, out.stderr)
}

fn codes(json: &Value) -> Vec<(String, String)> {
    json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// -------------------------------------------------------------------- tests

#[test]
fn two_mx_in_preference_order_one_working_one_down() {
    let server = TestServer::get();
    let _turn = shared_server();
    let dns = DnsServer::start(zone());
    let cli = with_retrieval(
        domain_cli(server, &dns, "two.mxtest", "test13"),
        server,
        "test13",
        server.imaps_url(),
    );
    let (code, json, stderr) = run_json(&cli);
    let mx = &json["mx"];
    assert_eq!(mx["domain"], "two.mxtest", "{json:#}");
    assert_eq!(mx["source"], "mx");
    let ex = mx["exchangers"].as_array().unwrap();
    assert_eq!(ex.len(), 2, "{mx:#}");
    // Preference order, whatever order DNS gave.
    assert_eq!(ex[0]["host"], "mail.mailprobe.test");
    assert_eq!(ex[0]["preference"], 10);
    assert_eq!(ex[0]["addresses"][0], "127.0.0.1");
    assert_eq!(ex[0]["smtp"]["ok"], true, "{:#}", ex[0]);
    // STARTTLS to 127.0.0.1 verified against the MX name, not the address.
    let tls = &ex[0]["smtp"]["tls"];
    assert_eq!(tls["verified"], true, "{tls:#}");
    assert_eq!(tls["name_matches"], true);
    assert_eq!(ex[1]["host"], "backup.mailprobe.test");
    assert_eq!(ex[1]["preference"], 20);
    assert_eq!(ex[1]["addresses"][0], "127.0.0.2");
    assert_eq!(ex[1]["smtp"]["ok"], false);
    assert_eq!(ex[1]["smtp"]["error"]["kind"], "refused", "{:#}", ex[1]);
    assert_eq!(mx["used"], "mail.mailprobe.test");

    // The ladder went end to end through the working MX and was cleaned up.
    let messages = json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    for m in messages {
        assert_eq!(m["smtp"]["ok"], true, "{m:#}");
        assert_eq!(m["imap"]["ok"], true, "{m:#}");
    }
    assert!(
        json["target"]["smtp"]
            .as_str()
            .unwrap()
            .contains("mail.mailprobe.test")
    );
    assert!(json["cleanup"]["leftovers"].as_array().unwrap().is_empty());
    // One MX down while the other works: degraded, naming the backup.
    assert_eq!(
        codes(&json),
        vec![("mx_unreachable".into(), "degraded".into())],
        "{json:#}"
    );
    assert!(
        json["summary"]
            .as_str()
            .unwrap()
            .contains("backup.mailprobe.test")
    );
    assert_eq!(json["verdict"], "degraded");
    assert_eq!(code, 1, "stderr: {stderr}");
}

#[test]
fn human_report_lists_exchangers_and_tls() {
    let server = TestServer::get();
    let _turn = shared_server();
    let dns = DnsServer::start(zone());
    let mut cli = with_retrieval(
        domain_cli(server, &dns, "two.mxtest", "test15"),
        server,
        "test15",
        server.imaps_url(),
    );
    let n = cli.len();
    let pos = cli.iter().position(|a| a == "json").unwrap();
    cli[pos] = "human".into();
    let sizes = cli.iter().position(|a| a == "0,10KiB").unwrap();
    cli[sizes] = "0".into();
    assert_eq!(cli.len(), n);
    let out = run_binary(&cli, &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let text = &out.stdout;
    assert!(text.contains("mail exchangers of two.mxtest"), "{text}");
    let section = &text[text.find("mail exchangers of").unwrap()..];
    let mx1 = section.find("10 mail.mailprobe.test").expect(text);
    let mx2 = section.find("20 backup.mailprobe.test").expect(text);
    assert!(mx1 < mx2, "{text}");
    assert!(text.contains("the ladder went through this one"), "{text}");
    // One TLS line per protocol: version, cipher, subject, days to expiry.
    for proto in ["smtp", "imap"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(proto) && l.contains("TLS"))
            .unwrap_or_else(|| panic!("no {proto} TLS line in\n{text}"));
        assert!(
            line.contains("CN=localhost") && line.contains("expires in"),
            "{line}"
        );
    }
}

#[test]
fn no_mx_falls_back_to_the_domain_address() {
    let server = TestServer::get();
    let _turn = shared_server();
    let dns = DnsServer::start(zone());
    let mut cli = with_retrieval(
        domain_cli(server, &dns, "nomx.mxtest", "test14"),
        server,
        "test14",
        server.pop3s_url(),
    );
    // The domain name is the implicit MX: its certificate does not name it.
    cli.push("--starttls".into());
    cli.push("never".into());
    let (code, json, stderr) = run_json(&cli);
    let mx = &json["mx"];
    assert_eq!(mx["source"], "implicit", "{json:#}");
    assert!(
        mx["note"].as_str().unwrap().contains("no MX record"),
        "{mx:#}"
    );
    assert!(mx["note"].as_str().unwrap().contains("RFC 5321"));
    let ex = mx["exchangers"].as_array().unwrap();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0]["host"], "nomx.mxtest");
    assert_eq!(ex[0]["addresses"][0], "127.0.0.1");
    assert_eq!(ex[0]["smtp"]["ok"], true, "{:#}", ex[0]);
    assert!(ex[0]["smtp"]["tls"].is_null(), "--starttls never");
    for m in json["messages"].as_array().unwrap() {
        assert_eq!(m["pop3"]["ok"], true, "{m:#}");
    }
    assert_eq!(json["verdict"], "healthy", "{json:#}");
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn mx_certificate_must_name_the_mx_host() {
    let server = TestServer::get();
    let _turn = shared_server();
    let dns = DnsServer::start(zone());
    // SMTP only: nothing is delivered, because TLS to the MX fails.
    let cli = domain_cli(server, &dns, "wrongname.mxtest", "test15");
    let (code, json, _) = run_json(&cli);
    let ex = &json["mx"]["exchangers"][0];
    assert_eq!(ex["host"], "mx1.wrongname.mxtest", "{json:#}");
    assert_eq!(ex["smtp"]["ok"], false);
    assert_eq!(ex["smtp"]["error"]["kind"], "tls", "{ex:#}");
    // The certificate is still described, and its names do not cover the MX.
    let tls = &ex["smtp"]["tls"];
    assert_eq!(tls["verified"], false, "{ex:#}");
    assert_eq!(tls["name_matches"], false);
    assert!(
        tls["certificate"]["sans"]
            .as_array()
            .unwrap()
            .contains(&Value::from("mail.mailprobe.test"))
    );
    let found = codes(&json);
    assert!(
        found.contains(&("tls_invalid".into(), "failing".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("mx_unreachable".into(), "failing".into())),
        "{found:?}"
    );
    for m in json["messages"].as_array().unwrap() {
        assert_eq!(
            m["smtp"]["ok"], false,
            "nothing may be sent over an unverified TLS: {m:#}"
        );
    }
    assert_eq!(code, 2);
}

#[test]
fn every_mx_down_is_failing() {
    let server = TestServer::get();
    let _turn = shared_server();
    let dns = DnsServer::start(zone());
    let cli = domain_cli(server, &dns, "down.mxtest", "test15");
    let (code, json, _) = run_json(&cli);
    assert_eq!(
        codes(&json),
        vec![("mx_unreachable".into(), "failing".into())],
        "{json:#}"
    );
    assert!(json["messages"].as_array().unwrap().is_empty());
    assert!(json["mx"]["used"].is_null());
    assert!(
        json["summary"]
            .as_str()
            .unwrap()
            .contains("no mail exchanger of down.mxtest")
    );
    assert_eq!(code, 2);
}

#[test]
fn null_mx_means_the_domain_takes_no_mail() {
    let server = TestServer::get();
    let dns = DnsServer::start(zone());
    let cli = domain_cli(server, &dns, "null.mxtest", "test15");
    let (code, json, _) = run_json(&cli);
    assert_eq!(json["mx"]["source"], "null_mx", "{json:#}");
    assert!(json["mx"]["exchangers"].as_array().unwrap().is_empty());
    assert!(json["messages"].as_array().unwrap().is_empty());
    assert_eq!(codes(&json), vec![("null_mx".into(), "failing".into())]);
    assert!(
        json["summary"]
            .as_str()
            .unwrap()
            .contains("does not accept mail"),
        "{json:#}"
    );
    assert_eq!(code, 2);
}

#[test]
fn dns_failures_are_failing_diagnoses() {
    let server = TestServer::get();
    let dns = DnsServer::start(zone());
    for (domain, says) in [
        ("gone.mxtest", "does not exist"),
        ("broken.mxtest", "SERVFAIL"),
        ("empty.mxtest", "neither MX nor address"),
    ] {
        let cli = domain_cli(server, &dns, domain, "test15");
        let (code, json, stderr) = run_json(&cli);
        assert_eq!(json["mx"]["source"], "dns_failed", "{domain}: {json:#}");
        assert_eq!(
            codes(&json),
            vec![("dns_failed".into(), "failing".into())],
            "{domain}"
        );
        let summary = json["summary"].as_str().unwrap();
        assert!(
            summary.contains(says) && summary.contains(domain),
            "{domain}: {summary}"
        );
        assert_eq!(code, 2, "{domain}: {stderr}");
    }
}

#[test]
fn a_resolver_that_does_not_answer_means_could_not_run() {
    let server = TestServer::get();
    // A UDP port with nobody behind it.
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let dns = DnsServer {
        port,
        stop: Arc::new(AtomicBool::new(true)),
        thread: None,
    };
    let cli = domain_cli(server, &dns, "two.mxtest", "test15");
    let started = Instant::now();
    let out = run_binary(&cli, &[]);
    assert_eq!(
        out.code, 3,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stderr.contains("cannot ask DNS about two.mxtest"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn domain_flags_are_validated() {
    let server = TestServer::get();
    let dns = DnsServer::start(zone());
    let mut cli = domain_cli(server, &dns, "two.mxtest", "test15");
    cli.extend(["--smtp".into(), server.smtp_url()]);
    let out = run_binary(&cli, &[]);
    assert_ne!(out.code, 0, "--domain and --smtp conflict");
    let out = run_binary(
        &[
            "check",
            "--domain",
            "not a domain",
            "--to",
            "a@b.c",
            "--from",
            "a@b.c",
        ],
        &[],
    );
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("not a mail domain"), "{}", out.stderr);
    let out = run_binary(
        &[
            "check",
            "--domain",
            "two.mxtest",
            "--resolver",
            "dns.example",
            "--to",
            "a@b.c",
            "--from",
            "a@b.c",
        ],
        &[],
    );
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("--resolver"), "{}", out.stderr);
}
