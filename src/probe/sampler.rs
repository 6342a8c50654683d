//! The liveness sampler: while a run goes on, connect to each configured endpoint
//! every `--sample-interval`, read its greeting (through TLS for implicit-TLS
//! endpoints), say goodbye (QUIT / LOGOUT / QUIT) and record up or down into the
//! timeline. No login, no mail; one sampling connection per service at a time,
//! every read bounded in bytes and time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::endpoint::{Endpoint, Security};
use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Protocol, millis};
use crate::core::time::rfc3339;
use crate::io::net::{self, BoxStream};
use crate::io::tls::TlsClient;
use crate::model::timeline::{DownCause, Sample, ServiceTimeline, Timeline};
use crate::probe::settings::Settings;

/// The default `--sample-interval` (verify and rounds).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);
/// Shortest interval accepted: more would be a load, not a sample.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Longest a sample waits for the TCP connection.
const CONNECT_LIMIT: Duration = Duration::from_secs(2);
/// Longest a sample waits for TLS and the greeting.
const GREETING_LIMIT: Duration = Duration::from_secs(3);
/// Longest a sample waits for the answer to its QUIT / LOGOUT.
const GOODBYE_LIMIT: Duration = Duration::from_millis(500);
/// Most greeting bytes read (a multi-line SMTP greeting included).
const GREETING_BYTES: u64 = 8 * 1024;

/// A running sampler; [`Sampler::finish`] stops it and hands over the timeline.
pub struct Sampler {
    started: Instant,
    timeline: Arc<Mutex<Timeline>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How long one sample may take, from the run's timeouts (never longer than the
/// sampler's own limits, so a hanging server still yields a sample every few seconds).
#[derive(Debug, Clone, Copy)]
struct Limits {
    connect: Duration,
    greeting: Duration,
}

impl Sampler {
    /// Start sampling every endpoint of `settings` (SMTP, IMAP, POP3 as
    /// configured) every `interval`. Needs a tokio runtime.
    pub fn start(settings: &Settings, interval: Duration) -> ProbeResult<Sampler> {
        let interval = interval.max(MIN_INTERVAL);
        let tls = Arc::new(TlsClient::new(&settings.tls)?);
        let limits = Limits {
            connect: settings.timeouts.connect.min(CONNECT_LIMIT),
            greeting: settings.timeouts.greeting.min(GREETING_LIMIT),
        };
        // `--smtp-only` leaves no retrieval endpoint in the target.
        let mut endpoints = vec![settings.target.smtp.clone()];
        endpoints.extend(settings.target.retrieval_endpoints().cloned());
        let started = Instant::now();
        let timeline = Arc::new(Mutex::new(Timeline {
            started_at: rfc3339(SystemTime::now()),
            interval_ms: millis(interval),
            duration_ms: 0.0,
            services: endpoints
                .iter()
                .map(|e| ServiceTimeline::new(e.protocol, e.to_string()))
                .collect(),
            crash_loops: Vec::new(),
        }));
        let (stop, stopped) = watch::channel(false);
        let tasks = endpoints
            .into_iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let job = Job {
                    index,
                    endpoint,
                    tls: Arc::clone(&tls),
                    limits,
                    interval,
                    started,
                    timeline: Arc::clone(&timeline),
                };
                tokio::spawn(job.run(stopped.clone()))
            })
            .collect();
        Ok(Sampler {
            started,
            timeline,
            stop,
            tasks,
        })
    }

    /// Milliseconds from the start of sampling to `at` (0 before it).
    pub fn offset_ms(&self, at: Instant) -> f64 {
        millis(at.saturating_duration_since(self.started))
    }

    /// The timeline so far, its last spans closed now.
    pub fn snapshot(&self) -> Timeline {
        let now = self.offset_ms(Instant::now());
        let mut t = self.timeline.lock().expect("timeline lock").clone();
        close(&mut t, now);
        t
    }

    /// Stop sampling (a sample in flight is abandoned) and return the timeline.
    pub async fn finish(mut self) -> Timeline {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            // Each task ends at its next await once told; bounded all the same.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.snapshot()
    }
}

fn close(t: &mut Timeline, now_ms: f64) {
    t.duration_ms = now_ms;
    for s in &mut t.services {
        s.finish(now_ms);
    }
}

/// One service's sampling loop.
struct Job {
    index: usize,
    endpoint: Endpoint,
    tls: Arc<TlsClient>,
    limits: Limits,
    interval: Duration,
    started: Instant,
    timeline: Arc<Mutex<Timeline>>,
}

