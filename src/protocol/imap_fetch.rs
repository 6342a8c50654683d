//! A message FETCH spoken on the IMAP session's own stream, its literal handed on
//! line by line as it is read: a message of any size passes with a 64 KiB read
//! buffer and at most one pending line, where async-imap would hold it whole.
//!
//! Nothing is read past the tagged reply (lines are read a byte at a time, the
//! literal in exact chunks), so the session stays in step for async-imap.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};

use crate::core::error::{ProbeError, ProbeResult};
use crate::core::reply::truncate;
use crate::io::budget::announced_literal;
use crate::io::net::{read_line_bounded, write_all_flush};
use crate::protocol::imap::{MAX_STATUS_LINE, tagged_status};

/// Lines (untagged responses and the pieces between literals) one FETCH may read.
const MAX_LINES: usize = 1000;
/// Bytes of a literal read at a time.
const CHUNK: usize = 64 * 1024;
/// A message line longer than this is handed on in pieces (probe messages have
/// 76-character lines; the verifier then reports what changed).
pub(crate) const BODY_LINE_MAX: usize = 1 << 20;

/// Splits a byte stream into lines (each with its LF), holding at most one
/// incomplete line of up to [`BODY_LINE_MAX`] bytes.
#[derive(Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn feed(&mut self, mut data: &[u8], line: &mut dyn FnMut(&[u8])) {
        while !data.is_empty() {
            let room = BODY_LINE_MAX - self.pending.len();
            let (take, complete) = match memchr::memchr(b'\n', data) {
                Some(i) if i < room => (i + 1, true),
                _ => (data.len().min(room), false),
            };
            let (head, rest) = data.split_at(take);
            data = rest;
            if self.pending.is_empty() && complete {
                line(head);
                continue;
            }
            self.pending.extend_from_slice(head);
            if complete || self.pending.len() >= BODY_LINE_MAX {
                line(&self.pending);
                self.pending.clear();
            }
        }
    }

    /// The last line when the data did not end with LF.
    pub(crate) fn finish(&mut self, line: &mut dyn FnMut(&[u8])) {
        if !self.pending.is_empty() {
            line(&self.pending);
            self.pending.clear();
        }
    }
}

/// `UID n` among a FETCH response's items.
fn uid_item(piece: &str) -> Option<u32> {
    let upper = piece.to_ascii_uppercase();
    let mut from = 0;
    while let Some(i) = upper[from..].find("UID ") {
        let at = from + i;
        from = at + 4;
        if at > 0 && !matches!(upper.as_bytes()[at - 1], b'(' | b' ') {
            continue;
        }
        let digits: String = upper[from..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(uid) = digits.parse() {
            return Some(uid);
        }
    }
    None
}

/// The literal that ends `piece` is the value of `BODY[]`.
fn literal_is_body(piece: &str) -> bool {
    piece.rfind('{').is_some_and(|i| {
        piece[..i]
            .trim_end()
            .to_ascii_uppercase()
            .ends_with("BODY[]")
    })
}

/// `BODY[] "..."`: a message sent as a quoted string, unescaped.
fn quoted_body(piece: &str) -> Option<Vec<u8>> {
    let upper = piece.to_ascii_uppercase();
    let start = upper.find("BODY[] \"")? + "BODY[] \"".len();
    let mut out = Vec::new();
    let mut bytes = piece.as_bytes()[start..].iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'"' => return Some(out),
            b'\\' => out.push(*bytes.next()?),
            _ => out.push(b),
        }
    }
    None
}

fn violation(what: impl std::fmt::Display, line: &str) -> ProbeError {
    ProbeError::protocol_violation(format!("{what}: {:?}", truncate(line.trim_end(), 80)))
}

