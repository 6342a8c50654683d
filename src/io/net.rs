//! Connections: TCP with NODELAY and a connect timeout, wrapped in a stream that
//! bounds how long a line may grow and counts the bytes moved (for the progress
//! bar); a stream that replays what was already read; big reads below TLS;
//! bounded line reads.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};

/// The write side of a wrapper that only watches or bounds reads: every call goes
/// to `self.inner`. `delegate_write!(all)` for a whole `AsyncWrite` body,
/// `delegate_write!(flush_shutdown)` next to a `poll_write` of its own.
macro_rules! delegate_write {
    (all) => {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        }
        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }
        $crate::io::net::delegate_write!(flush_shutdown);
    };
    (flush_shutdown) => {
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    };
}
pub(crate) use delegate_write;

/// Anything we can speak a mail protocol over: plain TCP or TLS, boxed.
pub(crate) trait MailStream:
    AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug
{
}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug> MailStream for T {}

pub(crate) type BoxStream = Box<dyn MailStream>;

/// Resolve and connect, trying every address of `host` in turn within `limit`.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    limit: Duration,
) -> ProbeResult<Guarded<TcpStream>> {
    let attempt = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                ProbeError::new(ErrorKind::Network, format!("cannot resolve {host}: {e}"))
            })?
            .collect();
        let mut last = ProbeError::new(ErrorKind::Network, format!("{host} has no address"));
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Without NODELAY small commands after a write wait for Nagle (~40-90 ms).
                    stream.set_nodelay(true).map_err(|e| ProbeError::io(&e))?;
                    return Ok(Guarded::new(stream));
                }
                Err(e) => {
                    let mut err = ProbeError::io(&e);
                    err.message = format!("{addr}: {e}");
                    last = err;
                }
            }
        }
        Err(last)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::timeout(limit)),
    }
}

/// Byte counters that whoever watches progress reads.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) read: AtomicU64,
    pub(crate) written: AtomicU64,
}

/// Every guarded stream of the process, added up (the progress bar polls it).
pub(crate) static TOTAL_TRAFFIC: Traffic = Traffic {
    read: AtomicU64::new(0),
    written: AtomicU64::new(0),
};

/// A stream that refuses to let one line grow without bound: a server that sends
/// hundreds of MiB without a line feed gets an error instead of our memory.
pub(crate) struct Guarded<S> {
    inner: S,
    /// Bytes read since the last LF.
    line_run: usize,
    max_line: usize,
    /// Data was read and nothing written since, so the kernel owes the server an
    /// ACK that it may delay.
    ack_owed: bool,
}

/// Default longest line: generous for IMAP literals, far below anything harmful.
pub(crate) const DEFAULT_MAX_LINE: usize = 1 << 20;

impl<S> Guarded<S> {
    pub(crate) fn new(inner: S) -> Self {
        Guarded {
            inner,
            line_run: 0,
            max_line: DEFAULT_MAX_LINE,
            ack_owed: false,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish()
    }
}

/// A read at least this long is part of a bulk transfer, not a command's reply.
const BULK_READ: usize = 4096;

/// A transport that can be asked to acknowledge received data at once.
pub(crate) trait QuickAck {
    fn quick_ack(&self) {}
}

impl QuickAck for TcpStream {
    /// Linux delays ACKs by up to 40 ms; a server whose small reply waits in
    /// Nagle's algorithm for that ACK (e.g. behind TLS session tickets) would make
    /// the probe measure our kernel, not the server. Setting quick-ack sends an
    /// ACK the kernel is holding back at once.
    fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        let _ = socket2::SockRef::from(self).set_tcp_quickack(true);
    }
}

impl QuickAck for tokio::io::DuplexStream {}

impl<S: QuickAck> Guarded<S> {
    fn ack_now(&mut self) {
        self.inner.quick_ack();
        self.ack_owed = false;
    }
}

impl<S: AsyncRead + Unpin + QuickAck> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if poll.is_pending() && this.ack_owed {
            // About to wait for the server while owing it an ACK: send the ACK now,
            // or the rest of a reply may wait for it in the server's Nagle. (A write
            // carries the ACK, so the usual request and reply need no system call.)
            this.ack_now();
        }
        if let Poll::Ready(Ok(())) = poll {
            let fresh = &buf.filled()[before..];
            if fresh.len() >= BULK_READ {
                // A bulk transfer (a FETCH, a RETR): acknowledged as it is read,
                // so that the server's window keeps open (measured faster).
                this.ack_now();
            } else {
                this.ack_owed |= !fresh.is_empty();
            }
            TOTAL_TRAFFIC
                .read
                .fetch_add(fresh.len() as u64, Ordering::Relaxed);
            match fresh.iter().rposition(|&b| b == b'\n') {
                Some(pos) => this.line_run = fresh.len() - pos - 1,
                None => this.line_run += fresh.len(),
            }
            if this.line_run > this.max_line {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the server sent a line longer than {} bytes", this.max_line),
                )));
            }
        }
        poll
    }
}

