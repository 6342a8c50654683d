//! What a refusal means, from evidence: the basic reply code, the enhanced code
//! (RFC 3463), words of the reply text, and what the probe itself knows (the phase,
//! the size it declared against the SIZE the server advertised, whether the session
//! was encrypted). One table of rules per protocol, first match wins, so that no
//! single server's wording decides a verdict.

use serde::{Deserialize, Serialize};

use crate::core::phase::{Phase, Protocol};
use crate::core::reply::Reply;

/// What a refusal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyClass {
    /// The message is larger than the server takes.
    SizeLimit,
    /// The server wants AUTH before it takes mail.
    AuthRequired,
    /// The server wants TLS (STARTTLS) before it takes mail.
    TlsRequired,
    /// The server does not relay to the recipient's domain for this client.
    RelayDenied,
    /// The recipient does not exist (or has no route).
    UnknownRecipient,
    /// Too many connections, messages or commands: slow down.
    RateLimited,
    /// A temporary refusal meant to be retried later (greylisting).
    Greylisted,
    /// The server refuses a password over an unencrypted session.
    PlaintextDisabled,
    /// The credentials were refused.
    AuthFailed,
    /// Any other refusal.
    Rejected,
}

/// Everything known about one refusal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Evidence<'a> {
    pub(crate) protocol: Protocol,
    pub(crate) phase: Phase,
    pub(crate) reply: &'a Reply,
    /// The size the probe declared (`MAIL FROM ... SIZE=`), when it declared one.
    pub(crate) declared_size: Option<u64>,
    /// The SIZE the server advertised in EHLO (0: no limit given).
    pub(crate) advertised_size: Option<u64>,
    /// The session was encrypted when the refusal came.
    pub(crate) encrypted: bool,
    /// The server offered STARTTLS/STLS or said it wants TLS (LOGINDISABLED,
    /// XTLSREQUIRED, no USER before TLS).
    pub(crate) tls_offered: bool,
}

impl Evidence<'_> {
    fn text(&self) -> String {
        self.reply.text.to_ascii_lowercase()
    }
    fn declared_over_advertised(&self) -> bool {
        matches!((self.declared_size, self.advertised_size), (Some(d), Some(a)) if a > 0 && d > a)
    }
}

/// One row of a table: every criterion given must hold.
struct Rule {
    class: ReplyClass,
    /// Phases the rule applies to (empty: any).
    phases: &'static [Phase],
    /// Basic reply codes (empty: any).
    codes: &'static [u16],
    /// Enhanced codes as (subject, detail); detail `None` is any detail (empty: any).
    enhanced: &'static [(u16, Option<u16>)],
    /// At least one of these words in the reply text (empty: any text).
    words: &'static [&'static str],
    /// What the probe knows (None: nothing more needed).
    when: Option<fn(&Evidence) -> bool>,
}

impl Rule {
    const ANY: Rule = Rule {
        class: ReplyClass::Rejected,
        phases: &[],
        codes: &[],
        enhanced: &[],
        words: &[],
        when: None,
    };

    fn matches(&self, e: &Evidence) -> bool {
        let text = e.text();
        (self.phases.is_empty() || self.phases.contains(&e.phase))
            && (self.codes.is_empty() || e.reply.code.is_some_and(|c| self.codes.contains(&c)))
            && (self.enhanced.is_empty()
                || e.reply.enhanced.is_some_and(|x| {
                    self.enhanced
                        .iter()
                        .any(|(s, d)| x.subject == *s && d.is_none_or(|d| x.detail == d))
                }))
            && (self.words.is_empty() || self.words.iter().any(|w| has_word(&text, w)))
            && self.when.is_none_or(|f| f(e))
    }
}

