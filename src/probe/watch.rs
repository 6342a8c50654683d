//! The mailbox watcher: IMAP and POP3 implement [`Mailbox`] and one watcher
//! ([`watch`]) finds, fetches and verifies the messages as SMTP accepts them, so
//! delivery latency is measured while sending goes on; and deletion by probe id.
//! When to look (IDLE, STATUS polls, POP3 logins) is [`crate::probe::wait`]'s.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Phases, Protocol, millis};
use crate::core::tls_info::TlsInfo;
use crate::core::units::format_duration;
use crate::io::clock::PhaseClock;
use crate::io::deadline::Deadline;
use crate::model::result::{ProtocolResult, Verification};
use crate::probe::bounces::{self, Notice};
use crate::probe::context::{Context, not_attempted};
use crate::probe::wait::{Handover, QUICK_LOOKS, Situation, When, next_login, next_quick_look};
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

/// What a cheap look ([`Mailbox::changed`]) saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Nothing new since the last look.
    Unchanged,
    /// Maybe new mail (a fresh query changed, or the mailbox cannot tell).
    Changed,
    /// The server announced new mail to this open session.
    Announced,
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
    /// Make a session kept from watching see the mailbox as it is now (IMAP:
    /// SELECT again), before it is used for the cleanup.
    fn refresh(&mut self, _ctx: &Context) -> impl Future<Output = ProbeResult<()>> {
        async { Ok(()) }
    }
    /// The session was given up before login to log in later (a POP3 server's
    /// LOGIN-DELAY learned from its capabilities): not a failure.
    fn deferred(_err: &ProbeError) -> bool {
        false
    }
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
    /// A cheap look before a quick look's search: may the mailbox hold new mail
    /// since the last look? A snapshot mailbox cannot tell without a search.
    fn changed(&mut self, _ctx: &Context) -> impl Future<Output = ProbeResult<Look>> {
        async { Ok(Look::Changed) }
    }
    /// Wait until the mailbox may have changed, at most `limit` (IMAP: IDLE, or
    /// STATUS polling; see [`crate::probe::wait`]); by default, one poll interval.
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

/// Open a mailbox session with `connect` under a fresh clock that ends at the
/// check's `deadline`: the session, its phase timings and TLS details, or the error (at `connect` when it names no
/// phase) with the timings so far.
pub(crate) async fn open_timed<M>(
    protocol: Protocol,
    deadline: &Deadline,
    connect: impl AsyncFnOnce(&mut PhaseClock, &mut Option<TlsInfo>) -> ProbeResult<M>,
) -> Result<(M, Phases, Option<TlsInfo>), (ProbeError, Phases)> {
    let mut clock = PhaseClock::within(protocol, deadline);
    let mut tls = None;
    match connect(&mut clock, &mut tls).await {
        Ok(m) => Ok((m, clock.into_timings(), tls)),
        Err(e) => Err((e.at(protocol, Phase::Connect), clock.into_timings())),
    }
}

/// How long a mailbox that cannot be opened (refused, reset) is retried before it
/// counts as down. A timeout counts as down at once: waiting again would only wait.
const OPEN_GRACE: Duration = Duration::from_secs(10);

/// A snapshot mailbox's last look comes this long before the watch must end.
const LAST_LOOK: Duration = Duration::from_secs(2);

/// Errors that no amount of waiting will fix.
fn is_final(err: &ProbeError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Auth | ErrorKind::Tls | ErrorKind::Config | ErrorKind::Unsupported
    )
}

/// Watch the mailbox for accepted messages until each is fetched and verified, or
/// its delivery deadline (or the check's) passes. Messages arrive through
/// `incoming` as SMTP accepts them; the channel closing means sending is over.
/// IMAP tells POP3 through `handover` which messages it is done with
/// ([`crate::probe::wait`] has the rules of when to look).
pub(crate) async fn watch<M: Mailbox>(
    ctx: &Context,
    incoming: mpsc::UnboundedReceiver<Accepted>,
    handover: &Handover,
) -> WatchOutcome {
    let (outcome, session) = watch_keeping::<M>(ctx, incoming, handover).await;
    if let Some(m) = session {
        m.close(ctx).await;
    }
    outcome
}

