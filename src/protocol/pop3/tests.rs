//! Scripted-server tests over `tokio::io::duplex`. Every loop is bounded.

use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::io::{DuplexStream, duplex};
use tokio::task::JoinHandle;

use super::*;

/// What the scripted server does after a command.
enum Act {
    /// Write these chunks, flushing after each (to split data awkwardly).
    Reply(Vec<Vec<u8>>),
    /// Hang up.
    Close,
    /// Write this, then hang up.
    ReplyAndClose(Vec<u8>),
    /// Keep the connection open and send nothing (for 10 s at most).
    Stall,
}

fn reply(bytes: &[u8]) -> Act {
    Act::Reply(vec![bytes.to_vec()])
}

/// Run a scripted server: send `greeting`, then answer each command line with
/// `handler`. Returns the commands it saw.
fn server(
    stream: DuplexStream,
    greeting: &'static [u8],
    mut handler: impl FnMut(&str) -> Act + Send + 'static,
) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut seen = Vec::new();
        if write_all_flush(reader.get_mut(), greeting).await.is_err() {
            return seen;
        }
        let mut line = Vec::new();
        for _ in 0..100 {
            if read_line_bounded(&mut reader, &mut line, 64 * 1024)
                .await
                .is_err()
            {
                break;
            }
            let cmd = String::from_utf8_lossy(trim_eol(&line)).into_owned();
            seen.push(cmd.clone());
            match handler(&cmd) {
                Act::Reply(chunks) => {
                    for chunk in chunks {
                        if write_all_flush(reader.get_mut(), &chunk).await.is_err() {
                            return seen;
                        }
                    }
                }
                Act::Close => return seen,
                Act::ReplyAndClose(bytes) => {
                    let _ = write_all_flush(reader.get_mut(), &bytes).await;
                    return seen;
                }
                Act::Stall => {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    return seen;
                }
            }
        }
        seen
    })
}

async fn client_for(
    greeting: &'static [u8],
    handler: impl FnMut(&str) -> Act + Send + 'static,
) -> (Pop3Client<DuplexStream>, JoinHandle<Vec<String>>) {
    let (client_end, server_end) = duplex(16 * 1024);
    let srv = server(server_end, greeting, handler);
    let (client, _) = Pop3Client::connect(client_end).await.expect("greeting");
    (client, srv)
}

fn caps() -> Vec<String> {
    ["TOP", "USER", "UIDL", "SASL PLAIN"]
        .map(String::from)
        .into()
}

