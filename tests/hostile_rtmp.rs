//! Hostile RTMP clients, before any authentication: each case checks what the attacker gets (a closed
//! connection, quickly) and that the gateway still serves a normal ffmpeg publisher and WHEP viewer afterwards.

mod support;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::*;

/// A TCP connection that finished the RTMP handshake (as a client).
fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap()).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "server closed during handshake");
        match hs.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => s.write_all(&response_bytes).unwrap(),
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                s.write_all(&response_bytes).unwrap();
                return s;
            }
        }
    }
}

/// One message with a type 0 header on chunk stream `csid`, in chunks of `chunk` bytes.
fn message(csid: u8, type_id: u8, payload: &[u8], chunk: usize) -> Vec<u8> {
    let mut v = vec![csid, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&0u32.to_le_bytes());
    for (i, c) in payload.chunks(chunk).enumerate() {
        if i > 0 {
            v.push(0xC0 | csid);
        }
        v.extend_from_slice(c);
    }
    v
}

/// Write what we can (the server may close early) and return how long until it closed the connection, if it
/// did within `within`.
fn closed_within(mut s: TcpStream, bytes: &[u8], within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let _ = s.write_all(bytes);
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(t0.elapsed()), // reset
        }
    }
    None
}

/// A command whose third value is `depth` strict arrays nested in each other (the payload that used to abort
/// the process through a stack overflow in the AMF0 decoder).
fn nested_command(depth: usize) -> Vec<u8> {
    let mut p = vec![0x02, 0, 7];
    p.extend_from_slice(b"connect");
    p.push(0x00);
    p.extend_from_slice(&1f64.to_be_bytes());
    for _ in 0..depth {
        p.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
    }
    p.push(0x05);
    p
}

/// Send `bytes` on a fresh handshaken connection to `addr` (on a blocking thread); how long until the server closed
/// it, if it did within 10 s.
async fn closed_after_sending(addr: SocketAddr, bytes: Vec<u8>) -> Option<Duration> {
    tokio::task::spawn_blocking(move || closed_within(handshaken(addr), &bytes, Duration::from_secs(10)))
        .await
        .unwrap()
}

/// Assert that `/metrics` counts the refusals, by a line that contains `labels`.
async fn assert_refusals_counted(gw: &TestGateway, labels: &str) {
    let metrics = http_get(gw.http_addr, "/metrics").await.1;
    assert!(metrics.contains(labels), "refusals are counted: {metrics}");
}

fn gateway_config(c: &mut roomgate::Config) {
    // Long enough that a close within a few seconds is the limit's doing, not the setup deadline's.
    c.rtmp.handshake_timeout_secs = 60;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_amf0_commands_and_data_do_not_stop_the_gateway() {
    let gw = start_gateway_with(gateway_config).await;
    let addr = gw.rtmp_addr.unwrap();
    // 200 000 levels in 1 MB, as a command (20), an AMF3-form command (17) and a data message (18); then the
    // most that fits under the 64 KiB cap for messages before publish (13 000 levels).
    for (depth, type_id) in [
        (200_000, 20u8),
        (200_000, 17),
        (200_000, 18),
        (13_000, 20),
        (13_000, 17),
    ] {
        let mut payload = nested_command(depth);
        if type_id == 17 {
            payload.insert(0, 0);
        }
        let closed = closed_after_sending(addr, message(3, type_id, &payload, 128)).await;
        assert!(
            closed.is_some(),
            "depth {depth} type {type_id}: the server closes the connection"
        );
    }
    assert_refusals_counted(&gw, "source=\"rtmp\",reason=\"limit\"").await;
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_before_publish_are_refused_at_their_header() {
    let gw = start_gateway_with(gateway_config).await;
    let addr = gw.rtmp_addr.unwrap();
    // Chunk size 1, then 8 chunk streams each announcing an 8 MiB video message and sending one byte.
    let mut bytes = message(2, 1, &1u32.to_be_bytes(), 128);
    for csid in 3..11u8 {
        bytes.extend([csid, 0, 0, 0, 0x80, 0, 0, 9, 1, 0, 0, 0, 0x17]);
    }
    let closed = closed_after_sending(addr, bytes).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(5)),
        "an 8 MiB message announced before publish ends the connection at once: {closed:?}"
    );
    // More chunk streams than a publisher needs, with tiny messages: refused too.
    let bytes = (3..40u8)
        .flat_map(|csid| message(csid, 4, &[0, 6, 0, 0, 0, 0], 128))
        .collect();
    let closed = closed_after_sending(addr, bytes).await;
    assert!(closed.is_some_and(|d| d < Duration::from_secs(5)), "{closed:?}");
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_rtmp_slot() {
    let gw = start_gateway_with(|c| {
        gateway_config(c);
        c.rtmp.max_connections_per_ip = 4;
    })
    .await;
    let addr = gw.rtmp_addr.unwrap();
    let (idle, extra) = tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        let extra = closed_within(TcpStream::connect(addr).unwrap(), &[], Duration::from_secs(3));
        (idle, extra)
    })
    .await
    .unwrap();
    assert!(
        extra.is_some(),
        "the fifth connection from one address is closed at once"
    );
    assert_refusals_counted(&gw, "reason=\"max_connections_per_ip\"").await;
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_still_serves(&gw).await;
}

