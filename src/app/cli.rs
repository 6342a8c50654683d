//! Command-line interface. Secrets are never accepted as arguments: only the
//! name of an environment variable, the path of a file that holds them, or (for
//! an access token) a command that prints it.

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

use crate::core::auth::Mechanism;
use crate::core::endpoint::StarttlsPolicy;
use crate::report::Format;

/// The `--help` sections flags are grouped under (clap's `help_heading`). A new
/// flag takes one of these; `tests::every_flag_has_help_and_a_heading` checks it.
pub(crate) mod heading {
    pub(crate) const ENDPOINTS: &str = "Endpoints";
    pub(crate) const LOGIN: &str = "Login";
    pub(crate) const LADDER: &str = "Ladder";
    pub(crate) const TIMEOUTS: &str = "Timeouts";
    pub(crate) const TLS: &str = "TLS";
    pub(crate) const THRESHOLDS: &str = "Thresholds";
    pub(crate) const OUTPUT: &str = "Output";
    pub(crate) const ROUNDS: &str = "Rounds";
    pub(crate) const BOUNCES: &str = "Bounces and Junk";
}

#[derive(Debug, Parser)]
#[command(
    name = "mailprobe",
    version,
    about = "Prove a mail server really moves mail: send a ladder of messages with attachments over SMTP, read them back over IMAP and POP3, verify every byte, and name what is wrong.",
    after_help = "Exit codes: 0 healthy, 1 degraded, 2 failing, 3 could not run."
)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send the size ladder, read it back, verify, clean up, and report.
    Check(CheckArgs),
    /// Delete leftover probe messages (found by probe id, older than a given age)
    /// over IMAP and POP3; nothing else in the mailbox is touched.
    Cleanup(CleanupArgs),
    /// Run a Prometheus exporter (blackbox_exporter style): GET /probe?profile=NAME
    /// runs the check of probes/NAME.toml and answers its metrics; GET /metrics
    /// answers the exporter's own.
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff) on standard output.
    Man,
    /// Repeat rounds until the server has been healthy for --stable rounds in a row
    /// (exit 0) or --deadline passes (failing: flapping, down or degraded).
    Verify(VerifyArgs),
}

