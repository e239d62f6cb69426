//! WHEP playback of RTMP anchors through the WebRTC engine, with a str0m test player.

mod support;

use roomgate::room::RoomRef;
use roomgate::room::{RoomKey, SourceKind};
use std::time::{Duration, Instant};
use support::whep_client::{play, play_with, Received, Transport, WhepPlayer};
use support::*;

const BASELINE_10S_GOP: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 300 -keyint_min 300 -sc_threshold 0 -c:a aac -b:a 96k";

fn whep_url(gw: &TestGateway, room: &str, viewer: &str) -> String {
    gw.http(&format!("/v2/sub/{SDKAPPID}/{room}?SessionID={viewer}"))
}

fn video(frames: &[Received]) -> Vec<&[u8]> {
    frames.iter().filter(|f| f.video).map(|f| &f.data[..]).collect()
}

async fn pushing(
    gw: &TestGateway,
    room: &str,
    user: &str,
    seconds: u32,
) -> (Ffmpeg, std::sync::Arc<roomgate::room::Anchor>) {
    let ff = Ffmpeg::push(
        &lavfi("640x360", seconds),
        BASELINE_10S_GOP,
        &gw.push_url(room, user, &usersig(user)),
    );
    let p = gw
        .wait_anchor(room, user, Duration::from_secs(15))
        .await
        .expect("anchor");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !p.video.has_cached_keyframe() || !p.audio.has_media() {
        assert!(Instant::now() < deadline, "media flows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (ff, p)
}

/// A pushed anchor and a UDP player that already receives its video.
async fn watching(gw: &TestGateway, room: &str) -> (Ffmpeg, std::sync::Arc<roomgate::room::Anchor>, WhepPlayer) {
    let (ff, anchor) = pushing(gw, room, "cam", 40).await;
    let player = play(&whep_url(gw, room, "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    let player = tokio::task::spawn_blocking(move || {
        let first = player.collect(Duration::from_secs(8), |g| g.iter().any(|f| f.video));
        assert!(first.iter().any(|f| f.video), "video arrives");
        player
    })
    .await
    .unwrap();
    (ff, anchor, player)
}

/// Play and check what a viewer sees: a picture of the right size at once (from the GOP cache, before the
/// source's next keyframe) and audible Opus.
async fn assert_plays(gw: &TestGateway, room: &str, transport: Transport) {
    let (ff, anchor) = pushing(gw, room, "cam", 40).await;
    // Join mid-GOP: the source sends its next keyframe only 10 s after the first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let player = play(&whep_url(gw, room, "viewer1"), Some(&usersig("viewer1")), transport)
        .await
        .unwrap();
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
    let frames = tokio::task::spawn_blocking(move || {
        let got = player.collect(Duration::from_secs(8), |g| {
            g.iter().filter(|f| !f.video).count() >= 100 && g.iter().any(|f| f.video)
        });
        (got, player)
    })
    .await
    .unwrap()
    .0;
    let v = video(&frames);
    assert!(!v.is_empty(), "video arrives");
    let first_nals: Vec<Vec<u8>> = frames
        .iter()
        .filter(|f| f.video)
        .take(3)
        .map(|f| {
            roomgate::media::h264::annex_b_nals(&f.data)
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
    let (samples, peak) = decode_opus_of(frames.iter().filter(|f| !f.video).map(|f| &f.data[..]));
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
    let tcp = gw.rtc.as_ref().unwrap().addrs.tcp.unwrap();
    let tcp = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), tcp.port());
    assert_plays(&gw, "anyroom2", Transport::Tcp(tcp)).await;
}

/// Sessions are spread over `rtc.workers` engine shards behind the one UDP and TCP port: viewers whose sessions
/// land on each of three shards, over UDP and over ICE-TCP, all decode the anchor, and one that leaves does not
/// disturb the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_every_engine_shard_play_over_udp_and_tcp() {
    let gw = start_gateway_with(|c| c.rtc.workers = 3).await;
    let tcp = gw.rtc.as_ref().unwrap().addrs.tcp.unwrap();
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
        let viewer = format!("v{i}");
        let p = play(&whep_url(&gw, "shards", &viewer), Some(&usersig(&viewer)), transport)
            .await
            .unwrap();
        players.push(p);
    }
    // The first leaves; the others keep playing.
    drop(players.remove(0));
    for (i, p) in players.into_iter().enumerate() {
        let frames = tokio::task::spawn_blocking(move || {
            p.collect(Duration::from_secs(10), |g| {
                g.iter().filter(|f| f.video).count() >= 20 && g.iter().filter(|f| !f.video).count() >= 20
            })
        })
        .await
        .unwrap();
        assert_eq!(
            decode_h264_size_of(frames.iter().filter(|f| f.video).map(|f| &f.data[..])),
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
    let tcp = gw.rtc.as_ref().unwrap().addrs.tcp.unwrap();
    assert_plays(&gw, "troom", Transport::Tcp(tcp)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_viewers_of_two_rooms_and_delete_frees_the_session() {
    let gw = start_gateway().await;
    let (ff1, _) = pushing(&gw, "ra", "a1", 30).await;
    let (ff2, _) = pushing(&gw, "rb", "b1", 30).await;
    let p1 = play(&whep_url(&gw, "ra", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    let p2 = play(&whep_url(&gw, "rb", "v2"), Some(&usersig("v2")), Transport::Udp)
        .await
        .unwrap();
    let engine = gw.rtc.clone().unwrap();
    let (loc1, p1, p2) = tokio::task::spawn_blocking(move || {
        for p in [&p1, &p2] {
            let got = p.collect(Duration::from_secs(8), |g| {
                g.iter().any(|f| f.video) && g.iter().any(|f| !f.video)
            });
            assert_eq!(decode_h264_size_of(video(&got).into_iter().take(1)), Some((640, 360)));
        }
        (p1.location.clone(), p1, p2)
    })
    .await
    .unwrap();
    assert_eq!(engine.session_count(), 2, "both viewers play");
    let del = reqwest::Client::new().delete(gw.http(&loc1)).send().await.unwrap();
    assert_eq!(del.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.session_count() != 1 {
        assert!(Instant::now() < deadline, "DELETE ends the session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, metrics) = http_get(gw.http_addr, "/metrics").await;
    assert!(
        metrics.contains("roomgate_rtc_sessions 1"),
        "metrics show one session left"
    );
    assert_eq!(
        reqwest::Client::new()
            .delete(gw.http(&loc1))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
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
            sdkappid: 1400000002,
            secret_key: "other".into(),
            public_playback: true,
            name: "public".into(),
            ..Default::default()
        });
    })
    .await;
    // An anchor without media is enough for signalling.
    let _a = gw.hub.join(
        RoomKey {
            sdkappid: SDKAPPID,
            room: RoomRef::Str("er".into()),
        },
        "cam",
        SourceKind::Rtmp,
    );
    let _b = gw.hub.join(
        RoomKey {
            sdkappid: 1400000002,
            room: RoomRef::Str("pub".into()),
        },
        "cam",
        SourceKind::Rtmp,
    );
    let url = whep_url(&gw, "er", "v1");

    let e = play(&url, None, Transport::Udp).await.err().unwrap();
    assert_eq!(e.status, 401, "{}", e.body);
    let e = play(&url, Some(&usersig("someone_else")), Transport::Udp)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, 401);
    assert!(e.body.contains("issued for user id"), "{}", e.body);
    let e = play(&whep_url(&gw, "nope", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, 404);
    let e = play(
        &gw.http(&format!("/v2/sub/{SDKAPPID}/er?SessionID=v1&anchor=ghost")),
        Some(&usersig("v1")),
        Transport::Udp,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.status, 404);
    assert!(e.body.contains("ghost"));
    let e = play(
        &gw.http("/v2/sub/1400999999/er?SessionID=v1"),
        Some(&usersig("v1")),
        Transport::Udp,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.status, 404);
    assert!(e.body.contains("unknown sdkappid"));
    let e = play_with(&url, Some(&usersig("v1")), Transport::Udp, false, true)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, 406);
    assert!(e.body.contains("H.264"), "{}", e.body);
    let e = play_with(&url, Some(&usersig("v1")), Transport::Udp, true, false)
        .await
        .err()
        .unwrap();
    assert_eq!(e.status, 406);
    assert!(e.body.contains("Opus"), "{}", e.body);
    let bad = reqwest::Client::new()
        .post(&url)
        .bearer_auth(usersig("v1"))
        .body("not sdp")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

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
    let authed = play(&whep_url(&gw, "er", "v1"), Some(&usersig("v1")), Transport::Udp).await;
    // "er" has an anchor without media: the play itself is answered (201) with credentials.
    let authed = authed.unwrap();
    assert_eq!(authed.links, vec!["<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\"; credential-type=\"password\"".to_string()]);

    // CORS preflight for browser players.
    let pre = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &url)
        .send()
        .await
        .unwrap();
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
    let url = whep_url(&gw, "pmk", "v1");
    // As TRTC asks of its viewers: a UserSig alone is not enough on such an app.
    let e = play(&url, Some(&usersig("v1")), Transport::Udp).await.err().unwrap();
    assert_eq!(e.status, 403, "{}", e.body);
    assert!(e.body.contains("privatemapkey"), "{}", e.body);
    // A grant to publish (no receive bits) or for another room does not let one watch.
    let publish_only = private_map_key("v1", "pmk", Privileges::PUBLISH);
    let e = play(
        &format!("{url}&privatemapkey={publish_only}"),
        Some(&usersig("v1")),
        Transport::Udp,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.status, 403, "{}", e.body);
    let other_room = private_map_key("v1", "elsewhere", Privileges::PLAY);
    let e = play(
        &format!("{url}&privatemapkey={other_room}"),
        Some(&usersig("v1")),
        Transport::Udp,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.status, 403, "{}", e.body);
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
    let pre = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, &url)
        .send()
        .await
        .unwrap();
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
    let player = play(&whep_url(&gw, "pli", "v1"), Some(&usersig("v1")), Transport::Udp)
        .await
        .unwrap();
    let (before, after, player) = tokio::task::spawn_blocking(move || {
        let before = player.collect(Duration::from_secs(8), |g| g.iter().filter(|f| f.video).count() >= 30);
        player
            .controls
            .request_keyframe
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
    let from_idr: Vec<&[u8]> = after
        .iter()
        .filter(|f| f.video)
        .skip_while(|f| idr_count(std::slice::from_ref(*f)) == 0)
        .map(|f| &f.data[..])
        .collect();
    assert_eq!(decode_h264_size_of(from_idr), Some((640, 360)));
    drop(player);
    ff.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tcp_viewer_skips_to_a_keyframe_and_slows_nobody() {
    let gw = start_gateway().await;
    // 3 Mbit/s constant rate with a 1 s GOP, so a stalled viewer overflows its buffers quickly.
    let ff = Ffmpeg::push(
        &lavfi("640x360", 40),
        "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -b:v 3M -minrate 3M -maxrate 3M -bufsize 1M -x264-params nal-hrd=cbr -c:a aac",
        &gw.push_url("bp", "cam", &usersig("cam")),
    );
    let anchor = gw.wait_anchor("bp", "cam", Duration::from_secs(15)).await.unwrap();
    let tcp = gw.rtc.as_ref().unwrap().addrs.tcp.unwrap();
    let stalled = play(&whep_url(&gw, "bp", "v1"), Some(&usersig("v1")), Transport::Tcp(tcp))
        .await
        .unwrap();
    let healthy = play(&whep_url(&gw, "bp", "v2"), Some(&usersig("v2")), Transport::Tcp(tcp))
        .await
        .unwrap();
    let anchor2 = anchor.clone();
    let (healthy_during, published_during, stalled_after, healthy_last) = tokio::task::spawn_blocking(move || {
        let warm = |p: &support::whep_client::WhepPlayer| {
            p.collect(Duration::from_secs(8), |g| g.iter().filter(|f| f.video).count() >= 15)
        };
        assert!(!warm(&stalled).is_empty() && !warm(&healthy).is_empty());
        stalled
            .controls
            .paused
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let published_before = anchor2.video.stats().frames;
        let during = healthy.collect(Duration::from_secs(4), |_| false);
        let published_during = anchor2.video.stats().frames - published_before;
        stalled
            .controls
            .paused
            .store(false, std::sync::atomic::Ordering::Relaxed);
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
    let resumed: Vec<&[u8]> = stalled_after
        .iter()
        .filter(|f| f.video)
        .skip_while(|f| idr_count(std::slice::from_ref(*f)) == 0)
        .map(|f| &f.data[..])
        .collect();
    assert_eq!(decode_h264_size_of(resumed), Some((640, 360)));
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
    let tcp = gw.rtc.as_ref().unwrap().addrs.tcp.unwrap();
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
    let late = tokio::task::spawn_blocking(move || {
        player.collect(Duration::from_secs(3), |g| g.iter().filter(|f| f.video).count() > 20)
    })
    .await
    .unwrap();
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
        player
            .controls
            .rtp_loss_percent
            .store(5, std::sync::atomic::Ordering::Relaxed);
        let before = anchor.video.stats().frames;
        let got = player.collect(Duration::from_secs(6), |_| false);
        let dropped = player.controls.rtp_dropped.load(std::sync::atomic::Ordering::Relaxed);
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
        players.push(
            play(&whep_url(&gw, "cnt", v), Some(&usersig(v)), Transport::Udp)
                .await
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while anchor.viewers() < 3 {
        assert!(Instant::now() < deadline, "three viewers joined: {}", anchor.viewers());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = http_get(gw.http_addr, &format!("/v1/rooms/{SDKAPPID}/cnt")).await;
    let room: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(room["anchors"][0]["viewers"], 3, "{room}");
    drop(players);
    ff.kill().await;
}