/// `tag UID FETCH uid (UID BODY.PEEK[])` on `stream`, reading to its tagged reply.
/// The message's lines go to `line` as they arrive; returns whether the server
/// sent the message (false: it is gone). A literal larger than `max_literal` is
/// refused before a byte of it is read.
pub(crate) async fn uid_fetch_body<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    tag: &str,
    uid: u32,
    max_literal: u64,
    line: &mut dyn FnMut(&[u8]),
) -> ProbeResult<bool> {
    write_all_flush(
        stream,
        format!("{tag} UID FETCH {uid} (UID BODY.PEEK[])\r\n").as_bytes(),
    )
    .await?;
    // A one-byte buffer: lines come byte by byte and the literal's large reads
    // bypass it, so nothing after the tagged reply is taken from async-imap.
    let mut reader = BufReader::with_capacity(1, stream);
    let mut chunk = vec![0u8; CHUNK];
    let mut raw = Vec::new();
    let mut delivered = false;
    for _ in 0..MAX_LINES {
        read_line_bounded(&mut reader, &mut raw, MAX_STATUS_LINE).await?;
        let mut piece = String::from_utf8_lossy(&raw).into_owned();
        if !piece.starts_with("* ") {
            return match tagged_status(&piece, tag) {
                Some(end) => end.map(|()| delivered),
                None => Err(violation("unexpected IMAP response to UID FETCH", &piece)),
            };
        }
        let fetch = piece
            .split_whitespace()
            .nth(2)
            .is_some_and(|w| w.eq_ignore_ascii_case("FETCH"));
        let mut uid_seen = uid_item(&piece);
        let mut streamed = false;
        // One untagged response: pieces of text joined by literals.
        let mut pieces = 0;
        while let Some(n) = announced_literal(piece.trim_end_matches('\n').as_bytes()) {
            pieces += 1;
            if pieces > MAX_LINES {
                return Err(violation("too many literals in one response", &piece));
            }
            if n > max_literal {
                return Err(ProbeError::protocol_violation(format!(
                    "the server announced a literal of {n} bytes, more than the {max_literal} bytes allowed for this message"
                )));
            }
            let ours = fetch
                && !delivered
                && !streamed
                && literal_is_body(&piece)
                && uid_seen.is_none_or(|u| u == uid);
            let mut splitter = LineSplitter::default();
            let mut left = n;
            while left > 0 {
                let want = (left as usize).min(CHUNK);
                let got = reader
                    .read(&mut chunk[..want])
                    .await
                    .map_err(|e| ProbeError::io(&e))?;
                if got == 0 {
                    return Err(ProbeError::new(
                        crate::core::error::ErrorKind::Closed,
                        format!("the connection closed {left} bytes before the end of a literal"),
                    ));
                }
                if ours {
                    splitter.feed(&chunk[..got], line);
                }
                left -= got as u64;
            }
            if ours {
                splitter.finish(line);
                streamed = true;
            }
            read_line_bounded(&mut reader, &mut raw, MAX_STATUS_LINE).await?;
            piece = String::from_utf8_lossy(&raw).into_owned();
            uid_seen = uid_seen.or(uid_item(&piece));
            if fetch
                && !piece.trim_end().ends_with(')')
                && announced_literal(piece.trim_end_matches('\n').as_bytes()).is_none()
            {
                return Err(violation("unexpected data after a FETCH literal", &piece));
            }
        }
        if fetch
            && !streamed
            && !delivered
            && uid_seen == Some(uid)
            && let Some(body) = quoted_body(&piece)
        {
            let mut splitter = LineSplitter::default();
            splitter.feed(&body, line);
            splitter.finish(line);
            streamed = true;
        }
        if streamed {
            if let Some(other) = uid_seen.filter(|&u| u != uid) {
                return Err(ProbeError::protocol_violation(format!(
                    "the server sent the message with UID {other} for UID {uid}"
                )));
            }
            delivered = true;
        }
    }
    Err(ProbeError::protocol_violation(format!(
        "more than {MAX_LINES} responses to UID FETCH"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// Run a fetch against a scripted server answer; (result, lines, what is left unread).
    async fn fetch_from(answer: Vec<u8>, max: u64) -> (ProbeResult<bool>, Vec<Vec<u8>>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let serve = tokio::spawn(async move {
            let mut command = [0u8; 64];
            let n = server.read(&mut command).await.unwrap();
            assert!(command[..n].starts_with(b"f1 UID FETCH 7 (UID BODY.PEEK[])\r\n"));
            server.write_all(&answer).await.unwrap();
            server.write_all(b"* 9 EXISTS\r\n").await.unwrap();
            drop(server);
        });
        let mut lines = Vec::new();
        let result = uid_fetch_body(&mut client, "f1", 7, max, &mut |l: &[u8]| {
            lines.push(l.to_vec())
        })
        .await;
        serve.await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        (result, lines, rest)
    }

    #[tokio::test]
    async fn the_literal_arrives_line_by_line_and_nothing_after_the_reply_is_taken() {
        let body = b"Subject: x\r\n\r\nline one\r\nlast";
        let mut answer = format!("* 3 FETCH (UID 7 BODY[] {{{}}}\r\n", body.len()).into_bytes();
        answer.extend_from_slice(body);
        answer.extend_from_slice(b" FLAGS (\\Seen))\r\n* 4 EXISTS\r\nf1 OK done\r\n");
        let (result, lines, rest) = fetch_from(answer, 1000).await;
        assert!(result.unwrap());
        assert_eq!(
            lines,
            [&b"Subject: x\r\n"[..], b"\r\n", b"line one\r\n", b"last"]
        );
        assert_eq!(rest, b"* 9 EXISTS\r\n");
    }

    #[tokio::test]
    async fn uid_after_the_literal_and_other_messages_literals() {
        let mut answer = b"* 1 FETCH (BODY[] {5}\r\nother UID 3)\r\n".to_vec();
        answer.extend_from_slice(b"* 2 FETCH (BODY[] {4}\r\nmine UID 7)\r\nf1 OK\r\n");
        let (result, _, _) = fetch_from(answer, 1000).await;
        let err = result.unwrap_err();
        assert!(err.to_string().contains("UID 3"), "{err}");

        let answer = b"* 1 FETCH (UID 3 BODY[] {5}\r\nother)\r\n* 2 FETCH (BODY[] {4}\r\nmine UID 7)\r\nf1 OK\r\n".to_vec();
        let (result, lines, _) = fetch_from(answer, 1000).await;
        assert!(result.unwrap());
        assert_eq!(lines, [b"mine".to_vec()]);
    }

    #[tokio::test]
    async fn gone_refused_oversized_and_overlong() {
        let (result, lines, _) = fetch_from(b"f1 OK nothing\r\n".to_vec(), 1000).await;
        assert!(!result.unwrap());
        assert!(lines.is_empty());

        let (result, _, _) = fetch_from(b"f1 NO [UNAVAILABLE] later\r\n".to_vec(), 1000).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), crate::core::error::ErrorKind::Rejected);

        let (result, _, _) =
            fetch_from(b"* 1 FETCH (UID 7 BODY[] {400000000}\r\n".to_vec(), 1000).await;
        assert!(result.unwrap_err().to_string().contains("400000000"));

        let mut answer = b"* 1 FETCH (UID 7 BODY[] {4}\r\n".to_vec();
        answer.extend_from_slice(b"abcdmore than announced\r\n)\r\nf1 OK\r\n");
        let (result, _, _) = fetch_from(answer, 1000).await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), crate::core::error::ErrorKind::Protocol, "{err}");

        let (result, _, _) =
            fetch_from(b"* 1 FETCH (UID 7 BODY[] {100}\r\nabc".to_vec(), 1000).await;
        assert_eq!(
            result.unwrap_err().kind(),
            crate::core::error::ErrorKind::Closed
        );
    }

    #[tokio::test]
    async fn quoted_body() {
        let answer = b"* 1 FETCH (UID 7 BODY[] \"a \\\"b\\\"\")\r\nf1 OK\r\n".to_vec();
        let (result, lines, _) = fetch_from(answer, 1000).await;
        assert!(result.unwrap());
        assert_eq!(lines, [b"a \"b\"".to_vec()]);
    }

    #[test]
    fn long_lines_come_in_pieces() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        let big = vec![b'x'; BODY_LINE_MAX + 10];
        s.feed(&big[..100], &mut |l: &[u8]| got.push(l.len()));
        s.feed(&big[100..], &mut |l: &[u8]| got.push(l.len()));
        s.feed(b"\r\nab\ncd", &mut |l: &[u8]| got.push(l.len()));
        s.finish(&mut |l: &[u8]| got.push(l.len()));
        assert_eq!(got, [BODY_LINE_MAX, 12, 3, 2]);
        assert_eq!(uid_item("* 1 FETCH (UID 12 BODY[] {5}"), Some(12));
        assert_eq!(uid_item("* 1 FETCH (XUID 12)"), None);
        assert!(literal_is_body("* 1 FETCH (UID 12 BODY[] {5}"));
        assert!(!literal_is_body("* 1 FETCH (BODY[HEADER] {5}"));
    }
}
