//! The whole RTMP input path: handshake, our chunk reader, rml_rtmp's session, FLV parsing and publishing.
//! The input is split into reads at arbitrary points (first byte of each 256-byte block says where).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::ingest::rtmp::{RtmpConnection, RtmpContext};
use std::sync::Arc;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    let mut config = roomgate::Config::default();
    config.rtmp.max_message_size = 64 * 1024;
    let ctx = Arc::new(RtmpContext { hub: roomgate::room::RoomHub::new(), config: Arc::new(config) });
    let mut conn = RtmpConnection::new(ctx, "127.0.0.1:1".parse().unwrap());
    // A valid-looking C0+C1 so the fuzzer reaches the chunk layer quickly.
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    let _ = conn.handle_input(&c0c1, Instant::now());
    let _ = conn.handle_input(&[0u8; 1536], Instant::now());
    for block in data.chunks(256) {
        let cut = (block[0] as usize).min(block.len());
        for part in [&block[..cut], &block[cut..]] {
            if conn.handle_input(part, Instant::now()).contains(&roomgate::ingest::rtmp::Action::Close) {
                return;
            }
        }
    }
});
