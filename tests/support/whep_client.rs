//! A WHEP player built on str0m (a regular, non-lite WebRTC peer), over UDP or ICE-TCP, that collects the
//! depacketized frames it receives so tests can decode them.

use roomgate::rtc::demux::{frame, FrameReader};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// ICE-TCP to the gateway's TCP port; no UDP candidate at all.
    Tcp(SocketAddr),
}

/// One received media frame.
#[derive(Debug, Clone)]
pub struct Received {
    pub video: bool,
    pub data: Vec<u8>,
    /// RTP time (90 kHz or 48 kHz).
    pub rtp_time: u64,
    /// str0m: this frame follows the previous one without a gap.
    pub contiguous: bool,
    pub at: Instant,
}

/// Knobs a test turns while the player runs (shared with its thread).
#[derive(Default)]
pub struct Controls {
    stop: AtomicBool,
    /// While true, the player reads nothing from the network (a viewer whose link stalls).
    pub paused: AtomicBool,
    /// Set to send one PLI on the video m-line.
    pub request_keyframe: AtomicBool,
    /// Drop this many of every 100 incoming RTP packets (deterministically), to exercise NACK/RTX.
    pub rtp_loss_percent: std::sync::atomic::AtomicU32,
    /// New (local, remote) ICE credentials to switch to, as after an ICE restart.
    pub restart: std::sync::Mutex<Option<(str0m::IceCreds, str0m::IceCreds)>>,
    pub connected_at: std::sync::Mutex<Option<Instant>>,
    /// RTP packets dropped by `rtp_loss_percent` so far.
    pub rtp_dropped: std::sync::atomic::AtomicU64,
}

pub struct WhepPlayer {
    /// The URL that answered the offer (another node's, after a cluster redirect).
    pub answered_by: String,
    pub location: String,
    pub etag: String,
    pub links: Vec<String>,
    pub answer_sdp: String,
    pub frames: mpsc::Receiver<Received>,
    pub controls: Arc<Controls>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The HTTP failure of a WHEP (or WHIP) POST.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// Install str0m's crypto provider once per process.
pub fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
}

/// The server's 201 to an offer: its headers and the SDP answer.
pub struct Answered {
    /// The URL that answered 201 (after following any 307/308).
    pub answered_by: String,
    pub location: String,
    pub etag: String,
    pub links: Vec<String>,
    pub body: String,
}

/// CAs the players and publishers trust besides the system's (added by the TLS tests: their development CAs).
static TRUSTED_CA: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Trust `ca_pem` too for HTTPS WHIP/WHEP from now on (in this test process).
#[allow(dead_code)]
pub fn trust(ca_pem: &str) {
    TRUSTED_CA.lock().unwrap().push(ca_pem.as_bytes().to_vec());
}

/// POST an SDP `offer` to a WHIP or WHEP `url` (with `token` as bearer, if any); `what` names the request should
/// the server not answer at all. A 307/308 is followed as WHIP/WHEP clients must (RFC 9725 §4.5): the same offer
/// and token to the Location, up to 3 times. Anything but a 201 in the end is `Refused`.
pub async fn post_offer(url: &str, token: Option<&str>, offer: String, what: &str) -> Result<Answered, Refused> {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    for ca in TRUSTED_CA.lock().unwrap().iter() {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca).expect("a PEM CA"));
    }
    let client = builder.build().unwrap();
    let mut url = reqwest::Url::parse(url).expect("a URL");
    let mut hops = 0;
    let resp = loop {
        let mut req = client
            .post(url.clone())
            .header("Content-Type", "application/sdp")
            .body(offer.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect(what);
        let next = resp
            .headers()
            .get("location")
            .and_then(|l| url.join(l.to_str().ok()?).ok());
        match (resp.status().as_u16(), next) {
            (307 | 308, Some(next)) if hops < 3 => {
                hops += 1;
                url = next;
            }
            _ => break resp,
        }
    };
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (location, etag) = (header("location"), header("etag"));
    let links: Vec<String> = resp
        .headers()
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    let body = resp.text().await.unwrap_or_default();
    if status != 201 {
        return Err(Refused { status, body });
    }
    Ok(Answered {
        answered_by: url.to_string(),
        location,
        etag,
        links,
        body,
    })
}

