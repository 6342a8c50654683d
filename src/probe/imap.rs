//! The IMAP prober: find probe messages by their probe-id header, fetch and verify them, and
//! delete exactly those (UID EXPUNGE, never a bare EXPUNGE of other messages).
//!
//! The greeting, CAPABILITY and STARTTLS are spoken by hand (async-imap has no
//! STARTTLS); async-imap takes over at LOGIN or, with a bearer token, at
//! AUTHENTICATE (XOAUTH2 or OAUTHBEARER, SASL-IR when offered). The message FETCH
//! is spoken on the session's stream by hand, so the body streams into the verifier.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use async_imap::Session;
use async_imap::extensions::idle::IdleResponse;
use async_imap::types::{NameAttribute, UnsolicitedResponse};
use futures::TryStreamExt;
use tokio::io::BufReader;

use crate::core::auth::Mechanism as AuthMechanism;
use crate::core::classify::ReplyClass;
use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Phases, Protocol};
use crate::core::probe_id::{PROBE_HEADER, PROBE_ID_PREFIX, header_probe_id, is_probe_id};
use crate::core::reply::Reply;
use crate::core::secret::Login;
use crate::core::tls_info::TlsInfo;
use crate::io::budget::{Allowance, Budgeted};
use crate::io::clock::PhaseClock;
use crate::io::connect::{
    check_plaintext_login, finish_starttls, open_stream, starttls_wanted, unbuffer,
};
use crate::io::net::{BoxStream, read_line_bounded};
use crate::model::result::Verification;
use crate::probe::bounces::Notice;
use crate::probe::context::{Context, not_attempted};
use crate::probe::wait::{ImapPacing, StatusSays};
use crate::probe::watch::{Accepted, Locator, Look, Mailbox, Wanted, open_timed};
use crate::protocol::dsn::{MAX_NOTIFICATION_BYTES, Notification};
use crate::protocol::folders::{Listed, junk_folder, notification_query};
use crate::protocol::imap::{
    MAX_STATUS_LINE, auth_mechanisms, authenticate_sasl, from_imap, parse_capabilities,
    search_query, split_status_line, tagged, timed, uid_set,
};
use crate::protocol::imap_fetch::uid_fetch_body;
use crate::protocol::sasl::{Exchange, check_not_expired, pick};
use crate::protocol::verifier::Verifier;

/// What the server may send for one step other than a message FETCH (login,
/// SELECT, SEARCH with its header fetches, STORE, EXPUNGE): async-imap buffers a
/// whole response, so a hostile one must not grow without bound.
const STEP_BUDGET: u64 = 16 << 20;

pub(crate) struct ImapMailbox {
    /// Taken out while IDLE runs; `None` after a failed IDLE (the session is gone).
    session: Option<Session<BoxStream>>,
    /// When to IDLE and when to poll with STATUS (IDLE offered, and not caught
    /// keeping news back).
    pacing: ImapPacing,
    uidplus: bool,
    /// Bytes the server may still send in the current step.
    allowance: Allowance,
    /// Folders watched besides INBOX (Junk, `--folders`), as the server names them.
    folders: Vec<String>,
    /// The folder selected now (INBOX between steps, so IDLE watches it).
    selected: String,
    /// Messages already read and found to be no notification about a probe message.
    not_notices: HashSet<(String, u32)>,
    /// UIDNEXT of each watched folder besides INBOX at the last quick look.
    folder_uidnext: HashMap<String, Option<u32>>,
}