/// [`watch`], handing back the session still logged in when watching ended in one
/// (never for a snapshot mailbox, which logs out after each look).
pub(crate) async fn watch_keeping<M: Mailbox>(
    ctx: &Context,
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
    handover: &Handover,
) -> (WatchOutcome, Option<M>) {
    let deadline = ctx.deadline();
    let interval = ctx.settings.plan.poll_interval;
    let delivery = ctx.settings.timeouts.delivery;
    let deadline_of = |a: &Accepted| (a.accepted_at + delivery).min(deadline.at());
    let leads = !M::SNAPSHOT;
    let follows = M::SNAPSHOT && handover.lead;
    let mut pending: Vec<Accepted> = Vec::new();
    let mut results: HashMap<usize, ProtocolResult> = HashMap::new();
    let mut deleted: Vec<String> = Vec::new();
    let mut session: Option<(M, Phases, Option<TlsInfo>)> = None;
    let mut sending = true;
    let mut last_error: Option<ProbeError> = None;
    let mut unreachable_since: Option<Instant> = None;
    let mut last_accepted: Option<Instant> = None;
    // Every pass looks, waits or gives up; bounded by the deadlines, this cap (with
    // each message's quick looks) is a backstop.
    let max_passes =
        (ctx.settings.timeouts.delivery.as_millis() / interval.as_millis().max(1)) as usize * 4
            + 1000;

    let set_watching = |on: bool| {
        if M::SNAPSHOT {
            ctx.pop3_pacing.lock().expect("not poisoned").watching = on;
        }
    };
    set_watching(true);
    // Woken for a quick look: search for the messages only, not for notifications
    // (a body search over recent mail; bounces come later and are seen on the next pass).
    let mut quick_pass = false;
    let mut passes = 0;
    while passes < max_passes + QUICK_LOOKS.len() * (results.len() + pending.len()) {
        passes += 1;
        // Take what SMTP accepted since the last look.
        loop {
            match incoming.try_recv() {
                Ok(a) => take_accepted(a, &mut pending, &mut last_accepted),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    sending = false;
                    break;
                }
            }
        }
        if leads {
            handover.mark(results.keys().copied());
        }
        if pending.is_empty() {
            if !sending {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), incoming.recv()).await {
                Ok(Some(a)) => take_accepted(a, &mut pending, &mut last_accepted),
                Ok(None) => sending = false,
                Err(_) => {}
            }
            continue;
        }

        if session.is_none() {
            // No waiting twice on an endpoint that is down.
            if let Some(down) = ctx.down(M::PROTOCOL) {
                let err = not_attempted(M::PROTOCOL, &down);
                for a in pending.drain(..) {
                    results.insert(a.index, ProtocolResult::failed(err.clone(), Phases::new()));
                }
                continue;
            }
            if M::SNAPSHOT {
                let now = Instant::now();
                let earliest = pending.iter().map(deadline_of).min().unwrap_or(now);
                let situation = Situation {
                    now,
                    sending,
                    first_pending_accepted: pending
                        .iter()
                        .map(|a| a.accepted_at)
                        .min()
                        .unwrap_or(now),
                    last_accepted: last_accepted.unwrap_or(now),
                    peer_watching: follows,
                    peer_done: follows && handover.done_with(pending.iter().map(|a| a.index)),
                    peer_found: follows
                        && handover.fetchable_beside(pending.iter().map(|a| a.index)),
                    deadline: earliest.checked_sub(LAST_LOOK).unwrap_or(now).max(now),
                    interval,
                };
                let pacing = ctx.pop3_pacing.lock().expect("not poisoned").clone();
                match next_login(&pacing, &situation) {
                    When::Now => {}
                    When::At(at) => {
                        // Woken early by SMTP's next acceptance or IMAP's progress.
                        tokio::select! {
                            got = incoming.recv(), if sending => match got {
                                Some(a) => take_accepted(a, &mut pending, &mut last_accepted),
                                None => sending = false,
                            },
                            _ = handover.changed(), if follows => {}
                            _ = tokio::time::sleep_until(at.into()) => {}
                        }
                        continue;
                    }
                    // Not inside the delivery deadline, and no LOGIN-DELAY to blame:
                    // the messages simply did not arrive in time.
                    When::NotBefore(_) if !pacing.scarce(interval) => {
                        tokio::time::sleep_until(earliest.into()).await;
                        expire_due::<M>(
                            ctx,
                            &mut pending,
                            &mut results,
                            Instant::now(),
                            last_error.as_ref(),
                        );
                        continue;
                    }
                    When::NotBefore(at) => {
                        let delay = pacing.login_delay().unwrap_or(interval);
                        let err = ProbeError::new(
                            ErrorKind::NotDelivered,
                            format!(
                                "not looked for again: the {} server allows one login per {} (LOGIN-DELAY), the next one only {} from now, after the check must end",
                                M::PROTOCOL.label(),
                                format_duration(delay),
                                format_duration(at.saturating_duration_since(now)),
                            ),
                        )
                        .at(M::PROTOCOL, Phase::Login);
                        ctx.note(M::PROTOCOL, err.message.clone());
                        for a in pending.drain(..) {
                            results.insert(
                                a.index,
                                ProtocolResult::failed(err.clone(), Phases::new()),
                            );
                        }
                        continue;
                    }
                }
            }
            match M::open(ctx).await {
                Ok(opened) => {
                    unreachable_since = None;
                    session = Some(opened)
                }
                Err((err, _)) if M::deferred(&err) => continue,
                Err((err, phases)) => {
                    ctx.note_failure(M::PROTOCOL, &err);
                    let now = Instant::now();
                    let down_since = *unreachable_since.get_or_insert(now);
                    // A restarting service gets a grace period; one that stays down,
                    // or did not answer in time, is reported as down rather than waited for.
                    let fatal = is_final(&err)
                        || ctx.down(M::PROTOCOL).is_some()
                        || now.duration_since(down_since) >= OPEN_GRACE;
                    last_error = Some(err.clone());
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
                    deadline.sleep(interval).await;
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
        let quick = std::mem::take(&mut quick_pass);
        // A quick look searches only when the mailbox changed since the last one.
        let look = if quick {
            mailbox.changed(ctx).await
        } else {
            Ok(Look::Changed)
        };
        let announced = matches!(look, Ok(Look::Announced));
        let found = match look {
            Ok(Look::Unchanged) => Ok(HashMap::new()),
            Ok(_) => mailbox.find(ctx, Wanted::Ids(&ids)).await,
            Err(e) => Err(e),
        };
        let search_ms = millis(search_started.elapsed());
        if !quick {
            bounces::look(ctx, mailbox, &ids).await;
        }
        let mut broken = None;
        let mut verified_here: Vec<(usize, String, Locator)> = Vec::new();
        match found {
            Ok(found) => {
                if leads {
                    let here: Vec<usize> = pending
                        .iter()
                        .filter(|a| found.contains_key(&a.expected.probe_id))
                        .map(|a| a.index)
                        .collect();
                    // A message found right after the server told the open session
                    // about it: the server tracks other sessions' changes live.
                    if announced && !here.is_empty() {
                        handover.server_announces();
                    }
                    handover.found(here);
                }
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
                            verified_here.push((a.index, a.expected.probe_id.clone(), at.clone()));
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
            && let Some((mut m, _, _)) = session.take()
        {
            // Logins are scarce (LOGIN-DELAY): delete in this session what was
            // fetched, once IMAP is done with it, rather than log in again to clean.
            let scarce = ctx
                .pop3_pacing
                .lock()
                .expect("not poisoned")
                .scarce(interval);
            let which: Vec<(String, Locator)> = verified_here
                .iter()
                .filter(|(index, _, _)| !follows || handover.done_with_one(*index))
                .map(|(_, id, at)| (id.clone(), at.clone()))
                .collect();
            if scarce && !which.is_empty() {
                match m.delete(ctx, &which).await {
                    Ok(ids) => deleted.extend(ids),
                    Err(e) => last_error = Some(e),
                }
            } else {
                m.close(ctx).await;
            }
        }

        let now = Instant::now();
        expire_due::<M>(ctx, &mut pending, &mut results, now, last_error.as_ref());
        // With nothing due, the top of the loop waits for SMTP's next acceptance;
        // a snapshot mailbox waits there for its next login.
        if !pending.is_empty() && !M::SNAPSHOT {
            let until = pending.iter().map(deadline_of).min().unwrap_or(now);
            let limit = until.saturating_duration_since(Instant::now());
            let quick = next_quick_look(pending.iter().map(|a| a.accepted_at), search_started)
                .filter(|at| *at < until);
            match session.as_mut() {
                Some(_) if let Some(at) = quick => {
                    // Look again soon in this session; SMTP's next acceptance wakes it early.
                    tokio::select! {
                        got = incoming.recv(), if sending => match got {
                            Some(a) => take_accepted(a, &mut pending, &mut last_accepted),
                            None => sending = false,
                        },
                        _ = tokio::time::sleep_until(at.into()) => quick_pass = true,
                    }
                }
                Some((m, _, _)) => {
                    if let Err(e) = m.wait_for_change(ctx, limit).await {
                        last_error = Some(e);
                        session = None;
                    }
                }
                None => {
                    deadline.sleep(interval.min(limit)).await;
                }
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
    set_watching(false);
    if leads {
        handover.mark(results.keys().copied());
        handover.finish();
    }
    let kept = session.take().map(|(m, _, _)| m);
    // Nothing was accepted, so the mailbox was never asked: check it is reachable
    // at least, so that an outage of every service shows as one.
    let unreached = if results.is_empty() && ctx.down(M::PROTOCOL).is_none() {
        match M::open(ctx).await {
            Ok((m, _, _)) => {
                m.close(ctx).await;
                None
            }
            Err((err, phases)) => {
                ctx.note_failure(M::PROTOCOL, &err);
                Some(ProtocolResult::failed(err, phases))
            }
        }
    } else {
        None
    };
    let outcome = WatchOutcome {
        results,
        unreached,
        deleted,
    };
    (outcome, kept)
}

/// Give up on the pending messages whose delivery deadline (or the check's) has
/// passed at `now`: not in the mailbox.
fn expire_due<M: Mailbox>(
    ctx: &Context,
    pending: &mut Vec<Accepted>,
    results: &mut HashMap<usize, ProtocolResult>,
    now: Instant,
    last_error: Option<&ProbeError>,
) {
    let deadline = ctx.deadline();
    let delivery = ctx.settings.timeouts.delivery;
    pending.retain(|a| {
        let cut = a.accepted_at + delivery > deadline.at();
        let due = if cut {
            deadline.at()
        } else {
            a.accepted_at + delivery
        };
        if now < due {
            return true;
        }
        let mut err = if cut {
            deadline.exceeded(M::PROTOCOL, Phase::Delivery)
        } else {
            ProbeError::new(
                ErrorKind::NotDelivered,
                format!(
                    "not in the mailbox {} after the server accepted it",
                    format_duration(delivery)
                ),
            )
            .at(M::PROTOCOL, Phase::Delivery)
        };
        if let Some(last) = last_error {
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
    });
}

pub(crate) struct WatchOutcome {
    pub(crate) results: HashMap<usize, ProtocolResult>,
    /// Set when no message was accepted and the mailbox could not even be opened.
    pub(crate) unreached: Option<ProtocolResult>,
    /// Probe ids already deleted while watching (POP3 under a LOGIN-DELAY).
    pub(crate) deleted: Vec<String>,
}

/// Delete this run's messages through `M`: a fresh session that finds them by probe id
/// again (locators from earlier sessions may be stale) and removes exactly those.
pub(crate) async fn cleanup<M: Mailbox>(
    ctx: &Context,
    probe_ids: &[&str],
) -> ProbeResult<Vec<String>> {
    let (deleted, session) =
        cleanup_open::<M>(ctx, None, Wanted::Ids(probe_ids), &|_| true).await?;
    if let Some(m) = session {
        m.close(ctx).await;
    }
    Ok(deleted)
}

/// [`cleanup`] of the wanted messages that `select` picks, in the `kept` session
/// when one is given, handing back the session it used (none when no id was
/// wanted) for more work before the logout.
pub(crate) async fn cleanup_open<M: Mailbox>(
    ctx: &Context,
    kept: Option<M>,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> ProbeResult<(Vec<String>, Option<M>)> {
    if matches!(wanted, Wanted::Ids(ids) if ids.is_empty()) {
        if let Some(m) = kept {
            m.close(ctx).await;
        }
        return Ok((Vec::new(), None));
    }
    // A session kept from watching saves a login, unless it has gone stale.
    if let Some(m) = kept
        && let Some(mut m) = reuse(ctx, m).await
    {
        let deleted = delete_found(ctx, &mut m, wanted, select).await?;
        return Ok((deleted, Some(m)));
    }
    // Cleanup does not wait again on an endpoint that is down, nor log in where
    // the server's LOGIN-DELAY would refuse it.
    let later = "the messages may remain; `mailprobe cleanup` removes them later";
    if let Some(down) = ctx.down(M::PROTOCOL) {
        let mut err = not_attempted(M::PROTOCOL, &down);
        err.message = format!("{}; {later}", err.message);
        return Err(err.at(M::PROTOCOL, Phase::Delete));
    }
    if M::SNAPSHOT {
        let pacing = ctx.pop3_pacing.lock().expect("not poisoned").clone();
        let now = Instant::now();
        let next = pacing.next_allowed(now, Duration::ZERO);
        if let Some(delay) = pacing.login_delay()
            && next > now
        {
            return Err(ProbeError::new(
                ErrorKind::Rejected,
                format!(
                    "not attempted: the {} server's LOGIN-DELAY ({}) allows the next login only in {}; {later}",
                    M::PROTOCOL.label(),
                    format_duration(delay),
                    format_duration(next - now)
                ),
            )
            .at(M::PROTOCOL, Phase::Delete));
        }
    }
    let (deleted, m) = delete_matching_open::<M>(ctx, wanted, select).await?;
    Ok((deleted, Some(m)))
}

/// Delete the wanted probe messages that `select` picks, in one fresh session.
pub(crate) async fn delete_matching<M: Mailbox>(
    ctx: &Context,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> ProbeResult<Vec<String>> {
    let (deleted, mailbox) = delete_matching_open::<M>(ctx, wanted, select).await?;
    mailbox.close(ctx).await;
    Ok(deleted)
}

/// [`delete_matching`], leaving the session open.
async fn delete_matching_open<M: Mailbox>(
    ctx: &Context,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> ProbeResult<(Vec<String>, M)> {
    let (mut mailbox, _, _) = M::open(ctx).await.map_err(|(e, _)| e)?;
    let deleted = delete_found(ctx, &mut mailbox, wanted, select).await?;
    Ok((deleted, mailbox))
}

/// A kept session, refreshed; `None` (logged out, or dropped when broken) when it
/// can no longer serve.
async fn reuse<M: Mailbox>(ctx: &Context, mut m: M) -> Option<M> {
    match m.refresh(ctx).await {
        Ok(()) => Some(m),
        Err(e) if e.is_connection_lost() || e.is_timeout() => None,
        Err(_) => {
            m.close(ctx).await;
            None
        }
    }
}

/// Find the wanted probe messages that `select` picks in `mailbox` and delete
/// exactly those.
async fn delete_found<M: Mailbox>(
    ctx: &Context,
    mailbox: &mut M,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> ProbeResult<Vec<String>> {
    let found = mailbox.find(ctx, wanted).await?;
    let which: Vec<(String, Locator)> = found.into_iter().filter(|(id, _)| select(id)).collect();
    if which.is_empty() {
        return Ok(Vec::new());
    }
    mailbox.delete(ctx, &which).await
}

/// SMTP accepted `a`: watch for it too.
fn take_accepted(a: Accepted, pending: &mut Vec<Accepted>, last_accepted: &mut Option<Instant>) {
    *last_accepted = Some(a.accepted_at);
    pending.push(a);
}
