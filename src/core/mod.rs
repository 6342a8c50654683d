//! The vocabulary every layer shares: units, protocol and phase names, errors,
//! typed replies, endpoints, TLS facts, secrets, probe ids and timestamps.
//! Imports nothing else of the crate.

pub mod classify;
pub mod endpoint;
pub mod error;
pub mod phase;
pub mod probe_id;
pub mod reply;
pub mod secret;
pub mod time;
pub mod tls_info;
pub mod units;
