//! Hostile HTTP and WebRTC clients: slowloris headers, connection and session floods, oversized trickle
//! PATCHes, and browsers tricked into borrowing the loopback admin role (DNS rebinding, CSRF). After each, the
//! gateway must still serve: an ffmpeg RTMP publisher and a WHEP viewer that decodes its picture.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::whep_client::{play, Transport};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PUSH_ARGS: &str = "-c:v libx264 -preset veryfast -tune zerolatency -profile:v baseline -g 30 -c:a aac -b:a 64k";

/// At most three WebRTC sessions, and no per-address WHEP rate (the flood is of sessions, not of requests).
fn three_sessions(c: &mut roomgate::Config) {
    c.rtc.max_sessions = 3;
    c.rtc.whep_per_ip_per_minute = 0;
}

/// At most three ICE-TCP connections per address, each of which must speak STUN within 2 s.
fn tight_ice_tcp(c: &mut roomgate::Config) {
    c.rtc.tcp_max_connections_per_ip = 3;
    c.rtc.tcp_stun_timeout_secs = 2;
}

/// Push with ffmpeg into `room` as `user` until the anchor has a keyframe and audio; returns the publisher.
async fn pushing(gw: &TestGateway, room: &str, user: &str) -> Ffmpeg {
    let ff = gw.push_lavfi(room, user, "320x240", 60, PUSH_ARGS);
    let p = gw.wait_video(room, user, Duration::from_secs(20)).await;
    wait_until("audio flows", Duration::from_secs(20), || p.audio.has_media()).await;
    ff
}

