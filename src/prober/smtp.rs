//! SMTP: send one probe message and time every phase.
//!
//! We read the greeting, send the first EHLO and negotiate STARTTLS ourselves (to
//! time them, keep the advertised capabilities and use our own TLS settings), then
//! hand the live session to lettre for AUTH, MAIL, RCPT and the streamed DATA.

use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, MailParameter};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncWrite, BufReader};

use super::{Context, ProtocolResult};
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, ProbeError, ProbeResult};
use crate::message::ProbeMessage;
use crate::net::{BoxStream, Replay, read_line_bounded, write_all_flush};
use crate::phase::{Phase, PhaseClock, Protocol};
use crate::reply::{MAX_REPLY_LINE, MAX_REPLY_LINES, Reply};
use crate::tls::TlsInfo;

/// All a server may send while lettre speaks (EHLO, AUTH, MAIL, RCPT, DATA,
/// QUIT replies): real replies are a few KiB.
const LETTRE_READ_BUDGET: u64 = 64 * 1024;

/// What the server told about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SmtpServerInfo {
    pub banner: String,
    /// EHLO keywords with their parameters, e.g. `SIZE 10240000`, `STARTTLS`.
    pub capabilities: Vec<String>,
    /// The SIZE the server advertised in EHLO (0 means no limit announced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertised_size: Option<u64>,
}

impl SmtpServerInfo {
    fn has(&self, keyword: &str) -> bool {
        self.capabilities.iter().any(|c| {
            c.split_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }
    fn from_ehlo(banner: String, ehlo: &Reply) -> Self {
        let capabilities: Vec<String> = ehlo.text.lines().skip(1).map(str::to_string).collect();
        let advertised_size = capabilities.iter().find_map(|c| {
            let mut words = c.split_whitespace();
            words
                .next()
                .filter(|k| k.eq_ignore_ascii_case("SIZE"))
                .map(|_| words.next().and_then(|n| n.parse().ok()).unwrap_or(0))
        });
        SmtpServerInfo {
            banner,
            capabilities,
            advertised_size,
        }
    }
}

/// The outcome of one send.
pub struct Sent {
    pub result: ProtocolResult,
    pub accepted_at: Option<Instant>,
    pub server: Option<SmtpServerInfo>,
}

/// Read one complete SMTP reply (bounded in line length and count).
pub async fn read_reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> ProbeResult<Reply> {
    let mut lines: Vec<String> = Vec::new();
    let mut raw = Vec::with_capacity(128);
    loop {
        if lines.len() >= MAX_REPLY_LINES {
            return Err(ProbeError::protocol_violation(format!(
                "the server sent a reply of more than {MAX_REPLY_LINES} lines"
            )));
        }
        read_line_bounded(reader, &mut raw, MAX_REPLY_LINE).await?;
        lines.push(String::from_utf8_lossy(&raw).into_owned());
        match Reply::parse_smtp_lines(&lines) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(why) => return Err(ProbeError::protocol_violation(why)),
        }
    }
}

/// Send `command` and read its reply; a negative reply is an error.
pub async fn exchange<S: AsyncBufRead + AsyncWrite + Unpin>(
    stream: &mut S,
    command: &str,
) -> ProbeResult<Reply> {
    write_all_flush(stream, command.as_bytes()).await?;
    expect_positive(read_reply(stream).await?)
}

fn expect_positive(reply: Reply) -> ProbeResult<Reply> {
    if reply.is_positive() {
        Ok(reply)
    } else {
        Err(ProbeError::rejected(reply))
    }
}

/// Turn a lettre error into ours, keeping the reply code, enhanced code and text.
fn from_lettre(err: lettre::transport::smtp::Error) -> ProbeError {
    use std::error::Error as _;
    if let Some(code) = err.status() {
        let code: u16 = code.to_string().parse().unwrap_or(0);
        let text = err.source().map(|s| s.to_string()).unwrap_or_default();
        return ProbeError::rejected(Reply::smtp(code, text));
    }
    if let Some(io) = err
        .source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
    {
        return ProbeError::io(io);
    }
    let text = err.to_string();
    if text.contains("incomplete response") {
        return ProbeError::closed();
    }
    let kind = if err.is_tls() {
        ErrorKind::Tls
    } else if err.is_response() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Network
    };
    ProbeError::new(kind, text)
}

