//! IMAP on the wire: status lines and capabilities, tagged commands spoken by
//! hand (before async-imap takes over at LOGIN), AUTHENTICATE with a bearer
//! token, search queries by probe id,
//! and async-imap's errors mapped onto ours.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite};

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::probe_id::PROBE_HEADER;
use crate::core::reply::Reply;
use crate::core::secret::Login;
use crate::io::net::{read_line_bounded, write_all_flush};
use crate::protocol::sasl::Exchange;

pub(crate) const MAX_STATUS_LINE: usize = 64 * 1024;
const MAX_UNTAGGED: usize = 1000;
/// Map async-imap's errors onto ours.
pub(crate) fn from_imap(err: async_imap::error::Error) -> ProbeError {
    use async_imap::error::Error;
    match err {
        // async-imap reports unparsable input and over-large responses as
        // `Other` I/O errors quoting the whole buffer: a protocol violation, briefly.
        Error::Io(e) if e.kind() == std::io::ErrorKind::Other => {
            let text = e.to_string();
            let what = text.split(" during parsing of ").next().unwrap_or_default();
            // A nom error lists every input byte: keep only its error code.
            let what = match what.split_once("code: ") {
                Some((_, code)) => {
                    format!("parser error {}", code.trim_end_matches([' ', '}', ')']))
                }
                None => crate::core::reply::truncate(what, 160).to_string(),
            };
            ProbeError::protocol_violation(format!("unparsable IMAP response: {what}"))
        }
        Error::Io(e) => ProbeError::io(&e),
        Error::No(text) => {
            ProbeError::rejected(Reply::textual(format!("NO {}", status_text(&text))))
        }
        Error::Bad(text) => {
            ProbeError::rejected(Reply::textual(format!("BAD {}", status_text(&text))))
        }
        Error::ConnectionLost => ProbeError::closed(),
        Error::Parse(e) => ProbeError::protocol_violation(format!("unparsable IMAP response: {e}")),
        other => ProbeError::new(ErrorKind::Protocol, other.to_string()),
    }
}

/// async-imap hands NO/BAD text over in its own debug form
/// (`code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")`):
/// keep only the server's words.
pub fn status_text(raw: &str) -> String {
    match raw.split_once("info: Some(\"") {
        Some((_, rest)) => rest
            .strip_suffix("\")")
            .unwrap_or(rest)
            .replace("\\\"", "\"")
            .replace("\\\\", "\\"),
        None => raw.to_string(),
    }
}

/// One status line split into (tag, status word, rest).
pub fn split_status_line(line: &str) -> Option<(&str, &str, &str)> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (tag, rest) = line.split_once(' ')?;
    let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((tag, status, text))
}

/// Capabilities in a greeting's `[CAPABILITY ...]` code or a `* CAPABILITY` line.
pub fn parse_capabilities(line: &str) -> Option<Vec<String>> {
    let upper = line.to_ascii_uppercase();
    let start = if let Some(i) = upper.find("[CAPABILITY ") {
        i + "[CAPABILITY ".len()
    } else if let Some(rest) = upper.strip_prefix("* CAPABILITY ") {
        line.len() - rest.len()
    } else {
        return None;
    };
    let tail = &line[start..];
    let end = tail.find(']').unwrap_or(tail.len());
    Some(
        tail[..end]
            .split_whitespace()
            .map(|s| s.to_ascii_uppercase())
            .collect(),
    )
}

/// The SASL mechanisms among IMAP capabilities (`AUTH=XOAUTH2` -> `XOAUTH2`).
pub(crate) fn auth_mechanisms(capabilities: &[String]) -> Vec<String> {
    capabilities
        .iter()
        .filter_map(|c| {
            c.to_ascii_uppercase()
                .strip_prefix("AUTH=")
                .map(str::to_string)
        })
        .collect()
}

/// async-imap's side of a bearer exchange; a failure to answer is kept for
/// after the server's tagged reply.
struct Answering<'a> {
    exchange: &'a mut Exchange,
    failed: Option<ProbeError>,
}

impl async_imap::Authenticator for &mut Answering<'_> {
    type Response = Vec<u8>;
    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        self.exchange.answer(challenge).unwrap_or_else(|e| {
            self.failed.get_or_insert(e);
            Vec::new()
        })
    }
}

