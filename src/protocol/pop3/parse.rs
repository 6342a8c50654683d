//! Pure POP3 parsing helpers (no I/O), kept apart so they can be fuzzed.

use crate::core::error::{ErrorKind, ProbeError};
use crate::core::reply::truncate;

/// The status indicator of one POP3 response line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `+OK text`
    Ok(String),
    /// `-ERR text`
    Err(String),
    /// `+ text`: a SASL continuation (RFC 5034); only valid during AUTH.
    Continue(String),
}

/// How much of a garbage line an error message quotes.
pub(crate) const EXCERPT_CHARS: usize = 80;

/// A short, printable excerpt of what the server sent, for error messages.
pub fn excerpt(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(EXCERPT_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim_end_matches(['\r', '\n']);
    let short = truncate(text, EXCERPT_CHARS);
    let mut out: String = short.escape_debug().collect();
    if short.len() < text.len() || head.len() < bytes.len() {
        out.push_str("...");
    }
    out
}

/// Strip one trailing LF and an optional CR before it.
pub(crate) fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn text_after(rest: &[u8]) -> Option<String> {
    match rest.first() {
        None => Some(String::new()),
        Some(b' ' | b'\t') => Some(String::from_utf8_lossy(&rest[1..]).trim().to_string()),
        Some(_) => None,
    }
}

/// Parse a status line (`+OK ...`, `-ERR ...`, or a SASL `+ ...` continuation).
/// The indicators are matched case-insensitively; anything else is a
/// [`ErrorKind::Protocol`] error quoting a short excerpt of the line.
pub fn parse_status_line(line: &[u8]) -> Result<Status, ProbeError> {
    let body = trim_eol(line);
    let parsed = if body.len() >= 3 && body[..3].eq_ignore_ascii_case(b"+OK") {
        text_after(&body[3..]).map(Status::Ok)
    } else if body.len() >= 4 && body[..4].eq_ignore_ascii_case(b"-ERR") {
        text_after(&body[4..]).map(Status::Err)
    } else if body.first() == Some(&b'+') {
        text_after(&body[1..]).map(Status::Continue)
    } else {
        None
    };
    parsed.ok_or_else(|| {
        ProbeError::protocol_violation(format!("not a POP3 status line: \"{}\"", excerpt(line)))
    })
}

/// Undo dot-stuffing of one line of a multi-line response (RFC 1939 section 3).
///
/// Returns `None` for the terminator (`.` CRLF, or `.` LF from sloppy servers).
/// A line starting with the termination octet has that octet removed: `..x`
/// becomes `.x` (a conforming server never sends an unstuffed `.x`).
pub fn unstuff(line: &[u8]) -> Option<&[u8]> {
    match line {
        b".\r\n" | b".\n" => None,
        [b'.', rest @ ..] => Some(rest),
        _ => Some(line),
    }
}

fn field<'a>(
    words: &mut impl Iterator<Item = &'a str>,
    what: &str,
    line: &[u8],
) -> Result<&'a str, ProbeError> {
    words.next().ok_or_else(|| {
        ProbeError::protocol_violation(format!("missing {what} in \"{}\"", excerpt(line)))
    })
}

fn number<T: std::str::FromStr>(word: &str, what: &str, line: &[u8]) -> Result<T, ProbeError> {
    word.parse()
        .map_err(|_| ProbeError::protocol_violation(format!("bad {what} in \"{}\"", excerpt(line))))
}

fn words(line: &[u8]) -> Result<std::str::SplitAsciiWhitespace<'_>, ProbeError> {
    std::str::from_utf8(trim_eol(line))
        .map(str::split_ascii_whitespace)
        .map_err(|_| {
            ProbeError::protocol_violation(format!("non-UTF-8 listing line \"{}\"", excerpt(line)))
        })
}

/// Parse one `UIDL` listing line: `msg-number unique-id`.
pub fn parse_uidl_line(line: &[u8]) -> Result<(u32, String), ProbeError> {
    let mut w = words(line)?;
    let n = number(
        field(&mut w, "message number", line)?,
        "message number",
        line,
    )?;
    let uid = field(&mut w, "unique id", line)?;
    // RFC 1939: 1 to 70 characters in 0x21..=0x7E; tolerate longer, refuse absurd.
    if uid.len() > 1024 {
        return Err(ProbeError::protocol_violation(format!(
            "unique id longer than 1024 bytes in \"{}\"",
            excerpt(line)
        )));
    }
    Ok((n, uid.to_string()))
}