/// What one SMTP session's outcome says, with its timings and TLS details; a
/// failed handshake still names the certificate the server presented.
pub fn smtp_result(
    outcome: ProbeResult<Reply>,
    phases_ms: crate::phase::Phases,
    total_ms: f64,
    tls: Option<TlsInfo>,
) -> ProtocolResult {
    let mut result = match outcome {
        Ok(reply) => ProtocolResult {
            ok: true,
            accepted: Some(true),
            reply: Some(reply),
            ..Default::default()
        },
        Err(err) => ProtocolResult {
            accepted: Some(false),
            reply: err.reply.clone(),
            tls: err.tls.as_deref().cloned(),
            error: Some(err),
            ..Default::default()
        },
    };
    result.tls = tls.or(result.tls);
    result.phases_ms = phases_ms;
    result.total_ms = total_ms;
    result
}

/// Send one message. Every phase is timed and bounded; the result says where it failed.
pub async fn send(ctx: &Context, message: &ProbeMessage) -> Sent {
    let mut clock = PhaseClock::new(Protocol::Smtp);
    let mut server = None;
    let mut tls = None;
    let started = Instant::now();
    let outcome = converse(ctx, message, &mut clock, &mut server, &mut tls).await;
    let accepted_at = outcome.as_ref().ok().map(|_| Instant::now());
    let total_ms = crate::phase::millis(started.elapsed());
    let result = smtp_result(outcome, clock.into_timings(), total_ms, tls);
    Sent {
        result,
        accepted_at,
        server,
    }
}

/// A session ready for mail, and the EHLO reply that describes it.
pub struct Established {
    pub stream: BoxStream,
    /// The last EHLO reply (after TLS when STARTTLS was used).
    pub ehlo: Reply,
}

/// Open a session up to the point where mail can be sent: connect, TLS, greeting,
/// EHLO (keeping the capabilities), STARTTLS per the policy and the EHLO after it.
pub async fn establish(
    ctx: &Context,
    endpoint: &Endpoint,
    clock: &mut PhaseClock,
    server: &mut Option<SmtpServerInfo>,
    tls_info: &mut Option<TlsInfo>,
) -> ProbeResult<Established> {
    let s = &ctx.settings;
    let t = s.timeouts;
    let stream = super::open_stream(ctx, endpoint, clock, tls_info).await?;
    let mut reader = BufReader::new(stream);
    let greeting = clock
        .run(Phase::Greeting, t.greeting, async {
            expect_positive(read_reply(&mut reader).await?)
        })
        .await?;
    let ehlo_command = format!("EHLO {}\r\n", s.helo_name);
    let ehlo = clock
        .run(Phase::Ehlo, t.command, exchange(&mut reader, &ehlo_command))
        .await?;
    let mut info = SmtpServerInfo::from_ehlo(greeting.text.clone(), &ehlo);

    let wants_tls = match super::starttls_wanted(endpoint, info.has("STARTTLS")) {
        Ok(w) => w,
        Err(e) => {
            *server = Some(info);
            return Err(e);
        }
    };
    let stream: BoxStream = if wants_tls {
        clock
            .run(
                Phase::Starttls,
                t.command,
                exchange(&mut reader, "STARTTLS\r\n"),
            )
            .await?;
        super::finish_starttls(ctx, endpoint, clock, reader, tls_info).await?
    } else {
        *server = Some(info);
        return Ok(Established {
            stream: super::unbuffer(endpoint, reader)?,
            ehlo,
        });
    };
    // Capabilities before TLS are not to be trusted (RFC 3207): ask again.
    let mut reader = BufReader::new(stream);
    let ehlo = clock
        .run(Phase::Ehlo, t.command, exchange(&mut reader, &ehlo_command))
        .await?;
    info = SmtpServerInfo::from_ehlo(greeting.text, &ehlo);
    *server = Some(info);
    Ok(Established {
        stream: super::unbuffer(endpoint, reader)?,
        ehlo,
    })
}

/// An SMTP reply as it went over the wire, for replaying it to lettre.
fn wire_form(reply: &Reply) -> Vec<u8> {
    let code = reply.code.unwrap_or(250);
    let lines: Vec<&str> = reply.text.split('\n').collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{line}\r\n").as_bytes());
    }
    out
}

