//! Probe messages: built with mail-builder, tagged with a unique probe id, with an
//! attachment of seeded random bytes that is generated while it is sent (so a
//! 50 MiB rung never sits in memory), and what the verifier expects of a copy.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::probe_id::PROBE_HEADER;
use crate::core::units::size_label;

pub(crate) const ATTACHMENT_TYPE: &str = "application/octet-stream";

/// Raw attachment bytes per base64 line (76 characters, RFC 2045).
const LINE_RAW: usize = 57;
/// Lines per generated chunk: ~78 KiB of encoded data per write.
const CHUNK_LINES: usize = 1024;

/// What the verifier expects to find in a retrieved copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    pub(crate) probe_id: String,
    pub(crate) message_id: String,
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) attachment: Option<ExpectedAttachment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ExpectedAttachment {
    pub(crate) filename: String,
    pub(crate) content_type: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

/// A message ready to send: header and text built by mail-builder, attachment
/// generated on the fly between `prefix` and `suffix`.
#[derive(Debug, Clone)]
pub struct ProbeMessage {
    pub expected: Expected,
    pub from: String,
    pub to: String,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    seed: u64,
}

/// The single-line base64 placeholder mail-builder encodes for the attachment;
/// binary so that mail-builder picks base64, exactly one encoded line long.
fn marker() -> [u8; LINE_RAW] {
    let mut m = [0u8; LINE_RAW];
    for (i, b) in m.iter_mut().enumerate() {
        *b = 0x80 | (i as u8).wrapping_mul(37);
    }
    m
}

impl ProbeMessage {
    /// Build the message for one rung: `attachment_size == 0` means plain text only.
    pub fn build(probe_id: &str, from: &str, to: &str, attachment_size: u64) -> Self {
        let domain = from
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("mailprobe.invalid");
        let message_id = format!("{probe_id}@{domain}");
        let label = if attachment_size == 0 {
            "plain".to_string()
        } else {
            size_label(attachment_size)
        };
        let subject = format!("mailprobe test {label} {probe_id}");
        let text = format!(
            "This is a test message sent by mailprobe to verify that this mail server\r\n\
             delivers mail end to end. It is deleted automatically; if you see it, the\r\n\
             probe could not clean up and it is safe to delete.\r\n\
             \r\n\
             probe id: {probe_id}\r\n\
             attachment: {}\r\n",
            if attachment_size == 0 {
                "none".to_string()
            } else {
                format!("{attachment_size} bytes of random data")
            }
        );
        let seed = rand::thread_rng().next_u64();
        let mut builder = MessageBuilder::new()
            .from(("mailprobe", from))
            .to(to)
            .subject(subject.as_str())
            .message_id(message_id.as_str())
            .header(PROBE_HEADER, Raw::new(probe_id))
            .text_body(text.as_str());
        let filename = format!("mailprobe-{}.bin", size_label(attachment_size));
        let marker = marker();
        if attachment_size > 0 {
            builder = builder.attachment(ATTACHMENT_TYPE, filename.as_str(), &marker[..]);
        }
        let built = builder
            .write_to_vec()
            .expect("writing to a Vec cannot fail");
        let (prefix, suffix) = if attachment_size > 0 {
            let encoded_marker = BASE64.encode(marker);
            let at = find(&built, encoded_marker.as_bytes())
                .expect("mail-builder encodes the attachment as one base64 line");
            let mut end = at + encoded_marker.len();
            // Swallow the CRLF after the marker line: generated lines bring their own.
            if built[end..].starts_with(b"\r\n") {
                end += 2;
            }
            (built[..at].to_vec(), built[end..].to_vec())
        } else {
            (built, Vec::new())
        };
        let attachment = (attachment_size > 0).then(|| ExpectedAttachment {
            filename,
            content_type: ATTACHMENT_TYPE.to_string(),
            size: attachment_size,
            sha256: hex::encode(AttachmentBytes::new(seed, attachment_size).digest()),
        });
        ProbeMessage {
            expected: Expected {
                probe_id: probe_id.to_string(),
                message_id,
                subject,
                text,
                attachment,
            },
            from: from.to_string(),
            to: to.to_string(),
            prefix,
            suffix,
            seed,
        }
    }

    pub(crate) fn probe_id(&self) -> &str {
        &self.expected.probe_id
    }

    pub(crate) fn attachment_size(&self) -> u64 {
        self.expected.attachment.as_ref().map_or(0, |a| a.size)
    }

    /// Exact size of the encoded message in bytes (what SIZE= announces).
    pub(crate) fn encoded_len(&self) -> u64 {
        let n = self.attachment_size();
        let lines = n.div_ceil(LINE_RAW as u64);
        let body = n.div_ceil(3) * 4 + lines * 2;
        self.prefix.len() as u64 + body + self.suffix.len() as u64
    }

    /// The encoded message in chunks, generated as they are consumed.
    pub(crate) fn chunks(&self) -> MessageChunks<'_> {
        MessageChunks {
            message: self,
            stage: Stage::Prefix,
            bytes: AttachmentBytes::new(self.seed, self.attachment_size()),
            raw: Vec::new(),
        }
    }

    /// The whole encoded message in memory (tests and small messages).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() as usize);
        for chunk in self.chunks() {
            out.extend_from_slice(&chunk);
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Seeded random attachment bytes, produced in line-aligned blocks.
struct AttachmentBytes {
    // Fast and incompressible; nothing here needs cryptographic randomness.
    rng: rand::rngs::SmallRng,
    remaining: u64,
}

impl AttachmentBytes {
    fn new(seed: u64, size: u64) -> Self {
        AttachmentBytes {
            rng: rand::rngs::SmallRng::seed_from_u64(seed),
            remaining: size,
        }
    }
    /// Next block of raw bytes (a multiple of 57 except for the last), or None.
    fn next_block(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.remaining == 0 {
            return false;
        }
        let n = self.remaining.min((LINE_RAW * CHUNK_LINES) as u64) as usize;
        buf.resize(n, 0);
        self.rng.fill_bytes(buf);
        self.remaining -= n as u64;
        true
    }
    fn digest(mut self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        let mut buf = Vec::new();
        while self.next_block(&mut buf) {
            hasher.update(&buf);
        }
        hasher.finalize().into()
    }
}

enum Stage {
    Prefix,
    Attachment,
    Suffix,
    Done,
}

pub(crate) struct MessageChunks<'a> {
    message: &'a ProbeMessage,
    stage: Stage,
    bytes: AttachmentBytes,
    /// Raw bytes of the block being encoded (reused from block to block).
    raw: Vec<u8>,
}

impl Iterator for MessageChunks<'_> {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.stage {
                Stage::Prefix => {
                    self.stage = Stage::Attachment;
                    return Some(self.message.prefix.clone());
                }
                Stage::Attachment => {
                    let raw = &mut self.raw;
                    if !self.bytes.next_block(raw) {
                        self.stage = Stage::Suffix;
                        continue;
                    }
                    let mut out = Vec::with_capacity(raw.len() / 3 * 4 + raw.len() / 28 + 8);
                    for line in raw.chunks(LINE_RAW) {
                        let start = out.len();
                        out.resize(start + line.len().div_ceil(3) * 4, 0);
                        BASE64
                            .encode_slice(line, &mut out[start..])
                            .expect("buffer sized for the encoding");
                        out.extend_from_slice(b"\r\n");
                    }
                    return Some(out);
                }
                Stage::Suffix => {
                    self.stage = Stage::Done;
                    if self.message.suffix.is_empty() {
                        continue;
                    }
                    return Some(self.message.suffix.clone());
                }
                Stage::Done => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MimeHeaders;

    #[test]
    fn plain_message_has_headers_and_no_attachment() {
        let m = ProbeMessage::build("mailprobe-1-ab", "a@example.test", "b@example.test", 0);
        let bytes = m.to_vec();
        assert_eq!(bytes.len() as u64, m.encoded_len());
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("X-Mailprobe-Id: mailprobe-1-ab\r\n"));
        assert!(text.contains("Message-ID: <mailprobe-1-ab@example.test>"));
        assert!(!text.contains("multipart"));
        assert!(m.expected.attachment.is_none());
    }

    #[test]
    fn attachment_message_parses_back_with_the_same_bytes() {
        for size in [1u64, 56, 57, 58, 1000, 10 * 1024, 300_000] {
            let m = ProbeMessage::build("mailprobe-2-cd", "a@example.test", "b@example.test", size);
            let bytes = m.to_vec();
            assert_eq!(bytes.len() as u64, m.encoded_len(), "size {size}");
            let parsed = mail_parser::MessageParser::default()
                .parse(&bytes)
                .expect("parses");
            let att = parsed.attachment(0).expect("has an attachment");
            assert_eq!(att.contents().len() as u64, size);
            let sha = hex::encode(Sha256::digest(att.contents()));
            let expected = m.expected.attachment.as_ref().unwrap();
            assert_eq!(sha, expected.sha256, "size {size}");
            assert_eq!(att.attachment_name(), Some(expected.filename.as_str()));
            assert_eq!(
                parsed.header_raw(PROBE_HEADER).map(str::trim),
                Some("mailprobe-2-cd")
            );
            assert!(
                parsed
                    .body_text(0)
                    .unwrap()
                    .contains("probe id: mailprobe-2-cd")
            );
        }
    }

    #[test]
    fn two_messages_of_one_size_differ() {
        let a = ProbeMessage::build("mailprobe-3-a", "a@x.test", "b@x.test", 4096);
        let b = ProbeMessage::build("mailprobe-3-b", "a@x.test", "b@x.test", 4096);
        assert_ne!(
            a.expected.attachment.unwrap().sha256,
            b.expected.attachment.unwrap().sha256
        );
    }
}
