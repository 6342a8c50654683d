//! Passwords and access tokens, and keeping them out of everything mailprobe
//! writes: a [`Secret`] that never prints, the forms a password takes on the
//! wire (plain, quoted, base64, SASL PLAIN; a token's SASL forms are added by
//! `protocol::sasl`), and scrubbing them from text, errors and whole reports (a
//! server may echo what it was sent).

use std::fmt;

use base64::Engine as _;

use crate::core::auth::Mechanism;

/// A password. Never printed: Debug and Display show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the secret of a login is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecretKind {
    #[default]
    Password,
    /// An OAuth 2.0 bearer access token.
    Token,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) user: String,
    /// The password, or the access token when `kind` is [`SecretKind::Token`].
    pub(crate) password: Secret,
    pub(crate) kind: SecretKind,
    /// `--auth`: the SASL mechanism asked for.
    pub(crate) mechanism: Mechanism,
}

impl Login {
    /// A password login with today's choice of mechanism.
    pub(crate) fn with_password(user: impl Into<String>, password: Secret) -> Login {
        Login {
            user: user.into(),
            password,
            kind: SecretKind::Password,
            mechanism: Mechanism::Auto,
        }
    }
    pub(crate) fn is_token(&self) -> bool {
        self.kind == SecretKind::Token
    }
}

/// What a secret is replaced with.
pub(crate) const REDACTED: &str = "<redacted>";

/// Every form in which `password` (of `user`) can appear on the wire or in a reply.
pub fn secret_forms(user: &str, password: &str) -> Vec<String> {
    if password.is_empty() {
        return Vec::new();
    }
    let b64 = |raw: &[u8]| base64::engine::general_purpose::STANDARD.encode(raw);
    let mut forms = vec![
        password.to_string(),
        // IMAP quoted string and Rust debug escaping.
        password.replace('\\', "\\\\").replace('"', "\\\""),
        password.escape_debug().collect(),
        // SASL LOGIN sends the password alone, PLAIN `\0user\0password`.
        b64(password.as_bytes()),
        b64(format!("\0{user}\0{password}").as_bytes()),
        b64(format!("{user}\0{user}\0{password}").as_bytes()),
    ];
    forms.sort();
    forms.dedup();
    // Longest first, so that a form containing another is replaced whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms
}

/// `text` with every secret replaced; borrows when there is nothing to replace.
pub(crate) fn scrub<'a>(text: &'a str, secrets: &[String]) -> std::borrow::Cow<'a, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(s.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(s.as_str(), REDACTED));
        }
    }
    out
}

/// Scrub every string of a serializable value (a whole report): a no-op unless
/// some string holds a secret, in which case the value is rebuilt from the
/// scrubbed JSON. Returns how many strings were changed.
pub(crate) fn scrub_value<T>(value: &mut T, secrets: &[String]) -> usize
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    if secrets.is_empty() {
        return 0;
    }
    let Ok(mut json) = serde_json::to_value(&*value) else {
        return 0;
    };
    let changed = scrub_json(&mut json, secrets);
    if changed > 0
        && let Ok(clean) = serde_json::from_value(json)
    {
        *value = clean;
    }
    changed
}

fn scrub_json(v: &mut serde_json::Value, secrets: &[String]) -> usize {
    use serde_json::Value;
    match v {
        Value::String(s) => match scrub(s, secrets) {
            std::borrow::Cow::Owned(clean) => {
                *s = clean;
                1
            }
            std::borrow::Cow::Borrowed(_) => 0,
        },
        Value::Array(items) => items.iter_mut().map(|i| scrub_json(i, secrets)).sum(),
        Value::Object(map) => map.values_mut().map(|i| scrub_json(i, secrets)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_cover_plain_quoted_and_base64() {
        let forms = secret_forms("u@x", "pa\"ss");
        assert!(forms.contains(&"pa\"ss".to_string()));
        assert!(forms.contains(&"pa\\\"ss".to_string()));
        assert!(forms.contains(&base64::engine::general_purpose::STANDARD.encode("\0u@x\0pa\"ss")));
        assert!(secret_forms("u", "").is_empty());
    }

    #[test]
    fn scrub_replaces_every_form() {
        let forms = secret_forms("u", "hunter22");
        let text = format!(
            "535 no: hunter22 / {}",
            base64::engine::general_purpose::STANDARD.encode("\0u\0hunter22")
        );
        let clean = scrub(&text, &forms);
        assert!(!clean.contains("hunter22"), "{clean}");
        assert_eq!(clean, "535 no: <redacted> / <redacted>");
        assert!(matches!(
            scrub("nothing here", &forms),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn scrub_value_rebuilds_only_when_needed() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct R {
            a: String,
            b: Vec<String>,
        }
        let forms = secret_forms("u", "s3cret!");
        let mut r = R {
            a: "ok".into(),
            b: vec!["echo s3cret!".into()],
        };
        assert_eq!(scrub_value(&mut r, &forms), 1);
        assert_eq!(r.b[0], "echo <redacted>");
        assert_eq!(scrub_value(&mut r, &forms), 0);
    }
}
