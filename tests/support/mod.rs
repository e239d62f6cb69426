//! Test support: an in-process gateway on ephemeral ports, real ffmpeg publishers, libav decoders that check
//! what a viewer would get, and a raw RTMP client for streams ffmpeg 5.1 cannot produce.
#![allow(dead_code)]

pub mod cloud;
pub mod nginx;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod rtmp_client;
pub mod rtsp;
pub mod stun;
pub mod whep_client;
pub mod whip_client;

use ffmpeg_next as ff;
use roomgate::auth::{unix_now, UserSig};
use roomgate::config::{AppConfig, Config};
use roomgate::media::Frame;
use roomgate::room::RoomRef;
use roomgate::room::{Anchor, LeaveReason, RoomEvent, RoomKey};
use roomgate::Gateway;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use whep_client::{Received, Transport};

pub const SDKAPPID: u64 = 1400000001;
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

/// ffmpeg codec arguments of a live publisher: constrained baseline x264, a keyframe a second, AAC.
pub const LIVE_X264: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -c:a aac";

/// The same as quickly as x264 goes, for pushes that only need to reach the room.
pub const QUICK_X264: &str = "-c:v libx264 -preset ultrafast -profile:v baseline -g 30 -c:a aac";

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
    config.srt.listen = "127.0.0.1:0".parse().unwrap();
    config.rtc.bind = "127.0.0.1".parse().unwrap();
    config.rtc.udp_port = 0;
    config.rtc.tcp_port = 0;
    config.apps = vec![app(SDKAPPID, KEY, "test")];
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

/// An app `name` with id `sdkappid` and secret `key`, all else default.
pub fn app(sdkappid: u64, key: &str, name: &str) -> AppConfig {
    AppConfig {
        sdkappid,
        secret_key: key.into(),
        name: name.into(),
        ..Default::default()
    }
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

    /// The WHEP URL at which `viewer` plays `room` of the test app.
    pub fn whep_url(&self, room: &str, viewer: &str) -> String {
        self.http(&format!("/v2/sub/{SDKAPPID}/{room}?SessionID={viewer}"))
    }

    /// The WHIP URL at which `user` publishes into `room` of the test app.
    pub fn whip_url(&self, room: &str, user: &str) -> String {
        self.http(&format!("/v2/pub/{SDKAPPID}/{room}?SessionID={user}"))
    }

    /// ffmpeg pushing `seconds` of `size` lavfi media, encoded with `codec_args`, as `user` into `room`.
    pub fn push_lavfi(&self, room: &str, user: &str, size: &str, seconds: u32, codec_args: &str) -> Ffmpeg {
        Ffmpeg::push(
            &lavfi(size, seconds),
            codec_args,
            &self.push_url(room, user, &usersig(user)),
        )
    }

    /// `push_lavfi`, once `user` is an anchor of `room` (up to 20 s): the publisher and the anchor.
    pub async fn push_anchor(
        &self,
        room: &str,
        user: &str,
        size: &str,
        seconds: u32,
        codec_args: &str,
    ) -> (Ffmpeg, Arc<Anchor>) {
        let ff = self.push_lavfi(room, user, size, seconds, codec_args);
        let anchor = self
            .wait_anchor(room, user, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{user} is an anchor of {room}"));
        (ff, anchor)
    }

    /// Push `seconds` of 320x240 media as `user` into `room` (`QUICK_X264`) and wait for ffmpeg to end well.
    pub async fn push_briefly(&self, room: &str, user: &str, seconds: u32) {
        let ff = self.push_lavfi(room, user, "320x240", seconds, QUICK_X264);
        let (ok, err) = ff.finish(Duration::from_secs(seconds as u64 + 30)).await;
        assert!(ok, "ffmpeg: {err}");
    }

    /// Wait until `user` is an anchor of `room` and its video has a cached keyframe (each up to `within`).
    pub async fn wait_video(&self, room: &str, user: &str, within: Duration) -> Arc<Anchor> {
        let anchor = self
            .wait_anchor(room, user, within)
            .await
            .unwrap_or_else(|| panic!("{user} is an anchor of {room}"));
        wait_until("the anchor's video reaches the room", within, || {
            anchor.video.has_cached_keyframe()
        })
        .await;
        anchor
    }

    /// Wait until `user` is no longer an anchor of `room` (up to `within`).
    pub async fn wait_left(&self, room: &str, user: &str, within: Duration) {
        let key = self.key(room);
        wait_until("the anchor left", within, || self.hub.participant(&key, user).is_none()).await;
    }

    /// Wait until `room` is gone (its last anchor left; up to `within`).
    pub async fn wait_room_gone(&self, room: &str, within: Duration) {
        let key = self.key(room);
        wait_until("the room is gone", within, || self.hub.room(&key).is_none()).await;
    }

    /// Play `room` over UDP as `viewer` (with its UserSig) and collect what arrives until there are `video` video
    /// and `audio` audio frames, or `within` passes.
    pub async fn watch(&self, room: &str, viewer: &str, within: Duration, video: usize, audio: usize) -> Vec<Received> {
        let player = whep_client::play(&self.whep_url(room, viewer), Some(&usersig(viewer)), Transport::Udp)
            .await
            .unwrap_or_else(|e| panic!("{viewer} is answered: {e:?}"));
        player
            .gather(within, move |g| whep_client::at_least(g, video, audio))
            .await
    }
}

/// How `url`, a WHIP endpoint (`publish`) or a WHEP one, refuses a client offering with `token`; panics if it
/// accepts.
pub async fn refused_offer(url: &str, token: Option<&str>, publish: bool) -> whep_client::Refused {
    if publish {
        whip_client::publish(url, token, whip_client::MediaSpec::default())
            .await
            .err()
            .expect("the publish is refused")
    } else {
        whep_client::refusal(url, token).await
    }
}

/// What a WHIP (`publish`) or WHEP endpoint `url` says to a client without its own UserSig: 401 without a token,
/// and 401 naming the user that a UserSig of `other` was issued for.
pub async fn assert_needs_own_usersig(url: &str, other: &str, publish: bool) {
    let e = refused_offer(url, None, publish).await;
    assert_eq!(e.status, 401, "{}", e.body);
    let e = refused_offer(url, Some(&usersig(other)), publish).await;
    assert_eq!(e.status, 401);
    assert!(e.body.contains("issued for user id"), "{}", e.body);
}

/// A config tweak: app 0 sends its callbacks to `/trtc/callback` on loopback `port`, signed with `key`.
pub fn callbacks_to(port: u16, key: &str) -> impl FnOnce(&mut Config) + '_ {
    move |c| {
        c.apps[0].callback_url = format!("http://127.0.0.1:{port}/trtc/callback");
        c.apps[0].callback_key = key.into();
    }
}

