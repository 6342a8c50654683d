//! The pure POP3 parsers of `src/pop3/parse.rs`: status lines, UIDL/LIST
//! listings, STAT, dot-unstuffing, response codes, capabilities, excerpts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailprobe::protocol::pop3::parse;

fuzz_target!(|data: &[u8]| {
    for line in data.split_inclusive(|&b| b == b'\n') {
        let _ = parse::parse_status_line(line);
        let _ = parse::parse_uidl_line(line);
        let _ = parse::parse_list_line(line);
        if let Some(rest) = parse::unstuff(line) {
            assert!(rest.len() <= line.len());
        }
        let _ = parse::excerpt(line);
        let text = String::from_utf8_lossy(line);
        let _ = parse::parse_stat(&text);
        let _ = parse::response_code(&text);
        let _ = parse::refusal_kind(&text);
    }
    let text = String::from_utf8_lossy(data);
    let caps: Vec<String> = text.lines().map(str::to_string).collect();
    let _ = parse::has_capability(&caps, "USER");
    let _ = parse::has_sasl(&caps, "PLAIN");
});