impl ImapMailbox {
    async fn connect(
        ctx: &Context,
        login: &Login,
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
        check_not_expired(login).map_err(|e| e.at(Protocol::Imap, Phase::Login))?;
        ctx.count_session(Protocol::Imap);
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
        ctx.count_login(Protocol::Imap);
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
            .map_err(|e| e.classified_login(Protocol::Imap, encrypted, tls_offered))?;
        let caps = clock
            .run(Phase::Capability, t.command, async {
                session.capabilities().await.map_err(from_imap)
            })
            .await?;
        let uidplus = caps.has_str("UIDPLUS");
        let idle = caps.has_str("IDLE");
        if !idle {
            ctx.note(
                Protocol::Imap,
                "the IMAP server offers no IDLE; STATUS was polled instead (at most once per poll interval)",
            );
        }
        let (folders, uidnext) = clock
            .run(Phase::Select, t.command, async {
                let folders = watched_folders(ctx, &mut session).await?;
                let inbox = session.select("INBOX").await.map_err(from_imap)?;
                Ok((folders, inbox.uid_next))
            })
            .await?;
        Ok(ImapMailbox {
            session: Some(session),
            pacing: ImapPacing::new(idle, uidnext),
            uidplus,
            allowance,
            folders,
            selected: "INBOX".to_string(),
            not_notices: HashSet::new(),
            folder_uidnext: HashMap::new(),
        })
    }

    /// Which of `ids` a fresh session still finds.
    async fn still_there(ctx: &Context, ids: &[&str]) -> ProbeResult<HashSet<String>> {
        let (mut fresh, _, _) = Self::open(ctx).await.map_err(|(e, _)| e)?;
        let found = fresh.find(ctx, Wanted::Ids(ids)).await;
        fresh.close(ctx).await;
        Ok(found?.into_keys().collect())
    }

    /// Log in as `login` (the `--bounce-mailbox`) instead of the IMAP login.
    /// An endpoint found down is not waited on again.
    pub(crate) async fn open_as(ctx: &Context, login: &Login) -> ProbeResult<Self> {
        if let Some(down) = ctx.down(Protocol::Imap) {
            return Err(not_attempted(Protocol::Imap, &down));
        }
        let mut clock = PhaseClock::within(Protocol::Imap, ctx.deadline());
        let opened = Self::connect(ctx, login, &mut clock, &mut None)
            .await
            .map_err(|e| e.at(Protocol::Imap, Phase::Connect));
        if let Err(e) = &opened {
            ctx.note_failure(Protocol::Imap, e);
        }
        opened
    }

    /// Select `folder` unless it is selected already.
    async fn select(&mut self, ctx: &Context, folder: &str) -> ProbeResult<()> {
        if self.selected == folder {
            return Ok(());
        }
        let limit = ctx.settings.timeouts.command;
        let session = self.session()?;
        ctx.deadline()
            .run(Protocol::Imap, Phase::Select, limit, async {
                session.select(folder).await.map_err(from_imap)
            })
            .await?;
        self.selected = folder.to_string();
        Ok(())
    }

