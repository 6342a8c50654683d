//! Endpoints written as curl-style URLs: `smtp://host:587`, `smtps://host`,
//! `imap://`, `imaps://`, `pop3://`, `pop3s://`.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::core::phase::Protocol;

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Security {
    /// TLS from the first byte (smtps, imaps, pop3s).
    Implicit,
    /// Plain connection upgraded with STARTTLS/STLS according to the policy.
    Starttls(StarttlsPolicy),
}

/// What to do with STARTTLS on a plain URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StarttlsPolicy {
    /// Upgrade when the server offers it.
    #[default]
    Auto,
    /// Fail unless the server offers it.
    Require,
    /// Never upgrade; stay in plain text.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) protocol: Protocol,
    pub(crate) security: Security,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Connect to this address instead of resolving `host` (an MX's resolved IP);
    /// `host` stays the name TLS verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connect_to: Option<IpAddr>,
}

impl Endpoint {
    /// Parse `scheme://host[:port][/]`. The scheme decides protocol and TLS mode.
    pub(crate) fn parse(text: &str, policy: StarttlsPolicy) -> Result<Endpoint, String> {
        let url = url::Url::parse(text.trim()).map_err(|e| {
            format!("endpoint {text:?} is not a URL ({e}); write e.g. smtp://mail.example.com:587")
        })?;
        let (protocol, implicit, default_port) = match url.scheme() {
            "smtp" => (Protocol::Smtp, false, 25),
            "smtps" => (Protocol::Smtp, true, 465),
            "imap" => (Protocol::Imap, false, 143),
            "imaps" => (Protocol::Imap, true, 993),
            "pop3" | "pop" => (Protocol::Pop3, false, 110),
            "pop3s" | "pops" => (Protocol::Pop3, true, 995),
            other => {
                return Err(format!(
                    "endpoint {text:?}: unknown scheme {other:?} (use smtp, smtps, imap, imaps, pop3 or pop3s)"
                ));
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            // Never echo the URL here: it holds a secret.
            return Err(format!(
                "the {} endpoint URL carries credentials; remove them and give the user with --user and the password through an environment variable or file",
                url.scheme()
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err(format!(
                "endpoint {text:?}: only scheme, host and port are used; remove the path or query"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("endpoint {text:?} has no host")),
        };
        Ok(Endpoint {
            protocol,
            security: if implicit {
                Security::Implicit
            } else {
                Security::Starttls(policy)
            },
            host,
            port: url.port().unwrap_or(default_port),
            connect_to: None,
        })
    }

    /// What to connect to: the fixed address when there is one, else the host name.
    pub(crate) fn connect_host(&self) -> String {
        self.connect_to
            .map_or_else(|| self.host.clone(), |ip| ip.to_string())
    }

    /// Whether the host is on this machine, where plain-text logins are harmless.
    pub(crate) fn is_loopback(&self) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host.eq_ignore_ascii_case("localhost"),
        }
    }

    pub(crate) fn scheme(&self) -> &'static str {
        match (self.protocol, self.security) {
            (Protocol::Smtp, Security::Implicit) => "smtps",
            (Protocol::Smtp, _) => "smtp",
            (Protocol::Imap, Security::Implicit) => "imaps",
            (Protocol::Imap, _) => "imap",
            (Protocol::Pop3, Security::Implicit) => "pop3s",
            (Protocol::Pop3, _) => "pop3",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme(), self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme(), self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Endpoint {
        Endpoint::parse(s, StarttlsPolicy::Auto).unwrap()
    }

    #[test]
    fn schemes_ports_and_security() {
        let e = parse("smtp://mail.example.com:587");
        assert_eq!((e.protocol, e.port), (Protocol::Smtp, 587));
        assert_eq!(e.security, Security::Starttls(StarttlsPolicy::Auto));
        assert_eq!(parse("smtps://mail.example.com").port, 465);
        assert_eq!(parse("imaps://h").security, Security::Implicit);
        assert_eq!(parse("imap://h").port, 143);
        assert_eq!(parse("pop3s://h").port, 995);
        assert_eq!(parse("pop3://h/").port, 110);
    }

    #[test]
    fn ipv6_and_loopback() {
        let e = parse("imap://[::1]:2143");
        assert_eq!(e.host, "::1");
        assert!(e.is_loopback());
        assert_eq!(e.to_string(), "imap://[::1]:2143");
        assert!(parse("smtp://127.0.0.1").is_loopback());
        assert!(parse("smtp://localhost").is_loopback());
        assert!(!parse("smtp://mail.example.com").is_loopback());
    }

    #[test]
    fn bad_urls_explain_themselves() {
        for bad in [
            "mail.example.com",
            "http://mail.example.com",
            "smtp://user:secret@mail.example.com",
            "imap://h/INBOX",
            "smtp://",
        ] {
            assert!(Endpoint::parse(bad, StarttlsPolicy::Auto).is_err(), "{bad}");
        }
        let err = Endpoint::parse("smtp://user:secret@h", StarttlsPolicy::Auto).unwrap_err();
        assert!(
            err.contains("credentials") && !err.contains("secret"),
            "{err}"
        );
    }
}
