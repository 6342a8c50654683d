//! SASL with bearer tokens (and PLAIN when asked for), shared by SMTP AUTH,
//! IMAP AUTHENTICATE and POP3 AUTH: the XOAUTH2 and OAUTHBEARER (RFC 7628) client responses, picking the
//! mechanism from what the server offers, answering its challenges (an error
//! challenge is acknowledged so that the exchange ends properly), and turning a
//! refusal into an error that says why.

use std::time::SystemTime;

use base64::Engine as _;

use crate::core::auth::{AuthReason, Mechanism, TokenClaims};
use crate::core::error::{ErrorKind, ProbeError, ProbeResult};
use crate::core::secret::Login;
use crate::core::units::format_duration;

/// More server challenges than this in one exchange is a protocol violation.
pub(crate) const MAX_CHALLENGES: usize = 4;

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The SASL mechanism a login uses with a server offering `offered` (SASL
/// names, any case). `Ok(None)`: a password login with `auto` or `login`, which
/// keeps the protocol's own password login (SMTP AUTH PLAIN/LOGIN through
/// lettre, IMAP LOGIN, POP3 USER/PASS).
pub(crate) fn pick(login: &Login, offered: &[String]) -> ProbeResult<Option<Mechanism>> {
    let offers = |m: Mechanism| {
        offered
            .iter()
            .any(|o| o.eq_ignore_ascii_case(m.sasl_name()))
    };
    let wanted: &[Mechanism] = match login.mechanism {
        Mechanism::Auto if login.is_token() => &[Mechanism::Oauthbearer, Mechanism::Xoauth2],
        Mechanism::Auto | Mechanism::Login => return Ok(None),
        ref one => std::slice::from_ref(one),
    };
    if let Some(m) = wanted.iter().copied().find(|m| offers(*m)) {
        return Ok(Some(m));
    }
    let names: Vec<&str> = wanted.iter().map(|m| m.sasl_name()).collect();
    let offer = if offered.is_empty() {
        "no SASL mechanism".to_string()
    } else {
        offered.join(" ")
    };
    Err(ProbeError::auth_refused(
        Some(AuthReason::MechanismNotOffered),
        format!(
            "the server does not offer {} (it offers {offer})",
            names.join(" or ")
        ),
    ))
}

/// An RFC 7628 `saslname`: `,` and `=` escaped.
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// The client's first response for a bearer mechanism. `host` and `port` go
/// into OAUTHBEARER's key/value pairs when given.
pub(crate) fn bearer_response(
    mechanism: Mechanism,
    user: &str,
    token: &str,
    host: Option<(&str, u16)>,
) -> Vec<u8> {
    match mechanism {
        Mechanism::Oauthbearer => {
            let mut out = format!("n,a={},\x01", sasl_name(user));
            if let Some((host, port)) = host {
                out.push_str(&format!("host={host}\x01port={port}\x01"));
            }
            out.push_str(&format!("auth=Bearer {token}\x01\x01"));
            out.into_bytes()
        }
        _ => format!("user={user}\x01auth=Bearer {token}\x01\x01").into_bytes(),
    }
}

/// Every base64 form a token takes in a bearer exchange with these endpoints,
/// plus the token itself: what no output may show.
pub(crate) fn token_forms(user: &str, token: &str, endpoints: &[(&str, u16)]) -> Vec<String> {
    if token.is_empty() {
        return Vec::new();
    }
    let mut forms = vec![
        token.to_string(),
        b64(&bearer_response(Mechanism::Xoauth2, user, token, None)),
        b64(&bearer_response(Mechanism::Oauthbearer, user, token, None)),
    ];
    for &endpoint in endpoints {
        forms.push(b64(&bearer_response(
            Mechanism::Oauthbearer,
            user,
            token,
            Some(endpoint),
        )));
    }
    forms
}

/// The OAuth error a server sends as its challenge after refusing a token
/// (RFC 7628 3.2.2): `{"status":"401","schemes":"bearer","scope":"..."}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct OAuthError {
    pub(crate) status: Option<String>,
    pub(crate) scope: Option<String>,
}

