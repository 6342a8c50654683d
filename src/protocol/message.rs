//! Probe messages: built with mail-builder, tagged with a unique probe id, with an
//! attachment of seeded random bytes that is generated while it is sent (so a
//! 50 MiB rung never sits in memory), and what the verifier expects of a copy.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::core::probe_id::PROBE_HEADER;
use crate::core::units::size_label;

pub(crate) const ATTACHMENT_TYPE: &str = "application/octet-stream";

/// Raw attachment bytes per base64 line (76 characters, RFC 2045).
const LINE_RAW: usize = 57;
/// Lines per generated chunk: ~78 KiB of encoded data per write.
const CHUNK_LINES: usize = 1024;
/// Raw bytes per generated block.
const BLOCK: usize = LINE_RAW * CHUNK_LINES;
const _: () = assert!(
    BLOCK.is_multiple_of(8 * LANES),
    "blocks are whole generator steps"
);

/// What the verifier expects to find in a retrieved copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub(crate) probe_id: String,
    pub(crate) message_id: String,
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) attachment: Option<ExpectedAttachment>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExpectedAttachment {
    pub(crate) filename: String,
    pub(crate) content_type: String,
    pub(crate) size: u64,
    sha256: SentDigest,
    /// What the bytes were generated from: a copy is compared against them
    /// regenerated, byte for byte, instead of being hashed.
    pub(crate) seed: Option<u64>,
}

impl ExpectedAttachment {
    /// SHA-256 of the sent bytes (hex).
    pub(crate) fn sha256(&self) -> &str {
        self.sha256.get()
    }
}

/// The SHA-256 of a generated attachment, worked out the first time a report
/// needs it (a check that only sends never does) and shared by every clone.
#[derive(Debug, Clone)]
struct SentDigest {
    seed: u64,
    size: u64,
    hex: Arc<OnceLock<String>>,
}

impl SentDigest {
    fn new(seed: u64, size: u64) -> Self {
        SentDigest {
            seed,
            size,
            hex: Arc::default(),
        }
    }
    /// The sent bytes, generated again from the start.
    fn bytes(&self) -> AttachmentBytes {
        AttachmentBytes::new(self.seed, self.size)
    }
    fn get(&self) -> &str {
        self.hex.get_or_init(|| hex::encode(self.bytes().digest()))
    }
}

/// The same bytes have the same digest.
impl PartialEq for SentDigest {
    fn eq(&self, other: &Self) -> bool {
        (self.seed, self.size) == (other.seed, other.size)
    }
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
            sha256: SentDigest::new(seed, attachment_size),
            seed: Some(seed),
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

/// xoshiro256++ streams generated side by side.
const LANES: usize = 8;

/// Eight xoshiro256++ generators in lockstep, their outputs interleaved: fast and
/// incompressible (nothing here needs cryptographic randomness), the same bytes
/// on every machine, and laid out so that AVX2 computes all eight lanes at once.
/// Every attachment is generated four times (digest, send, IMAP and POP3
/// comparison), so this speed is client CPU per message.
struct LaneRng {
    state: [[u64; LANES]; 4],
}

impl LaneRng {
    fn new(seed: u64) -> Self {
        let mut seeder = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut state = [[0u64; LANES]; 4];
        for word in state.iter_mut().flatten() {
            *word = seeder.next_u64();
        }
        LaneRng { state }
    }

    #[inline(always)]
    fn step(&mut self) -> [u8; 8 * LANES] {
        let [s0, s1, s2, s3] = &mut self.state;
        let mut out = [0u8; 8 * LANES];
        for (i, bytes) in out.chunks_exact_mut(8).enumerate() {
            let value = s0[i]
                .wrapping_add(s3[i])
                .rotate_left(23)
                .wrapping_add(s0[i]);
            bytes.copy_from_slice(&value.to_le_bytes());
            let t = s1[i] << 17;
            s2[i] ^= s0[i];
            s3[i] ^= s1[i];
            s1[i] ^= s2[i];
            s0[i] ^= s3[i];
            s2[i] ^= t;
            s3[i] = s3[i].rotate_left(45);
        }
        out
    }

