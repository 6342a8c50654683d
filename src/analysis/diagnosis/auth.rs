//! Refused logins: why (the cause an OAuth refusal carries) and what to check.

use crate::core::auth::AuthReason;
use crate::core::error::ProbeError;
use crate::model::diagnosis::Cause;

pub(super) fn cause(reason: AuthReason) -> Cause {
    match reason {
        AuthReason::InvalidToken => Cause::InvalidToken,
        AuthReason::ExpiredToken => Cause::ExpiredToken,
        AuthReason::InsufficientScope => Cause::InsufficientScope,
        AuthReason::UnknownUser => Cause::UnknownUser,
        AuthReason::MechanismNotOffered => Cause::MechanismNotOffered,
    }
}

pub(super) fn hints(err: &ProbeError) -> Vec<String> {
    let hint: &[&str] = match err.auth_reason {
        None => &[
            "check the user name and the password source (variable or file)",
            "check the account is not locked and the auth backend (SASL, LDAP, passdb) answers",
        ],
        Some(AuthReason::ExpiredToken) => &[
            "get a fresh access token; --token-command runs a helper once per check so that each check has one",
        ],
        Some(AuthReason::InvalidToken) => &[
            "the server did not accept the token: check it was issued by the issuer the server trusts, for this service (audience), and that it has not expired by the server's clock",
            "a token refreshed by --token-command avoids stale tokens",
        ],
        Some(AuthReason::InsufficientScope) => &[
            "request the scope the server names (e.g. https://outlook.office.com/IMAP.AccessAsUser.All, https://mail.google.com/) when getting the token",
        ],
        Some(AuthReason::UnknownUser) => &[
            "the token belongs to another account than --user, or the server does not know the user: get a token for the probe mailbox, or fix --user",
            "for a service principal, check the mailbox permission granted to it",
        ],
        Some(AuthReason::MechanismNotOffered) => &[
            "the server does not offer the SASL mechanism the login needs: check --auth, that OAuth is enabled for the service, and that TLS is in use (servers hide mechanisms on plain connections)",
        ],
    };
    hint.iter().map(|h| h.to_string()).collect()
}