/// Parse one `LIST` listing line: `msg-number size`.
pub fn parse_list_line(line: &[u8]) -> Result<(u32, u64), ProbeError> {
    let mut w = words(line)?;
    let n = number(
        field(&mut w, "message number", line)?,
        "message number",
        line,
    )?;
    let size = number(field(&mut w, "size", line)?, "size", line)?;
    Ok((n, size))
}

/// Parse the text of a `+OK` answer to `STAT`: `count size [anything]`.
pub fn parse_stat(text: &str) -> Result<(u32, u64), ProbeError> {
    let line = text.as_bytes();
    let mut w = text.split_ascii_whitespace();
    let count = number(field(&mut w, "message count", line)?, "message count", line)?;
    let size = number(field(&mut w, "mailbox size", line)?, "mailbox size", line)?;
    Ok((count, size))
}

/// The RFC 2449 / RFC 3206 extended response code at the start of `-ERR` text,
/// e.g. `IN-USE` for `-ERR [IN-USE] mailbox locked`.
pub fn response_code(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('[')?;
    let end = rest.find(']')?;
    Some(&rest[..end])
}

/// Whether a login refusal is about the server's state rather than the
/// credentials (RFC 2449 `IN-USE`, `LOGIN-DELAY`; RFC 3206 `SYS/TEMP`, `SYS/PERM`).
pub fn refusal_kind(text: &str) -> ErrorKind {
    match response_code(text).map(str::to_ascii_uppercase).as_deref() {
        Some(code) if code == "IN-USE" || code == "LOGIN-DELAY" || code.starts_with("SYS/") => {
            ErrorKind::Rejected
        }
        _ => ErrorKind::Auth,
    }
}

/// Whether a CAPA listing offers `name` (first word, case-insensitive).
pub fn has_capability(capabilities: &[String], name: &str) -> bool {
    capabilities.iter().any(|c| {
        c.split_ascii_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
    })
}

/// The LOGIN-DELAY a CAPA listing announces (RFC 2449: `LOGIN-DELAY 900`), in
/// seconds. GNU Mailutils lists the bare number on a line of its own.
pub fn login_delay(capabilities: &[String]) -> Option<u64> {
    capabilities.iter().find_map(|c| {
        let mut w = c.split_ascii_whitespace();
        match w.next()? {
            tag if tag.eq_ignore_ascii_case("LOGIN-DELAY") => w.next()?.parse().ok(),
            bare if bare.bytes().all(|b| b.is_ascii_digit()) && w.next().is_none() => {
                bare.parse().ok()
            }
            _ => None,
        }
    })
}

/// A login refused because the server's LOGIN-DELAY has not passed (RFC 2449).
pub fn is_login_delay_refusal(text: &str) -> bool {
    response_code(text.trim_start()).is_some_and(|c| c.eq_ignore_ascii_case("LOGIN-DELAY"))
}

/// Whether a CAPA listing offers the SASL mechanism `mech` (RFC 2449 `SASL` tag).
pub fn has_sasl(capabilities: &[String], mech: &str) -> bool {
    sasl_mechanisms(capabilities)
        .iter()
        .any(|m| m.eq_ignore_ascii_case(mech))
}

