//! `--transcript FILE`: what was said in every session, recorded above TLS.
//!
//! [`record`] wraps the plaintext stream a prober speaks over (the TCP stream, or
//! the TLS stream after an implicit-TLS handshake); after STARTTLS the recorder
//! below TLS falls silent on the server's positive answer and [`resume`] wraps the
//! new TLS stream for the same session. Each line is `C:` (client) or `S:`
//! (server) with the time since the run started, the protocol and session, and
//! the message the protocol was busy with.
//!
//! Nothing secret is recorded: the arguments of AUTH, AUTHENTICATE, LOGIN, USER,
//! PASS and APOP and every client line of a SASL exchange become `<redacted>`, and
//! every form of a configured password is scrubbed from both directions (a server
//! may echo it). Message bodies (SMTP DATA, POP3 RETR/TOP, IMAP literals) are
//! summarized as a byte count. Memory is bounded: each session keeps at most
//! [`SESSION_CAP`] bytes of transcript, the run at most [`TOTAL_CAP`], and a line
//! at most [`LINE_CAP`] bytes.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::core::phase::Protocol;
use crate::core::secret::{REDACTED, scrub};
use crate::io::net::BoxStream;

/// Transcript bytes kept per session.
pub(crate) const SESSION_CAP: usize = 256 * 1024;
/// Transcript bytes kept for the whole run.
pub(crate) const TOTAL_CAP: usize = 16 * 1024 * 1024;
/// Bytes of one line kept (the rest is counted).
pub(crate) const LINE_CAP: usize = 512;

/// The transcript of one run, shared by every session.
pub(crate) struct Transcript {
    started: Instant,
    started_wall: SystemTime,
    secrets: Vec<String>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: Vec<Arc<Mutex<Session>>>,
    /// The message each protocol is busy with (by protocol index).
    current: [Option<usize>; 3],
    total: usize,
}

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcript").finish_non_exhaustive()
    }
}

fn slot(p: Protocol) -> usize {
    match p {
        Protocol::Smtp => 0,
        Protocol::Imap => 1,
        Protocol::Pop3 => 2,
    }
}

