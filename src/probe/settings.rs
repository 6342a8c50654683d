//! What a check needs, resolved and validated, in the parts each step uses: the
//! [`Target`] (endpoints, logins, addresses), the timeouts, TLS, the [`Plan`]
//! (what to send and how to watch) and the analysis thresholds.

use std::time::Duration;

use crate::core::endpoint::Endpoint;
use crate::core::phase::Protocol;
use crate::core::secret::{Login, secret_forms};
use crate::io::connect::Timeouts;
use crate::io::tls::TlsSettings;
use crate::model::diagnosis::Thresholds;
use crate::model::report;

/// Everything a check needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub timeouts: Timeouts,
    pub tls: TlsSettings,
    pub plan: Plan,
    /// When phases count as slow and certificates as expiring soon.
    pub thresholds: Thresholds,
}

/// Where the probe goes and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub smtp: Endpoint,
    pub imap: Option<Endpoint>,
    pub pop3: Option<Endpoint>,
    pub smtp_login: Option<Login>,
    pub imap_login: Option<Login>,
    pub pop3_login: Option<Login>,
    pub from: String,
    pub to: String,
    pub helo_name: String,
    /// Allow sending a password over an unencrypted connection to a non-loopback host.
    pub allow_plaintext_login: bool,
}

/// What to send and how to watch for it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sizes: Vec<u64>,
    /// Send only; do not retrieve (also for mailboxes that are not ours to read).
    pub smtp_only: bool,
    /// Find the real size limit by bisection when a rung hits it.
    pub bisect: bool,
    /// `--concurrency`: messages in flight at once over SMTP (1 = one after another).
    pub concurrency: usize,
    /// How often to look for a message that has not arrived yet.
    pub poll_interval: Duration,
}

impl Target {
    pub fn login_for(&self, protocol: Protocol) -> Option<&Login> {
        match protocol {
            Protocol::Smtp => self.smtp_login.as_ref(),
            Protocol::Imap => self.imap_login.as_ref(),
            Protocol::Pop3 => self.pop3_login.as_ref(),
        }
    }
    pub fn retrieval_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.imap.iter().chain(self.pop3.iter())
    }
    /// The secret forms of every login, longest first: what no output may show.
    pub fn secrets(&self) -> Vec<String> {
        let mut all: Vec<String> = [&self.smtp_login, &self.imap_login, &self.pop3_login]
            .into_iter()
            .flatten()
            .flat_map(|l| secret_forms(&l.user, l.password.expose()))
            .collect();
        all.sort();
        all.dedup();
        all.sort_by_key(|f| std::cmp::Reverse(f.len()));
        all
    }
}

impl Settings {
    /// Scale the timeouts down so that one message fits `budget` (`serve`).
    pub fn fit_into(&mut self, budget: Duration) {
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
    pub fn report_target(&self) -> report::Target {
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
