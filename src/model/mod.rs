//! The report and its parts, as data: results, diagnoses, statistics, MX checks,
//! the liveness timeline.
//! Built by `probe`, judged by `analysis`, rendered by `report`.

pub mod bounce;
pub mod diagnosis;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod mx;
pub mod report;
pub mod result;
pub mod stats;
pub mod timeline;
