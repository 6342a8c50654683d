//! The SMTP prober: send one probe message and time every phase.
//!
//! We read the greeting, send the first EHLO and negotiate STARTTLS ourselves (to
//! time them, keep the advertised capabilities and use our own TLS settings), then
//! hand the live session to lettre for AUTH, MAIL, RCPT and DATA; the message body
//! itself we stream through a second handle on the same session. AUTH with a
//! bearer token (XOAUTH2, OAUTHBEARER) is ours too, before lettre.

use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, MailParameter, RcptParameter};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::core::auth::{AuthReason, Mechanism as AuthMechanism};
use crate::core::classify::{Evidence, ReplyClass};
use crate::core::endpoint::Endpoint;
use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Phases, Protocol, millis};
use crate::core::reply::Reply;
use crate::core::tls_info::TlsInfo;
use crate::io::budget::Budgeted;
use crate::io::clock::PhaseClock;
use crate::io::connect::{
    check_plaintext_login, finish_starttls, open_stream, starttls_wanted, unbuffer,
};
use crate::io::net::{BoxStream, Replay, write_all_flush};
use crate::io::shared::Shared;
use crate::model::result::{ProtocolResult, SmtpServerInfo};
use crate::probe::context::{Context, not_attempted};
use crate::protocol::dsn;
use crate::protocol::message::ProbeMessage;
use crate::protocol::sasl::{Exchange, check_not_expired, pick};
use crate::protocol::smtp::{
    DotStuffer, END_OF_DATA, authenticate_sasl, exchange, expect_positive, from_lettre, read_reply,
    wire_form,
};

/// All a server may send while lettre speaks (EHLO, AUTH, MAIL, RCPT, DATA,
/// QUIT replies): real replies are a few KiB.
const LETTRE_READ_BUDGET: u64 = 64 * 1024;
/// The DATA body is written in runs of about this many bytes.
const DATA_WRITE: usize = 256 * 1024;

/// The outcome of one send.
pub(crate) struct Sent {
    pub(crate) result: ProtocolResult,
    pub(crate) accepted_at: Option<Instant>,
    pub(crate) server: Option<SmtpServerInfo>,
}

