//! The interop suite: mailprobe against mail servers other than Postfix and
//! Dovecot, i.e. Exim 4.96 and GNU Mailutils imap4d/pop3d from Debian's packages,
//! started on loopback by `scripts/interop.sh start` (docs/INTEROP.md lists the
//! endpoints and the quirks these tests hold true).
//!
//! Verdicts must follow from evidence, not from Postfix's wording: a size limit
//! without an enhanced code, `550 Message too big!` under a larger advertised SIZE,
//! Exim's 530s, a wrong password on all three protocols, plaintext refused by
//! Mailutils, and a self-signed `CA:TRUE` certificate given with `--ca-file`.
//!
//! Mailboxes (interop users): probe and test01..test08; test09..test16 belong to
//! the polite-watching tests. One check per mailbox at a time (pop3d locks it).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use std::net::SocketAddr;

use common::run_binary;
use common::tls::{TlsProxy, leaf, self_signed_ca_true};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// Where the interop servers are, from `scripts/interop.sh env`.
struct Interop {
    vars: HashMap<String, String>,
}

impl Interop {
    fn get() -> &'static Interop {
        static INTEROP: OnceLock<Interop> = OnceLock::new();
        INTEROP.get_or_init(|| {
            let how = "start them with `sudo scripts/interop.sh start` (installs Exim and GNU Mailutils from Debian's packages on first use; see docs/INTEROP.md)";
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/interop.sh");
            let status = Command::new(&script)
                .arg("status")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}; {how}", script.display()));
            assert!(
                status.status.success(),
                "the interop mail servers are not running ({}{}); {how}",
                String::from_utf8_lossy(&status.stdout).trim(),
                String::from_utf8_lossy(&status.stderr).trim()
            );
            let env = Command::new(&script)
                .arg("env")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {} env: {e}; {how}", script.display()));
            assert!(env.status.success(), "scripts/interop.sh env failed; {how}");
            let vars = String::from_utf8_lossy(&env.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
                .collect();
            Interop { vars }
        })
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("scripts/interop.sh env does not set {name}"))
    }

    fn url(&self, scheme: &str, port_var: &str) -> String {
        format!(
            "{scheme}://{}:{}",
            self.var("MAILPROBE_INTEROP_HOST"),
            self.var(port_var)
        )
    }

    fn user(&self, local: &str) -> String {
        format!("{local}@{}", self.var("MAILPROBE_INTEROP_DOMAIN"))
    }

    fn maildir(&self, local: &str) -> PathBuf {
        Path::new(self.var("MAILPROBE_INTEROP_MAILDIR_ROOT"))
            .join(local)
            .join("Maildir")
    }

    /// Probe messages in a mailbox, by the probe id header in the files.
    fn probe_messages(&self, local: &str) -> usize {
        ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.maildir(local).join(d)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                std::fs::read(e.path())
                    .map(|b| {
                        b.windows(15)
                            .any(|w| w.eq_ignore_ascii_case(b"x-mailprobe-id:"))
                    })
                    .unwrap_or(false)
            })
            .count()
    }

    /// Remove what an earlier (failed) run left in this test's own mailbox.
    fn clear(&self, local: &str) {
        for d in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir(local).join(d)) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// `check` for mailbox `local` with the interop password and `ca_file`, JSON out.
    fn check(&self, local: &str, ca_file: &str, args: &[&str]) -> Run {
        self.check_with_password(
            local,
            self.var("MAILPROBE_INTEROP_PASSWORD_FILE"),
            ca_file,
            args,
        )
    }

    /// One check at a time across this suite, polling once a second: Mailutils
    /// deletes a Maildir's `tmp/` files whenever a session opens the mailbox, so a
    /// POP3 login while Exim is still writing a message there makes Exim defer it
    /// to its next queue run (docs/INTEROP.md); a loaded machine widens that window.
    fn check_with_password(
        &self,
        local: &str,
        password_file: &str,
        ca_file: &str,
        args: &[&str],
    ) -> Run {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // Fewer POP3 logins while waiting, fewer deliveries Mailutils breaks.
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("interop.toml");
        std::fs::write(&profile, "poll_interval = \"1s\"\n").unwrap();
        let profile = profile.to_str().unwrap();
        let user = self.user(local);
        let mut all: Vec<&str> = vec![
            "check",
            "--profile",
            profile,
            "--user",
            &user,
            "--password-file",
            password_file,
            "--ca-file",
            ca_file,
            "--connect-timeout",
            "5s",
            "--command-timeout",
            "15s",
            "--delivery-timeout",
            "45s",
            "--format",
            "json",
        ];
        all.extend_from_slice(args);
        let out = run_binary(&all, &[]);
        let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
                out.code, out.stdout, out.stderr
            )
        });
        Run {
            code: out.code,
            json,
        }
    }
}

