//! The context every prober of one run shares: the settings, the connector (TLS
//! client, timeouts, the check's deadline, transcript), what POP3 already learned
//! about the mailbox, the endpoints found down, and the sessions opened.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::phase::{Phase, Protocol};
use crate::io::connect::Connector;
use crate::io::deadline::Deadline;
use crate::io::tls::TlsClient;
use crate::io::transcript::Transcript;
use crate::model::report::SessionCounts;
use crate::probe::bounces::Board;
use crate::probe::settings::Settings;
use crate::probe::wait::LoginPacing;

/// Shared by every prober in a run.
pub(crate) struct Context {
    pub(crate) settings: Settings,
    pub(crate) conn: Connector,
    /// POP3 UIDL → probe id (None: not ours), so each header is read once per run.
    pub(crate) pop3_seen: Mutex<HashMap<String, Option<String>>>,
    /// Endpoints that failed to connect, greet or finish TLS: nobody waits on them again.
    down: Mutex<HashMap<Protocol, ProbeError>>,
    /// Sessions and logins per protocol, for the report.
    counts: Mutex<BTreeMap<Protocol, SessionCounts>>,
    /// When POP3 last logged in and the server's LOGIN-DELAY.
    pub(crate) pop3_pacing: Mutex<LoginPacing>,
    /// Bounces and Junk placements every watcher of the run sees.
    pub(crate) board: Board,
}

impl Context {
    /// A context for `settings`, whose deadline (`--timeout`) starts now; sessions
    /// record into `transcript` when given.
    pub(crate) fn new(
        settings: Settings,
        transcript: Option<Arc<Transcript>>,
    ) -> ProbeResult<Self> {
        let conn = Connector {
            timeouts: settings.timeouts,
            tls: TlsClient::new(&settings.tls)?,
            transcript,
            deadline: Deadline::starting_now(settings.timeouts.check),
        };
        Ok(Context {
            settings,
            conn,
            pop3_seen: Default::default(),
            down: Default::default(),
            counts: Default::default(),
            pop3_pacing: Default::default(),
            board: Board::default(),
        })
    }

    pub(crate) fn deadline(&self) -> &Deadline {
        &self.conn.deadline
    }

    /// Note that `err` ended a session of `protocol`; an endpoint that did not
    /// answer in time or at all is down for the rest of the run.
    pub(crate) fn note_failure(&self, protocol: Protocol, err: &ProbeError) {
        if endpoint_down(err) {
            self.down
                .lock()
                .expect("not poisoned")
                .entry(protocol)
                .or_insert_with(|| err.clone());
        }
    }

    /// Why `protocol`'s endpoint is not tried again, if it is down.
    pub(crate) fn down(&self, protocol: Protocol) -> Option<ProbeError> {
        self.down
            .lock()
            .expect("not poisoned")
            .get(&protocol)
            .cloned()
    }

    /// Count a session (a connection) of `protocol`.
    pub(crate) fn count_session(&self, protocol: Protocol) {
        self.with_counts(protocol, |c| c.sessions += 1);
    }

    /// Count a login attempt of `protocol`.
    pub(crate) fn count_login(&self, protocol: Protocol) {
        self.with_counts(protocol, |c| c.logins += 1);
    }

    /// Add a note on how `protocol` was watched (e.g. a LOGIN-DELAY honoured).
    pub(crate) fn note(&self, protocol: Protocol, note: impl Into<String>) {
        let note = note.into();
        self.with_counts(protocol, |c| {
            if !c.notes.contains(&note) {
                c.notes.push(note);
            }
        });
    }

    /// Change `protocol`'s counts in place.
    pub(crate) fn with_counts(&self, protocol: Protocol, change: impl FnOnce(&mut SessionCounts)) {
        change(
            self.counts
                .lock()
                .expect("not poisoned")
                .entry(protocol)
                .or_default(),
        );
    }

    /// The sessions of this run so far.
    pub(crate) fn session_counts(&self) -> BTreeMap<Protocol, SessionCounts> {
        self.counts.lock().expect("not poisoned").clone()
    }
}

/// A failure to connect, greet or finish the TLS handshake in time: waiting on the
/// endpoint again would only wait again.
pub(crate) fn endpoint_down(err: &ProbeError) -> bool {
    match err.phase {
        Some(Phase::Connect) => matches!(
            err.kind,
            ErrorKind::Timeout | ErrorKind::Refused | ErrorKind::Network
        ),
        Some(Phase::Greeting | Phase::Tls | Phase::Starttls) => err.kind == ErrorKind::Timeout,
        _ => false,
    }
}

/// The result of a step not attempted because its endpoint is down.
pub(crate) fn not_attempted(protocol: Protocol, down: &ProbeError) -> ProbeError {
    let mut err = down.clone();
    err.message = format!(
        "not attempted: the {} endpoint is down ({})",
        protocol.label(),
        down.message
    );
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_means_did_not_answer_in_time_or_at_all() {
        let at = |kind, phase| ProbeError::new(kind, "x").at(Protocol::Smtp, phase);
        assert!(endpoint_down(&at(ErrorKind::Timeout, Phase::Greeting)));
        assert!(endpoint_down(&at(ErrorKind::Timeout, Phase::Tls)));
        assert!(endpoint_down(&at(ErrorKind::Refused, Phase::Connect)));
        // A server that answers, even badly, is asked again on the next rung.
        assert!(!endpoint_down(&at(ErrorKind::Tls, Phase::Tls)));
        assert!(!endpoint_down(&at(ErrorKind::Closed, Phase::Greeting)));
        assert!(!endpoint_down(&at(ErrorKind::Timeout, Phase::Data)));
        let e = not_attempted(Protocol::Smtp, &at(ErrorKind::Timeout, Phase::Greeting));
        assert_eq!(
            (e.kind, e.phase),
            (ErrorKind::Timeout, Some(Phase::Greeting))
        );
        assert!(
            e.message
                .starts_with("not attempted: the SMTP endpoint is down")
        );
    }
}
