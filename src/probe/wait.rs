//! How the watcher waits between looks at a mailbox, politely (the wait strategy):
//!
//! * IMAP: one IDLE kept open until the server says something. A server that
//!   never tells an open session about new mail (GNU Mailutils: not in IDLE, NOOP
//!   or SEARCH) is found out by STATUS after a quiet IDLE; from then on, and on
//!   servers without IDLE, STATUS is polled at most once per poll interval (1 s).
//!   Right after each SMTP acceptance the watcher first looks a few more times in
//!   its open session ([`QUICK_LOOKS`]: a NOOP, and a search only when it shows
//!   new mail), because servers announce new mail to an idling session late.
//! * POP3 sees a snapshot taken at login, so each look is a login: at most one per
//!   poll interval, never inside the server's LOGIN-DELAY; when IMAP also
//!   watches, POP3 logs in once IMAP is done with the messages, or has found them
//!   on a server that announces new mail to open sessions (or a short grace after
//!   SMTP accepted the last one), and fetches them all in one session.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The first quiet IDLE after which STATUS checks whether the server kept news back.
pub(crate) const IDLE_QUIET_FIRST: Duration = Duration::from_secs(2);
/// RFC 2177: re-issue IDLE at least every 29 minutes; we stay below.
pub(crate) const IDLE_MAX: Duration = Duration::from_secs(28 * 60);
/// After SMTP accepted the last message, how long POP3 waits for IMAP to be done
/// with it before logging in anyway: longer than the quick looks and the first
/// quiet IDLE together, so that IMAP on a server that keeps news from idling
/// sessions (GNU Mailutils) has found the messages by STATUS and fetched them
/// before POP3 opens the same mailbox.
pub(crate) const HANDOVER_GRACE: Duration = Duration::from_secs(4);
/// POP3 alone: how long after the last acceptance it logs in, so that one login
/// sees the whole ladder.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);
/// POP3 alone under a LOGIN-DELAY: time for delivery before the one login.
pub(crate) const SCARCE_SETTLE: Duration = Duration::from_secs(2);
/// A LOGIN-DELAY refusal from a server that never announced its delay: assume this.
pub(crate) const UNANNOUNCED_LOGIN_DELAY: Duration = Duration::from_secs(300);

/// After SMTP accepts a message, the IMAP watcher looks for it again at these
/// offsets, in its open session, before it settles into IDLE. A look is a NOOP
/// (and STATUS for folders besides INBOX); only when that shows new mail does it
/// search. Delivery usually takes milliseconds, growing with the message, while
/// servers tell an idling session late: Dovecot holds mailbox changes back for
/// 500 ms. Each look comes at most half its offset after the one before, so mail
/// is seen at most half its delivery time late (or the gap); at most this many
/// looks per message, all within a third of a second.
pub(crate) const QUICK_LOOKS: [Duration; 9] = [
    Duration::from_millis(15),
    Duration::from_millis(25),
    Duration::from_millis(35),
    Duration::from_millis(50),
    Duration::from_millis(75),
    Duration::from_millis(110),
    Duration::from_millis(160),
    Duration::from_millis(240),
    Duration::from_millis(320),
];
/// Quick looks are at least this far apart, however many messages wait.
pub(crate) const QUICK_LOOK_GAP: Duration = Duration::from_millis(10);

/// When to look again for messages SMTP accepted at `accepted`, after a look that
/// began at `last_look`; `None`: their quick looks are over, wait with IDLE.
pub(crate) fn next_quick_look(
    accepted: impl IntoIterator<Item = Instant>,
    last_look: Instant,
) -> Option<Instant> {
    accepted
        .into_iter()
        .flat_map(|t| QUICK_LOOKS.iter().map(move |d| t + *d))
        .filter(|at| *at > last_look)
        .min()
        .map(|at| at.max(last_look + QUICK_LOOK_GAP))
}

