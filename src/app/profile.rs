//! Loading settings: a TOML profile (in `probes/`) merged with command-line
//! flags (flags win), resolved into endpoints, logins (passwords, or access
//! tokens read once per check), sizes and timeouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::app::cli::{CheckArgs, MailboxArgs};
use crate::app::token::{DEFAULT_TOKEN_TIMEOUT, TokenSource, read_token, split_command};
use crate::core::auth::Mechanism;
use crate::core::endpoint::{Endpoint, StarttlsPolicy};
use crate::core::phase::Protocol;
use crate::core::secret::{Login, Secret, SecretKind};
use crate::core::units::{parse_duration, parse_size, parse_size_list};
use crate::io::connect::Timeouts;
use crate::io::tls::TlsSettings;
use crate::model::diagnosis::Thresholds;
use crate::probe::settings::{Elsewhere, Plan, Settings, Target};

/// Environment variable read for the password when no other source is named.
pub(crate) const DEFAULT_PASSWORD_ENV: &str = "MAILPROBE_PASSWORD";
pub(crate) const DEFAULT_SIZES: &str = "0,10KiB,1MiB,5MiB";
/// How often a mailbox is looked at again (STATUS polls, POP3 logins): at most
/// once a second unless a profile asks for more.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A shorter `--timeout` leaves no time for even one session.
const MIN_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Per-protocol login in a profile (`[login.imap]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginProfile {
    pub(crate) user: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    /// An OAuth access token instead of a password (see [`Profile`]).
    pub(crate) token_env: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) token_command: Option<CommandLine>,
    /// `auto`, `plain`, `login`, `xoauth2` or `oauthbearer` for this protocol.
    pub(crate) auth: Option<String>,
    /// `false` turns the login off (e.g. SMTP on port 25 without AUTH).
    pub(crate) enabled: Option<bool>,
}

/// A token command in a profile: one line split like a shell, or its words.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Line(String),
    Words(Vec<String>),
}

impl CommandLine {
    fn words(&self) -> Result<Vec<String>, String> {
        match self {
            CommandLine::Line(line) => split_command(line),
            CommandLine::Words(w) if w.is_empty() || w[0].is_empty() => {
                Err("the token command is empty".into())
            }
            CommandLine::Words(w) => Ok(w.clone()),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeoutProfile {
    pub(crate) connect: Option<String>,
    pub(crate) greeting: Option<String>,
    pub(crate) command: Option<String>,
    pub(crate) data: Option<String>,
    pub(crate) delivery: Option<String>,
}

/// The TOML profile format. See `probes/example.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    pub(crate) smtp: Option<String>,
    pub(crate) imap: Option<String>,
    pub(crate) pop3: Option<String>,
    pub(crate) starttls: Option<StarttlsPolicy>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    /// OAuth access token sources (instead of a password) and the SASL mechanism.
    pub(crate) token_env: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) token_command: Option<CommandLine>,
    pub(crate) token_timeout: Option<String>,
    pub(crate) auth: Option<String>,
    #[serde(default)]
    pub(crate) login: BTreeMap<String, LoginProfile>,
    pub(crate) sizes: Option<Vec<String>>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) insecure: Option<bool>,
    pub(crate) pin_sha256: Option<String>,
    pub(crate) helo: Option<String>,
    pub(crate) allow_plaintext_login: Option<bool>,
    pub(crate) poll_interval: Option<String>,
    /// The whole check's time limit (`--timeout`).
    pub(crate) timeout: Option<String>,
    pub(crate) bisect: Option<bool>,
    /// `false` is `--no-pipelining`.
    pub(crate) pipelining: Option<bool>,
    pub(crate) cert_warn_days: Option<i64>,
    pub(crate) slow_phase: Option<String>,
    pub(crate) slow_delivery: Option<String>,
    #[serde(default)]
    pub(crate) timeouts: TimeoutProfile,
    /// `auto` (default) or `never`.
    pub(crate) dsn: Option<String>,
    pub(crate) bounce_mailbox: Option<String>,
    pub(crate) folders: Option<Vec<String>>,
    pub(crate) junk: Option<bool>,
    pub(crate) junk_is_failure: Option<bool>,
}