    /// The probe messages in the selected folder (`None`: INBOX).
    async fn find_here(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
        folder: Option<&str>,
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
                        let at = match folder {
                            None => Locator::ImapUid(uid),
                            Some(f) => Locator::ImapIn {
                                folder: f.to_string(),
                                uid,
                            },
                        };
                        found.insert(id, at);
                    }
                }
            }
            Ok(found)
        };
        ctx.deadline()
            .run(Protocol::Imap, Phase::Search, limit, step)
            .await
    }

    /// Notifications about the wanted probe messages in the selected folder.
    async fn notifications_here(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
        folder: &str,
    ) -> ProbeResult<Vec<Notice>> {
        let limit = ctx.settings.timeouts.command;
        let queries: Vec<String> = match wanted {
            Wanted::Ids(ids) => ids
                .chunks(50)
                .map(|c| notification_query(Some(c), SystemTime::now()))
                .collect(),
            Wanted::AllProbes => vec![notification_query(None, SystemTime::now())],
        };
        self.allowance.grant(STEP_BUDGET);
        let known: HashSet<u32> = self
            .not_notices
            .iter()
            .filter(|(f, _)| f == folder)
            .map(|(_, u)| *u)
            .collect();
        let session = self.session()?;
        let step = async {
            let mut candidates = Vec::new();
            for query in queries {
                let uids = session.uid_search(query).await.map_err(from_imap)?;
                candidates.extend(uids.into_iter().filter(|u| !known.contains(u)));
            }
            candidates.sort_unstable();
            candidates.dedup();
            let mut read = Vec::new();
            // Only the first bytes: the report parts come first, and a returned
            // message behind them is never needed whole.
            for chunk in candidates.chunks(20) {
                let fetches: Vec<_> = session
                    .uid_fetch(
                        uid_set(chunk.iter().copied()),
                        format!("(UID BODY.PEEK[]<0.{MAX_NOTIFICATION_BYTES}>)"),
                    )
                    .await
                    .map_err(from_imap)?
                    .try_collect()
                    .await
                    .map_err(from_imap)?;
                for f in fetches {
                    if let (Some(uid), Some(body)) = (f.uid, f.body()) {
                        read.push((uid, Notification::parse(body)));
                    }
                }
            }
            Ok(read)
        };
        // Notifications are few and small; reading them may take a few commands.
        let read = ctx
            .deadline()
            .run(Protocol::Imap, Phase::Search, limit * 2, step)
            .await?;
        let mut notices = Vec::new();
        for (uid, parsed) in read {
            let at = if folder == "INBOX" {
                Locator::ImapUid(uid)
            } else {
                Locator::ImapIn {
                    folder: folder.to_string(),
                    uid,
                }
            };
            let notice = parsed.and_then(|n| {
                let (probe_id, matched_by) = n.about(|id| wanted.matches(id))?;
                let bounce = n.bounce(matched_by, folder)?;
                Some(Notice {
                    probe_id,
                    bounce,
                    at,
                })
            });
            match notice {
                Some(n) => notices.push(n),
                // Not about the wanted messages (a foreign bounce, mail quoting an
                // id): never read again in this session.
                None => {
                    self.not_notices.insert((folder.to_string(), uid));
                }
            }
        }
        Ok(notices)
    }

    /// Flag and expunge exactly these UIDs in the selected folder.
    async fn expunge_uids(&mut self, ctx: &Context, uids: &[u32]) -> ProbeResult<()> {
        let set = uid_set(uids.iter().copied());
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
                let mine: HashSet<u32> = uids.iter().copied().collect();
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
            Ok(())
        };
        ctx.deadline()
            .run(
                Protocol::Imap,
                Phase::Delete,
                ctx.settings.timeouts.command,
                step,
            )
            .await
    }

    /// Fetch one message of the selected folder and verify it while it streams.
    async fn fetch_selected(
        &mut self,
        ctx: &Context,
        uid: u32,
        message: &Accepted,
    ) -> ProbeResult<Verification> {
        // Delivery adds trace headers; far more than was sent is not our message.
        let max_bytes = message.encoded_len * 2 + (1 << 20);
        self.allowance.grant(max_bytes);
        let session = self.session()?;
        let mut verifier = Verifier::new(&message.expected);
        // Spoken on the session's stream so the literal streams into the verifier
        // (async-imap would hold the whole message in memory).
        let mut sink = |line: &[u8]| verifier.line(line);
        let step = uid_fetch_body(session.get_mut(), "mpf", uid, max_bytes, &mut sink);
        let fetched = ctx
            .deadline()
            .run(
                Protocol::Imap,
                Phase::Fetch,
                ctx.settings.timeouts.body(),
                step,
            )
            .await;
        match fetched {
            Ok(true) => Ok(verifier.finish()),
            Ok(false) => Err(ProbeError::new(
                ErrorKind::NotDelivered,
                "the message vanished before it could be fetched",
            )),
            Err(e) => Err(e),
        }
        .map_err(|e| e.at(Protocol::Imap, Phase::Fetch))
    }

    /// INBOX (`None`) and then every watched folder.
    fn all_folders(&self) -> Vec<Option<String>> {
        std::iter::once(None)
            .chain(self.folders.iter().cloned().map(Some))
            .collect()
    }
}

