//! Streaming verification of a retrieved probe message: lines in, verdict out.
//!
//! It keeps only headers and per-part digests, so a 70 MB message is checked with
//! a few KiB of state whether it arrives whole (IMAP) or line by line (POP3). The
//! attachment is compared with the sent bytes, regenerated from their seed; it is
//! hashed only from its first difference on.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use crate::core::probe_id::PROBE_HEADER;
use crate::model::result::{AttachmentFound, Verification};
use crate::protocol::message::{Expected, SentAttachment};

/// Header blocks larger than this are not headers.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Parts beyond this are counted, not inspected.
const MAX_PARTS: usize = 64;
/// Decoded base64 is hashed in runs of about this many bytes.
const DECODED_RUN: usize = 32 * 1024;
/// Text parts are kept for comparison up to this size.
const MAX_TEXT: usize = 64 * 1024;

#[derive(Default)]
struct Part {
    content_type: String,
    boundary: Option<String>,
    encoding: String,
    filename: Option<String>,
    is_attachment: bool,
    size: u64,
    hasher: Sha256,
    /// The sent attachment this part is compared with; None once it differed
    /// (from then on `hasher` holds the copy's digest).
    sent: Option<SentAttachment>,
    /// Offset of the first byte that differed from the sent attachment.
    differs_at: Option<u64>,
    text: Vec<u8>,
    /// base64 characters waiting for a complete quantum.
    pending: Vec<u8>,
    /// Decoded bytes not hashed yet (hashing in runs, not per 57-byte line).
    decoded: Vec<u8>,
}

enum State {
    /// Reading a header block; `top` when it is the message's own header.
    Headers {
        top: bool,
    },
    Body,
    /// After the closing boundary (epilogue) or in a preamble.
    Ignore,
}

/// Feed every line of the message (with its line ending) to `line`, then `finish`.
pub struct Verifier<'e> {
    expected: &'e Expected,
    state: State,
    header_block: Vec<u8>,
    top_headers: Vec<(String, String)>,
    boundaries: Vec<String>,
    current: Option<Part>,
    parts: Vec<Part>,
    extra_parts: usize,
    bytes: u64,
    problems: Vec<String>,
    /// Whether a part already took the expected attachment for comparison.
    attachment_taken: bool,
}

impl<'e> Verifier<'e> {
    pub fn new(expected: &'e Expected) -> Self {
        Verifier {
            expected,
            state: State::Headers { top: true },
            header_block: Vec::new(),
            top_headers: Vec::new(),
            boundaries: Vec::new(),
            current: None,
            parts: Vec::new(),
            extra_parts: 0,
            bytes: 0,
            problems: Vec::new(),
            attachment_taken: false,
        }
    }

    /// Verify a message held in memory.
    pub fn verify_bytes(expected: &Expected, message: &[u8]) -> Verification {
        let mut v = Verifier::new(expected);
        for line in message.split_inclusive(|&b| b == b'\n') {
            v.line(line);
        }
        v.finish()
    }

    pub fn line(&mut self, line: &[u8]) {
        self.bytes += line.len() as u64;
        let content = trim_eol(line);
        match self.state {
            State::Headers { top } => {
                if content.is_empty() {
                    self.end_headers(top);
                } else if self.header_block.len() + line.len() <= MAX_HEADER_BLOCK {
                    self.header_block.extend_from_slice(line);
                } else if !self.problems.iter().any(|p| p.contains("header block")) {
                    self.problems
                        .push("a header block is larger than 256 KiB".into());
                }
            }
            State::Body | State::Ignore => {
                if let Some((boundary_index, closing)) = self.boundary_line(content) {
                    self.close_part();
                    self.boundaries.truncate(boundary_index + 1);
                    if closing {
                        self.boundaries.pop();
                        self.state = State::Ignore;
                    } else {
                        self.state = State::Headers { top: false };
                    }
                } else if matches!(self.state, State::Body) {
                    self.body_line(line);
                }
            }
        }
    }

