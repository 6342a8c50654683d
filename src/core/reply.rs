//! Typed server replies: SMTP reply codes with enhanced status codes (RFC 3463),
//! and the status words of IMAP (NO/BAD) and POP3 (-ERR) mapped onto the same type.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An enhanced mail system status code such as `5.3.4` (class.subject.detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    /// Parse `x.y.z` where class is 2, 4 or 5.
    pub(crate) fn parse(word: &str) -> Option<Self> {
        let mut parts = word.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(EnhancedCode {
            class,
            subject,
            detail,
        })
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl From<EnhancedCode> for String {
    fn from(code: EnhancedCode) -> String {
        code.to_string()
    }
}

impl TryFrom<String> for EnhancedCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        EnhancedCode::parse(&s).ok_or_else(|| format!("not an enhanced status code: {s}"))
    }
}

/// How a reply code classifies (RFC 5321 section 4.2.1, first digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    PositiveCompletion,
    PositiveIntermediate,
    TransientNegative,
    PermanentNegative,
}

/// A server reply. SMTP replies carry a numeric code; IMAP and POP3 negative
/// answers are mapped onto the same shape (`code` absent, `permanent` decided by
/// the protocol module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<EnhancedCode>,
    pub text: String,
}

/// Longest reply line we accept; RFC 5321 allows 512 octets, servers exceed it a bit.
pub(crate) const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply (a hostile EHLO may send thousands).
pub(crate) const MAX_REPLY_LINES: usize = 200;

impl Reply {
    pub(crate) fn smtp(code: u16, text: impl Into<String>) -> Self {
        let text = text.into();
        let enhanced = text.split_whitespace().next().and_then(EnhancedCode::parse);
        Reply {
            code: Some(code),
            enhanced,
            text,
        }
    }

    /// A reply with no numeric code (IMAP NO/BAD, POP3 -ERR).
    pub(crate) fn textual(text: impl Into<String>) -> Self {
        let text = text.into();
        // Some IMAP/POP3 servers put response codes in brackets; enhanced codes are rare.
        Reply {
            code: None,
            enhanced: None,
            text,
        }
    }

    pub fn severity(&self) -> Option<Severity> {
        match self.code? / 100 {
            2 => Some(Severity::PositiveCompletion),
            3 => Some(Severity::PositiveIntermediate),
            4 => Some(Severity::TransientNegative),
            5 => Some(Severity::PermanentNegative),
            _ => None,
        }
    }

    pub fn is_positive(&self) -> bool {
        matches!(
            self.severity(),
            Some(Severity::PositiveCompletion | Severity::PositiveIntermediate)
        )
    }
    pub(crate) fn is_permanent(&self) -> bool {
        self.severity() == Some(Severity::PermanentNegative)
    }
    pub(crate) fn is_transient(&self) -> bool {
        self.severity() == Some(Severity::TransientNegative)
    }

    /// Message size exceeded: 552, or enhanced 5.3.4 / 5.2.3 (RFC 3463).
    pub fn is_size_limit(&self) -> bool {
        self.code == Some(552)
            || self.enhanced.is_some_and(|e| {
                (e.subject == 3 && e.detail == 4) || (e.subject == 2 && e.detail == 3)
            })
    }

    /// Parse a complete SMTP reply (one or more `ddd-text` lines ending with `ddd text`).
    /// Returns `Ok(None)` when more lines are needed.
    pub fn parse_smtp_lines<S: AsRef<str>>(lines: &[S]) -> Result<Option<Reply>, String> {
        let mut code = None;
        let mut text = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let line = line.as_ref().trim_end_matches(['\r', '\n']);
            let (this_code, sep, rest) = split_reply_line(line)?;
            if *code.get_or_insert(this_code) != this_code {
                return Err(format!(
                    "reply code changed inside a multi-line reply: {line:?}"
                ));
            }
            text.push(rest.to_string());
            if sep != '-' {
                if i + 1 != lines.len() {
                    return Err("lines after the last line of a reply".into());
                }
                let mut reply = Reply::smtp(this_code, text.join("\n"));
                // The enhanced code prefixes each line; keep the one from the first.
                reply.enhanced = text
                    .first()
                    .and_then(|t| t.split_whitespace().next())
                    .and_then(EnhancedCode::parse);
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }
}

fn split_reply_line(line: &str) -> Result<(u16, char, &str), String> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(format!("not an SMTP reply line: {:?}", truncate(line, 80)));
    }
    let code: u16 = line[..3].parse().map_err(|_| "bad code".to_string())?;
    if !(200..=599).contains(&code) {
        return Err(format!("reply code {code} is outside 2xx-5xx"));
    }
    match bytes.get(3) {
        None => Ok((code, ' ', "")),
        Some(b' ') => Ok((code, ' ', &line[4..])),
        Some(b'-') => Ok((code, '-', &line[4..])),
        Some(_) => Err(format!("not an SMTP reply line: {:?}", truncate(line, 80))),
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first_line = self.text.lines().next().unwrap_or("");
        match self.code {
            Some(code) => write!(f, "{code} {}", truncate(first_line, 200)),
            None => write!(f, "{}", truncate(first_line, 200)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_reply_with_enhanced_code() {
        let r = Reply::parse_smtp_lines(&["552 5.3.4 Message size exceeds fixed limit\r\n"])
            .unwrap()
            .unwrap();
        assert_eq!(r.code, Some(552));
        assert_eq!(r.enhanced.unwrap().to_string(), "5.3.4");
        assert!(r.is_permanent() && r.is_size_limit());
        assert_ne!(r.severity(), Some(Severity::TransientNegative));
    }

    #[test]
    fn multi_line_reply_needs_its_last_line() {
        assert_eq!(
            Reply::parse_smtp_lines(&["250-mail.example.com", "250-SIZE 10240000"]).unwrap(),
            None
        );
        let r = Reply::parse_smtp_lines(&["250-mail.example.com", "250-SIZE 10240000", "250 OK"])
            .unwrap()
            .unwrap();
        assert_eq!(r.text.lines().count(), 3);
        assert!(r.is_positive());
        assert_eq!(r.enhanced, None);
    }

    #[test]
    fn garbage_and_mixed_codes_are_errors() {
        assert!(Reply::parse_smtp_lines(&["hello"]).is_err());
        assert!(Reply::parse_smtp_lines(&["999 no"]).is_err());
        assert!(Reply::parse_smtp_lines(&["250-a", "251 b"]).is_err());
        assert!(Reply::parse_smtp_lines(&["25"]).is_err());
        assert!(Reply::parse_smtp_lines(&["250xok"]).is_err());
    }

    #[test]
    fn transient_reply() {
        let r = Reply::parse_smtp_lines(&["451 4.3.0 Error: queue file write error"])
            .unwrap()
            .unwrap();
        assert_eq!(r.severity(), Some(Severity::TransientNegative));
        assert!(!r.is_size_limit());
        assert_eq!(r.to_string(), "451 4.3.0 Error: queue file write error");
    }

    #[test]
    fn enhanced_code_parsing() {
        assert!(EnhancedCode::parse("2.0.0").is_some());
        assert!(EnhancedCode::parse("3.0.0").is_none());
        assert!(EnhancedCode::parse("5.3").is_none());
        assert!(EnhancedCode::parse("5.3.4.1").is_none());
        assert!(EnhancedCode::parse("Ok").is_none());
    }
}
