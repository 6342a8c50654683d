//! The orchestration: settings and context, the SMTP, IMAP and POP3 probers, the
//! mailbox watcher and its wait strategy, one check (the ladder), bisection,
//! constant rate, rounds and verify (with overlapping rounds), the liveness sampler, the cleanup sweep and
//! domain checks.

pub(crate) mod bisect;
pub(crate) mod bounces;
pub mod check;
pub(crate) mod context;
pub(crate) mod domain;
pub(crate) mod imap;
pub(crate) mod overlap;
pub(crate) mod pop3;
pub(crate) mod rate;
pub mod rounds;
pub(crate) mod sampler;
pub(crate) mod settings;
pub(crate) mod smtp;
pub(crate) mod sweep;
pub(crate) mod wait;
pub(crate) mod watch;
