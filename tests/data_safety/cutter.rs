//! A connection-cutting TCP proxy for `tests/data_safety.rs`: listens on
//! 127.0.0.1:0, forwards to one loopback port of the test server, and resets both
//! connections (RST, no goodbye) at a chosen point of an IMAP or POP3 conversation:
//!
//! * [`Cut::Reply`]: after the client sent a command line containing a word (e.g.
//!   `RETR`, `BODY.PEEK[]`), forward that many bytes of the server's answer, then cut
//!   (mid-FETCH, mid-RETR, mid-UIDL, mid-TOP);
//! * [`Cut::Command`]: when the client sends a command line containing a word
//!   (`DELE`, `UID EXPUNGE`, `QUIT`, ...), cut before forwarding it, or forward it,
//!   give the server a moment to act on it, then cut.
//!
//! Each plan has a budget (how many cuts it may make) and may hide a capability
//! from the server's answers (same-length rewrite, e.g. `UIDPLUS` -> `XIDPLUS`).
//! The proxy owns its small tokio runtime; dropping it aborts every connection.
//! Everything is bounded: proxy lifetime, connections, lifetime and reads per
//! connection, and the length of a command line it looks at.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROXY_LIFETIME: Duration = Duration::from_secs(900);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
const MAX_CONNECTIONS: usize = 5000;
const MAX_READS: usize = 100_000;
/// Longer client lines are only looked at in their first bytes.
const MAX_LINE: usize = 4096;

/// Where to cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cut {
    Off,
    /// After a client line containing `command`, let `bytes` bytes of the server's
    /// data through, then reset both connections.
    Reply {
        command: &'static str,
        bytes: usize,
    },
    /// On a client line containing `command`: reset both connections, after
    /// forwarding the line (and waiting for the server to act) when `forward`.
    Command {
        command: &'static str,
        forward: bool,
    },
}

#[derive(Debug, Clone)]
struct Plan {
    cut: Cut,
    /// Cuts left.
    budget: usize,
    /// Same-length rewrite of the server's data.
    hide: Option<(&'static [u8], &'static [u8])>,
}

pub struct Cutter {
    pub addr: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    fired: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Cutter {
    pub fn start(upstream: SocketAddr) -> Cutter {
        assert!(upstream.ip().is_loopback(), "loopback only, not {upstream}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cutter")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let plan = Arc::new(Mutex::new(Plan {
            cut: Cut::Off,
            budget: 0,
            hide: None,
        }));
        let fired = Arc::new(AtomicUsize::new(0));
        let (p, f) = (plan.clone(), fired.clone());
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            let accept_all = async {
                for _ in 0..MAX_CONNECTIONS {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let (p, f) = (p.clone(), f.clone());
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            CONNECTION_LIFETIME,
                            serve(client, upstream, p, f),
                        )
                        .await;
                    });
                }
            };
            let _ = tokio::time::timeout(PROXY_LIFETIME, accept_all).await;
        });
        Cutter {
            addr,
            plan,
            fired,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// The plan for the next connections: cut at most `budget` times.
    pub fn set(&self, cut: Cut, budget: usize, hide: Option<(&'static [u8], &'static [u8])>) {
        if let Some((from, to)) = hide {
            assert_eq!(from.len(), to.len(), "a rewrite keeps the length");
        }
        *self.plan.lock().unwrap() = Plan { cut, budget, hide };
    }

    /// Cuts made so far (all plans).
    pub fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

fn replace_all(buf: &mut [u8], from: &[u8], to: &[u8]) {
    if from.is_empty() || buf.len() < from.len() {
        return;
    }
    let mut i = 0;
    while i + from.len() <= buf.len() {
        if &buf[i..i + from.len()] == from {
            buf[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

/// Take one cut from the budget.
fn take(plan: &Mutex<Plan>, fired: &AtomicUsize) -> bool {
    let mut p = plan.lock().unwrap();
    if p.budget == 0 {
        return false;
    }
    p.budget -= 1;
    fired.fetch_add(1, Ordering::SeqCst);
    true
}

fn reset(client: &TcpStream, server: &TcpStream) {
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    fired: Arc<AtomicUsize>,
) {
    let Ok(Ok(mut server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut line: Vec<u8> = Vec::new();
    // Server bytes still to let through before cutting, once armed.
    let mut armed: Option<usize> = None;
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
                        let _ = server.shutdown().await;
                        continue;
                    }
                    Ok(n) => n,
                };
                let cut = plan.lock().unwrap().cut;
                let mut on_command = None;
                for &b in &cbuf[..n] {
                    if line.len() < MAX_LINE {
                        line.push(b);
                    }
                    if b != b'\n' {
                        continue;
                    }
                    match cut {
                        Cut::Reply { command, bytes }
                            if armed.is_none()
                                && contains_ci(&line, command.as_bytes())
                                && take(&plan, &fired) =>
                        {
                            armed = Some(bytes);
                        }
                        Cut::Command { command, forward }
                            if on_command.is_none()
                                && contains_ci(&line, command.as_bytes())
                                && take(&plan, &fired) =>
                        {
                            on_command = Some(forward);
                        }
                        _ => {}
                    }
                    line.clear();
                }
                if let Some(forward) = on_command {
                    if forward {
                        let _ = server.write_all(&cbuf[..n]).await;
                        let _ = server.flush().await;
                        // Let the server act on it (and answer into the void).
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                    reset(&client, &server);
                    return;
                }
                if server.write_all(&cbuf[..n]).await.is_err() {
                    return;
                }
            }
            read = server.read(&mut sbuf), if !server_eof => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        server_eof = true;
                        let _ = client.shutdown().await;
                        continue;
                    }
                    Ok(n) => n,
                };
                let hide = plan.lock().unwrap().hide;
                if let Some((from, to)) = hide {
                    replace_all(&mut sbuf[..n], from, to);
                }
                if let Some(left) = armed {
                    if n >= left {
                        let _ = client.write_all(&sbuf[..left]).await;
                        let _ = client.flush().await;
                        // Let the client read what got through before the reset.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        reset(&client, &server);
                        return;
                    }
                    armed = Some(left - n);
                }
                if client.write_all(&sbuf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
