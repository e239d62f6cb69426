//! Exhaustion against the real binary, started as systemd would leave it (a soft open-file limit of 1024):
//! 2 400 idle TCP connections from 20 addresses spread over the HTTP and ICE-TCP ports. The gateway raises its
//! open-file limit, keeps every cap under it, and still serves a normal ffmpeg publisher and WHEP viewer.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use support::nginx::free_port;
use support::process::{roomgate_config, start_roomgate};
use support::whep_client::{play, Transport};
use support::*;

/// An idle connection to `to` from loopback address 127.0.0.`host`.
async fn idle_from(host: u8, to: SocketAddr) -> Option<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4().ok()?;
    s.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0))).ok()?;
    tokio::time::timeout(Duration::from_secs(5), s.connect(to))
        .await
        .ok()?
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_under_a_1024_file_limit_do_not_stop_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (http, rtmp, rtc) = (free_port(), free_port(), free_port());
    let cfg = roomgate_config(dir.path(), http, rtmp, rtc, 0, "");
    // The soft limit systemd gives services by default; the hard limit stays what the machine allows.
    let mut serve = std::process::Command::new("sh");
    serve
        .arg("-c")
        .arg("ulimit -Sn 1024 && exec \"$0\" serve -c \"$1\"")
        .arg(env!("CARGO_BIN_EXE_roomgate"))
        .arg(&cfg);
    let gw = start_roomgate(serve, SocketAddr::from(([127, 0, 0, 1], http))).await;
    let pid = gw.0.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(soft > 1024, "the gateway raised its open-file limit: {limits}");

    // 2 400 idle connections: 60 per address to each port, from 127.0.0.2 ..= 127.0.0.21.
    let mut idle = Vec::new();
    let mut refused = 0;
    for host in 2..22u8 {
        for port in [http, rtc] {
            let to = SocketAddr::from(([127, 0, 0, 1], port));
            for _ in 0..60 {
                match idle_from(host, to).await {
                    Some(s) => idle.push(s),
                    None => refused += 1,
                }
            }
        }
    }
    assert_eq!(idle.len() + refused, 2400);
    assert!(unsafe { libc::kill(pid as i32, 0) } == 0, "the process is alive");

    // While they are open, a normal publisher and viewer (from 127.0.0.1) are served.
    let room = "after_idle";
    let ff = Ffmpeg::push(
        &lavfi("320x240", 20),
        "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -c:a aac",
        &format!(
            "rtmp://127.0.0.1:{rtmp}/push/{room}?sdkappid={SDKAPPID}&userid=cam&usersig={}",
            usersig("cam")
        ),
    );
    let url = format!("http://127.0.0.1:{http}/v2/sub/{SDKAPPID}/{room}?SessionID=viewer");
    let deadline = Instant::now() + Duration::from_secs(20);
    let player = loop {
        match play(&url, Some(&usersig("viewer")), Transport::Udp).await {
            Ok(p) => break p,
            Err(e) => {
                // 404 until the publisher's anchor is in the room.
                assert!(
                    Instant::now() < deadline && e.status == 404,
                    "a normal viewer is answered: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let frames = tokio::task::spawn_blocking(move || {
        player.collect(Duration::from_secs(15), |g| g.iter().filter(|f| f.video).count() >= 10)
    })
    .await
    .unwrap();
    let size = decode_h264_size_of(frames.iter().filter(|f| f.video).map(|f| &f.data[..]));
    assert_eq!(size, Some((320, 240)), "the viewer decodes the publisher's picture");
    ff.kill().await;
    drop(idle);
    drop(gw);
}
