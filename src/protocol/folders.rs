//! IMAP folders besides INBOX: picking the Junk folder from a LIST answer
//! (SPECIAL-USE `\Junk`, RFC 6154, else a common name) and the searches that find
//! notifications about probe messages without reading the probe's own mail.

use std::time::{Duration, SystemTime};

use crate::core::probe_id::{PROBE_HEADER, PROBE_ID_PREFIX};

/// Names Junk folders commonly have when the server does not mark them `\Junk`.
const JUNK_NAMES: [&str; 5] = ["Junk", "Spam", "Junk E-mail", "Junk Email", "[Gmail]/Spam"];

/// One LIST entry: its name, its hierarchy delimiter and whether it is marked `\Junk`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) delimiter: Option<String>,
    pub(crate) junk: bool,
    pub(crate) selectable: bool,
}

/// The Junk folder: the one marked `\Junk`, else the first with a common name
/// (also as the last level under INBOX, e.g. `INBOX.Junk`).
pub(crate) fn junk_folder(listed: &[Listed]) -> Option<String> {
    let usable = || listed.iter().filter(|l| l.selectable);
    if let Some(l) = usable().find(|l| l.junk) {
        return Some(l.name.clone());
    }
    for wanted in JUNK_NAMES {
        if let Some(l) = usable().find(|l| l.name.eq_ignore_ascii_case(wanted)) {
            return Some(l.name.clone());
        }
    }
    usable()
        .find(|l| {
            let leaf = match &l.delimiter {
                Some(d) if !d.is_empty() => l.name.rsplit(d.as_str()).next().unwrap_or(&l.name),
                _ => &l.name,
            };
            leaf != l.name
                && l.name.to_ascii_uppercase().starts_with("INBOX")
                && JUNK_NAMES.iter().any(|n| leaf.eq_ignore_ascii_case(n))
        })
        .map(|l| l.name.clone())
}

/// `1-Dec-2026`: the date form of IMAP SEARCH SINCE.
pub(crate) fn imap_date(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from(t);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][usize::from(u8::from(d.month())) - 1];
    format!("{}-{month}-{}", d.day(), d.year())
}

/// Messages that are no probe message and mention one of `ids` (or, for a sweep,
/// any probe id) in their body: candidates for a notification about one.
/// Watching a run looks only at mail of the last two days (a cheap index search).
pub(crate) fn notification_query(ids: Option<&[&str]>, now: SystemTime) -> String {
    let not_probe = format!("NOT HEADER {PROBE_HEADER} \"{PROBE_ID_PREFIX}\"");
    match ids {
        None => format!("{not_probe} BODY \"{PROBE_ID_PREFIX}\""),
        Some(ids) => {
            let since = imap_date(now - Duration::from_secs(2 * 86_400));
            let mut any = String::new();
            for (i, id) in ids.iter().enumerate() {
                if i + 1 < ids.len() {
                    any.push_str("OR ");
                }
                any.push_str(&format!("BODY \"{id}\" "));
            }
            format!("SINCE {since} {not_probe} {}", any.trim_end())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, junk: bool) -> Listed {
        Listed {
            name: name.into(),
            delimiter: Some(".".into()),
            junk,
            selectable: true,
        }
    }

    #[test]
    fn special_use_wins_over_names() {
        let l = [
            listed("INBOX", false),
            listed("Spam", false),
            listed("Bulk", true),
        ];
        assert_eq!(junk_folder(&l).as_deref(), Some("Bulk"));
        let l = [
            listed("INBOX", false),
            listed("Sent", false),
            listed("spam", false),
        ];
        assert_eq!(junk_folder(&l).as_deref(), Some("spam"));
        let l = [listed("INBOX", false), listed("INBOX.Junk", false)];
        assert_eq!(junk_folder(&l).as_deref(), Some("INBOX.Junk"));
        let l = [listed("INBOX", false), listed("Archive.Junk", false)];
        assert_eq!(junk_folder(&l), None);
        let mut gone = listed("Junk", true);
        gone.selectable = false;
        assert_eq!(junk_folder(&[gone]), None);
    }

    #[test]
    fn queries_never_match_probe_messages() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_620_000);
        assert_eq!(imap_date(now), "1-Dec-2025");
        assert_eq!(
            notification_query(Some(&["a", "b"]), now),
            "SINCE 29-Nov-2025 NOT HEADER X-Mailprobe-Id \"mailprobe-\" OR BODY \"a\" BODY \"b\""
        );
        assert_eq!(
            notification_query(None, now),
            "NOT HEADER X-Mailprobe-Id \"mailprobe-\" BODY \"mailprobe-\""
        );
    }
}