    fn boundary_line(&self, content: &[u8]) -> Option<(usize, bool)> {
        let rest = content.strip_prefix(b"--")?;
        self.boundaries.iter().enumerate().rev().find_map(|(i, b)| {
            let after = rest.strip_prefix(b.as_bytes())?;
            let after = trim_trailing_ws(after);
            match after {
                b"" => Some((i, false)),
                b"--" => Some((i, true)),
                _ => None,
            }
        })
    }

    fn end_headers(&mut self, top: bool) {
        let headers = parse_headers(&std::mem::take(&mut self.header_block));
        let mut part = Part {
            content_type: "text/plain".into(),
            encoding: "7bit".into(),
            ..Part::default()
        };
        for (name, value) in &headers {
            match name.to_ascii_lowercase().as_str() {
                "content-type" => {
                    let (mime, params) = split_params(value);
                    part.content_type = mime.to_ascii_lowercase();
                    part.boundary = param(&params, "boundary");
                    if part.filename.is_none() {
                        part.filename = param(&params, "name");
                    }
                }
                "content-transfer-encoding" => part.encoding = value.trim().to_ascii_lowercase(),
                "content-disposition" => {
                    let (disposition, params) = split_params(value);
                    part.is_attachment = disposition.eq_ignore_ascii_case("attachment");
                    if let Some(f) = param(&params, "filename") {
                        part.filename = Some(f);
                    }
                }
                _ => {}
            }
        }
        if top {
            self.top_headers = headers;
        }
        if part.content_type.starts_with("multipart/") {
            match part.boundary.take() {
                Some(b) => self.boundaries.push(b),
                None => self
                    .problems
                    .push("a multipart part has no boundary".into()),
            }
            self.state = State::Ignore; // preamble until the first boundary
        } else {
            // The first attachment-like part is the one `finish` judges.
            if !self.attachment_taken && (part.is_attachment || part.filename.is_some()) {
                self.attachment_taken = true;
                part.sent = self
                    .expected
                    .attachment
                    .as_ref()
                    .and_then(SentAttachment::new);
            }
            self.current = Some(part);
            self.state = State::Body;
        }
    }

    fn body_line(&mut self, line: &[u8]) {
        let Some(part) = self.current.as_mut() else {
            return;
        };
        match part.encoding.as_str() {
            "base64" => {
                // Fast path (almost every line): whole quanta, nothing held back: decode
                // straight from the line onto the decoded run, hashed in bulk later. A
                // line the decoder refuses (inner whitespace, bad bytes) takes the slow
                // path, which filters whitespace and names invalid data.
                let clean = trim_eol(line);
                if part.pending.is_empty() && clean.len().is_multiple_of(4) {
                    let start = part.decoded.len();
                    part.decoded.resize(start + clean.len() / 4 * 3, 0);
                    let out = base64_simd::Out::from_slice(&mut part.decoded[start..]);
                    match base64_simd::STANDARD.decode(clean, out) {
                        Ok(decoded) => {
                            let n = decoded.len();
                            part.decoded.truncate(start + n);
                            if part.decoded.len() >= DECODED_RUN {
                                flush_decoded(part);
                            }
                            return;
                        }
                        Err(_) => part.decoded.truncate(start),
                    }
                }
                flush_decoded(part);
                part.pending
                    .extend(line.iter().copied().filter(|b| !b.is_ascii_whitespace()));
                let whole = part.pending.len() / 4 * 4;
                if whole > 0 {
                    match BASE64.decode(&part.pending[..whole]) {
                        Ok(decoded) => feed(part, &decoded),
                        Err(_) => {
                            if !self.problems.iter().any(|p| p.contains("base64")) {
                                self.problems.push(format!(
                                    "a {} part has invalid base64",
                                    part.content_type
                                ));
                            }
                        }
                    }
                    part.pending.drain(..whole);
                }
            }
            "quoted-printable" => {
                let decoded = decode_quoted_printable_line(line);
                feed(part, &decoded);
            }
            _ => feed(part, line),
        }
    }

