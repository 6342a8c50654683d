//! The streaming verifier fed arbitrary lines (a server may return anything
//! as "the message"): it must give a verdict, never panic, and agree with the
//! one-shot `verify_bytes`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailprobe::protocol::message::ProbeMessage;
use mailprobe::protocol::verifier::Verifier;

fn expected() -> &'static (ProbeMessage, ProbeMessage) {
    static M: OnceLock<(ProbeMessage, ProbeMessage)> = OnceLock::new();
    M.get_or_init(|| {
        (
            ProbeMessage::build("mailprobe-1-fuzz", "a@example.com", "b@example.com", 0),
            ProbeMessage::build("mailprobe-2-fuzz", "a@example.com", "b@example.com", 3000),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (plain, attached) = expected();
    for m in [plain, attached] {
        let mut v = Verifier::new(&m.expected);
        for line in data.split_inclusive(|&b| b == b'\n') {
            v.line(line);
        }
        let streamed = v.finish();
        let whole = Verifier::verify_bytes(&m.expected, data);
        assert_eq!(streamed.verified, whole.verified);
    }
    // A real message with the input spliced in must not verify unless unchanged.
    let mut bytes = attached.to_vec();
    let at = data.len() % (bytes.len() + 1);
    bytes.splice(at..at, data.iter().copied());
    let _ = Verifier::verify_bytes(&attached.expected, &bytes);
});