impl OAuthError {
    /// Read a decoded challenge; `None` when it is not such a JSON object.
    pub(crate) fn parse(challenge: &[u8]) -> Option<OAuthError> {
        let json: serde_json::Value = serde_json::from_slice(challenge).ok()?;
        let object = json.as_object()?;
        let text = |k: &str| {
            object.get(k).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        Some(OAuthError {
            status: text("status"),
            scope: text("scope"),
        })
    }

    /// What the status says: 401/invalid_token, 403/insufficient_scope.
    fn reason(&self) -> Option<AuthReason> {
        match self.status.as_deref()?.to_ascii_lowercase().as_str() {
            "401" | "invalid_token" => Some(AuthReason::InvalidToken),
            "403" | "insufficient_scope" => Some(AuthReason::InsufficientScope),
            _ => None,
        }
    }
}

/// One bearer exchange from the client's side: the first response, the answer
/// to each server challenge, and what the server said when it refused.
pub(crate) struct Exchange {
    mechanism: Mechanism,
    initial: Vec<u8>,
    initial_sent: bool,
    challenges: usize,
    /// The server's error challenge, once it sent one.
    pub(crate) error: Option<OAuthError>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.initial.fill(0);
    }
}

impl Exchange {
    /// An exchange for `mechanism`: a bearer one, or PLAIN (`\0user\0password`).
    pub(crate) fn new(mechanism: Mechanism, login: &Login, host: &str, port: u16) -> Exchange {
        let secret = login.password.expose();
        Exchange {
            mechanism,
            initial: match mechanism {
                Mechanism::Xoauth2 | Mechanism::Oauthbearer => {
                    bearer_response(mechanism, &login.user, secret, Some((host, port)))
                }
                _ => format!("\0{}\0{secret}", login.user).into_bytes(),
            },
            initial_sent: false,
            challenges: 0,
            error: None,
        }
    }

    pub(crate) fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The base64 initial response, sent with the command (SASL-IR).
    pub(crate) fn initial_response(&mut self) -> String {
        self.initial_sent = true;
        b64(&self.initial)
    }

    /// The line that starts the exchange, `verb NAME` and CRLF, with the initial
    /// response when the line stays within `max_line` octets; otherwise the
    /// server's empty challenge asks for it.
    pub(crate) fn command(&mut self, verb: &str, max_line: usize) -> String {
        let mut line = format!("{verb} {}", self.mechanism.sasl_name());
        let encoded_len = self.initial.len().div_ceil(3) * 4;
        if line.len() + encoded_len + 3 <= max_line {
            line.push(' ');
            line.push_str(&self.initial_response());
        }
        line.push_str("\r\n");
        line
    }

    /// The answer (raw bytes) to a decoded server challenge: the first response
    /// to the empty challenge that asks for it; after an error challenge the
    /// acknowledgement that ends the exchange (XOAUTH2: empty, OAUTHBEARER: %x01).
    pub(crate) fn answer(&mut self, challenge: &[u8]) -> ProbeResult<Vec<u8>> {
        self.challenges += 1;
        if self.challenges > MAX_CHALLENGES {
            return Err(ProbeError::protocol_violation(format!(
                "the server sent more than {MAX_CHALLENGES} SASL challenges"
            )));
        }
        if !self.initial_sent && challenge.is_empty() {
            self.initial_sent = true;
            return Ok(self.initial.clone());
        }
        self.error = Some(OAuthError::parse(challenge).unwrap_or_default());
        Ok(match self.mechanism {
            Mechanism::Oauthbearer => vec![0x01],
            _ => Vec::new(),
        })
    }

    /// [`Exchange::answer`] for a base64 challenge line (what follows `334 `/`+ `).
    pub(crate) fn answer_base64(&mut self, challenge: &str) -> ProbeResult<String> {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(challenge.trim())
            .map_err(|_| {
                ProbeError::protocol_violation(format!(
                    "the SASL challenge is not base64: {:?}",
                    crate::core::reply::truncate(challenge.trim(), 80)
                ))
            })?;
        Ok(b64(&self.answer(&decoded)?))
    }