impl Transcript {
    /// A transcript that scrubs `secrets` (every form of the run's passwords, see [`crate::core::secret::secret_forms`]).
    pub(crate) fn new(secrets: Vec<String>) -> Arc<Self> {
        Arc::new(Transcript {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            secrets,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Say which message `protocol` is busy with (None: none in particular).
    pub(crate) fn set_message(&self, protocol: Protocol, index: Option<usize>) {
        self.lock().current[slot(protocol)] = index;
    }

    fn start(self: &Arc<Self>, protocol: Protocol, peer: &str) -> Arc<Mutex<Session>> {
        let mut inner = self.lock();
        let session = Arc::new(Mutex::new(Session {
            transcript: Arc::clone(self),
            protocol,
            number: inner.sessions.len() + 1,
            peer: peer.to_string(),
            started_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            lines: Vec::new(),
            bytes: 0,
            dropped: 0,
            client: Side::default(),
            server: Side::default(),
            auth: false,
            starttls_asked: false,
            data_asked: false,
            body_asked: false,
            passthrough: false,
            generation: 0,
        }));
        inner.sessions.push(Arc::clone(&session));
        session
    }

    /// The whole transcript as text.
    pub(crate) fn render(&self) -> Vec<u8> {
        let sessions: Vec<Arc<Mutex<Session>>> = self.lock().sessions.clone();
        let mut out = format!(
            "# mailprobe transcript, run started {}\n\
             # +SECONDS PROTOCOL#SESSION mMESSAGE C: client / S: server; secrets <redacted>, bodies summarized\n",
            crate::core::time::rfc3339(self.started_wall)
        );
        for s in sessions {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.flush_partial();
            out.push_str(&format!(
                "\n== {} session {} with {} (started +{:.3}s) ==\n",
                s.protocol.label(),
                s.number,
                s.peer,
                s.started_ms / 1000.0
            ));
            for l in &s.lines {
                out.push_str(l);
                out.push('\n');
            }
            if s.dropped > 0 {
                out.push_str(&format!(
                    "... {} more line(s) not kept (transcript cap of {} bytes per session, {} per run)\n",
                    s.dropped, SESSION_CAP, TOTAL_CAP
                ));
            }
        }
        out.into_bytes()
    }
}

/// Line assembly for one direction.
#[derive(Default)]
struct Side {
    /// The start of the line being received (at most [`LINE_CAP`] bytes).
    partial: Vec<u8>,
    /// Its full length so far.
    partial_len: u64,
    /// Bytes of an IMAP literal still to come.
    literal_left: u64,
    literal_len: u64,
    /// Inside a dot-terminated body (SMTP DATA, POP3 RETR/TOP): bytes and lines so far.
    body: Option<(u64, u64, Option<String>)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Client,
    Server,
}

struct Session {
    transcript: Arc<Transcript>,
    protocol: Protocol,
    number: usize,
    peer: String,
    started_ms: f64,
    lines: Vec<String>,
    bytes: usize,
    dropped: usize,
    client: Side,
    server: Side,
    /// Inside an authentication exchange: client lines are redacted.
    auth: bool,
    starttls_asked: bool,
    data_asked: bool,
    body_asked: bool,
    /// STARTTLS accepted: what passes below TLS is not recorded.
    passthrough: bool,
    /// Bumped when the session goes on over TLS: only the recorder of the current
    /// generation records (the one below TLS then sees ciphertext).
    generation: u32,
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `{123}` or `{123+}` at the end of an IMAP line.
fn literal_len(line: &[u8]) -> Option<u64> {
    let inner = trim_eol(line).strip_suffix(b"}")?;
    let start = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[start + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The probe id header of a body line, if it is one.
fn probe_id_of(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(trim_eol(line)).ok()?;
    let (name, value) = text.split_once(':')?;
    name.eq_ignore_ascii_case(crate::core::probe_id::PROBE_HEADER)
        .then(|| value.trim().chars().take(100).collect())
}

impl Session {
    fn side(&mut self, dir: Dir) -> &mut Side {
        match dir {
            Dir::Client => &mut self.client,
            Dir::Server => &mut self.server,
        }
    }

    fn push(&mut self, dir: Dir, text: &str) {
        let message = self.transcript.lock().current[slot(self.protocol)];
        let clean = scrub(text, &self.transcript.secrets);
        let line = format!(
            "+{:.3}s {}#{} m{} {}: {}",
            self.transcript.started.elapsed().as_secs_f64(),
            self.protocol.as_str(),
            self.number,
            message.map_or("-".to_string(), |m| m.to_string()),
            if dir == Dir::Client { "C" } else { "S" },
            clean
        );
        let mut inner = self.transcript.lock();
        if self.bytes + line.len() > SESSION_CAP || inner.total + line.len() > TOTAL_CAP {
            self.dropped += 1;
            return;
        }
        self.bytes += line.len();
        inner.total += line.len();
        drop(inner);
        self.lines.push(line);
    }

    fn feed(&mut self, dir: Dir, mut data: &[u8]) {
        while !data.is_empty() && !self.passthrough {
            let side = self.side(dir);
            if side.literal_left > 0 {
                let n = (data.len() as u64).min(side.literal_left);
                side.literal_left -= n;
                data = &data[n as usize..];
                if side.literal_left == 0 {
                    let len = side.literal_len;
                    self.push(dir, &format!("<literal: {len} bytes>"));
                }
                continue;
            }
            let (take, complete) = match data.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (data.len(), false),
            };
            let room = LINE_CAP.saturating_sub(side.partial.len());
            side.partial.extend_from_slice(&data[..take.min(room)]);
            side.partial_len += take as u64;
            data = &data[take..];
            if complete {
                let line = std::mem::take(&mut side.partial);
                let len = std::mem::take(&mut side.partial_len);
                self.line(dir, &line, len);
            }
        }
    }

    /// Show a line as text: lossy UTF-8, control characters escaped, capped.
    fn show(line: &[u8], len: u64) -> String {
        let body = trim_eol(line);
        let mut text: String = String::from_utf8_lossy(body)
            .chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect();
        if len > line.len() as u64 {
            text.push_str(&format!("... ({len} bytes)"));
        }
        text
    }

    fn redact_client(&mut self, line: &[u8], len: u64) -> String {
        let shown = Self::show(line, len);
        if self.auth {
            return REDACTED.to_string();
        }
        let words: Vec<&str> = shown.split_whitespace().collect();
        let verb_at = usize::from(self.protocol == Protocol::Imap);
        let verb = words
            .get(verb_at)
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        let keep = match verb.as_str() {
            // The mechanism stays visible, its credentials do not.
            "AUTH" | "AUTHENTICATE" => verb_at + 2,
            "LOGIN" | "USER" | "PASS" | "APOP" => verb_at + 1,
            _ => return shown,
        };
        self.auth = true;
        let mut out = words[..keep.min(words.len())].join(" ");
        if words.len() > keep {
            out.push(' ');
            out.push_str(REDACTED);
        }
        out
    }

    fn is_continuation(&self, line: &[u8]) -> bool {
        let line = trim_eol(line);
        match self.protocol {
            Protocol::Smtp => line.starts_with(b"334"),
            _ => line == b"+" || line.starts_with(b"+ "),
        }
    }

    /// Whether a server line is a final positive answer to the last command.
    fn final_answer(&self, line: &[u8]) -> Option<bool> {
        let line = trim_eol(line);
        match self.protocol {
            Protocol::Smtp => {
                (line.len() >= 3 && line.get(3) != Some(&b'-')).then(|| line.starts_with(b"2"))
            }
            Protocol::Imap => {
                let mut w = line.split(|&b| b == b' ');
                let tag = w.next()?;
                if tag == b"*" || tag == b"+" {
                    return None;
                }
                Some(w.next().is_some_and(|s| s.eq_ignore_ascii_case(b"OK")))
            }
            Protocol::Pop3 => Some(line.len() >= 3 && line[..3].eq_ignore_ascii_case(b"+OK")),
        }
    }

    fn line(&mut self, dir: Dir, line: &[u8], len: u64) {
        // Inside a dot-terminated body: count, keep the probe id, summarize at the end.
        if let Some((bytes, lines, id)) = &mut self.side(dir).body {
            if trim_eol(line) == b"." {
                let summary = format!(
                    "<body: {bytes} bytes, {lines} lines{}>",
                    id.as_ref()
                        .map(|i| format!(", {}: {i}", crate::core::probe_id::PROBE_HEADER))
                        .unwrap_or_default()
                );
                self.side(dir).body = None;
                self.push(dir, &summary);
                self.push(dir, ".");
            } else {
                *bytes += len;
                *lines += 1;
                if id.is_none() {
                    *id = probe_id_of(line);
                }
            }
            return;
        }
        match dir {
            Dir::Client => {
                let shown = self.redact_client(line, len);
                let verb_at = usize::from(self.protocol == Protocol::Imap);
                let verb = shown
                    .split_whitespace()
                    .nth(verb_at)
                    .map(|w| w.to_ascii_uppercase())
                    .unwrap_or_default();
                match verb.as_str() {
                    "STARTTLS" | "STLS" => self.starttls_asked = true,
                    "DATA" if self.protocol == Protocol::Smtp => self.data_asked = true,
                    "RETR" | "TOP" if self.protocol == Protocol::Pop3 => self.body_asked = true,
                    _ => {}
                }
                self.push(dir, &shown);
            }
            Dir::Server => {
                let shown = Self::show(line, len);
                self.push(dir, &shown);
                if self.auth && !self.is_continuation(line) {
                    self.auth = false;
                }
                if self.protocol == Protocol::Imap
                    && let Some(n) = literal_len(line)
                {
                    self.server.literal_left = n;
                    self.server.literal_len = n;
                }
                if self.data_asked {
                    self.data_asked = false;
                    if trim_eol(line).starts_with(b"354") {
                        self.client.body = Some((0, 0, None));
                    }
                }
                if self.body_asked {
                    self.body_asked = false;
                    if self.final_answer(line) == Some(true) {
                        self.server.body = Some((0, 0, None));
                    }
                }
                if self.starttls_asked
                    && let Some(ok) = self.final_answer(line)
                {
                    self.starttls_asked = false;
                    if ok {
                        self.push(
                            dir,
                            "<TLS handshake: not recorded; the session goes on encrypted>",
                        );
                        self.passthrough = true;
                    }
                }
            }
        }
    }

    fn flush_partial(&mut self) {
        for dir in [Dir::Client, Dir::Server] {
            let side = self.side(dir);
            if side.partial_len > 0 {
                let line = std::mem::take(&mut side.partial);
                let len = std::mem::take(&mut side.partial_len);
                let shown = Self::show(&line, len);
                self.push(dir, &format!("{shown} <connection ended mid-line>"));
            }
            let side = self.side(dir);
            if side.literal_left > 0 {
                let (got, of) = (side.literal_len - side.literal_left, side.literal_len);
                side.literal_left = 0;
                self.push(
                    dir,
                    &format!("<literal: {got} of {of} bytes, then the connection ended>"),
                );
            }
            if let Some((bytes, lines, _)) = self.side(dir).body.take() {
                self.push(
                    dir,
                    &format!("<body: {bytes} bytes, {lines} lines, unfinished>"),
                );
            }
        }
    }
}

/// A stream that records what passes through it into a session.
pub(crate) struct Recorder<S> {
    inner: S,
    session: Arc<Mutex<Session>>,
    generation: u32,
}

impl<S: fmt::Debug> fmt::Debug for Recorder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S> Recorder<S> {
    /// The session, if this recorder is the one that records it now.
    fn session(&self) -> Option<std::sync::MutexGuard<'_, Session>> {
        let s = self.session.lock().unwrap_or_else(|e| e.into_inner());
        (s.generation == self.generation && !s.passthrough).then_some(s)
    }
}

impl<S> Recorder<S> {
    /// Record as sent the part of `bufs` that a write took.
    fn record_written<'b>(
        &self,
        poll: &Poll<io::Result<usize>>,
        bufs: impl IntoIterator<Item = &'b [u8]>,
    ) {
        let Poll::Ready(Ok(mut left)) = *poll else {
            return;
        };
        let Some(mut s) = self.session() else {
            return;
        };
        for buf in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(buf.len());
            s.feed(Dir::Client, &buf[..take]);
            left -= take;
        }
    }
}

impl<S> Drop for Recorder<S> {
    fn drop(&mut self) {
        if let Some(mut s) = self.session() {
            s.flush_partial();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty()
                && let Some(mut s) = self.session()
            {
                s.feed(Dir::Server, fresh);
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record_written(&poll, [buf]);
        poll
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record_written(&poll, bufs.iter().map(|b| &**b));
        poll
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    crate::io::net::delegate_write!(flush_shutdown);
}

/// Start recording a new session over `stream` (a no-op without a transcript).
pub(crate) fn record(
    transcript: Option<&Arc<Transcript>>,
    protocol: Protocol,
    peer: &str,
    stream: BoxStream,
) -> BoxStream {
    match transcript {
        None => stream,
        Some(t) => Box::new(Recorder {
            inner: stream,
            session: t.start(protocol, peer),
            generation: 0,
        }),
    }
}

/// Go on recording a session over the TLS stream its STARTTLS led to.
pub(crate) fn resume(
    transcript: Option<&Arc<Transcript>>,
    protocol: Protocol,
    stream: BoxStream,
) -> BoxStream {
    let Some(t) = transcript else { return stream };
    // Never hold the transcript lock while locking a session (sessions lock it in `push`).
    let sessions: Vec<Arc<Mutex<Session>>> = t.lock().sessions.clone();
    let waiting = sessions.into_iter().rev().find(|s| {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        s.protocol == protocol && s.passthrough
    });
    let (session, generation) = match waiting {
        Some(s) => {
            let generation = {
                let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
                g.passthrough = false;
                g.generation += 1;
                // The session under TLS starts afresh.
                g.client = Side::default();
                g.server = Side::default();
                g.auth = false;
                g.push(Dir::Server, "<TLS established>");
                g.generation
            };
            (s, generation)
        }
        None => (t.start(protocol, "(after STARTTLS)"), 0),
    };
    Box::new(Recorder {
        inner: stream,
        session,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Record a conversation: each client chunk, then the server's answer to it.
    async fn converse(
        protocol: Protocol,
        secrets: Vec<String>,
        turns: &[(&[u8], &[u8])],
    ) -> String {
        let t = Transcript::new(secrets);
        t.set_message(protocol, Some(3));
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut s = record(Some(&t), protocol, "test:1", Box::new(near));
        for (client, server) in turns {
            s.write_all(client).await.unwrap();
            far.write_all(server).await.unwrap();
            let mut answer = vec![0u8; server.len()];
            s.read_exact(&mut answer).await.unwrap();
        }
        drop(far);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        drop(s);
        String::from_utf8(t.render()).unwrap()
    }

    #[tokio::test]
    async fn smtp_auth_and_data_are_redacted_and_summarized() {
        let secrets = crate::core::secret::secret_forms("u", "hunter22");
        let text = converse(
            Protocol::Smtp,
            secrets,
            &[
                (b"EHLO me\r\n", b"250 ok\r\n"),
                (b"AUTH PLAIN AHUAaHVudGVyMjI=\r\n", b"535 5.7.8 no\r\n"),
                (b"AUTH LOGIN\r\n", b"334 VXNlcm5hbWU6\r\n"),
                (b"dQ==\r\n", b"334 UGFzc3dvcmQ6\r\n"),
                (b"aHVudGVyMjI=\r\n", b"535 5.7.8 bad password hunter22\r\n"),
                (b"DATA\r\n", b"354 go\r\n"),
                (
                    b"X-Mailprobe-Id: mailprobe-1\r\nSubject: hi\r\n\r\nbody\r\n.\r\n",
                    b"250 queued\r\n",
                ),
            ],
        )
        .await;
        assert!(!text.contains("hunter22"), "{text}");
        assert!(!text.contains("aHVudGVyMjI="), "{text}");
        assert!(text.contains("C: AUTH PLAIN <redacted>"), "{text}");
        assert!(text.contains("C: AUTH LOGIN"), "{text}");
        assert!(text.contains("smtp#1 m3 C: <redacted>"), "{text}");
        assert!(text.contains("<body: "), "{text}");
        assert!(text.contains("X-Mailprobe-Id: mailprobe-1>"), "{text}");
        assert!(!text.contains("Subject: hi"), "{text}");
    }

    #[tokio::test]
    async fn imap_login_literals_and_pop3_pass() {
        let text = converse(
            Protocol::Imap,
            Vec::new(),
            &[
                (b"a1 LOGIN \"u\" {6}\r\n", b"+ go\r\n"),
                (b"Pa55wd\r\n", b"a1 OK in\r\n"),
                (
                    b"a2 UID FETCH 1 (BODY.PEEK[])\r\n",
                    b"* 1 FETCH (BODY[] {12}\r\nline1\r\nline2)\r\na2 OK done\r\n",
                ),
            ],
        )
        .await;
        assert!(!text.contains("Pa55wd"), "{text}");
        assert!(text.contains("C: a1 LOGIN <redacted>"), "{text}");
        assert!(text.contains("<literal: 12 bytes>"), "{text}");
        assert!(!text.contains("line1"), "{text}");
        assert!(text.contains("S: a2 OK done"), "{text}");

        let text = converse(
            Protocol::Pop3,
            Vec::new(),
            &[
                (b"USER bob\r\n", b"+OK\r\n"),
                (b"PASS Pa55wd\r\n", b"+OK\r\n"),
                (
                    b"RETR 1\r\n",
                    b"+OK 10 octets\r\nX-Mailprobe-Id: x\r\n..dot\r\n.\r\n",
                ),
            ],
        )
        .await;
        assert!(!text.contains("Pa55wd") && !text.contains("bob"), "{text}");
        assert!(
            text.contains("C: USER <redacted>") && text.contains("C: PASS <redacted>"),
            "{text}"
        );
        assert!(text.contains("<body: "), "{text}");
    }

    #[tokio::test]
    async fn vectored_writes_are_recorded_as_far_as_they_went() {
        let t = Transcript::new(Vec::new());
        let (near, mut far) = tokio::io::duplex(1024);
        let mut s = record(Some(&t), Protocol::Smtp, "test:1", Box::new(near));
        let whole = b"EHLO me\r\nQUIT\r\n";
        let parts = [
            io::IoSlice::new(&whole[..5]),
            io::IoSlice::new(&whole[5..9]),
            io::IoSlice::new(&whole[9..]),
        ];
        // The pipe may take only part of it: the rest goes the ordinary way.
        let n = s.write_vectored(&parts).await.unwrap();
        s.write_all(&whole[n..]).await.unwrap();
        let mut arrived = vec![0u8; whole.len()];
        far.read_exact(&mut arrived).await.unwrap();
        assert_eq!(&arrived, whole);
        drop(s);
        let text = String::from_utf8(t.render()).unwrap();
        assert!(text.contains("C: EHLO me\n"), "{text}");
        assert_eq!(text.matches("C: QUIT").count(), 1, "{text}");
        assert_eq!(text.matches("EHLO").count(), 1, "{text}");
    }

    #[tokio::test]
    async fn starttls_stops_recording_below_tls() {
        let text = converse(
            Protocol::Pop3,
            Vec::new(),
            &[(
                b"STLS\r\n",
                b"+OK begin\r\n\x16\x03\x01binary handshake\r\n",
            )],
        )
        .await;
        assert!(text.contains("<TLS handshake: not recorded"), "{text}");
        assert!(!text.contains("binary handshake"), "{text}");
    }

    #[tokio::test]
    async fn endless_lines_are_capped() {
        let line = vec![b'A'; 1 << 20];
        let text = converse(Protocol::Smtp, Vec::new(), &[(b"", &line)]).await;
        assert!(text.len() < 4096, "{}", text.len());
        assert!(
            text.contains("(1048576 bytes) <connection ended mid-line>"),
            "{text}"
        );
    }
}