/// The IMAP side of the strategy, per session.
#[derive(Debug, Clone)]
pub(crate) struct ImapPacing {
    /// The server offers IDLE and has not been caught keeping news back.
    idle: bool,
    /// How long the next IDLE may stay quiet before STATUS is asked.
    quiet: Duration,
    /// UIDNEXT as last known while the server said nothing (SELECT or STATUS).
    uidnext: Option<u32>,
    last_status: Option<Instant>,
}

/// What a STATUS answer means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusSays {
    /// Nothing new since the last look.
    Unchanged,
    /// New mail the open session may not see: SELECT again before searching.
    Changed,
}

impl ImapPacing {
    /// A session that offers IDLE or not, whose SELECT reported `uidnext`.
    pub(crate) fn new(offers_idle: bool, uidnext: Option<u32>) -> Self {
        ImapPacing {
            idle: offers_idle,
            quiet: IDLE_QUIET_FIRST,
            uidnext,
            last_status: None,
        }
    }

    /// How long to IDLE now, at most `limit`; `None`: poll with STATUS instead.
    pub(crate) fn idle_for(&self, limit: Duration) -> Option<Duration> {
        self.idle.then(|| limit.min(self.quiet).min(IDLE_MAX))
    }

    /// The server said something during IDLE: the next quiet spell starts short.
    pub(crate) fn news(&mut self) {
        self.quiet = IDLE_QUIET_FIRST;
        self.uidnext = None;
    }

    /// IDLE stayed quiet for its whole spell: the next may be twice as long.
    pub(crate) fn quiet_spell(&mut self) {
        self.quiet = (self.quiet * 2).min(IDLE_MAX);
    }

    /// When the next STATUS poll may go out (at most one per `interval`).
    pub(crate) fn next_poll(&self, now: Instant, interval: Duration) -> Instant {
        self.last_status.map_or(now, |t| (t + interval).max(now))
    }

    /// STATUS answered `uidnext` at `now`, after IDLE was quiet (`after_quiet_idle`)
    /// or in polling. New mail the server did not announce during IDLE means it
    /// keeps news from open sessions: poll from now on.
    pub(crate) fn status(
        &mut self,
        now: Instant,
        uidnext: u32,
        after_quiet_idle: bool,
    ) -> StatusSays {
        self.last_status = Some(now);
        let grew = self.uidnext.is_some_and(|known| uidnext > known);
        let first = self.uidnext.is_none();
        self.uidnext = Some(uidnext);
        if grew && after_quiet_idle {
            self.idle = false;
        }
        if grew || (first && !after_quiet_idle) {
            StatusSays::Changed
        } else {
            StatusSays::Unchanged
        }
    }

    /// IDLE is in use (not given up for polling).
    pub(crate) fn idling(&self) -> bool {
        self.idle
    }
}

/// POP3 logins of one run: when the last was, and the server's LOGIN-DELAY.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoginPacing {
    last_login: Option<Instant>,
    login_delay: Option<Duration>,
    /// The watcher is waiting for messages: a login may be put off until they
    /// are there (cleanup and `mailprobe cleanup` log in when they must).
    pub(crate) watching: bool,
}

impl LoginPacing {
    pub(crate) fn logged_in(&mut self, at: Instant) {
        self.last_login = Some(at);
    }
    pub(crate) fn learn_delay(&mut self, delay: Duration) {
        self.login_delay = Some(self.login_delay.map_or(delay, |d| d.max(delay)));
    }
    pub(crate) fn login_delay(&self) -> Option<Duration> {
        self.login_delay
    }
    /// Logins are scarce: the server's delay is longer than our poll interval.
    pub(crate) fn scarce(&self, interval: Duration) -> bool {
        self.login_delay.is_some_and(|d| d > interval)
    }
    /// The earliest next login: one poll interval and the LOGIN-DELAY after the last.
    pub(crate) fn next_allowed(&self, now: Instant, interval: Duration) -> Instant {
        let gap = interval.max(self.login_delay.unwrap_or_default());
        self.last_login.map_or(now, |t| (t + gap).max(now))
    }
}

