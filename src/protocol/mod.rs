//! Mail protocols on the wire and the messages they carry: SMTP (with the lettre
//! adapter), IMAP, the POP3 client, SASL with bearer tokens, DNS lookups, building probe messages and
//! verifying retrieved copies byte for byte. Knows no settings, report or analysis.

pub(crate) mod dns;
pub(crate) mod dsn;
pub(crate) mod folders;
pub mod imap;
pub(crate) mod imap_fetch;
pub mod message;
pub mod pop3;
pub(crate) mod sasl;
pub mod smtp;
pub mod verifier;
