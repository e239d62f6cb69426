//! WHEP playback of RTMP anchors through the WebRTC engine, with a str0m test player.

mod support;

use roomgate::room::{Anchor, RoomKey, SourceKind};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use str0m::media::{Direction, MediaKind};
use support::whep_client;
use support::whep_client::{audio_of, play, play_with, refusal, video_of, Received, Transport, WhepPlayer};
use support::*;

const CBR_3M_1S_GOP: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -b:v 3M -minrate 3M -maxrate 3M -bufsize 1M -x264-params nal-hrd=cbr -c:a aac";

const BASELINE_10S_GOP: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 300 -keyint_min 300 -sc_threshold 0 -c:a aac -b:a 96k";

/// A player of `room` as `viewer` (with its UserSig) over `transport`.
async fn viewing(gw: &TestGateway, room: &str, viewer: &str, transport: Transport) -> WhepPlayer {
    play(&gw.whep_url(room, viewer), Some(&usersig(viewer)), transport)
        .await
        .unwrap()
}

/// The gateway's ICE-TCP address.
fn ice_tcp(gw: &TestGateway) -> std::net::SocketAddr {
    gw.rtc.as_ref().unwrap().addrs.tcp.unwrap()
}

/// The video frames from the first IDR picture on.
fn from_first_idr(frames: &[Received]) -> Vec<&[u8]> {
    frames
        .iter()
        .filter(|f| f.video)
        .skip_while(|f| idr_count(std::slice::from_ref(*f)) == 0)
        .map(|f| &f.data[..])
        .collect()
}

/// The CORS preflight (OPTIONS) of `url`.
async fn preflight(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, url)
        .send()
        .await
        .unwrap()
}

async fn pushing(gw: &TestGateway, room: &str, user: &str, seconds: u32) -> (Ffmpeg, Arc<Anchor>) {
    let ff = gw.push_lavfi(room, user, "640x360", seconds, BASELINE_10S_GOP);
    let p = gw
        .wait_anchor(room, user, Duration::from_secs(15))
        .await
        .expect("anchor");
    wait_until("media flows", Duration::from_secs(15), || {
        p.video.has_cached_keyframe() && p.audio.has_media()
    })
    .await;
    (ff, p)
}

/// A pushed anchor and a UDP player that already receives its video.
async fn watching(gw: &TestGateway, room: &str) -> (Ffmpeg, Arc<Anchor>, WhepPlayer) {
    let (ff, anchor) = pushing(gw, room, "cam", 40).await;
    let (first, player) = viewing(gw, room, "v1", Transport::Udp)
        .await
        .gather_keep(Duration::from_secs(8), |g| g.iter().any(|f| f.video))
        .await;
    assert!(first.iter().any(|f| f.video), "video arrives");
    (ff, anchor, player)
}