impl Job {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        loop {
            if *stopped.borrow() {
                return;
            }
            let began = Instant::now();
            let sample = tokio::select! {
                s = sample(&self.endpoint, &self.tls, self.limits) => s,
                _ = stopped.changed() => return,
            };
            let at = millis(began.saturating_duration_since(self.started));
            if let Ok(mut t) = self.timeline.lock() {
                t.services[self.index].record(at, sample);
            }
            // One connection at a time: the next sample starts an interval after
            // this one began, or at once when this one took longer.
            tokio::select! {
                _ = tokio::time::sleep_until((began + self.interval).into()) => {}
                _ = stopped.changed() => return,
            }
        }
    }
}

/// What a failure means for liveness.
fn down_cause(err: &ProbeError) -> DownCause {
    match err.kind {
        ErrorKind::Refused => DownCause::Refused,
        ErrorKind::Reset => DownCause::Reset,
        ErrorKind::Closed => DownCause::Closed,
        ErrorKind::Timeout => DownCause::NoGreeting,
        ErrorKind::Tls => DownCause::Tls,
        ErrorKind::Rejected | ErrorKind::Protocol => DownCause::Rejected,
        _ => DownCause::Network,
    }
}

/// Connect, read the greeting, say goodbye.
async fn sample(endpoint: &Endpoint, tls: &TlsClient, limits: Limits) -> Sample {
    match greet(endpoint, tls, limits).await {
        Ok(greeting) => Sample::Up(greeting),
        Err(err) => Sample::Down(down_cause(&err), err.message),
    }
}

async fn greet(endpoint: &Endpoint, tls: &TlsClient, limits: Limits) -> ProbeResult<String> {
    let tcp = net::connect(&endpoint.connect_host(), endpoint.port, limits.connect).await?;
    let exchange = async {
        let stream: BoxStream = if endpoint.security == Security::Implicit {
            tls.handshake(tcp, &endpoint.host).await?.0
        } else {
            Box::new(tcp)
        };
        let mut reader = BufReader::new(stream);
        let greeting = read_greeting(&mut reader, endpoint.protocol).await?;
        Ok::<_, ProbeError>((reader, greeting))
    };
    let (mut reader, greeting) = tokio::time::timeout(limits.greeting, exchange)
        .await
        .map_err(|_| ProbeError::timeout(limits.greeting))??;
    judge(endpoint.protocol, &greeting)?;
    goodbye(&mut reader, endpoint.protocol).await;
    Ok(greeting)
}

/// The greeting's lines (SMTP: up to the last `220 ` line), at most
/// [`GREETING_BYTES`]; the last line is returned.
async fn read_greeting(
    reader: &mut BufReader<BoxStream>,
    protocol: Protocol,
) -> ProbeResult<String> {
    let mut limited = reader.take(GREETING_BYTES);
    loop {
        let mut line = Vec::new();
        let n = limited
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| ProbeError::io(&e))?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(if limited.limit() == 0 {
                ProbeError::protocol_violation("the greeting is longer than 8 KiB")
            } else {
                ProbeError::closed()
            });
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let continued = protocol == Protocol::Smtp && text.as_bytes().get(3) == Some(&b'-');
        if !continued {
            return Ok(text);
        }
    }
}

/// A greeting that sends us away (SMTP 4xx/5xx such as 421, IMAP `BYE`, POP3
/// `-ERR`) or makes no sense is an error.
fn judge(protocol: Protocol, greeting: &str) -> ProbeResult<()> {
    let welcome = match protocol {
        Protocol::Smtp => greeting.starts_with('2'),
        Protocol::Imap => {
            let upper = greeting.to_ascii_uppercase();
            upper.starts_with("* OK") || upper.starts_with("* PREAUTH")
        }
        Protocol::Pop3 => greeting.starts_with("+OK"),
    };
    if welcome {
        return Ok(());
    }
    Err(ProbeError::new(
        ErrorKind::Rejected,
        format!(
            "{} greeting: {}",
            protocol.label(),
            crate::core::reply::truncate(greeting, 120)
        ),
    ))
}

