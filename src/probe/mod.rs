//! The orchestration: settings and context, the SMTP, IMAP and POP3 probers, the
//! mailbox watcher and its wait strategy, one check (the ladder), bisection, constant rate, rounds and
//! verify, the cleanup sweep and domain checks.

pub mod bisect;
pub mod check;
pub mod context;
pub mod domain;
pub mod imap;
pub mod pop3;
pub mod rate;
pub mod rounds;
pub mod settings;
pub mod smtp;
pub mod sweep;
pub mod wait;
pub mod watch;