/// Where the mailboxes are, how to log in and how long to wait (check, verify, cleanup).
#[derive(Debug, Clone, Default, Args)]
pub struct MailboxArgs {
    /// Profile file (TOML) with the same settings; flags override it.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// IMAP endpoint: imap://host:port or imaps://host:port.
    #[arg(long, value_name = "URL", help_heading = heading::ENDPOINTS)]
    pub imap: Option<String>,
    /// POP3 endpoint: pop3://host:port or pop3s://host:port.
    #[arg(long, value_name = "URL", help_heading = heading::ENDPOINTS)]
    pub pop3: Option<String>,
    /// STARTTLS on plain URLs: upgrade when offered, require it, or never use it (default auto).
    #[arg(long, value_enum, value_name = "POLICY", help_heading = heading::TLS)]
    pub starttls: Option<StarttlsPolicy>,
    /// Login name for SMTP AUTH, IMAP and POP3 (per protocol in a profile's [login.*];
    /// default: none, no login).
    #[arg(long, help_heading = heading::LOGIN)]
    pub user: Option<String>,
    /// Name of the environment variable holding the password (default MAILPROBE_PASSWORD).
    #[arg(long, value_name = "VAR", help_heading = heading::LOGIN)]
    pub password_env: Option<String>,
    /// File whose first line is the password.
    #[arg(long, value_name = "FILE", help_heading = heading::LOGIN)]
    pub password_file: Option<PathBuf>,
    /// SASL mechanism: auto (passwords: PLAIN or LOGIN as offered; tokens:
    /// OAUTHBEARER or XOAUTH2 as offered), plain, login, xoauth2, oauthbearer
    /// (per protocol in a profile's [login.*] `auth`). Default auto.
    #[arg(long, value_name = "MECHANISM", value_parser = parse_mechanism, help_heading = heading::LOGIN)]
    pub auth: Option<Mechanism>,
    /// Name of the environment variable holding an OAuth access token (instead of a password).
    #[arg(long, value_name = "VAR", conflicts_with_all = ["password_env", "password_file"], help_heading = heading::LOGIN)]
    pub token_env: Option<String>,
    /// File holding an OAuth access token (read once per check).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["password_env", "password_file", "token_env"], help_heading = heading::LOGIN)]
    pub token_file: Option<PathBuf>,
    /// Command whose standard output is an OAuth access token, run once per check
    /// without a shell (words split like a shell, nothing expanded); its stderr is
    /// shown when it fails.
    #[arg(long, value_name = "COMMAND", conflicts_with_all = ["password_env", "password_file", "token_env", "token_file"], help_heading = heading::LOGIN)]
    pub token_command: Option<String>,
    /// How long --token-command may run before it is killed (default 30s).
    #[arg(long, value_name = "DURATION", help_heading = heading::TIMEOUTS)]
    pub token_timeout: Option<String>,
    /// Allow a password over an unencrypted connection to a host other than loopback.
    #[arg(long, help_heading = heading::LOGIN)]
    pub allow_plaintext_login: bool,
    /// Trust this CA (PEM) in addition to the system roots (default: system roots only).
    #[arg(long, value_name = "FILE", help_heading = heading::TLS)]
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate. The report says so.
    #[arg(long, help_heading = heading::TLS)]
    pub insecure: bool,
    /// Also require the server key to be this one: `sha256//BASE64` of its
    /// SubjectPublicKeyInfo, as curl --pinnedpubkey takes it; several separated
    /// by `;` (default: no pin).
    #[arg(long, value_name = "sha256//HASH", help_heading = heading::TLS)]
    pub pin_sha256: Option<String>,
    /// The most the whole check may take, from start to report, like a monitoring
    /// plugin's -t: each phase's timeout is cut to what remains and the last sixth
    /// (at most 5 s) is kept for cleanup [default: 45s, inside the 60 s after which
    /// Nagios and Icinga kill a check]. --rounds and verify: the bound of each round.
    #[arg(long, value_name = "DURATION", help_heading = heading::TIMEOUTS)]
    pub timeout: Option<String>,
    /// Timeout for opening the TCP connection (default 10s).
    #[arg(long, value_name = "DURATION", help_heading = heading::TIMEOUTS)]
    pub connect_timeout: Option<String>,
    /// Timeout for the server's greeting after connecting, TLS included (default 20s).
    #[arg(long, value_name = "DURATION", help_heading = heading::TIMEOUTS)]
    pub greeting_timeout: Option<String>,
    /// Timeout for each command and its reply (default 30s).
    #[arg(long, value_name = "DURATION", help_heading = heading::TIMEOUTS)]
    pub command_timeout: Option<String>,
    /// Timeout for transferring one message (DATA, FETCH, RETR; default 120s).
    #[arg(long, value_name = "DURATION", help_heading = heading::TIMEOUTS)]
    pub data_timeout: Option<String>,
    #[command(flatten)]
    pub folders: FolderArgs,
}

/// Where else than INBOX the probe's mail and the notifications about it may be.
#[derive(Debug, Clone, Default, Args)]
pub struct FolderArgs {
    /// IMAP login of the sender's mailbox, where bounces arrive, when it is not the
    /// mailbox being read (password as for the others, or [login.bounces] in a
    /// profile) [default: the mailbox being read, when sender = login].
    #[arg(long, value_name = "USER", help_heading = heading::BOUNCES)]
    pub bounce_mailbox: Option<String>,
    /// More IMAP folders to watch and clean besides INBOX and Junk (comma separated)
    /// [default: none].
    #[arg(long, value_name = "LIST", value_delimiter = ',', help_heading = heading::BOUNCES)]
    pub folders: Vec<String>,
    /// Do not look for a Junk folder [default: Junk is found by SPECIAL-USE or name
    /// and watched].
    #[arg(long, help_heading = heading::BOUNCES)]
    pub no_junk: bool,
}

/// What a check asks for and how it judges mail that went elsewhere.
#[derive(Debug, Clone, Default, Args)]
pub struct ElsewhereArgs {
    /// Ask for delivery status notifications (RET=HDRS, ENVID, NOTIFY=FAILURE,DELAY)
    /// when EHLO offers DSN [default: auto].
    #[arg(long, value_name = "WHEN", value_parser = ["auto", "never"], help_heading = heading::BOUNCES)]
    pub dsn: Option<String>,
    /// A probe message filed into Junk makes the check failing [default: degraded].
    #[arg(long, help_heading = heading::BOUNCES)]
    pub junk_is_failure: bool,
}