/// The AudioSpecificConfig and raw AAC frames of an ffmpeg-muxed file.
fn aac_of_test_file() -> ([u8; 2], Vec<Vec<u8>>) {
    use roomgate::media::ts::{StreamKind, TsDemuxer, TsEvent};
    let data = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/x264_aac.ts")).unwrap();
    let mut events = Vec::new();
    TsDemuxer::new().push(&data, &mut events);
    let (mut config, mut frames) = ([0; 2], Vec::new());
    for e in events {
        if let TsEvent::Pes(p) = e {
            if p.kind == StreamKind::Aac {
                for f in roomgate::media::aac::adts_frames(&p.data) {
                    let f = f.unwrap();
                    config = f.config;
                    frames.push(f.payload.to_vec());
                }
            }
        }
    }
    (config, frames)
}

/// The audio of a push is transcoded on its connection's task: an authenticated publisher whose audio messages
/// each pack 2000 AAC frames (40 s of audio) gets each cut after a few thousand samples, counted as a transcode
/// error, and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_messages_packed_with_frames_are_cut() {
    use support::rtmp_client::Tag;
    let gw = start_gateway_with(gateway_config).await;
    let addr = gw.rtmp_addr.unwrap();
    let (config, frames) = aac_of_test_file();
    let packed: Vec<u8> = frames.iter().cycle().take(2000).flatten().copied().collect();
    let mut tags = vec![Tag::Audio([&[0xAF, 0][..], &config].concat())];
    for _ in 0..10 {
        tags.push(Tag::Audio([&[0xAF, 1][..], &packed].concat()));
    }
    let key = format!("packed?sdkappid={SDKAPPID}&userid=u1&usersig={}", usersig("u1"));
    let publishing = tokio::task::spawn_blocking(move || support::rtmp_client::publish_tags(addr, "push", &key, tags));
    let anchor = gw
        .wait_anchor("packed", "u1", Duration::from_secs(10))
        .await
        .expect("the publisher is in the room");
    let errors = || async {
        let metrics = http_get(gw.http_addr, "/metrics").await.1;
        metrics
            .lines()
            .find(|l| l.starts_with("roomgate_transcode_errors_total{kind=\"audio\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_until_async("ten cut audio messages", Duration::from_secs(20), || async {
        errors().await >= 10
    })
    .await;
    // At most 8192 samples of each: 9 Opus packets of 20 ms a message, 5 of the default 40 ms (all of one would
    // be 2134 or 1067).
    let per_message = 8192 / (usize::from(roomgate::config::DEFAULT_OPUS_FRAME_MS) * 48) + 1;
    let opus = anchor.track(roomgate::media::Codec::Opus).stats().frames as usize;
    assert!(opus <= 10 * per_message, "{opus} Opus packets from ten messages");
    let out = publishing.await.unwrap();
    assert!(out.publish_accepted);
    assert_still_serves(&gw).await;
}
