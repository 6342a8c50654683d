//! Mail that went elsewhere: notifications about the probe's messages (bounces,
//! delays) and messages filed into Junk or other folders. Every watcher of a run
//! posts what it saw on one [`Board`] and settles its waiting from it, so a
//! bounce seen over IMAP ends the wait of POP3 as well.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Protocol, millis};
use crate::model::bounce::{Bounce, BounceAction, BounceReason};
use crate::model::report::MessageReport;
use crate::model::result::ProtocolResult;
use crate::probe::context::Context;
use crate::probe::imap::ImapMailbox;
use crate::probe::pop3::Pop3Mailbox;
use crate::probe::wait::Handover;
use crate::probe::watch::{self, Accepted, Locator, Mailbox, Wanted};

/// A notification about one probe message, and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub(crate) probe_id: String,
    pub(crate) bounce: Bounce,
    pub(crate) at: Locator,
}

/// What the watchers of one run learned about mail that went elsewhere.
#[derive(Debug, Default)]
pub(crate) struct Board {
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Probe id -> the worst notification about it (failure over delay).
    bounces: HashMap<String, (Bounce, Instant)>,
    /// Probe id -> where a watcher found it (`None`: INBOX).
    arrived: HashMap<String, Option<String>>,
}

impl Board {
    /// Record notifications; a failure replaces an earlier delay.
    pub(crate) fn post(&self, notices: &[Notice]) {
        let mut seen = self.inner.lock().expect("board lock");
        for n in notices {
            let replace = match seen.bounces.get(&n.probe_id) {
                None => true,
                Some((old, _)) => {
                    old.action == BounceAction::Delayed && n.bounce.action == BounceAction::Failed
                }
            };
            if replace {
                seen.bounces
                    .insert(n.probe_id.clone(), (n.bounce.clone(), Instant::now()));
            }
        }
    }

    pub(crate) fn bounce(&self, probe_id: &str) -> Option<(Bounce, Instant)> {
        let seen = self.inner.lock().expect("board lock");
        seen.bounces.get(probe_id).cloned()
    }

    /// Record that a watcher found a probe message, in `folder` when not INBOX.
    pub(crate) fn arrived(&self, probe_id: &str, folder: Option<&str>) {
        let mut seen = self.inner.lock().expect("board lock");
        seen.arrived
            .insert(probe_id.to_string(), folder.map(str::to_string));
    }

    pub(crate) fn has_arrived(&self, probe_id: &str) -> bool {
        let seen = self.inner.lock().expect("board lock");
        seen.arrived.contains_key(probe_id)
    }

    /// The folder other than INBOX a watcher found the message in.
    pub(crate) fn folder_of(&self, probe_id: &str) -> Option<String> {
        let seen = self.inner.lock().expect("board lock");
        seen.arrived.get(probe_id).cloned().flatten()
    }
}

/// Whether watchers of `M` look for notifications in the mailbox they read: IMAP,
/// when that mailbox is the sender's and no separate bounce mailbox is named.
pub(crate) fn scans_here<M: Mailbox>(ctx: &Context) -> bool {
    let s = &ctx.settings;
    M::PROTOCOL == Protocol::Imap
        && s.elsewhere.bounces_in_mailbox
        && s.target.bounce_login.is_none()
        && s.target
            .imap_login
            .as_ref()
            .is_some_and(|l| l.user.eq_ignore_ascii_case(&s.target.from))
}

/// Whether a failure notification about this probe message was seen in this run.
pub(crate) fn bounced(ctx: &Context, probe_id: &str) -> bool {
    ctx.board
        .bounce(probe_id)
        .is_some_and(|(b, _)| b.action == BounceAction::Failed)
}

/// The result of a message whose failure notification arrived.
fn bounced_result(
    protocol: Protocol,
    a: &Accepted,
    mut bounce: Bounce,
    seen: Instant,
) -> ProtocolResult {
    bounce.after_acceptance_ms = Some(millis(seen.saturating_duration_since(a.accepted_at)));
    let err = ProbeError::new(
        ErrorKind::NotDelivered,
        format!(
            "the server accepted it, then bounced it: {}",
            bounce.describe()
        ),
    )
    .at(protocol, Phase::Delivery);
    ProtocolResult {
        found: Some(false),
        error: Some(err),
        bounce: Some(bounce),
        ..Default::default()
    }
}

