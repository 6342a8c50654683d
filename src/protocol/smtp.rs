//! SMTP on the wire: reading bounded replies, command exchanges, the EHLO
//! capabilities, AUTH with a bearer token, and the adapter that lets lettre continue a session we opened.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufRead, AsyncWrite};

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::reply::{MAX_REPLY_LINE, MAX_REPLY_LINES, Reply};
use crate::core::secret::Login;
use crate::io::net::{BoxStream, read_line_bounded, write_all_flush};
use crate::io::shared::Shared;
use crate::model::result::SmtpServerInfo;
use crate::protocol::sasl::Exchange;

impl SmtpServerInfo {
    /// The SASL mechanisms of the `AUTH` capability (upper case).
    pub(crate) fn auth_mechanisms(&self) -> Vec<String> {
        let mut out = Vec::new();
        for line in &self.capabilities {
            let upper = line.to_ascii_uppercase();
            let mut words = upper.split_whitespace();
            let first = words.next().unwrap_or_default();
            // `AUTH=...` is the pre-RFC 4954 spelling some servers still add.
            if first == "AUTH" {
                out.extend(words.map(str::to_string));
            } else if let Some(m) = first.strip_prefix("AUTH=") {
                out.push(m.to_string());
                out.extend(words.map(str::to_string));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    pub(crate) fn has(&self, keyword: &str) -> bool {
        self.capabilities.iter().any(|c| {
            c.split_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }
    pub(crate) fn from_ehlo(banner: String, ehlo: &Reply) -> Self {
        let capabilities: Vec<String> = ehlo.text.lines().skip(1).map(str::to_string).collect();
        let advertised_size = capabilities.iter().find_map(|c| {
            let mut words = c.split_whitespace();
            words
                .next()
                .filter(|k| k.eq_ignore_ascii_case("SIZE"))
                .map(|_| words.next().and_then(|n| n.parse().ok()).unwrap_or(0))
        });
        SmtpServerInfo {
            banner,
            capabilities,
            advertised_size,
            notes: Vec::new(),
        }
    }
}

/// Read one complete SMTP reply (bounded in line length and count).
pub async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> ProbeResult<Reply> {
    let mut lines: Vec<String> = Vec::new();
    let mut raw = Vec::with_capacity(128);
    loop {
        if lines.len() >= MAX_REPLY_LINES {
            return Err(ProbeError::protocol_violation(format!(
                "the server sent a reply of more than {MAX_REPLY_LINES} lines"
            )));
        }
        read_line_bounded(reader, &mut raw, MAX_REPLY_LINE).await?;
        lines.push(String::from_utf8_lossy(&raw).into_owned());
        match Reply::parse_smtp_lines(&lines) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(why) => return Err(ProbeError::protocol_violation(why)),
        }
    }
}

/// Send `command` and read its reply; a negative reply is an error.
pub(crate) async fn exchange<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut S,
    command: &str,
) -> ProbeResult<Reply> {
    write_all_flush(stream, command.as_bytes()).await?;
    expect_positive(read_reply(stream).await?)
}

pub(crate) fn expect_positive(reply: Reply) -> ProbeResult<Reply> {
    if reply.is_positive() {
        Ok(reply)
    } else {
        Err(ProbeError::rejected(reply))
    }
}

/// A command line longer than this does not carry the initial response
/// (RFC 4954 allows AUTH lines of 12288 octets).
const MAX_AUTH_LINE: usize = 12_000;

/// `AUTH` for an [`Exchange`] (a bearer token): the initial response on the command line (or
/// after the server's empty challenge when too long), each error challenge
/// acknowledged; 235 is success, anything else a refusal saying why.
pub(crate) async fn authenticate_sasl<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut S,
    exchange: &mut Exchange,
    login: &Login,
) -> ProbeResult<Reply> {
    let command = exchange.command("AUTH", MAX_AUTH_LINE);
    write_all_flush(stream, command.as_bytes()).await?;
    loop {
        let reply = read_reply(stream).await?;
        match reply.code {
            Some(235) => return Ok(reply),
            Some(334) => {
                let answer = exchange.answer_base64(&reply.text)?;
                write_all_flush(stream, format!("{answer}\r\n").as_bytes()).await?;
            }
            _ => return Err(exchange.refused(login, ProbeError::rejected(reply))),
        }
    }
}

/// Turn a lettre error into ours, keeping the reply code, enhanced code and text.
pub(crate) fn from_lettre(err: lettre::transport::smtp::Error) -> ProbeError {
    use std::error::Error as _;
    if let Some(code) = err.status() {
        let code: u16 = code.to_string().parse().unwrap_or(0);
        let text = err.source().map(|s| s.to_string()).unwrap_or_default();
        return ProbeError::rejected(Reply::smtp(code, text));
    }
    if let Some(io) = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        return ProbeError::io(io);
    }
    let text = err.to_string();
    if text.contains("incomplete response") {
        return ProbeError::closed();
    }
    let kind = if err.is_tls() {
        ErrorKind::Tls
    } else if err.is_response() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Network
    };
    ProbeError::new(kind, text)
}

/// An SMTP reply as it went over the wire, for replaying it to lettre.
pub(crate) fn wire_form(reply: &Reply) -> Vec<u8> {
    let code = reply.code.unwrap_or(250);
    let lines: Vec<&str> = reply.text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{line}\r\n").as_bytes());
    }
    out
}

/// The DATA body on the wire: every line that starts with a dot gets a second one
/// (RFC 5321 4.5.2), found with a scan instead of lettre's byte-by-byte copy; a
/// chunk without such a line goes out as it is.
#[derive(Debug)]
pub(crate) struct DotStuffer {
    at_line_start: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
        }
    }
}

impl DotStuffer {
    pub(crate) fn stuff<'a>(&mut self, chunk: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let Some(&last) = chunk.last() else {
            return chunk.into();
        };
        let starts_with_dot = self.at_line_start && chunk[0] == b'.';
        self.at_line_start = last == b'\n';
        let dot_after_newline = memchr::memmem::find(chunk, b"\n.").is_some();
        if !starts_with_dot && !dot_after_newline {
            return chunk.into();
        }
        let mut out = Vec::with_capacity(chunk.len() + 16);
        let mut line_start = starts_with_dot;
        for &b in chunk {
            if line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            line_start = b == b'\n';
        }
        out.into()
    }
}

/// The end of DATA (as lettre writes it: a CRLF of its own, then the dot line).
pub(crate) const END_OF_DATA: &[u8] = b"\r\n.\r\n";

/// lettre speaks over any stream of this trait: the replayed live session, shared
/// with the prober, which writes the DATA body itself.
impl lettre::transport::smtp::client::AsyncTokioStream for Shared<BoxStream> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Err(io::Error::other("peer address not tracked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::default();
        chunks
            .iter()
            .flat_map(|c| s.stuff(c).into_owned())
            .collect()
    }

    #[test]
    fn lines_starting_with_a_dot_get_a_second_one() {
        assert_eq!(stuffed(&[b"abc\r\ndef\r\n"]), b"abc\r\ndef\r\n");
        assert_eq!(stuffed(&[b".a\r\n.\r\nx.y\r\n"]), b"..a\r\n..\r\nx.y\r\n");
        // Across chunk boundaries, in both directions.
        assert_eq!(stuffed(&[b"a\r\n", b".b"]), b"a\r\n..b");
        assert_eq!(stuffed(&[b"a", b".b\r\n", b"", b"."]), b"a.b\r\n..");
        assert!(matches!(
            DotStuffer::default().stuff(b"plain\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
