//! Judging a report: diagnoses and the verdict, latency statistics, stability over
//! rounds and the comparison with a baseline. Pure: no tokio, no network, no
//! protocol code; only `core` and `model` data in and out.

pub mod baseline;
pub mod diagnosis;
pub mod stability;
pub mod stats;
