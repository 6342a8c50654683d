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
pub struct Allowance {
    left: Arc<AtomicU64>,
    granted: Arc<AtomicU64>,
}

impl Allowance {
    /// From now on, at most `bytes` more may be read.
    pub fn grant(&self, bytes: u64) {
        self.granted.store(bytes, Ordering::Relaxed);
        self.left.store(bytes, Ordering::Relaxed);
    }
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }
}

/// A stream whose reads count against an [`Allowance`].
pub struct Budgeted<S> {
    inner: S,
    allowance: Allowance,
}

impl<S> Budgeted<S> {
    /// Wrap `inner` with `bytes` allowed; the handle changes the allowance later.
    pub fn new(inner: S, bytes: u64) -> (Self, Allowance) {
        let allowance = Allowance::default();
        allowance.grant(bytes);
        (
            Budgeted {
                inner,
                allowance: allowance.clone(),
            },
            allowance,
        )
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
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let got = (buf.filled().len() - before) as u64;
            let left = this.allowance.left.load(Ordering::Relaxed);
            if got > left {
                this.allowance.left.store(0, Ordering::Relaxed);
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
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Budgeted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
    async fn reads_within_the_allowance_pass() {
        let data = vec![b'x'; 1000];
        let (mut s, allowance) = Budgeted::new(&data[..], 1000);
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 1000);
        assert_eq!(allowance.left(), 0);
    }
}