/// Play and check what a viewer sees: a picture of the right size at once (from the GOP cache, before the
/// source's next keyframe) and audible Opus.
async fn assert_plays(gw: &TestGateway, room: &str, transport: Transport) {
    let (ff, anchor) = pushing(gw, room, "cam", 40).await;
    // Join mid-GOP: the source sends its next keyframe only 10 s after the first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let player = viewing(gw, room, "viewer1", transport).await;
    assert!(
        player.answer_sdp.contains("profile-level-id=42c01e"),
        "answered with the anchor's profile: {}",
        player.answer_sdp
    );
    assert!(player.answer_sdp.contains("packetization-mode=1"));
    // No transport-wide congestion control: there is no bitrate to adapt, and it costs a record per packet sent.
    assert!(
        !player.answer_sdp.contains("transport-wide-cc"),
        "{}",
        player.answer_sdp
    );
    let frames = player
        .gather(Duration::from_secs(8), |g| {
            g.iter().filter(|f| !f.video).count() >= 100 && g.iter().any(|f| f.video)
        })
        .await;
    let v = video_of(&frames);
    assert!(!v.is_empty(), "video arrives");
    let first_nals: Vec<Vec<u8>> = v
        .iter()
        .take(3)
        .map(|f| {
            roomgate::media::h264::annex_b_nals(f)
                .map(|n| n.first().map_or(0, |b| b & 0x1F))
                .collect()
        })
        .collect();
    assert_eq!(
        decode_h264_size_of(v.iter().copied().take(1)),
        Some((640, 360)),
        "the first video frame decodes on its own (NAL types of the first frames: {first_nals:?}, first after a gap: {})",
        !frames.iter().find(|f| f.video).unwrap().contiguous
    );
    assert_eq!(
        anchor.video.stats().keyframes,
        1,
        "the picture came from the cache, not from a new source keyframe"
    );
    let (samples, peak) = decode_opus_of(audio_of(&frames));
    assert!(
        samples >= 90 * 960 && peak > 0.05,
        "Opus decodes to the sine: {samples} samples, peak {peak}"
    );
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_push_plays_over_whep_udp_from_the_gop_cache() {
    let gw = start_gateway().await;
    assert_plays(&gw, "wroom", Transport::Udp).await;
}

/// `make run`'s default: the WebRTC sockets bound to 0.0.0.0, candidates on the machine's own addresses. Packets
/// arrive addressed to a candidate the socket does not name; they must still reach their session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_bound_to_every_address_serves_viewers() {
    let gw = start_gateway_with(|c| c.rtc.bind = "0.0.0.0".parse().unwrap()).await;
    assert_plays(&gw, "anyroom", Transport::Udp).await;
    let tcp = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), ice_tcp(&gw).port());
    assert_plays(&gw, "anyroom2", Transport::Tcp(tcp)).await;
}

