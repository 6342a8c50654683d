//! The vocabulary every layer shares: units, protocol and phase names, errors,
//! typed replies, endpoints, TLS facts, secrets and how logins authenticate,
//! probe ids and timestamps.
//! Imports nothing else of the crate.

pub mod auth;
pub(crate) mod classify;
pub mod endpoint;
pub mod error;
pub mod phase;
pub(crate) mod probe_id;
pub mod reply;
pub mod secret;
pub(crate) mod time;
pub(crate) mod tls_info;
pub(crate) mod units;