    fn close_part(&mut self) {
        if let Some(mut part) = self.current.take() {
            flush_decoded(&mut part);
            if !part.pending.is_empty() {
                match BASE64.decode(&part.pending) {
                    Ok(decoded) => feed(&mut part, &decoded),
                    Err(_) => self.problems.push("base64 data ends mid-quantum".into()),
                }
                part.pending.clear();
            }
            if self.parts.len() < MAX_PARTS {
                self.parts.push(part);
            } else {
                self.extra_parts += 1;
            }
        }
    }

    pub fn finish(mut self) -> Verification {
        if matches!(self.state, State::Headers { top: true }) {
            self.problems
                .push("the message ended inside its header".into());
        }
        self.close_part();
        if !self.boundaries.is_empty() {
            self.problems
                .push("a multipart body ends without its closing boundary (truncated?)".into());
        }
        let expected = self.expected;
        let header = |name: &str| {
            self.top_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        match header(PROBE_HEADER) {
            Some(id) if id == expected.probe_id => {}
            Some(id) => self.problems.push(format!(
                "{PROBE_HEADER} is {id:?}, expected {:?}",
                expected.probe_id
            )),
            None => self
                .problems
                .push(format!("the {PROBE_HEADER} header is missing")),
        }
        match header("Message-ID") {
            Some(id) if id.trim_matches(['<', '>']) == expected.message_id => {}
            Some(id) => self.problems.push(format!("Message-ID changed to {id}")),
            None => self
                .problems
                .push("the Message-ID header is missing".into()),
        }
        if header("Subject").is_none() {
            self.problems.push("the Subject header is missing".into());
        }
        let text = self
            .parts
            .iter()
            .find(|p| p.content_type == "text/plain" && !p.is_attachment);
        match text {
            Some(p) if normalize_text(&p.text) == normalize_text(expected.text.as_bytes()) => {}
            Some(_) => self
                .problems
                .push("the text body differs from what was sent".into()),
            None => self.problems.push("the text body is missing".into()),
        }
        let judged = self
            .parts
            .iter()
            .find(|p| p.is_attachment || p.filename.is_some());
        let differs_at = judged.and_then(|p| p.differs_at);
        let found = judged.map(|p| AttachmentFound {
            filename: p.filename.clone(),
            content_type: p.content_type.clone(),
            size: p.size,
            sha256: match &p.sent {
                Some(sent) => sent.digest(),
                None => hex::encode(p.hasher.clone().finalize()),
            },
        });
        match (&expected.attachment, &found) {
            (None, None) => {}
            (None, Some(a)) => self.problems.push(format!(
                "an unexpected attachment {:?} was added",
                a.filename.as_deref().unwrap_or("(unnamed)")
            )),
            (Some(want), None) => self
                .problems
                .push(format!("the attachment {:?} is missing", want.filename)),
            (Some(want), Some(got)) => {
                if got.filename.as_deref() != Some(want.filename.as_str()) {
                    self.problems.push(format!(
                        "the attachment was renamed from {:?} to {:?}",
                        want.filename,
                        got.filename.as_deref().unwrap_or("(unnamed)")
                    ));
                }
                if got.content_type != want.content_type {
                    self.problems.push(format!(
                        "the attachment type changed from {} to {}",
                        want.content_type, got.content_type
                    ));
                }
                if got.size != want.size {
                    self.problems.push(format!(
                        "the attachment has {} bytes, {} were sent (truncated or padded)",
                        got.size, want.size
                    ));
                } else if got.sha256 != want.sha256() {
                    self.problems.push(match differs_at {
                        Some(at) => format!(
                            "the attachment's SHA-256 differs from what was sent (first difference at byte {at})"
                        ),
                        None => "the attachment's SHA-256 differs from what was sent".into(),
                    });
                }
            }
        }
        Verification {
            verified: self.problems.is_empty(),
            bytes: self.bytes,
            problems: self.problems,
            attachment: found,
        }
    }
}

/// Hash the decoded run collected by the base64 fast path.
fn flush_decoded(part: &mut Part) {
    if !part.decoded.is_empty() {
        let run = std::mem::take(&mut part.decoded);
        feed(part, &run);
        part.decoded = run;
        part.decoded.clear();
    }
}

fn feed(part: &mut Part, data: &[u8]) {
    let offset = part.size;
    part.size += data.len() as u64;
    match &mut part.sent {
        Some(sent) => {
            let same = sent.compare(data);
            if same < data.len() {
                part.differs_at = Some(offset + same as u64);
                // The first difference: the copy's digest from here is the sent
                // bytes it matched, then its own.
                part.hasher = sent.hasher_so_far();
                part.hasher.update(&data[same..]);
                part.sent = None;
            }
        }
        None => part.hasher.update(data),
    }
    if part.content_type.starts_with("text/") && part.text.len() + data.len() <= MAX_TEXT {
        part.text.extend_from_slice(data);
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_trailing_ws(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &s[..end]
}

/// Line endings and trailing blank lines may legitimately change in transit.
fn normalize_text(text: &[u8]) -> String {
    let s = String::from_utf8_lossy(text).replace("\r\n", "\n");
    s.trim_end().to_string()
}

/// Unfold a header block into (name, value) pairs.
fn parse_headers(block: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(block);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    headers
}

/// `type/sub; a=b; c="d"` → ("type/sub", [("a","b"),("c","d")]).
fn split_params(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = value.split(';');
    let head = pieces.next().unwrap_or("").trim().to_string();
    let params = pieces
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect();
    (head, params)
}

fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn decode_quoted_printable_line(line: &[u8]) -> Vec<u8> {
    let content = trim_eol(line);
    let (content, soft_break) = match content.strip_suffix(b"=") {
        Some(c) => (c, true),
        None => (content, false),
    };
    let mut out = Vec::with_capacity(content.len() + 2);
    let mut i = 0;
    while i < content.len() {
        if content[i] == b'='
            && i + 2 < content.len() + 1
            && let Some(byte) = content
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(content[i]);
        i += 1;
    }
    if !soft_break {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::message::ProbeMessage;

    fn message(size: u64) -> (ProbeMessage, Vec<u8>) {
        let m = ProbeMessage::build("mailprobe-9-ff", "a@x.test", "b@x.test", size);
        let bytes = m.to_vec();
        (m, bytes)
    }

    #[test]
    fn intact_messages_verify() {
        for size in [0, 1, 57, 4000, 200_000] {
            let (m, bytes) = message(size);
            let v = Verifier::verify_bytes(&m.expected, &bytes);
            assert!(v.verified, "size {size}: {:?}", v.problems);
            assert_eq!(v.bytes, bytes.len() as u64);
        }
    }

    #[test]
    fn delivery_headers_prepended_do_not_matter() {
        let (m, bytes) = message(1000);
        let mut delivered =
            b"Return-Path: <a@x.test>\r\nReceived: from x\r\n\tby y; now\r\n".to_vec();
        delivered.extend_from_slice(&bytes);
        assert!(Verifier::verify_bytes(&m.expected, &delivered).verified);
    }

    #[test]
    fn streaming_in_odd_pieces_gives_the_same_verdict() {
        let (m, bytes) = message(10_000);
        let mut v = Verifier::new(&m.expected);
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            v.line(line);
        }
        assert!(v.finish().verified);
    }

    #[test]
    fn truncated_attachment_is_reported() {
        let (m, bytes) = message(100_000);
        let cut = &bytes[..bytes.len() / 2];
        let v = Verifier::verify_bytes(&m.expected, cut);
        assert!(!v.verified);
        assert!(
            v.problems.iter().any(|p| p.contains("truncated")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn altered_attachment_byte_is_reported() {
        let (m, mut bytes) = message(10_000);
        flip_attachment_char(&mut bytes, 400);
        let v = Verifier::verify_bytes(&m.expected, &bytes);
        assert!(!v.verified);
        assert!(
            v.problems.iter().any(|p| p.contains("SHA-256")),
            "{:?}",
            v.problems
        );
    }

    /// Flip one base64 character of the attachment, `offset` bytes after its
    /// filename.
    fn flip_attachment_char(bytes: &mut [u8], offset: usize) {
        let at = memchr::memmem::find(bytes, b"filename").unwrap() + offset;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    }

    /// The attachment part of an encoded message, decoded by mail-parser.
    fn attachment_of(bytes: &[u8]) -> Vec<u8> {
        use mail_parser::MimeHeaders;
        let parsed = mail_parser::MessageParser::default().parse(bytes).unwrap();
        let part = parsed.attachment(0).unwrap();
        assert!(part.attachment_name().is_some());
        part.contents().to_vec()
    }

    /// `expected` as if its seed were unknown: the copy is hashed, not compared.
    fn unseeded(expected: &Expected) -> Expected {
        let mut e = expected.clone();
        e.attachment.as_mut().unwrap().seed = None;
        e
    }

    #[test]
    fn a_changed_copy_reports_its_own_digest_and_where_it_differs() {
        let (m, mut bytes) = message(200_000);
        flip_attachment_char(&mut bytes, 150_000);
        let copy = attachment_of(&bytes);
        let want = hex::encode(Sha256::digest(&copy));
        let sent = attachment_of(&m.to_vec());
        let first = copy.iter().zip(&sent).position(|(a, b)| a != b).unwrap();
        let unseeded = unseeded(&m.expected);
        for expected in [&m.expected, &unseeded] {
            let v = Verifier::verify_bytes(expected, &bytes);
            assert!(!v.verified);
            assert_eq!(v.attachment.unwrap().sha256, want, "the copy's own digest");
        }
        let v = Verifier::verify_bytes(&m.expected, &bytes);
        let wanted = format!("first difference at byte {first}");
        assert!(
            v.problems.iter().any(|p| p.contains(&wanted)),
            "{wanted}: {:?}",
            v.problems
        );
    }

    #[test]
    fn an_intact_copy_reports_the_sent_digest_without_a_seed_too() {
        let (m, bytes) = message(100_000);
        let unseeded = unseeded(&m.expected);
        for expected in [&m.expected, &unseeded] {
            let v = Verifier::verify_bytes(expected, &bytes);
            assert!(v.verified, "{:?}", v.problems);
            assert_eq!(
                v.attachment.unwrap().sha256,
                hex::encode(Sha256::digest(attachment_of(&bytes)))
            );
        }
    }

    #[test]
    fn stripped_or_renamed_attachment_is_reported() {
        let (m, bytes) = message(3000);
        let text = String::from_utf8(bytes).unwrap();
        let renamed = text.replace("mailprobe-2.9KiB.bin", "removed.txt");
        let v = Verifier::verify_bytes(&m.expected, renamed.as_bytes());
        assert!(
            v.problems.iter().any(|p| p.contains("renamed")),
            "{:?}",
            v.problems
        );

        let (plain, plain_bytes) = message(0);
        let mut other = plain.expected.clone();
        other.attachment = m.expected.attachment.clone();
        let v = Verifier::verify_bytes(&other, &plain_bytes);
        assert!(
            v.problems.iter().any(|p| p.contains("missing")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn wrong_probe_id_is_reported() {
        let (m, bytes) = message(0);
        let mut other = m.expected.clone();
        other.probe_id = "mailprobe-9-00".into();
        assert!(!Verifier::verify_bytes(&other, &bytes).verified);
    }

    #[test]
    fn quoted_printable_lines_decode() {
        assert_eq!(decode_quoted_printable_line(b"a=3Db=\r\n"), b"a=b");
        assert_eq!(
            decode_quoted_printable_line(b"caf=C3=A9\r\n"),
            "café\r\n".as_bytes()
        );
        assert_eq!(decode_quoted_printable_line(b"bad=ZZ\r\n"), b"bad=ZZ\r\n");
    }

    #[test]
    fn garbage_input_does_not_verify_or_panic() {
        let (m, _) = message(100);
        for junk in [
            &b""[..],
            b"\r\n",
            b"--\r\n--\r\n",
            b"Content-Type: multipart/mixed\r\n\r\n--x\r\n",
            &[0xff; 300],
        ] {
            assert!(!Verifier::verify_bytes(&m.expected, junk).verified);
        }
    }
}
