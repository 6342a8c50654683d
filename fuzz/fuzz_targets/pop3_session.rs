//! The POP3 client reading the input as everything a server says: greeting,
//! CAPA, login, STAT, UIDL, LIST, TOP and a streamed RETR (multi-line bodies,
//! dot-unstuffing), each bounded; a failure ends the session, never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mailprobe::protocol::pop3::Pop3Client;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let stream = tokio::io::join(data, tokio::io::sink());
        let Ok((mut client, _)) = Pop3Client::connect(stream).await else {
            return;
        };
        client.set_idle_timeout(Duration::from_secs(1));
        let Ok(caps) = client.capa().await else {
            return;
        };
        if client
            .login("user@example.com", "secret", &caps)
            .await
            .is_err()
        {
            return;
        }
        if client.stat().await.is_err() || client.uidl().await.is_err() {
            return;
        }
        if client.list().await.is_err() || client.top_headers(1, 4096).await.is_err() {
            return;
        }
        let mut total = 0usize;
        let mut sink = |line: &[u8]| total += line.len();
        let delivered = client.retr(1, 1 << 16, &mut sink).await;
        if let Ok(n) = delivered {
            assert!(n <= 1 << 16);
        }
        let _ = client.dele(1).await;
        let _ = client.quit().await;
    });
});