async fn converse(
    ctx: &Context,
    message: &ProbeMessage,
    clock: &mut PhaseClock,
    server: &mut Option<SmtpServerInfo>,
    tls_info: &mut Option<TlsInfo>,
) -> ProbeResult<Reply> {
    let s = &ctx.settings;
    let t = s.timeouts;
    let Established { stream, ehlo } = establish(ctx, &s.smtp, clock, server, tls_info).await?;
    let encrypted = tls_info.is_some();

    // lettre reads a greeting and says EHLO before anything else: it is answered
    // from what was already said (and timed) above, without a round trip.
    let mut said = b"220 greeting already received\r\n".to_vec();
    said.extend_from_slice(&wire_form(&ehlo));
    // lettre keeps a reply in memory and re-parses it after every line without
    // yielding while data keeps coming: bound and pace what the server may send it.
    let (stream, _) = crate::budget::Budgeted::new(stream, LETTRE_READ_BUDGET);
    let replay = Replay::answering_first_line(said, Box::new(stream) as BoxStream);
    let client_id = ClientId::Domain(s.helo_name.clone());
    let mut conn = match tokio::time::timeout(
        t.command,
        AsyncSmtpConnection::connect_with_transport(Box::new(replay), &client_id),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(from_lettre(e).at(Protocol::Smtp, Phase::Ehlo)),
        Err(_) => return Err(ProbeError::timeout(t.command).at(Protocol::Smtp, Phase::Ehlo)),
    };
    let announces_size = server.as_ref().is_some_and(|i| i.advertised_size.is_some());
    let result = transaction(ctx, message, clock, &mut conn, announces_size, encrypted).await;
    match result {
        Ok(reply) => {
            // QUIT's answer does not change acceptance; a server dying here is still noted.
            let _ = clock
                .run(Phase::Quit, t.command, async {
                    conn.quit().await.map_err(from_lettre)
                })
                .await;
            Ok(reply)
        }
        Err(e) => {
            // Best effort, bounded: the server may already be gone.
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.abort()).await;
            Err(e)
        }
    }
}

async fn transaction(
    ctx: &Context,
    message: &ProbeMessage,
    clock: &mut PhaseClock,
    conn: &mut AsyncSmtpConnection,
    announce_size: bool,
    encrypted: bool,
) -> ProbeResult<Reply> {
    let s = &ctx.settings;
    let t = s.timeouts;
    let lift =
        |r: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>| {
            r.map(|resp| {
                let text: Vec<&str> = resp.message().collect();
                Reply::smtp(
                    resp.code().to_string().parse().unwrap_or(250),
                    text.join("\n"),
                )
            })
            .map_err(from_lettre)
        };

    if let Some(login) = &s.smtp_login {
        let offered = conn.server_info().supports_auth_mechanism(Mechanism::Plain)
            || conn.server_info().supports_auth_mechanism(Mechanism::Login);
        if offered {
            super::check_plaintext_login(ctx, &s.smtp, encrypted, Phase::Auth)?;
            let credentials =
                Credentials::new(login.user.clone(), login.password.expose().to_string());
            clock
                .run(Phase::Auth, t.command, async {
                    lift(
                        conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                            .await,
                    )
                    .map_err(|e| {
                        if e.reply
                            .as_ref()
                            .is_some_and(|r| matches!(r.code, Some(454 | 530 | 534 | 535)))
                        {
                            e.with_kind(ErrorKind::Auth)
                        } else {
                            e
                        }
                    })
                })
                .await?;
        }
    }

    let from: Address = s
        .from
        .parse()
        .map_err(|e| ProbeError::config(format!("sender {:?}: {e}", s.from)))?;
    let to: Address =
        s.to.parse()
            .map_err(|e| ProbeError::config(format!("recipient {:?}: {e}", s.to)))?;
    let mut params = Vec::new();
    if announce_size {
        params.push(MailParameter::Size(message.encoded_len() as usize));
    }
    clock
        .run(Phase::MailFrom, t.command, async {
            lift(conn.command(Mail::new(Some(from), params)).await)
        })
        .await?;
    clock
        .run(Phase::RcptTo, t.command, async {
            lift(conn.command(Rcpt::new(to, vec![])).await)
        })
        .await?;
    let body_limit = super::body_limit(ctx);
    clock
        .run(Phase::Data, body_limit, async {
            lift(conn.command(Data).await)?;
            lift(conn.message_iter(message.chunks()).await)
        })
        .await
}