/// Where the report goes (every command that reports).
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// Report format on standard output.
    #[arg(long, value_enum, default_value = "human", help_heading = heading::OUTPUT)]
    pub format: Format,
    /// Also write a report to a file: FORMAT=PATH (repeatable), e.g. json=report.json
    /// (default: none).
    #[arg(long, value_name = "FORMAT=PATH", help_heading = heading::OUTPUT)]
    pub output: Vec<String>,
    /// Print nothing on standard output (exit code and --output files only).
    #[arg(long, short, help_heading = heading::OUTPUT)]
    pub quiet: bool,
    /// Write a protocol transcript of every session (C:/S: lines, timestamps) to
    /// FILE; passwords and SASL exchanges are redacted, message bodies summarized.
    #[arg(long, value_name = "FILE", help_heading = heading::OUTPUT)]
    pub transcript: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub mailbox: MailboxArgs,
    /// SMTP endpoint: smtp://host:port (STARTTLS when offered) or smtps://host:port.
    #[arg(long, value_name = "URL", help_heading = heading::ENDPOINTS)]
    pub smtp: Option<String>,
    /// Do not authenticate to SMTP (e.g. port 25 of an MX).
    #[arg(long, help_heading = heading::LOGIN)]
    pub no_smtp_auth: bool,
    /// Envelope and header sender (default: the login).
    #[arg(long, value_name = "ADDRESS", help_heading = heading::LADDER)]
    pub from: Option<String>,
    /// Recipient: a mailbox the probe may read and clean (default: the login).
    #[arg(long, value_name = "ADDRESS", help_heading = heading::LADDER)]
    pub to: Option<String>,
    /// Size ladder: 0 is a plain text message, other sizes carry an attachment of that
    /// many random bytes (default 0,10KiB,1MiB,5MiB).
    #[arg(long, value_name = "LIST", help_heading = heading::LADDER)]
    pub sizes: Option<String>,
    /// When the size limit refuses a rung, find the real limit by sending messages
    /// between the largest accepted and the smallest refused size (at most 12 more).
    #[arg(long, help_heading = heading::LADDER)]
    pub bisect: bool,
    /// Send only; no retrieval (for mailboxes that are not yours to read).
    #[arg(long, help_heading = heading::LADDER)]
    pub smtp_only: bool,
    /// Send MAIL, RCPT and DATA one at a time even when EHLO offers PIPELINING
    /// [default: pipelined when offered, QUIT behind the message].
    #[arg(long, help_heading = heading::ENDPOINTS)]
    pub no_pipelining: bool,
    /// EHLO name (default: this host's name).
    #[arg(long, value_name = "NAME", help_heading = heading::ENDPOINTS)]
    pub helo: Option<String>,
    /// Warn (degraded) when a certificate expires within this many days (default 14).
    #[arg(long, value_name = "DAYS", help_heading = heading::TLS)]
    pub cert_warn_days: Option<i64>,
    /// A command phase (connect, greeting, EHLO, login, ...) slower than this is
    /// reported as `slow` (default 2s; body transfers get 1 s more per MiB).
    #[arg(long, value_name = "DURATION", help_heading = heading::THRESHOLDS)]
    pub slow_phase: Option<String>,
    /// Delivery into the mailbox slower than this is reported as `slow` (default 15s).
    #[arg(long, value_name = "DURATION", help_heading = heading::THRESHOLDS)]
    pub slow_delivery: Option<String>,
    /// Probe a mail domain instead of --smtp: find its MX hosts in DNS, check SMTP
    /// on each (no SMTP AUTH) and run the ladder through the first reachable one.
    #[arg(long, value_name = "DOMAIN", conflicts_with = "smtp", help_heading = heading::ENDPOINTS)]
    pub domain: Option<String>,
    /// DNS server for --domain lookups, IP:PORT (default: the system resolver).
    #[arg(long, value_name = "IP:PORT", requires = "domain", help_heading = heading::ENDPOINTS)]
    pub resolver: Option<String>,
    /// SMTP port on each MX (default 25).
    #[arg(long, value_name = "PORT", requires = "domain", help_heading = heading::ENDPOINTS)]
    pub mx_port: Option<u16>,
    /// How long a message may take to arrive in the mailbox (default 60s).
    #[arg(long, value_name = "DURATION", help_heading = heading::TIMEOUTS)]
    pub delivery_timeout: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub rounds: RoundArgs,
    #[command(flatten)]
    pub elsewhere: ElsewhereArgs,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct CleanupArgs {
    /// The mailboxes to clean (no SMTP endpoint is needed).
    #[command(flatten)]
    pub(crate) mailbox: MailboxArgs,
    /// Only delete probe messages sent at least this long ago (a probe still
    /// running elsewhere keeps its fresh messages).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub(crate) older_than: String,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Flags shared by `check` and `verify` (flattened into [`CheckArgs`]).
#[derive(Debug, Clone, Default, Args)]
pub struct RoundArgs {
    /// Repeat the ladder N times; the report aggregates every round and adds
    /// latency statistics (default 1; verify: the most rounds to run, default 100000).
    #[arg(long, value_name = "N", help_heading = heading::ROUNDS)]
    pub rounds: Option<u32>,
    /// Time from the start of one round to the start of the next (check: 0s,
    /// verify: 5s).
    #[arg(long, value_name = "DURATION", help_heading = heading::ROUNDS)]
    pub interval: Option<String>,
    /// Messages in flight at once over SMTP (default 1).
    #[arg(long, value_name = "C", help_heading = heading::ROUNDS)]
    pub concurrency: Option<usize>,
    /// Constant-rate mode: send this many messages per second (the ladder's sizes in
    /// turn) for --duration; latency counts from the intended send time.
    #[arg(long, value_name = "MSGS_PER_SEC", requires = "duration", help_heading = heading::ROUNDS)]
    pub rate: Option<f64>,
    /// How long the constant-rate mode runs (at most 1h).
    #[arg(long, value_name = "DURATION", requires = "rate", help_heading = heading::ROUNDS)]
    pub duration: Option<String>,
    /// Compare with an earlier JSON report: flag slower phases and sizes that fail now.
    #[arg(long, value_name = "FILE", help_heading = heading::ROUNDS)]
    pub baseline: Option<PathBuf>,
    /// Save this run's JSON report as a baseline for later comparisons.
    #[arg(long, value_name = "FILE", help_heading = heading::ROUNDS)]
    pub save_baseline: Option<PathBuf>,
    /// How much slower a phase's p50 or p99 may get before it is a regression
    /// (percent; and always at least 5 ms).
    #[arg(long, value_name = "PERCENT", default_value = "50%", help_heading = heading::ROUNDS)]
    pub regression_threshold: Option<String>,
    /// ... and at least this much slower (default 5ms; delivery, seen by polling,
    /// also at least twice the poll interval).
    #[arg(long, value_name = "DURATION", help_heading = heading::ROUNDS)]
    pub regression_min: Option<String>,
    /// Liveness sampler: connect to each endpoint this often, read its greeting and
    /// say goodbye (no login), to see restarts and crash loops; 0 turns it off
    /// (default 250ms for verify and check --rounds, off for a single check).
    #[arg(long, value_name = "DURATION", help_heading = heading::ROUNDS)]
    pub sample_interval: Option<String>,
}

/// `mailprobe verify`: repeat rounds until the server is stable or the deadline passes.
#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) check: CheckArgs,
    /// Consecutive healthy rounds that prove the server stable (after flapping, the
    /// streak must also outlast every earlier up stretch).
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = heading::ROUNDS)]
    pub(crate) stable: u32,
    /// Give up after this long (a round running at the deadline finishes first).
    #[arg(long, value_name = "DURATION", default_value = "10m", help_heading = heading::ROUNDS)]
    pub(crate) deadline: String,
}

