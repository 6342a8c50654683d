//! `mailprobe cleanup` against the real server: it deletes leftover probe messages
//! older than the given age and nothing else.

mod common;

use common::{TestServer, contains, run_binary};

fn message(message_id: &str, extra_header: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: someone@example.test\r\nTo: test17@mailprobe.test\r\nSubject: {subject}\r\n\
         Message-ID: <{message_id}>\r\n{extra_header}Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n\
         body of {message_id}\r\n"
    )
    .into_bytes()
}

#[test]
fn cleanup_deletes_only_old_probe_messages() {
    let _turn = common::shared_server();
    let server = TestServer::get();
    let local = "test17";
    server.clear_maildir(local);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let old_probe = format!("mailprobe-{}-00000000000000aa", now_ms - 3 * 3600 * 1000);
    let fresh_probe = format!("mailprobe-{}-00000000000000bb", now_ms - 60 * 1000);
    let foreign = [
        message("foreign-1@example.test", "", "quarterly numbers"),
        // Looks like a probe by subject, but carries no probe header.
        message(
            "foreign-2@example.test",
            "",
            "mailprobe test 10KiB mailprobe-1-abc",
        ),
        // A probe header whose value is not a well-formed probe id.
        message(
            "foreign-3@example.test",
            "X-Mailprobe-Id: hello\r\n",
            "not ours",
        ),
    ];
    for m in &foreign {
        server.drop_foreign(local, m);
    }
    let old = message(
        "old@example.test",
        &format!("X-Mailprobe-Id: {old_probe}\r\n"),
        "old probe",
    );
    let fresh = message(
        "fresh@example.test",
        &format!("X-Mailprobe-Id: {fresh_probe}\r\n"),
        "fresh probe",
    );
    server.drop_foreign(local, &old);
    server.drop_foreign(local, &fresh);

    let mut args: Vec<String> = server.cleanup_cli(local);
    args.extend([
        "--imap".into(),
        server.imaps_url(),
        "--pop3".into(),
        server.pop3s_url(),
    ]);
    args.extend(["--older-than".into(), "1h".into()]);
    let out = run_binary(&args, &[]);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.contains(&old_probe), "{}", out.stdout);
    assert!(!out.stdout.contains(&fresh_probe), "{}", out.stdout);

    let files = server.maildir_files(local);
    assert!(
        !files
            .iter()
            .any(|f| contains(&f.bytes, old_probe.as_bytes())),
        "the old probe message is gone"
    );
    assert!(
        files
            .iter()
            .any(|f| contains(&f.bytes, fresh_probe.as_bytes())),
        "the fresh probe message stays"
    );
    for m in &foreign {
        assert!(
            files.iter().any(|f| f.bytes == *m),
            "a foreign message changed or vanished"
        );
    }
    assert_eq!(files.len(), 4);
}

/// `cleanup` honours the output flags like every command (`--format json` is the
/// JSON report, `--transcript` is written) and refuses the flags of `check`.
#[test]
fn cleanup_reports_through_the_common_outputs_and_takes_only_its_flags() {
    let _turn = common::shared_server();
    let server = TestServer::get();
    let local = "test26";
    server.clear_maildir(local);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let old_probe = format!("mailprobe-{}-00000000000000cc", now_ms - 3 * 3600 * 1000);
    server.drop_foreign(
        local,
        &message(
            "old26@example.test",
            &format!("X-Mailprobe-Id: {old_probe}\r\n"),
            "old probe",
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("cleanup.txt");
    let mut args: Vec<String> = server.cleanup_cli(local);
    args.extend([
        "--imap".into(),
        server.imaps_url(),
        "--older-than".into(),
        "1h".into(),
        "--format".into(),
        "json".into(),
        "--transcript".into(),
        transcript.to_string_lossy().into_owned(),
    ]);
    let out = run_binary(&args, &[]);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("cleanup --format json is not JSON ({e}):\n{}", out.stdout));
    assert_eq!(json["verdict"], "healthy", "{json}");
    assert_eq!(json["cleanup"]["deleted"], 1, "{json}");
    assert!(
        json["cleanup"]["errors"].as_array().unwrap().is_empty(),
        "{json}"
    );
    let text = std::fs::read_to_string(&transcript).expect("--transcript is written");
    assert!(text.contains("IMAP session 1"), "{text}");
    assert!(
        !text.contains(&server.password()),
        "the transcript shows the password"
    );
    assert_eq!(server.count_probe_messages(local), 0);

    for extra in [["--sizes", "0"], ["--smtp", "smtp://127.0.0.1:25"]] {
        let mut refused = server.cleanup_cli(local);
        refused.extend(["--imap".into(), server.imaps_url()]);
        refused.extend(extra.iter().map(|s| s.to_string()));
        let out = run_binary(&refused, &[]);
        assert_ne!(out.code, 0, "cleanup accepted {extra:?}:\n{}", out.stdout);
        assert!(out.stderr.contains(extra[0]), "{extra:?}: {}", out.stderr);
    }
}
