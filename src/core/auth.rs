//! How a login authenticates: the SASL mechanism asked for (`--auth`), why a
//! token login was refused, and what an access token says about itself (a
//! JWT's `exp` and user claims, read without verifying the signature).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// `--auth`: which SASL mechanism a login uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Passwords: PLAIN or LOGIN as before; tokens: OAUTHBEARER or XOAUTH2, whichever is offered.
    #[default]
    Auto,
    Plain,
    Login,
    Xoauth2,
    Oauthbearer,
}

impl Mechanism {
    pub(crate) const ALL: [Mechanism; 5] = [
        Mechanism::Auto,
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::Xoauth2,
        Mechanism::Oauthbearer,
    ];

    /// The command-line and profile name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mechanism::Auto => "auto",
            Mechanism::Plain => "plain",
            Mechanism::Login => "login",
            Mechanism::Xoauth2 => "xoauth2",
            Mechanism::Oauthbearer => "oauthbearer",
        }
    }

    /// The SASL name on the wire (`Auto` has none).
    pub(crate) fn sasl_name(self) -> &'static str {
        match self {
            Mechanism::Auto => "",
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::Xoauth2 => "XOAUTH2",
            Mechanism::Oauthbearer => "OAUTHBEARER",
        }
    }

    /// Whether the mechanism carries a bearer token rather than a password.
    pub(crate) fn takes_token(self) -> bool {
        matches!(self, Mechanism::Xoauth2 | Mechanism::Oauthbearer)
    }

    pub(crate) fn parse(text: &str) -> Result<Mechanism, String> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                format!("auth {text:?} is unknown; use auto, plain, login, xoauth2 or oauthbearer")
            })
    }
}

/// Why a login was refused, when the evidence says (OAuth error challenges,
/// the token's own claims, the server's offer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthReason {
    /// The server refused the token (bad signature, revoked, unknown issuer, or expired by its clock).
    InvalidToken,
    /// The token's `exp` has passed.
    ExpiredToken,
    /// The token lacks the scope the server wants.
    InsufficientScope,
    /// The token names another user than the login, or the server does not know the user.
    UnknownUser,
    /// The server does not offer the mechanism the login needs.
    MechanismNotOffered,
}

impl AuthReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthReason::InvalidToken => "invalid_token",
            AuthReason::ExpiredToken => "expired_token",
            AuthReason::InsufficientScope => "insufficient_scope",
            AuthReason::UnknownUser => "unknown_user",
            AuthReason::MechanismNotOffered => "mechanism_not_offered",
        }
    }
}

/// What an access token says about itself when it is a JWT. Nothing here is
/// verified (only the server can): it serves to explain, never to accept.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TokenClaims {
    /// `exp`: when the token stops being valid.
    pub(crate) expires: Option<SystemTime>,
    /// The user claims that look like a mail address (`upn`, `email`,
    /// `preferred_username`, `unique_name`, `sub`), in that order.
    pub(crate) users: Vec<String>,
    /// `scp` or `scope`.
    pub(crate) scope: Option<String>,
}

impl TokenClaims {
    /// The claims of a JWT (`header.payload.signature`); `None` when the token
    /// is opaque or not a readable JWT.
    pub(crate) fn read(token: &str) -> Option<TokenClaims> {
        let mut parts = token.trim().split('.');
        let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        let object = json.as_object()?;
        let expires = object
            .get("exp")
            .and_then(serde_json::Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11)
            .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s));
        let users = ["upn", "email", "preferred_username", "unique_name", "sub"]
            .iter()
            .filter_map(|k| object.get(*k)?.as_str())
            .filter(|v| v.contains('@'))
            .map(str::to_string)
            .collect();
        let scope = ["scp", "scope"]
            .iter()
            .find_map(|k| object.get(*k)?.as_str())
            .map(str::to_string);
        Some(TokenClaims {
            expires,
            users,
            scope,
        })
    }

    /// How long ago the token expired, if it has by `now`.
    pub(crate) fn expired_for(&self, now: SystemTime) -> Option<Duration> {
        now.duration_since(self.expires?).ok()
    }

    /// The user the token was issued for, when it names one other than `login`.
    pub(crate) fn other_user(&self, login: &str) -> Option<&str> {
        if self.users.is_empty() || self.users.iter().any(|u| u.eq_ignore_ascii_case(login)) {
            return None;
        }
        self.users.first().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.c2ln",
            b(r#"{"alg":"HS256","typ":"JWT"}"#),
            b(payload)
        )
    }

    #[test]
    fn claims_of_a_jwt_are_read_without_verifying() {
        let c = TokenClaims::read(&jwt(
            r#"{"sub":"a@x.test","exp":1700000000,"scp":"IMAP.AccessAsUser.All"}"#,
        ))
        .unwrap();
        assert_eq!(
            c.expires,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(c.users, vec!["a@x.test"]);
        assert_eq!(c.scope.as_deref(), Some("IMAP.AccessAsUser.All"));
        let later = UNIX_EPOCH + Duration::from_secs(1_700_000_060);
        assert_eq!(c.expired_for(later), Some(Duration::from_secs(60)));
        assert_eq!(c.expired_for(UNIX_EPOCH), None);
        assert_eq!(c.other_user("A@X.test"), None);
        assert_eq!(c.other_user("b@x.test"), Some("a@x.test"));
    }

    #[test]
    fn opaque_tokens_have_no_claims() {
        assert_eq!(TokenClaims::read("ya29.a0AfH6SMB"), None);
        assert_eq!(TokenClaims::read("a.b.c.d"), None);
        assert_eq!(TokenClaims::read("plain-token"), None);
        // A service principal's token names no user: nothing to compare.
        let c = TokenClaims::read(&jwt(r#"{"oid":"1234","roles":["IMAP.AccessAsApp"]}"#)).unwrap();
        assert_eq!(c.other_user("a@x.test"), None);
        assert_eq!(c.expires, None);
    }

    #[test]
    fn mechanism_names() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Ok(m));
        }
        assert_eq!(Mechanism::parse("XOAUTH2"), Ok(Mechanism::Xoauth2));
        assert!(Mechanism::parse("cram-md5").is_err());
        assert!(Mechanism::Oauthbearer.takes_token() && !Mechanism::Plain.takes_token());
    }
}
