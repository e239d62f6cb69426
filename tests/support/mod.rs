//! Test support: an in-process gateway on ephemeral ports, real ffmpeg publishers, libav decoders that check
//! what a viewer would get, and a raw RTMP client for streams ffmpeg 5.1 cannot produce.
#![allow(dead_code)]

pub mod cloud;
pub mod nginx;
pub mod receiver;
pub mod redis;
pub mod rtmp_client;
pub mod stun;
pub mod whep_client;
pub mod whip_client;

use ffmpeg_next as ff;
use roomgate::auth::{unix_now, UserSig};
use roomgate::config::{AppConfig, Config};
use roomgate::media::Frame;
use roomgate::room::RoomRef;
use roomgate::room::{Anchor, RoomKey};
use roomgate::Gateway;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SDKAPPID: u64 = 1400000001;
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

pub struct TestGateway {
    pub gw: Gateway,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for TestGateway {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gw
    }
}

pub async fn start_gateway() -> TestGateway {
    start_gateway_with(|_| {}).await
}

pub async fn start_gateway_with(tweak: impl FnOnce(&mut Config)) -> TestGateway {
    start_gateway_in(tempfile::tempdir().unwrap(), tweak).await
}

/// A gateway whose data dir is `dir` (a test that restarts the gateway keeps the dir).
pub async fn start_gateway_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.rtmp.listen = "127.0.0.1:0".parse().unwrap();
    config.rtc.bind = "127.0.0.1".parse().unwrap();
    config.rtc.udp_port = 0;
    config.rtc.tcp_port = 0;
    config.apps = vec![AppConfig {
        sdkappid: SDKAPPID,
        secret_key: KEY.into(),
        name: "test".into(),
        ..Default::default()
    }];
    config.api_keys = vec![roomgate::config::ApiKeyConfig {
        secret_id: cloud::SECRET_ID.into(),
        secret_key: cloud::SECRET_KEY.into(),
        sdkappids: vec![],
    }];
    // Test sources (nginx, stub servers) live on loopback.
    config.pull.allow_private_sources = true;
    tweak(&mut config);
    let gw = Gateway::start(config).await.unwrap();
    TestGateway { gw, dir }
}

pub fn usersig(userid: &str) -> String {
    UserSig::generate(SDKAPPID, KEY, userid, unix_now(), 3600, None)
}

impl TestGateway {
    pub fn push_url(&self, room: &str, userid: &str, sig: &str) -> String {
        format!(
            "rtmp://{}/push/{room}?sdkappid={SDKAPPID}&userid={userid}&usersig={sig}",
            self.rtmp_addr.unwrap()
        )
    }

    pub fn key(&self, room: &str) -> RoomKey {
        RoomKey {
            sdkappid: SDKAPPID,
            room: RoomRef::Str(room.into()),
        }
    }

    /// Wait until anchor `userid` is in `room` (up to `within`).
    pub async fn wait_anchor(&self, room: &str, userid: &str, within: Duration) -> Option<Arc<Anchor>> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(p) = self.hub.participant(&self.key(room), userid) {
                return Some(p);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Stop the gateway (tasks suspended as at process exit) and hand back its data dir.
    pub fn stop(self) -> tempfile::TempDir {
        let TestGateway { mut gw, dir } = self;
        gw.shutdown();
        drop(gw);
        dir
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }
}

/// A real ffmpeg CLI process.
pub struct Ffmpeg {
    child: tokio::process::Child,
}

/// ffmpeg input arguments of a lavfi test source, paced in real time: `size` video at 30 fps and a 44.1 kHz
/// sine, for `seconds`.
pub fn lavfi(size: &str, seconds: u32) -> Vec<String> {
    format!(
        "-re -f lavfi -i testsrc2=size={size}:rate=30 -f lavfi -i sine=frequency=440:sample_rate=44100 -t {seconds}"
    )
    .split(' ')
    .map(String::from)
    .collect()
}

impl Ffmpeg {
    /// `ffmpeg -hide_banner -loglevel error <input> <codec args> -f flv <url>`
    pub fn push(input: &[String], codec_args: &str, url: &str) -> Ffmpeg {
        let mut cmd = tokio::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]).args(input);
        cmd.args(codec_args.split_whitespace()).args(["-f", "flv", url]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ffmpeg {
            child: cmd.spawn().expect("ffmpeg is installed (scripts/install-deps.sh)"),
        }
    }

    /// Wait for ffmpeg to exit (killing it after `within`); returns (success, stderr).
    pub async fn finish(mut self, within: Duration) -> (bool, String) {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.map(|s| s.success()).unwrap_or(false),
            Err(_) => {
                let _ = self.child.kill().await;
                false
            }
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut err)).await;
        }
        (status, err)
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Decode one H.264 access unit (Annex-B) on its own and return the picture size, as a fresh viewer would.
pub fn decode_h264_size(frames: &[Frame]) -> Option<(u32, u32)> {
    decode_h264_size_of(frames.iter().map(|f| &f.data[..]))
}