/// What the POP3 watcher knows when it decides whether to log in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Situation {
    pub(crate) now: Instant,
    /// SMTP may still hand over messages.
    pub(crate) sending: bool,
    pub(crate) first_pending_accepted: Instant,
    pub(crate) last_accepted: Instant,
    /// IMAP watches the same run.
    pub(crate) peer_watching: bool,
    /// IMAP is done (fetched or given up) with every pending message.
    pub(crate) peer_done: bool,
    /// IMAP has found every pending message on a server that announces new mail
    /// to open sessions: POP3 may fetch beside it ([`Handover`]).
    pub(crate) peer_found: bool,
    /// When watching must end.
    pub(crate) deadline: Instant,
    pub(crate) interval: Duration,
}

/// When the POP3 watcher should log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    Now,
    At(Instant),
    /// No login is allowed before the deadline.
    NotBefore(Instant),
}

/// Decide the next POP3 login.
pub(crate) fn next_login(p: &LoginPacing, s: &Situation) -> When {
    let allowed = p.next_allowed(s.now, s.interval);
    let ready = if s.peer_watching {
        // Under a LOGIN-DELAY the one login waits until IMAP is done, so that it
        // may delete what IMAP has fetched.
        let beside = s.peer_found && !p.scarce(s.interval);
        if (s.peer_done || beside) && !s.sending {
            s.now
        } else if s.sending || p.scarce(s.interval) {
            // A scarce login waits for IMAP (or the end) rather than a grace.
            // The next acceptance or IMAP's progress wakes the watcher up.
            s.deadline
        } else {
            s.last_accepted + HANDOVER_GRACE
        }
    } else if p.scarce(s.interval) {
        if s.sending {
            s.deadline
        } else {
            s.last_accepted + SCARCE_SETTLE
        }
    } else if s.sending {
        s.first_pending_accepted + s.interval
    } else {
        s.last_accepted + SETTLE
    };
    // Near the end, one last look rather than none.
    let at = ready.min(s.deadline).max(allowed);
    if at > s.deadline {
        When::NotBefore(allowed)
    } else if at <= s.now {
        When::Now
    } else {
        When::At(at)
    }
}

/// What IMAP tells POP3: which messages it is done with (fetched, or given up),
/// which it has found, and whether its server tells an open session about new mail.
/// POP3 does not log in beside an IMAP fetch on a server that keeps news from open
/// sessions: with a POP3 session opened on the Maildir meanwhile, GNU Mailutils'
/// imap4d served another message for the UID it had found (seen in
/// tests/interop.rs). A server that announced a new message to the watching
/// session (EXISTS after a NOOP) tracks other sessions' changes as they happen,
/// so there POP3 may log in once IMAP has found every message, and fetch while
/// IMAP fetches.
#[derive(Debug, Default)]
pub(crate) struct Handover {
    /// IMAP watches this run.
    pub(crate) lead: bool,
    done: Mutex<HashSet<usize>>,
    found: Mutex<HashSet<usize>>,
    /// IMAP's server announced a new message to the open session.
    live: AtomicBool,
    finished: AtomicBool,
    changed: Notify,
}