/// What one SMTP session's outcome says, with its timings and TLS details; a
/// failed handshake still names the certificate the server presented.
pub(crate) fn smtp_result(
    outcome: ProbeResult<Reply>,
    phases_ms: Phases,
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
pub(crate) async fn send(ctx: &Context, message: &ProbeMessage) -> Sent {
    // No waiting twice: an endpoint that did not answer a rung is not asked again,
    // and nothing starts after the check's time limit.
    let not_attempted = ctx
        .down(Protocol::Smtp)
        .map(|down| not_attempted(Protocol::Smtp, &down))
        .or_else(|| {
            ctx.deadline()
                .passed()
                .then(|| ctx.deadline().exceeded(Protocol::Smtp, Phase::Connect))
        });
    if let Some(err) = not_attempted {
        let mut result = smtp_result(Err(err.clone()), Phases::new(), 0.0, None);
        result.skipped = Some(err.message);
        return Sent {
            result,
            accepted_at: None,
            server: None,
        };
    }
    ctx.count_session(Protocol::Smtp);
    let mut clock = PhaseClock::within(Protocol::Smtp, ctx.deadline());
    let mut server = None;
    let mut tls = None;
    let started = Instant::now();
    let mut envelope = None;
    let outcome = converse(
        ctx,
        message,
        &mut clock,
        &mut server,
        &mut tls,
        &mut envelope,
    )
    .await
    .map_err(|e| classify_refusal(e, message, server.as_ref(), tls.is_some()));
    if let Err(e) = &outcome {
        ctx.note_failure(Protocol::Smtp, e);
    }
    let accepted_at = outcome.as_ref().ok().map(|_| Instant::now());
    let total_ms = millis(started.elapsed());
    let mut result = smtp_result(outcome, clock.into_timings(), total_ms, tls);
    result.dsn_requested = envelope.map(|e: Envelope| e.request_dsn);
    result.pipelined = envelope.map(|e| e.pipelining);
    Sent {
        result,
        accepted_at,
        server,
    }
}

/// What the refusal means, from its reply and what this session knew: the size
/// declared against the size advertised, encryption, the STARTTLS offer.
fn classify_refusal(
    err: ProbeError,
    message: &ProbeMessage,
    server: Option<&SmtpServerInfo>,
    encrypted: bool,
) -> ProbeError {
    let advertised_size = server.and_then(|i| i.advertised_size);
    let err = err.classified(|reply| Evidence {
        protocol: Protocol::Smtp,
        phase: Phase::MailFrom,
        reply,
        // SIZE= is declared whenever the server advertises SIZE (see `converse`).
        declared_size: advertised_size.map(|_| message.encoded_len()),
        advertised_size,
        encrypted,
        tls_offered: server.is_some_and(|i| i.has("STARTTLS")),
    });
    if err.is_class(ReplyClass::AuthFailed) {
        err.with_kind(ErrorKind::Auth)
    } else {
        err
    }
}

/// A session ready for mail, and the EHLO reply that describes it.
pub(crate) struct Established {
    pub(crate) stream: BoxStream,
    /// The last EHLO reply (after TLS when STARTTLS was used).
    pub(crate) ehlo: Reply,
}

/// Open a session up to the point where mail can be sent: connect, TLS, greeting,
/// EHLO (keeping the capabilities), STARTTLS per the policy and the EHLO after it.
pub(crate) async fn establish(
    ctx: &Context,
    endpoint: &Endpoint,
    clock: &mut PhaseClock,
    server: &mut Option<SmtpServerInfo>,
    tls_info: &mut Option<TlsInfo>,
) -> ProbeResult<Established> {
    let s = &ctx.settings;
    let t = s.timeouts;
    let stream = open_stream(&ctx.conn, endpoint, clock, tls_info).await?;
    let mut reader = BufReader::new(stream);
    let greeting = clock
        .run(Phase::Greeting, t.greeting, async {
            expect_positive(read_reply(&mut reader).await?)
        })
        .await?;
    let ehlo_command = format!("EHLO {}\r\n", s.target.helo_name);
    let ehlo = clock
        .run(Phase::Ehlo, t.command, exchange(&mut reader, &ehlo_command))
        .await?;
    let mut info = SmtpServerInfo::from_ehlo(greeting.text.clone(), &ehlo);

    let wants_tls = match starttls_wanted(endpoint, info.has("STARTTLS")) {
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
        finish_starttls(&ctx.conn, endpoint, clock, reader, tls_info).await?
    } else {
        *server = Some(info);
        return Ok(Established {
            stream: unbuffer(endpoint, reader)?,
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
        stream: unbuffer(endpoint, reader)?,
        ehlo,
    })
}

async fn converse(
    ctx: &Context,
    message: &ProbeMessage,
    clock: &mut PhaseClock,
    server: &mut Option<SmtpServerInfo>,
    tls_info: &mut Option<TlsInfo>,
    envelope: &mut Option<Envelope>,
) -> ProbeResult<Reply> {
    let s = &ctx.settings;
    let t = s.timeouts;
    if let Some(login) = &s.target.smtp_login {
        check_not_expired(login).map_err(|e| e.at(Protocol::Smtp, Phase::Auth))?;
    }
    let Established { stream, ehlo } =
        establish(ctx, &s.target.smtp, clock, server, tls_info).await?;
    let encrypted = tls_info.is_some();
    // A bearer token is sent by our own SASL step (lettre cannot finish an
    // exchange the server answers with an error challenge); passwords go on
    // through lettre below.
    let stream = match &s.target.smtp_login {
        Some(login) if login.is_token() || login.mechanism.takes_token() => {
            let offered = server
                .as_ref()
                .map(SmtpServerInfo::auth_mechanisms)
                .unwrap_or_default();
            let mechanism = pick(login, &offered)
                .map_err(|e| e.at(Protocol::Smtp, Phase::Auth))?
                .ok_or_else(|| ProbeError::config("a token login needs a bearer mechanism"))?;
            check_plaintext_login(
                &s.target.smtp,
                encrypted,
                s.target.allow_plaintext_login,
                Phase::Auth,
            )?;
            let endpoint = &s.target.smtp;
            let mut exchange = Exchange::new(mechanism, login, &endpoint.host, endpoint.port);
            let mut reader = BufReader::new(stream);
            clock
                .run(
                    Phase::Auth,
                    t.command,
                    authenticate_sasl(&mut reader, &mut exchange, login),
                )
                .await?;
            unbuffer(endpoint, reader)?
        }
        _ => stream,
    };

    // lettre reads a greeting and says EHLO before anything else: it is answered
    // from what was already said (and timed) above, without a round trip.
    let mut said = b"220 greeting already received\r\n".to_vec();
    said.extend_from_slice(&wire_form(&ehlo));
    // lettre keeps a reply in memory and re-parses it after every line without
    // yielding while data keeps coming: bound and pace what the server may send it.
    let (stream, _) = Budgeted::new(stream, LETTRE_READ_BUDGET);
    let replay = Replay::answering_first_line(said, Box::new(stream) as BoxStream);
    // lettre speaks the commands; the DATA body goes out through our own handle.
    let lettre_side = Shared::new(Box::new(replay) as BoxStream);
    let body = lettre_side.clone();
    let client_id = ClientId::Domain(s.target.helo_name.clone());
    let conn = ctx
        .deadline()
        .run(Protocol::Smtp, Phase::Ehlo, t.command, async {
            AsyncSmtpConnection::connect_with_transport(Box::new(lettre_side), &client_id)
                .await
                .map_err(from_lettre)
        })
        .await
        .map_err(|e| e.at(Protocol::Smtp, Phase::Ehlo))?;
    let announces_size = server.as_ref().is_some_and(|i| i.advertised_size.is_some());
    if s.target.smtp_login.as_ref().is_some_and(|l| !l.is_token())
        && !offers_password_auth(&conn)
        && let Some(info) = server.as_mut()
    {
        let why = if encrypted {
            ""
        } else {
            " before TLS (STARTTLS was not used)"
        };
        info.notes.push(format!(
            "AUTH was not used: the server did not offer AUTH PLAIN or LOGIN{why}; the probe went on without AUTH"
        ));
    }
    let offers = |keyword| server.as_ref().is_some_and(|i| i.has(keyword));
    let options = Envelope {
        announce_size: announces_size,
        request_dsn: s.elsewhere.request_dsn && offers("DSN"),
        pipelining: s.plan.pipelining && offers("PIPELINING"),
        encrypted,
    };
    *envelope = Some(options);
    let mut session = Session { conn, body };
    let result = transaction(ctx, message, clock, &mut session, &options).await;
    match result {
        Ok(reply) => {
            // QUIT's answer does not change acceptance; a server dying here is still noted.
            let _ = clock
                .run(Phase::Quit, t.command, async {
                    if options.pipelining {
                        // Already sent behind the message.
                        lift(session.conn.read_response().await)
                    } else {
                        lift(session.conn.quit().await)
                    }
                })
                .await;
            Ok(reply)
        }
        Err(e) => {
            // Best effort, bounded: the server may already be gone.
            let _ = tokio::time::timeout(Duration::from_secs(1), session.conn.abort()).await;
            Err(e)
        }
    }
}

/// The session once lettre has it: lettre's connection speaks the commands, our
/// handle on the same stream writes the DATA body.
struct Session {
    conn: AsyncSmtpConnection,
    body: Shared<BoxStream>,
}

fn offers_password_auth(conn: &AsyncSmtpConnection) -> bool {
    conn.server_info().supports_auth_mechanism(Mechanism::Plain)
        || conn.server_info().supports_auth_mechanism(Mechanism::Login)
}

/// How this session's transaction goes, from the settings and what EHLO offered.
#[derive(Debug, Clone, Copy)]
struct Envelope {
    /// Declare the message's size (`SIZE=`, RFC 1870).
    announce_size: bool,
    /// Ask for delivery status notifications (RFC 3461).
    request_dsn: bool,
    /// MAIL, RCPT and DATA in one write, QUIT behind the body (RFC 2920).
    pipelining: bool,
    encrypted: bool,
}

async fn transaction(
    ctx: &Context,
    message: &ProbeMessage,
    clock: &mut PhaseClock,
    session: &mut Session,
    options: &Envelope,
) -> ProbeResult<Reply> {
    let Session {
        conn,
        body: body_side,
    } = session;
    let s = &ctx.settings;
    let t = s.timeouts;

    if let Some(login) = s.target.smtp_login.as_ref().filter(|l| !l.is_token()) {
        // `--auth plain|login` asks for that one; `auto` keeps PLAIN or LOGIN,
        // whichever is offered, and no AUTH at all when neither is.
        let mechanisms: &[Mechanism] = match login.mechanism {
            AuthMechanism::Plain => &[Mechanism::Plain],
            AuthMechanism::Login => &[Mechanism::Login],
            _ => &[Mechanism::Plain, Mechanism::Login],
        };
        let offered = mechanisms
            .iter()
            .any(|m| conn.server_info().supports_auth_mechanism(*m));
        if !offered && login.mechanism != AuthMechanism::Auto {
            return Err(ProbeError::auth_refused(
                Some(AuthReason::MechanismNotOffered),
                format!(
                    "the server does not offer AUTH {}",
                    login.mechanism.sasl_name()
                ),
            )
            .at(Protocol::Smtp, Phase::Auth));
        }
        if offered {
            check_plaintext_login(
                &s.target.smtp,
                options.encrypted,
                s.target.allow_plaintext_login,
                Phase::Auth,
            )?;
            let credentials =
                Credentials::new(login.user.clone(), login.password.expose().to_string());
            ctx.count_login(Protocol::Smtp);
            clock
                .run(Phase::Auth, t.command, async {
                    lift(conn.auth(mechanisms, &credentials).await).map_err(|e| {
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
        .target
        .from
        .parse()
        .map_err(|e| ProbeError::config(format!("sender {:?}: {e}", s.target.from)))?;
    let to: Address = s
        .target
        .to
        .parse()
        .map_err(|e| ProbeError::config(format!("recipient {:?}: {e}", s.target.to)))?;
    let mut params = Vec::new();
    if options.announce_size {
        params.push(MailParameter::Size(message.encoded_len() as usize));
    }
    let mut rcpt_params = Vec::new();
    if options.request_dsn {
        for (keyword, value) in dsn::mail_parameters(message.probe_id()) {
            params.push(MailParameter::Other {
                keyword: keyword.to_string(),
                value: Some(value),
            });
        }
        let (keyword, value) = dsn::RCPT_NOTIFY;
        rcpt_params.push(RcptParameter::Other {
            keyword: keyword.to_string(),
            value: Some(value.to_string()),
        });
    }
    let mail = Mail::new(Some(from), params);
    let rcpt = Rcpt::new(to, rcpt_params);
    if options.pipelining {
        pipelined_envelope(clock, conn, body_side, t.command, &mail, &rcpt).await?;
    } else {
        clock
            .run(Phase::MailFrom, t.command, async {
                lift(conn.command(mail).await)
            })
            .await?;
        clock
            .run(Phase::RcptTo, t.command, async {
                lift(conn.command(rcpt).await)
            })
            .await?;
    }
    let body_limit = s.timeouts.body();
    clock
        .run(Phase::Data, body_limit, async {
            if !options.pipelining {
                lift(conn.command(Data).await)?;
            }
            // Past lettre's byte-wise encoder: dots stuffed by a scan, written in
            // runs of up to DATA_WRITE bytes (a small message goes in one write).
            let mut stuffer = DotStuffer::default();
            let mut out = Vec::with_capacity(DATA_WRITE + 128 * 1024);
            for chunk in message.chunks() {
                out.extend_from_slice(&stuffer.stuff(&chunk));
                if out.len() >= DATA_WRITE {
                    body_side
                        .write_all(&out)
                        .await
                        .map_err(|e| ProbeError::io(&e))?;
                    out.clear();
                }
            }
            out.extend_from_slice(END_OF_DATA);
            // The message content may open a group (RFC 2920 3.1): QUIT rides along.
            if options.pipelining {
                out.extend_from_slice(QUIT);
            }
            write_all_flush(body_side, &out).await?;
            lift(conn.read_response().await)
        })
        .await
}

/// A lettre reply as ours; a refusal becomes an error that keeps the reply.
fn lift(
    r: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> ProbeResult<Reply> {
    r.map(|resp| {
        let text: Vec<&str> = resp.message().collect();
        Reply::smtp(
            resp.code().to_string().parse().unwrap_or(250),
            text.join("\n"),
        )
    })
    .map_err(from_lettre)
}

/// QUIT as it goes on the wire behind a pipelined message body.
const QUIT: &[u8] = b"QUIT\r\n";

/// MAIL, RCPT and DATA in one write (RFC 2920), each reply still read and timed as
/// its own phase, from the previous reply on. Every reply is read, so that the
/// session stays in step; the first refusal is the outcome. A server that answers
/// DATA with 354 although it refused the envelope gets an empty message (a lone dot).
async fn pipelined_envelope(
    clock: &mut PhaseClock,
    conn: &mut AsyncSmtpConnection,
    body_side: &mut Shared<BoxStream>,
    limit: Duration,
    mail: &Mail,
    rcpt: &Rcpt,
) -> ProbeResult<()> {
    let group = format!("{mail}{rcpt}{Data}");
    let mut refused = None;
    let mut data_accepted = false;
    for phase in [Phase::MailFrom, Phase::RcptTo, Phase::Data] {
        let outcome = clock
            .run(phase, limit, async {
                if phase == Phase::MailFrom {
                    write_all_flush(body_side, group.as_bytes()).await?;
                }
                lift(conn.read_response().await)
            })
            .await;
        match outcome {
            Ok(_) => data_accepted = phase == Phase::Data,
            // A refusal leaves the session in step: the later replies still come.
            Err(e) if e.reply.is_some() => {
                refused.get_or_insert(e);
            }
            // A server may refuse (421) and hang up: the refusal says more than the hang-up.
            Err(e) => return Err(refused.unwrap_or(e)),
        }
    }
    let Some(first_refusal) = refused else {
        return Ok(());
    };
    if data_accepted {
        // DATA was answered with 354 after all: end the empty message. Its reply
        // does not change the outcome.
        let _ = clock
            .run(Phase::Data, limit, async {
                write_all_flush(body_side, b".\r\n").await?;
                lift(conn.read_response().await)
            })
            .await;
    }
    Err(first_refusal)
}