/// `AUTHENTICATE` for an [`Exchange`] (a bearer token, or PLAIN), the initial
/// response on the command line when the server offers SASL-IR (RFC 4959). A
/// refusal says why.
pub(crate) async fn authenticate_sasl<T>(
    client: async_imap::Client<T>,
    exchange: &mut Exchange,
    login: &Login,
    sasl_ir: bool,
) -> ProbeResult<async_imap::Session<T>>
where
    T: tokio::io::AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let mut command = exchange.mechanism().sasl_name().to_string();
    if sasl_ir {
        command.push(' ');
        command.push_str(&exchange.initial_response());
    }
    let mut answering = Answering {
        exchange,
        failed: None,
    };
    let outcome = client.authenticate(&command, &mut answering).await;
    command.clear();
    match outcome {
        Ok(session) => Ok(session),
        Err((e, _)) => {
            if let Some(failed) = answering.failed.take() {
                return Err(failed);
            }
            Err(answering.exchange.refused(login, from_imap(e)))
        }
    }
}

/// Send a tagged command and read to its tagged reply; returns the untagged lines.
pub(crate) async fn tagged<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut S,
    tag: &str,
    command: &str,
) -> ProbeResult<Vec<String>> {
    write_all_flush(stream, format!("{tag} {command}\r\n").as_bytes()).await?;
    let mut untagged = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..MAX_UNTAGGED {
        read_line_bounded(stream, &mut raw, MAX_STATUS_LINE).await?;
        let line = String::from_utf8_lossy(&raw).into_owned();
        if line.starts_with("* ") {
            untagged.push(line);
            continue;
        }
        return match tagged_status(&line, tag) {
            Some(end) => end.map(|()| untagged),
            None => Err(ProbeError::protocol_violation(format!(
                "unexpected IMAP response to {command}: {:?}",
                crate::core::reply::truncate(line.trim_end(), 80)
            ))),
        };
    }
    Err(ProbeError::protocol_violation(format!(
        "more than {MAX_UNTAGGED} untagged responses to {command}"
    )))
}

/// How the command tagged `tag` ended: OK, or its NO/BAD refusal; `None` when
/// `line` is not that command's tagged reply.
pub(crate) fn tagged_status(line: &str, tag: &str) -> Option<ProbeResult<()>> {
    match split_status_line(line) {
        Some((t, "OK", _)) if t == tag => Some(Ok(())),
        Some((t, status @ ("NO" | "BAD"), text)) if t == tag => Some(Err(ProbeError::rejected(
            Reply::textual(format!("{status} {}", text.trim())),
        ))),
        _ => None,
    }
}

/// A UID set `1,5,7` for commands.
pub(crate) fn uid_set(uids: impl IntoIterator<Item = u32>) -> String {
    uids.into_iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `OR HEADER h a OR HEADER h b HEADER h c`: one search for all pending ids.
pub(crate) fn search_query(probe_ids: &[&str]) -> String {
    let term = |id: &str| format!("HEADER {PROBE_HEADER} \"{id}\"");
    let mut query = String::new();
    for (i, id) in probe_ids.iter().enumerate() {
        if i + 1 < probe_ids.len() {
            query.push_str("OR ");
        }
        query.push_str(&term(id));
        query.push(' ');
    }
    query.trim_end().to_string()
}

/// `step` under `limit`.
pub(crate) async fn timed<T>(
    limit: Duration,
    step: impl Future<Output = ProbeResult<T>>,
) -> ProbeResult<T> {
    match tokio::time::timeout(limit, step).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::timeout(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_greeting_and_untagged_line() {
        assert_eq!(
            parse_capabilities("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready").unwrap(),
            vec!["IMAP4REV1", "STARTTLS", "LOGINDISABLED"]
        );
        assert_eq!(
            parse_capabilities("* CAPABILITY IMAP4rev1 IDLE UIDPLUS\r\n").unwrap(),
            vec!["IMAP4REV1", "IDLE", "UIDPLUS"]
        );
        assert_eq!(parse_capabilities("* OK ready"), None);
    }

    #[test]
    fn status_text_keeps_the_servers_words() {
        assert_eq!(
            status_text(
                r#"code: None, info: Some("[AUTHENTICATIONFAILED] Authentication failed.")"#
            ),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(
            status_text(r#"code: None, info: Some("say \"hi\"")"#),
            "say \"hi\""
        );
        assert_eq!(status_text("plain words"), "plain words");
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            split_status_line("a1 OK done\r\n"),
            Some(("a1", "OK", "done"))
        );
        assert_eq!(split_status_line("* BYE"), Some(("*", "BYE", "")));
        assert_eq!(split_status_line("garbage"), None);
    }

    #[test]
    fn one_search_for_many_ids() {
        assert_eq!(search_query(&["a"]), "HEADER X-Mailprobe-Id \"a\"");
        assert_eq!(
            search_query(&["a", "b", "c"]),
            "OR HEADER X-Mailprobe-Id \"a\" OR HEADER X-Mailprobe-Id \"b\" HEADER X-Mailprobe-Id \"c\""
        );
    }
}
