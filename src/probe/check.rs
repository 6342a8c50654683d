//! One check: build the ladder, send each rung over SMTP while IMAP and POP3 watch
//! the mailbox, then delete the probe's own messages and assemble the report.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::analysis::diagnosis;
use crate::core::error::ProbeError;
use crate::core::phase::millis;
use crate::core::phase::{Phase, Protocol};
use crate::core::probe_id::new_probe_id;
use crate::io::transcript::Transcript;
use crate::model::report::{Cleanup, MessageReport, Place, Report, TimeLimit};
use crate::model::result::ProtocolResult;
use crate::probe::bisect::bisect_size_limit;
use crate::probe::bounces;
use crate::probe::context::Context;
use crate::probe::imap::ImapMailbox;
use crate::probe::pop3::Pop3Mailbox;
use crate::probe::settings::Settings;
use crate::probe::smtp;
use crate::probe::wait::Handover;
use crate::probe::watch::{self, Accepted, Mailbox, Wanted, WatchOutcome};
use crate::protocol::message::ProbeMessage;

/// Run one check against the configured server. Never panics on server behaviour;
/// every failure lands in the report.
pub async fn run_check(settings: Settings) -> Result<Report, ProbeError> {
    run_recorded(settings, None).await
}

/// [`run_check`], with every session recorded into `transcript` when given.
pub(crate) async fn run_recorded(
    settings: Settings,
    transcript: Option<Arc<Transcript>>,
) -> Result<Report, ProbeError> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let ctx = Context::new(settings, transcript)?;
    let s = &ctx.settings;
    let messages = build_messages(s, s.plan.sizes.clone()).await?;
    let mut dispatched = send_and_watch(&ctx, &messages, s.plan.concurrency, &|_| None).await;
    let mut reports = message_reports(&messages, &dispatched);
    let mut watched = dispatched.watched();
    let sent: Vec<smtp::Sent> = dispatched.sent.into_iter().map(|d| d.sent).collect();

    let smtp_server = sent.iter().rev().find_map(|s| s.server.clone());
    let mut extra_ids = Vec::new();
    let size_limit = if s.plan.bisect {
        // Bisection may take minutes: no idle session is held open meanwhile.
        watched.close_session(&ctx).await;
        let advertised = smtp_server.as_ref().and_then(|i| i.advertised_size);
        bisect_size_limit(&ctx, &reports, advertised, &mut extra_ids).await
    } else {
        None
    };
    let cleanup = clean_up(&ctx, &mut reports, &sent, &extra_ids, watched).await;
    let mut report = Report::new(s.report_target(), started_at, started, reports, cleanup);
    report.smtp_server = smtp_server;
    report.size_limit = size_limit;
    record_pacing(&ctx, &mut report);
    diagnosis::apply(&mut report, &s.thresholds);
    Ok(report)
}

/// Attachment bytes a ladder may have to be built on the async thread.
const BUILD_INLINE_BYTES: u64 = 256 * 1024;

/// The sessions the run opened and whether its time limit was reached, for the report.
pub(crate) fn record_pacing(ctx: &Context, report: &mut Report) {
    report.sessions = ctx.session_counts();
    let spent = ctx.deadline().spent_in();
    report.time_limit = Some(TimeLimit {
        timeout_ms: millis(ctx.deadline().limit()),
        reached: spent.is_some(),
        protocol: spent.map(|(p, _)| p),
        phase: spent.map(|(_, ph)| ph),
    });
}

/// Build one message per size (off the async thread: hashing a large attachment
/// takes a moment).
pub(crate) async fn build_messages(
    s: &Settings,
    sizes: Vec<u64>,
) -> Result<Vec<ProbeMessage>, ProbeError> {
    let (from, to) = (s.target.from.clone(), s.target.to.clone());
    let inline = sizes.iter().sum::<u64>() <= BUILD_INLINE_BYTES;
    let build = move || {
        sizes
            .iter()
            .map(|&size| ProbeMessage::build(&new_probe_id(), &from, &to, size))
            .collect()
    };
    // Small ladders take less time to build than a hand-off to a blocking thread.
    if inline {
        return Ok(build());
    }
    tokio::task::spawn_blocking(build)
        .await
        .map_err(|e| ProbeError::config(format!("building messages failed: {e}")))
}

/// One message's trip through SMTP.
pub(crate) struct Dispatch {
    pub(crate) index: usize,
    pub(crate) sent: smtp::Sent,
    /// When sending began.
    pub(crate) started: Instant,
}

/// What sending and watching produced.
pub(crate) struct Dispatched {
    /// In message order.
    pub(crate) sent: Vec<Dispatch>,
    pub(crate) imap: Option<WatchOutcome>,
    pub(crate) pop3: Option<WatchOutcome>,
    /// IMAP's watching session, still logged in, for the cleanup.
    imap_session: Option<ImapMailbox>,
}

