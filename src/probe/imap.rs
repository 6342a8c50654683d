//! The IMAP prober: find probe messages by their probe-id header, fetch and verify them, and
//! delete exactly those (UID EXPUNGE, never a bare EXPUNGE of other messages).
//!
//! The greeting, CAPABILITY and STARTTLS are spoken by hand (async-imap has no
//! STARTTLS); async-imap takes over at LOGIN or, with a bearer token, at
//! AUTHENTICATE (XOAUTH2 or OAUTHBEARER, SASL-IR when offered).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_imap::Session;
use futures::TryStreamExt;
use tokio::io::BufReader;

use crate::core::auth::Mechanism as AuthMechanism;
use crate::core::classify::{Evidence, ReplyClass};
use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Phases, Protocol};
use crate::core::probe_id::{PROBE_HEADER, PROBE_ID_PREFIX, header_probe_id, is_probe_id};
use crate::core::reply::Reply;
use crate::core::tls_info::TlsInfo;
use crate::io::budget::{Allowance, Budgeted};
use crate::io::clock::PhaseClock;
use crate::io::connect::{
    check_plaintext_login, finish_starttls, open_stream, starttls_wanted, unbuffer,
};
use crate::io::net::{BoxStream, read_line_bounded};
use crate::model::result::Verification;
use crate::probe::context::Context;
use crate::probe::watch::{Accepted, Locator, Mailbox, Wanted, open_timed};
use crate::protocol::imap::{
    MAX_STATUS_LINE, auth_mechanisms, authenticate_sasl, from_imap, parse_capabilities,
    search_query, split_status_line, tagged, timed, uid_set,
};
use crate::protocol::sasl::{Exchange, check_not_expired, pick};
use crate::protocol::verifier::Verifier;

/// What the server may send for one step other than a message FETCH (login,
/// SELECT, SEARCH with its header fetches, STORE, EXPUNGE): async-imap buffers a
/// whole response, so a hostile one must not grow without bound.
const STEP_BUDGET: u64 = 16 << 20;

pub(crate) struct ImapMailbox {
    /// Taken out while IDLE runs; `None` after a failed IDLE (the session is gone).
    session: Option<Session<BoxStream>>,
    /// The server supports IDLE (RFC 2177): wait for new mail instead of polling.
    idle: bool,
    uidplus: bool,
    /// Bytes the server may still send in the current step.
    allowance: Allowance,
}

