//! The POP3 prober: find probe messages by reading only the header block of each message
//! (TOP n 0, remembered by UIDL), stream RETR through the verifier, and DELE
//! exactly the probe's own messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Phases, Protocol};
use crate::core::probe_id::{header_probe_id, is_probe_id};
use crate::core::tls_info::TlsInfo;
use crate::io::clock::PhaseClock;
use crate::io::connect::{check_plaintext_login, open_stream, starttls_wanted};
use crate::io::net::BoxStream;
use crate::io::transcript;
use crate::model::result::Verification;
use crate::probe::context::Context;
use crate::probe::wait::UNANNOUNCED_LOGIN_DELAY;
use crate::probe::watch::{Accepted, Locator, Mailbox, Wanted, open_timed};
use crate::protocol::pop3::{
    Pop3Client, has_capability, is_login_delay_refusal, login_delay, sasl_mechanisms,
};
use crate::protocol::sasl::{Exchange, check_not_expired, pick};
use crate::protocol::verifier::Verifier;

/// Why a session ended before its login: the server's LOGIN-DELAY was learned
/// from CAPA, so the one login is kept for when the messages are there.
const LOGIN_DEFERRED: &str =
    "login deferred: the server announced a LOGIN-DELAY longer than the poll interval";

/// A header block larger than this is not read for a probe id.
const MAX_HEADER_BYTES: usize = 256 * 1024;

pub(crate) struct Pop3Mailbox {
    /// Taken by `delete`, which must QUIT to commit the deletions.
    client: Option<Pop3Client<BoxStream>>,
}

impl Pop3Mailbox {
    async fn connect(
        ctx: &Context,
        clock: &mut PhaseClock,
        tls_info: &mut Option<TlsInfo>,
    ) -> ProbeResult<Self> {
        let s = &ctx.settings;
        let t = s.timeouts;
        let endpoint = s
            .target
            .pop3
            .as_ref()
            .ok_or_else(|| ProbeError::config("no POP3 endpoint"))?;
        let login = s
            .target
            .pop3_login
            .as_ref()
            .ok_or_else(|| ProbeError::config("no POP3 login"))?;
        check_not_expired(login).map_err(|e| e.at(Protocol::Pop3, Phase::Login))?;
        ctx.count_session(Protocol::Pop3);
        let stream = open_stream(&ctx.conn, endpoint, clock, tls_info).await?;
        let (mut client, _banner) = clock
            .run(Phase::Greeting, t.greeting, Pop3Client::connect(stream))
            .await?;
        client.set_idle_timeout(t.command);
        let mut caps = clock
            .run(Phase::Capability, t.command, client.capa())
            .await?;
        let wants_tls = starttls_wanted(endpoint, has_capability(&caps, "STLS"))?;
        if wants_tls {
            let raw = clock.run(Phase::Starttls, t.command, client.stls()).await?;
            let (tls, info) = clock
                .run(
                    Phase::Tls,
                    t.greeting,
                    ctx.conn.tls.handshake(raw, &endpoint.host),
                )
                .await?;
            *tls_info = Some(info);
            let tls = transcript::resume(ctx.conn.transcript.as_ref(), Protocol::Pop3, tls);
            client = Pop3Client::after_stls(tls);
            client.set_idle_timeout(t.command);
            // Capabilities before TLS are not to be trusted (RFC 2595).
            caps = clock
                .run(Phase::Capability, t.command, client.capa())
                .await?;
        }
        check_plaintext_login(
            endpoint,
            tls_info.is_some(),
            s.target.allow_plaintext_login,
            Phase::Login,
        )?;
        let encrypted = tls_info.is_some();
        // Before TLS, a server that wants TLS offers STLS, says XTLSREQUIRED or
        // leaves USER out of CAPA.
        let tls_offered = has_capability(&caps, "STLS")
            || has_capability(&caps, "XTLSREQUIRED")
            || !has_capability(&caps, "USER");
        let mechanism =
            pick(login, &sasl_mechanisms(&caps)).map_err(|e| e.at(Protocol::Pop3, Phase::Login))?;
        if let Some(delay) = login_delay(&caps)
            && learn_announced_delay(ctx, Duration::from_secs(delay))
        {
            // One login is all there is for a while: spend it when the messages
            // are there, not now.
            let _ = ctx
                .deadline()
                .run(Protocol::Pop3, Phase::Quit, t.command, client.quit())
                .await;
            return Err(ProbeError::new(ErrorKind::Rejected, LOGIN_DEFERRED)
                .at(Protocol::Pop3, Phase::Login));
        }
        ctx.count_login(Protocol::Pop3);
        let attempted = Instant::now();
        let logged_in = clock
            .run(Phase::Login, t.command, async {
                match mechanism {
                    Some(m) => {
                        let mut exchange = Exchange::new(m, login, &endpoint.host, endpoint.port);
                        client.authenticate_sasl(&mut exchange, login).await
                    }
                    None => {
                        client
                            .login(&login.user, login.password.expose(), &caps)
                            .await
                    }
                }
            })
            .await
            .map_err(|e| e.classified_login(Protocol::Pop3, encrypted, tls_offered));
        let too_soon = logged_in.as_ref().err().is_some_and(|e| {
            e.reply
                .as_ref()
                .is_some_and(|r| is_login_delay_refusal(&r.text))
        });
        let scarce = after_login(ctx, attempted, too_soon);
        logged_in?;
        if scarce {
            ctx.note(
                Protocol::Pop3,
                "the POP3 server allows one login per LOGIN-DELAY: POP3 logged in once the messages were expected to be there, fetched and deleted them in that session",
            );
        }
        clock.run(Phase::Stat, t.command, client.stat()).await?;
        Ok(Pop3Mailbox {
            client: Some(client),
        })
    }

