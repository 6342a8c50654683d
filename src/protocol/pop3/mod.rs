//! A small async POP3 client: RFC 1939, CAPA (RFC 2449), STLS (RFC 2595) and
//! AUTH PLAIN, XOAUTH2 and OAUTHBEARER (RFC 5034, 7628), with a streamed RETR.
//!
//! RETR hands each dot-unstuffed line to a sink as it arrives, so a 70 MB body
//! passes through with memory bounded by the longest line (at most
//! [`BODY_LINE_MAX`]) plus the 64 KiB read buffer. Every line, every listing
//! and every body is bounded, and any single read that waits longer than the
//! idle timeout fails with [`ErrorKind::Timeout`].
//!
//! After a failure in the middle of a response (timeout, over-long line, too
//! many bytes) the session is out of step with the server; every further
//! command then fails with [`ErrorKind::Protocol`] instead of misreading what
//! is still in flight. Open a new session.

pub mod parse;

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::reply::Reply;
use crate::core::secret::Login;
use crate::io::net::{read_line_bounded, write_all_flush};
use crate::protocol::sasl::{Exchange, MAX_CHALLENGES};

use crate::io::idle::IdleTimeout;
pub(crate) use parse::{
    Status, has_capability, has_sasl, is_login_delay_refusal, login_delay, parse_list_line,
    parse_stat, parse_status_line, parse_uidl_line, sasl_mechanisms, unstuff,
};
use parse::{excerpt, refusal_kind, trim_eol};

/// Longest status or listing line (RFC 1939 allows 512 octets; servers exceed it).
pub(crate) const STATUS_LINE_MAX: usize = 8 * 1024;
/// Longest line of a message body or header block.
pub(crate) const BODY_LINE_MAX: usize = 1 << 20;
/// Most entries in a UIDL or LIST answer.
pub(crate) const MAX_LISTING: usize = 1_000_000;
/// Longest command line with a SASL initial response (RFC 5034 4).
pub(crate) const MAX_COMMAND_LINE: usize = 255;
/// Most lines in a CAPA answer.
pub(crate) const MAX_CAPA: usize = 1_000;
/// Read buffer size.
pub(crate) const READ_BUFFER: usize = 64 * 1024;
/// How long a single read may wait for data by default.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A POP3 session over any byte stream (plain TCP, or TLS after STLS).
///
/// Holds no credentials: the password passed to [`Pop3Client::login`] is only
/// kept for the duration of that call.
pub struct Pop3Client<S> {
    reader: BufReader<IdleTimeout<S>>,
    line: Vec<u8>,
    /// True while a response has not been read to its end; a failure leaves it set.
    desynced: bool,
}

impl<S: AsyncRead + Unpin> fmt::Debug for Pop3Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Client")
            .field("idle_timeout", &self.reader.get_ref().limit())
            .field("buffered", &self.reader.buffer().len())
            .field("desynced", &self.desynced)
            .finish_non_exhaustive()
    }
}

fn protocol(message: String) -> ProbeError {
    ProbeError::protocol_violation(message)
}

fn negative(text: String) -> ProbeError {
    ProbeError::rejected(Reply::textual(text))
}

