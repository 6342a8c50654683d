//! TLS certificate inspection against the real server, through a TLS-terminating
//! proxy written here: it presents a certificate made with rcgen (valid, about to
//! expire, expired, wrong name) and forwards the plaintext to Dovecot's IMAP port,
//! so the probe's `imaps://` endpoint sees exactly that certificate while the rest
//! of the check is real. POP3 goes straight to the server (pop3s) so that cleanup
//! works even when IMAP fails on the certificate.
//!
//! Mailbox: test16, one check at a time (POP3 locks the mailbox).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::tls::{TestCa, TlsProxy, leaf, test_ca};
use common::{TestServer, run_binary, shared_server};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

const MAILBOX: &str = "test16";
/// Checks share one mailbox: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ------------------------------------------------------------------ helpers

struct Run {
    code: i32,
    json: Value,
    stdout: String,
}

/// One check with IMAP through a proxy presenting `cert`; `extra` flags on top.
fn check_with(
    server: &TestServer,
    ca_file: &Path,
    cert: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    extra: &[&str],
) -> Run {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _turn = shared_server();
    let upstream: SocketAddr = format!("{}:{}", server.host, server.imap_port)
        .parse()
        .unwrap();
    let proxy = TlsProxy::start(cert.0, cert.1, upstream);
    let user = server.user(MAILBOX);
    let mut args: Vec<String> = [
        "check",
        "--smtp",
        &server.smtp_url(),
        "--imap",
        &format!("imaps://127.0.0.1:{}", proxy.port),
        "--pop3",
        &server.pop3s_url(),
        "--user",
        &user,
        "--password-file",
        &server.password_file.display().to_string(),
        "--ca-file",
        &ca_file.display().to_string(),
        "--sizes",
        "0",
        "--connect-timeout",
        "5s",
        "--command-timeout",
        "15s",
        "--delivery-timeout",
        "30s",
        "--format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run_binary(&args, &[]);
    drop(proxy);
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        )
    });
    assert!(
        json["cleanup"]["leftovers"].as_array().unwrap().is_empty(),
        "probe messages left behind: {json:#}"
    );
    Run {
        code: out.code,
        json,
        stdout: out.stdout,
    }
}

/// Trust both the test server's CA (SMTP, POP3) and this test's CA (the proxy).
fn ca_bundle(server: &TestServer, ca: &TestCa) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    let server_ca = std::fs::read_to_string(&server.ca_file).unwrap();
    std::fs::write(&path, format!("{server_ca}\n{}", ca.pem)).unwrap();
    (dir, path)
}

fn tls_diagnoses(json: &Value) -> Vec<(String, String, String)> {
    json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "tls_invalid")
        .map(|d| {
            (
                d["severity"].as_str().unwrap().to_string(),
                d["protocol"].as_str().unwrap_or_default().to_string(),
                d["summary"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn imap_tls(json: &Value) -> &Value {
    &json["messages"][0]["imap"]["tls"]
}

const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

// -------------------------------------------------------------------- tests

#[test]
fn valid_certificate_from_a_private_ca_verifies() {
    let server = TestServer::get();
    let ca = test_ca();
    let (_dir, bundle) = ca_bundle(server, &ca);
    let run = check_with(server, &bundle, leaf(&ca, &NAMES, -1, 200), &[]);
    let tls = imap_tls(&run.json);
    assert_eq!(tls["verified"], true, "{:#}", run.json);
    assert_eq!(tls["name_matches"], true);
    assert!(tls["verify_error"].is_null());
    assert_eq!(tls["certificate"]["subject"], "CN=localhost");
    assert_eq!(
        tls["certificate"]["issuer"],
        "CN=mailprobe inspection test CA"
    );
    let days = tls["certificate"]["days_to_expiry"].as_i64().unwrap();
    assert!((199..=200).contains(&days), "{days}");
    assert!(tls_diagnoses(&run.json).is_empty(), "{:#}", run.json);
    assert_eq!(run.json["verdict"], "healthy", "{:#}", run.json);
    assert_eq!(run.code, 0);
}

#[test]
fn short_lived_certificate_warns_within_cert_warn_days() {
    let server = TestServer::get();
    let ca = test_ca();
    let (_dir, bundle) = ca_bundle(server, &ca);
    let run = check_with(
        server,
        &bundle,
        leaf(&ca, &NAMES, -1, 3),
        &["--cert-warn-days", "14"],
    );
    let tls = imap_tls(&run.json);
    assert_eq!(tls["verified"], true, "{:#}", run.json);
    assert_eq!(tls["certificate"]["days_to_expiry"], 3);
    let found = tls_diagnoses(&run.json);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str()),
        ("degraded", "imap")
    );
    assert!(found[0].2.contains("expires in 3 day"), "{found:?}");
    assert_eq!(run.json["verdict"], "degraded");
    assert_eq!(run.code, 1);

    // The threshold is the flag's: 2 days is not "soon" for a 3-day certificate.
    let run = check_with(
        server,
        &bundle,
        leaf(&ca, &NAMES, -1, 3),
        &["--cert-warn-days", "2"],
    );
    assert!(tls_diagnoses(&run.json).is_empty(), "{:#}", run.json);
    assert_eq!(run.code, 0, "{:#}", run.json);
}

#[test]
fn expired_certificate_fails_and_is_degraded_with_insecure() {
    let server = TestServer::get();
    let ca = test_ca();
    let (_dir, bundle) = ca_bundle(server, &ca);
    let run = check_with(server, &bundle, leaf(&ca, &NAMES, -30, -2), &[]);
    let found = tls_diagnoses(&run.json);
    assert_eq!(found.len(), 1, "{:#}", run.json);
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str()),
        ("failing", "imap")
    );
    // The failed handshake still names the certificate it saw.
    let imap = &run.json["messages"][0]["imap"];
    assert_eq!(imap["error"]["kind"], "tls", "{imap:#}");
    let tls = &imap["tls"];
    assert_eq!(tls["verified"], false, "{imap:#}");
    assert_eq!(tls["name_matches"], true);
    assert!(tls["certificate"]["days_to_expiry"].as_i64().unwrap() < 0);
    let evidence = run.json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "tls_invalid")
        .unwrap()["evidence"]
        .to_string();
    assert!(evidence.contains("CN=localhost"), "{evidence}");
    assert_eq!(run.json["verdict"], "failing");
    assert_eq!(run.code, 2);

    let run = check_with(server, &bundle, leaf(&ca, &NAMES, -30, -2), &["--insecure"]);
    let tls = imap_tls(&run.json);
    assert_eq!(tls["verified"], false, "{:#}", run.json);
    assert!(tls["certificate"]["days_to_expiry"].as_i64().unwrap() < 0);
    assert_eq!(run.json["messages"][0]["imap"]["ok"], true);
    let found = tls_diagnoses(&run.json);
    assert!(
        found
            .iter()
            .any(|(sev, proto, _)| sev == "degraded" && proto == "imap"),
        "{found:?}"
    );
    assert!(found.iter().all(|(sev, _, _)| sev == "degraded"));
    assert_eq!(run.json["verdict"], "degraded");
    assert_eq!(run.code, 1);
}

