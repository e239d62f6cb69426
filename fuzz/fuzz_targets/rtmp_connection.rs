//! The whole RTMP protocol core: handshake, chunk reader, AMF0 commands and the publish workflow, with the
//! production limits (8 MiB media messages once publishing, 64 KiB before). No room and no sockets: the
//! connection is sans-IO, and every publish request is accepted so media paths are reached.
//! The input is split into reads at arbitrary points (first byte of each 4096-byte block says where).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::ingest::rtmp::{ConnectionConfig, Event, Output, RtmpConnection};
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let cfg = ConnectionConfig::from_config(&roomgate::Config::default().rtmp);
    let now = Instant::now();
    let mut conn = RtmpConnection::new(cfg, now);
    // A valid-looking C0+C1 so the fuzzer reaches the chunk layer quickly.
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    let _ = conn.handle_input(&c0c1, now);
    let _ = conn.handle_input(&[0u8; 1536], now);
    for block in data.chunks(4096) {
        let cut = (block[0] as usize * 16).min(block.len());
        for part in [&block[..cut], &block[cut..]] {
            let _ = conn.handle_input(part, now);
            while let Some(out) = conn.poll_output() {
                match out {
                    Output::Close => return,
                    Output::Event(Event::PublishRequested { .. }) => {
                        let _ = conn.accept_publish();
                    }
                    _ => {}
                }
            }
        }
    }
});
