//! Opening a mail session: TCP connect, implicit TLS or the STARTTLS upgrade, the
//! transcript recorder above TLS, and the checks every protocol shares (STARTTLS
//! policy, plaintext logins, bytes the server sent too early).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;

use crate::core::endpoint::{Endpoint, Security, StarttlsPolicy};
use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::Phase;
use crate::core::tls_info::TlsInfo;
use crate::io::clock::PhaseClock;
use crate::io::deadline::Deadline;
use crate::io::net::{self, BoxStream};
use crate::io::tls::TlsClient;
use crate::io::transcript::{self, Transcript};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) greeting: Duration,
    /// Each command/reply exchange (EHLO, AUTH, MAIL, LOGIN, SEARCH, ...).
    pub(crate) command: Duration,
    /// Transferring a message body (SMTP DATA, IMAP FETCH, POP3 RETR).
    pub(crate) data: Duration,
    /// How long a sent message may take to become visible in the mailbox.
    pub(crate) delivery: Duration,
    /// The whole check, from start to report (`--timeout`).
    pub(crate) check: Duration,
}

impl Timeouts {
    /// The limit of a body transfer: the data timeout, but at least the command timeout.
    pub(crate) fn body(&self) -> Duration {
        self.data.max(self.command)
    }
}

/// `--timeout` by default: a check against a dead server ends well inside the
/// 60 s after which Nagios and Icinga kill a check and lose its verdict, with
/// room left for process start, a slow DNS answer and a loaded machine.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(45);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            greeting: Duration::from_secs(20),
            command: Duration::from_secs(30),
            data: Duration::from_secs(120),
            delivery: Duration::from_secs(60),
            check: DEFAULT_CHECK_TIMEOUT,
        }
    }
}

/// What every connection of a run shares: its timeouts, the TLS client and the
/// `--transcript` recorder.
#[derive(Debug)]
pub(crate) struct Connector {
    pub(crate) timeouts: Timeouts,
    pub(crate) tls: TlsClient,
    pub(crate) transcript: Option<Arc<Transcript>>,
    /// The check's deadline: every session's phases end there at the latest.
    pub(crate) deadline: Deadline,
}

/// Connect to `endpoint` and, for implicit TLS, complete the handshake: the first
/// steps every protocol shares.
pub(crate) async fn open_stream(
    conn: &Connector,
    endpoint: &Endpoint,
    clock: &mut PhaseClock,
    tls_info: &mut Option<TlsInfo>,
) -> ProbeResult<BoxStream> {
    let t = conn.timeouts;
    let tcp = clock
        .run(
            Phase::Connect,
            t.connect,
            net::connect(&endpoint.connect_host(), endpoint.port, t.connect),
        )
        .await?;
    let stream: BoxStream = Box::new(tcp);
    // `--transcript` records above TLS: the plain stream here, the TLS one below.
    let record = |s: BoxStream| {
        let peer = format!("{}:{}", endpoint.host, endpoint.port);
        transcript::record(conn.transcript.as_ref(), endpoint.protocol, &peer, s)
    };
    if endpoint.security != Security::Implicit {
        return Ok(record(stream));
    }
    // The handshake is the server's first answer, like a greeting.
    let (tls, info) = clock
        .run(
            Phase::Tls,
            t.greeting,
            conn.tls.handshake(stream, &endpoint.host),
        )
        .await?;
    *tls_info = Some(info);
    Ok(record(tls))
}

/// Whether to upgrade a plain connection, given the policy and the server's offer.
pub(crate) fn starttls_wanted(endpoint: &Endpoint, offered: bool) -> ProbeResult<bool> {
    match endpoint.security {
        Security::Implicit | Security::Starttls(StarttlsPolicy::Never) => Ok(false),
        Security::Starttls(StarttlsPolicy::Auto) => Ok(offered),
        Security::Starttls(StarttlsPolicy::Require) if offered => Ok(true),
        Security::Starttls(StarttlsPolicy::Require) => Err(ProbeError::new(
            ErrorKind::Unsupported,
            format!(
                "STARTTLS is required (--starttls require) but the {} server does not offer it",
                endpoint.protocol.label()
            ),
        )
        .at(endpoint.protocol, Phase::Starttls)),
    }
}

/// After the server agreed to STARTTLS: refuse bytes it sent before the handshake
/// (they would be read as if protected: command injection), then handshake.
pub(crate) async fn finish_starttls(
    conn: &Connector,
    endpoint: &Endpoint,
    clock: &mut PhaseClock,
    reader: BufReader<BoxStream>,
    tls_info: &mut Option<TlsInfo>,
) -> ProbeResult<BoxStream> {
    if !reader.buffer().is_empty() {
        return Err(ProbeError::protocol_violation(
            "the server sent data after its STARTTLS reply, before TLS (possible command injection)",
        )
        .at(endpoint.protocol, Phase::Starttls));
    }
    let (tls, info) = clock
        .run(
            Phase::Tls,
            conn.timeouts.greeting,
            conn.tls.handshake(reader.into_inner(), &endpoint.host),
        )
        .await?;
    *tls_info = Some(info);
    Ok(transcript::resume(
        conn.transcript.as_ref(),
        endpoint.protocol,
        tls,
    ))
}

/// A plain connection with nothing pending: hand it on without the read buffer.
pub(crate) fn unbuffer(
    endpoint: &Endpoint,
    reader: BufReader<BoxStream>,
) -> ProbeResult<BoxStream> {
    if reader.buffer().is_empty() {
        Ok(reader.into_inner())
    } else {
        Err(ProbeError::protocol_violation(format!(
            "the {} server sent data nobody asked for",
            endpoint.protocol.label()
        ))
        .at(endpoint.protocol, Phase::Greeting))
    }
}

/// Refuse to send a password in clear text to a host other than this one, unless
/// the user `allowed` it.
pub(crate) fn check_plaintext_login(
    endpoint: &Endpoint,
    encrypted: bool,
    allowed: bool,
    phase: Phase,
) -> ProbeResult<()> {
    if encrypted || endpoint.is_loopback() || allowed {
        return Ok(());
    }
    Err(ProbeError::new(
        ErrorKind::Unsupported,
        format!(
            "refusing to send the password over an unencrypted {} connection; use {}s:// or STARTTLS, or --allow-plaintext-login",
            endpoint.protocol.label(),
            endpoint.protocol.as_str()
        ),
    )
    .at(endpoint.protocol, phase))
}
