//! Loading settings: a TOML profile (in `probes/`) merged with command-line
//! flags (flags win), resolved into endpoints, logins, sizes and timeouts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::app::cli::{CheckArgs, MailboxArgs};
use crate::core::endpoint::{Endpoint, StarttlsPolicy};
use crate::core::phase::Protocol;
use crate::core::secret::{Login, Secret};
use crate::core::units::{parse_duration, parse_size, parse_size_list};
use crate::io::connect::Timeouts;
use crate::io::tls::TlsSettings;
use crate::model::diagnosis::Thresholds;
use crate::probe::settings::{Plan, Settings, Target};

/// Environment variable read for the password when no other source is named.
pub(crate) const DEFAULT_PASSWORD_ENV: &str = "MAILPROBE_PASSWORD";
pub(crate) const DEFAULT_SIZES: &str = "0,10KiB,1MiB,5MiB";

/// Per-protocol login in a profile (`[login.imap]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginProfile {
    pub(crate) user: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) password_file: Option<PathBuf>,
    /// `false` turns the login off (e.g. SMTP on port 25 without AUTH).
    pub(crate) enabled: Option<bool>,
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
    #[serde(default)]
    pub(crate) login: BTreeMap<String, LoginProfile>,
    pub(crate) sizes: Option<Vec<String>>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) insecure: Option<bool>,
    pub(crate) pin_sha256: Option<String>,
    pub(crate) helo: Option<String>,
    pub(crate) allow_plaintext_login: Option<bool>,
    pub(crate) poll_interval: Option<String>,
    pub(crate) bisect: Option<bool>,
    pub(crate) cert_warn_days: Option<i64>,
    pub(crate) slow_phase: Option<String>,
    pub(crate) slow_delivery: Option<String>,
    #[serde(default)]
    pub(crate) timeouts: TimeoutProfile,
}

impl Profile {
    pub(crate) fn load(path: &Path) -> Result<Profile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
        let mut profile: Profile = toml::from_str(&text)
            .map_err(|e| format!("profile {} is not valid: {e}", path.display()))?;
        for key in profile.login.keys() {
            if !matches!(key.as_str(), "smtp" | "imap" | "pop3") {
                return Err(format!(
                    "profile {}: [login.{key}] is unknown; use login.smtp, login.imap or login.pop3",
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
        rebase(&mut profile.ca_file);
        for login in profile.login.values_mut() {
            rebase(&mut login.password_file);
        }
        Ok(profile)
    }
}

/// Where a password comes from.
enum PasswordSource {
    Env(String),
    File(PathBuf),
}

fn read_password(source: &PasswordSource) -> Result<Secret, String> {
    match source {
        PasswordSource::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
            _ => Err(format!(
                "the password variable {var} is not set; export it (export {var}=...) or use --password-file"
            )),
        },
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                return Err(format!("the password file {} is empty", path.display()));
            }
            Ok(Secret::new(password))
        }
    }
}

fn pick_source(env: Option<&String>, file: Option<&PathBuf>) -> Option<PasswordSource> {
    match (env, file) {
        (Some(var), _) => Some(PasswordSource::Env(var.clone())),
        (None, Some(path)) => Some(PasswordSource::File(path.clone())),
        (None, None) => None,
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
    let common_source = pick_source(
        args.mailbox
            .password_env
            .as_ref()
            .or(profile.password_env.as_ref()),
        args.mailbox
            .password_file
            .as_ref()
            .or(profile.password_file.as_ref()),
    );
    let login_for = |protocol: Protocol, wanted: bool| -> Result<Option<Login>, String> {
        let specific = profile
            .login
            .get(protocol.as_str())
            .cloned()
            .unwrap_or_default();
        if !wanted || specific.enabled == Some(false) {
            return Ok(None);
        }
        let Some(user) = specific.user.clone().or(user.clone()) else {
            return Ok(None);
        };
        let source = pick_source(
            specific.password_env.as_ref(),
            specific.password_file.as_ref(),
        )
        .or_else(|| {
            common_source.as_ref().map(|s| match s {
                PasswordSource::Env(v) => PasswordSource::Env(v.clone()),
                PasswordSource::File(p) => PasswordSource::File(p.clone()),
            })
        })
        .unwrap_or(PasswordSource::Env(DEFAULT_PASSWORD_ENV.into()));
        Ok(Some(Login {
            user,
            password: read_password(&source)?,
        }))
    };
    let smtp_login = login_for(Protocol::Smtp, need_smtp && !args.no_smtp_auth)?;
    let imap_login = login_for(Protocol::Imap, imap.is_some())?;
    let pop3_login = login_for(Protocol::Pop3, pop3.is_some())?;
    for (endpoint, login) in [(&imap, &imap_login), (&pop3, &pop3_login)] {
        if let (Some(e), None) = (endpoint, login) {
            return Err(format!(
                "{} needs a login: give --user (and the password in ${DEFAULT_PASSWORD_ENV}, --password-env or --password-file)",
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
    let poll_interval = profile
        .poll_interval
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .unwrap_or(Duration::from_millis(100));

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
        },
        thresholds: thresholds(args, &profile)?,
    })
}

fn thresholds(args: &CheckArgs, profile: &Profile) -> Result<Thresholds, String> {
    let mut t = Thresholds::default();
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
