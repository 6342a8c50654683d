//! A fault-injecting TCP proxy for the fault tests: listens on 127.0.0.1:0 and
//! forwards to one upstream port of the test server, optionally breaking the
//! conversation in one of a few ways. The fault can be switched on and off while
//! the proxy runs (for the healthy control run through the same proxy).
//!
//! The proxy owns its own small tokio runtime, so it works with test helpers that
//! build and drop a runtime per check. Dropping the proxy shuts that runtime down,
//! which aborts the accept loop and every connection. Everything is bounded: the
//! accept loop in connections and lifetime, each connection in lifetime and in
//! reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest a proxy lives, whatever the test does.
const PROXY_LIFETIME: Duration = Duration::from_secs(600);
/// Longest one proxied connection lives.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Most connections one proxy accepts.
const MAX_CONNECTIONS: usize = 2000;
/// Most reads per connection (64 KiB each: ~6 GiB, far above any test ladder).
const MAX_READS: usize = 100_000;

/// What the proxy does wrong while its fault is switched on.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Once the client's stream after the SMTP `DATA` command contains `needle`,
    /// reset both connections (no FIN, no reply) without forwarding that data.
    DropAfterDataOn(&'static [u8]),
    /// Replace every `from` in the client's stream with `to` (same length).
    Rewrite {
        from: &'static [u8],
        to: &'static [u8],
    },
    /// Hold back the server's first bytes (the greeting) for this long.
    DelayGreeting(Duration),
}

pub struct Proxy {
    pub addr: SocketAddr,
    enabled: Arc<AtomicBool>,
    triggered: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Start a proxy to `upstream` with `fault` switched on.
    pub fn start(upstream: SocketAddr, fault: Fault) -> Proxy {
        assert!(
            upstream.ip().is_loopback(),
            "the fault proxy only forwards to loopback, not {upstream}"
        );
        if let Fault::Rewrite { from, to } = &fault {
            assert_eq!(from.len(), to.len(), "a rewrite keeps the length");
            assert!(!from.is_empty());
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let enabled = Arc::new(AtomicBool::new(true));
        let triggered = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let state = Shared {
            upstream,
            fault,
            enabled: enabled.clone(),
            triggered: triggered.clone(),
        };
        let conns = connections.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let accept_all = async {
                for _ in 0..MAX_CONNECTIONS {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    conns.fetch_add(1, Ordering::SeqCst);
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(CONNECTION_LIFETIME, serve(client, state)).await;
                    });
                }
            };
            let _ = tokio::time::timeout(PROXY_LIFETIME, accept_all).await;
        });
        Proxy {
            addr,
            enabled,
            triggered,
            connections,
            runtime: Some(runtime),
        }
    }

    /// `scheme://127.0.0.1:<proxy port>`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// Switch the fault on or off (new connections and data see it at once).
    pub fn set_fault(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// How often the fault fired (connections dropped, bytes rewritten, greetings delayed).
    pub fn triggered(&self) -> usize {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Clone)]
struct Shared {
    upstream: SocketAddr,
    fault: Fault,
    enabled: Arc<AtomicBool>,
    triggered: Arc<AtomicUsize>,
}

impl Shared {
    fn on(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }
    fn fired(&self) {
        self.triggered.fetch_add(1, Ordering::SeqCst);
    }
}

/// Watches the client's stream for `DATA` and then for a needle, across reads.
struct DataWatcher {
    needle: &'static [u8],
    after_data: bool,
    /// The last bytes seen, so that a match split across reads is found.
    tail: Vec<u8>,
}

const DATA_COMMAND: &[u8] = b"\r\nDATA\r\n";

impl DataWatcher {
    fn new(needle: &'static [u8]) -> Self {
        DataWatcher {
            needle,
            after_data: false,
            tail: Vec::new(),
        }
    }
    /// Feed client bytes; true when the needle appeared after DATA.
    fn feed(&mut self, chunk: &[u8]) -> bool {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        let mut from = 0;
        if !self.after_data
            && let Some(at) = find_ci(&window, DATA_COMMAND)
        {
            self.after_data = true;
            from = at + DATA_COMMAND.len();
        }
        let hit = self.after_data && find_ci(&window[from..], self.needle).is_some();
        let keep = self.needle.len().max(DATA_COMMAND.len());
        self.tail = window[window.len().saturating_sub(keep)..].to_vec();
        hit
    }
}

/// Replaces `from` with `to` in a stream, holding back only a possible partial match.
struct Rewriter {
    from: &'static [u8],
    to: &'static [u8],
    pending: Vec<u8>,
}