/// A raw HTTP/1.1 request (so `Host` and every other header are exactly what a hostile client sends).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut resp))
        .await
        .expect("an answer")
        .unwrap();
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status = resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Wait until the server closes `s` (EOF or reset); how long it took, or None if it stayed open `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((t + within).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Connect to `addr` and send a request: the server closes the connection within 5 s (on loopback the reset can
/// come before `connect` returns).
async fn refused_at_once(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    closed_within(&mut s, Duration::from_secs(5)).await.is_some()
}

/// A WHEP offer (recvonly H.264 + Opus) as a browser would send it.
fn whep_offer() -> String {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rtc.add_local_candidate(str0m::Candidate::host(sock.local_addr().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    for kind in [str0m::media::MediaKind::Video, str0m::media::MediaKind::Audio] {
        api.add_media(kind, str0m::media::Direction::RecvOnly, None, None, None);
    }
    let (offer, _) = api.apply().unwrap();
    offer.to_sdp_string()
}

/// POST a WHEP offer for `room`: (status, Retry-After, Location, body).
async fn whep_post(gw: &TestGateway, room: &str, viewer: &str) -> (u16, Option<String>, String, String) {
    let r = reqwest::Client::new()
        .post(gw.http(&format!("/v2/sub/{SDKAPPID}/{room}?SessionID={viewer}")))
        .header("Content-Type", "application/sdp")
        .bearer_auth(usersig(viewer))
        .body(whep_offer())
        .send()
        .await
        .unwrap();
    let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(String::from);
    let (retry, location) = (h("retry-after"), h("location").unwrap_or_default());
    (r.status().as_u16(), retry, location, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off_at_the_header_timeout() {
    let gw = start_gateway_with(|c| c.http.header_timeout_secs = 2).await;
    let mut slow = Vec::new();
    for _ in 0..5 {
        let s = TcpStream::connect(gw.http_addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        // One header byte every second, never the end of the header.
        let writer = tokio::spawn(async move {
            for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                .iter()
            {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let reader = tokio::spawn(async move {
            let t = Instant::now();
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await {
                    Err(_) => return None,
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
                    Ok(Ok(_)) => {}
                }
            }
        });
        slow.push((writer, reader));
    }
    // Normal requests are answered meanwhile.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(http_get(gw.http_addr, "/healthz").await.0, 200);
    }
    for (writer, reader) in slow {
        let closed = reader.await.unwrap();
        writer.abort();
        let after = closed.expect("a slowloris connection is closed (header timeout 2 s), not held for 20 s");
        assert!(after < Duration::from_secs(15), "closed after {after:?}");
    }
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_stalled_bodies_are_closed() {
    let gw = start_gateway_with(|c| {
        c.http.header_timeout_secs = 60;
        c.http.idle_timeout_secs = 2;
        c.http.body_timeout_secs = 2;
    })
    .await;
    // Silent from the start, and silent after one keep-alive request.
    let mut silent = TcpStream::connect(gw.http_addr).await.unwrap();
    let mut kept = TcpStream::connect(gw.http_addr).await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", gw.http_addr).as_bytes())
        .await
        .unwrap();
    // A body that never finishes.
    let mut stalled = TcpStream::connect(gw.http_addr).await.unwrap();
    let head = format!(
        "POST /v2/sub/{SDKAPPID}/r HTTP/1.1\r\nHost: {}\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n",
        gw.http_addr
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    for (what, s) in [
        ("silent", &mut silent),
        ("keep-alive", &mut kept),
        ("stalled body", &mut stalled),
    ] {
        let after = closed_within(s, Duration::from_secs(20)).await;
        assert!(after.is_some(), "a {what} connection is closed (idle/body timeout 2 s)");
    }
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_cap_are_closed_at_once() {
    let gw = start_gateway_with(|c| c.http.max_connections_per_ip = 4).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(gw.http_addr).await.unwrap());
    }
    // Let the accept loop take the four (it accepts in order).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        refused_at_once(gw.http_addr).await,
        "the 5th connection from one address is closed at once"
    );
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), idle[0].read(&mut buf))
            .await
            .is_err(),
        "the connections within the cap stay open"
    );
    let (_, metrics) = {
        drop(idle);
        tokio::time::sleep(Duration::from_millis(300)).await;
        http_get(gw.http_addr, "/metrics").await
    };
    assert!(
        metrics.contains(r#"roomgate_refusals_total{source="http",reason="max_connections_per_ip"}"#),
        "the refusal is counted"
    );
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_flood_beyond_max_sessions_gets_503_with_retry_after() {
    let gw = start_gateway_with(three_sessions).await;
    let ff = pushing(&gw, "flood", "cam").await;
    let mut sessions = Vec::new();
    for i in 0..3 {
        let (status, _, location, body) = whep_post(&gw, "flood", &format!("v{i}")).await;
        assert_eq!(status, 201, "{body}");
        sessions.push(location);
    }
    for i in 3..8 {
        let (status, retry, _, body) = whep_post(&gw, "flood", &format!("v{i}")).await;
        assert_eq!(status, 503, "session {i} is over rtc.max_sessions: {body}");
        assert!(
            retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)),
            "Retry-After"
        );
        assert_eq!(error_code(&body), "too_many_sessions");
    }
    for l in sessions {
        let r = reqwest::Client::new().delete(gw.http(&l)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    ff.kill().await;
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_requests_beyond_the_per_ip_rate_get_429() {
    let gw = start_gateway_with(|c| c.rtc.whep_per_ip_per_minute = 3).await;
    // No anchor: each is a 404, but each still counts.
    for i in 0..3 {
        let (status, _, _, body) = whep_post(&gw, "empty", &format!("v{i}")).await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, retry, _, body) = whep_post(&gw, "empty", "v4").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(error_code(&body), "rate_limited");
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s))));
    // Normal service (with its own WHEP request from this address) after a token comes back.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickle_patches_are_bounded_in_size_and_candidates() {
    let gw = start_gateway().await;
    let ff = pushing(&gw, "trickle", "cam").await;
    let (status, _, location, body) = whep_post(&gw, "trickle", "v1").await;
    assert_eq!(status, 201, "{body}");
    let cand = |i: usize| {
        format!(
            "a=candidate:{i} 1 udp 2130706431 127.0.0.1 {} typ host\r\n",
            10000 + i % 50000
        )
    };
    let patch = |body: String| {
        let url = gw.http(&location);
        async move {
            let r = reqwest::Client::new()
                .patch(url)
                .header("Content-Type", "application/trickle-ice-sdpfrag")
                .header("If-Match", "*")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    let huge: String = (0..10_000).map(cand).collect();
    assert!(huge.len() > 64 * 1024);
    let (status, body) = patch(huge).await;
    assert_eq!(status, 413, "10 000 candidates: {body}");
    assert_eq!(error_code(&body), "body_too_large");

    let many: String = (0..25).map(cand).collect();
    let (status, body) = patch(many).await;
    assert_eq!(status, 422, "25 candidates in one PATCH: {body}");
    assert_eq!(error_code(&body), "too_many_candidates");
    let twenty: String = (0..20).map(cand).collect();
    assert_eq!(patch(twenty).await.0, 204, "20 candidates are fine");
    let (status, body) = patch(cand(21)).await;
    assert_eq!(status, 422, "the 21st candidate of the session: {body}");
    assert!(body.contains("20"), "the limit is named: {body}");

    // An SDP offer over 64 KiB gets the same answer.
    let mut offer = whep_offer();
    offer.push_str(&"a=x-padding:0123456789abcdef0123456789abcdef\r\n".repeat(2000));
    let r = reqwest::Client::new()
        .post(gw.http(&format!("/v2/sub/{SDKAPPID}/trickle?SessionID=v2")))
        .header("Content-Type", "application/sdp")
        .bearer_auth(usersig("v2"))
        .body(offer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    ff.kill().await;
    assert_still_serves(&gw).await;
}

/// Every admin route, as (method, path, JSON body).
fn admin_routes() -> Vec<(&'static str, String, &'static str)> {
    let task = r#"{"sdkappid":1400000001,"stream_url":"ftp://x/y","room":"r","userid":"u"}"#;
    let token = r#"{"sdkappid":1400000001,"userid":"u","room":"r"}"#;
    vec![
        ("POST", "/v1/tokens".into(), token),
        ("POST", "/v1/tasks".into(), task),
        ("DELETE", "/v1/tasks/nope".into(), ""),
        ("GET", "/v1/callbacks".into(), ""),
        ("GET", "/v1/callbacks/1".into(), ""),
        ("POST", "/v1/callbacks/1/retry".into(), "{}"),
        ("GET", format!("/v1/rooms/{SDKAPPID}/private"), ""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_cannot_borrow_the_loopback_admin_role() {
    let gw = start_gateway().await;
    let addr = gw.http_addr;
    let host = addr.to_string();
    let json = ("Content-Type", "application/json");
    // Headers a page in a browser may send, and the answer to each: refused with that code, or (None) admin.
    let localhost = format!("localhost:{}", addr.port());
    let rebinding = [("Host", "rebind.attacker.example:8080"), json];
    let as_localhost = [("Host", localhost.as_str()), json];
    let evil_origin = [("Host", host.as_str()), ("Origin", "http://evil.example"), json];
    let forwarded = [("Host", host.as_str()), ("X-Forwarded-For", "203.0.113.7"), json];
    let text_plain = [("Host", host.as_str()), ("Content-Type", "text/plain")];
    let cross_site = [("Host", host.as_str()), ("Sec-Fetch-Site", "cross-site"), json];
    let cases = [
        (&rebinding[..], Some("admin_host_not_loopback")),
        (&as_localhost[..], None),
        (&evil_origin[..], Some("admin_origin_mismatch")),
        (&forwarded[..], Some("admin_forwarded")),
        // These two only where a request has a body.
        (&text_plain[..], Some("admin_content_type")),
        (&cross_site[..], Some("admin_cross_site")),
    ];
    for (method, path, body) in admin_routes() {
        let checked = if method == "GET" { &cases[..4] } else { &cases[..] };
        for &(headers, refusal) in checked {
            let (status, _, resp) = raw(addr, method, &path, headers, body).await;
            match refusal {
                Some(code) => assert_eq!(
                    (status, error_code(&resp).as_str()),
                    (403, code),
                    "{method} {path} with {headers:?}: {resp}"
                ),
                None => assert!(
                    !error_code(&resp).starts_with("admin_"),
                    "{method} {path} with Host: localhost is admin ({status} {resp})"
                ),
            }
        }
    }
    // The token the rebinding page wanted: only with a local Host (and then from its own origin).
    let token = r#"{"sdkappid":1400000001,"userid":"u","room":"r"}"#;
    let local = [("Host", host.as_str()), ("Origin", &format!("http://{host}")), json];
    let (status, _, resp) = raw(addr, "POST", "/v1/tokens", &local, token).await;
    assert_eq!(status, 200, "{resp}");
    assert!(serde_json::from_str::<Value>(&resp).unwrap()["usersig"].is_string());

    // Task failure reasons are for admin only.
    let task = r#"{"sdkappid":1400000001,"stream_url":"http://127.0.0.1:9/x.mp4","room":"t","userid":"robot"}"#;
    let (status, _, resp) = raw(addr, "POST", "/v1/tasks", &[("Host", host.as_str()), json], task).await;
    assert_eq!(status, 200, "{resp}");
    let id = serde_json::from_str::<Value>(&resp).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, _, resp) = raw(addr, "GET", "/v1/tasks", &[("Host", "rebind.attacker.example")], "").await;
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert!(
        v["tasks"][0]["TaskId"].is_string() && v["tasks"][0].get("Reason").is_none(),
        "{v}"
    );
    let (_, _, resp) = raw(addr, "GET", "/v1/tasks", &[("Host", host.as_str())], "").await;
    let v: Value = serde_json::from_str(&resp).unwrap();
    assert!(v["tasks"][0].get("Reason").is_some(), "admin sees the reason: {v}");
    let (status, _, _) = raw(
        addr,
        "DELETE",
        &format!("/v1/tasks/{id}"),
        &[("Host", host.as_str()), json],
        "",
    )
    .await;
    assert_eq!(status, 200);

    // A private app's rooms are not listed to a non-admin; the listing itself stays public.
    let ff = pushing(&gw, "private", "cam").await;
    let (status, _, resp) = raw(addr, "GET", "/v1/rooms", &[("Host", "rebind.attacker.example")], "").await;
    assert_eq!(status, 200);
    assert!(!resp.contains("private"), "{resp}");
    let (_, _, resp) = raw(addr, "GET", "/v1/rooms", &[("Host", &host)], "").await;
    assert!(resp.contains("private"), "admin sees it: {resp}");
    let (status, _, _) = raw(
        addr,
        "GET",
        &format!("/v1/rooms/{SDKAPPID}/private"),
        &[("Host", &host)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    ff.kill().await;

    // Console pages: a CSP, nosniff, and no inline script.
    for page in ["/", "/play", "/publish", "/tokens"] {
        let (status, head, body) = raw(addr, "GET", page, &[("Host", &host)], "").await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-security-policy: default-src 'self'"),
            "{page}: {head}"
        );
        assert!(head.contains("frame-ancestors 'none'"), "{page}");
        assert!(head.contains("x-content-type-options: nosniff"), "{page}");
        assert!(
            !body.contains("<script>") && !body.contains("<script type=\"module\">"),
            "{page} has inline script"
        );
        assert!(!body.contains("style=\""), "{page} has inline style");
    }
    let (_, _, js) = raw(addr, "GET", "/assets/tokens.js", &[("Host", &host)], "").await;
    assert!(!js.contains("innerHTML"), "the token page puts app names in as text");
    let (status, _, resp) = raw(addr, "GET", "/metrics", &[("Host", &host)], "").await;
    assert_eq!(status, 200);
    assert!(resp.contains(r#"roomgate_refusals_total{source="admin",reason="admin_host_not_loopback"}"#));
    assert_still_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_tcp_connections_are_capped_and_must_speak_stun() {
    let gw = start_gateway_with(tight_ice_tcp).await;
    let tcp = gw.rtc.as_ref().unwrap().addrs.tcp.unwrap();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(tcp).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        refused_at_once(tcp).await,
        "the 4th ICE-TCP connection from one address is closed at once"
    );
    for s in &mut silent {
        let after = closed_within(s, Duration::from_secs(15)).await;
        assert!(
            after.is_some(),
            "a connection that sends no STUN is closed (timeout 2 s)"
        );
    }
    let mut garbage = TcpStream::connect(tcp).await.unwrap();
    garbage.write_all(b"\x00\x10GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(
        closed_within(&mut garbage, Duration::from_secs(5)).await.is_some(),
        "a first packet that is not STUN ends the connection"
    );
    // Well-formed STUN naming no session: the connection has no shard to talk to and is closed at once.
    let mut stranger = TcpStream::connect(tcp).await.unwrap();
    let req = support::stun::binding_request("nosuchufrag", "client", "nosuchpassword0123456789");
    let mut framed = (req.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);
    stranger.write_all(&framed).await.unwrap();
    let closed = closed_within(&mut stranger, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(1)),
        "STUN for an unknown session ends the connection at once ({closed:?})"
    );
    // A real ICE-TCP viewer still plays.
    let ff = pushing(&gw, "icetcp", "cam").await;
    let url = gw.http(&format!("/v2/sub/{SDKAPPID}/icetcp?SessionID=tv"));
    let player = play(&url, Some(&usersig("tv")), Transport::Tcp(tcp)).await.unwrap();
    let frames =
        tokio::task::spawn_blocking(move || player.collect(Duration::from_secs(15), |g| g.iter().any(|f| f.video)))
            .await
            .unwrap();
    assert!(frames.iter().any(|f| f.video), "video over ICE-TCP");
    ff.kill().await;
    assert_still_serves(&gw).await;
}