/// QUIT / LOGOUT / QUIT and a bounded wait for the answer; errors do not matter
/// any more (the greeting was seen).
async fn goodbye(reader: &mut BufReader<BoxStream>, protocol: Protocol) {
    let command: &[u8] = match protocol {
        Protocol::Smtp | Protocol::Pop3 => b"QUIT\r\n",
        Protocol::Imap => b"s LOGOUT\r\n",
    };
    let polite = async {
        reader.get_mut().write_all(command).await?;
        reader.get_mut().flush().await?;
        let mut answer = Vec::new();
        (&mut *reader)
            .take(4096)
            .read_until(b'\n', &mut answer)
            .await?;
        reader.get_mut().shutdown().await
    };
    let _ = tokio::time::timeout(GOODBYE_LIMIT, polite).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings_are_judged_by_protocol() {
        assert!(judge(Protocol::Smtp, "220 mx ESMTP").is_ok());
        assert!(judge(Protocol::Smtp, "421 4.3.2 shutting down").is_err());
        assert!(judge(Protocol::Imap, "* OK [CAPABILITY IMAP4rev1] ready").is_ok());
        assert!(judge(Protocol::Imap, "* PREAUTH hi").is_ok());
        let bye = judge(Protocol::Imap, "* BYE shutting down").unwrap_err();
        assert_eq!(down_cause(&bye), DownCause::Rejected);
        assert!(judge(Protocol::Pop3, "+OK ready").is_ok());
        assert!(judge(Protocol::Pop3, "-ERR busy").is_err());
    }

    /// A one-connection scripted server on loopback: sends `script`, then (unless
    /// `hang_up`) reads what the client says (at most 1 KiB, 2 s) and returns it.
    async fn fake_with(
        script: &'static [u8],
        hang_up: bool,
    ) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return Vec::new();
            };
            let _ = s.write_all(script).await;
            if hang_up {
                return Vec::new();
            }
            let mut said = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut said))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            said.truncate(n);
            said
        });
        (port, task)
    }

    async fn fake(script: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        fake_with(script, false).await
    }

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::parse(url, crate::core::endpoint::StarttlsPolicy::Auto).unwrap()
    }

    /// More than the sampler reads of a greeting, without a line end.
    static ENDLESS: [u8; 10_000] = [b'2'; 10_000];

    const FAST: Limits = Limits {
        connect: Duration::from_millis(500),
        greeting: Duration::from_millis(500),
    };

    #[tokio::test]
    async fn greetings_goodbyes_and_hostile_servers() {
        let tls = TlsClient::new(&Default::default()).unwrap();
        // A multi-line SMTP greeting: up, then QUIT.
        let (port, said) = fake(b"220-mx first\r\n220 mx ready\r\n").await;
        let got = sample(&endpoint(&format!("smtp://127.0.0.1:{port}")), &tls, FAST).await;
        assert_eq!(got, Sample::Up("220 mx ready".into()));
        assert_eq!(said.await.unwrap(), b"QUIT\r\n");
        let (port, said) = fake(b"* OK ready\r\n").await;
        let got = sample(&endpoint(&format!("imap://127.0.0.1:{port}")), &tls, FAST).await;
        assert!(matches!(got, Sample::Up(_)), "{got:?}");
        assert_eq!(said.await.unwrap(), b"s LOGOUT\r\n");
        // 421 / -ERR, closed within a line or before one, a line without end: down, and why.
        for (script, hang_up, scheme, cause) in [
            (
                &b"421 4.3.2 shutting down\r\n"[..],
                false,
                "smtp",
                DownCause::Rejected,
            ),
            (
                &b"-ERR [SYS/TEMP] busy\r\n"[..],
                false,
                "pop3",
                DownCause::Rejected,
            ),
            (&b"* OK partial"[..], true, "imap", DownCause::Closed),
            (&b""[..], true, "pop3", DownCause::Closed),
            (&b"+OK no end"[..], false, "pop3", DownCause::NoGreeting),
            (&ENDLESS[..], false, "smtp", DownCause::Rejected),
        ] {
            let (port, _said) = fake_with(script, hang_up).await;
            let got = sample(
                &endpoint(&format!("{scheme}://127.0.0.1:{port}")),
                &tls,
                FAST,
            )
            .await;
            assert!(
                matches!(got, Sample::Down(c, _) if c == cause),
                "{script:?}: {got:?}"
            );
        }
        // A server that never greets: no greeting within the limit.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let started = Instant::now();
        let got = sample(&endpoint(&format!("smtp://127.0.0.1:{port}")), &tls, FAST).await;
        assert!(
            matches!(got, Sample::Down(DownCause::NoGreeting, _)),
            "{got:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
        // Nothing listening.
        let got = sample(&endpoint(&format!("smtp://127.0.0.1:{port}")), &tls, FAST).await;
        assert!(
            matches!(got, Sample::Down(DownCause::Refused, _)),
            "{got:?}"
        );
    }

    #[test]
    fn failures_map_to_how_a_down_began() {
        for (kind, cause) in [
            (ErrorKind::Refused, DownCause::Refused),
            (ErrorKind::Reset, DownCause::Reset),
            (ErrorKind::Closed, DownCause::Closed),
            (ErrorKind::Timeout, DownCause::NoGreeting),
            (ErrorKind::Tls, DownCause::Tls),
            (ErrorKind::Network, DownCause::Network),
        ] {
            assert_eq!(down_cause(&ProbeError::new(kind, "x")), cause);
        }
    }
}