struct Run {
    code: i32,
    json: Value,
}

impl Run {
    fn codes(&self) -> Vec<String> {
        self.json["diagnoses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["code"].as_str().unwrap().to_string())
            .collect()
    }
    fn diagnosis(&self, code: &str) -> &Value {
        self.json["diagnoses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["code"] == code)
            .unwrap_or_else(|| panic!("no {code} diagnosis in {:#}", self.json))
    }
    fn text(&self) -> String {
        self.json.to_string()
    }
}

const LADDER: &str = "0,10KiB,1MiB,5MiB";

#[test]
fn pop3_ladder_on_exim_and_mailutils_is_healthy() {
    let i = Interop::get();
    i.clear("test01");
    let run = i.check(
        "test01",
        i.var("MAILPROBE_INTEROP_CA_FILE"),
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SUBMISSION_PORT"),
            "--pop3",
            &i.url("pop3s", "MAILPROBE_INTEROP_POP3S_PORT"),
            "--sizes",
            LADDER,
        ],
    );
    assert_eq!(run.json["verdict"], "healthy", "{:#}", run.json);
    assert_eq!(run.code, 0);
    let messages = run.json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    for m in messages {
        assert_eq!(m["pop3"]["verified"], true, "{m:#}");
        assert_eq!(m["pop3"]["deleted"], true, "{m:#}");
    }
    assert_eq!(
        i.probe_messages("test01"),
        0,
        "probe mail left in the Maildir"
    );
}

/// Mailutils answers EXPUNGE with `* n EXPUNGED`, which async-imap cannot parse:
/// cleanup must look again instead of reporting deleted mail as left over. And
/// POP3's `deleted` says what POP3 did: nothing, when IMAP deleted the message.
#[test]
fn imap_cleanup_on_mailutils_is_verified_and_pop3_deleted_is_pop3s_own() {
    let i = Interop::get();
    i.clear("test02");
    let run = i.check(
        "test02",
        i.var("MAILPROBE_INTEROP_CA_FILE"),
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SUBMISSION_PORT"),
            "--imap",
            &i.url("imaps", "MAILPROBE_INTEROP_IMAPS_PORT"),
            "--pop3",
            &i.url("pop3s", "MAILPROBE_INTEROP_POP3S_PORT"),
            "--sizes",
            "0,10KiB",
        ],
    );
    assert!(
        run.json["cleanup"]["leftovers"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{:#}",
        run.json
    );
    assert!(
        !run.codes().contains(&"cleanup_incomplete".to_string()),
        "{:#}",
        run.json
    );
    for m in run.json["messages"].as_array().unwrap() {
        // Exactly one protocol deleted it. imap4d's unparsable `* n EXPUNGED` can leave
        // the message for POP3's DELE; what must never be is both claiming it (issue 13).
        let (imap, pop3) = (&m["imap"]["deleted"], &m["pop3"]["deleted"]);
        assert!(
            (imap == true) != (pop3 == true),
            "one deletion, claimed once: {m:#}"
        );
        assert_eq!(m["pop3"]["verified"], true, "{m:#}");
    }
    assert_eq!(
        i.probe_messages("test02"),
        0,
        "probe mail left in the Maildir"
    );
}

#[test]
fn exims_552_without_enhanced_code_is_a_size_limit_and_bisected() {
    let i = Interop::get();
    i.clear("test03");
    let run = i.check(
        "test03",
        i.var("MAILPROBE_INTEROP_CA_FILE"),
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SMTP_SMALL_PORT"),
            "--pop3",
            &i.url("pop3s", "MAILPROBE_INTEROP_POP3S_PORT"),
            "--sizes",
            LADDER,
            "--bisect",
        ],
    );
    let d = run.diagnosis("attachments_fail");
    assert_eq!(d["cause"], "size_limit", "{:#}", run.json);
    let limit: u64 = i.var("MAILPROBE_INTEROP_SMALL_SIZE_LIMIT").parse().unwrap();
    let found = &run.json["size_limit"];
    let (lo, hi) = (
        found["largest_accepted_bytes"].as_u64().unwrap(),
        found["smallest_refused_bytes"].as_u64().unwrap(),
    );
    assert!(
        lo < limit + limit / 20 && hi > limit - limit / 20,
        "{found:#}"
    );
    assert_eq!(found["advertised_disagrees"], false, "{found:#}");
    // The advertised SIZE is right here: no advice to fix it.
    assert!(
        !d["hints"].to_string().contains("advertised EHLO SIZE"),
        "{d:#}"
    );
    let refused = &run.json["messages"][3]["smtp"]["error"];
    assert_eq!(refused["reply"]["code"], 552, "{refused:#}");
    assert!(refused["reply"]["enhanced"].is_null(), "{refused:#}");
    assert_eq!(refused["class"], "size_limit", "{refused:#}");
    assert_eq!(run.code, 2);
    assert!(
        run.json["cleanup"]["leftovers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn message_too_big_550_under_a_larger_advertised_size_is_a_size_limit() {
    let i = Interop::get();
    i.clear("test04");
    let run = i.check(
        "test04",
        i.var("MAILPROBE_INTEROP_CA_FILE"),
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SMTP_TOOBIG_PORT"),
            "--pop3",
            &i.url("pop3s", "MAILPROBE_INTEROP_POP3S_PORT"),
            "--sizes",
            LADDER,
            "--bisect",
        ],
    );
    let d = run.diagnosis("attachments_fail");
    assert_eq!(d["cause"], "size_limit", "{:#}", run.json);
    assert!(!run.text().contains("content filter"), "{:#}", run.json);
    let refused = &run.json["messages"][3]["smtp"]["error"];
    assert_eq!(refused["reply"]["code"], 550, "{refused:#}");
    assert!(
        refused["reply"]["text"]
            .as_str()
            .unwrap()
            .contains("too big")
    );
    assert_eq!(refused["class"], "size_limit", "{refused:#}");
    let found = &run.json["size_limit"];
    assert!(
        found["sends"].as_u64().unwrap() > 0,
        "bisection ran: {:#}",
        run.json
    );
    assert_eq!(found["advertised_disagrees"], true, "{found:#}");
    assert!(
        d["hints"].to_string().contains("advertised EHLO SIZE"),
        "{d:#}"
    );
    assert_eq!(run.code, 2);
    assert!(
        run.json["cleanup"]["leftovers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn exims_530s_are_auth_required_and_tls_required() {
    let i = Interop::get();
    let submission = i.url("smtp", "MAILPROBE_INTEROP_SUBMISSION_PORT");
    let ca = i.var("MAILPROBE_INTEROP_CA_FILE");
    let run = i.check(
        "test05",
        ca,
        &[
            "--smtp",
            &submission,
            "--smtp-only",
            "--sizes",
            "0",
            "--no-smtp-auth",
        ],
    );
    assert_eq!(run.codes(), vec!["auth_required"], "{:#}", run.json);
    assert!(!run.text().contains("content filter"), "{:#}", run.json);
    assert_eq!(run.code, 2);

    let run = i.check(
        "test05",
        ca,
        &[
            "--smtp",
            &submission,
            "--smtp-only",
            "--sizes",
            "0",
            "--starttls",
            "never",
        ],
    );
    assert_eq!(run.codes(), vec!["tls_required"], "{:#}", run.json);
    let d = run.diagnosis("tls_required");
    // AUTH is not offered before TLS: skipping it is said, not silent.
    assert!(
        d["evidence"].to_string().contains("AUTH was not used"),
        "{d:#}"
    );
    assert_eq!(run.code, 2);

    // Port 25 takes local mail without AUTH: accepted, and the skipped AUTH is noted.
    let run = i.check(
        "test05",
        ca,
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SMTP_PORT"),
            "--smtp-only",
            "--sizes",
            "0",
            "--starttls",
            "never",
        ],
    );
    assert_eq!(run.json["verdict"], "healthy", "{:#}", run.json);
    let notes = run.json["smtp_server"]["notes"].to_string();
    assert!(notes.contains("AUTH was not used"), "{:#}", run.json);
    i.clear("test05");
}

#[test]
fn recipients_refused_by_exim_are_unknown_recipient_and_relay_denied() {
    let i = Interop::get();
    let ca = i.var("MAILPROBE_INTEROP_CA_FILE");
    let nobody = i.user("nobody-here");
    let run = i.check(
        "probe",
        ca,
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SUBMISSION_PORT"),
            "--smtp-only",
            "--sizes",
            "0",
            "--to",
            &nobody,
        ],
    );
    assert_eq!(run.codes(), vec!["unknown_recipient"], "{:#}", run.json);
    // Exim offers PIPELINING: the refusal is read in step, at RCPT TO.
    let smtp = &run.json["messages"][0]["smtp"];
    assert_eq!(smtp["pipelined"], true, "{:#}", run.json);
    assert_eq!(smtp["error"]["phase"], "rcpt_to", "{:#}", run.json);
    // Exim has no route off this machine; without AUTH an outside domain is relaying.
    let run = i.check(
        "probe",
        ca,
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SMTP_PORT"),
            "--smtp-only",
            "--sizes",
            "0",
            "--starttls",
            "never",
            "--to",
            "someone@example.org",
        ],
    );
    assert_eq!(run.codes(), vec!["relay_denied"], "{:#}", run.json);
    assert_eq!(run.code, 2);
}

#[test]
fn wrong_password_is_auth_failed_on_exim_imap4d_and_pop3d() {
    let i = Interop::get();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let run = i.check_with_password(
        "test06",
        wrong.to_str().unwrap(),
        i.var("MAILPROBE_INTEROP_CA_FILE"),
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SUBMISSION_PORT"),
            "--imap",
            &i.url("imaps", "MAILPROBE_INTEROP_IMAPS_PORT"),
            "--pop3",
            &i.url("pop3s", "MAILPROBE_INTEROP_POP3S_PORT"),
            "--sizes",
            "0",
        ],
    );
    let refused: Vec<&str> = run.json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "auth_failed")
        .map(|d| d["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(refused, vec!["smtp", "imap", "pop3"], "{:#}", run.json);
    assert_eq!(run.code, 2);
}

#[test]
fn plaintext_refused_by_mailutils_is_plaintext_disabled() {
    let i = Interop::get();
    let ca = i.var("MAILPROBE_INTEROP_CA_FILE");
    let smtp = i.url("smtp", "MAILPROBE_INTEROP_SMTP_PORT");
    // XTLSREQUIRED without LOGINDISABLED (NO LOGIN Command disabled), and pop3d's
    // `-ERR Incorrect state` to USER.
    let run = i.check(
        "test08",
        ca,
        &[
            "--smtp",
            &smtp,
            "--imap",
            &i.url("imap", "MAILPROBE_INTEROP_IMAP_TLS_REQUIRED_PORT"),
            "--pop3",
            &i.url("pop3", "MAILPROBE_INTEROP_POP3_TLS_REQUIRED_PORT"),
            "--sizes",
            "0",
            "--starttls",
            "never",
        ],
    );
    let plaintext: Vec<&str> = run.json["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "plaintext_disabled")
        .map(|d| d["protocol"].as_str().unwrap())
        .collect();
    assert_eq!(plaintext, vec!["imap", "pop3"], "{:#}", run.json);
    assert!(
        !run.codes().contains(&"auth_failed".to_string()),
        "{:#}",
        run.json
    );
    i.clear("test08");

    // LOGINDISABLED: the probe knows before it tries.
    let run = i.check(
        "test08",
        ca,
        &[
            "--smtp",
            &smtp,
            "--imap",
            &i.url("imap", "MAILPROBE_INTEROP_IMAP_PORT"),
            "--sizes",
            "0",
            "--starttls",
            "never",
        ],
    );
    let d = run.diagnosis("plaintext_disabled");
    assert_eq!(d["protocol"], "imap", "{d:#}");
    assert!(d["evidence"].to_string().contains("LOGINDISABLED"), "{d:#}");
    assert!(
        !run.codes().contains(&"retrieval_partial".to_string()),
        "{:#}",
        run.json
    );
    assert_eq!(run.code, 2);
    i.clear("test08");
}

/// `openssl req -x509` makes a CA:TRUE certificate; given with --ca-file it is
/// trusted as curl trusts it. Without it, the failure is said in words.
#[test]
fn self_signed_ca_true_certificate_is_trusted_with_ca_file() {
    let i = Interop::get();
    let pem = std::fs::read(i.var("MAILPROBE_INTEROP_SELF_SIGNED_CERT")).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = block.parse_x509().unwrap();
    let ca = cert.basic_constraints().unwrap().map(|b| b.value.ca);
    assert_eq!(
        ca,
        Some(true),
        "the self-signed test certificate must be CA:TRUE"
    );
    assert_eq!(cert.subject(), cert.issuer());

    i.clear("test07");
    let smtps = i.url("smtps", "MAILPROBE_INTEROP_SMTPS_PORT");
    let pop3s = i.url("pop3s", "MAILPROBE_INTEROP_POP3S_PORT");
    // The bundle holds the self-signed certificate (smtps) and the private CA (pop3s).
    let run = i.check(
        "test07",
        i.var("MAILPROBE_INTEROP_CA_BUNDLE"),
        &["--smtp", &smtps, "--pop3", &pop3s, "--sizes", "0,10KiB"],
    );
    assert_eq!(run.json["verdict"], "healthy", "{:#}", run.json);
    let tls = &run.json["messages"][0]["smtp"]["tls"];
    assert_eq!(tls["verified"], true, "{tls:#}");
    assert_eq!(tls["certificate"]["issuer"], tls["certificate"]["subject"]);
    assert_eq!(i.probe_messages("test07"), 0);

    // The private CA alone does not vouch for the self-signed certificate.
    let run = i.check(
        "test07",
        i.var("MAILPROBE_INTEROP_CA_FILE"),
        &["--smtp", &smtps, "--smtp-only", "--sizes", "0"],
    );
    let d = run.diagnosis("tls_invalid");
    assert!(
        d["summary"].as_str().unwrap().contains("self-signed"),
        "{d:#}"
    );
    assert_eq!(
        run.json["messages"][0]["smtp"]["tls"]["problem"],
        "self_signed"
    );
    assert!(!run.text().contains("OtherError"), "{:#}", run.json);
    assert!(d["hints"].to_string().contains("--ca-file"), "{d:#}");
    assert_eq!(run.code, 2);
}

/// `--pin-sha256` holds in addition to the chain: a wrong pin fails even with a
/// trusted certificate.
#[test]
fn pin_sha256_is_checked() {
    let i = Interop::get();
    let smtps = i.url("smtps", "MAILPROBE_INTEROP_SMTPS_PORT");
    let pem = std::fs::read(i.var("MAILPROBE_INTEROP_SELF_SIGNED_CERT")).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = block.parse_x509().unwrap();
    use base64::Engine as _;
    use sha2::Digest as _;
    let right = base64::engine::general_purpose::STANDARD
        .encode(sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw));
    let wrong = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
    let ca = i.var("MAILPROBE_INTEROP_SELF_SIGNED_CERT");
    let pin = format!("sha256//{right}");
    let run = i.check(
        "probe",
        ca,
        &[
            "--smtp",
            &smtps,
            "--smtp-only",
            "--sizes",
            "0",
            "--pin-sha256",
            &pin,
        ],
    );
    assert_eq!(run.json["verdict"], "healthy", "{:#}", run.json);
    let pin = format!("sha256//{wrong}");
    let run = i.check(
        "probe",
        ca,
        &[
            "--smtp",
            &smtps,
            "--smtp-only",
            "--sizes",
            "0",
            "--pin-sha256",
            &pin,
        ],
    );
    assert_eq!(
        run.json["messages"][0]["smtp"]["tls"]["problem"], "pin_mismatch",
        "{:#}",
        run.json
    );
    assert!(
        run.diagnosis("tls_invalid")["summary"]
            .as_str()
            .unwrap()
            .contains(&right),
        "{:#}",
        run.json
    );
    assert_eq!(run.code, 2);
    i.clear("probe");
}

/// What a check over `smtps://` through a proxy presenting `cert` (in front of
/// Exim's plain port) makes of it, trusting `ca_pem`.
fn smtps_through_proxy(cert: Served, ca_pem: &str) -> Run {
    let i = Interop::get();
    let upstream: SocketAddr = format!(
        "{}:{}",
        i.var("MAILPROBE_INTEROP_HOST"),
        i.var("MAILPROBE_INTEROP_SMTP_PORT")
    )
    .parse()
    .unwrap();
    let proxy = TlsProxy::start(cert.0, cert.1, upstream);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let url = format!("smtps://127.0.0.1:{}", proxy.port);
    let run = i.check(
        "probe",
        ca.to_str().unwrap(),
        &["--smtp", &url, "--smtp-only", "--sizes", "0"],
    );
    drop(proxy);
    run
}

const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A certificate chain and its key, as a server presents them.
type Served = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Every certificate failure has its own words, problem and hint; none shows a
/// raw rustls error. The exact-match rule also holds for a CA:TRUE certificate
/// rcgen makes, and a chain the server completes verifies.
#[test]
fn tls_failures_are_told_apart_in_words() {
    let root = common::tls::test_ca();
    let intermediate = common::tls::ca_named("mailprobe test intermediate", Some(&root));
    let with_chain = || {
        let (mut chain, key) = leaf(&intermediate, &NAMES, -1, 200);
        chain.push(intermediate.der.clone());
        (chain, key)
    };
    let other_root = common::tls::ca_named("some other CA", None);
    let (own, own_key, own_pem) = self_signed_ca_true(&NAMES);
    let cases: Vec<(&str, Served, &str, &str, &str)> = vec![
        (
            "expired",
            leaf(&root, &NAMES, -30, -2),
            &root.pem,
            "expired",
            "expired on",
        ),
        (
            "not yet valid",
            leaf(&root, &NAMES, 2, 30),
            &root.pem,
            "not_yet_valid",
            "not valid before",
        ),
        (
            "name mismatch",
            leaf(&root, &["mail.elsewhere.test"], -1, 200),
            &root.pem,
            "name_mismatch",
            "is for mail.elsewhere.test, not for 127.0.0.1",
        ),
        (
            "unknown issuer",
            with_chain(),
            &other_root.pem,
            "unknown_issuer",
            "issued by CN=mailprobe test intermediate, which is not a trusted CA",
        ),
        (
            "incomplete chain",
            leaf(&intermediate, &NAMES, -1, 200),
            &root.pem,
            "incomplete_chain",
            "the server sent no intermediate certificate",
        ),
        (
            "self-signed",
            (own.clone(), own_key.clone_key()),
            &root.pem,
            "self_signed",
            "self-signed",
        ),
    ];
    for (what, cert, ca, problem, words) in cases {
        let run = smtps_through_proxy(cert, ca);
        let tls = &run.json["messages"][0]["smtp"]["tls"];
        assert_eq!(tls["problem"], problem, "{what}: {:#}", run.json);
        let d = run.diagnosis("tls_invalid");
        assert!(
            d["summary"].as_str().unwrap().contains(words),
            "{what}: {d:#}"
        );
        assert!(
            !run.text().contains("OtherError") && !run.text().contains("InvalidCertificate"),
            "{what}: {:#}",
            run.json
        );
        assert_eq!(run.code, 2, "{what}");
    }
    // The same certificates verify when the trust is right.
    for (what, cert, ca) in [
        ("complete chain", with_chain(), root.pem.clone()),
        ("self-signed CA:TRUE in --ca-file", (own, own_key), own_pem),
    ] {
        let run = smtps_through_proxy(cert, &ca);
        assert_eq!(
            run.json["messages"][0]["smtp"]["tls"]["verified"], true,
            "{what}: {:#}",
            run.json
        );
        assert_eq!(
            run.json["messages"][0]["smtp"]["ok"], true,
            "{what}: {:#}",
            run.json
        );
    }
    Interop::get().clear("probe");
}

/// Needs the polite watcher's STATUS fallback: imap4d never reports new mail to
/// a selected Maildir mailbox (docs/INTEROP.md).
#[test]
fn imap_and_pop3_ladder_on_exim_and_mailutils_is_healthy() {
    let i = Interop::get();
    i.clear("test15");
    let run = i.check(
        "test15",
        i.var("MAILPROBE_INTEROP_CA_FILE"),
        &[
            "--smtp",
            &i.url("smtp", "MAILPROBE_INTEROP_SUBMISSION_PORT"),
            "--imap",
            &i.url("imaps", "MAILPROBE_INTEROP_IMAPS_PORT"),
            "--pop3",
            &i.url("pop3s", "MAILPROBE_INTEROP_POP3S_PORT"),
            "--sizes",
            LADDER,
        ],
    );
    assert_eq!(run.json["verdict"], "healthy", "{:#}", run.json);
    assert_eq!(run.code, 0);
    for m in run.json["messages"].as_array().unwrap() {
        assert_eq!(m["imap"]["verified"], true, "{m:#}");
        assert_eq!(m["pop3"]["verified"], true, "{m:#}");
    }
    assert!(
        run.json["cleanup"]["leftovers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        i.probe_messages("test15"),
        0,
        "probe mail left in the Maildir"
    );
}