/// `word` in `text`; a short word (`tls`, `ssl`, `size`) only as a whole word, so
/// that it is not found inside another one.
fn has_word(text: &str, word: &str) -> bool {
    if word.len() > 4 {
        return text.contains(word);
    }
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

const TRANSACTION: &[Phase] = &[Phase::MailFrom, Phase::RcptTo, Phase::Data];
const MAIL_OR_DATA: &[Phase] = &[Phase::MailFrom, Phase::Data];
const SIZE_WORDS: &[&str] = &[
    "too big",
    "too large",
    "size",
    "exceeds",
    "exceeded",
    "message length",
];
const TLS_WORDS: &[&str] = &["starttls", "tls", "ssl", "encrypt", "secure connection"];

fn negative(e: &Evidence) -> bool {
    e.reply.is_permanent() || e.reply.is_transient()
}

fn over_size_refused(e: &Evidence) -> bool {
    negative(e) && e.declared_over_advertised()
}

fn size_words_not_quota(e: &Evidence) -> bool {
    // "Quota exceeded" is the mailbox being full, not the message being large.
    negative(e) && !e.text().contains("quota")
}

fn unencrypted(e: &Evidence) -> bool {
    !e.encrypted
}

fn unencrypted_and_tls_offered(e: &Evidence) -> bool {
    !e.encrypted && e.tls_offered
}

/// SMTP: sizes first (a size refusal may also carry 5.7.x policy words), then
/// the transient kinds, then policy, then recipients.
const SMTP_RULES: &[Rule] = &[
    // 5.2.2 is a full mailbox (even with 552, "exceeded storage allocation").
    Rule {
        class: ReplyClass::Rejected,
        enhanced: &[(2, Some(2))],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::SizeLimit,
        phases: TRANSACTION,
        codes: &[552],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::SizeLimit,
        phases: TRANSACTION,
        enhanced: &[(3, Some(4)), (2, Some(3))],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::SizeLimit,
        phases: MAIL_OR_DATA,
        when: Some(over_size_refused),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::SizeLimit,
        phases: MAIL_OR_DATA,
        words: SIZE_WORDS,
        when: Some(size_words_not_quota),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::RateLimited,
        codes: &[421, 450, 451, 452, 554, 550],
        words: &[
            "too many",
            "rate limit",
            "ratelimit",
            "slow down",
            "too fast",
        ],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::RateLimited,
        enhanced: &[(7, Some(28))],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::Greylisted,
        codes: &[450, 451],
        words: &[
            "greylist",
            "graylist",
            "grey-list",
            "gray-list",
            "try again later",
            "try later",
        ],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::TlsRequired,
        enhanced: &[(7, Some(10)), (7, Some(11))],
        when: Some(negative),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::TlsRequired,
        codes: &[530, 550, 554],
        words: TLS_WORDS,
        when: Some(unencrypted),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::AuthFailed,
        phases: &[Phase::Auth],
        when: Some(negative),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::AuthRequired,
        codes: &[530],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::AuthRequired,
        phases: TRANSACTION,
        enhanced: &[(7, Some(0)), (7, Some(1))],
        words: &[
            "authenticat",
            "auth required",
            "login first",
            "log in first",
        ],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::RelayDenied,
        phases: &[Phase::RcptTo],
        words: &["relay"],
        when: Some(negative),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::UnknownRecipient,
        phases: &[Phase::RcptTo],
        enhanced: &[(1, Some(1)), (1, Some(2)), (1, Some(3)), (1, Some(6))],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::UnknownRecipient,
        phases: &[Phase::RcptTo],
        codes: &[550, 551, 553],
        words: &[
            "unknown",
            "no such",
            "unrouteable",
            "unroutable",
            "does not exist",
            "doesn't exist",
            "not found",
            "invalid recipient",
            "mailbox unavailable",
        ],
        ..Rule::ANY
    },
];

/// IMAP: a refused LOGIN or AUTHENTICATE.
const IMAP_RULES: &[Rule] = &[
    Rule {
        class: ReplyClass::PlaintextDisabled,
        phases: &[Phase::Login],
        words: &["[privacyrequired]"],
        when: Some(unencrypted),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::PlaintextDisabled,
        phases: &[Phase::Login],
        words: &[
            "disabled",
            "tls",
            "ssl",
            "encrypt",
            "plaintext",
            "cleartext",
            "privacy",
        ],
        when: Some(unencrypted_and_tls_offered),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::AuthFailed,
        phases: &[Phase::Login],
        ..Rule::ANY
    },
];

/// POP3: a refused USER, PASS or AUTH. `[IN-USE]`, `[LOGIN-DELAY]` and `[SYS/...]`
/// say the credentials were fine (RFC 2449, RFC 3206).
const POP3_RULES: &[Rule] = &[
    Rule {
        class: ReplyClass::Rejected,
        phases: &[Phase::Login],
        words: &["[in-use]", "[login-delay]", "[sys/"],
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::PlaintextDisabled,
        phases: &[Phase::Login],
        words: &["[privacyrequired]"],
        when: Some(unencrypted),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::PlaintextDisabled,
        phases: &[Phase::Login],
        words: &[
            "incorrect state",
            "layer",
            "tls",
            "stls",
            "ssl",
            "encrypt",
            "plaintext",
            "cleartext",
            "privacy",
        ],
        when: Some(unencrypted_and_tls_offered),
        ..Rule::ANY
    },
    Rule {
        class: ReplyClass::AuthFailed,
        phases: &[Phase::Login],
        ..Rule::ANY
    },
];

/// Classify one refusal; `Rejected` when no rule says more.
pub(crate) fn classify(e: &Evidence) -> ReplyClass {
    let table = match e.protocol {
        Protocol::Smtp => SMTP_RULES,
        Protocol::Imap => IMAP_RULES,
        Protocol::Pop3 => POP3_RULES,
    };
    table
        .iter()
        .find(|r| r.matches(e))
        .map_or(ReplyClass::Rejected, |r| r.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row {
        protocol: Protocol,
        phase: Phase,
        reply: Reply,
        declared: Option<u64>,
        advertised: Option<u64>,
        encrypted: bool,
        tls_offered: bool,
        want: ReplyClass,
    }

    fn smtp(phase: Phase, code: u16, text: &str, want: ReplyClass) -> Row {
        Row {
            protocol: Protocol::Smtp,
            phase,
            reply: Reply::smtp(code, text),
            declared: Some(1000),
            advertised: Some(52_428_800),
            encrypted: true,
            tls_offered: false,
            want,
        }
    }

    fn textual(protocol: Protocol, text: &str, encrypted: bool, want: ReplyClass) -> Row {
        Row {
            protocol,
            phase: Phase::Login,
            reply: Reply::textual(text),
            declared: None,
            advertised: None,
            encrypted,
            tls_offered: true,
            want,
        }
    }

    fn check(rows: Vec<Row>) {
        for (i, r) in rows.iter().enumerate() {
            let got = classify(&Evidence {
                protocol: r.protocol,
                phase: r.phase,
                reply: &r.reply,
                declared_size: r.declared,
                advertised_size: r.advertised,
                encrypted: r.encrypted,
                tls_offered: r.tls_offered,
            });
            assert_eq!(
                got, r.want,
                "row {i}: {:?} {:?} {} (declared {:?}, advertised {:?}, encrypted {})",
                r.protocol, r.phase, r.reply, r.declared, r.advertised, r.encrypted
            );
        }
    }

    use Phase::{Auth, Data, MailFrom, RcptTo};
    use ReplyClass::*;

    #[test]
    fn smtp_size_limits() {
        let over = |mut r: Row| {
            r.declared = Some(7_175_581);
            r.advertised = Some(2_097_152);
            r
        };
        check(vec![
            smtp(
                MailFrom,
                552,
                "Message size exceeds maximum permitted",
                SizeLimit,
            ),
            smtp(
                Data,
                552,
                "5.3.4 Message size exceeds fixed limit",
                SizeLimit,
            ),
            smtp(Data, 554, "5.3.4 Message too big for system", SizeLimit),
            smtp(
                MailFrom,
                550,
                "5.2.3 Message length exceeds administrative limit",
                SizeLimit,
            ),
            smtp(MailFrom, 550, "Message too big!", SizeLimit),
            smtp(Data, 550, "Message too big!", SizeLimit),
            smtp(
                Data,
                554,
                "Transaction failed: message exceeds the limit",
                SizeLimit,
            ),
            // The probe declared more than the server advertised: any refusal is about size.
            over(smtp(MailFrom, 550, "go away", SizeLimit)),
            over(smtp(Data, 451, "try that again", SizeLimit)),
            // ...but not at RCPT, and not without the declaration.
            over(smtp(RcptTo, 550, "go away", Rejected)),
            smtp(MailFrom, 550, "go away", Rejected),
            // A full mailbox is not a size limit.
            smtp(
                Data,
                552,
                "5.2.2 Quota exceeded (mailbox for user is full)",
                Rejected,
            ),
            smtp(Data, 550, "Quota exceeded", Rejected),
        ]);
    }

    #[test]
    fn smtp_policy() {
        let plain = |mut r: Row| {
            r.encrypted = false;
            r.tls_offered = true;
            r
        };
        check(vec![
            smtp(MailFrom, 530, "5.7.0 Authentication required", AuthRequired),
            smtp(
                MailFrom,
                530,
                "5.7.1 Client was not authenticated",
                AuthRequired,
            ),
            smtp(
                RcptTo,
                550,
                "5.7.1 Authentication required to send",
                AuthRequired,
            ),
            smtp(MailFrom, 530, "Authentication required", AuthRequired),
            plain(smtp(
                MailFrom,
                530,
                "5.7.0 TLS required on this port",
                TlsRequired,
            )),
            plain(smtp(
                MailFrom,
                530,
                "5.7.0 Must issue a STARTTLS command first",
                TlsRequired,
            )),
            smtp(MailFrom, 530, "5.7.11 Encryption required", TlsRequired),
            // An encrypted session is not refused for lack of TLS: wording alone is not enough.
            smtp(
                MailFrom,
                530,
                "5.7.0 TLS required on this port",
                AuthRequired,
            ),
            smtp(Auth, 535, "Incorrect authentication data", AuthFailed),
            smtp(Auth, 535, "5.7.8 Error: authentication failed", AuthFailed),
            smtp(
                Auth,
                454,
                "4.7.0 Temporary authentication failure",
                AuthFailed,
            ),
            smtp(RcptTo, 550, "relay not permitted", RelayDenied),
            smtp(
                RcptTo,
                554,
                "5.7.1 <a@example.org>: Relay access denied",
                RelayDenied,
            ),
            smtp(RcptTo, 550, "Unrouteable address", UnknownRecipient),
            smtp(
                RcptTo,
                550,
                "5.1.1 <x@mailprobe.test>: Recipient address rejected: User unknown in local recipient table",
                UnknownRecipient,
            ),
            smtp(
                RcptTo,
                550,
                "5.1.1 Bad destination mailbox",
                UnknownRecipient,
            ),
            smtp(RcptTo, 550, "No such user here", UnknownRecipient),
            smtp(MailFrom, 550, "5.7.1 Rejected by content policy", Rejected),
            // Short words count only as words: "tls" inside another word is not TLS.
            plain(smtp(MailFrom, 550, "5.7.1 no outlsiders", Rejected)),
            smtp(Data, 554, "5.7.1 oversized headers not allowed", Rejected),
            smtp(Data, 554, "5.7.1 Message rejected as spam", Rejected),
        ]);
    }

    #[test]
    fn smtp_transient() {
        check(vec![
            smtp(
                MailFrom,
                421,
                "4.7.0 Too many connections, slow down",
                RateLimited,
            ),
            smtp(
                RcptTo,
                450,
                "4.7.1 Too many messages from your address",
                RateLimited,
            ),
            smtp(MailFrom, 451, "4.7.28 rate limited", RateLimited),
            smtp(
                Data,
                451,
                "4.7.28 Our system has detected an unusual rate",
                RateLimited,
            ),
            smtp(
                RcptTo,
                450,
                "4.2.0 <a@b>: Recipient address rejected: Greylisted",
                Greylisted,
            ),
            smtp(RcptTo, 451, "4.7.1 Please try again later", Greylisted),
            smtp(RcptTo, 451, "Temporary local problem", Rejected),
            smtp(Data, 451, "4.3.0 Error: queue file write error", Rejected),
        ]);
    }

    #[test]
    fn imap_logins() {
        check(vec![
            textual(
                Protocol::Imap,
                "NO LOGIN Command disabled",
                false,
                PlaintextDisabled,
            ),
            textual(
                Protocol::Imap,
                "NO [PRIVACYREQUIRED] use TLS",
                false,
                PlaintextDisabled,
            ),
            textual(
                Protocol::Imap,
                "NO Plaintext authentication disallowed on non-secure connections",
                false,
                PlaintextDisabled,
            ),
            textual(
                Protocol::Imap,
                "NO LOGIN User name or passwd rejected",
                false,
                AuthFailed,
            ),
            textual(
                Protocol::Imap,
                "NO [AUTHENTICATIONFAILED] Authentication failed.",
                true,
                AuthFailed,
            ),
            // Over TLS, "disabled" is the account, not plaintext.
            textual(Protocol::Imap, "NO Account disabled", true, AuthFailed),
        ]);
    }

    #[test]
    fn pop3_logins() {
        let no_tls_offer = |mut r: Row| {
            r.tls_offered = false;
            r
        };
        check(vec![
            textual(Protocol::Pop3, "Incorrect state", false, PlaintextDisabled),
            textual(
                Protocol::Pop3,
                "USER command only available under a layer",
                false,
                PlaintextDisabled,
            ),
            textual(
                Protocol::Pop3,
                "[PRIVACYREQUIRED] Plaintext authentication disallowed",
                false,
                PlaintextDisabled,
            ),
            no_tls_offer(textual(
                Protocol::Pop3,
                "[PRIVACYREQUIRED] Plaintext authentication disallowed",
                false,
                PlaintextDisabled,
            )),
            no_tls_offer(textual(
                Protocol::Pop3,
                "Incorrect state",
                false,
                AuthFailed,
            )),
            textual(Protocol::Pop3, "[AUTH] Bad login", false, AuthFailed),
            textual(Protocol::Pop3, "[AUTH] Bad login", true, AuthFailed),
            textual(
                Protocol::Pop3,
                "[LOGIN-DELAY] Attempt to log in within the minimum login delay interval",
                false,
                Rejected,
            ),
            textual(Protocol::Pop3, "[IN-USE] Mailbox in use", true, Rejected),
            textual(Protocol::Pop3, "[SYS/TEMP] try later", true, Rejected),
        ]);
    }
}
