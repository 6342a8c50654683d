//! A read allowance for streams handed to a library that buffers whole responses
//! (async-imap keeps a FETCH literal, lettre a multi-line reply, in memory until
//! complete): a server that announces a 4 GB literal or never ends a reply gets an
//! error after the allowance instead of our memory.
//!
//! The allowance is set per step (e.g. before each FETCH, from the size of the
//! message expected); every byte read counts against it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The handle that sets how many more bytes the stream may read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Allowance {
    left: Arc<AtomicU64>,
    granted: Arc<AtomicU64>,
}

impl Allowance {
    /// From now on, at most `bytes` more may be read.
    pub(crate) fn grant(&self, bytes: u64) {
        self.granted.store(bytes, Ordering::Relaxed);
        self.left.store(bytes, Ordering::Relaxed);
    }
    pub(crate) fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }
}

/// Bytes read between two forced yields (see [`Budgeted`]).
pub(crate) const YIELD_EVERY: u64 = 16 * 1024;

/// A stream whose reads count against an [`Allowance`]. It also yields to the
/// runtime every [`YIELD_EVERY`] bytes: a library that re-parses its buffer after
/// every line while the server keeps sending never returns `Pending` by itself,
/// and the timeout around it could not fire.
///
/// For IMAP ([`Budgeted::imap`]) it also reads the literal announcements
/// (`{12345}` at a line end): async-imap reserves memory for an announced
/// literal before a byte of it arrives, so an announcement beyond the allowance
/// is refused before async-imap sees it.
pub(crate) struct Budgeted<S> {
    inner: S,
    allowance: Allowance,
    since_yield: u64,
    literals: Option<LiteralScan>,
}

/// Where an IMAP server stream is: inside a literal, or in a line (its tail kept).
#[derive(Debug, Default)]
struct LiteralScan {
    literal_left: u64,
    tail: Vec<u8>,
}

const TAIL: usize = 24;

impl LiteralScan {
    /// Follow `data`; the size of a literal announced beyond `allowed`, if one is.
    fn scan(&mut self, mut data: &[u8], allowed: u64) -> Option<u64> {
        while !data.is_empty() {
            if self.literal_left > 0 {
                let n = (data.len() as u64).min(self.literal_left);
                self.literal_left -= n;
                data = &data[n as usize..];
                continue;
            }
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push_tail(&data[..i]);
                    data = &data[i + 1..];
                    let announced = announced_literal(&self.tail);
                    self.tail.clear();
                    if let Some(n) = announced {
                        if n > allowed {
                            return Some(n);
                        }
                        self.literal_left = n;
                    }
                }
                None => {
                    self.push_tail(data);
                    data = &[];
                }
            }
        }
        None
    }
    fn push_tail(&mut self, bytes: &[u8]) {
        self.tail
            .extend_from_slice(&bytes[bytes.len().saturating_sub(TAIL)..]);
        let excess = self.tail.len().saturating_sub(TAIL);
        self.tail.drain(..excess);
    }
}

/// `{123}` or `{123+}` (then an optional CR) at the end of a line.
pub(crate) fn announced_literal(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let start = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[start + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Too many digits for u64 is certainly too large.
    Some(
        std::str::from_utf8(digits)
            .ok()?
            .parse()
            .unwrap_or(u64::MAX),
    )
}

impl<S> Budgeted<S> {
    /// Wrap `inner` with `bytes` allowed; the handle changes the allowance later.
    pub(crate) fn new(inner: S, bytes: u64) -> (Self, Allowance) {
        let allowance = Allowance::default();
        allowance.grant(bytes);
        (
            Budgeted {
                inner,
                allowance: allowance.clone(),
                since_yield: 0,
                literals: None,
            },
            allowance,
        )
    }

    /// The same for an IMAP server stream: literal announcements count too.
    pub(crate) fn imap(inner: S, bytes: u64) -> (Self, Allowance) {
        let (mut s, allowance) = Self::new(inner, bytes);
        s.literals = Some(LiteralScan::default());
        (s, allowance)
    }
}

impl<S: fmt::Debug> fmt::Debug for Budgeted<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budgeted")
            .field("inner", &self.inner)
            .field("left", &self.allowance.left())
            .finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Budgeted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.since_yield >= YIELD_EVERY {
            this.since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let got = (buf.filled().len() - before) as u64;
            this.since_yield += got;
            let left = this.allowance.left.load(Ordering::Relaxed);
            if got > left {
                this.allowance.left.store(0, Ordering::Relaxed);
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the server sent more than the {} bytes allowed for this step \
                         (an answer far larger than announced, or one that never ends)",
                        this.allowance.granted.load(Ordering::Relaxed)
                    ),
                )));
            }
            this.allowance.left.store(left - got, Ordering::Relaxed);
            if let Some(n) = this
                .literals
                .as_mut()
                .and_then(|scan| scan.scan(&buf.filled()[before..], left - got))
            {
                this.allowance.left.store(0, Ordering::Relaxed);
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the server announced a literal of {n} bytes, more than the {} bytes \
                         allowed for this step",
                        this.allowance.granted.load(Ordering::Relaxed)
                    ),
                )));
            }
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    crate::io::net::delegate_write!(all);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_past_the_allowance_fail() {
        let data = vec![b'x'; 10_000];
        let (mut s, allowance) = Budgeted::new(&data[..], 4096);
        let mut out = Vec::new();
        let err = s.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(out.len() <= 4096);
        allowance.grant(1 << 20);
        assert_eq!(allowance.left(), 1 << 20);
    }

    #[tokio::test]
    async fn imap_literal_announcements_count() {
        let data = b"* 1 FETCH (BODY[] {400000000}\r\nabc".to_vec();
        let (mut s, _) = Budgeted::imap(&data[..], 1 << 20);
        let mut out = Vec::new();
        let err = s.read_to_end(&mut out).await.unwrap_err();
        assert!(err.to_string().contains("400000000"), "{err}");
        // A literal within the allowance passes, and its content is not scanned.
        let data = b"* 1 FETCH (BODY[] {17}\r\n{99999999999999}\r\n)\r\na OK\r\n".to_vec();
        let (mut s, _) = Budgeted::imap(&data[..], 1 << 20);
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        assert_eq!(announced_literal(b"x {12+}\r"), Some(12));
        assert_eq!(announced_literal(b"x {}"), None);
        assert_eq!(announced_literal(b"x {1a}"), None);
    }

    #[tokio::test]
    async fn reads_within_the_allowance_pass() {
        let data = vec![b'x'; 1000];
        let (mut s, allowance) = Budgeted::new(&data[..], 1000);
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 1000);
        assert_eq!(allowance.left(), 0);
    }
}