impl<S> Guarded<S> {
    /// A write's outcome, its bytes added to [`TOTAL_TRAFFIC`]; sent bytes carry
    /// the ACK that was owed.
    fn counted_write(&mut self, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = poll {
            TOTAL_TRAFFIC.written.fetch_add(n as u64, Ordering::Relaxed);
            self.ack_owed &= n == 0;
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.counted_write(poll)
    }
    /// TLS hands over its records together: one `writev` instead of a `send` each.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.counted_write(poll)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    crate::io::net::delegate_write!(flush_shutdown);
}

/// A stream that first yields bytes we already read from the connection (so a
/// library that expects to read a greeting itself can be handed a live session).
#[derive(Debug)]
pub(crate) struct Replay<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
    /// Still swallowing the first line written (answered by `prefix`).
    swallowing: bool,
}

impl<S> Replay<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            prefix,
            pos: 0,
            inner,
            swallowing: false,
        }
    }

    /// Like [`Replay::new`], and the first line written is not sent: its answer
    /// is already in `prefix` (lettre's EHLO, answered by the one we said).
    pub(crate) fn answering_first_line(prefix: Vec<u8>, inner: S) -> Self {
        Replay {
            swallowing: true,
            ..Replay::new(prefix, inner)
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            hand_out(&this.prefix, &mut this.pos, buf);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.swallowing {
            return Poll::Ready(Ok(match buf.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.swallowing = false;
                    end + 1
                }
                None => buf.len(),
            }));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    crate::io::net::delegate_write!(flush_shutdown);
}

/// Copy what `buf` has room for of `from[*pos..]`, moving `pos` past it.
fn hand_out(from: &[u8], pos: &mut usize, buf: &mut ReadBuf<'_>) {
    let n = (from.len() - *pos).min(buf.remaining());
    buf.put_slice(&from[*pos..*pos + n]);
    *pos += n;
}

/// Socket reads below TLS of at least this size: rustls asks for 4 KiB at a time,
/// and a 5 MiB fetch would otherwise cost ~2000 `recv` (and quick-ack) syscalls.
const READ_AHEAD: usize = 64 * 1024;

/// Reads from `inner` in [`READ_AHEAD`] pieces and hands them out in whatever
/// sizes the reader above asks for. Only for encrypted streams: before STARTTLS
/// the plaintext reader must see every byte the server sent (injection check).
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Allocated (and zeroed) once, at the first small read.
    buffer: Vec<u8>,
    /// `buffer[pos..end]` is read and not handed out yet.
    pos: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buffer: Vec::new(),
            pos: 0,
            end: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.end {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.buffer.is_empty() {
                this.buffer = vec![0; READ_AHEAD];
            }
            let mut ahead = ReadBuf::new(&mut this.buffer);
            match Pin::new(&mut this.inner).poll_read(cx, &mut ahead) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            this.pos = 0;
            this.end = ahead.filled().len();
        }
        hand_out(&this.buffer[..this.end], &mut this.pos, buf);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    crate::io::net::delegate_write!(all);
}

/// Read one line (through LF) into `line`, refusing lines longer than `max`.
/// Returns an error of kind `Closed` at end of stream.
pub(crate) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> ProbeResult<()> {
    line.clear();
    loop {
        let available = reader.fill_buf().await.map_err(|e| ProbeError::io(&e))?;
        if available.is_empty() {
            return Err(if line.is_empty() {
                ProbeError::closed()
            } else {
                ProbeError::new(ErrorKind::Closed, "the connection closed mid-line")
            });
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(pos) => (pos + 1, true),
            None => (available.len(), false),
        };
        if line.len() + take > max {
            return Err(ProbeError::protocol_violation(format!(
                "the server sent a line longer than {max} bytes"
            )));
        }
        line.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(());
        }
    }
}