/// Whether the server said EXISTS or RECENT since this was last asked (the
/// channel keeps what async-imap did not answer itself; it is emptied here).
fn announced_new_mail(session: &mut Session<BoxStream>) -> bool {
    let mut news = false;
    while let Ok(said) = session.unsolicited_responses.try_recv() {
        news |= matches!(
            said,
            UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
        );
    }
    news
}

/// The folders to watch besides INBOX: the Junk folder (when asked for) and
/// `--folders` that exist, as LIST names them.
async fn watched_folders(
    ctx: &Context,
    session: &mut Session<BoxStream>,
) -> ProbeResult<Vec<String>> {
    let e = &ctx.settings.elsewhere;
    if !e.junk && e.folders.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<_> = session
        .list(Some(""), Some("*"))
        .await
        .map_err(from_imap)?
        .try_collect()
        .await
        .map_err(from_imap)?;
    let listed: Vec<Listed> = names
        .iter()
        .map(|n| Listed {
            name: n.name().to_string(),
            delimiter: n.delimiter().map(str::to_string),
            junk: n.attributes().contains(&NameAttribute::Junk),
            selectable: !n.attributes().contains(&NameAttribute::NoSelect),
        })
        .collect();
    let mut folders = Vec::new();
    if e.junk
        && let Some(junk) = junk_folder(&listed)
    {
        folders.push(junk);
    }
    for wanted in &e.folders {
        if let Some(l) = listed.iter().find(|l| &l.name == wanted)
            && !folders.contains(&l.name)
            && !l.name.eq_ignore_ascii_case("INBOX")
        {
            folders.push(l.name.clone());
        }
    }
    Ok(folders)
}

impl ImapMailbox {
    /// One IDLE of at most `spell` on INBOX: true when the server said something.
    async fn idle_once(&mut self, ctx: &Context, spell: Duration) -> ProbeResult<bool> {
        let session = self
            .session
            .take()
            .ok_or_else(|| ProbeError::new(ErrorKind::Closed, "the IMAP session has ended"))?;
        self.allowance.grant(STEP_BUDGET);
        ctx.with_counts(Protocol::Imap, |c| c.idle_commands += 1);
        let mut handle = session.idle();
        let cycle = async {
            handle.init().await.map_err(from_imap)?;
            let news = {
                // New mail (EXISTS), any other word from the server, or the spell's end.
                let (wait, _stop) = handle.wait_with_timeout(spell);
                !matches!(wait.await.map_err(from_imap)?, IdleResponse::Timeout)
            };
            let session = handle.done().await.map_err(from_imap)?;
            Ok((session, news))
        };
        let bound = spell + ctx.settings.timeouts.command;
        let (session, news) = ctx
            .deadline()
            .run(Protocol::Imap, Phase::Delivery, bound, cycle)
            .await?;
        self.session = Some(session);
        Ok(news)
    }