impl Rewriter {
    /// Feed bytes; returns what may be forwarded now and how many replacements were made.
    fn feed(&mut self, chunk: &[u8]) -> (Vec<u8>, usize) {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut replaced = 0;
        let mut i = 0;
        let buf = &self.pending;
        while i < buf.len() {
            if buf[i..].starts_with(self.from) {
                out.extend_from_slice(self.to);
                i += self.from.len();
                replaced += 1;
            } else if self.from.starts_with(&buf[i..]) {
                // A partial match at the end: wait for more bytes.
                break;
            } else {
                out.push(buf[i]);
                i += 1;
            }
        }
        self.pending.drain(..i);
        (out, replaced)
    }
}

fn find_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

async fn serve(mut client: TcpStream, state: Shared) {
    let Ok(Ok(mut server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(state.upstream)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    if let Fault::DelayGreeting(delay) = state.fault
        && state.on()
    {
        state.fired();
        // The server's greeting waits in the kernel until we read it.
        tokio::time::sleep(delay).await;
    }

    let mut watcher = match state.fault {
        Fault::DropAfterDataOn(needle) => Some(DataWatcher::new(needle)),
        _ => None,
    };
    let mut rewriter = match state.fault {
        Fault::Rewrite { from, to } => Some(Rewriter {
            from,
            to,
            pending: Vec::new(),
        }),
        _ => None,
    };

    let mut cbuf = vec![0u8; 64 * 1024];
    let mut sbuf = vec![0u8; 64 * 1024];
    let (mut client_eof, mut server_eof) = (false, false);
    for _ in 0..MAX_READS {
        if client_eof && server_eof {
            return;
        }
        tokio::select! {
            read = client.read(&mut cbuf), if !client_eof => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        client_eof = true;
                        if let Some(rw) = rewriter.as_mut() {
                            let rest = std::mem::take(&mut rw.pending);
                            let _ = server.write_all(&rest).await;
                        }
                        let _ = server.shutdown().await;
                        continue;
                    }
                    Ok(n) => n,
                };
                let chunk = &cbuf[..n];
                if let Some(w) = watcher.as_mut()
                    && w.feed(chunk)
                    && state.on()
                {
                    state.fired();
                    // Abrupt: RST on both sides, nothing of this chunk forwarded.
                    let _ = client.set_zero_linger();
                    let _ = server.set_zero_linger();
                    return;
                }
                let forwarded = match rewriter.as_mut() {
                    Some(rw) if state.on() => {
                        let (out, replaced) = rw.feed(chunk);
                        if replaced > 0 {
                            state.fired();
                        }
                        server.write_all(&out).await
                    }
                    Some(rw) => {
                        // Switched off: flush a held-back partial match unchanged.
                        let mut out = std::mem::take(&mut rw.pending);
                        out.extend_from_slice(chunk);
                        server.write_all(&out).await
                    }
                    None => server.write_all(chunk).await,
                };
                if forwarded.is_err() {
                    return;
                }
            }
            read = server.read(&mut sbuf), if !server_eof => {
                match read {
                    Ok(0) | Err(_) => {
                        server_eof = true;
                        let _ = client.shutdown().await;
                    }
                    Ok(n) => {
                        if client.write_all(&sbuf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_finds_the_needle_only_after_data_and_across_reads() {
        let mut w = DataWatcher::new(b"Content-Disposition: attachment");
        assert!(!w.feed(b"EHLO x\r\nContent-Disposition: attachment\r\n"));
        assert!(!w.feed(b"MAIL FROM:<a@b>\r\n"));
        assert!(!w.feed(b"DA"));
        assert!(!w.feed(b"TA\r\nSubject: x\r\nContent-Dispo"));
        assert!(w.feed(b"sition: attachment; filename=\"x\"\r\n"));
    }

    #[test]
    fn rewriter_replaces_across_reads_and_holds_back_only_partial_matches() {
        let mut r = Rewriter {
            from: b"filename=\"mailprobe-",
            to: b"filename=\"renamed01-",
            pending: Vec::new(),
        };
        let (a, n1) = r.feed(b"x; filename=\"mail");
        assert_eq!(a, b"x; ");
        let (b, n2) = r.feed(b"probe-10KiB.bin\"\r\n.\r\n");
        assert_eq!(b, b"filename=\"renamed01-10KiB.bin\"\r\n.\r\n");
        assert_eq!(n1 + n2, 1);
        assert!(r.pending.is_empty());
    }
}
