//! Bytes on the wire: connections, read budgets and line guards, idle timeouts,
//! the phase clock, TLS (client and certificate inspection) and the transcript.
//! Knows nothing of mail protocols' meaning, reports or diagnosis.

pub mod budget;
pub mod clock;
pub mod connect;
pub mod idle;
pub mod net;
pub mod tls;
pub mod tls_inspect;
pub mod transcript;
pub mod trust;
