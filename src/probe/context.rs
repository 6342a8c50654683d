//! The context every prober of one run shares: the settings, the connector (TLS
//! client, timeouts, transcript) and what POP3 already learned about the mailbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::core::error::ProbeResult;
use crate::io::connect::Connector;
use crate::io::tls::TlsClient;
use crate::io::transcript::Transcript;
use crate::probe::bounces::Board;
use crate::probe::settings::Settings;

/// Shared by every prober in a run.
pub(crate) struct Context {
    pub(crate) settings: Settings,
    pub(crate) conn: Connector,
    /// POP3 UIDL → probe id (None: not ours), so each header is read once per run.
    pub(crate) pop3_seen: Mutex<HashMap<String, Option<String>>>,
    /// Bounces and Junk placements every watcher of the run sees.
    pub(crate) board: Board,
}

impl Context {
    /// A context for `settings`; sessions record into `transcript` when given.
    pub(crate) fn new(
        settings: Settings,
        transcript: Option<Arc<Transcript>>,
    ) -> ProbeResult<Self> {
        let conn = Connector {
            timeouts: settings.timeouts,
            tls: TlsClient::new(&settings.tls)?,
            transcript,
        };
        Ok(Context {
            settings,
            conn,
            pop3_seen: Default::default(),
            board: Board::default(),
        })
    }
}