impl ImapMailbox {
    async fn connect(
        ctx: &Context,
        clock: &mut PhaseClock,
        tls_info: &mut Option<TlsInfo>,
    ) -> ProbeResult<Self> {
        let s = &ctx.settings;
        let t = s.timeouts;
        let endpoint = s
            .target
            .imap
            .as_ref()
            .ok_or_else(|| ProbeError::config("no IMAP endpoint"))?;
        let login = s
            .target
            .imap_login
            .as_ref()
            .ok_or_else(|| ProbeError::config("no IMAP login"))?;
        check_not_expired(login).map_err(|e| e.at(Protocol::Imap, Phase::Login))?;
        let stream = open_stream(&ctx.conn, endpoint, clock, tls_info).await?;
        let mut reader = BufReader::new(stream);
        let greeting = clock
            .run(Phase::Greeting, t.greeting, async {
                let mut raw = Vec::new();
                read_line_bounded(&mut reader, &mut raw, MAX_STATUS_LINE).await?;
                let line = String::from_utf8_lossy(&raw).into_owned();
                match split_status_line(&line) {
                    Some(("*", "OK" | "PREAUTH", _)) => Ok(line),
                    Some(("*", "BYE", text)) => Err(ProbeError::rejected(Reply::textual(format!(
                        "BYE {}",
                        text.trim()
                    )))),
                    _ => Err(ProbeError::protocol_violation(format!(
                        "not an IMAP greeting: {:?}",
                        crate::core::reply::truncate(line.trim_end(), 80)
                    ))),
                }
            })
            .await?;
        let mut capabilities = match parse_capabilities(&greeting) {
            Some(c) => c,
            None => {
                let lines = clock
                    .run(
                        Phase::Capability,
                        t.command,
                        tagged(&mut reader, "c1", "CAPABILITY"),
                    )
                    .await?;
                lines
                    .iter()
                    .find_map(|l| parse_capabilities(l))
                    .unwrap_or_default()
            }
        };
        let has = |caps: &[String], c: &str| caps.iter().any(|x| x == c);
        let wants_tls = starttls_wanted(endpoint, has(&capabilities, "STARTTLS"))?;
        let stream: BoxStream = if wants_tls {
            clock
                .run(
                    Phase::Starttls,
                    t.command,
                    tagged(&mut reader, "s1", "STARTTLS"),
                )
                .await?;
            // Capabilities before TLS are not to be trusted (RFC 3501 6.2.1).
            capabilities.clear();
            finish_starttls(&ctx.conn, endpoint, clock, reader, tls_info).await?
        } else {
            unbuffer(endpoint, reader)?
        };
        // SASL (a bearer token, or `--auth plain`) needs the mechanisms on offer.
        let sasl = login.is_token() || login.mechanism == AuthMechanism::Plain;
        let (stream, capabilities) = if sasl && capabilities.is_empty() {
            // After STARTTLS: the mechanisms on offer are only known by asking.
            let mut reader = BufReader::new(stream);
            let lines = clock
                .run(
                    Phase::Capability,
                    t.command,
                    tagged(&mut reader, "c2", "CAPABILITY"),
                )
                .await?;
            let caps = lines
                .iter()
                .find_map(|l| parse_capabilities(l))
                .unwrap_or_default();
            (unbuffer(endpoint, reader)?, caps)
        } else {
            (stream, capabilities)
        };
        if tls_info.is_none() {
            if !sasl && has(&capabilities, "LOGINDISABLED") {
                let mut err = ProbeError::new(
                    ErrorKind::Unsupported,
                    "the IMAP server disables LOGIN without TLS (LOGINDISABLED); use imaps:// or allow STARTTLS",
                )
                .at(Protocol::Imap, Phase::Login);
                err.class = Some(ReplyClass::PlaintextDisabled);
                return Err(err);
            }
            check_plaintext_login(
                endpoint,
                false,
                s.target.allow_plaintext_login,
                Phase::Login,
            )?;
        }

        let encrypted = tls_info.is_some();
        let tls_offered = ["STARTTLS", "LOGINDISABLED", "XTLSREQUIRED"]
            .iter()
            .any(|c| has(&capabilities, c));
        let (stream, allowance) = Budgeted::imap(stream, STEP_BUDGET);
        let client = async_imap::Client::new(Box::new(stream) as BoxStream);
        let mechanism = if sasl {
            pick(login, &auth_mechanisms(&capabilities))
                .map_err(|e| e.at(Protocol::Imap, Phase::Login))?
        } else {
            None
        };
        let mut session = clock
            .run(Phase::Login, t.command, async {
                if let Some(mechanism) = mechanism {
                    let mut exchange =
                        Exchange::new(mechanism, login, &endpoint.host, endpoint.port);
                    let sasl_ir = has(&capabilities, "SASL-IR");
                    return authenticate_sasl(client, &mut exchange, login, sasl_ir).await;
                }
                client
                    .login(&login.user, login.password.expose())
                    .await
                    .map_err(|(e, _)| {
                        let e = from_imap(e);
                        if e.kind() == ErrorKind::Rejected {
                            e.with_kind(ErrorKind::Auth)
                        } else {
                            e
                        }
                    })
            })
            .await
            .map_err(|e| {
                let e = e.classified(|reply| Evidence {
                    protocol: Protocol::Imap,
                    phase: Phase::Login,
                    reply,
                    declared_size: None,
                    advertised_size: None,
                    encrypted,
                    tls_offered,
                });
                if e.is_class(ReplyClass::PlaintextDisabled) {
                    e.with_kind(ErrorKind::Unsupported)
                } else {
                    e
                }
            })?;
        let caps = clock
            .run(Phase::Capability, t.command, async {
                session.capabilities().await.map_err(from_imap)
            })
            .await?;
        let uidplus = caps.has_str("UIDPLUS");
        let idle = caps.has_str("IDLE");
        clock
            .run(Phase::Select, t.command, async {
                session.select("INBOX").await.map_err(from_imap)
            })
            .await?;
        Ok(ImapMailbox {
            session: Some(session),
            idle,
            uidplus,
            allowance,
        })
    }
}

