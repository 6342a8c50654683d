//! SMTP replies: `Reply::parse_smtp_lines` on the input's lines, and
//! `prober::smtp::read_reply` reading the input as a server stream (bounded
//! line length and count; never a panic, whatever the bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailprobe::protocol::smtp::read_reply;
use mailprobe::core::reply::Reply;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    if let Ok(Some(reply)) = Reply::parse_smtp_lines(&lines) {
        let _ = reply.to_string();
        let _ = (reply.is_size_limit(), reply.is_positive(), reply.severity());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut reader = tokio::io::BufReader::new(data);
        // Read replies until the input is used up or one is refused.
        for _ in 0..1000 {
            match read_reply(&mut reader).await {
                Ok(reply) => {
                    let _ = reply.to_string();
                }
                Err(_) => break,
            }
        }
    });
});