    /// STATUS INBOX; SELECT it again when it has new mail, so that servers that
    /// keep news from an open session (GNU Mailutils) show it to SEARCH.
    async fn status_poll(&mut self, ctx: &Context, after_quiet_idle: bool) -> ProbeResult<()> {
        let limit = ctx.settings.timeouts.command;
        self.allowance.grant(STEP_BUDGET);
        ctx.with_counts(Protocol::Imap, |c| c.status_polls += 1);
        let session = self.session()?;
        let status = ctx
            .deadline()
            .run(Protocol::Imap, Phase::Search, limit, async {
                session
                    .status("INBOX", "(UIDNEXT MESSAGES)")
                    .await
                    .map_err(from_imap)
            })
            .await?;
        let uidnext = status.uid_next.unwrap_or(0);
        let was_idling = self.pacing.idling();
        if self
            .pacing
            .status(Instant::now(), uidnext, after_quiet_idle)
            == StatusSays::Changed
        {
            if was_idling && !self.pacing.idling() {
                ctx.note(
                    Protocol::Imap,
                    "the IMAP server did not announce new mail during IDLE; STATUS was polled instead (at most once per poll interval)",
                );
            }
            let session = self.session()?;
            ctx.deadline()
                .run(Protocol::Imap, Phase::Select, limit, async {
                    session.select("INBOX").await.map_err(from_imap)
                })
                .await?;
            self.selected = "INBOX".to_string();
        }
        Ok(())
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
        let Some(login) = ctx.settings.target.imap_login.as_ref() else {
            return Err((ProbeError::config("no IMAP login"), Phases::new()));
        };
        open_timed(Protocol::Imap, ctx.deadline(), async |clock, tls| {
            Self::connect(ctx, login, clock, tls).await
        })
        .await
    }

    async fn find(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
    ) -> ProbeResult<HashMap<String, Locator>> {
        let mut found = HashMap::new();
        for folder in self.all_folders() {
            self.select(ctx, folder.as_deref().unwrap_or("INBOX"))
                .await?;
            found.extend(self.find_here(ctx, wanted, folder.as_deref()).await?);
        }
        self.select(ctx, "INBOX").await?;
        Ok(found)
    }

    /// NOOP on INBOX (selected between steps): new mail comes back as EXISTS or
    /// RECENT, here or after any earlier command; STATUS UIDNEXT for each other
    /// watched folder, whose news an INBOX session does not hear.
    async fn changed(&mut self, ctx: &Context) -> ProbeResult<Look> {
        let limit = ctx.settings.timeouts.command;
        self.allowance.grant(STEP_BUDGET);
        let folders = self.folders.clone();
        let session = self.session()?;
        let (news, uidnexts) = ctx
            .deadline()
            .run(Protocol::Imap, Phase::Search, limit, async {
                let mut news = announced_new_mail(session);
                session.noop().await.map_err(from_imap)?;
                news |= announced_new_mail(session);
                let mut uidnexts = Vec::new();
                for folder in &folders {
                    let status = session
                        .status(folder, "(UIDNEXT)")
                        .await
                        .map_err(from_imap)?;
                    uidnexts.push(status.uid_next);
                }
                Ok((news, uidnexts))
            })
            .await?;
        let mut changed = false;
        for (folder, uidnext) in folders.into_iter().zip(uidnexts) {
            let before = self.folder_uidnext.insert(folder, uidnext);
            changed |= uidnext.is_none() || before != Some(uidnext);
        }
        Ok(if news {
            Look::Announced
        } else if changed {
            Look::Changed
        } else {
            Look::Unchanged
        })
    }

    async fn fetch(
        &mut self,
        ctx: &Context,
        at: &Locator,
        message: &Accepted,
    ) -> ProbeResult<Verification> {
        let (folder, uid) = match at {
            Locator::ImapUid(uid) => ("INBOX", uid),
            Locator::ImapIn { folder, uid } => (folder.as_str(), uid),
            Locator::Pop3 { .. } => return Err(ProbeError::config("not an IMAP locator")),
        };
        self.select(ctx, folder).await?;
        let verified = self.fetch_selected(ctx, *uid, message).await;
        self.select(ctx, "INBOX").await?;
        verified
    }

