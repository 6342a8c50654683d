//! Bytes on the wire: connections, read budgets and line guards, idle timeouts,
//! the phase clock, TLS (client and certificate inspection), the transcript and a
//! stream shared by two handles.
//! Knows nothing of mail protocols' meaning, reports or diagnosis.

pub mod budget;
pub mod clock;
pub mod connect;
pub mod idle;
pub mod net;
pub mod shared;
pub mod tls;
pub mod tls_inspect;
pub mod transcript;