#[tokio::test]
async fn happy_path() {
    let (client_end, server_end) = duplex(16 * 1024);
    let srv = server(server_end, b"+OK POP3 ready <1.2@x>\r\n", |cmd| match cmd {
        "CAPA" => {
            reply(b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN\r\n.\r\n")
        }
        "USER alice" => reply(b"+OK\r\n"),
        "PASS s3cret" => reply(b"+OK logged in\r\n"),
        "STAT" => reply(b"+OK 2 320\r\n"),
        "UIDL" => reply(b"+OK\r\n1 uid-one\r\n2 uid-two\r\n.\r\n"),
        "LIST" => reply(b"+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"),
        "TOP 1 0" => reply(b"+OK\r\nSubject: hi\r\nX-Dots: ..\r\n\r\n.\r\n"),
        "RETR 1" => {
            reply(b"+OK 120 octets\r\nSubject: hi\r\n\r\n..leading dot\r\n..\r\nbody\r\n.\r\n")
        }
        "DELE 1" => reply(b"+OK marked\r\n"),
        "QUIT" => reply(b"+OK bye\r\n"),
        _ => reply(b"-ERR unknown\r\n"),
    });
    let (mut client, greeting) = Pop3Client::connect(client_end).await.unwrap();
    assert_eq!(greeting, "POP3 ready <1.2@x>");
    let caps = client.capa().await.unwrap();
    assert_eq!(caps, ["TOP", "USER", "UIDL", "SASL PLAIN"]);
    client.login("alice", "s3cret", &caps).await.unwrap();
    assert_eq!(client.stat().await.unwrap(), (2, 320));
    assert_eq!(
        client.uidl().await.unwrap(),
        [(1, "uid-one".to_string()), (2, "uid-two".to_string())]
    );
    assert_eq!(client.list().await.unwrap(), [(1, 120), (2, 200)]);
    assert_eq!(
        client.top_headers(1, 1000).await.unwrap(),
        b"Subject: hi\r\nX-Dots: ..\r\n\r\n"
    );
    let mut body = Vec::new();
    let n = client
        .retr(1, 1000, &mut |l| body.extend_from_slice(l))
        .await
        .unwrap();
    assert_eq!(body, b"Subject: hi\r\n\r\n.leading dot\r\n.\r\nbody\r\n");
    assert_eq!(n, body.len() as u64);
    client.dele(1).await.unwrap();
    client.quit().await.unwrap();
    let seen = srv.await.unwrap();
    assert_eq!(
        seen,
        [
            "CAPA",
            "USER alice",
            "PASS s3cret",
            "STAT",
            "UIDL",
            "LIST",
            "TOP 1 0",
            "RETR 1",
            "DELE 1",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn auth_plain_when_user_is_not_offered() {
    let (mut client, srv) = client_for(b"+OK\r\n", |cmd| match cmd {
        "AUTH PLAIN" => reply(b"+ \r\n"),
        blob => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(blob)
                .unwrap_or_default();
            if raw == b"\0alice\0s3cret" {
                reply(b"+OK welcome\r\n")
            } else {
                reply(b"-ERR [AUTH] bad\r\n")
            }
        }
    })
    .await;
    let caps: Vec<String> = ["SASL PLAIN LOGIN", "TOP"].map(String::from).into();
    client.login("alice", "s3cret", &caps).await.unwrap();
    drop(client);
    assert_eq!(srv.await.unwrap(), ["AUTH PLAIN", "AGFsaWNlAHMzY3JldA=="]);
}

#[tokio::test]
async fn capa_unsupported_is_empty_and_capa_is_bounded() {
    let (mut client, _srv) = client_for(b"+OK\r\n", |_| reply(b"-ERR what?\r\n")).await;
    assert!(client.capa().await.unwrap().is_empty());
    // The session is still usable after a plain -ERR.
    assert!(client.capa().await.unwrap().is_empty());

    let (mut client, _srv) = client_for(b"+OK\r\n", |_| {
        let mut r = b"+OK\r\n".to_vec();
        for i in 0..=MAX_CAPA {
            r.extend_from_slice(format!("X-CAP-{i}\r\n").as_bytes());
        }
        r.extend_from_slice(b".\r\n");
        reply(&r)
    })
    .await;
    let err = client.capa().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[tokio::test]
async fn large_streamed_retr_with_awkward_chunks() {
    // ~5 MB of lines: plain, dot-led, lone dots, empty, and some long lines.
    let mut original = Vec::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut longest = 0;
    let mut i = 0u64;
    while original.len() < 5_000_000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (seed >> 33) as usize;
        let line: Vec<u8> = match i % 9 {
            0 => b".".to_vec(),
            1 => b"..".to_vec(),
            2 => format!(".starts with a dot {r}").into_bytes(),
            3 => Vec::new(),
            4 if i % 900 == 4 => vec![b'L'; 100_000 + r % 50_000],
            _ => (0..r % 200).map(|k| b'a' + ((k + r) % 26) as u8).collect(),
        };
        longest = longest.max(line.len() + 3);
        original.extend_from_slice(&line);
        original.extend_from_slice(b"\r\n");
        i += 1;
    }
    let expected = Sha256::digest(&original);

    let mut wire = b"+OK message follows\r\n".to_vec();
    for line in original.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    // Split into awkward chunks, then the terminator byte by byte.
    let sizes = [1usize, 2, 3, 5, 7, 4093, 65_537, 13, 131_071, 8191];
    let mut chunks = Vec::new();
    let mut rest = &wire[..];
    for k in 0.. {
        if rest.is_empty() {
            break;
        }
        let n = sizes[k % sizes.len()].min(rest.len());
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    for b in b".\r\n" {
        chunks.push(vec![*b]);
    }
    let mut chunks = Some(chunks);
    let (mut client, srv) = client_for(b"+OK\r\n", move |cmd| match cmd {
        "RETR 7" => Act::Reply(chunks.take().unwrap_or_default()),
        "QUIT" => reply(b"+OK\r\n"),
        _ => reply(b"-ERR\r\n"),
    })
    .await;

    let mut hasher = Sha256::new();
    let mut lines = 0u64;
    let n = client
        .retr(7, 70_000_000, &mut |l| {
            hasher.update(l);
            lines += 1;
        })
        .await
        .unwrap();
    assert_eq!(n, original.len() as u64);
    assert_eq!(lines, i);
    assert_eq!(hasher.finalize(), expected);
    // O(line): the only growing buffer is the line buffer, sized by the longest line.
    assert!(
        client.line.capacity() <= 2 * longest,
        "{}",
        client.line.capacity()
    );
    assert!(client.reader.buffer().len() <= READ_BUFFER);
    client.quit().await.unwrap();
    assert_eq!(srv.await.unwrap(), ["RETR 7", "QUIT"]);
}

#[tokio::test]
async fn refused_password_is_auth_and_never_shown() {
    let password = "hunter2-Sup3r\"secret";
    let (mut client, _srv) = client_for(b"+OK\r\n", |cmd| {
        if let Some(pw) = cmd.strip_prefix("PASS ") {
            // A hostile server echoing the password back.
            reply(format!("-ERR [AUTH] invalid login for {pw}\r\n").as_bytes())
        } else {
            reply(b"+OK\r\n")
        }
    })
    .await;
    let err = client.login("alice", password, &caps()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(err.reply.as_ref().unwrap().text.contains("invalid login"));
    for shown in [err.to_string(), format!("{err:?}"), format!("{client:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    // [IN-USE] is not a credentials problem.
    let (mut client, _srv) = client_for(b"+OK\r\n", |cmd| {
        if cmd.starts_with("PASS ") {
            reply(b"-ERR [IN-USE] mailbox locked\r\n")
        } else {
            reply(b"+OK\r\n")
        }
    })
    .await;
    let err = client.login("alice", "pw", &caps()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);

    // Garbage echoing the password is redacted too.
    let (mut client, _srv) = client_for(b"+OK\r\n", |cmd| {
        if let Some(pw) = cmd.strip_prefix("PASS ") {
            reply(format!("what is {pw}\r\n").as_bytes())
        } else {
            reply(b"+OK\r\n")
        }
    })
    .await;
    let err = client.login("alice", "hunter2", &caps()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");

    // CR/LF in credentials is refused before anything is sent.
    let err = client
        .login("alice", "a\r\nDELE 1", &caps())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!format!("{err} {err:?}").contains("DELE"));
}

#[tokio::test]
async fn bad_greetings() {
    let (c, s) = duplex(1024);
    let srv = server(s, b"HTTP/1.1 400 Bad Request\r\n", |_| Act::Close);
    let err = Pop3Client::connect(c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.message.contains("HTTP/1.1 400"), "{}", err.message);
    srv.abort();

    let (c, s) = duplex(1024);
    let _srv = server(s, b"-ERR go away\r\n", |_| Act::Close);
    let err = Pop3Client::connect(c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.reply.unwrap().text, "go away");

    let (c, s) = duplex(1024);
    drop(s);
    let err = Pop3Client::connect(c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn close_mid_retr_is_closed() {
    let (mut client, _srv) = client_for(b"+OK\r\n", |cmd| match cmd {
        "RETR 1" => Act::ReplyAndClose(b"+OK\r\nline one\r\nline two\r\nhalf a li".to_vec()),
        _ => Act::Close,
    })
    .await;
    let mut got = 0;
    let err = client
        .retr(1, 1 << 20, &mut |l| got += l.len())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(err.message.contains("mid-transfer"), "{}", err.message);
    assert_eq!(got, 20);
    // The session is not reused after that.
    assert_eq!(client.stat().await.unwrap_err().kind(), ErrorKind::Protocol);
}

#[tokio::test]
async fn retr_past_max_bytes_stops() {
    let (mut client, _srv) = client_for(b"+OK\r\n", |_| {
        let mut r = b"+OK\r\n".to_vec();
        for _ in 0..1000 {
            r.extend_from_slice(b"0123456789\r\n");
        }
        r.extend_from_slice(b".\r\n");
        reply(&r)
    })
    .await;
    let mut got = 0;
    let err = client
        .retr(1, 100, &mut |l| got += l.len())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(got <= 100);

    let (mut client, _srv) = client_for(b"+OK\r\n", |_| {
        reply(b"+OK\r\nSubject: a very long header line\r\n\r\n.\r\n")
    })
    .await;
    let err = client.top_headers(1, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.message.contains("exceed 10 bytes"), "{}", err.message);
}

#[tokio::test]
async fn endless_line_is_refused() {
    let (mut client, srv) = client_for(b"+OK\r\n", |_| {
        let mut chunks = vec![b"+OK\r\n".to_vec()];
        chunks.extend(std::iter::repeat_n(vec![b'a'; 64 * 1024], 64)); // 4 MiB, no LF
        Act::Reply(chunks)
    })
    .await;
    let mut got = 0;
    let err = client
        .retr(1, u64::MAX, &mut |l| got += l.len())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert_eq!(got, 0);
    assert!(client.line.capacity() <= 2 * BODY_LINE_MAX);
    drop(client);
    // The server's writes fail once the client is gone.
    tokio::time::timeout(Duration::from_secs(5), srv)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn stalled_retr_times_out() {
    let (mut client, srv) = client_for(b"+OK\r\n", |cmd| match cmd {
        "RETR 1" => Act::Reply(vec![b"+OK\r\nfirst line\r\nsecond ".to_vec()]),
        _ => Act::Stall,
    })
    .await;
    // The server stalls after sending part of the message: its handler is
    // waiting for the next command, so nothing more arrives.
    client.set_idle_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let mut got = 0;
    let err = client
        .retr(1, 1 << 20, &mut |l| got += l.len())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.message.contains("mid-transfer"), "{}", err.message);
    assert_eq!(got, 12);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    srv.abort();

    // A stalled status line too.
    let (mut client, srv) = client_for(b"+OK\r\n", |_| Act::Stall).await;
    client.set_idle_timeout(Duration::from_millis(200));
    assert_eq!(client.stat().await.unwrap_err().kind(), ErrorKind::Timeout);
    srv.abort();
}

#[tokio::test]
async fn stls_hands_back_the_stream_and_refuses_pipelined_bytes() {
    let (client, srv) = client_for(b"+OK\r\n", |cmd| match cmd {
        "STLS" => reply(b"+OK begin TLS\r\n"),
        "CAPA" => reply(b"+OK\r\nUSER\r\n.\r\n"),
        _ => Act::Close,
    })
    .await;
    let stream = client.stls().await.unwrap();
    // (A TLS handshake would happen here.)
    let mut client = Pop3Client::after_stls(stream);
    assert_eq!(client.capa().await.unwrap(), ["USER"]);
    drop(client);
    assert_eq!(srv.await.unwrap(), ["STLS", "CAPA"]);

    let (client, _srv) =
        client_for(b"+OK\r\n", |_| reply(b"+OK begin TLS\r\n+OK injected\r\n")).await;
    let err = client.stls().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.message.contains("injection"), "{}", err.message);

    let (client, _srv) = client_for(b"+OK\r\n", |_| reply(b"-ERR no TLS here\r\n")).await;
    assert_eq!(client.stls().await.unwrap_err().kind(), ErrorKind::Rejected);
}

#[tokio::test]
async fn quit_refusal_and_negative_answers() {
    let (mut client, _srv) = client_for(b"+OK\r\n", |cmd| match cmd {
        "DELE 9" => reply(b"-ERR no such message\r\n"),
        "RETR 9" => reply(b"-ERR no such message\r\n"),
        "STAT" => reply(b"+OK 1 10\r\n"),
        _ => reply(b"-ERR [SYS/TEMP] cannot commit\r\n"),
    })
    .await;
    let err = client.dele(9).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    let err = client.retr(9, 100, &mut |_| {}).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(client.stat().await.unwrap(), (1, 10));
    let err = client.quit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert!(err.message.contains("not committed"), "{}", err.message);

    let (client, _srv) = client_for(b"+OK\r\n", |_| Act::Close).await;
    let err = client.quit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

/// The client's futures must be spawnable on a multi-threaded runtime.
#[allow(dead_code)]
fn futures_are_send(mut client: Pop3Client<crate::io::net::BoxStream>, caps: Vec<String>) {
    fn send<T: Send>(_: T) {}
    let mut hasher = Sha256::new();
    send(async move {
        let _ = client.login("u", "p", &caps).await;
        let _ = client.top_headers(1, 10).await;
        let _ = client.retr(1, 10, &mut |l| hasher.update(l)).await;
        let _ = client.quit().await;
    });
}

fn token_login(mechanism: crate::core::auth::Mechanism, token: &str) -> Login {
    let mut login = Login::with_password(
        "alice@x.test",
        crate::core::secret::Secret::new(token.into()),
    );
    login.kind = crate::core::secret::SecretKind::Token;
    login.mechanism = mechanism;
    login
}

#[tokio::test]
async fn a_refused_bearer_token_is_acknowledged_and_explained() {
    use crate::core::auth::{AuthReason, Mechanism};
    // A long token does not fit a 255-octet AUTH line: it follows the empty challenge.
    let token = "t".repeat(300);
    let (mut client, srv) = client_for(b"+OK\r\n", |cmd| match cmd {
        "AUTH XOAUTH2" => reply(b"+ \r\n"),
        "" => reply(b"-ERR [AUTH] Authentication failed\r\n"),
        _ => reply(b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIn0=\r\n"),
    })
    .await;
    let login = token_login(Mechanism::Xoauth2, &token);
    let mut exchange = Exchange::new(Mechanism::Xoauth2, &login, "h", 110);
    let err = client
        .authenticate_sasl(&mut exchange, &login)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert_eq!(err.auth_reason, Some(AuthReason::InvalidToken));
    assert!(err.message.contains("status 401"), "{}", err.message);
    drop(client);
    let seen = srv.await.unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], "AUTH XOAUTH2");
    assert_eq!(
        seen[2], "",
        "XOAUTH2 ends a refused exchange with an empty response"
    );

    // A short one goes on the command line; OAUTHBEARER's success.
    let (mut client, srv) = client_for(b"+OK\r\n", |_| reply(b"+OK in\r\n")).await;
    let login = token_login(Mechanism::Oauthbearer, "short");
    let mut exchange = Exchange::new(Mechanism::Oauthbearer, &login, "h", 110);
    client
        .authenticate_sasl(&mut exchange, &login)
        .await
        .unwrap();
    client.stat().await.ok();
    drop(client);
    let seen = srv.await.unwrap();
    assert!(seen[0].starts_with("AUTH OAUTHBEARER "), "{seen:?}");
}

#[test]
fn body_lines_continue_across_chunks_and_stop_at_the_end() {
    let mut got = Vec::new();
    let mut partial = Vec::new();
    let mut deliver = |l: &[u8]| {
        got.push(l.to_vec());
        Ok(())
    };
    // A line split over two chunks, a dot-stuffed line split right after its dot.
    assert_eq!(
        body_lines(b"one\r\ntw", &mut partial, &mut deliver).unwrap(),
        Lines::More(7)
    );
    assert_eq!(
        body_lines(b"o\r\n.", &mut partial, &mut deliver).unwrap(),
        Lines::More(4)
    );
    // The end comes mid-chunk: what follows it is the next answer's, not used.
    assert_eq!(
        body_lines(b".three\r\n.\r\n+OK next\r\n", &mut partial, &mut deliver).unwrap(),
        Lines::Ended(11)
    );
    assert_eq!(got, [&b"one\r\n"[..], b"two\r\n", b".three\r\n"]);
    assert!(partial.is_empty());
    // The terminator itself split over chunks.
    let mut got = 0;
    let mut count = |_: &[u8]| {
        got += 1;
        Ok(())
    };
    assert_eq!(
        body_lines(b"x\r\n.", &mut partial, &mut count).unwrap(),
        Lines::More(4)
    );
    assert_eq!(
        body_lines(b"\r\n", &mut partial, &mut count).unwrap(),
        Lines::Ended(2)
    );
    assert_eq!(got, 1);
}

#[test]
fn body_lines_are_bounded_and_refusals_pass_through() {
    let mut partial = Vec::new();
    let mut ignore = |_: &[u8]| Ok(());
    let long = vec![b'a'; BODY_LINE_MAX / 2 + 1];
    assert!(body_lines(&long, &mut partial, &mut ignore).is_ok());
    let err = body_lines(&long, &mut partial, &mut ignore).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.message.contains("longer than"), "{}", err.message);
    let mut refuse = |_: &[u8]| Err(ProbeError::protocol_violation("enough"));
    let err = body_lines(b"x\r\n", &mut Vec::new(), &mut refuse).unwrap_err();
    assert_eq!(err.message, "enough");
}

#[tokio::test]
async fn retr_reads_a_body_split_anywhere() {
    // The same message cut into 1..=7-byte pieces, each flushed on its own.
    let body: Vec<u8> = (0..200)
        .flat_map(|i| format!("{}line {i}\r\n", if i % 7 == 0 { ".." } else { "" }).into_bytes())
        .collect();
    for piece in 1..=7 {
        let mut answer = b"+OK\r\n".to_vec();
        answer.extend_from_slice(&body);
        answer.extend_from_slice(b".\r\n");
        let (mut client, _srv) = client_for(b"+OK\r\n", move |_| {
            Act::Reply(answer.chunks(piece).map(<[u8]>::to_vec).collect())
        })
        .await;
        let mut got = Vec::new();
        let n = client
            .retr(1, 1 << 20, &mut |l| got.extend_from_slice(l))
            .await
            .unwrap();
        let unstuffed: Vec<u8> = String::from_utf8(body.clone())
            .unwrap()
            .replace("..line", ".line")
            .into_bytes();
        assert_eq!(got, unstuffed, "pieces of {piece}");
        assert_eq!(n, unstuffed.len() as u64);
    }
}