    /// The refusal of this exchange: `err` (the server's final answer) as an
    /// auth failure saying why, from the error challenge and the token's claims.
    pub(crate) fn refused(&self, login: &Login, err: ProbeError) -> ProbeError {
        if err.kind() != ErrorKind::Rejected && err.kind() != ErrorKind::Auth {
            return err;
        }
        if !self.mechanism.takes_token() {
            let mut out = err.with_kind(ErrorKind::Auth);
            out.message = format!("{} refused: {}", self.mechanism.sasl_name(), out.message);
            return out;
        }
        let claims = TokenClaims::read(login.password.expose()).unwrap_or_default();
        let mut why = Vec::new();
        let reason = if let Some(ago) = claims.expired_for(SystemTime::now()) {
            why.push(format!("the token expired {} ago", format_duration(ago)));
            Some(AuthReason::ExpiredToken)
        } else if let Some(other) = claims.other_user(&login.user) {
            why.push(format!(
                "the token was issued for {other}, not for {}",
                login.user
            ));
            Some(AuthReason::UnknownUser)
        } else {
            self.error.as_ref().and_then(OAuthError::reason)
        };
        if let Some(e) = &self.error {
            let mut said = Vec::new();
            if let Some(s) = &e.status {
                said.push(format!("status {s}"));
            }
            if let Some(s) = &e.scope {
                said.push(format!("scope wanted: {s}"));
            }
            if !said.is_empty() {
                why.push(format!("the server's OAuth error: {}", said.join(", ")));
            }
        }
        let meaning = match reason {
            Some(AuthReason::InvalidToken) => "invalid or expired token",
            Some(AuthReason::ExpiredToken) => "expired token",
            Some(AuthReason::InsufficientScope) => "insufficient scope",
            Some(AuthReason::UnknownUser) => "token for another user",
            Some(AuthReason::MechanismNotOffered) => "mechanism not offered",
            None => "token refused",
        };
        let mut out = err.with_kind(ErrorKind::Auth);
        out.auth_reason = reason;
        out.message = format!(
            "{} refused ({meaning}{}): {}",
            self.mechanism.sasl_name(),
            if why.is_empty() {
                String::new()
            } else {
                format!("; {}", why.join("; "))
            },
            out.message
        );
        out
    }
}

