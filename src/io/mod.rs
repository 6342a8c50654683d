//! Bytes on the wire: connections, read budgets and line guards, idle timeouts,
//! the phase clock and the check's deadline, TLS (client and certificate
//! inspection), the transcript and a stream shared by two handles.
//! Knows nothing of mail protocols' meaning, reports or diagnosis.

pub(crate) mod budget;
pub(crate) mod clock;
pub(crate) mod connect;
pub(crate) mod deadline;
pub(crate) mod idle;
pub(crate) mod net;
pub(crate) mod shared;
pub(crate) mod tls;
pub(crate) mod tls_inspect;
pub(crate) mod transcript;
pub(crate) mod trust;
