//! OAuth 2.0 logins against the real Postfix + Dovecot (a private instance
//! whose Dovecot validates HS256 JWTs locally,
//! `scripts/testserver.sh oauth on`, see tests/common/oauth.rs): a valid token is healthy over SMTP,
//! IMAP and POP3 with each mechanism; an expired token, a token for another
//! user and one with a wrong signature are `auth_failed` with the right cause
//! on every protocol; a failing or hanging --token-command is exit 3 within
//! its timeout. Mailboxes: test32 (and test24 for "another user").

mod common;

use std::time::{Duration, Instant};

use common::oauth::{OauthServer, token};
use serde_json::Value;

fn check_args(server: &OauthServer, local: &str, auth: &str) -> Vec<String> {
    [
        "check",
        "--smtp",
        &server.url("smtp"),
        "--starttls",
        "require",
        "--imap",
        &server.url("imaps"),
        "--pop3",
        &server.url("pop3s"),
        "--user",
        &server.user(local),
        "--ca-file",
        &server.ca_file.to_string_lossy(),
        "--auth",
        auth,
        "--token-env",
        "PROBE_TOKEN",
        "--sizes",
        "0,20KiB",
        "--command-timeout",
        "20s",
        "--delivery-timeout",
        "30s",
        "--format",
        "json",
    ]
    .map(String::from)
    .to_vec()
}

fn run(args: &[String], token: &str) -> (i32, Value, String) {
    let out = common::run_binary(args, &[("PROBE_TOKEN", token)]);
    let report: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {}\nstdout:\n{}\nstderr:\n{}",
            out.code, out.stdout, out.stderr
        )
    });
    (out.code, report, out.stderr)
}

/// The `auth_failed` cause per protocol.
fn auth_causes(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["diagnoses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "auth_failed")
        .map(|d| {
            (
                d["protocol"].as_str().unwrap_or_default().to_string(),
                d["cause"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn every_protocol(cause: &str) -> Vec<(String, String)> {
    ["imap", "pop3", "smtp"]
        .iter()
        .map(|p| (p.to_string(), cause.to_string()))
        .collect()
}

#[test]
fn tokens_on_smtp_imap_and_pop3() {
    let server = OauthServer::start();
    let user = server.user("test32");

    // A valid token, with each mechanism, on all three protocols.
    for auth in ["xoauth2", "oauthbearer", "auto"] {
        let (code, report, stderr) = run(
            &check_args(&server, "test32", auth),
            &token(&user, 600, true),
        );
        assert_eq!(
            code, 0,
            "{auth}: healthy with a valid token\n{report:#}\n{stderr}"
        );
        assert_eq!(report["verdict"], "healthy");
        for m in report["messages"].as_array().unwrap() {
            assert_eq!(m["imap"]["verified"], true, "{auth}: {m:#}");
            assert_eq!(m["pop3"]["verified"], true, "{auth}: {m:#}");
        }
    }

    // Refused tokens: the exchange is finished and each protocol says why.
    let other = token(&server.user("test24"), 600, true);
    let forged = token(&user, 600, false);
    for (what, bad, cause) in [
        ("another user's token", other.as_str(), "unknown_user"),
        ("a wrong signature", forged.as_str(), "invalid_token"),
    ] {
        for auth in ["xoauth2", "oauthbearer"] {
            let (code, report, stderr) = run(&check_args(&server, "test32", auth), bad);
            assert_eq!(code, 2, "{what} ({auth}) fails\n{report:#}\n{stderr}");
            assert_eq!(
                auth_causes(&report),
                every_protocol(cause),
                "{what} ({auth})\n{report:#}"
            );
            let smtp = &report["messages"][0]["smtp"]["error"];
            assert_eq!(smtp["kind"], "auth", "{smtp:#}");
            assert_eq!(smtp["auth_reason"], cause, "{smtp:#}");
        }
    }

    // An expired token is refused before connecting, on every protocol.
    let started = Instant::now();
    let (code, report, _) = run(
        &check_args(&server, "test32", "auto"),
        &token(&user, -120, true),
    );
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(
        auth_causes(&report),
        every_protocol("expired_token"),
        "{report:#}"
    );
    let msg = report["messages"][0]["imap"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("expired at") && msg.contains("not connecting"),
        "{msg}"
    );
    assert!(
        report["smtp_server"].is_null(),
        "nothing was connected: {report:#}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // A mechanism the server does not offer.
    let mut args = check_args(&server, "test32", "xoauth2");
    args[2] = server.url("smtp").replace(":5787", ":5725");
    let (_, report, _) = run(&args, &token(&user, 600, true));
    let smtp = &report["messages"][0]["smtp"]["error"];
    assert_eq!(smtp["auth_reason"], "mechanism_not_offered", "{report:#}");
}

#[test]
fn a_failing_or_hanging_token_command_is_exit_3_within_its_timeout() {
    // The command runs before anything is contacted: no server is needed.
    let base = [
        "check",
        "--smtp",
        "smtp://127.0.0.1:9",
        "--imap",
        "imap://127.0.0.1:9",
        "--user",
        "test32@mailprobe.test",
        "--token-timeout",
        "1s",
    ];
    let mut failing: Vec<&str> = base.to_vec();
    failing.extend([
        "--token-command",
        "sh -c 'echo refresh token revoked >&2; exit 5'",
    ]);
    let out = common::run_binary(&failing, &[]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("refresh token revoked"),
        "stderr is shown: {}",
        out.stderr
    );
    assert!(out.stderr.contains("exit status: 5"), "{}", out.stderr);

    let started = Instant::now();
    let mut hanging: Vec<&str> = base.to_vec();
    hanging.extend(["--token-command", "sleep 60"]);
    let out = common::run_binary(&hanging, &[]);
    let took = started.elapsed();
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("did not finish within 1"),
        "{}",
        out.stderr
    );
    assert!(
        took < Duration::from_secs(10),
        "killed after its timeout, took {took:?}"
    );
}
