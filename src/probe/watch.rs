//! The mailbox watcher: IMAP and POP3 implement [`Mailbox`] and one watcher
//! ([`watch`]) finds, fetches and verifies the messages as SMTP accepts them, so
//! delivery latency is measured while sending goes on; and deletion by probe id.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Phases, Protocol, millis};
use crate::core::tls_info::TlsInfo;
use crate::io::clock::PhaseClock;
use crate::model::result::{ProtocolResult, Verification};
use crate::probe::bounces::{self, Notice};
use crate::probe::context::Context;
use crate::protocol::message::Expected;

/// A message SMTP accepted, handed to the watchers.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) index: usize,
    pub(crate) expected: Expected,
    pub(crate) accepted_at: Instant,
    pub(crate) encoded_len: u64,
}

/// Where a message sits in a mailbox, in the protocol's own terms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Locator {
    ImapUid(u32),
    Pop3 {
        number: u32,
        uidl: String,
    },
    /// A message in an IMAP folder other than INBOX (Junk, `--folders`).
    ImapIn {
        folder: String,
        uid: u32,
    },
}

impl Locator {
    /// The folder, when it is not INBOX.
    pub(crate) fn folder(&self) -> Option<&str> {
        match self {
            Locator::ImapIn { folder, .. } => Some(folder),
            _ => None,
        }
    }
}

/// Which probe messages a search is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wanted<'a> {
    /// Exactly these probe ids.
    Ids(&'a [&'a str]),
    /// Every message carrying a well-formed probe id (the cleanup sweep).
    AllProbes,
}

impl Wanted<'_> {
    pub(crate) fn matches(&self, id: &str) -> bool {
        match self {
            Wanted::Ids(ids) => ids.contains(&id),
            Wanted::AllProbes => crate::core::probe_id::is_probe_id(id),
        }
    }
}

/// A logged-in mailbox session of a retrieval protocol.
pub(crate) trait Mailbox: Sized {
    const PROTOCOL: Protocol;
    /// POP3 sees a snapshot of the mailbox taken at login: reconnect to see new mail.
    const SNAPSHOT: bool;

    /// Connect, secure, log in; returns the session, its phase timings and TLS details.
    fn open(
        ctx: &Context,
    ) -> impl Future<Output = Result<(Self, Phases, Option<TlsInfo>), (ProbeError, Phases)>>;
    /// Find the wanted probe messages in the mailbox now.
    fn find(
        &mut self,
        ctx: &Context,
        wanted: Wanted<'_>,
    ) -> impl Future<Output = ProbeResult<HashMap<String, Locator>>>;
    /// Fetch one message and verify it while it streams.
    fn fetch(
        &mut self,
        ctx: &Context,
        at: &Locator,
        message: &Accepted,
    ) -> impl Future<Output = ProbeResult<Verification>>;
    /// Delete exactly these messages (never anything else). Returns the ids deleted.
    fn delete(
        &mut self,
        ctx: &Context,
        which: &[(String, Locator)],
    ) -> impl Future<Output = ProbeResult<Vec<String>>>;
    fn close(self, ctx: &Context) -> impl Future<Output = ()>;
    /// Notifications (bounces, delays) about the wanted probe messages; none
    /// where the protocol does not look for them.
    fn notifications(
        &mut self,
        _ctx: &Context,
        _wanted: Wanted<'_>,
    ) -> impl Future<Output = ProbeResult<Vec<Notice>>> {
        async { Ok(Vec::new()) }
    }
    /// Delete exactly these notifications; returns how many were deleted.
    fn delete_notifications(
        &mut self,
        _ctx: &Context,
        _which: &[Notice],
    ) -> impl Future<Output = ProbeResult<usize>> {
        async { Ok(0) }
    }
    /// Wait until the mailbox may have changed, at most `limit` (IMAP IDLE);
    /// by default, one poll interval.
    fn wait_for_change(
        &mut self,
        ctx: &Context,
        limit: Duration,
    ) -> impl Future<Output = ProbeResult<()>> {
        let pause = limit.min(ctx.settings.plan.poll_interval);
        async move {
            tokio::time::sleep(pause).await;
            Ok(())
        }
    }
}

/// Open a mailbox session with `connect` under a fresh clock: the session, its
/// phase timings and TLS details, or the error (at `connect` when it names no
/// phase) with the timings so far.
pub(crate) async fn open_timed<M>(
    protocol: Protocol,
    connect: impl AsyncFnOnce(&mut PhaseClock, &mut Option<TlsInfo>) -> ProbeResult<M>,
) -> Result<(M, Phases, Option<TlsInfo>), (ProbeError, Phases)> {
    let mut clock = PhaseClock::new(protocol);
    let mut tls = None;
    match connect(&mut clock, &mut tls).await {
        Ok(m) => Ok((m, clock.into_timings(), tls)),
        Err(e) => Err((e.at(protocol, Phase::Connect), clock.into_timings())),
    }
}

