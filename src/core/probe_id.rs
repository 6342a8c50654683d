//! Probe ids: `mailprobe-<unix ms>-<64 random bits>`, carried in the
//! [`PROBE_HEADER`] of every probe message; how the tool recognises its own mail.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

/// Header that carries the probe id; searching for it never matches foreign mail.
pub(crate) const PROBE_HEADER: &str = "X-Mailprobe-Id";
/// Prefix of every probe id, so leftovers can be recognised by a sweep.
pub(crate) const PROBE_ID_PREFIX: &str = "mailprobe-";
/// A unique probe id: `mailprobe-<unix ms>-<64 random bits>`.
pub(crate) fn new_probe_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{PROBE_ID_PREFIX}{ms}-{:016x}",
        rand::thread_rng().r#gen::<u64>()
    )
}

/// Milliseconds since the epoch encoded in a probe id, used by the cleanup sweep.
pub(crate) fn probe_id_time_ms(id: &str) -> Option<u128> {
    id.strip_prefix(PROBE_ID_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

pub(crate) fn is_probe_id(id: &str) -> bool {
    probe_id_time_ms(id).is_some()
        && id.len() < 80
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The probe id in a header block (only the probe header is looked at).
pub(crate) fn header_probe_id(header: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(header);
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(PROBE_HEADER)
            .then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ids_are_unique_and_recognisable() {
        let a = new_probe_id();
        let b = new_probe_id();
        assert_ne!(a, b);
        assert!(is_probe_id(&a));
        assert!(probe_id_time_ms(&a).unwrap() > 1_600_000_000_000);
        assert!(!is_probe_id("mailprobe-x"));
        assert!(!is_probe_id("hello"));
    }

    #[test]
    fn probe_id_from_header_block() {
        assert_eq!(
            header_probe_id(b"x-mailprobe-id:  mailprobe-1-a \r\n\r\n").as_deref(),
            Some("mailprobe-1-a")
        );
        assert_eq!(header_probe_id(b"Subject: hi\r\n"), None);
    }
}