/// Stop waiting for pending messages that bounced (a failure notification was
/// posted) or, for POP3, that IMAP found in a folder POP3 cannot see.
pub(crate) fn settle(
    ctx: &Context,
    protocol: Protocol,
    pending: &mut Vec<Accepted>,
    results: &mut HashMap<usize, ProtocolResult>,
) {
    pending.retain(|a| {
        let id = a.expected.probe_id.as_str();
        if let Some((bounce, seen)) = ctx.board.bounce(id)
            && bounce.action == BounceAction::Failed
        {
            results.insert(a.index, bounced_result(protocol, a, bounce, seen));
            return false;
        }
        if protocol == Protocol::Pop3
            && let Some(folder) = ctx.board.folder_of(id)
        {
            results.insert(
                a.index,
                ProtocolResult {
                    skipped: Some(format!("IMAP found it in {folder}; POP3 sees only INBOX")),
                    folder: Some(folder),
                    ..Default::default()
                },
            );
            return false;
        }
        true
    });
}

/// A message that never arrived: a delay notification about it says why.
pub(crate) fn explain_missing(ctx: &Context, a: &Accepted, result: &mut ProtocolResult) {
    if let Some((mut bounce, seen)) = ctx.board.bounce(&a.expected.probe_id) {
        bounce.after_acceptance_ms = Some(millis(seen.saturating_duration_since(a.accepted_at)));
        if let Some(err) = result.error.as_mut() {
            err.message = format!("{}; {}", err.message, bounce.describe());
        }
        result.bounce = Some(bounce);
    }
}

/// Look for notifications about the pending messages in the session's mailbox
/// and post them. Errors are left to the next look (the watcher's own search
/// reports a broken session).
pub(crate) async fn look<M: Mailbox>(ctx: &Context, mailbox: &mut M, ids: &[&str]) {
    if ids.is_empty() || !scans_here::<M>(ctx) {
        return;
    }
    if let Ok(notices) = mailbox.notifications(ctx, Wanted::Ids(ids)).await {
        ctx.board.post(&notices);
    }
}