    #[inline(always)]
    fn fill_portable(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8 * LANES);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.step());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let last = self.step();
            rest.copy_from_slice(&last[..rest.len()]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fill_avx2(&mut self, buf: &mut [u8]) {
        self.fill_portable(buf);
    }

    fn fill(&mut self, buf: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just found to have AVX2, all `fill_avx2` requires.
            return unsafe { self.fill_avx2(buf) };
        }
        self.fill_portable(buf);
    }
}

/// Seeded random attachment bytes, produced in line-aligned blocks.
struct AttachmentBytes {
    rng: LaneRng,
    remaining: u64,
}

impl AttachmentBytes {
    fn new(seed: u64, size: u64) -> Self {
        AttachmentBytes {
            rng: LaneRng::new(seed),
            remaining: size,
        }
    }
    /// Next block of raw bytes (a multiple of 57 except for the last), or None.
    /// Blocks but the last are whole generator steps, so a block's bytes do not
    /// depend on the attachment's size.
    fn next_block(&mut self, buf: &mut Vec<u8>) -> bool {
        if self.remaining == 0 {
            return false;
        }
        let n = self.remaining.min(BLOCK as u64) as usize;
        buf.resize(n, 0);
        self.rng.fill(buf);
        self.remaining -= n as u64;
        true
    }
    fn digest(self) -> [u8; 32] {
        self.hash_first(u64::MAX).finalize().into()
    }
    /// A hasher fed with the first `n` bytes (all of them if there are fewer).
    fn hash_first(mut self, mut n: u64) -> Sha256 {
        let mut hasher = Sha256::new();
        let mut buf = Vec::new();
        while n > 0 && self.next_block(&mut buf) {
            let take = n.min(buf.len() as u64) as usize;
            hasher.update(&buf[..take]);
            n -= take as u64;
        }
        hasher
    }
}

/// The attachment as it was sent, regenerated from its seed as a copy is read, so
/// the copy is compared byte for byte and nothing is hashed while it matches.
pub(crate) struct SentAttachment {
    /// What was sent: seed, size and digest.
    sent: SentDigest,
    bytes: AttachmentBytes,
    block: Vec<u8>,
    pos: usize,
    matched: u64,
}

impl SentAttachment {
    /// None when the seed is unknown (the copy is then hashed).
    pub(crate) fn new(expected: &ExpectedAttachment) -> Option<Self> {
        expected.seed?;
        let sent = expected.sha256.clone();
        Some(SentAttachment {
            bytes: sent.bytes(),
            sent,
            block: Vec::new(),
            pos: 0,
            matched: 0,
        })
    }

