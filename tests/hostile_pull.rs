//! Hostile pull sources: servers that try to make the gateway (through libav) reach addresses the source policy
//! refuses. The sources live on 127.0.0.1, which the gateway allows as an exact CIDR (`allow_private_cidrs`),
//! while the "internal" targets are listeners on other loopback addresses (127.0.0.2, 127.0.0.3) that record
//! every connection: the tests assert they are never contacted.

mod support;

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cloud::{describe, describe_until, start_params, start_task, CloudClient};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Only the sources' own address is allowed; every other private address is refused.
fn strict(c: &mut roomgate::config::Config) {
    c.pull.allow_private_sources = false;
    c.pull.allow_private_cidrs = vec!["127.0.0.1/32".parse().unwrap()];
    c.pull.open_timeout_secs = 3;
}

/// A TCP listener standing for an internal service: counts the connections it gets.
struct Target {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Target {
    async fn bind(ip: &str) -> Target {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret")
                    .await;
            }
        });
        Target { addr, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A one-response-per-connection HTTP server on 127.0.0.1: `answer` gets the request head and returns the bytes
/// to send back.
async fn http_source(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let out = answer(&String::from_utf8_lossy(&buf));
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

fn response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn redirect(to: &str) -> Vec<u8> {
    format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// libav asks for ICY metadata; the pre-flight does not.
fn from_libav(req: &str) -> bool {
    req.to_ascii_lowercase().contains("icy-metadata: 1")
}

fn mp3() -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample.mp3")).unwrap()
}

/// An HTTP source on 127.0.0.1 answering with the sample MP3, except where `redirects(request head)` holds: there
/// with a redirect to `to`.
async fn mp3_source(to: String, redirects: impl Fn(&str) -> bool + Send + Sync + 'static) -> SocketAddr {
    let body = mp3();
    http_source(move |req| {
        if redirects(req) {
            redirect(&to)
        } else {
            response("200 OK", "audio/mpeg", &body)
        }
    })
    .await
}

/// A gateway with the `strict` source policy, its Cloud API client, and the task of robot "robot" playing `url`
/// into `room`.
async fn strict_task(room: &str, url: &str) -> (TestGateway, CloudClient, String) {
    let gw = start_gateway_with(strict).await;
    let api = CloudClient::new(gw.http_addr);
    let task = start_task(&api, start_params(room, "robot", url)).await;
    (gw, api, task)
}

/// Describe `task` until it has ended (up to 40 s); the last reply.
async fn ended(api: &CloudClient, task: &str) -> Value {
    describe_until(api, task, Duration::from_secs(40), |r| r["Status"] == "NotExist").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_only_libav_sees_never_reaches_a_private_address() {
    let target = Target::bind("127.0.0.2").await;
    let internal = format!("http://{}/latest/meta-data/", target.addr);
    // libav is redirected, except for the good file; the pre-flight is not.
    let source = mp3_source(internal, |req| !req.starts_with("GET /good.mp3 ") && from_libav(req)).await;
    let (gw, api, task) = strict_task("hostile-redirect", &format!("http://{source}/a.mp3")).await;
    let r = ended(&api, &task).await;
    assert_eq!(
        target.hits(),
        0,
        "the private address behind libav's redirect was contacted"
    );
    assert_eq!(r["State"], "failed", "{r}");
    let reason = r["Reason"].as_str().unwrap();
    assert!(reason.contains("redirect"), "the reason says why: {reason:?}");
    assert!(
        !reason.contains("127.0.0.2"),
        "no internal address in the reason: {reason:?}"
    );

    // The gateway still serves, and a source on the allowed address plays through the proxy.
    let (status, _) = http_get(gw.http_addr, "/healthz").await;
    assert_eq!(status, 200);
    let task = start_task(
        &api,
        start_params("hostile-ok", "robot", &format!("http://{source}/good.mp3")),
    )
    .await;
    describe_until(&api, &task, Duration::from_secs(15), |r| r["State"] == "playing").await;
    assert_eq!(target.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdp_source_is_refused_and_opens_no_udp_port() {
    // A UDP port free right now: the SDP asks libav to receive RTP there, from 127.0.0.3.
    let port = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.3\r\ns=x\r\nc=IN IP4 127.0.0.3\r\nt=0 0\r\nm=video {port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    );
    let source = http_source(move |_| response("200 OK", "application/sdp", sdp.as_bytes())).await;
    let (_gw, api, task) = strict_task("hostile-sdp", &format!("http://{source}/live.sdp")).await;

    // While the task tries, the port stays free: nobody (libav) bound it to receive from the SDP's address.
    let mut opened = 0;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match std::net::UdpSocket::bind(("127.0.0.3", port)) {
            Ok(probe) => {
                probe.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 2048];
                assert!(probe.recv_from(&mut buf).is_err(), "nothing arrives on the SDP's port");
            }
            Err(_) => opened += 1,
        }
        let r = describe(&api, &task).await;
        if r["Status"] == "NotExist" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(opened, 0, "libav opened the UDP port the SDP named");
    let r = ended(&api, &task).await;
    assert_eq!(r["State"], "failed", "{r}");
    let reason = r["Reason"].as_str().unwrap();
    assert!(reason.contains("format is not accepted"), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_segments_on_private_addresses_are_never_fetched() {
    let target = Target::bind("127.0.0.2").await;
    let playlist = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:2.0,\nhttp://{0}/seg0.ts\n#EXTINF:2.0,\nhttp://{0}/seg1.ts\n#EXT-X-ENDLIST\n",
        target.addr
    );
    let source = http_source(move |_| response("200 OK", "application/vnd.apple.mpegurl", playlist.as_bytes())).await;
    let (_gw, api, task) = strict_task("hostile-hls", &format!("http://{source}/index.m3u8")).await;
    let r = ended(&api, &task).await;
    assert_eq!(target.hits(), 0, "a segment URL on a private address was fetched");
    assert_eq!(r["State"], "failed", "{r}");
    let reason = r["Reason"].as_str().unwrap();
    assert!(reason.contains("not allowed"), "{reason:?}");
    assert!(!reason.contains("127.0.0.2"), "{reason:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_carry_no_credentials_of_the_url() {
    // One source drops every connection, one answers 404.
    let dropper = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dropped = dropper.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = dropper.accept().await {
            drop(s);
        }
    });
    let missing = http_source(|_| response("404 Not Found", "text/plain", b"no")).await;
    let gw = start_gateway_with(strict).await;
    let api = CloudClient::new(gw.http_addr);
    let mut tasks = vec![];
    for (i, at) in [dropped, missing].iter().enumerate() {
        let url = format!("http://alice-SECRETUSER:pw-SECRETPASS@{at}/a.mp4?token=SECRETTOKEN#SECRETFRAG");
        tasks.push(start_task(&api, start_params(&format!("redact{i}"), "robot", &url)).await);
    }
    // While the tasks retry, /v1/tasks shows their reasons.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed: Value = reqwest::get(gw.http("/v1/tasks")).await.unwrap().json().await.unwrap();
        let text = listed.to_string();
        assert!(!text.contains("SECRET"), "{text}");
        let with_reason = listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| !t["Reason"].as_str().unwrap_or_default().is_empty())
            .count();
        if with_reason == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no reasons while retrying: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (task, want) in tasks.iter().zip(["could not be opened", "HTTP 404"]) {
        let r = ended(&api, task).await;
        let reason = r["Reason"].as_str().unwrap();
        assert!(reason.contains(want), "{reason:?} should say {want:?}");
        let shown = r.to_string();
        assert!(!shown.contains("SECRET"), "userinfo, query or fragment shown: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_url_ends_the_demo_tasks_trust() {
    let target = Target::bind("127.0.0.2").await;
    let internal = format!("http://{}/x.mp3", target.addr);
    let source = mp3_source(internal, |req| req.starts_with("GET /redirect.mp3 ")).await;
    let gw = start_gateway_with(strict).await;
    // The demo task's own source may be anywhere the gateway chose (here: its trust covers 127.0.0.2 too).
    let spec = roomgate::ingest::pull::TaskSpec::with_defaults(
        SDKAPPID,
        "demo",
        "robot",
        &format!("http://{source}/a.mp3"),
        -1,
        true,
    );
    let id = gw.pull.start(spec).await.unwrap();
    let update = roomgate::ingest::pull::TaskUpdate {
        stream_url: Some(format!("http://{source}/redirect.mp3")),
        ..Default::default()
    };
    let spec = gw.pull.update(&id, update).await.unwrap();
    assert!(!spec.trusted_source, "the gateway did not choose the new URL");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        target.hits(),
        0,
        "the new URL's redirect to a private address was followed"
    );
}

/// An HTTPS server (python3, a throwaway self-signed certificate written to `dir`) serving `dir` on 127.0.0.1.
async fn https_source(dir: &std::path::Path) -> (SocketAddr, tokio::process::Child) {
    support::process::throwaway_cert(dir);
    let port = support::nginx::free_port();
    let script = format!(
        "import http.server, ssl\n\
         h = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('cert.pem', 'key.pem')\n\
         h.socket = c.wrap_socket(h.socket, server_side=True)\n\
         h.serve_forever()\n"
    );
    let child = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (addr, child)
}

/// libav opens `url` the way the pull runner does for an http(s) source; the demuxer's name or the error.
fn libav_open(url: &str, proxy: &str) -> Result<String, String> {
    roomgate::media::transcode::init_libav();
    let mut opts = ffmpeg_next::Dictionary::new();
    opts.set("protocol_whitelist", "http,https,tls,tcp,httpproxy,crypto");
    opts.set("max_redirects", "0");
    opts.set("http_proxy", proxy);
    opts.set("rw_timeout", "3000000");
    ffmpeg_next::format::input_with_dictionary(&url, opts)
        .map(|i| i.format().name().to_string())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sources_tunnel_through_the_proxy_to_checked_addresses_only() {
    use roomgate::ingest::pull::{policy::AddressPolicy, proxy::SourceProxy};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.mp3"), mp3()).unwrap();
    let (addr, _server) = https_source(dir.path()).await;
    let target = Target::bind("127.0.0.2").await;
    let proxy = SourceProxy::start(Duration::from_secs(3)).unwrap();
    let session = proxy.session(
        AddressPolicy {
            allow_all: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        "https-test",
    );
    // libav answers the proxy's 407 with the session's credentials, then tunnels TLS with CONNECT.
    let (ok, url) = (format!("https://{addr}/a.mp3"), session.url());
    let opened = tokio::task::spawn_blocking(move || libav_open(&ok, &url))
        .await
        .unwrap();
    assert_eq!(opened.as_deref(), Ok("mp3"), "{opened:?}");
    assert!(!session.refused());
    let (bad, url) = (format!("https://{}/a.mp3", target.addr), session.url());
    let opened = tokio::task::spawn_blocking(move || libav_open(&bad, &url))
        .await
        .unwrap();
    assert!(opened.is_err(), "{opened:?}");
    assert!(session.refused());
    assert_eq!(target.hits(), 0, "the refused address was contacted");
    // Without the session's token the proxy serves nobody.
    let (ok, url) = (
        format!("https://{addr}/a.mp3"),
        format!("http://roomgate:not-a-token@{}", proxy.addr()),
    );
    let opened = tokio::task::spawn_blocking(move || libav_open(&ok, &url))
        .await
        .unwrap();
    assert!(opened.is_err(), "{opened:?}");
}
