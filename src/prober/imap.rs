//! IMAP: find probe messages by their probe-id header, fetch and verify them, and
//! delete exactly those (UID EXPUNGE, never a bare EXPUNGE of other messages).
//!
//! The greeting, CAPABILITY and STARTTLS are spoken by hand (async-imap has no
//! STARTTLS); async-imap takes over at LOGIN.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_imap::Session;
use futures::TryStreamExt;
use tokio::io::{AsyncBufRead, AsyncWrite, BufReader};

use super::{Accepted, Context, Locator, Mailbox, Wanted};
use crate::error::{ErrorKind, ProbeError, ProbeResult};
use crate::message::{
    PROBE_HEADER, PROBE_ID_PREFIX, Verification, Verifier, header_probe_id, is_probe_id,
};
use crate::net::{BoxStream, read_line_bounded, write_all_flush};
use crate::phase::{Phase, PhaseClock, Phases, Protocol};
use crate::reply::Reply;
use crate::tls::TlsInfo;

const MAX_STATUS_LINE: usize = 64 * 1024;
const MAX_UNTAGGED: usize = 1000;
/// What the server may send for one step other than a message FETCH (login,
/// SELECT, SEARCH with its header fetches, STORE, EXPUNGE): async-imap buffers a
/// whole response, so a hostile one must not grow without bound.
const STEP_BUDGET: u64 = 16 << 20;

pub struct ImapMailbox {
    /// Taken out while IDLE runs; `None` after a failed IDLE (the session is gone).
    session: Option<Session<BoxStream>>,
    /// The server supports IDLE (RFC 2177): wait for new mail instead of polling.
    idle: bool,
    uidplus: bool,
    /// Bytes the server may still send in the current step.
    allowance: crate::budget::Allowance,
}

/// Map async-imap's errors onto ours.
fn from_imap(err: async_imap::error::Error) -> ProbeError {
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
                None => crate::reply::truncate(what, 160).to_string(),
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

/// Send a tagged command and read to its tagged reply; returns the untagged lines.
async fn tagged<S: AsyncBufRead + AsyncWrite + Unpin>(
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
        return match split_status_line(&line) {
            Some((t, "OK", _)) if t == tag => Ok(untagged),
            Some((t, status @ ("NO" | "BAD"), text)) if t == tag => Err(ProbeError::rejected(
                Reply::textual(format!("{status} {}", text.trim())),
            )),
            _ => Err(ProbeError::protocol_violation(format!(
                "unexpected IMAP response to {command}: {:?}",
                crate::reply::truncate(line.trim_end(), 80)
            ))),
        };
    }
    Err(ProbeError::protocol_violation(format!(
        "more than {MAX_UNTAGGED} untagged responses to {command}"
    )))
}