/// What watching leaves for the cleanup.
pub(crate) struct Watched {
    /// Probe ids the watchers already deleted (POP3 under a LOGIN-DELAY).
    deleted: Vec<String>,
    /// IMAP's watching session, so that the cleanup need not log in again.
    imap_session: Option<ImapMailbox>,
}

impl Watched {
    /// Log the kept session out now.
    pub(crate) async fn close_session(&mut self, ctx: &Context) {
        if let Some(m) = self.imap_session.take() {
            m.close(ctx).await;
        }
    }
}

impl Dispatched {
    /// Take what the cleanup needs from watching.
    pub(crate) fn watched(&mut self) -> Watched {
        Watched {
            deleted: [&self.imap, &self.pop3]
                .into_iter()
                .flatten()
                .flat_map(|w| w.deleted.iter().cloned())
                .collect(),
            imap_session: self.imap_session.take(),
        }
    }
}

/// Send every message, up to `in_flight` at once and none before `not_before(index)`
/// (constant-rate mode), while IMAP and POP3 watch for each as SMTP accepts it.
pub(crate) async fn send_and_watch(
    ctx: &Context,
    messages: &[ProbeMessage],
    in_flight: usize,
    not_before: &(dyn Fn(usize) -> Option<Instant> + Sync),
) -> Dispatched {
    let s = &ctx.settings;
    let handover = Handover::new(s.target.imap.is_some());
    let handover = &handover;
    let (imap_tx, imap_rx) = mpsc::unbounded_channel::<Accepted>();
    let (pop3_tx, pop3_rx) = mpsc::unbounded_channel::<Accepted>();
    let (bounce_tx, bounce_rx) = mpsc::unbounded_channel::<Accepted>();
    // Only watchers that run get a sender; dropping them tells the watchers sending is over.
    let senders: Vec<mpsc::UnboundedSender<Accepted>> = [
        s.target.imap.as_ref().map(|_| imap_tx),
        s.target.pop3.as_ref().map(|_| pop3_tx),
        s.target.bounce_login.as_ref().map(|_| bounce_tx),
    ]
    .into_iter()
    .flatten()
    .collect();
    let send_all = async move {
        let senders = &senders;
        let mut sent: Vec<Dispatch> = futures::stream::iter(messages.iter().enumerate())
            .map(|(index, message)| async move {
                if let Some(at) = not_before(index) {
                    tokio::time::sleep_until(at.into()).await;
                }
                let started = Instant::now();
                if let Some(t) = &ctx.conn.transcript {
                    t.set_message(Protocol::Smtp, Some(index));
                }
                let sent = smtp::send(ctx, message).await;
                if let Some(accepted_at) = sent.accepted_at {
                    let accepted = Accepted {
                        index,
                        expected: message.expected.clone(),
                        accepted_at,
                        encoded_len: message.encoded_len(),
                    };
                    for tx in senders {
                        let _ = tx.send(accepted.clone());
                    }
                }
                Dispatch {
                    index,
                    sent,
                    started,
                }
            })
            .buffer_unordered(in_flight.max(1))
            .collect()
            .await;
        sent.sort_by_key(|d| d.index);
        sent
    };
    let watch_imap = async {
        match s.target.imap {
            Some(_) => {
                let (outcome, session) =
                    watch::watch_keeping::<ImapMailbox>(ctx, imap_rx, handover).await;
                (Some(outcome), session)
            }
            None => (None, None),
        }
    };
    let watch_pop3 = async {
        match s.target.pop3 {
            Some(_) => Some(watch::watch::<Pop3Mailbox>(ctx, pop3_rx, handover).await),
            None => None,
        }
    };
    let watch_bounces = bounces::watch_sender_mailbox(ctx, bounce_rx);
    let (sent, (imap, imap_session), pop3, ()) =
        tokio::join!(send_all, watch_imap, watch_pop3, watch_bounces);
    Dispatched {
        sent,
        imap,
        pop3,
        imap_session,
    }
}

/// One report row per message: what SMTP, IMAP and POP3 did with it.
pub(crate) fn message_reports(messages: &[ProbeMessage], d: &Dispatched) -> Vec<MessageReport> {
    messages
        .iter()
        .zip(&d.sent)
        .map(|(message, dispatch)| MessageReport {
            probe_id: message.probe_id().to_string(),
            size_bytes: message.attachment_size(),
            attachment: message.attachment_size() > 0,
            encoded_bytes: message.encoded_len(),
            smtp: dispatch.sent.result.clone(),
            imap: d.imap.as_ref().map(|w| take_result(w, dispatch.index)),
            pop3: d.pop3.as_ref().map(|w| take_result(w, dispatch.index)),
            round: None,
        })
        .collect()
}

pub(crate) fn take_result(watch: &WatchOutcome, index: usize) -> ProtocolResult {
    watch
        .results
        .get(&index)
        .or(watch.unreached.as_ref())
        .cloned()
        .unwrap_or_else(|| ProtocolResult {
            skipped: Some("SMTP did not accept the message".into()),
            ..Default::default()
        })
}