impl Profile {
    pub(crate) fn load(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
        let mut profile: Profile = toml::from_str(&text)
            .map_err(|e| format!("profile {} is not valid: {e}", path.display()))?;
        for key in profile.login.keys() {
            if !matches!(key.as_str(), "smtp" | "imap" | "pop3" | "bounces") {
                return Err(format!(
                    "profile {}: [login.{key}] is unknown; use login.smtp, login.imap, login.pop3 or login.bounces",
                    path.display()
                ));
            }
        }
        // Relative paths in a profile are relative to the profile itself.
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut Option<PathBuf>| {
            if let Some(p) = p
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        };
        rebase(&mut profile.password_file);
        rebase(&mut profile.token_file);
        rebase(&mut profile.ca_file);
        for login in profile.login.values_mut() {
            rebase(&mut login.password_file);
            rebase(&mut login.token_file);
        }
        Ok(profile)
    }
}

/// Where a login's secret comes from: a password or an access token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SecretSource {
    PasswordEnv(String),
    PasswordFile(PathBuf),
    Token(TokenSource),
}

fn read_password(source: &SecretSource, token_timeout: Duration) -> Result<Secret, String> {
    match source {
        SecretSource::PasswordEnv(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
            _ => Err(format!(
                "the password variable {var} is not set; export it (export {var}=...) or use --password-file"
            )),
        },
        SecretSource::PasswordFile(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                return Err(format!("the password file {} is empty", path.display()));
            }
            Ok(Secret::new(password))
        }
        SecretSource::Token(token) => read_token(token, token_timeout),
    }
}

/// The first source named: a token (variable, file, command), then a password
/// (variable, file).
fn pick_source(
    password_env: Option<&String>,
    password_file: Option<&PathBuf>,
    token_env: Option<&String>,
    token_file: Option<&PathBuf>,
    token_command: Option<&CommandLine>,
) -> Result<Option<SecretSource>, String> {
    Ok(if let Some(var) = token_env {
        Some(SecretSource::Token(TokenSource::Env(var.clone())))
    } else if let Some(path) = token_file {
        Some(SecretSource::Token(TokenSource::File(path.clone())))
    } else if let Some(command) = token_command {
        Some(SecretSource::Token(TokenSource::Command(command.words()?)))
    } else if let Some(var) = password_env {
        Some(SecretSource::PasswordEnv(var.clone()))
    } else {
        password_file.map(|p| SecretSource::PasswordFile(p.clone()))
    })
}

/// `mechanism` fits the secret: PLAIN and LOGIN send passwords, XOAUTH2 and OAUTHBEARER tokens.
fn check_mechanism(protocol: Protocol, mechanism: Mechanism, token: bool) -> Result<(), String> {
    match (token, mechanism.takes_token()) {
        (true, false) if mechanism != Mechanism::Auto => Err(format!(
            "{}: --auth {} sends a password, but the login has an access token; use auto, xoauth2 or oauthbearer",
            protocol.label(),
            mechanism.name()
        )),
        (false, true) => Err(format!(
            "{}: --auth {} needs an access token: give --token-env, --token-file or --token-command",
            protocol.label(),
            mechanism.name()
        )),
        _ => Ok(()),
    }
}

/// Merge flags over the profile and validate. Errors are usage errors (exit 3).
pub fn resolve(args: &CheckArgs) -> Result<Settings, String> {
    resolve_for(args, true)
}

/// Settings for the mailbox side only (`cleanup`): no SMTP endpoint needed.
pub(crate) fn resolve_mailbox(args: &MailboxArgs) -> Result<Settings, String> {
    let args = CheckArgs {
        mailbox: args.clone(),
        ..Default::default()
    };
    resolve_for(&args, false)
}

