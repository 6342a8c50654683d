//! What a check needs, resolved and validated, in the parts each step uses: the
//! [`Target`] (endpoints, logins, addresses), the timeouts, TLS, the [`Plan`]
//! (what to send and how to watch) and the analysis thresholds.

use std::time::Duration;

use crate::core::endpoint::Endpoint;
use crate::core::secret::{Login, secret_forms};
use crate::io::connect::Timeouts;
use crate::io::tls::TlsSettings;
use crate::model::diagnosis::Thresholds;
use crate::model::report;
use crate::protocol::sasl::token_forms;

/// Everything a check needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) target: Target,
    pub(crate) timeouts: Timeouts,
    pub(crate) tls: TlsSettings,
    pub(crate) plan: Plan,
    /// When phases count as slow and certificates as expiring soon.
    pub(crate) thresholds: Thresholds,
    /// DSN requests, bounce watching and the folders besides INBOX.
    pub(crate) elsewhere: Elsewhere,
}

/// Where mail goes besides INBOX, and what the probe asks and watches for it.
#[derive(Debug, Clone)]
pub(crate) struct Elsewhere {
    /// `--dsn auto`: ask for notifications (RFC 3461) when EHLO offers DSN.
    pub(crate) request_dsn: bool,
    /// Look for notifications about the probe's messages in the watched mailbox
    /// (it is the sender's: sender = login).
    pub(crate) bounces_in_mailbox: bool,
    /// Find the Junk folder (SPECIAL-USE `\Junk` or a common name) and watch it.
    pub(crate) junk: bool,
    /// `--folders`: more folders to watch and clean.
    pub(crate) folders: Vec<String>,
}

impl Default for Elsewhere {
    fn default() -> Self {
        Elsewhere {
            request_dsn: true,
            bounces_in_mailbox: true,
            junk: true,
            folders: Vec::new(),
        }
    }
}

/// Where the probe goes and as whom.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) smtp: Endpoint,
    pub(crate) imap: Option<Endpoint>,
    pub(crate) pop3: Option<Endpoint>,
    pub(crate) smtp_login: Option<Login>,
    pub(crate) imap_login: Option<Login>,
    pub(crate) pop3_login: Option<Login>,
    /// `--bounce-mailbox` / `[login.bounces]`: the sender's own mailbox on the IMAP
    /// server, when it is not the one the probe reads.
    pub(crate) bounce_login: Option<Login>,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) helo_name: String,
    /// Allow sending a password over an unencrypted connection to a non-loopback host.
    pub(crate) allow_plaintext_login: bool,
}

/// What to send and how to watch for it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) sizes: Vec<u64>,
    /// Find the real size limit by bisection when a rung hits it.
    pub(crate) bisect: bool,
    /// `--concurrency`: messages in flight at once over SMTP (1 = one after another).
    pub(crate) concurrency: usize,
    /// How often to look for a message that has not arrived yet.
    pub(crate) poll_interval: Duration,
    /// Pipeline the SMTP envelope when EHLO offers PIPELINING (`--no-pipelining`
    /// turns it off, for servers or middleboxes that mishandle it).
    pub(crate) pipelining: bool,
}

impl Target {
    pub(crate) fn retrieval_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.imap.iter().chain(self.pop3.iter())
    }
    /// The secret forms of every login (a password's, or a token's in each SASL
    /// exchange with these endpoints), longest first: what no output may show.
    pub(crate) fn secrets(&self) -> Vec<String> {
        let endpoints: Vec<(&str, u16)> =
            [Some(&self.smtp), self.imap.as_ref(), self.pop3.as_ref()]
                .into_iter()
                .flatten()
                .map(|e| (e.host.as_str(), e.port))
                .collect();
        let mut all: Vec<String> = [&self.smtp_login, &self.imap_login, &self.pop3_login]
            .into_iter()
            .chain([&self.bounce_login])
            .flatten()
            .flat_map(|l| {
                let mut forms = secret_forms(&l.user, l.password.expose());
                if l.is_token() {
                    forms.extend(token_forms(&l.user, l.password.expose(), &endpoints));
                }
                forms
            })
            .collect();
        all.sort();
        all.dedup();
        all.sort_by_key(|f| std::cmp::Reverse(f.len()));
        all
    }
}

impl Settings {
    /// Scale the timeouts down so that one message fits `budget` (`serve`).
    pub(crate) fn fit_into(&mut self, budget: Duration) {
        let t = &mut self.timeouts;
        let quarter = budget / 4;
        let half = budget / 2;
        t.connect = t.connect.min(quarter);
        t.greeting = t.greeting.min(quarter);
        t.command = t.command.min(quarter);
        t.data = t.data.min(half);
        t.delivery = t.delivery.min(half);
        t.check = t.check.min(budget);
        self.plan.poll_interval = self.plan.poll_interval.min(budget / 8);
    }

    /// The `target` section of the report.
    pub(crate) fn report_target(&self) -> report::Target {
        let t = &self.target;
        report::Target {
            smtp: t.smtp.to_string(),
            imap: t.imap.as_ref().map(ToString::to_string),
            pop3: t.pop3.as_ref().map(ToString::to_string),
            from: t.from.clone(),
            to: t.to.clone(),
            sizes: self.plan.sizes.clone(),
            insecure: self.tls.insecure,
        }
    }
}