/// POP3 sees new mail only by logging in again; never more often than this.
const MIN_RELOGIN_INTERVAL: Duration = Duration::from_millis(250);

/// How long a mailbox that cannot be opened is retried before it counts as down.
const OPEN_GRACE: Duration = Duration::from_secs(10);

/// Errors that no amount of waiting will fix.
fn is_final(err: &ProbeError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Auth | ErrorKind::Tls | ErrorKind::Config | ErrorKind::Unsupported
    )
}

/// Watch the mailbox for accepted messages until each is fetched and verified, or
/// its delivery deadline passes. Messages arrive through `incoming` as SMTP accepts
/// them; the channel closing means sending is over.
pub(crate) async fn watch<M: Mailbox>(
    ctx: &Context,
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
) -> WatchOutcome {
    let deadline_of = |a: &Accepted| a.accepted_at + ctx.settings.timeouts.delivery;
    let mut pending: Vec<Accepted> = Vec::new();
    let mut results: HashMap<usize, ProtocolResult> = HashMap::new();
    let mut session: Option<(M, Phases, Option<TlsInfo>)> = None;
    let mut sending = true;
    let mut last_error: Option<ProbeError> = None;
    let mut unreachable_since: Option<Instant> = None;
    // Bounded by the delivery deadline of the last message; this cap is a backstop.
    let max_polls = (ctx.settings.timeouts.delivery.as_millis()
        / ctx.settings.plan.poll_interval.as_millis().max(1)) as usize
        * 4
        + 1000;

    for _ in 0..max_polls {
        // Take what SMTP accepted since the last look.
        loop {
            match incoming.try_recv() {
                Ok(a) => pending.push(a),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    sending = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            if !sending {
                break;
            }
            match tokio::time::timeout(ctx.settings.plan.poll_interval, incoming.recv()).await {
                Ok(Some(a)) => pending.push(a),
                Ok(None) => sending = false,
                Err(_) => {}
            }
            continue;
        }

        if session.is_none() {
            match M::open(ctx).await {
                Ok(opened) => {
                    unreachable_since = None;
                    session = Some(opened)
                }
                Err((err, phases)) => {
                    let now = Instant::now();
                    let down_since = *unreachable_since.get_or_insert(now);
                    // A restarting service gets a grace period; one that stays down
                    // is reported as down rather than waited for until the deadline.
                    let fatal = is_final(&err) || now.duration_since(down_since) >= OPEN_GRACE;
                    last_error = Some(err.clone());
                    // Give up on messages whose deadline passed, or on all if retrying is futile.
                    pending.retain(|a| {
                        if fatal || now >= deadline_of(a) {
                            results.insert(
                                a.index,
                                ProtocolResult::failed(err.clone(), phases.clone()),
                            );
                            false
                        } else {
                            true
                        }
                    });
                    if fatal && !sending {
                        break;
                    }
                    tokio::time::sleep(ctx.settings.plan.poll_interval).await;
                    continue;
                }
            }
        }
        let (mailbox, session_phases, tls) = session.as_mut().expect("opened above");

        let ids: Vec<&str> = pending
            .iter()
            .map(|a| a.expected.probe_id.as_str())
            .collect();
        let search_started = Instant::now();
        let found = mailbox.find(ctx, Wanted::Ids(&ids)).await;
        let search_ms = millis(search_started.elapsed());
        bounces::look(ctx, mailbox, &ids).await;
        let mut broken = None;
        match found {
            Ok(found) => {
                let mut still = Vec::new();
                for a in pending.drain(..) {
                    let Some(at) = found.get(&a.expected.probe_id) else {
                        still.push(a);
                        continue;
                    };
                    let seen = Instant::now();
                    let mut phases = session_phases.clone();
                    *phases.entry(Phase::Search).or_insert(0.0) += search_ms;
                    let fetch_started = Instant::now();
                    let transcript = ctx.conn.transcript.as_ref();
                    transcript.inspect(|t| t.set_message(M::PROTOCOL, Some(a.index)));
                    let fetched = mailbox.fetch(ctx, at, &a).await;
                    transcript.inspect(|t| t.set_message(M::PROTOCOL, None));
                    phases.insert(Phase::Fetch, millis(fetch_started.elapsed()));
                    let mut r = ProtocolResult {
                        found: Some(true),
                        delivery_ms: Some(millis(seen.saturating_duration_since(a.accepted_at))),
                        tls: tls.clone(),
                        folder: at.folder().map(str::to_string),
                        ..Default::default()
                    };
                    ctx.board.arrived(&a.expected.probe_id, at.folder());
                    match fetched {
                        Ok(v) => {
                            r.verified = Some(v.verified);
                            r.ok = v.verified;
                            if !v.verified {
                                r.error = Some(
                                    ProbeError::new(ErrorKind::Altered, v.problems.join("; "))
                                        .at(M::PROTOCOL, Phase::Fetch),
                                );
                            }
                            r.verification = Some(v);
                        }
                        Err(e) => {
                            r.verified = Some(false);
                            let lost = e.is_connection_lost() || e.is_timeout();
                            r.error = Some(e.clone());
                            if lost {
                                broken = Some(e);
                            }
                        }
                    }
                    phases.remove(&Phase::Delivery);
                    r.total_ms = phases.values().sum();
                    r.phases_ms = phases;
                    results.insert(a.index, r);
                    if broken.is_some() {
                        break;
                    }
                }
                pending.extend(still);
            }
            Err(e) => broken = Some(e),
        }
        bounces::settle(ctx, M::PROTOCOL, &mut pending, &mut results);

        if let Some(err) = broken {
            last_error = Some(err);
            if let Some((m, _, _)) = session.take() {
                drop(m); // the connection is unusable; do not wait for a logout
            }
        } else if M::SNAPSHOT
            && !pending.is_empty()
            && let Some((m, _, _)) = session.take()
        {
            m.close(ctx).await;
        }

        let now = Instant::now();
        pending.retain(|a| {
            if now >= deadline_of(a) {
                let mut err = ProbeError::new(
                    ErrorKind::NotDelivered,
                    format!(
                        "not in the mailbox {} after the server accepted it",
                        crate::core::units::format_duration(ctx.settings.timeouts.delivery)
                    ),
                )
                .at(M::PROTOCOL, Phase::Delivery);
                if let Some(last) = &last_error {
                    err.message = format!("{}; last error: {last}", err.message);
                }
                let mut r = ProtocolResult {
                    found: Some(false),
                    error: Some(err),
                    ..Default::default()
                };
                bounces::explain_missing(ctx, a, &mut r);
                results.insert(a.index, r);
                false
            } else {
                true
            }
        });
        // With nothing due, the top of the loop waits for SMTP's next acceptance.
        if !pending.is_empty() {
            match session.as_mut() {
                // Wait for the mailbox to change (IDLE where offered; servers may hold
                // notifications back, Dovecot for 0.5 s), looking again every poll interval.
                Some((m, _, _)) => {
                    if let Err(e) = m
                        .wait_for_change(ctx, ctx.settings.plan.poll_interval)
                        .await
                    {
                        last_error = Some(e);
                        session = None;
                    }
                }
                // A mailbox seen as a snapshot is logged into again: not too often.
                None if M::SNAPSHOT => {
                    tokio::time::sleep(ctx.settings.plan.poll_interval.max(MIN_RELOGIN_INTERVAL))
                        .await
                }
                None => tokio::time::sleep(ctx.settings.plan.poll_interval).await,
            }
        }
    }
    for a in pending.drain(..) {
        results.insert(
            a.index,
            ProtocolResult::failed(
                ProbeError::new(ErrorKind::NotDelivered, "gave up waiting")
                    .at(M::PROTOCOL, Phase::Delivery),
                Phases::new(),
            ),
        );
    }
    if let Some((m, _, _)) = session.take() {
        m.close(ctx).await;
    }
    // Nothing was accepted, so the mailbox was never asked: check it is reachable
    // at least, so that an outage of every service shows as one.
    let unreached = if results.is_empty() {
        match M::open(ctx).await {
            Ok((m, _, _)) => {
                m.close(ctx).await;
                None
            }
            Err((err, phases)) => Some(ProtocolResult::failed(err, phases)),
        }
    } else {
        None
    };
    WatchOutcome { results, unreached }
}

pub(crate) struct WatchOutcome {
    pub(crate) results: HashMap<usize, ProtocolResult>,
    /// Set when no message was accepted and the mailbox could not even be opened.
    pub(crate) unreached: Option<ProtocolResult>,
}

/// Delete this run's messages through `M`: a fresh session that finds them by probe id
/// again (locators from earlier sessions may be stale) and removes exactly those.
pub(crate) async fn cleanup<M: Mailbox>(
    ctx: &Context,
    probe_ids: &[&str],
) -> ProbeResult<Vec<String>> {
    if probe_ids.is_empty() {
        return Ok(Vec::new());
    }
    delete_matching::<M>(ctx, Wanted::Ids(probe_ids), &|_| true).await
}

/// Delete the wanted probe messages that `select` picks, in one fresh session.
pub(crate) async fn delete_matching<M: Mailbox>(
    ctx: &Context,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> ProbeResult<Vec<String>> {
    let (mut mailbox, _, _) = M::open(ctx).await.map_err(|(e, _)| e)?;
    let found = mailbox.find(ctx, wanted).await?;
    let which: Vec<(String, Locator)> = found.into_iter().filter(|(id, _)| select(id)).collect();
    let deleted = if which.is_empty() {
        Vec::new()
    } else {
        mailbox.delete(ctx, &which).await?
    };
    mailbox.close(ctx).await;
    Ok(deleted)
}