/// Hand str0m one packet received from `source` on `destination`; one that is not a datagram str0m knows is
/// dropped.
pub fn receive(rtc: &mut Rtc, proto: Protocol, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
    if let Ok(r) = Receive::new(proto, source, destination, data) {
        let _ = rtc.handle_input(Input::Receive(Instant::now(), r));
    }
}

/// POST an offer to `url` and play what comes back. `video`/`audio` choose the m-lines offered.
pub async fn play(url: &str, token: Option<&str>, transport: Transport) -> Result<WhepPlayer, Refused> {
    play_with(url, token, transport, true, true).await
}

/// How `url` refuses a UDP player with `token` (panics if it plays).
pub async fn refusal(url: &str, token: Option<&str>) -> Refused {
    play(url, token, Transport::Udp)
        .await
        .err()
        .expect("the play is refused")
}

pub async fn play_with(
    url: &str,
    token: Option<&str>,
    transport: Transport,
    video: bool,
    audio: bool,
) -> Result<WhepPlayer, Refused> {
    install_crypto();
    let mut rtc = Rtc::builder().build(Instant::now());
    let (udp, tcp) = match transport {
        Transport::Udp => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            rtc.add_local_candidate(Candidate::host(s.local_addr().unwrap(), "udp").unwrap());
            (Some(s), None)
        }
        Transport::Tcp(server) => {
            let s = TcpStream::connect(server).unwrap();
            s.set_nodelay(true).unwrap();
            let c = Candidate::builder()
                .tcp()
                .host(s.local_addr().unwrap())
                .tcptype(TcpType::Active)
                .build()
                .unwrap();
            rtc.add_local_candidate(c);
            (None, Some(s))
        }
    };
    let mut api = rtc.sdp_api();
    if video {
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    }
    if audio {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    let (offer, pending) = api.apply().expect("an offer");
    let Answered {
        answered_by,
        location,
        etag,
        links,
        body,
    } = post_offer(url, token, offer.to_sdp_string(), "WHEP POST").await?;
    let answer = SdpAnswer::from_sdp_string(&body).expect("answer SDP");
    rtc.sdp_api().accept_answer(pending, answer).expect("answer accepted");

    let (tx, rx) = mpsc::channel();
    let controls = Arc::new(Controls::default());
    let c = controls.clone();
    let thread = std::thread::spawn(move || run(rtc, udp, tcp, tx, c));
    Ok(WhepPlayer {
        answered_by,
        location,
        etag,
        links,
        answer_sdp: body,
        frames: rx,
        controls,
        thread: Some(thread),
    })
}

