//! Judging a report: diagnoses and the verdict, latency statistics, stability over
//! rounds, the comparison with a baseline, the liveness timeline's crash loops.
//! Pure: no tokio, no network, no protocol code; only `core` and `model` data in
//! and out.

pub mod baseline;
pub mod diagnosis;
pub mod stability;
pub mod stats;
pub mod timeline;