    fn client(&mut self) -> ProbeResult<&mut Pop3Client<BoxStream>> {
        self.client
            .as_mut()
            .ok_or_else(|| ProbeError::new(ErrorKind::Closed, "the POP3 session has ended"))
    }
}

/// Remember the LOGIN-DELAY a server announced; true when the watcher should put
/// off this session's login (the delay is news, and longer than a poll interval).
fn learn_announced_delay(ctx: &Context, delay: Duration) -> bool {
    ctx.with_counts(Protocol::Pop3, |c| c.login_delay_s = Some(delay.as_secs()));
    let mut pacing = ctx.pop3_pacing.lock().expect("not poisoned");
    let news = pacing.login_delay().is_none();
    pacing.learn_delay(delay);
    news && pacing.watching && pacing.scarce(ctx.settings.plan.poll_interval)
}

/// Note a login attempt made at `attempted` (refused as `too_soon` for the
/// LOGIN-DELAY or not); true when logins are scarce from now on.
fn after_login(ctx: &Context, attempted: Instant, too_soon: bool) -> bool {
    let mut pacing = ctx.pop3_pacing.lock().expect("not poisoned");
    pacing.logged_in(attempted);
    if too_soon {
        // Refused for logging in too soon: wait the announced delay (or a long one).
        let delay = pacing.login_delay().unwrap_or(UNANNOUNCED_LOGIN_DELAY);
        pacing.learn_delay(delay);
        ctx.with_counts(Protocol::Pop3, |c| {
            c.login_delay_s.get_or_insert(delay.as_secs());
        });
    }
    pacing.scarce(ctx.settings.plan.poll_interval)
}

impl Mailbox for Pop3Mailbox {
    const PROTOCOL: Protocol = Protocol::Pop3;
    const SNAPSHOT: bool = true;

    async fn open(ctx: &Context) -> Result<(Self, Phases, Option<TlsInfo>), (ProbeError, Phases)> {
        open_timed(Protocol::Pop3, ctx.deadline(), async |clock, tls| {
            Self::connect(ctx, clock, tls).await
        })
        .await
    }

    fn deferred(err: &ProbeError) -> bool {
        err.message == LOGIN_DEFERRED
    }

    async fn find(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
    ) -> ProbeResult<HashMap<String, Locator>> {
        let limit = ctx.settings.timeouts.command;
        let client = self.client()?;
        let step = async {
            let listing = client.uidl().await?;
            let mut found = HashMap::new();
            for (number, uidl) in listing {
                let known = ctx
                    .pop3_seen
                    .lock()
                    .expect("not poisoned")
                    .get(&uidl)
                    .cloned();
                let id = match known {
                    Some(id) => id,
                    None => {
                        let header = client.top_headers(number, MAX_HEADER_BYTES).await?;
                        let id = header_probe_id(&header);
                        ctx.pop3_seen
                            .lock()
                            .expect("not poisoned")
                            .insert(uidl.clone(), id.clone());
                        id
                    }
                };
                if let Some(id) = id
                    && wanted.matches(&id)
                {
                    found.insert(id, Locator::Pop3 { number, uidl });
                }
            }
            Ok(found)
        };
        // Scanning a large mailbox the first time takes a TOP per message.
        ctx.deadline()
            .run(Protocol::Pop3, Phase::Search, limit * 4, step)
            .await
    }

    async fn fetch(
        &mut self,
        ctx: &Context,
        at: &Locator,
        message: &Accepted,
    ) -> ProbeResult<Verification> {
        let Locator::Pop3 { number, .. } = at else {
            return Err(ProbeError::config("not a POP3 locator"));
        };
        let limit = ctx.settings.timeouts.body();
        // Delivery adds trace headers; anything far beyond what was sent is not our message.
        let max_bytes = message.encoded_len * 2 + (1 << 20);
        let client = self.client()?;
        let mut verifier = Verifier::new(&message.expected);
        let mut sink = |line: &[u8]| verifier.line(line);
        let step = client.retr(*number, max_bytes, &mut sink);
        ctx.deadline()
            .run(Protocol::Pop3, Phase::Fetch, limit, step)
            .await?;
        Ok(verifier.finish())
    }

    async fn delete(
        &mut self,
        ctx: &Context,
        which: &[(String, Locator)],
    ) -> ProbeResult<Vec<String>> {
        let limit = ctx.settings.timeouts.command;
        let mut client = self
            .client
            .take()
            .ok_or_else(|| ProbeError::new(ErrorKind::Closed, "the POP3 session has ended"))?;
        let step = async {
            let mut deleted = Vec::new();
            for (id, at) in which {
                if let Locator::Pop3 { number, .. } = at
                    && is_probe_id(id)
                {
                    client.dele(*number).await?;
                    deleted.push(id.clone());
                }
            }
            // Deletions only take effect when QUIT succeeds.
            client.quit().await?;
            Ok(deleted)
        };
        ctx.deadline()
            .run(Protocol::Pop3, Phase::Delete, limit, step)
            .await
    }

    async fn close(mut self, ctx: &Context) {
        if let Some(client) = self.client.take() {
            let limit = ctx.settings.timeouts.command.min(Duration::from_secs(5));
            let (limit, _) = ctx.deadline().cap(limit);
            let _ = tokio::time::timeout(limit, client.quit()).await;
        }
    }
}