fn run(
    mut rtc: Rtc,
    udp: Option<UdpSocket>,
    mut tcp: Option<TcpStream>,
    tx: mpsc::Sender<Received>,
    ctl: Arc<Controls>,
) {
    let mut rtp_seen = 0u64;
    let mut video_mid = None;
    let mut buf = vec![0u8; 65536];
    let mut reader = FrameReader::default();
    let mut inputs: VecDeque<(Protocol, SocketAddr, Vec<u8>)> = VecDeque::new();
    let local = udp
        .as_ref()
        .map(|s| s.local_addr().unwrap())
        .or_else(|| tcp.as_ref().map(|s| s.local_addr().unwrap()))
        .unwrap();
    let peer_tcp = tcp.as_ref().map(|s| s.peer_addr().unwrap());
    while !ctl.stop.load(Ordering::Relaxed) && rtc.is_alive() {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => match (&udp, &mut tcp) {
                    (Some(s), _) => {
                        let _ = s.send_to(&t.contents, t.destination);
                    }
                    (_, Some(s)) => {
                        let _ = s.write_all(&frame(&t.contents).unwrap());
                    }
                    _ => {}
                },
                Ok(Output::Event(Event::Connected)) => *ctl.connected_at.lock().unwrap() = Some(Instant::now()),
                Ok(Output::Event(Event::MediaData(d))) => {
                    let video = d.params.spec().codec == Codec::H264;
                    if video {
                        video_mid = Some(d.mid);
                    }
                    let _ = tx.send(Received {
                        video,
                        data: d.data.to_vec(),
                        rtp_time: d.time.numer(),
                        contiguous: d.contiguous,
                        at: Instant::now(),
                    });
                }
                Ok(_) => {}
                Err(_) => return,
            }
        };
        if let Some((local, remote)) = ctl.restart.lock().unwrap().take() {
            let mut api = rtc.direct_api();
            api.set_local_ice_credentials(local);
            api.set_remote_ice_credentials(remote);
        }
        if let Some(mid) = video_mid {
            if ctl.request_keyframe.swap(false, Ordering::Relaxed) {
                if let Some(mut w) = rtc.writer(mid) {
                    let _ = w.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli);
                }
            }
        }
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        if ctl.paused.load(Ordering::Relaxed) {
            std::thread::sleep(wait);
            let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            continue;
        }
        // Hand str0m one packet per poll round, as a real socket loop does: a whole TCP read of a burst fed at
        // once would overflow str0m's depacketizing buffer before its frames are polled out.
        if let Some((proto, source, data)) = inputs.pop_front() {
            feed(&mut rtc, &ctl, &mut rtp_seen, proto, source, local, data);
            continue;
        }
        if let Some(s) = &udp {
            s.set_read_timeout(Some(wait)).unwrap();
            match s.recv_from(&mut buf) {
                Ok((n, from)) => inputs.push_back((Protocol::Udp, from, buf[..n].to_vec())),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
        if let Some(s) = &mut tcp {
            s.set_read_timeout(Some(wait)).unwrap();
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    reader.feed(&buf[..n]);
                    while let Some(p) = reader.next_packet() {
                        inputs.push_back((Protocol::Tcp, peer_tcp.unwrap(), p.to_vec()));
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
        if inputs.is_empty() {
            let _ = rtc.handle_input(Input::Timeout(Instant::now()));
        }
    }
}

/// Give one received packet to str0m, first dropping `rtp_loss_percent` of RTP packets (not RTCP: payload types
/// 200-206), spread out, when the test asks for loss.
fn feed(
    rtc: &mut Rtc,
    ctl: &Controls,
    rtp_seen: &mut u64,
    proto: Protocol,
    source: SocketAddr,
    destination: SocketAddr,
    data: Vec<u8>,
) {
    let loss = ctl.rtp_loss_percent.load(Ordering::Relaxed) as u64;
    let is_rtp = data.len() > 12 && (128..192).contains(&data[0]) && !(200..=206).contains(&data[1]);
    if is_rtp && loss > 0 {
        *rtp_seen += 1;
        if (*rtp_seen * 37) % 100 < loss {
            ctl.rtp_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    receive(rtc, proto, source, destination, &data);
}

impl WhepPlayer {
    /// Collect frames until `pred` says stop or `within` passes.
    pub fn collect(&self, within: Duration, mut done: impl FnMut(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + within;
        let mut got = vec![];
        while Instant::now() < deadline && !done(&got) {
            if let Ok(f) = self.frames.recv_timeout(Duration::from_millis(100)) {
                got.push(f);
            }
        }
        got
    }

    /// `collect` on a blocking thread, for async tests; the player is dropped (its session ends) afterwards.
    pub async fn gather(
        self,
        within: Duration,
        done: impl FnMut(&[Received]) -> bool + Send + 'static,
    ) -> Vec<Received> {
        tokio::task::spawn_blocking(move || self.collect(within, done))
            .await
            .unwrap()
    }

    /// `collect` on a blocking thread, handing the player back to play on.
    pub async fn gather_keep(
        self,
        within: Duration,
        done: impl FnMut(&[Received]) -> bool + Send + 'static,
    ) -> (Vec<Received>, WhepPlayer) {
        tokio::task::spawn_blocking(move || (self.collect(within, done), self))
            .await
            .unwrap()
    }
}

/// The payloads of the video frames among `frames`, in order.
pub fn video_of(frames: &[Received]) -> Vec<&[u8]> {
    frames.iter().filter(|f| f.video).map(|f| &f.data[..]).collect()
}

/// The payloads of the audio (Opus) frames among `frames`, in order.
pub fn audio_of(frames: &[Received]) -> Vec<&[u8]> {
    frames.iter().filter(|f| !f.video).map(|f| &f.data[..]).collect()
}

/// Whether `frames` hold at least `video` video frames and `audio` audio frames.
pub fn at_least(frames: &[Received], video: usize, audio: usize) -> bool {
    frames.iter().filter(|f| f.video).count() >= video && frames.iter().filter(|f| !f.video).count() >= audio
}

impl Drop for WhepPlayer {
    fn drop(&mut self) {
        self.controls.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
