//! The IMAP pieces mailprobe parses itself (async-imap parses the rest):
//! capabilities, tagged status lines, and NO/BAD text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailprobe::protocol::imap::{parse_capabilities, split_status_line, status_text};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.split_inclusive('\n') {
        if let Some(caps) = parse_capabilities(line) {
            assert!(caps.len() <= line.len());
        }
        if let Some((tag, status, rest)) = split_status_line(line) {
            assert!(tag.len() + status.len() + rest.len() <= line.len());
        }
        let _ = status_text(line);
    }
    let _ = status_text(&text);
});