/// A UID set `1,5,7` for commands.
fn uid_set(uids: impl IntoIterator<Item = u32>) -> String {
    uids.into_iter()
        .map(|u| u.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `OR HEADER h a OR HEADER h b HEADER h c`: one search for all pending ids.
pub fn search_query(probe_ids: &[&str]) -> String {
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

impl ImapMailbox {
    async fn connect(
        ctx: &Context,
        clock: &mut PhaseClock,
        tls_info: &mut Option<TlsInfo>,
    ) -> ProbeResult<Self> {
        let s = &ctx.settings;
        let t = s.timeouts;
        let endpoint = s
            .imap
            .as_ref()
            .ok_or_else(|| ProbeError::config("no IMAP endpoint"))?;
        let login = s
            .imap_login
            .as_ref()
            .ok_or_else(|| ProbeError::config("no IMAP login"))?;
        let stream = super::open_stream(ctx, endpoint, clock, tls_info).await?;
        let mut reader = BufReader::new(stream);
        let greeting = clock
            .run(Phase::Greeting, t.greeting, async {
                let mut raw = Vec::new();
                read_line_bounded(&mut reader, &mut raw, MAX_STATUS_LINE).await?;
                let line = String::from_utf8_lossy(&raw).into_owned();
                match split_status_line(&line) {
                    Some(("*", "OK" | "PREAUTH", _)) => Ok(line),
                    Some(("*", "BYE", text)) => Err(ProbeError::rejected(Reply::textual(format!(
                        "BYE {}",
                        text.trim()
                    )))),
                    _ => Err(ProbeError::protocol_violation(format!(
                        "not an IMAP greeting: {:?}",
                        crate::reply::truncate(line.trim_end(), 80)
                    ))),
                }
            })
            .await?;
        let mut capabilities = match parse_capabilities(&greeting) {
            Some(c) => c,
            None => {
                let lines = clock
                    .run(
                        Phase::Capability,
                        t.command,
                        tagged(&mut reader, "c1", "CAPABILITY"),
                    )
                    .await?;
                lines
                    .iter()
                    .find_map(|l| parse_capabilities(l))
                    .unwrap_or_default()
            }
        };
        let has = |caps: &[String], c: &str| caps.iter().any(|x| x == c);
        let wants_tls = super::starttls_wanted(endpoint, has(&capabilities, "STARTTLS"))?;
        let stream: BoxStream = if wants_tls {
            clock
                .run(
                    Phase::Starttls,
                    t.command,
                    tagged(&mut reader, "s1", "STARTTLS"),
                )
                .await?;
            // Capabilities before TLS are not to be trusted (RFC 3501 6.2.1).
            capabilities.clear();
            super::finish_starttls(ctx, endpoint, clock, reader, tls_info).await?
        } else {
            super::unbuffer(endpoint, reader)?
        };
        if tls_info.is_none() {
            if has(&capabilities, "LOGINDISABLED") {
                return Err(ProbeError::new(
                    ErrorKind::Unsupported,
                    "the IMAP server disables LOGIN without TLS; use imaps:// or allow STARTTLS",
                )
                .at(Protocol::Imap, Phase::Login));
            }
            super::check_plaintext_login(ctx, endpoint, false, Phase::Login)?;
        }

        let (stream, allowance) = crate::budget::Budgeted::imap(stream, STEP_BUDGET);
        let client = async_imap::Client::new(Box::new(stream) as BoxStream);
        let mut session = clock
            .run(Phase::Login, t.command, async {
                client
                    .login(&login.user, login.password.expose())
                    .await
                    .map_err(|(e, _)| {
                        let e = from_imap(e);
                        if e.kind() == ErrorKind::Rejected {
                            e.with_kind(ErrorKind::Auth)
                        } else {
                            e
                        }
                    })
            })
            .await?;
        let caps = clock
            .run(Phase::Capability, t.command, async {
                session.capabilities().await.map_err(from_imap)
            })
            .await?;
        let uidplus = caps.has_str("UIDPLUS");
        let idle = caps.has_str("IDLE");
        clock
            .run(Phase::Select, t.command, async {
                session.select("INBOX").await.map_err(from_imap)
            })
            .await?;
        Ok(ImapMailbox {
            session: Some(session),
            idle,
            uidplus,
            allowance,
        })
    }
}

impl ImapMailbox {
    fn session(&mut self) -> ProbeResult<&mut Session<BoxStream>> {
        self.session
            .as_mut()
            .ok_or_else(|| ProbeError::new(ErrorKind::Closed, "the IMAP session ended during IDLE"))
    }
}

impl Mailbox for ImapMailbox {
    const PROTOCOL: Protocol = Protocol::Imap;
    const SNAPSHOT: bool = false;

    async fn open(ctx: &Context) -> Result<(Self, Phases, Option<TlsInfo>), (ProbeError, Phases)> {
        let mut clock = PhaseClock::new(Protocol::Imap);
        let mut tls = None;
        match Self::connect(ctx, &mut clock, &mut tls).await {
            Ok(m) => Ok((m, clock.into_timings(), tls)),
            Err(e) => Err((e.at(Protocol::Imap, Phase::Connect), clock.into_timings())),
        }
    }

    async fn find(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
    ) -> ProbeResult<HashMap<String, Locator>> {
        let limit = ctx.settings.timeouts.command;
        self.allowance.grant(STEP_BUDGET);
        let session = self.session()?;
        let queries: Vec<String> = match wanted {
            // Bounded query length: search in batches.
            Wanted::Ids(ids) => ids.chunks(50).map(search_query).collect(),
            Wanted::AllProbes => vec![format!("HEADER {PROBE_HEADER} \"{PROBE_ID_PREFIX}\"")],
        };
        let step = async {
            // NOOP lets the server announce mail that arrived since the last command.
            session.noop().await.map_err(from_imap)?;
            let mut found = HashMap::new();
            for query in queries {
                let uids = session.uid_search(query).await.map_err(from_imap)?;
                if uids.is_empty() {
                    continue;
                }
                let fetches: Vec<_> = session
                    .uid_fetch(
                        uid_set(uids),
                        format!("(UID BODY.PEEK[HEADER.FIELDS ({PROBE_HEADER})])"),
                    )
                    .await
                    .map_err(from_imap)?
                    .try_collect()
                    .await
                    .map_err(from_imap)?;
                for f in fetches {
                    // SEARCH HEADER matches substrings: keep exact ids only.
                    if let (Some(uid), Some(id)) = (f.uid, f.header().and_then(header_probe_id))
                        && wanted.matches(&id)
                    {
                        found.insert(id, Locator::ImapUid(uid));
                    }
                }
            }
            Ok(found)
        };
        timed(limit, step)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Search))
    }

    async fn fetch(
        &mut self,
        ctx: &Context,
        at: &Locator,
        message: &Accepted,
    ) -> ProbeResult<Verification> {
        let Locator::ImapUid(uid) = at else {
            return Err(ProbeError::config("not an IMAP locator"));
        };
        // Delivery adds trace headers; far more than was sent is not our message.
        self.allowance.grant(message.encoded_len * 2 + (1 << 20));
        let session = self.session()?;
        let step = async {
            let mut fetches = session
                .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                .await
                .map_err(from_imap)?;
            let mut verification = None;
            while let Some(f) = fetches.try_next().await.map_err(from_imap)? {
                if f.uid == Some(*uid)
                    && let Some(body) = f.body()
                {
                    verification = Some(Verifier::verify_bytes(&message.expected, body));
                }
            }
            verification.ok_or_else(|| {
                ProbeError::new(
                    ErrorKind::NotDelivered,
                    "the message vanished before it could be fetched",
                )
            })
        };
        timed(super::body_limit(ctx), step)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Fetch))
    }

    async fn delete(
        &mut self,
        ctx: &Context,
        which: &[(String, Locator)],
    ) -> ProbeResult<Vec<String>> {
        let ours: Vec<(String, u32)> = which
            .iter()
            .filter(|(id, _)| is_probe_id(id))
            .filter_map(|(id, at)| match at {
                Locator::ImapUid(uid) => Some((id.clone(), *uid)),
                _ => None,
            })
            .collect();
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(ours.iter().map(|(_, u)| *u));
        let uidplus = self.uidplus;
        self.allowance.grant(STEP_BUDGET);
        let session = self.session()?;
        let step = async {
            let _: Vec<_> = session
                .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                .await
                .map_err(from_imap)?
                .try_collect()
                .await
                .map_err(from_imap)?;
            if uidplus {
                let _: Vec<_> = session
                    .uid_expunge(&set)
                    .await
                    .map_err(from_imap)?
                    .try_collect()
                    .await
                    .map_err(from_imap)?;
            } else {
                // Without UID EXPUNGE a bare EXPUNGE would also remove other messages
                // someone marked \Deleted: only expunge when ours are the only ones.
                let flagged = session.uid_search("DELETED").await.map_err(from_imap)?;
                let mine: HashSet<u32> = ours.iter().map(|(_, u)| *u).collect();
                if flagged.iter().all(|u| mine.contains(u)) {
                    let _: Vec<_> = session
                        .expunge()
                        .await
                        .map_err(from_imap)?
                        .try_collect()
                        .await
                        .map_err(from_imap)?;
                } else {
                    return Err(ProbeError::new(
                        ErrorKind::Unsupported,
                        "the server lacks UIDPLUS and other messages are marked deleted; probe messages were flagged \\Deleted but not expunged",
                    ));
                }
            }
            Ok(ours.iter().map(|(id, _)| id.clone()).collect())
        };
        timed(ctx.settings.timeouts.command, step)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Delete))
    }

    async fn wait_for_change(&mut self, ctx: &Context, limit: Duration) -> ProbeResult<()> {
        if !self.idle {
            tokio::time::sleep(limit.min(ctx.settings.poll_interval)).await;
            return Ok(());
        }
        let session = self
            .session
            .take()
            .ok_or_else(|| ProbeError::new(ErrorKind::Closed, "the IMAP session has ended"))?;
        self.allowance.grant(STEP_BUDGET);
        let mut handle = session.idle();
        let cycle = async {
            handle.init().await.map_err(from_imap)?;
            {
                // New mail (EXISTS) or the time limit, whichever comes first.
                let (wait, _stop) = handle.wait_with_timeout(limit);
                wait.await.map_err(from_imap)?;
            }
            handle.done().await.map_err(from_imap)
        };
        let bound = limit + ctx.settings.timeouts.command;
        let session = timed(bound, cycle)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Delivery))?;
        self.session = Some(session);
        Ok(())
    }

    async fn close(mut self, ctx: &Context) {
        let limit = ctx.settings.timeouts.command.min(Duration::from_secs(5));
        self.allowance.grant(STEP_BUDGET);
        if let Some(mut session) = self.session.take() {
            let _ = tokio::time::timeout(limit, session.logout()).await;
        }
    }
}

async fn timed<T>(limit: Duration, step: impl Future<Output = ProbeResult<T>>) -> ProbeResult<T> {
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