    /// Compare the copy's next bytes with what was sent: how many of `data` match
    /// before the first difference (or before the sent bytes end).
    pub(crate) fn compare(&mut self, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            if self.pos == self.block.len() {
                if !self.bytes.next_block(&mut self.block) {
                    break;
                }
                self.pos = 0;
            }
            let n = (self.block.len() - self.pos).min(data.len() - done);
            let sent = &self.block[self.pos..self.pos + n];
            let got = &data[done..done + n];
            if sent != got {
                let same = sent.iter().zip(got).take_while(|(a, b)| a == b).count();
                self.matched += same as u64;
                return done + same;
            }
            self.pos += n;
            self.matched += n as u64;
            done += n;
        }
        done
    }

    /// A hasher fed with the bytes that matched so far: the copy's hash from here on
    /// is this one, continued with the copy's own bytes.
    pub(crate) fn hasher_so_far(&self) -> Sha256 {
        self.sent.bytes().hash_first(self.matched)
    }

    /// SHA-256 of the copy when every byte it had matched: the sent digest when it
    /// is complete, the digest of the prefix it kept when it is short.
    pub(crate) fn digest(&self) -> String {
        if self.matched == self.sent.size {
            self.sent.get().to_string()
        } else {
            hex::encode(self.hasher_so_far().finalize())
        }
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
                        // The output is sized exactly; the returned slice is that output.
                        let _ = base64_simd::STANDARD
                            .encode(line, base64_simd::Out::from_slice(&mut out[start..]));
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
            assert_eq!(sha, expected.sha256(), "size {size}");
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
    fn a_sent_attachment_compares_and_hashes_what_matched() {
        let size = 150_000u64;
        let m = ProbeMessage::build("mailprobe-4-a", "a@x.test", "b@x.test", size);
        let expected = m.expected.attachment.clone().unwrap();
        let mut sent = AttachmentBytes::new(expected.seed.unwrap(), size);
        let mut bytes = Vec::new();
        let mut block = Vec::new();
        while sent.next_block(&mut block) {
            bytes.extend_from_slice(&block);
        }
        // Whole, in odd pieces: everything matches, the digest is the sent one.
        let mut whole = SentAttachment::new(&expected).unwrap();
        for piece in bytes.chunks(1000 + 7) {
            assert_eq!(whole.compare(piece), piece.len());
        }
        assert_eq!(whole.digest(), expected.sha256());
        // Short: the digest is that of the prefix it kept.
        let mut short = SentAttachment::new(&expected).unwrap();
        assert_eq!(short.compare(&bytes[..70_001]), 70_001);
        assert_eq!(
            short.digest(),
            hex::encode(Sha256::digest(&bytes[..70_001]))
        );
        // Changed at one byte: the count stops there; what matched hashes as sent.
        let mut changed = bytes.clone();
        changed[90_000] ^= 1;
        let mut diff = SentAttachment::new(&expected).unwrap();
        assert_eq!(diff.compare(&changed[..60_000]), 60_000);
        assert_eq!(diff.compare(&changed[60_000..]), 30_000);
        let mut hasher = diff.hasher_so_far();
        hasher.update(&changed[90_000..]);
        assert_eq!(
            hex::encode(hasher.finalize()),
            hex::encode(Sha256::digest(&changed))
        );
        // Longer than sent: the extra bytes do not match.
        let mut long = SentAttachment::new(&expected).unwrap();
        let mut padded = bytes.clone();
        padded.extend_from_slice(b"xx");
        assert_eq!(long.compare(&padded), bytes.len());
    }

    #[test]
    fn each_lane_is_xoshiro256_plus_plus_and_every_cpu_gets_the_same_bytes() {
        let rng = LaneRng::new(42);
        // rand's SmallRng is xoshiro256++ on 64-bit targets: lane `i`, started from
        // the same state, must give its outputs.
        let mut lanes: Vec<rand::rngs::SmallRng> = (0..LANES)
            .map(|i| {
                let mut seed = [0u8; 32];
                for (w, bytes) in seed.chunks_exact_mut(8).enumerate() {
                    bytes.copy_from_slice(&rng.state[w][i].to_le_bytes());
                }
                rand::rngs::SmallRng::from_seed(seed)
            })
            .collect();
        let mut dispatched = LaneRng::new(42);
        let mut portable = LaneRng::new(42);
        let mut a = vec![0u8; 8 * LANES * 100 + 13];
        let mut b = a.clone();
        dispatched.fill(&mut a);
        portable.fill_portable(&mut b);
        assert_eq!(a, b);
        for (step, chunk) in a.chunks(8 * LANES).enumerate().take(100) {
            for (i, lane) in lanes.iter_mut().enumerate() {
                let want = lane.next_u64().to_le_bytes();
                assert_eq!(&chunk[i * 8..i * 8 + 8], &want, "step {step} lane {i}");
            }
        }
    }

    #[test]
    fn two_messages_of_one_size_differ() {
        let a = ProbeMessage::build("mailprobe-3-a", "a@x.test", "b@x.test", 4096);
        let b = ProbeMessage::build("mailprobe-3-b", "a@x.test", "b@x.test", 4096);
        assert_ne!(
            a.expected.attachment.unwrap().sha256(),
            b.expected.attachment.unwrap().sha256()
        );
    }
}