/// `mailprobe serve` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed on stderr).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9465")]
    pub(crate) listen: String,
    /// Directory of the profiles that `/probe?profile=NAME` may run (NAME.toml).
    #[arg(long, value_name = "DIR", default_value = "probes")]
    pub(crate) profiles: PathBuf,
    /// Most checks running at once; more probe requests are answered 503.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) max_concurrent: usize,
    /// Time limit of a probe when the request has no X-Prometheus-Scrape-Timeout-Seconds header.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub(crate) timeout: String,
}

/// `mailprobe completions SHELL` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

fn parse_mechanism(text: &str) -> Result<Mechanism, String> {
    Mechanism::parse(text)
}

// The core type stays free of clap; its values and help are given here.
impl ValueEnum for StarttlsPolicy {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            StarttlsPolicy::Auto,
            StarttlsPolicy::Require,
            StarttlsPolicy::Never,
        ]
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            StarttlsPolicy::Auto => {
                PossibleValue::new("auto").help("Upgrade when the server offers it")
            }
            StarttlsPolicy::Require => {
                PossibleValue::new("require").help("Fail unless the server offers it")
            }
            StarttlsPolicy::Never => {
                PossibleValue::new("never").help("Never upgrade; stay in plain text")
            }
        })
    }
}

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &Format::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        let value = PossibleValue::new(self.name());
        Some(match self {
            Format::Jsonl => {
                value.help("One JSON object per line (verify: one per round, then the report)")
            }
            _ => value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every subcommand, with the subcommand's name.
    fn all_arguments() -> Vec<(String, clap::Arg)> {
        fn walk(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Arg)>) {
            for arg in cmd.get_arguments() {
                if !matches!(arg.get_id().as_str(), "help" | "version") {
                    out.push((path.clone(), arg.clone()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut out = Vec::new();
        walk(
            &<Cli as clap::CommandFactory>::command(),
            "mailprobe".into(),
            &mut out,
        );
        out
    }

    /// `--help` describes every flag, and the flags of `check` and `verify` (the
    /// many) are grouped under one of the [`heading`]s.
    #[test]
    fn every_flag_has_help_and_a_heading() {
        let headings = [
            heading::ENDPOINTS,
            heading::LOGIN,
            heading::LADDER,
            heading::TIMEOUTS,
            heading::TLS,
            heading::THRESHOLDS,
            heading::OUTPUT,
            heading::ROUNDS,
            heading::BOUNCES,
        ];
        let mut problems = Vec::new();
        let arguments = all_arguments();
        assert!(arguments.len() > 40, "{} arguments", arguments.len());
        for (command, arg) in &arguments {
            let name = arg.get_id().as_str();
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                problems.push(format!("{command} --{name}: no help text"));
            }
            let grouped = command.ends_with(" check") || command.ends_with(" verify");
            if grouped && name != "profile" {
                match arg.get_help_heading() {
                    Some(h) if headings.contains(&h) => {}
                    other => problems.push(format!(
                        "{command} --{name}: help_heading {other:?}, want one of cli::heading"
                    )),
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The defaults the help text names are the ones the code uses.
    #[test]
    fn help_names_the_real_defaults() {
        let arguments = all_arguments();
        let help_of = |name: &str| {
            let (_, arg) = arguments
                .iter()
                .find(|(c, a)| c == "mailprobe check" && a.get_id().as_str() == name)
                .unwrap_or_else(|| panic!("check --{name}"));
            arg.get_help().unwrap().to_string()
        };
        let default_in = |name: &str| {
            let help = help_of(name);
            let (_, rest) = help
                .split_once("default ")
                .unwrap_or_else(|| panic!("--{name} names no default: {help}"));
            rest.split([')', ';']).next().unwrap().to_string()
        };
        let duration = |name: &str| crate::core::units::parse_duration(&default_in(name)).unwrap();
        let timeouts = crate::io::connect::Timeouts::default();
        assert_eq!(duration("connect_timeout"), timeouts.connect);
        assert_eq!(duration("greeting_timeout"), timeouts.greeting);
        assert_eq!(duration("command_timeout"), timeouts.command);
        assert_eq!(duration("data_timeout"), timeouts.data);
        assert_eq!(duration("delivery_timeout"), timeouts.delivery);
        assert_eq!(default_in("sizes"), crate::app::profile::DEFAULT_SIZES);
        assert_eq!(
            default_in("starttls"),
            StarttlsPolicy::default()
                .to_possible_value()
                .unwrap()
                .get_name()
        );
        assert!(
            help_of("rounds").contains(&format!("default {}", crate::probe::rounds::MAX_ROUNDS)),
            "{}",
            help_of("rounds")
        );
    }

    /// One `Format`: the names clap accepts are the names `--output` parses.
    #[test]
    fn every_format_has_one_name() {
        for f in Format::ALL {
            let name = f.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name, f.name());
            assert_eq!(Format::parse(&name), Ok(f));
            assert_eq!(<Format as ValueEnum>::from_str(&name, false), Ok(f));
        }
        let args = Cli::try_parse_from(["mailprobe", "verify", "--format", "jsonl"]).unwrap();
        let Command::Verify(v) = args.command else {
            panic!("verify parses as verify")
        };
        assert_eq!(v.check.output.format, Format::Jsonl);
    }
}
