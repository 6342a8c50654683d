//! Timestamps as the report writes them (RFC 3339, UTC).

use std::time::SystemTime;

/// `2026-11-25T10:00:00.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