impl Handover {
    pub(crate) fn new(lead: bool) -> Self {
        Handover {
            lead,
            ..Default::default()
        }
    }
    /// IMAP is done with these messages.
    pub(crate) fn mark(&self, indexes: impl IntoIterator<Item = usize>) {
        if grow(&self.done, indexes) {
            self.changed.notify_waiters();
        }
    }
    /// IMAP found these messages (it may still be fetching them).
    pub(crate) fn found(&self, indexes: impl IntoIterator<Item = usize>) {
        if grow(&self.found, indexes) && self.live.load(Ordering::Relaxed) {
            self.changed.notify_waiters();
        }
    }
    /// IMAP's server announced a new message to the open session.
    pub(crate) fn server_announces(&self) {
        if !self.live.swap(true, Ordering::Relaxed) {
            self.changed.notify_waiters();
        }
    }
    /// POP3 may fetch all of `indexes` beside IMAP: its server announces new mail
    /// to open sessions and IMAP has found each of them (or is done).
    pub(crate) fn fetchable_beside(&self, indexes: impl IntoIterator<Item = usize>) -> bool {
        if !self.live.load(Ordering::Relaxed) {
            return false;
        }
        let found = self.found.lock().expect("not poisoned");
        let done = self.done.lock().expect("not poisoned");
        indexes
            .into_iter()
            .all(|i| found.contains(&i) || done.contains(&i))
    }
    /// IMAP is done with all of `indexes` (or stopped watching).
    pub(crate) fn done_with(&self, indexes: impl IntoIterator<Item = usize>) -> bool {
        if self.finished.load(Ordering::Relaxed) {
            return true;
        }
        let done = self.done.lock().expect("not poisoned");
        indexes.into_iter().all(|i| done.contains(&i))
    }
    /// IMAP stopped watching.
    pub(crate) fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
    /// IMAP is done with this one message.
    pub(crate) fn done_with_one(&self, index: usize) -> bool {
        self.done.lock().expect("not poisoned").contains(&index)
    }
    /// Wait until IMAP reports progress.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await
    }
}