/// The reasons of the `AnchorLeft` events that `events` (from `hub.observe()`) received so far, in order.
pub fn left_reasons(events: &mut tokio::sync::mpsc::UnboundedReceiver<RoomEvent>) -> Vec<LeaveReason> {
    let mut reasons = vec![];
    while let Ok(e) = events.try_recv() {
        if let RoomEvent::AnchorLeft { reason, .. } = e {
            reasons.push(reason);
        }
    }
    reasons
}

/// Poll `cond` every 50 ms until it holds; fail saying `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `wait_until` for a condition that must be awaited (an HTTP read, say).
pub async fn wait_until_async<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POST `body` as JSON to `url` (with `bearer`, if any); the status and the JSON answer (null if none).
pub async fn post_json(url: &str, bearer: Option<&str>, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().post(url).json(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// POST `body` to `url` with `token` as bearer and no content type (not an offer a client library would make);
/// the status.
pub async fn post_raw(url: &str, token: &str, body: &'static str) -> u16 {
    let r = reqwest::Client::new().post(url).bearer_auth(token).body(body);
    r.send().await.unwrap().status().as_u16()
}

/// DELETE `url` (a WHIP/WHEP session, say); the status.
pub async fn http_delete(url: &str) -> u16 {
    reqwest::Client::new()
        .delete(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// GET `path` from `addr` and parse the body as JSON (null if it is not); the status too.
pub async fn get_json(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(addr, path).await;
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
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
        Ffmpeg::push_as(input, codec_args, "flv", url)
    }

    /// `ffmpeg -hide_banner -loglevel error <input> <codec args> -f <format> <url>`
    pub fn push_as(input: &[String], codec_args: &str, format: &str, url: &str) -> Ffmpeg {
        let mut cmd = tokio::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]).args(input);
        cmd.args(codec_args.split_whitespace()).args(["-f", format, url]);
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
    let ff = gw.push_lavfi(room, "cam", "320x240", 20, LIVE_X264);
    gw.wait_video(room, "cam", Duration::from_secs(15)).await;
    let frames = gw.watch(room, "viewer", Duration::from_secs(10), 10, 0).await;
    let size = decode_h264_size_of(whep_client::video_of(&frames));
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