/// With `--bounce-mailbox`: watch the sender's mailbox for notifications about
/// the accepted messages until each is settled elsewhere, bounced, or past its
/// delivery deadline.
pub(crate) async fn watch_sender_mailbox(
    ctx: &Context,
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
) {
    let Some(login) = ctx.settings.target.bounce_login.clone() else {
        return;
    };
    let deadline_of = |a: &Accepted| a.accepted_at + ctx.settings.timeouts.delivery;
    let mut pending: Vec<Accepted> = Vec::new();
    let mut sending = true;
    let mut session: Option<ImapMailbox> = None;
    let pause = ctx
        .settings
        .plan
        .poll_interval
        .max(Duration::from_millis(250));
    let max_looks =
        (ctx.settings.timeouts.delivery.as_millis() / pause.as_millis().max(1)) as usize * 4 + 100;
    for _ in 0..max_looks {
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
        let now = Instant::now();
        pending.retain(|a| {
            now < deadline_of(a)
                && !ctx.board.has_arrived(&a.expected.probe_id)
                && ctx
                    .board
                    .bounce(&a.expected.probe_id)
                    .is_none_or(|(b, _)| b.action != BounceAction::Failed)
        });
        if pending.is_empty() && !sending {
            break;
        }
        if !pending.is_empty() {
            if session.is_none() {
                session = ImapMailbox::open_as(ctx, &login).await.ok();
            }
            if let Some(m) = session.as_mut() {
                let ids: Vec<&str> = pending
                    .iter()
                    .map(|a| a.expected.probe_id.as_str())
                    .collect();
                match m.notifications(ctx, Wanted::Ids(&ids)).await {
                    Ok(notices) => ctx.board.post(&notices),
                    Err(_) => session = None,
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    if let Some(m) = session {
        m.close(ctx).await;
    }
}

/// Delete the notifications about the wanted probe messages that `select` picks
/// (in the watched mailbox when it is the sender's, else in the
/// `--bounce-mailbox`). Returns how many.
pub(crate) async fn delete_notifications(
    ctx: &Context,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> ProbeResult<usize> {
    let s = &ctx.settings;
    let login = match &s.target.bounce_login {
        Some(l) => Some(l),
        None if scans_here::<ImapMailbox>(ctx) => s.target.imap_login.as_ref(),
        None => None,
    };
    let Some(login) = login else {
        return Ok(0);
    };
    let mut m = ImapMailbox::open_as(ctx, login).await?;
    let deleted = delete_notifications_in(ctx, &mut m, wanted, select).await?;
    m.close(ctx).await;
    Ok(deleted)
}

/// Delete over IMAP the wanted probe messages that `select` picks, and the
/// notifications about them: in the same session (the `kept` one from watching,
/// when given) when they are in that mailbox, else in the bounce mailbox's own.
/// Both outcomes, for the report.
pub(crate) async fn imap_cleanup(
    ctx: &Context,
    kept: Option<ImapMailbox>,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> (ProbeResult<Vec<String>>, ProbeResult<usize>) {
    let shared = scans_here::<ImapMailbox>(ctx);
    let (deleted, notifications) =
        match watch::cleanup_open::<ImapMailbox>(ctx, kept, wanted, select).await {
            Ok((deleted, Some(mut m))) if shared => {
                let n = delete_notifications_in(ctx, &mut m, wanted, select).await;
                m.close(ctx).await;
                (Ok(deleted), Some(n))
            }
            Ok((deleted, session)) => {
                if let Some(m) = session {
                    m.close(ctx).await;
                }
                (Ok(deleted), None)
            }
            Err(e) => (Err(e), None),
        };
    let notifications = match notifications {
        Some(n) => n,
        // The login's own mailbox could not be searched (or nothing was wanted).
        None if shared => Ok(0),
        None => delete_notifications(ctx, wanted, select).await,
    };
    (deleted, notifications)
}

/// [`delete_notifications`] in a session already open on their mailbox.
pub(crate) async fn delete_notifications_in(
    ctx: &Context,
    m: &mut ImapMailbox,
    wanted: Wanted<'_>,
    select: &(dyn Fn(&str) -> bool + Sync),
) -> ProbeResult<usize> {
    let mut found = m.notifications(ctx, wanted).await?;
    found.retain(|n| select(&n.probe_id));
    if found.is_empty() {
        return Ok(0);
    }
    m.delete_notifications(ctx, &found).await
}

/// The place of a probe message that bounced: never in the mailbox.
pub(crate) const BOUNCED: &str = "bounced";

/// Where a probe message the cleanup did not delete is: the folder a retrieval
/// found it in, [`BOUNCED`], or `not_arrived`.
pub(crate) fn place_of(m: &MessageReport) -> String {
    let results = || m.retrievals().map(|(_, r)| r);
    if let Some(folder) = results().find_map(|r| r.folder.clone()) {
        return folder;
    }
    if results().any(|r| r.found == Some(true)) {
        return "INBOX".to_string();
    }
    if results().any(|r| {
        r.bounce
            .as_ref()
            .is_some_and(|b| b.action == BounceAction::Failed)
    }) {
        return BOUNCED.to_string();
    }
    "not_arrived".to_string()
}

/// Whether a later hop refused this message for its size (a size bounce).
pub(crate) fn bounced_for_size(m: &MessageReport) -> bool {
    m.retrievals().any(|(_, r)| {
        r.bounce
            .as_ref()
            .is_some_and(|b| b.action == BounceAction::Failed && b.reason == BounceReason::Size)
    })
}

/// Wait until one accepted message arrives or bounces (or its delivery deadline
/// passes): the retrieval watcher, with the sender's mailbox watched alongside
/// when bounces arrive there. Returns the retrieval's result.
pub(crate) async fn deliver_or_bounce(ctx: &Context, accepted: Accepted) -> Option<ProtocolResult> {
    let index = accepted.index;
    let (tx, rx) = mpsc::unbounded_channel();
    let (bounce_tx, bounce_rx) = mpsc::unbounded_channel();
    let _ = tx.send(accepted.clone());
    if ctx.settings.target.bounce_login.is_some() {
        let _ = bounce_tx.send(accepted);
    }
    drop((tx, bounce_tx));
    let retrieval = async {
        if ctx.settings.target.imap.is_some() {
            Some(watch::watch::<ImapMailbox>(ctx, rx, &Handover::new(false)).await)
        } else if ctx.settings.target.pop3.is_some() {
            Some(watch::watch::<Pop3Mailbox>(ctx, rx, &Handover::new(false)).await)
        } else {
            None
        }
    };
    let (outcome, ()) = tokio::join!(retrieval, watch_sender_mailbox(ctx, bounce_rx));
    outcome.and_then(|mut o| o.results.remove(&index))
}