#[test]
fn wrong_name_is_reported_as_such() {
    let server = TestServer::get();
    let ca = test_ca();
    let (_dir, bundle) = ca_bundle(server, &ca);
    // Trusted CA, current dates, but not a name of 127.0.0.1.
    let wrong = || leaf(&ca, &["mail.elsewhere.test"], -1, 200);
    let run = check_with(server, &bundle, wrong(), &[]);
    let found = tls_diagnoses(&run.json);
    assert_eq!(found.len(), 1, "{:#}", run.json);
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str()),
        ("failing", "imap")
    );
    let tls = imap_tls(&run.json);
    assert_eq!(tls["name_matches"], false, "{:#}", run.json);
    assert_eq!(tls["verified"], false);
    assert_eq!(tls["certificate"]["sans"][0], "mail.elsewhere.test");
    assert_eq!(run.code, 2);

    let run = check_with(server, &bundle, wrong(), &["--insecure"]);
    let tls = imap_tls(&run.json);
    assert_eq!(tls["name_matches"], false, "{:#}", run.json);
    assert_eq!(tls["verified"], false);
    let d = run.json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "tls_invalid" && d["protocol"] == "imap")
        .cloned()
        .unwrap_or_else(|| panic!("{:#}", run.json));
    assert_eq!(d["severity"], "degraded");
    assert!(
        d["evidence"]
            .to_string()
            .contains("no certificate name matches"),
        "{d:#}"
    );
    assert_eq!(run.code, 1);
}

#[test]
fn human_report_has_one_tls_line_per_protocol() {
    let server = TestServer::get();
    let ca = test_ca();
    let (_dir, bundle) = ca_bundle(server, &ca);
    let out_dir = tempfile::tempdir().unwrap();
    let human = out_dir.path().join("report.txt");
    let spec = format!("human={}", human.display());
    let run = check_with(
        server,
        &bundle,
        leaf(&ca, &NAMES, -1, 3),
        &["--output", &spec],
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let text = std::fs::read_to_string(&human).unwrap();
    let section = &text[text.find("\ntls:\n").unwrap_or_else(|| panic!("{text}"))..];
    let line = |proto: &str| {
        section
            .lines()
            .find(|l| l.trim_start().starts_with(proto))
            .unwrap_or_else(|| panic!("no {proto} line in\n{text}"))
            .to_string()
    };
    let imap = line("imap");
    assert!(imap.contains("TLSv1."), "{imap}");
    assert!(
        imap.contains("TLS13_") || imap.contains("TLS_ECDHE"),
        "{imap}"
    );
    assert!(imap.contains("CN=localhost"), "{imap}");
    assert!(imap.contains("expires in 3 days"), "{imap}");
    for proto in ["smtp", "pop3"] {
        let l = line(proto);
        assert!(l.contains("verified") && l.contains("expires in"), "{l}");
    }
}
