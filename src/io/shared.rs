//! One stream with two handles that take turns: lettre holds one and speaks the
//! SMTP commands; the prober keeps the other and writes the DATA body itself in
//! large chunks (lettre's encoder would copy it a byte at a time). Only one side
//! uses the stream at any moment, so the lock is never contended.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) struct Shared<S> {
    inner: Arc<Mutex<S>>,
}

impl<S> Shared<S> {
    pub(crate) fn new(inner: S) -> Self {
        Shared {
            inner: Arc::new(Mutex::new(inner)),
        }
    }
    fn lock(&self) -> MutexGuard<'_, S> {
        // A panic while polling leaves the stream as it was: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Shared").field(&*self.lock()).finish()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Shared<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Shared<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.lock()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.lock()).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_handles_reach_the_same_stream() {
        let (client, mut server) = tokio::io::duplex(1024);
        let mut a = Shared::new(client);
        let mut b = a.clone();
        a.write_all(b"one ").await.unwrap();
        b.write_all(b"two").await.unwrap();
        let mut got = [0u8; 7];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");
        server.write_all(b"x").await.unwrap();
        assert_eq!(b.read_u8().await.unwrap(), b'x');
    }
}