/// Write all of `bytes` and flush.
pub(crate) async fn write_all_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> ProbeResult<()> {
    use tokio::io::AsyncWriteExt;
    writer
        .write_all(bytes)
        .await
        .map_err(|e| ProbeError::io(&e))?;
    writer.flush().await.map_err(|e| ProbeError::io(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};

    #[tokio::test]
    async fn bounded_line_reader_refuses_long_lines() {
        let data = vec![b'x'; 10_000];
        let mut reader = BufReader::new(&data[..]);
        let mut line = Vec::new();
        let err = read_line_bounded(&mut reader, &mut line, 1000)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
    }

    #[tokio::test]
    async fn bounded_line_reader_reads_lines_and_reports_close() {
        let mut reader = BufReader::new(&b"+OK hi\r\npartial"[..]);
        let mut line = Vec::new();
        read_line_bounded(&mut reader, &mut line, 100)
            .await
            .unwrap();
        assert_eq!(line, b"+OK hi\r\n");
        let err = read_line_bounded(&mut reader, &mut line, 100)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed);
    }

    /// A duplex end that counts the quick ACKs asked of it.
    struct CountingAcks {
        inner: tokio::io::DuplexStream,
        acks: std::sync::Arc<AtomicU64>,
    }

    impl QuickAck for CountingAcks {
        fn quick_ack(&self) {
            self.acks.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl AsyncRead for CountingAcks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingAcks {
        delegate_write!(all);
    }

    #[tokio::test]
    async fn guarded_stream_acks_only_before_waiting_or_in_bulk() {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(256 * 1024);
        let acks = std::sync::Arc::new(AtomicU64::new(0));
        let mut guarded = Guarded::new(CountingAcks {
            inner: client,
            acks: acks.clone(),
        });
        let mut buf = vec![0u8; 128 * 1024];
        // A reply, then our next command: the write carries the ACK.
        server.write_all(b"250 ok\r\n").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 8);
        guarded.write_all(b"QUIT\r\n").await.unwrap();
        assert_eq!(acks.load(Ordering::Relaxed), 0);
        // Part of a reply, then a wait for the rest: the ACK goes out before waiting.
        server.write_all(b"250-part").await.unwrap();
        assert_eq!(guarded.read(&mut buf).await.unwrap(), 8);
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            server.write_all(b"\r\n250 rest\r\n").await.unwrap();
            server
        });
        assert!(guarded.read(&mut buf).await.unwrap() > 0);
        assert_eq!(acks.load(Ordering::Relaxed), 1);
        let mut server = rest.await.unwrap();
        // A bulk read is acknowledged as it is read.
        server.write_all(&vec![b'x'; 64 * 1024]).await.unwrap();
        assert!(guarded.read(&mut buf).await.unwrap() >= BULK_READ);
        assert_eq!(acks.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn guarded_stream_stops_endless_lines() {
        let (mut server, client) = tokio::io::duplex(64 * 1024);
        let mut guarded = Guarded::new(client);
        guarded.max_line = 4096;
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let chunk = vec![b'a'; 1024];
            for _ in 0..64 {
                if server.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let mut sink = vec![0u8; 1024];
        let mut failed = false;
        for _ in 0..64 {
            match guarded.read(&mut sink).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a 64 KiB line must trip a 4 KiB guard");
        writer.abort();
    }

    #[tokio::test]
    async fn replay_answers_the_first_line_itself() {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(1024);
        let mut r = Replay::answering_first_line(b"250 ok\r\n".to_vec(), client);
        r.write_all(b"EHLO me\r\nMAIL FROM:<a@b>\r\n")
            .await
            .unwrap();
        r.flush().await.unwrap();
        let mut reply = [0u8; 8];
        r.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"250 ok\r\n");
        drop(r);
        let mut sent = String::new();
        server.read_to_string(&mut sent).await.unwrap();
        assert_eq!(
            sent, "MAIL FROM:<a@b>\r\n",
            "only what follows the first line is sent"
        );
    }

    #[tokio::test]
    async fn read_ahead_reads_big_and_hands_out_small() {
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        server.write_all(&data).await.unwrap();
        drop(server);
        let mut r = ReadAhead::new(client);
        let mut small = [0u8; 4096];
        let n = r.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], &data[..n]);
        assert_eq!(r.end, READ_AHEAD, "one read of a whole piece");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!([&small[..n], &rest[..]].concat(), data);
    }

    #[tokio::test]
    async fn replay_yields_prefix_first() {
        let inner = &b" world"[..];
        let mut r = Replay::new(b"hello".to_vec(), inner);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
