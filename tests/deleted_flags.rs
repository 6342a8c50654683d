//! `deleted` in a retrieval result says what that protocol did: in a combined
//! IMAP + POP3 check of one mailbox IMAP deletes the probe's messages, POP3 then
//! finds none and sends no DELE, so `pop3.deleted` is false (issue 13, item 6).
//! Against the real Postfix + Dovecot; mailbox test28.

mod common;

use common::{TestServer, run_binary};
use serde_json::Value;

#[test]
fn pop3_deleted_is_false_when_imap_deleted_the_message() {
    let _turn = common::shared_server();
    let server = TestServer::get();
    let local = "test28";
    server.clear_maildir(local);
    let mut args = server.cli(local);
    args.extend(
        [
            "--smtp",
            &server.submission_url(),
            "--imap",
            &server.imaps_url(),
            "--pop3",
            &server.pop3s_url(),
            "--sizes",
            "0,10KiB",
            "--format",
            "json",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let out = run_binary(&args, &[]);
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}\n{}", out.stdout, out.stderr));
    assert_eq!(json["verdict"], "healthy", "{json:#}");
    for m in json["messages"].as_array().unwrap() {
        assert_eq!(m["imap"]["deleted"], true, "{m:#}");
        assert_eq!(m["pop3"]["verified"], true, "{m:#}");
        assert_eq!(m["pop3"]["deleted"], false, "POP3 sent no DELE: {m:#}");
    }
    assert_eq!(json["cleanup"]["deleted"], 2, "{json:#}");
    assert_eq!(server.count_probe_messages(local), 0);
}