/// A token login whose token has already expired fails before connecting.
pub(crate) fn check_not_expired(login: &Login) -> ProbeResult<()> {
    if !login.is_token() {
        return Ok(());
    }
    let Some(claims) = TokenClaims::read(login.password.expose()) else {
        return Ok(());
    };
    match (claims.expires, claims.expired_for(SystemTime::now())) {
        (Some(at), Some(ago)) => Err(ProbeError::auth_refused(
            Some(AuthReason::ExpiredToken),
            format!(
                "the access token expired at {} ({} ago); not connecting with it: get a fresh token (e.g. with --token-command)",
                crate::core::time::rfc3339(at),
                format_duration(ago)
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reply::Reply;
    use crate::core::secret::{Secret, SecretKind};

    fn token_login(mechanism: Mechanism, token: &str) -> Login {
        Login {
            user: "probe@x.test".into(),
            password: Secret::new(token.into()),
            kind: SecretKind::Token,
            mechanism,
        }
    }

    fn jwt(payload: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b(r#"{"alg":"HS256"}"#), b(payload))
    }

    #[test]
    fn responses_follow_the_mechanisms() {
        assert_eq!(
            bearer_response(Mechanism::Xoauth2, "a@x", "T0K", None),
            b"user=a@x\x01auth=Bearer T0K\x01\x01"
        );
        assert_eq!(
            bearer_response(Mechanism::Oauthbearer, "a,b=c@x", "T0K", Some(("h.x", 993))),
            b"n,a=a=2Cb=3Dc@x,\x01host=h.x\x01port=993\x01auth=Bearer T0K\x01\x01"
        );
        let forms = token_forms("a@x", "T0K", &[("h.x", 993)]);
        assert!(forms.contains(&"T0K".to_string()));
        assert!(forms.contains(&b64(b"user=a@x\x01auth=Bearer T0K\x01\x01")));
        assert!(forms.contains(&b64(
            b"n,a=a@x,\x01host=h.x\x01port=993\x01auth=Bearer T0K\x01\x01"
        )));
    }

    #[test]
    fn auto_prefers_oauthbearer_for_tokens_and_keeps_passwords_as_they_were() {
        let offer = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let token = token_login(Mechanism::Auto, "t");
        assert_eq!(
            pick(&token, &offer("PLAIN XOAUTH2 OAUTHBEARER")).unwrap(),
            Some(Mechanism::Oauthbearer)
        );
        assert_eq!(
            pick(&token, &offer("plain xoauth2")).unwrap(),
            Some(Mechanism::Xoauth2)
        );
        let err = pick(&token, &offer("PLAIN LOGIN")).unwrap_err();
        assert_eq!(err.auth_reason, Some(AuthReason::MechanismNotOffered));
        assert!(err.is_auth());
        assert!(err.message.contains("PLAIN LOGIN"), "{}", err.message);
        let password = Login::with_password("u", Secret::new("p".into()));
        assert_eq!(pick(&password, &offer("PLAIN")).unwrap(), None);
        let explicit = token_login(Mechanism::Xoauth2, "t");
        assert!(pick(&explicit, &offer("OAUTHBEARER")).is_err());
    }

    #[test]
    fn an_error_challenge_is_acknowledged_and_explains_the_refusal() {
        let login = token_login(Mechanism::Oauthbearer, "opaque-token");
        let mut x = Exchange::new(Mechanism::Oauthbearer, &login, "h", 25);
        // No initial response yet: the empty challenge asks for it.
        assert!(x.answer(b"").unwrap().starts_with(b"n,a=probe@x.test,"));
        let ack = x
            .answer_base64(&b64(
                br#"{"status":"401","schemes":"bearer","scope":"mail"}"#,
            ))
            .unwrap();
        assert_eq!(ack, "AQ==");
        let err = x.refused(
            &login,
            ProbeError::rejected(Reply::smtp(535, "5.7.8 Authentication failed")),
        );
        assert_eq!(err.kind(), ErrorKind::Auth);
        assert_eq!(err.auth_reason, Some(AuthReason::InvalidToken));
        assert!(err.message.contains("status 401"), "{}", err.message);
        assert!(
            err.message.contains("scope wanted: mail"),
            "{}",
            err.message
        );
        assert_eq!(err.reply.unwrap().code, Some(535));

        let mut x = Exchange::new(Mechanism::Xoauth2, &login, "h", 25);
        let _ = x.initial_response();
        assert_eq!(
            x.answer(br#"{"status":"insufficient_scope"}"#).unwrap(),
            b""
        );
        let err = x.refused(&login, ProbeError::rejected(Reply::textual("NO failed")));
        assert_eq!(err.auth_reason, Some(AuthReason::InsufficientScope));
        // A timeout is not a refusal.
        let t = x.refused(
            &login,
            ProbeError::timeout(std::time::Duration::from_secs(1)),
        );
        assert!(t.is_timeout() && t.auth_reason.is_none());
    }

    #[test]
    fn the_tokens_claims_say_expired_or_another_user() {
        let other = token_login(
            Mechanism::Xoauth2,
            &jwt(r#"{"sub":"someone@x.test","exp":9999999999}"#),
        );
        let x = Exchange::new(Mechanism::Xoauth2, &other, "h", 1);
        let err = x.refused(&other, ProbeError::rejected(Reply::textual("NO")));
        assert_eq!(err.auth_reason, Some(AuthReason::UnknownUser));
        assert!(
            err.message.contains("issued for someone@x.test"),
            "{}",
            err.message
        );
        assert!(check_not_expired(&other).is_ok());

        let old = token_login(
            Mechanism::Xoauth2,
            &jwt(r#"{"sub":"probe@x.test","exp":1000}"#),
        );
        let err = check_not_expired(&old).unwrap_err();
        assert_eq!(err.auth_reason, Some(AuthReason::ExpiredToken));
        assert!(
            err.message.contains("1970-01-01T00:16:40Z"),
            "{}",
            err.message
        );
        let password = Login::with_password("u", Secret::new(jwt(r#"{"exp":1}"#)));
        assert!(check_not_expired(&password).is_ok(), "only tokens expire");
    }

    #[test]
    fn too_many_challenges_end_the_exchange() {
        let login = token_login(Mechanism::Xoauth2, "t");
        let mut x = Exchange::new(Mechanism::Xoauth2, &login, "h", 1);
        for _ in 0..MAX_CHALLENGES {
            x.answer(b"{}").unwrap();
        }
        assert_eq!(x.answer(b"{}").unwrap_err().kind(), ErrorKind::Protocol);
        assert!(x.answer_base64("!!").is_err());
    }
}