fn resolve_for(args: &CheckArgs, need_smtp: bool) -> Result<Settings, String> {
    let profile = match &args.mailbox.profile {
        Some(path) => Profile::load(path)?,
        None => Profile::default(),
    };
    let policy = args
        .mailbox
        .starttls
        .or(profile.starttls)
        .unwrap_or_default();
    let endpoint = |flag: &Option<String>, prof: &Option<String>, want: Protocol| {
        flag.as_ref()
            .or(prof.as_ref())
            .map(|url| {
                let e = Endpoint::parse(url, policy)?;
                if e.protocol != want {
                    return Err(format!(
                        "--{} expects a {} URL, got {url:?}",
                        want.as_str(),
                        want.label()
                    ));
                }
                Ok(e)
            })
            .transpose()
    };
    let smtp = match endpoint(&args.smtp, &profile.smtp, Protocol::Smtp)? {
        Some(e) => e,
        // Never contacted: the mailbox side does not send.
        None if !need_smtp => Endpoint::parse("smtp://unused.invalid", policy)?,
        None => {
            return Err(
                "no SMTP endpoint: give --smtp smtp://host:587 or a profile with smtp = \"...\""
                    .into(),
            );
        }
    };
    let smtp_only = args.smtp_only;
    let imap = if smtp_only {
        None
    } else {
        endpoint(&args.mailbox.imap, &profile.imap, Protocol::Imap)?
    };
    let pop3 = if smtp_only {
        None
    } else {
        endpoint(&args.mailbox.pop3, &profile.pop3, Protocol::Pop3)?
    };
    if !smtp_only && imap.is_none() && pop3.is_none() {
        return Err(
            "no retrieval endpoint: give --imap and/or --pop3 (or --smtp-only to only send)".into(),
        );
    }

    let user = args.mailbox.user.clone().or(profile.user.clone());
    let m = &args.mailbox;
    // Flags beat the profile: a secret source given on the command line is the one.
    let flag_token = m.token_env.is_some() || m.token_file.is_some() || m.token_command.is_some();
    let flag_password = m.password_env.is_some() || m.password_file.is_some();
    let flag_command = m.token_command.clone().map(CommandLine::Line);
    let common_source = if flag_token || flag_password {
        pick_source(
            m.password_env.as_ref(),
            m.password_file.as_ref(),
            m.token_env.as_ref(),
            m.token_file.as_ref(),
            flag_command.as_ref(),
        )?
    } else {
        pick_source(
            profile.password_env.as_ref(),
            profile.password_file.as_ref(),
            profile.token_env.as_ref(),
            profile.token_file.as_ref(),
            profile.token_command.as_ref(),
        )?
    };
    let token_timeout = match m.token_timeout.as_ref().or(profile.token_timeout.as_ref()) {
        Some(text) => parse_duration(text)?,
        None => DEFAULT_TOKEN_TIMEOUT,
    };
    let common_auth = match m.auth {
        Some(a) => Some(a),
        None => profile.auth.as_deref().map(Mechanism::parse).transpose()?,
    };
    // A token command runs once per check, however many protocols use it.
    let read = std::cell::RefCell::new(std::collections::HashMap::<SecretSource, Secret>::new());
    // `key` is the profile's [login.KEY]: a protocol, or `bounces` (an IMAP login).
    let login_named = |key: &str,
                       protocol: Protocol,
                       wanted: bool,
                       default_user: Option<String>|
     -> Result<Option<Login>, String> {
        let specific = profile.login.get(key).cloned().unwrap_or_default();
        if !wanted || specific.enabled == Some(false) {
            return Ok(None);
        }
        let Some(user) = specific.user.clone().or(default_user) else {
            return Ok(None);
        };
        let own = pick_source(
            specific.password_env.as_ref(),
            specific.password_file.as_ref(),
            specific.token_env.as_ref(),
            specific.token_file.as_ref(),
            specific.token_command.as_ref(),
        )?;
        let source = match own {
            Some(SecretSource::Token(_)) | None => own,
            Some(password) if !flag_token => Some(password),
            // A token on the command line beats a password in the profile.
            Some(_) => None,
        }
        .or_else(|| common_source.clone())
        .unwrap_or(SecretSource::PasswordEnv(DEFAULT_PASSWORD_ENV.into()));
        let mechanism = match (m.auth, &specific.auth) {
            (Some(a), _) => a,
            (None, Some(text)) => Mechanism::parse(text)?,
            (None, None) => common_auth.unwrap_or_default(),
        };
        let token = matches!(source, SecretSource::Token(_));
        check_mechanism(protocol, mechanism, token)?;
        let known = read.borrow().get(&source).cloned();
        let secret = match known {
            Some(s) => s,
            None => {
                let s = read_password(&source, token_timeout)?;
                read.borrow_mut().insert(source, s.clone());
                s
            }
        };
        let mut login = Login::with_password(user, secret);
        login.mechanism = mechanism;
        if token {
            login.kind = SecretKind::Token;
        }
        Ok(Some(login))
    };
    let login_for = |protocol: Protocol, wanted: bool| {
        login_named(protocol.as_str(), protocol, wanted, user.clone())
    };
    let smtp_login = login_for(Protocol::Smtp, need_smtp && !args.no_smtp_auth)?;
    let imap_login = login_for(Protocol::Imap, imap.is_some())?;
    let pop3_login = login_for(Protocol::Pop3, pop3.is_some())?;
    // The sender's mailbox, when bounces arrive somewhere the probe does not read.
    let bounce_user = args
        .mailbox
        .folders
        .bounce_mailbox
        .clone()
        .or(profile.bounce_mailbox.clone())
        .or_else(|| profile.login.get("bounces").and_then(|l| l.user.clone()));
    let bounce_login = login_named(
        "bounces",
        Protocol::Imap,
        imap.is_some() && bounce_user.is_some(),
        bounce_user,
    )?;
    for (endpoint, login) in [(&imap, &imap_login), (&pop3, &pop3_login)] {
        if let (Some(e), None) = (endpoint, login) {
            return Err(format!(
                "{} needs a login: give --user (and the password in ${DEFAULT_PASSWORD_ENV}, --password-env or --password-file, or a token with --token-env, --token-file or --token-command)",
                e.protocol.label()
            ));
        }
    }

    let from = args
        .from
        .clone()
        .or(profile.from.clone())
        .or(user.clone())
        .ok_or("no sender: give --from probe@example.com")?;
    let to = args
        .to
        .clone()
        .or(profile.to.clone())
        .or(user.clone())
        .ok_or(
            "no recipient: give --to probe@example.com (a mailbox the probe may read and clean)",
        )?;
    for (what, addr) in [("--from", &from), ("--to", &to)] {
        if !addr.contains('@') || addr.contains(char::is_whitespace) || addr.contains(['<', '>']) {
            return Err(format!(
                "{what} {addr:?} is not a mail address like probe@example.com"
            ));
        }
    }

    let sizes = match (&args.sizes, &profile.sizes) {
        (Some(list), _) => parse_size_list(list)?,
        (None, Some(list)) => list
            .iter()
            .map(|s| parse_size(s))
            .collect::<Result<_, _>>()?,
        (None, None) => parse_size_list(DEFAULT_SIZES)?,
    };

    let mut timeouts = Timeouts::default();
    let t = &profile.timeouts;
    for (slot, flag, prof) in [
        (
            &mut timeouts.connect,
            &args.mailbox.connect_timeout,
            &t.connect,
        ),
        (
            &mut timeouts.greeting,
            &args.mailbox.greeting_timeout,
            &t.greeting,
        ),
        (
            &mut timeouts.command,
            &args.mailbox.command_timeout,
            &t.command,
        ),
        (&mut timeouts.data, &args.mailbox.data_timeout, &t.data),
        (&mut timeouts.delivery, &args.delivery_timeout, &t.delivery),
    ] {
        if let Some(text) = flag.as_ref().or(prof.as_ref()) {
            *slot = parse_duration(text)?;
            if slot.is_zero() {
                return Err(format!("timeout {text:?} must be more than zero"));
            }
        }
    }
    if let Some(text) = args.mailbox.timeout.as_ref().or(profile.timeout.as_ref()) {
        timeouts.check = parse_duration(text)?;
        if timeouts.check < MIN_CHECK_TIMEOUT {
            return Err(format!(
                "--timeout {text:?} is too short: a check needs at least 1s"
            ));
        }
    }
    let poll_interval = profile
        .poll_interval
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .unwrap_or(DEFAULT_POLL_INTERVAL);
    if poll_interval.is_zero() {
        return Err("poll_interval must be more than zero".into());
    }

    let insecure = args.mailbox.insecure || profile.insecure.unwrap_or(false);
    let ca_file = args.mailbox.ca_file.clone().or(profile.ca_file.clone());
    if let Some(path) = &ca_file
        && !path.is_file()
    {
        return Err(format!("the CA file {} does not exist", path.display()));
    }
    Ok(Settings {
        target: Target {
            smtp,
            imap,
            pop3,
            smtp_login,
            imap_login,
            pop3_login,
            from,
            to,
            helo_name: args
                .helo
                .clone()
                .or(profile.helo.clone())
                .unwrap_or_else(default_helo),
            allow_plaintext_login: args.mailbox.allow_plaintext_login
                || profile.allow_plaintext_login.unwrap_or(false),
            bounce_login,
        },
        timeouts,
        tls: TlsSettings {
            ca_file,
            insecure,
            pin_sha256: args
                .mailbox
                .pin_sha256
                .clone()
                .or(profile.pin_sha256.clone()),
        },
        plan: Plan {
            sizes,
            bisect: args.bisect || profile.bisect.unwrap_or(false),
            concurrency: args.rounds.concurrency()?,
            poll_interval,
            pipelining: !args.no_pipelining && profile.pipelining.unwrap_or(true),
        },
        thresholds: thresholds(args, &profile)?,
        elsewhere: elsewhere(args, &profile)?,
    })
}