/// Delete every probe message of this run that SMTP accepted, through IMAP first
/// and then POP3 (they may be different mailboxes), and record what is left.
pub(crate) async fn clean_up(
    ctx: &Context,
    reports: &mut [MessageReport],
    sent: &[smtp::Sent],
    extra_ids: &[String],
    mut watched: Watched,
) -> Cleanup {
    if ctx.settings.target.imap.is_none() && ctx.settings.target.pop3.is_none() {
        // --smtp-only: the mailbox is not ours to read, so nothing is cleaned or missed.
        return Cleanup::default();
    }
    // The reserved end of the check's time limit is for this.
    ctx.deadline().enter_cleanup();
    let ids: Vec<String> = reports
        .iter()
        .zip(sent)
        .filter(|(_, s)| s.accepted_at.is_some())
        .map(|(r, _)| r.probe_id.clone())
        .chain(extra_ids.iter().cloned())
        .collect();
    // A message whose DATA got no final reply may still have been taken by the
    // server: delete it too if it is there, without counting it as a leftover.
    let uncertain: Vec<String> = reports
        .iter()
        .zip(sent)
        .filter(|(_, s)| s.accepted_at.is_none())
        .filter(|(r, _)| {
            r.smtp
                .error
                .as_ref()
                .is_some_and(|e| e.phase == Some(Phase::Data) && e.reply.is_none())
        })
        .map(|(r, _)| r.probe_id.clone())
        .collect();
    let candidates: Vec<&str> = ids
        .iter()
        .chain(&uncertain)
        .map(String::as_str)
        .filter(|id| !watched.deleted.iter().any(|d| d == id))
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    // Per protocol: `deleted` of a protocol's result says that protocol removed
    // the copy (a POP3 copy gone because IMAP expunged it was not POP3's doing).
    // The watchers delete only in POP3's one session under a LOGIN-DELAY.
    let mut by_imap: Vec<String> = Vec::new();
    let mut by_pop3: Vec<String> = std::mem::take(&mut watched.deleted);
    let mut errors = Vec::new();
    let mut notifications_deleted = 0;
    if ctx.settings.target.imap.is_some() {
        let kept = watched.imap_session.take();
        let (deleted, notifications) =
            bounces::imap_cleanup(ctx, kept, Wanted::Ids(&candidates), &|_| true).await;
        match deleted {
            Ok(d) => by_imap = d,
            Err(e) => errors.push(e),
        }
        match notifications {
            Ok(n) => notifications_deleted = n,
            Err(e) => errors.push(e),
        }
    }
    if ctx.settings.target.pop3.is_some() {
        let remaining: Vec<&str> = candidates
            .iter()
            .copied()
            .filter(|id| {
                ctx.settings.target.imap.is_none()
                    || !by_imap.iter().any(|d| d == id)
                    || separate_mailboxes(ctx)
            })
            .collect();
        match watch::cleanup::<Pop3Mailbox>(ctx, &remaining).await {
            Ok(d) => by_pop3.extend(d),
            Err(e) => errors.push(e),
        }
    }
    let deleted: Vec<String> = by_imap.iter().chain(&by_pop3).cloned().collect();
    // The notifications about them go too (only those about this run's messages).
    let mut leftovers = Vec::new();
    let mut places = Vec::new();
    for r in reports.iter_mut() {
        let was_sent = ids.contains(&r.probe_id.as_str());
        let gone = deleted.iter().any(|d| d == &r.probe_id);
        if was_sent {
            for (res, by) in [(r.imap.as_mut(), &by_imap), (r.pop3.as_mut(), &by_pop3)] {
                if let Some(res) = res {
                    res.deleted = Some(by.iter().any(|d| d == &r.probe_id));
                }
            }
        }
        if was_sent && !gone {
            let place = bounces::place_of(r);
            // A bounced message never reached the mailbox: nothing is left of it.
            if place != bounces::BOUNCED {
                leftovers.push(r.probe_id.clone());
            }
            places.push(Place {
                probe_id: r.probe_id.clone(),
                place,
            });
        }
    }
    // Extra (bisection) messages that bounced never reached the mailbox either.
    leftovers.extend(
        extra_ids
            .iter()
            .filter(|id| !deleted.contains(id) && !bounces::bounced(ctx, id))
            .cloned(),
    );
    Cleanup {
        deleted: deleted.len(),
        leftovers,
        errors,
        notifications_deleted,
        places,
    }
}

/// IMAP and POP3 logins differ: the mailboxes may too, so clean both.
fn separate_mailboxes(ctx: &Context) -> bool {
    let s = &ctx.settings;
    s.target.imap_login.as_ref().map(|l| &l.user) != s.target.pop3_login.as_ref().map(|l| &l.user)
        || s.target.imap.as_ref().map(|e| &e.host) != s.target.pop3.as_ref().map(|e| &e.host)
}
