//! Judging a report: diagnoses and the verdict, latency statistics, stability over
//! rounds, the comparison with a baseline, the liveness timeline's crash loops.
//! Pure: no tokio, no network, no protocol code; only `core` and `model` data in
//! and out.

pub(crate) mod baseline;
pub(crate) mod diagnosis;
pub(crate) mod stability;
pub(crate) mod stats;
pub(crate) mod timeline;