fn elsewhere(args: &CheckArgs, profile: &Profile) -> Result<Elsewhere, String> {
    let (e, f) = (&args.elsewhere, &args.mailbox.folders);
    let request_dsn = match e
        .dsn
        .as_deref()
        .or(profile.dsn.as_deref())
        .unwrap_or("auto")
    {
        "auto" => true,
        "never" => false,
        other => return Err(format!("dsn = {other:?}: use \"auto\" or \"never\"")),
    };
    let folders = if f.folders.is_empty() {
        profile.folders.clone().unwrap_or_default()
    } else {
        f.folders.clone()
    };
    Ok(Elsewhere {
        request_dsn,
        folders: folders
            .into_iter()
            .filter(|f| !f.trim().is_empty())
            .collect(),
        junk: !f.no_junk && profile.junk.unwrap_or(true),
        ..Elsewhere::default()
    })
}

fn thresholds(args: &CheckArgs, profile: &Profile) -> Result<Thresholds, String> {
    let mut t = Thresholds {
        junk_is_failure: args.elsewhere.junk_is_failure || profile.junk_is_failure.unwrap_or(false),
        ..Thresholds::default()
    };
    if let Some(days) = args.cert_warn_days.or(profile.cert_warn_days) {
        t.cert_warn_days = days;
    }
    let ms = |text: &String| parse_duration(text).map(|d| d.as_secs_f64() * 1000.0);
    if let Some(text) = args.slow_phase.as_ref().or(profile.slow_phase.as_ref()) {
        t.phase_ms = ms(text)?;
    }
    if let Some(text) = args
        .slow_delivery
        .as_ref()
        .or(profile.slow_delivery.as_ref())
    {
        t.delivery_ms = ms(text)?;
    }
    Ok(t)
}