/// Add `indexes` to `set`; whether it grew.
fn grow(set: &Mutex<HashSet<usize>>, indexes: impl IntoIterator<Item = usize>) -> bool {
    let mut set = set.lock().expect("not poisoned");
    let before = set.len();
    set.extend(indexes);
    set.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn situation(now: Instant) -> Situation {
        Situation {
            now,
            sending: false,
            first_pending_accepted: now,
            last_accepted: now,
            peer_watching: false,
            peer_done: false,
            peer_found: false,
            deadline: now + 40 * S,
            interval: S,
        }
    }

    #[test]
    fn imap_idles_until_caught_keeping_news_back() {
        let t0 = Instant::now();
        let mut p = ImapPacing::new(true, Some(5));
        assert_eq!(p.idle_for(60 * S), Some(IDLE_QUIET_FIRST));
        p.quiet_spell();
        assert_eq!(p.idle_for(60 * S), Some(4 * S));
        // Nothing new: IDLE goes on, twice as long each quiet spell.
        assert_eq!(p.status(t0, 5, true), StatusSays::Unchanged);
        assert!(p.idling());
        // Mail arrived and IDLE said nothing: poll from now on.
        assert_eq!(p.status(t0, 7, true), StatusSays::Changed);
        assert!(!p.idling());
        assert_eq!(p.idle_for(60 * S), None);
        assert_eq!(p.next_poll(t0, S), t0 + S);
        for _ in 0..20 {
            p.quiet_spell();
        }
        let mut q = ImapPacing::new(true, Some(1));
        for _ in 0..20 {
            q.quiet_spell();
        }
        assert_eq!(q.idle_for(3600 * S), Some(IDLE_MAX));
        q.news();
        assert_eq!(q.idle_for(3600 * S), Some(IDLE_QUIET_FIRST));
        assert_eq!(ImapPacing::new(false, None).idle_for(S), None);
    }

    #[test]
    fn pop3_logs_in_once_a_second_at_most() {
        let t0 = Instant::now();
        let mut p = LoginPacing::default();
        let s = situation(t0);
        assert_eq!(next_login(&p, &s), When::At(t0 + SETTLE));
        p.logged_in(t0);
        let s = Situation {
            now: t0 + Duration::from_millis(300),
            ..s
        };
        assert_eq!(next_login(&p, &s), When::At(t0 + S));
        // While sending: a poll interval after the first message waiting.
        let s = Situation {
            sending: true,
            now: t0 + 4 * S + Duration::from_millis(500),
            first_pending_accepted: t0 + 4 * S,
            ..s
        };
        assert_eq!(next_login(&p, &s), When::At(t0 + 5 * S));
        let s = Situation {
            now: t0 + 5 * S,
            ..s
        };
        assert_eq!(next_login(&p, &s), When::Now);
    }

    #[test]
    fn pop3_honours_login_delay() {
        let t0 = Instant::now();
        let mut p = LoginPacing::default();
        p.learn_delay(60 * S);
        assert!(p.scarce(S));
        let s = situation(t0);
        assert_eq!(next_login(&p, &s), When::At(t0 + SCARCE_SETTLE));
        p.logged_in(t0 + SCARCE_SETTLE);
        let later = Situation {
            now: t0 + 3 * S,
            ..s
        };
        // The next login would be 60 s later, after the deadline: none.
        assert_eq!(
            next_login(&p, &later),
            When::NotBefore(t0 + SCARCE_SETTLE + 60 * S)
        );
    }

    #[test]
    fn pop3_follows_imap() {
        let t0 = Instant::now();
        let p = LoginPacing::default();
        let mut s = situation(t0);
        s.peer_watching = true;
        s.sending = true;
        assert_eq!(next_login(&p, &s), When::At(s.deadline));
        s.sending = false;
        assert_eq!(next_login(&p, &s), When::At(t0 + HANDOVER_GRACE));
        // Under a LOGIN-DELAY, no grace: IMAP's word, or the last moment.
        let mut scarce = LoginPacing::default();
        scarce.learn_delay(60 * S);
        assert_eq!(next_login(&scarce, &s), When::At(s.deadline));
        // IMAP found them on a server that announces news: POP3 fetches beside
        // IMAP, except under a LOGIN-DELAY.
        s.peer_found = true;
        assert_eq!(next_login(&p, &s), When::Now);
        assert_eq!(next_login(&scarce, &s), When::At(s.deadline));
        s.sending = true;
        assert_eq!(next_login(&p, &s), When::At(s.deadline));
        s.sending = false;
        s.peer_found = false;
        s.peer_done = true;
        assert_eq!(next_login(&p, &s), When::Now);
        assert_eq!(next_login(&scarce, &s), When::Now);
    }

    #[test]
    fn quick_looks_are_few_and_early() {
        let t0 = Instant::now();
        // One message: exactly the schedule, then IDLE.
        let mut looks = Vec::new();
        let mut last = t0;
        while let Some(at) = next_quick_look([t0], last) {
            looks.push(at - t0);
            last = at;
            assert!(looks.len() <= QUICK_LOOKS.len(), "{looks:?}");
        }
        assert_eq!(looks, QUICK_LOOKS);
        // Many messages accepted close together: never closer than the gap, and
        // at most the schedule's length per message.
        let accepted: Vec<Instant> = (0..50).map(|i| t0 + Duration::from_millis(i)).collect();
        let (mut last, mut n) = (t0, 0);
        while let Some(at) = next_quick_look(accepted.iter().copied(), last) {
            assert!(at >= last + QUICK_LOOK_GAP);
            last = at;
            n += 1;
            assert!(n <= QUICK_LOOKS.len() * accepted.len());
        }
        assert!(
            last <= t0
                + Duration::from_millis(49)
                + QUICK_LOOKS[QUICK_LOOKS.len() - 1]
                + QUICK_LOOK_GAP
        );
        // Mail that arrives between two looks waits at most half its age.
        for pair in QUICK_LOOKS.windows(2) {
            assert!(
                pair[1] <= (pair[0] * 3 / 2).max(pair[0] + QUICK_LOOK_GAP),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn handover() {
        let h = Handover::new(true);
        assert!(!h.done_with([0, 1]));
        h.mark([0]);
        assert!(h.done_with_one(0) && !h.done_with([0, 1]));
        h.mark([1]);
        assert!(h.done_with([0, 1]));
        let h = Handover::new(true);
        h.finish();
        assert!(h.done_with([3]));
        // Found is enough only once the server has announced news to IMAP.
        let h = Handover::new(true);
        h.found([0, 1]);
        h.mark([2]);
        assert!(!h.fetchable_beside([0, 1, 2]));
        h.server_announces();
        assert!(h.fetchable_beside([0, 1, 2]) && !h.fetchable_beside([0, 3]));
        assert!(!h.done_with([0, 1]));
    }
}