    async fn delete(
        &mut self,
        ctx: &Context,
        which: &[(String, Locator)],
    ) -> ProbeResult<Vec<String>> {
        let mut deleted = Vec::new();
        for folder in self.all_folders() {
            let here = folder.as_deref().unwrap_or("INBOX");
            let ours: Vec<(String, u32)> = which
                .iter()
                .filter(|(id, _)| is_probe_id(id))
                .filter_map(|(id, at)| match at {
                    Locator::ImapUid(uid) if folder.is_none() => Some((id.clone(), *uid)),
                    Locator::ImapIn { folder: f, uid } if f == here => Some((id.clone(), *uid)),
                    _ => None,
                })
                .collect();
            if ours.is_empty() {
                continue;
            }
            self.select(ctx, here).await?;
            let uids: Vec<u32> = ours.iter().map(|(_, u)| *u).collect();
            match self.expunge_uids(ctx, &uids).await {
                Ok(()) => deleted.extend(ours.into_iter().map(|(id, _)| id)),
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
                    let ids: Vec<&str> = which
                        .iter()
                        .map(|(id, _)| id.as_str())
                        .filter(|id| is_probe_id(id))
                        .collect();
                    let left = Self::still_there(ctx, &ids).await.map_err(|_| e)?;
                    return Ok(ids
                        .into_iter()
                        .filter(|id| !left.contains(*id))
                        .map(str::to_string)
                        .collect());
                }
                Err(e) => return Err(e),
            }
        }
        self.select(ctx, "INBOX").await?;
        Ok(deleted)
    }

    async fn notifications(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
    ) -> ProbeResult<Vec<Notice>> {
        let mut notices = Vec::new();
        for folder in self.all_folders() {
            let here = folder.as_deref().unwrap_or("INBOX");
            self.select(ctx, here).await?;
            notices.extend(self.notifications_here(ctx, wanted, here).await?);
        }
        self.select(ctx, "INBOX").await?;
        Ok(notices)
    }

    async fn delete_notifications(
        &mut self,
        ctx: &Context,
        which: &[Notice],
    ) -> ProbeResult<usize> {
        let mut deleted = 0;
        for folder in self.all_folders() {
            let here = folder.as_deref().unwrap_or("INBOX");
            let uids: Vec<u32> = which
                .iter()
                .filter_map(|n| match &n.at {
                    Locator::ImapUid(uid) if folder.is_none() => Some(*uid),
                    Locator::ImapIn { folder: f, uid } if f == here => Some(*uid),
                    _ => None,
                })
                .collect();
            if uids.is_empty() {
                continue;
            }
            self.select(ctx, here).await?;
            self.expunge_uids(ctx, &uids).await?;
            deleted += uids.len();
        }
        self.select(ctx, "INBOX").await?;
        Ok(deleted)
    }
    async fn wait_for_change(&mut self, ctx: &Context, limit: Duration) -> ProbeResult<()> {
        let interval = ctx.settings.plan.poll_interval;
        if limit.is_zero() {
            return Ok(());
        }
        self.select(ctx, "INBOX").await?;
        if let Some(spell) = self.pacing.idle_for(limit) {
            if self.idle_once(ctx, spell).await? {
                self.pacing.news();
                return Ok(());
            }
            if spell >= limit {
                return Ok(()); // the wait is over, not the spell
            }
            // A quiet spell: ask STATUS whether the server kept news back.
            self.pacing.quiet_spell();
            return self.status_poll(ctx, true).await;
        }
        let now = Instant::now();
        let pause = self.pacing.next_poll(now, interval) - now;
        if pause >= limit {
            tokio::time::sleep(limit).await;
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        self.status_poll(ctx, false).await
    }

    /// SELECT INBOX again, even when it is selected: a server that keeps news from
    /// open sessions (GNU Mailutils) shows what POP3 did meanwhile only to a new SELECT.
    async fn refresh(&mut self, ctx: &Context) -> ProbeResult<()> {
        self.selected.clear();
        self.select(ctx, "INBOX").await
    }

    async fn close(mut self, ctx: &Context) {
        let limit = ctx.settings.timeouts.command.min(Duration::from_secs(5));
        self.allowance.grant(STEP_BUDGET);
        let (limit, _) = ctx.deadline().cap(limit);
        if let Some(mut session) = self.session.take() {
            let _ = timed(limit, async { session.logout().await.map_err(from_imap) }).await;
        }
    }
}