fn default_helo() -> String {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.contains('.'));
    name.unwrap_or_else(|| "mailprobe.localdomain".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> CheckArgs {
        use clap::Parser as _;
        let mut argv = vec![
            "mailprobe",
            "check",
            "--smtp",
            "smtp://127.0.0.1:2587",
            "--imap",
            "imap://127.0.0.1:2143",
            "--pop3",
            "pop3://127.0.0.1:2110",
            "--user",
            "probe@x.test",
        ];
        argv.extend_from_slice(extra);
        match crate::app::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::app::cli::Command::Check(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_token_command_runs_once_and_makes_token_logins() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("runs");
        let command = format!("sh -c 'echo run >> {}; echo tok-1'", count.display());
        let s = resolve(&args(&["--token-command", &command])).unwrap();
        for login in [
            &s.target.smtp_login,
            &s.target.imap_login,
            &s.target.pop3_login,
        ] {
            let login = login.as_ref().unwrap();
            assert!(login.is_token());
            assert_eq!(login.password.expose(), "tok-1");
            assert_eq!(login.mechanism, Mechanism::Auto);
        }
        assert_eq!(
            std::fs::read_to_string(&count).unwrap(),
            "run\n",
            "once per check"
        );
        assert!(s.target.secrets().iter().any(|f| f == "tok-1"));
    }

    /// Write `text` to `name` in `dir`; its path as an argument.
    fn file_in(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn mechanisms_must_fit_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let token = file_in(&dir, "token", "tok-2\n");
        let err = resolve(&args(&["--token-file", &token, "--auth", "plain"])).unwrap_err();
        assert!(err.contains("sends a password"), "{err}");
        let s = resolve(&args(&["--token-file", &token, "--auth", "oauthbearer"])).unwrap();
        assert_eq!(
            s.target.imap_login.unwrap().mechanism,
            Mechanism::Oauthbearer
        );
        let password = file_in(&dir, "password", "pw\n");
        let err = resolve(&args(&["--password-file", &password, "--auth", "xoauth2"])).unwrap_err();
        assert!(err.contains("needs an access token"), "{err}");
        let err = resolve(&args(&["--token-command", "sh -c 'exit 7'"])).unwrap_err();
        assert!(err.contains("failed"), "{err}");
    }

    #[test]
    fn a_profile_sets_the_mechanism_per_protocol() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "tok-3").unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "token_file = \"token\"\nauth = \"oauthbearer\"\n[login.smtp]\nauth = \"xoauth2\"\n",
        )
        .unwrap();
        let profile = path.display().to_string();
        let s = resolve(&args(&["--profile", &profile])).unwrap();
        assert_eq!(s.target.smtp_login.unwrap().mechanism, Mechanism::Xoauth2);
        let imap = s.target.imap_login.unwrap();
        assert_eq!(imap.mechanism, Mechanism::Oauthbearer);
        assert_eq!(imap.password.expose(), "tok-3");
    }

    #[test]
    fn pipelining_is_on_unless_the_flag_or_the_profile_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let password = file_in(&dir, "password", "pw\n");
        let profile = file_in(&dir, "p.toml", "pipelining = false\n");
        let pipelining = |extra: &[&str]| {
            let mut all = vec!["--password-file", &password];
            all.extend_from_slice(extra);
            resolve(&args(&all)).unwrap().plan.pipelining
        };
        assert!(pipelining(&[]));
        assert!(!pipelining(&["--no-pipelining"]));
        assert!(!pipelining(&["--profile", &profile]));
    }

    #[test]
    fn a_token_expiring_before_the_run_ends_is_a_warning() {
        use base64::Engine as _;
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let jwt = format!("{}.{}.c2ln", b("{}"), b(&format!("{{\"exp\":{exp}}}")));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, jwt).unwrap();
        let s = resolve(&args(&["--token-file", &file.display().to_string()])).unwrap();
        let warning = crate::app::token::expiry_warning(&s, Duration::from_secs(600)).unwrap();
        assert!(warning.contains("expired_token"), "{warning}");
        assert_eq!(
            crate::app::token::expiry_warning(&s, Duration::from_secs(10)),
            None
        );
    }

    #[test]
    fn the_oauth_example_profiles_load() {
        for name in ["microsoft365", "gmail"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("probes/{name}.toml"));
            let p = Profile::load(&path).unwrap();
            Mechanism::parse(p.auth.as_deref().unwrap()).unwrap();
            assert!(
                p.token_command.unwrap().words().unwrap().len() > 1,
                "{name}"
            );
        }
    }
}
