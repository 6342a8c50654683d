//! A read-side idle timeout: any single read that waits longer than the limit
//! fails with `io::ErrorKind::TimedOut`, so a transfer that stalls halfway is
//! noticed even when the caller's overall deadline is long.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub(crate) struct IdleTimeout<S> {
    inner: S,
    limit: Duration,
    /// The timer of the read currently waiting, if one is.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<S> IdleTimeout<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        IdleTimeout {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }
    pub(crate) fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
        self.armed = false;
    }
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }
    pub(crate) fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            this.armed = false;
            return Poll::Ready(r);
        }
        if !this.armed {
            let deadline = Instant::now() + this.limit;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.armed = true;
        }
        let timer = this.timer.as_mut().expect("timer armed above");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.armed = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no data from the server for {:?}", this.limit),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    crate::io::net::delegate_write!(all);
}