impl ImapMailbox {
    /// Which of `ids` a fresh session still finds.
    async fn still_there(ctx: &Context, ids: &[&str]) -> ProbeResult<HashSet<String>> {
        let (mut fresh, _, _) = Self::open(ctx).await.map_err(|(e, _)| e)?;
        let found = fresh.find(ctx, Wanted::Ids(ids)).await;
        fresh.close(ctx).await;
        Ok(found?.into_keys().collect())
    }

    fn session(&mut self) -> ProbeResult<&mut Session<BoxStream>> {
        self.session
            .as_mut()
            .ok_or_else(|| ProbeError::new(ErrorKind::Closed, "the IMAP session ended during IDLE"))
    }
}

impl Mailbox for ImapMailbox {
    const PROTOCOL: Protocol = Protocol::Imap;
    const SNAPSHOT: bool = false;

    async fn open(ctx: &Context) -> Result<(Self, Phases, Option<TlsInfo>), (ProbeError, Phases)> {
        open_timed(Protocol::Imap, async |clock, tls| {
            Self::connect(ctx, clock, tls).await
        })
        .await
    }

    async fn find(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
    ) -> ProbeResult<HashMap<String, Locator>> {
        let limit = ctx.settings.timeouts.command;
        self.allowance.grant(STEP_BUDGET);
        let session = self.session()?;
        let queries: Vec<String> = match wanted {
            // Bounded query length: search in batches.
            Wanted::Ids(ids) => ids.chunks(50).map(search_query).collect(),
            Wanted::AllProbes => vec![format!("HEADER {PROBE_HEADER} \"{PROBE_ID_PREFIX}\"")],
        };
        let step = async {
            // NOOP lets the server announce mail that arrived since the last command.
            session.noop().await.map_err(from_imap)?;
            let mut found = HashMap::new();
            for query in queries {
                let uids = session.uid_search(query).await.map_err(from_imap)?;
                if uids.is_empty() {
                    continue;
                }
                let fetches: Vec<_> = session
                    .uid_fetch(
                        uid_set(uids),
                        format!("(UID BODY.PEEK[HEADER.FIELDS ({PROBE_HEADER})])"),
                    )
                    .await
                    .map_err(from_imap)?
                    .try_collect()
                    .await
                    .map_err(from_imap)?;
                for f in fetches {
                    // SEARCH HEADER matches substrings: keep exact ids only.
                    if let (Some(uid), Some(id)) = (f.uid, f.header().and_then(header_probe_id))
                        && wanted.matches(&id)
                    {
                        found.insert(id, Locator::ImapUid(uid));
                    }
                }
            }
            Ok(found)
        };
        timed(limit, step)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Search))
    }

    async fn fetch(
        &mut self,
        ctx: &Context,
        at: &Locator,
        message: &Accepted,
    ) -> ProbeResult<Verification> {
        let Locator::ImapUid(uid) = at else {
            return Err(ProbeError::config("not an IMAP locator"));
        };
        // Delivery adds trace headers; far more than was sent is not our message.
        self.allowance.grant(message.encoded_len * 2 + (1 << 20));
        let session = self.session()?;
        let step = async {
            let mut fetches = session
                .uid_fetch(uid.to_string(), "(UID BODY.PEEK[])")
                .await
                .map_err(from_imap)?;
            let mut verification = None;
            while let Some(f) = fetches.try_next().await.map_err(from_imap)? {
                if f.uid == Some(*uid)
                    && let Some(body) = f.body()
                {
                    verification = Some(Verifier::verify_bytes(&message.expected, body));
                }
            }
            verification.ok_or_else(|| {
                ProbeError::new(
                    ErrorKind::NotDelivered,
                    "the message vanished before it could be fetched",
                )
            })
        };
        timed(ctx.settings.timeouts.body(), step)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Fetch))
    }

    async fn delete(
        &mut self,
        ctx: &Context,
        which: &[(String, Locator)],
    ) -> ProbeResult<Vec<String>> {
        let ours: Vec<(String, u32)> = which
            .iter()
            .filter(|(id, _)| is_probe_id(id))
            .filter_map(|(id, at)| match at {
                Locator::ImapUid(uid) => Some((id.clone(), *uid)),
                _ => None,
            })
            .collect();
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(ours.iter().map(|(_, u)| *u));
        let uidplus = self.uidplus;
        self.allowance.grant(STEP_BUDGET);
        let session = self.session()?;
        let step = async {
            let _: Vec<_> = session
                .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                .await
                .map_err(from_imap)?
                .try_collect()
                .await
                .map_err(from_imap)?;
            if uidplus {
                let _: Vec<_> = session
                    .uid_expunge(&set)
                    .await
                    .map_err(from_imap)?
                    .try_collect()
                    .await
                    .map_err(from_imap)?;
            } else {
                // Without UID EXPUNGE a bare EXPUNGE would also remove other messages
                // someone marked \Deleted: only expunge when ours are the only ones.
                let flagged = session.uid_search("DELETED").await.map_err(from_imap)?;
                let mine: HashSet<u32> = ours.iter().map(|(_, u)| *u).collect();
                if flagged.iter().all(|u| mine.contains(u)) {
                    let _: Vec<_> = session
                        .expunge()
                        .await
                        .map_err(from_imap)?
                        .try_collect()
                        .await
                        .map_err(from_imap)?;
                } else {
                    return Err(ProbeError::new(
                        ErrorKind::Unsupported,
                        "the server lacks UIDPLUS and other messages are marked deleted; probe messages were flagged \\Deleted but not expunged",
                    ));
                }
            }
            Ok(ours.iter().map(|(id, _)| id.clone()).collect())
        };
        let outcome = timed(ctx.settings.timeouts.command, step)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Delete));
        match outcome {
            // An answer we could not parse (Mailutils answers EXPUNGE with
            // `* n EXPUNGED`) or a lost session says nothing about what was
            // deleted: look again in a fresh session.
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::Protocol | ErrorKind::Closed | ErrorKind::Reset
                ) =>
            {
                self.session = None;
                let ids: Vec<&str> = ours.iter().map(|(id, _)| id.as_str()).collect();
                Self::still_there(ctx, &ids)
                    .await
                    .map(|left| {
                        ids.iter()
                            .filter(|id| !left.contains(**id))
                            .map(|id| id.to_string())
                            .collect()
                    })
                    .map_err(|_| e)
            }
            other => other,
        }
    }

    async fn wait_for_change(&mut self, ctx: &Context, limit: Duration) -> ProbeResult<()> {
        if !self.idle {
            tokio::time::sleep(limit.min(ctx.settings.plan.poll_interval)).await;
            return Ok(());
        }
        let session = self
            .session
            .take()
            .ok_or_else(|| ProbeError::new(ErrorKind::Closed, "the IMAP session has ended"))?;
        self.allowance.grant(STEP_BUDGET);
        let mut handle = session.idle();
        let cycle = async {
            handle.init().await.map_err(from_imap)?;
            {
                // New mail (EXISTS) or the time limit, whichever comes first.
                let (wait, _stop) = handle.wait_with_timeout(limit);
                wait.await.map_err(from_imap)?;
            }
            handle.done().await.map_err(from_imap)
        };
        let bound = limit + ctx.settings.timeouts.command;
        let session = timed(bound, cycle)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Delivery))?;
        self.session = Some(session);
        Ok(())
    }

    async fn close(mut self, ctx: &Context) {
        let limit = ctx.settings.timeouts.command.min(Duration::from_secs(5));
        self.allowance.grant(STEP_BUDGET);
        if let Some(mut session) = self.session.take() {
            let _ = tokio::time::timeout(limit, session.logout()).await;
        }
    }
}