/// The SASL mechanisms of a CAPA listing (upper case).
pub(crate) fn sasl_mechanisms(capabilities: &[String]) -> Vec<String> {
    capabilities
        .iter()
        .filter_map(|c| {
            let mut w = c.split_ascii_whitespace();
            w.next()
                .filter(|t| t.eq_ignore_ascii_case("SASL"))
                .map(|_| w.map(str::to_ascii_uppercase).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"+OK POP3 ready\r\n").unwrap(),
            Status::Ok("POP3 ready".into())
        );
        assert_eq!(
            parse_status_line(b"+OK\r\n").unwrap(),
            Status::Ok("".into())
        );
        assert_eq!(
            parse_status_line(b"+ok fine\n").unwrap(),
            Status::Ok("fine".into())
        );
        assert_eq!(
            parse_status_line(b"-ERR [AUTH] nope\r\n").unwrap(),
            Status::Err("[AUTH] nope".into())
        );
        assert_eq!(
            parse_status_line(b"+ \r\n").unwrap(),
            Status::Continue("".into())
        );
        assert_eq!(
            parse_status_line(b"+ dGVzdA==\r\n").unwrap(),
            Status::Continue("dGVzdA==".into())
        );
        for bad in [
            &b"HTTP/1.1 400\r\n"[..],
            b"+OKAY\r\n",
            b"-ERRor\r\n",
            b"",
            b"\r\n",
            b"* OK imap",
        ] {
            let err = parse_status_line(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{bad:?}");
        }
    }

    #[test]
    fn garbage_excerpt_is_short_and_lossy() {
        let mut line = vec![0xffu8; 3];
        line.extend(std::iter::repeat_n(b'z', 10_000));
        let err = parse_status_line(&line).unwrap_err();
        assert!(err.message.len() < 200, "{}", err.message);
        assert!(err.message.contains('\u{fffd}'));
        assert!(err.message.ends_with("...\""));
    }

    #[test]
    fn login_delays() {
        let caps = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            login_delay(&caps(&["TOP", "LOGIN-DELAY 900", "USER"])),
            Some(900)
        );
        assert_eq!(login_delay(&caps(&["login-delay 60 USER"])), Some(60));
        assert_eq!(login_delay(&caps(&["TOP", "60", "EXPIRENEVER"])), Some(60));
        assert_eq!(login_delay(&caps(&["TOP", "UIDL", "EXPIRE 30"])), None);
        assert_eq!(login_delay(&caps(&["LOGIN-DELAY soon"])), None);
        assert!(is_login_delay_refusal(
            "[LOGIN-DELAY] Attempt to log in within the minimum login delay interval"
        ));
        assert!(!is_login_delay_refusal("[AUTH] Bad login"));
    }

    #[test]
    fn unstuffing() {
        assert_eq!(unstuff(b".\r\n"), None);
        assert_eq!(unstuff(b".\n"), None);
        assert_eq!(unstuff(b"..\r\n"), Some(&b".\r\n"[..]));
        assert_eq!(unstuff(b"...x\r\n"), Some(&b"..x\r\n"[..]));
        assert_eq!(unstuff(b"a.\r\n"), Some(&b"a.\r\n"[..]));
        assert_eq!(unstuff(b"\r\n"), Some(&b"\r\n"[..]));
        assert_eq!(unstuff(b". \r\n"), Some(&b" \r\n"[..]));
        assert_eq!(unstuff(b""), Some(&b""[..]));
    }

    #[test]
    fn listings() {
        assert_eq!(
            parse_uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ\r\n").unwrap(),
            (1, "whqtswO00WBw418f9t5JxYwZ".into())
        );
        assert_eq!(parse_list_line(b"2 200\r\n").unwrap(), (2, 200));
        assert_eq!(
            parse_list_line(b"3 70000000000\n").unwrap(),
            (3, 70_000_000_000)
        );
        for bad in [
            &b"x 1\r\n"[..],
            b"1\r\n",
            b"-1 5\r\n",
            b"1 -5\r\n",
            b"\xff 1\r\n",
            b"",
        ] {
            assert_eq!(
                parse_list_line(bad).unwrap_err().kind(),
                ErrorKind::Protocol,
                "{bad:?}"
            );
        }
        assert!(parse_uidl_line(b"1\r\n").is_err());
        assert!(parse_uidl_line(format!("1 {}\r\n", "u".repeat(2000)).as_bytes()).is_err());
        assert_eq!(parse_stat("2 320 messages").unwrap(), (2, 320));
        assert!(parse_stat("two").is_err());
    }

    #[test]
    fn capabilities_and_codes() {
        let caps: Vec<String> = ["TOP", "user", "SASL LOGIN plain", "STLS"]
            .map(String::from)
            .into();
        assert!(has_capability(&caps, "USER"));
        assert!(has_capability(&caps, "stls"));
        assert!(!has_capability(&caps, "UIDL"));
        assert!(has_sasl(&caps, "PLAIN"));
        assert!(!has_sasl(&caps, "CRAM-MD5"));
        assert_eq!(response_code("[IN-USE] locked"), Some("IN-USE"));
        assert_eq!(response_code("no code"), None);
        assert_eq!(refusal_kind("[SYS/TEMP] try later"), ErrorKind::Rejected);
        assert_eq!(refusal_kind("[in-use] locked"), ErrorKind::Rejected);
        assert_eq!(refusal_kind("[AUTH] bad password"), ErrorKind::Auth);
        assert_eq!(refusal_kind("bad password"), ErrorKind::Auth);
    }
}