/// Decode Annex-B access units in order until one yields a picture; its size.
pub fn decode_h264_size_of<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Option<(u32, u32)> {
    roomgate::media::transcode::init_libav();
    let codec = ff::decoder::find(ff::codec::Id::H264)?;
    let mut dec = ff::codec::Context::new_with_codec(codec).decoder().video().ok()?;
    let mut picture = ff::frame::Video::empty();
    for f in frames {
        dec.send_packet(&ff::Packet::copy(f)).ok()?;
        if dec.receive_frame(&mut picture).is_ok() {
            return Some((picture.width(), picture.height()));
        }
    }
    dec.send_eof().ok()?;
    dec.receive_frame(&mut picture)
        .ok()
        .map(|_| (picture.width(), picture.height()))
}

/// Decode Opus packets with libav's decoder; returns (decoded samples per channel, peak amplitude).
pub fn decode_opus(frames: &[Frame]) -> (usize, f32) {
    decode_opus_of(frames.iter().map(|f| &f.data[..]))
}

pub fn decode_opus_of<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> (usize, f32) {
    roomgate::media::transcode::init_libav();
    let codec = ff::decoder::find(ff::codec::Id::OPUS).expect("opus decoder");
    let mut ctx = ff::codec::Context::new_with_codec(codec);
    unsafe {
        let p = ctx.as_mut_ptr();
        (*p).sample_rate = 48000;
        (*p).channels = 2;
        (*p).channel_layout = ff::ChannelLayout::STEREO.bits();
    }
    let mut dec = ctx.decoder().audio().unwrap();
    let mut samples = 0;
    let mut peak = 0f32;
    let mut out = ff::frame::Audio::empty();
    for f in frames {
        dec.send_packet(&ff::Packet::copy(f)).unwrap();
        while dec.receive_frame(&mut out).is_ok() {
            samples += out.samples();
            if let ff::format::Sample::F32(_) = out.format() {
                let n = out.samples() * if out.is_packed() { out.channels() as usize } else { 1 };
                for c in out.data(0)[..n * 4].chunks_exact(4) {
                    peak = peak.max(f32::from_ne_bytes([c[0], c[1], c[2], c[3]]).abs());
                }
            }
        }
    }
    (samples, peak)
}

/// A plain HTTP/1.0 GET (no client library needed), with `Host` the address as a browser on this machine would
/// send it (so it is admin by loopback): returns (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// How every hostile-input test ends: the gateway still answers `/healthz`, takes a normal ffmpeg publisher
/// into a fresh room, and a WHEP viewer decodes its picture.
pub async fn assert_still_serves(gw: &TestGateway) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A refused client's slots may take a moment to come back.
        if let Ok((200, _)) = tokio::time::timeout(Duration::from_secs(5), http_get(gw.http_addr, "/healthz"))
            .await
            .map_err(|_| ())
        {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway answers /healthz");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let room = &format!("still{}", rand::random::<u32>());
    let ff = Ffmpeg::push(
        &lavfi("320x240", 20),
        "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -c:a aac",
        &gw.push_url(room, "cam", &usersig("cam")),
    );
    let anchor = gw
        .wait_anchor(room, "cam", Duration::from_secs(15))
        .await
        .expect("a normal publisher is still accepted");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !anchor.video.has_cached_keyframe() {
        assert!(
            Instant::now() < deadline,
            "the normal publisher's video reaches the room"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = gw.http(&format!("/v2/sub/{SDKAPPID}/{room}?SessionID=viewer"));
    let player = whep_client::play(&url, Some(&usersig("viewer")), whep_client::Transport::Udp)
        .await
        .unwrap_or_else(|e| panic!("a normal viewer is still answered: {e:?}"));
    let frames = tokio::task::spawn_blocking(move || {
        player.collect(Duration::from_secs(10), |g| g.iter().filter(|f| f.video).count() >= 10)
    })
    .await
    .unwrap();
    let size = decode_h264_size_of(frames.iter().filter(|f| f.video).map(|f| &f.data[..]));
    assert_eq!(
        size,
        Some((320, 240)),
        "the viewer decodes the normal publisher's picture"
    );
    ff.kill().await;
}

/// A PrivateMapKey of the test app for `userid` in string room `room` with `privileges` (bits), valid 1 h.
pub fn private_map_key(userid: &str, room: &str, privileges: u32) -> String {
    let grant = roomgate::auth::PrivateMapKey {
        userid: userid.into(),
        sdkappid: SDKAPPID as u32,
        room: RoomRef::Str(room.into()),
        expires_at: (unix_now() + 3600) as u32,
        privileges: roomgate::auth::Privileges(privileges),
    };
    UserSig::generate(SDKAPPID, KEY, userid, unix_now(), 3600, Some(&grant.to_userbuf()))
}
