//! Small scripted servers on 127.0.0.1:0 that misbehave on purpose: no real
//! server does these things deliberately, so they are fakes.
//!
//! Every fake stops when dropped; every connection runs on its own thread with
//! read and write timeouts and a hard deadline, so a fake never outlives its test
//! by more than a few seconds and never sends without bound.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any one fake connection may live.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(40);
/// The most any fake sends on one connection (the "endless" streams).
pub const MAX_FLOOD: u64 = 600 << 20;

/// One accepted connection with line helpers.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub deadline: Instant,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_nodelay(true);
        let writer = stream.try_clone().expect("clone a TCP stream");
        Conn {
            reader: BufReader::new(stream),
            writer,
            deadline: Instant::now() + CONNECTION_LIFETIME,
        }
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Send text; false when the peer is gone.
    pub fn send(&mut self, text: &str) -> bool {
        self.send_bytes(text.as_bytes())
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.writer
            .write_all(bytes)
            .and_then(|_| self.writer.flush())
            .is_ok()
    }

    /// One line (without CRLF), at most 64 KiB; None at EOF, error or deadline.
    pub fn line(&mut self) -> Option<String> {
        if self.expired() {
            return None;
        }
        let mut buf = Vec::new();
        let n = (&mut self.reader)
            .take(64 * 1024)
            .read_until(b'\n', &mut buf)
            .ok()?;
        if n == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&buf);
        Some(text.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Read exactly `n` bytes (an IMAP literal); false on failure.
    pub fn skip(&mut self, n: usize) -> bool {
        let mut buf = vec![0u8; n.min(1 << 20)];
        let mut left = n;
        while left > 0 {
            let want = left.min(buf.len());
            if self.reader.read_exact(&mut buf[..want]).is_err() {
                return false;
            }
            left -= want;
        }
        true
    }

    /// Read lines until one equals `end` (e.g. "." after DATA); false on failure.
    pub fn read_until_line(&mut self, end: &str) -> bool {
        for _ in 0..10_000_000 {
            match self.line() {
                Some(l) if l == end => return true,
                Some(_) => {}
                None => return false,
            }
        }
        false
    }

    /// Stop reading and let the connection be dropped (the caller returns right
    /// after): with client data still unread the kernel answers with a TCP reset,
    /// otherwise the client sees the connection close mid-answer.
    pub fn reset(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        let _ = self.writer.flush();
    }

    /// Half-close politely (FIN).
    pub fn close(self) {
        let _ = self.writer.shutdown(Shutdown::Both);
    }

    /// Send `head`, then up to [`MAX_FLOOD`] bytes of `fill` in chunks until the
    /// peer stops reading (write timeout), goes away, or the deadline passes.
    /// Generated as it goes: never more than one chunk in memory.
    pub fn flood(&mut self, head: &[u8], fill: impl Fn(u64) -> Vec<u8>) {
        if !self.send_bytes(head) {
            return;
        }
        let _ = self.writer.set_write_timeout(Some(Duration::from_secs(2)));
        let mut sent = 0u64;
        let mut i = 0u64;
        while sent < MAX_FLOOD && !self.expired() {
            let chunk = fill(i);
            if self.writer.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len() as u64;
            i += 1;
        }
    }

    /// Send `text` one byte per second until done, the peer leaves, or the deadline.
    pub fn trickle(&mut self, text: &str) {
        for b in text.bytes() {
            if self.expired() || !self.send_bytes(&[b]) {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Hold the connection open without a word until the peer leaves or the deadline.
    pub fn silence(&mut self) {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 4096];
        while !self.expired() {
            match self.reader.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }
}

/// 64 KiB of `byte` (for lines without an end).
pub fn filler(byte: u8) -> impl Fn(u64) -> Vec<u8> {
    move |_| vec![byte; 64 * 1024]
}

/// 64 KiB of pseudo-random bytes (xorshift), different for each chunk.
pub fn garbage(i: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ i.wrapping_mul(0xA24B_AED4_963E_E407);
    (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A listening fake; every connection runs `script` on its own thread.
pub struct Fake {
    pub port: u16,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Fake {
    pub fn spawn<F>(script: F) -> Fake
    where
        F: Fn(Conn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(script);
        let stopping = Arc::clone(&stop);
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming().take(10_000) {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let script = Arc::clone(&script);
                std::thread::spawn(move || script(Conn::new(stream)));
            }
        });
        Fake {
            port,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag.
        let _ = TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().expect("address"),
            Duration::from_secs(1),
        );
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

// ------------------------------------------------------------ well-behaved parts

/// The SMTP dialogue up to (not including) the point where a case misbehaves.
pub mod smtp {
    use super::Conn;

    /// Greeting and EHLO with `extensions` (e.g. `["STARTTLS"]`); false if the peer left.
    pub fn hello(c: &mut Conn, extensions: &[&str]) -> bool {
        if !c.send("220 fake.test ESMTP\r\n") {
            return false;
        }
        match c.line() {
            Some(l) if l.to_ascii_uppercase().starts_with("EHLO") => {}
            _ => return false,
        }
        let mut reply = String::from("250-fake.test\r\n");
        for e in extensions {
            reply.push_str(&format!("250-{e}\r\n"));
        }
        reply.push_str("250 8BITMIME\r\n");
        c.send(&reply)
    }

    /// Answer commands well until DATA's 354 has been sent (including the second
    /// EHLO lettre sends); false if the peer left first.
    pub fn until_data(c: &mut Conn) -> bool {
        for _ in 0..100 {
            let Some(l) = c.line() else { return false };
            let upper = l.to_ascii_uppercase();
            let reply = if upper.starts_with("EHLO") {
                "250-fake.test\r\n250 8BITMIME\r\n"
            } else if upper.starts_with("DATA") {
                return c.send("354 go ahead\r\n");
            } else if upper.starts_with("QUIT") {
                c.send("221 bye\r\n");
                return false;
            } else {
                "250 ok\r\n"
            };
            if !c.send(reply) {
                return false;
            }
        }
        false
    }
}

/// A just-good-enough IMAP server (what async-imap and mailprobe send).
pub mod imap {
    use super::Conn;

    /// The tag and the command (upper-cased first words) of a client line.
    pub fn split(line: &str) -> (String, String, String) {
        let mut parts = line.splitn(2, ' ');
        let tag = parts.next().unwrap_or("").to_string();
        let rest = parts.next().unwrap_or("").to_string();
        (tag, rest.to_ascii_uppercase(), rest)
    }

    /// What the FETCH of the whole message should do instead of answering.
    pub type OnFetch = dyn Fn(&mut Conn, &str, &str) + Send + Sync;

    /// Serve greeting, LOGIN, CAPABILITY, SELECT, NOOP, SEARCH (the probe id is
    /// taken from the query) and the header FETCH; the body FETCH calls `on_fetch`
    /// with (conn, tag, probe id) and ends the connection.
    pub fn serve(c: &mut Conn, on_fetch: &OnFetch) {
        if !c.send("* OK [CAPABILITY IMAP4rev1 UIDPLUS] fake ready\r\n") {
            return;
        }
        let mut id = String::new();
        for _ in 0..1000 {
            let Some(line) = c.line() else { return };
            // A literal the client announces: accept it and read the rest.
            let mut line = line;
            for _ in 0..4 {
                if let Some(n) = literal_len(&line) {
                    if !c.send("+ go on\r\n") || !c.skip(n) {
                        return;
                    }
                    match c.line() {
                        Some(rest) => line = format!("{line}{rest}"),
                        None => return,
                    }
                } else {
                    break;
                }
            }
            let (tag, upper, rest) = split(&line);
            let ok = |what: &str| format!("{tag} OK {what} done\r\n");
            let reply = if upper.starts_with("LOGIN") || upper.starts_with("AUTHENTICATE") {
                format!("{tag} OK [CAPABILITY IMAP4rev1 UIDPLUS] logged in\r\n")
            } else if upper.starts_with("CAPABILITY") {
                format!("* CAPABILITY IMAP4rev1 UIDPLUS\r\n{}", ok("CAPABILITY"))
            } else if upper.starts_with("SELECT") || upper.starts_with("EXAMINE") {
                format!(
                    "* FLAGS (\\Deleted \\Seen)\r\n* 1 EXISTS\r\n* 0 RECENT\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 8] ok\r\n{tag} OK [READ-WRITE] SELECT done\r\n"
                )
            } else if upper.starts_with("UID SEARCH") && upper.contains("NOT HEADER") {
                // The one message here carries a probe id: a search that excludes
                // probe messages (the bounce scan) finds nothing, as on a real server.
                format!("* SEARCH\r\n{}", ok("SEARCH"))
            } else if upper.starts_with("UID SEARCH") {
                if let Some(q) = rest.split('"').nth(1) {
                    id = q.to_string();
                }
                format!("* SEARCH 7\r\n{}", ok("SEARCH"))
            } else if upper.starts_with("UID FETCH") && upper.contains("HEADER.FIELDS") {
                let header = format!("X-Mailprobe-Id: {id}\r\n\r\n");
                format!(
                    "* 1 FETCH (UID 7 BODY[HEADER.FIELDS (X-MAILPROBE-ID)] {{{}}}\r\n{header})\r\n{}",
                    header.len(),
                    ok("FETCH")
                )
            } else if upper.starts_with("UID FETCH") {
                on_fetch(c, &tag, &id);
                return;
            } else if upper.starts_with("LOGOUT") {
                c.send(&format!("* BYE bye\r\n{}", ok("LOGOUT")));
                return;
            } else {
                ok("command")
            };
            if !c.send(&reply) {
                return;
            }
        }
    }

    /// `{123}` or `{123+}` at the end of a line.
    pub fn literal_len(line: &str) -> Option<usize> {
        let inner = line.strip_suffix('}')?;
        let start = inner.rfind('{')?;
        inner[start + 1..].trim_end_matches('+').parse().ok()
    }
}

/// A just-good-enough POP3 server.
pub mod pop3 {
    use super::Conn;

    /// What RETR should do instead of answering: (conn, probe id).
    pub type OnRetr = dyn Fn(&mut Conn, &str) + Send + Sync;

    /// Serve greeting, CAPA, USER/PASS, STAT, UIDL, TOP (with the probe id that
    /// `probe_id()` finds, if any), DELE, QUIT; RETR calls `on_retr` and ends.
    pub fn serve(
        c: &mut Conn,
        probe_id: &dyn Fn() -> Option<String>,
        on_retr: &super::pop3::OnRetr,
    ) {
        if !c.send("+OK fake POP3 ready\r\n") {
            return;
        }
        let mut id: Option<String> = None;
        for _ in 0..1000 {
            let Some(line) = c.line() else { return };
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("CAPA") {
                "+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n".to_string()
            } else if upper.starts_with("STAT") {
                id = probe_id();
                format!("+OK {} 100\r\n", u8::from(id.is_some()))
            } else if upper.starts_with("UIDL") {
                match &id {
                    Some(i) => format!(
                        "+OK\r\n1 u-{}\r\n.\r\n",
                        i.replace(|c: char| !c.is_ascii_alphanumeric(), "")
                    ),
                    None => "+OK\r\n.\r\n".to_string(),
                }
            } else if upper.starts_with("TOP") {
                format!(
                    "+OK\r\nX-Mailprobe-Id: {}\r\nSubject: x\r\n\r\n.\r\n",
                    id.clone().unwrap_or_default()
                )
            } else if upper.starts_with("RETR") {
                on_retr(c, id.as_deref().unwrap_or(""));
                return;
            } else if upper.starts_with("QUIT") {
                c.send("+OK bye\r\n");
                return;
            } else {
                "+OK\r\n".to_string()
            };
            if !c.send(&reply) {
                return;
            }
        }
    }
}