fn unexpected_continuation(line: &[u8]) -> ProbeError {
    protocol(format!(
        "unexpected SASL continuation outside AUTH: \"{}\"",
        excerpt(line)
    ))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Pop3Client<S> {
    fn wrap(stream: S) -> Self {
        Pop3Client {
            reader: BufReader::with_capacity(
                READ_BUFFER,
                IdleTimeout::new(stream, DEFAULT_IDLE_TIMEOUT),
            ),
            line: Vec::new(),
            desynced: false,
        }
    }

    /// Wrap a connected stream and read the `+OK` greeting; returns its text.
    /// `-ERR` greeting: [`ErrorKind::Rejected`]; hang-up: [`ErrorKind::Closed`];
    /// anything else: [`ErrorKind::Protocol`].
    pub async fn connect(stream: S) -> ProbeResult<(Self, String)> {
        let mut client = Self::wrap(stream);
        client.read_line(STATUS_LINE_MAX).await?;
        match parse_status_line(&client.line)? {
            Status::Ok(text) => Ok((client, text)),
            Status::Err(text) => Err(negative(text)),
            Status::Continue(_) => Err(protocol(format!(
                "not a POP3 greeting: \"{}\"",
                excerpt(&client.line)
            ))),
        }
    }

    /// Continue a session on the stream returned by [`Pop3Client::stls`] once
    /// the TLS handshake is done (the server sends no new greeting).
    pub(crate) fn after_stls(stream: S) -> Self {
        Self::wrap(stream)
    }

    /// Any single read (or command write) that waits longer than `d` fails with
    /// [`ErrorKind::Timeout`]. Default 30 s.
    pub fn set_idle_timeout(&mut self, d: Duration) {
        self.reader.get_mut().set_limit(d);
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.reader.get_ref().limit()
    }

    /// `CAPA`: the capability lines. `-ERR` means CAPA is unsupported: `Ok(empty)`.
    pub async fn capa(&mut self) -> ProbeResult<Vec<String>> {
        let mut caps = Vec::new();
        match self.exchange(b"CAPA\r\n").await? {
            Status::Ok(_) => {}
            Status::Err(_) => return Ok(caps),
            Status::Continue(_) => return Err(unexpected_continuation(&self.line)),
        }
        self.read_listing(STATUS_LINE_MAX, MAX_CAPA, "CAPA", |line| {
            caps.push(String::from_utf8_lossy(line).trim().to_string());
            Ok(())
        })
        .await?;
        Ok(caps)
    }

    /// `STLS`: on `+OK`, give back the raw stream for the TLS handshake.
    /// Bytes already received after the `+OK` are a protocol violation (and
    /// the signature of STARTTLS command injection): [`ErrorKind::Protocol`].
    pub(crate) async fn stls(mut self) -> ProbeResult<S> {
        match self.exchange(b"STLS\r\n").await? {
            Status::Ok(_) => {}
            Status::Err(text) => return Err(negative(text)),
            Status::Continue(_) => return Err(unexpected_continuation(&self.line)),
        }
        let pending = self.reader.buffer().len();
        if pending > 0 {
            return Err(protocol(format!(
                "the server sent {pending} bytes after its STLS +OK, before the TLS \
                 handshake (\"{}\"); refusing them (STARTTLS injection?)",
                excerpt(self.reader.buffer())
            )));
        }
        Ok(self.reader.into_inner().into_inner())
    }

    /// Log in with USER/PASS, or with AUTH PLAIN when `capabilities` (from
    /// [`Pop3Client::capa`]) offer `SASL PLAIN` but not `USER`.
    ///
    /// A refusal is [`ErrorKind::Auth`] with the server's text in `reply`
    /// (`[IN-USE]`, `[LOGIN-DELAY]` and `[SYS/...]` refusals are
    /// [`ErrorKind::Rejected`]: the credentials were not the problem). The
    /// password never appears in the error, even if the server echoes it.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        capabilities: &[String],
    ) -> ProbeResult<()> {
        let plain = has_sasl(capabilities, "PLAIN") && !has_capability(capabilities, "USER");
        let blob = plain.then(|| plain_blob(user, password));
        let result = self.login_inner(user, password, blob.as_deref()).await;
        result.map_err(|e| {
            let mut secrets = vec![password];
            secrets.extend(blob.as_deref());
            redact(e, &secrets)
        })
    }

    async fn login_inner(
        &mut self,
        user: &str,
        password: &str,
        plain_blob: Option<&str>,
    ) -> ProbeResult<()> {
        if user.is_empty() || user.contains(['\r', '\n', '\0']) {
            return Err(ProbeError::config(
                "the POP3 user name is empty or contains CR, LF or NUL",
            ));
        }
        if password.contains(['\r', '\n', '\0']) {
            return Err(ProbeError::config(
                "the POP3 password contains CR, LF or NUL",
            ));
        }
        if let Some(blob) = plain_blob {
            return self.auth_plain(blob).await;
        }
        let status = self.exchange(format!("USER {user}\r\n").as_bytes()).await?;
        self.login_step(status)?;
        let mut cmd = Vec::with_capacity(password.len() + 7);
        cmd.extend_from_slice(b"PASS ");
        cmd.extend_from_slice(password.as_bytes());
        cmd.extend_from_slice(b"\r\n");
        let status = self.exchange(&cmd).await;
        cmd.fill(0);
        self.login_step(status?)
    }

    async fn auth_plain(&mut self, blob: &str) -> ProbeResult<()> {
        match self.exchange(b"AUTH PLAIN\r\n").await? {
            Status::Continue(_) => {}
            Status::Err(text) => return Err(refused(text)),
            Status::Ok(_) => {
                return Err(protocol(
                    "the server accepted AUTH PLAIN without credentials".into(),
                ));
            }
        }
        let mut cmd = Vec::with_capacity(blob.len() + 2);
        cmd.extend_from_slice(blob.as_bytes());
        cmd.extend_from_slice(b"\r\n");
        let written = self.write(&cmd).await;
        cmd.fill(0);
        written?;
        self.read_line(STATUS_LINE_MAX).await?;
        let status = parse_status_line(&self.line)?;
        self.login_step(status)
    }

    /// `AUTH` for an [`Exchange`] (a bearer token, or PLAIN; RFC 5034): the initial response on the
    /// command line when the line stays within 255 octets, else after the
    /// server's empty challenge; each error challenge is acknowledged. A
    /// refusal is [`ErrorKind::Auth`] saying why (see [`Exchange::refused`]).
    pub(crate) async fn authenticate_sasl(
        &mut self,
        exchange: &mut Exchange,
        login: &Login,
    ) -> ProbeResult<()> {
        let mut cmd = exchange.command("AUTH", MAX_COMMAND_LINE);
        let mut status = self.exchange(cmd.as_bytes()).await;
        cmd.clear();
        for _ in 0..=MAX_CHALLENGES {
            match status? {
                Status::Ok(_) => {
                    self.desynced = false;
                    return Ok(());
                }
                Status::Err(text) => {
                    self.desynced = false;
                    let refusal = refused(text);
                    return Err(if refusal.kind() == ErrorKind::Auth {
                        exchange.refused(login, refusal)
                    } else {
                        refusal
                    });
                }
                Status::Continue(challenge) => {
                    let mut answer = exchange.answer_base64(&challenge)?;
                    answer.push_str("\r\n");
                    let written = self.write(answer.as_bytes()).await;
                    answer.clear();
                    written?;
                    status = self
                        .read_line(STATUS_LINE_MAX)
                        .await
                        .and_then(|_| parse_status_line(&self.line));
                }
            }
        }
        Err(protocol(format!(
            "the server sent more than {MAX_CHALLENGES} SASL challenges"
        )))
    }

    fn login_step(&mut self, status: Status) -> ProbeResult<()> {
        match status {
            Status::Ok(_) => {
                self.desynced = false;
                Ok(())
            }
            Status::Err(text) => Err(refused(text)),
            Status::Continue(_) => Err(unexpected_continuation(&self.line)),
        }
    }

    /// `STAT`: message count and mailbox size in octets.
    pub async fn stat(&mut self) -> ProbeResult<(u32, u64)> {
        let text = self.single(b"STAT\r\n").await?;
        parse_stat(&text)
    }

    /// `UIDL` for all messages: (message number, unique id).
    pub async fn uidl(&mut self) -> ProbeResult<Vec<(u32, String)>> {
        self.multi(b"UIDL\r\n").await?;
        let mut out = Vec::new();
        self.read_listing(STATUS_LINE_MAX, MAX_LISTING, "UIDL", |line| {
            out.push(parse_uidl_line(line)?);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// `LIST` for all messages: (message number, size in octets).
    pub async fn list(&mut self) -> ProbeResult<Vec<(u32, u64)>> {
        self.multi(b"LIST\r\n").await?;
        let mut out = Vec::new();
        self.read_listing(STATUS_LINE_MAX, MAX_LISTING, "LIST", |line| {
            out.push(parse_list_line(line)?);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// `TOP msg 0`: the header block as the server sends it (unstuffed lines
    /// with their line ends, including the empty line that ends the headers).
    /// More than `max_bytes` is an error; nothing past the cap is buffered.
    pub async fn top_headers(&mut self, msg: u32, max_bytes: usize) -> ProbeResult<Vec<u8>> {
        self.multi(format!("TOP {msg} 0\r\n").as_bytes()).await?;
        let mut out = Vec::new();
        // Each line holds at least its LF, so the byte cap bounds the iterations.
        loop {
            let max_line = BODY_LINE_MAX.min(max_bytes.saturating_sub(out.len()).saturating_add(3));
            if let Err(e) = self.read_line(max_line).await {
                return Err(
                    if e.kind() == ErrorKind::Protocol && max_line < BODY_LINE_MAX {
                        protocol(format!(
                            "the headers of message {msg} exceed {max_bytes} bytes"
                        ))
                    } else {
                        e
                    },
                );
            }
            let Some(data) = unstuff(&self.line) else {
                self.desynced = false;
                return Ok(out);
            };
            if out.len() + data.len() > max_bytes {
                return Err(protocol(format!(
                    "the headers of message {msg} exceed {max_bytes} bytes"
                )));
            }
            out.extend_from_slice(data);
        }
    }

    /// `RETR msg`, streamed: each dot-unstuffed line (with its line end) goes to
    /// `sink` as it arrives. Returns the number of bytes delivered. More than
    /// `max_bytes` stops the transfer with [`ErrorKind::Protocol`]; a hang-up
    /// is [`ErrorKind::Closed`], a stall [`ErrorKind::Timeout`].
    ///
    /// The sink is `Send` so that the future can run on a multi-threaded
    /// runtime (`tokio::spawn`); any closure over `Send` state coerces to it.
    pub async fn retr(
        &mut self,
        msg: u32,
        max_bytes: u64,
        sink: &mut (dyn FnMut(&[u8]) + Send),
    ) -> ProbeResult<u64> {
        self.multi(format!("RETR {msg}\r\n").as_bytes()).await?;
        let idle = self.idle_timeout();
        let mut total: u64 = 0;
        // Set when the message outgrew max_bytes: that error is not a broken transfer.
        let too_big = std::sync::atomic::AtomicBool::new(false);
        let mut deliver = |data: &[u8]| {
            let len = data.len() as u64;
            if total.saturating_add(len) > max_bytes {
                too_big.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(protocol(format!(
                    "message {msg} is longer than the {max_bytes} bytes allowed \
                     (the server sent more than announced or never ended it)"
                )));
            }
            total += len;
            sink(data);
            Ok(())
        };
        // Whole buffered chunks at a time, not a read per line. Each chunk holds
        // at least one byte, so max_bytes (and the line bound) bound the iterations.
        self.line.clear();
        loop {
            let available = match self.reader.fill_buf().await {
                Ok([]) => Err(ProbeError::closed()),
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(read_failure(ProbeError::io(&e), idle)),
            };
            let chunk = available.and_then(|bytes| body_lines(bytes, &mut self.line, &mut deliver));
            match chunk {
                Ok(Lines::More(used)) => self.reader.consume(used),
                Ok(Lines::Ended(used)) => {
                    self.reader.consume(used);
                    self.desynced = false;
                    return Ok(total);
                }
                Err(e) if too_big.load(std::sync::atomic::Ordering::Relaxed) => return Err(e),
                Err(e) => return Err(mid_transfer(e, msg, total)),
            }
        }
    }

    /// `DELE msg` (committed by [`Pop3Client::quit`]).
    pub async fn dele(&mut self, msg: u32) -> ProbeResult<()> {
        self.single(format!("DELE {msg}\r\n").as_bytes()).await?;
        Ok(())
    }

    /// `QUIT`: commits deletions. `-ERR` is [`ErrorKind::Rejected`] (the
    /// deletions were not committed); no answer is [`ErrorKind::Closed`].
    pub async fn quit(mut self) -> ProbeResult<()> {
        match self.exchange(b"QUIT\r\n").await {
            Ok(Status::Ok(_)) => {}
            Ok(Status::Err(text)) => {
                let mut err = negative(text);
                err.message = format!("QUIT refused, deletions not committed: {}", err.message);
                return Err(err);
            }
            Ok(Status::Continue(_)) => return Err(unexpected_continuation(&self.line)),
            Err(mut e) => {
                if e.kind() == ErrorKind::Closed {
                    e.message = "the server closed the connection without answering QUIT \
                                 (deletions may not be committed)"
                        .into();
                }
                return Err(e);
            }
        }
        // Best effort: the session is over either way.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.reader.get_mut().shutdown()).await;
        Ok(())
    }

    // ---- plumbing ----

    async fn write(&mut self, bytes: &[u8]) -> ProbeResult<()> {
        let limit = self.idle_timeout();
        match tokio::time::timeout(limit, write_all_flush(self.reader.get_mut(), bytes)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::timeout(limit)),
        }
    }

    async fn read_line(&mut self, max: usize) -> ProbeResult<()> {
        let result = read_line_bounded(&mut self.reader, &mut self.line, max).await;
        result.map_err(|e| read_failure(e, self.idle_timeout()))
    }

    /// Send a command and read its status line. `-ERR` ends the response;
    /// after `+OK` the caller reads the rest and clears `desynced`.
    async fn exchange(&mut self, cmd: &[u8]) -> ProbeResult<Status> {
        if self.desynced {
            return Err(protocol(
                "the POP3 session is out of step after an earlier failure mid-response".into(),
            ));
        }
        self.desynced = true;
        self.write(cmd).await?;
        self.read_line(STATUS_LINE_MAX).await?;
        let status = parse_status_line(&self.line)?;
        if matches!(status, Status::Err(_)) {
            self.desynced = false;
        }
        Ok(status)
    }

    /// A command with a single-line answer: the `+OK` text, or Rejected.
    async fn single(&mut self, cmd: &[u8]) -> ProbeResult<String> {
        match self.exchange(cmd).await? {
            Status::Ok(text) => {
                self.desynced = false;
                Ok(text)
            }
            Status::Err(text) => Err(negative(text)),
            Status::Continue(_) => Err(unexpected_continuation(&self.line)),
        }
    }

    /// A command with a multi-line answer: `+OK`, or Rejected.
    async fn multi(&mut self, cmd: &[u8]) -> ProbeResult<()> {
        match self.exchange(cmd).await? {
            Status::Ok(_) => Ok(()),
            Status::Err(text) => Err(negative(text)),
            Status::Continue(_) => Err(unexpected_continuation(&self.line)),
        }
    }

    /// Read a dot-terminated listing, handing each unstuffed line (without its
    /// line end) to `each`; at most `max_entries` lines.
    async fn read_listing(
        &mut self,
        max_line: usize,
        max_entries: usize,
        what: &str,
        mut each: impl FnMut(&[u8]) -> ProbeResult<()>,
    ) -> ProbeResult<()> {
        for _ in 0..=max_entries {
            self.read_line(max_line).await?;
            match unstuff(&self.line) {
                None => {
                    self.desynced = false;
                    return Ok(());
                }
                Some(line) => each(trim_eol(line))?,
            }
        }
        Err(protocol(format!(
            "the {what} answer has more than {max_entries} lines"
        )))
    }
}

/// The base64 SASL PLAIN initial response: `\0user\0password`.
fn plain_blob(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    let blob = base64::engine::general_purpose::STANDARD.encode(&raw);
    raw.fill(0);
    blob
}

/// A login refusal with the server's text.
fn refused(text: String) -> ProbeError {
    let kind = refusal_kind(&text);
    let mut err = negative(text).with_kind(kind);
    err.message = format!("login refused: {}", err.message);
    err
}

/// Remove every secret from an error's message and reply text (a server may
/// echo what it was sent).
fn redact(mut err: ProbeError, secrets: &[&str]) -> ProbeError {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        let escaped: String = secret.escape_debug().collect();
        for form in [*secret, escaped.as_str()] {
            err.message = err.message.replace(form, "<redacted>");
            if let Some(reply) = &mut err.reply {
                reply.text = reply.text.replace(form, "<redacted>");
            }
        }
    }
    err
}

/// How far one buffered chunk of a multi-line answer went.
#[derive(Debug, PartialEq, Eq)]
enum Lines {
    /// All of these bytes were used; the answer goes on.
    More(usize),
    /// The answer ended (its "." line) after these bytes; the rest is not ours.
    Ended(usize),
}

/// Hand the lines of `chunk`, unstuffed, to `deliver`, continuing the line an
/// earlier chunk ended in (kept in `partial`) and keeping the unfinished last one
/// there. Lines are bounded by [`BODY_LINE_MAX`].
fn body_lines(
    chunk: &[u8],
    partial: &mut Vec<u8>,
    deliver: &mut dyn FnMut(&[u8]) -> ProbeResult<()>,
) -> ProbeResult<Lines> {
    let too_long = || {
        ProbeError::protocol_violation(format!(
            "the server sent a line longer than {BODY_LINE_MAX} bytes"
        ))
    };
    let mut one = |line: &[u8]| -> ProbeResult<bool> {
        if line.len() > BODY_LINE_MAX {
            return Err(too_long());
        }
        match unstuff(line) {
            Some(data) => deliver(data).map(|()| false),
            None => Ok(true),
        }
    };
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', chunk).map(|at| at + 1) {
        let ended = if partial.is_empty() {
            one(&chunk[start..end])?
        } else {
            partial.extend_from_slice(&chunk[start..end]);
            let ended = one(partial)?;
            partial.clear();
            ended
        };
        start = end;
        if ended {
            return Ok(Lines::Ended(end));
        }
    }
    if partial.len() + (chunk.len() - start) > BODY_LINE_MAX {
        return Err(too_long());
    }
    partial.extend_from_slice(&chunk[start..]);
    Ok(Lines::More(chunk.len()))
}

/// A failed read, a stalled one named by the idle limit it exceeded.
fn read_failure(err: ProbeError, idle: Duration) -> ProbeError {
    if err.kind() == ErrorKind::Timeout {
        ProbeError::timeout(idle)
    } else {
        err
    }
}

/// Say that a failure happened mid-transfer, and how far it got.
fn mid_transfer(mut err: ProbeError, msg: u32, delivered: u64) -> ProbeError {
    let context = format!("mid-transfer of message {msg} after {delivered} bytes");
    err.message = match err.kind() {
        ErrorKind::Closed => format!("the server closed the connection {context}"),
        _ => format!("{} ({context})", err.message),
    };
    err
}

#[cfg(test)]
mod tests;