/// Sessions are spread over `rtc.workers` engine shards behind the one UDP and TCP port: viewers whose sessions
/// land on each of three shards, over UDP and over ICE-TCP, all decode the anchor, and one that leaves does not
/// disturb the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_every_engine_shard_play_over_udp_and_tcp() {
    let gw = start_gateway_with(|c| c.rtc.workers = 3).await;
    let tcp = ice_tcp(&gw);
    let (ff, _anchor) = pushing(&gw, "shards", "cam", 40).await;
    let mut players = Vec::new();
    for (i, transport) in [
        Transport::Udp,
        Transport::Udp,
        Transport::Tcp(tcp),
        Transport::Udp,
        Transport::Tcp(tcp),
    ]
    .into_iter()
    .enumerate()
    {
        players.push(viewing(&gw, "shards", &format!("v{i}"), transport).await);
    }
    // The first leaves; the others keep playing.
    drop(players.remove(0));
    for (i, p) in players.into_iter().enumerate() {
        let frames = p
            .gather(Duration::from_secs(10), |g| whep_client::at_least(g, 20, 20))
            .await;
        assert_eq!(
            decode_h264_size_of(video_of(&frames)),
            Some((640, 360)),
            "viewer {} decodes the anchor",
            i + 1
        );
        assert!(
            frames.iter().filter(|f| !f.video).count() >= 20,
            "viewer {} hears it",
            i + 1
        );
    }
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_viewer_plays_without_udp() {
    let gw = start_gateway().await;
    assert_plays(&gw, "troom", Transport::Tcp(ice_tcp(&gw))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_of_two_rooms_and_delete_frees_the_session() {
    let gw = start_gateway().await;
    let (ff1, _) = pushing(&gw, "ra", "a1", 30).await;
    let (ff2, _) = pushing(&gw, "rb", "b1", 30).await;
    let p1 = viewing(&gw, "ra", "v1", Transport::Udp).await;
    let p2 = viewing(&gw, "rb", "v2", Transport::Udp).await;
    let engine = gw.rtc.clone().unwrap();
    let (loc1, p1, p2) = tokio::task::spawn_blocking(move || {
        for p in [&p1, &p2] {
            let got = p.collect(Duration::from_secs(8), |g| {
                g.iter().any(|f| f.video) && g.iter().any(|f| !f.video)
            });
            assert_eq!(
                decode_h264_size_of(video_of(&got).into_iter().take(1)),
                Some((640, 360))
            );
        }
        (p1.location.clone(), p1, p2)
    })
    .await
    .unwrap();
    assert_eq!(engine.session_count(), 2, "both viewers play");
    assert_eq!(http_delete(&gw.http(&loc1)).await, 200);
    wait_until("DELETE ends the session", Duration::from_secs(5), || {
        engine.session_count() == 1
    })
    .await;
    let (_, metrics) = http_get(gw.http_addr, "/metrics").await;
    assert!(
        metrics.contains("roomgate_rtc_sessions 1"),
        "metrics show one session left"
    );
    assert_eq!(http_delete(&gw.http(&loc1)).await, 404);
    drop((p1, p2));
    ff1.kill().await;
    ff2.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_errors_say_what_is_wrong() {
    let gw = start_gateway_with(|c| {
        c.rtc.ice_servers = vec![roomgate::config::IceServer {
            urls: vec!["turn:turn.example.net:3478?transport=udp".into()],
            username: "u".into(),
            credential: "p".into(),
        }];
        c.apps.push(roomgate::config::AppConfig {
            public_playback: true,
            ..app(1400000002, "other", "public")
        });
    })
    .await;
    // An anchor without media is enough for signalling.
    let _a = gw.hub.join(gw.key("er"), "cam", SourceKind::Rtmp);
    let public = RoomKey {
        sdkappid: 1400000002,
        ..gw.key("pub")
    };
    let _b = gw.hub.join(public, "cam", SourceKind::Rtmp);
    let url = gw.whep_url("er", "v1");

    assert_needs_own_usersig(&url, "someone_else", false).await;
    let e = refusal(&gw.whep_url("nope", "v1"), Some(&usersig("v1"))).await;
    assert_eq!(e.status, 404);
    let e = refusal(&format!("{url}&anchor=ghost"), Some(&usersig("v1"))).await;
    assert_eq!(e.status, 404);
    assert!(e.body.contains("ghost"));
    let e = refusal(&gw.http("/v2/sub/1400999999/er?SessionID=v1"), Some(&usersig("v1"))).await;
    assert_eq!(e.status, 404);
    assert!(e.body.contains("unknown sdkappid"));
    // Offers without video or without audio: 406 naming what is missing.
    for (video, audio, missing) in [(false, true, "H.264"), (true, false, "Opus")] {
        let e = play_with(&url, Some(&usersig("v1")), Transport::Udp, video, audio)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, 406);
        assert!(e.body.contains(missing), "{}", e.body);
    }
    assert_eq!(post_raw(&url, &usersig("v1"), "not sdp").await, 400);
    // An offer whose video or audio m-line does not receive: 406 at once (not a session that could never send).
    for (video_dir, audio_dir, which) in [
        (Direction::SendOnly, Direction::RecvOnly, "video"),
        (Direction::RecvOnly, Direction::Inactive, "audio"),
    ] {
        whep_client::install_crypto();
        let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, video_dir, None, None, None);
        api.add_media(MediaKind::Audio, audio_dir, None, None, None);
        let (offer, _) = api.apply().expect("an offer");
        let e = whep_client::post_offer(&url, Some(&usersig("v1")), offer.to_sdp_string(), "WHEP POST")
            .await
            .err()
            .expect("refused");
        assert_eq!(e.status, 406, "{}", e.body);
        assert!(
            e.body.contains("track_not_received") && e.body.contains(which),
            "{}",
            e.body
        );
    }

    // public_playback: no token needed; Link lists the configured TURN server, but no credential goes to an
    // unauthenticated viewer.
    let ok = play(
        &gw.http("/v2/sub/1400000002/pub?SessionID=anyone"),
        None,
        Transport::Udp,
    )
    .await
    .unwrap();
    assert!(ok.location.starts_with("/v2/sub/session/"));
    assert!(!ok.etag.is_empty());
    assert_eq!(
        ok.links,
        vec!["<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"".to_string()]
    );
    // "er" has an anchor without media: the play itself is answered (201) with credentials.
    let authed = viewing(&gw, "er", "v1", Transport::Udp).await;
    assert_eq!(authed.links, vec!["<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\"".to_string()]);

    // CORS preflight for browser players.
    let pre = preflight(&url).await;
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    assert!(pre.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("Location"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_honours_private_map_keys_and_gives_turn_credentials_only_to_authenticated_viewers() {
    use roomgate::auth::Privileges;
    let gw = start_gateway_with(|c| {
        c.apps[0].require_private_map_key = true;
        c.rtc.turn_secret = "north".into();
        c.rtc.ice_servers = vec![roomgate::config::IceServer {
            urls: vec![
                "turn:turn.example.net:3478?transport=udp".into(),
                "stun:stun.example.net".into(),
            ],
            username: String::new(),
            credential: String::new(),
        }];
    })
    .await;
    let _a = gw.hub.join(gw.key("pmk"), "cam", SourceKind::Rtmp);
    let url = gw.whep_url("pmk", "v1");
    // As TRTC asks of its viewers: a UserSig alone is not enough on such an app.
    let e = refusal(&url, Some(&usersig("v1"))).await;
    assert_eq!(e.status, 403, "{}", e.body);
    assert!(e.body.contains("privatemapkey"), "{}", e.body);
    // A grant to publish (no receive bits) or for another room does not let one watch.
    for (room, privileges) in [("pmk", Privileges::PUBLISH), ("elsewhere", Privileges::PLAY)] {
        let grant = private_map_key("v1", room, privileges);
        let e = refusal(&format!("{url}&privatemapkey={grant}"), Some(&usersig("v1"))).await;
        assert_eq!(e.status, 403, "{}", e.body);
    }
    let grant = private_map_key("v1", "pmk", Privileges::PLAY);
    let ok = play(
        &format!("{url}&privatemapkey={grant}"),
        Some(&usersig("v1")),
        Transport::Udp,
    )
    .await
    .unwrap();
    // The 201 answer carries TURN REST credentials made for this viewer; STUN needs none.
    let turn = ok.links.iter().find(|l| l.contains("turn:")).expect("TURN listed");
    let username = turn.split("username=\"").nth(1).unwrap().split('"').next().unwrap();
    let credential = turn.split("credential=\"").nth(1).unwrap().split('"').next().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "v1");
    assert!(
        expiry.parse::<u64>().unwrap() > roomgate::auth::unix_now() + 3600,
        "{username}"
    );
    assert_eq!(
        (username.to_string(), credential.to_string()),
        roomgate::auth::turn::rest_credential("north", "v1", expiry.parse().unwrap())
    );
    assert!(ok
        .links
        .iter()
        .any(|l| l == "<stun:stun.example.net>; rel=\"ice-server\""));
    // OPTIONS, which anyone may send, lists the servers without any credential.
    let pre = preflight(&url).await;
    let links: Vec<_> = pre
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links.iter().all(|l| !l.contains("credential")), "{links:?}");
}

/// IDR pictures (NAL type 5) among received video frames.
fn idr_count(frames: &[Received]) -> usize {
    frames
        .iter()
        .filter(|f| f.video && roomgate::media::h264::annex_b_nals(&f.data).any(|n| !n.is_empty() && n[0] & 0x1F == 5))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_pli_is_answered_from_the_gop_cache() {
    let gw = start_gateway().await;
    let (ff, anchor) = pushing(&gw, "pli", "cam", 30).await;
    let player = viewing(&gw, "pli", "v1", Transport::Udp).await;
    let (before, after, player) = tokio::task::spawn_blocking(move || {
        let before = player.collect(Duration::from_secs(8), |g| g.iter().filter(|f| f.video).count() >= 30);
        player.controls.request_keyframe.store(true, Ordering::Relaxed);
        let after = player.collect(Duration::from_secs(3), |g| {
            idr_count(g) >= 1 && g.iter().filter(|f| f.video).count() >= 30
        });
        (before, after, player)
    })
    .await
    .unwrap();
    assert_eq!(idr_count(&before), 1, "joined on the cached keyframe");
    assert!(idr_count(&after) >= 1, "the PLI was answered with a keyframe");
    assert_eq!(
        anchor.video.stats().keyframes,
        1,
        "the source sent no new keyframe: the answer came from the cache"
    );
    let all: Vec<&Received> = before.iter().chain(after.iter()).filter(|f| f.video).collect();
    for w in all.windows(2) {
        assert!(
            w[1].rtp_time > w[0].rtp_time,
            "RTP time keeps increasing across the replay"
        );
    }
    assert_eq!(decode_h264_size_of(from_first_idr(&after)), Some((640, 360)));
    drop(player);
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tcp_viewer_skips_to_a_keyframe_and_slows_nobody() {
    let gw = start_gateway().await;
    // 3 Mbit/s constant rate with a 1 s GOP, so a stalled viewer overflows its buffers quickly.
    let (ff, anchor) = gw.push_anchor("bp", "cam", "640x360", 40, CBR_3M_1S_GOP).await;
    let tcp = Transport::Tcp(ice_tcp(&gw));
    let stalled = viewing(&gw, "bp", "v1", tcp).await;
    let healthy = viewing(&gw, "bp", "v2", tcp).await;
    let anchor2 = anchor.clone();
    let (healthy_during, published_during, stalled_after, healthy_last) = tokio::task::spawn_blocking(move || {
        let warm = |p: &WhepPlayer| p.collect(Duration::from_secs(8), |g| g.iter().filter(|f| f.video).count() >= 15);
        assert!(!warm(&stalled).is_empty() && !warm(&healthy).is_empty());
        stalled.controls.paused.store(true, Ordering::Relaxed);
        let published_before = anchor2.video.stats().frames;
        let during = healthy.collect(Duration::from_secs(4), |_| false);
        let published_during = anchor2.video.stats().frames - published_before;
        stalled.controls.paused.store(false, Ordering::Relaxed);
        // Three seconds after it reads again: what its own kernel receive buffer held during the pause has
        // long been read, so any lag left would be the gateway's.
        let after = stalled.collect(Duration::from_secs(3), |_| false);
        let healthy_last = healthy.collect(Duration::from_millis(500), |_| false);
        (during, published_during, after, healthy_last)
    })
    .await
    .unwrap();
    let healthy_video = healthy_during.iter().filter(|f| f.video).count() as u64;
    assert!(
        published_during >= 90,
        "the publisher kept going ({published_during} frames in 4 s)"
    );
    assert!(
        healthy_video + 10 >= published_during,
        "the other viewer got every frame: {healthy_video} of {published_during}"
    );
    let (_, metrics) = http_get(gw.http_addr, "/metrics").await;
    assert!(
        metrics.contains("roomgate_rtc_send_dropped_total{proto=\"tcp\"}"),
        "the stalled viewer's packets were dropped"
    );
    assert!(
        idr_count(&stalled_after) >= 1,
        "the stalled viewer resumes at a keyframe"
    );
    assert_eq!(decode_h264_size_of(from_first_idr(&stalled_after)), Some((640, 360)));
    // It is back on the live edge, not replaying seconds of stale media: compare what each viewer had received
    // at the same instant (the healthy viewer's frames wait in its channel, so none is missed).
    let stalled_last = stalled_after.iter().filter(|f| f.video).max_by_key(|f| f.at).unwrap();
    let healthy_then = healthy_last
        .iter()
        .filter(|f| f.video && f.at <= stalled_last.at)
        .map(|f| f.rtp_time)
        .max()
        .expect("the healthy viewer received frames meanwhile");
    let behind_ms = healthy_then.saturating_sub(stalled_last.rtp_time) / 90;
    eprintln!("the resumed viewer is {behind_ms} ms behind live");
    assert!(behind_ms < 1000, "the resumed viewer is {behind_ms} ms behind live");
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restart_over_patch_switches_the_session_to_new_credentials() {
    let gw = start_gateway().await;
    let (ff, _, player) = watching(&gw, "ir").await;
    let old_ufrag = player.etag.trim_matches('"').to_string();
    let udp = gw.rtc.as_ref().unwrap().addrs.udp;
    let client = str0m::IceCreds {
        ufrag: "newclientfrag".into(),
        pass: "newclientpassword0123456789".into(),
    };
    let http = reqwest::Client::new();
    let patch = |etag: &str| {
        http.patch(gw.http(&player.location))
            .header("Content-Type", "application/trickle-ice-sdpfrag")
            .header("If-Match", etag.to_string())
            .body(format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", client.ufrag, client.pass))
    };
    assert_eq!(
        patch("\"stale\"").send().await.unwrap().status(),
        412,
        "a stale ETag is refused"
    );
    let resp = patch(&player.etag).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let new_etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, player.etag);
    let frag = resp.text().await.unwrap();
    let attr = |n: &str| frag.lines().find_map(|l| l.strip_prefix(n)).unwrap().trim().to_string();
    let server = str0m::IceCreds {
        ufrag: attr("a=ice-ufrag:"),
        pass: attr("a=ice-pwd:"),
    };
    assert!(frag.contains("a=candidate:"));
    assert_eq!(new_etag.trim_matches('"'), server.ufrag);
    // At once, over ICE-TCP too: a new TCP connection's first STUN names the session by the new ufrag.
    let tcp = ice_tcp(&gw);
    let (s1, c1) = (server.clone(), client.clone());
    let tcp_ok = tokio::task::spawn_blocking(move || support::stun::probe_tcp(tcp, &s1.ufrag, &c1.ufrag, &s1.pass))
        .await
        .unwrap();
    assert!(
        tcp_ok,
        "an ICE-TCP check with the new credentials right after the PATCH is answered"
    );
    // The gateway now answers connectivity checks made with the new credentials (from a new address, as after
    // a network change) and no longer routes the old ufrag.
    let (s2, c2) = (server.clone(), client.clone());
    let (new_ok, bad_pass, old_routed) = tokio::task::spawn_blocking(move || {
        (
            support::stun::probe(udp, &s2.ufrag, &c2.ufrag, &s2.pass),
            support::stun::probe(udp, &s2.ufrag, &c2.ufrag, "wrong-password-wrong-password"),
            support::stun::probe(udp, &old_ufrag, &c2.ufrag, &s2.pass),
        )
    })
    .await
    .unwrap();
    assert!(new_ok, "a check signed with the new password is answered");
    assert!(!bad_pass, "a check with a wrong password is not");
    assert!(!old_routed, "the old ufrag no longer reaches the session");
    // The player switches too and keeps playing.
    *player.controls.restart.lock().unwrap() = Some((client, server));
    let late = player
        .gather(Duration::from_secs(3), |g| g.iter().filter(|f| f.video).count() > 20)
        .await;
    assert!(
        late.iter().filter(|f| f.video).count() > 20,
        "video still flows after the restart"
    );
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_retransmitted_on_nack() {
    let gw = start_gateway().await;
    let (ff, anchor, player) = watching(&gw, "nack").await;
    let (got, published, dropped) = tokio::task::spawn_blocking(move || {
        player.controls.rtp_loss_percent.store(5, Ordering::Relaxed);
        let before = anchor.video.stats().frames;
        let got = player.collect(Duration::from_secs(6), |_| false);
        let dropped = player.controls.rtp_dropped.load(Ordering::Relaxed);
        (got, anchor.video.stats().frames - before, dropped)
    })
    .await
    .unwrap();
    let video: Vec<&Received> = got.iter().filter(|f| f.video).collect();
    let gaps = video.iter().filter(|f| !f.contiguous).count();
    eprintln!(
        "dropped {dropped} RTP packets; {} of {published} frames, {gaps} after a gap",
        video.len()
    );
    assert!(dropped > 50, "the player lost packets ({dropped})");
    // Retransmissions fill every hole: frames arrive complete and in sequence.
    assert!(
        video.len() as u64 + 5 >= published,
        "the viewer got {} of {published} frames",
        video.len()
    );
    assert_eq!(gaps, 0, "no frame followed a gap");
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_listing_counts_every_viewer() {
    let gw = start_gateway().await;
    let (ff, anchor) = pushing(&gw, "cnt", "cam", 30).await;
    let mut players = Vec::new();
    for v in ["c1", "c2", "c3"] {
        players.push(viewing(&gw, "cnt", v, Transport::Udp).await);
    }
    wait_until("three viewers joined", Duration::from_secs(15), || {
        anchor.viewers() >= 3
    })
    .await;
    let (_, room) = get_json(gw.http_addr, &format!("/v1/rooms/{SDKAPPID}/cnt")).await;
    assert_eq!(room["anchors"][0]["viewers"], 3, "{room}");
    drop(players);
    ff.kill().await;
}
