//! `RtcEngine`: the shards (tasks) that run every str0m `Rtc` behind one UDP port and one ICE-TCP port.
//!
//! Sessions are spread over `rtc.workers` shards by id, so the media of many viewers is packetized and encrypted
//! on several cores and a storm of DTLS handshakes on one shard leaves the others' media alone. Shard 0 reads the
//! UDP socket and hands each packet to the shard that owns its session (`Routes`); every shard sends on the
//! socket itself. An ICE-TCP connection talks to its session's shard directly.

use super::routes::Routes;
use super::{candidate_ips, tcp, EngineAddrs};
use crate::config::RtcConfig;
use crate::media::{Codec, Frame};
use bytes::BytesMut;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use str0m::media::{Frequency, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub type SessionId = u64;

/// Commands queued for the engine before a sender waits (frames, packets from TCP peers, control).
const ENGINE_QUEUE: usize = 16 * 1024;

/// Where one outgoing track is written: its m-line and payload type.
#[derive(Debug, Clone, Copy)]
pub struct OutTrack {
    pub mid: Mid,
    pub pt: Pt,
}

/// A negotiated session to run. `ufrag` is its local ICE ufrag (how its first STUN request finds it).
pub struct NewSession {
    pub rtc: Rtc,
    pub ufrag: String,
    pub video: Option<OutTrack>,
    pub audio: Option<OutTrack>,
    pub events: mpsc::UnboundedSender<SessionEvent>,
}

/// What a session's owner hears from the engine.
#[derive(Debug)]
pub enum SessionEvent {
    /// ICE and DTLS are up: media may flow.
    Connected,
    /// The peer asked for a keyframe (PLI/FIR).
    KeyframeRequest,
    /// The session is gone (peer left, timed out, failed, or was removed).
    Closed(String),
    /// A depacketized frame from a publishing peer.
    Media(Box<str0m::media::MediaData>),
}

pub(crate) enum Command {
    Add(SessionId, Box<NewSession>),
    Remove(SessionId),
    /// `live`: fresh from the source (counts in the gateway-delay histogram), not replayed from a cache.
    Frame(SessionId, Frame, bool),
    /// One live frame for several sessions (the viewers of one anchor): one message, one wake-up.
    FrameToMany(Arc<[SessionId]>, Frame),
    /// Cached frames (a GOP) for one session, in order: one message however long the GOP.
    Frames(SessionId, Vec<Frame>),
    RemoteCandidate(SessionId, Candidate),
    /// Ask a publishing peer for a keyframe (PLI) on the m-line `Mid`.
    RequestKeyframe(SessionId, Mid),
    IceRestart {
        id: SessionId,
        local: IceCreds,
        remote: IceCreds,
    },
    /// `lost` is set by the connection when it dropped stale packets.
    TcpOpen {
        peer: SocketAddr,
        writer: mpsc::Sender<(Instant, Vec<u8>)>,
        lost: Arc<std::sync::atomic::AtomicBool>,
    },
    TcpPacket {
        peer: SocketAddr,
        packet: BytesMut,
    },
    TcpClosed {
        peer: SocketAddr,
    },
}

/// A UDP packet read by shard 0 for a session of another shard. It travels on a queue of its own, so a burst of
/// media commands cannot crowd out a session's STUN, DTLS and RTCP.
pub(crate) struct Inbound {
    id: SessionId,
    source: SocketAddr,
    destination: SocketAddr,
    packet: Vec<u8>,
}

/// Packets forwarded to a shard and not yet taken, at most.
const INBOUND_QUEUE: usize = 4096;

/// The shards' queues and the routing table they share: how a session's commands and packets reach its shard.
pub(crate) struct Shards {
    senders: Vec<mpsc::Sender<Command>>,
    pub routes: Arc<Routes>,
}

impl Shards {
    /// The index of the shard that runs session `id`.
    fn index(&self, id: SessionId) -> usize {
        (id % self.senders.len() as u64) as usize
    }

    /// The queue of the shard that runs session `id`.
    pub fn of(&self, id: SessionId) -> &mpsc::Sender<Command> {
        &self.senders[self.index(id)]
    }
}

/// Handle to the engine's shards. Cheap to share (`Arc`).
pub struct RtcEngine {
    shards: Arc<Shards>,
    next_id: AtomicU64,
    pub addrs: EngineAddrs,
    candidates: Vec<Candidate>,
    sessions: Arc<AtomicUsize>,
    /// Sessions added and not yet closed (counted at `add`, before the engine task sees them, so a burst of
    /// requests cannot overshoot `rtc.max_sessions`).
    admitted: Arc<AtomicUsize>,
}

/// `rtc.max_sessions` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway has {0} WebRTC sessions, its maximum (rtc.max_sessions)")]
pub struct EngineFull(pub usize);

impl RtcEngine {
    /// Bind the UDP socket (and TCP listener) and start the engine.
    pub async fn start(cfg: &RtcConfig) -> std::io::Result<(RtcEngine, Vec<JoinHandle<()>>)> {
        static CRYPTO: std::sync::Once = std::sync::Once::new();
        CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());

        let udp = Arc::new(super::udp::UdpEndpoint::new(
            UdpSocket::bind(SocketAddr::new(cfg.bind, cfg.udp_port)).await?,
        ));
        let udp_addr = udp.local_addr()?;
        let workers = cfg.shard_count();
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(ENGINE_QUEUE)).unzip();
        let (inbound_tx, inbound_rx): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::channel(INBOUND_QUEUE)).unzip();
        let shards = Arc::new(Shards {
            senders,
            routes: Arc::new(Routes::default()),
        });
        let mut tasks = Vec::new();
        let tcp_addr = if cfg.tcp_enabled {
            let l = tokio::net::TcpListener::bind(SocketAddr::new(cfg.bind, cfg.tcp_port)).await?;
            let a = l.local_addr()?;
            let limits = tcp::TcpLimits {
                max_connections: cfg.tcp_max_connections,
                max_connections_per_ip: cfg.tcp_max_connections_per_ip,
                stun_timeout: std::time::Duration::from_secs(cfg.tcp_stun_timeout_secs.max(1)),
            };
            tasks.push(tokio::spawn(tcp::accept_loop(l, shards.clone(), limits)));
            Some(a)
        } else {
            None
        };
        let mut candidates = Vec::new();
        let ips = candidate_ips(cfg.bind, &cfg.public_ips);
        for ip in ips.iter().copied() {
            match Candidate::host(SocketAddr::new(ip, udp_addr.port()), "udp") {
                Ok(c) => candidates.push(c),
                Err(e) => tracing::warn!(%ip, error = ?e, "address not usable as an ICE candidate"),
            }
            if let Some(t) = tcp_addr {
                if let Ok(c) = Candidate::builder()
                    .tcp()
                    .host(SocketAddr::new(ip, t.port()))
                    .tcptype(TcpType::Passive)
                    .build()
                {
                    candidates.push(c);
                }
            }
        }
        tracing::info!(udp = %udp_addr, tcp = ?tcp_addr, workers, candidates = ?candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>(), "WebRTC engine listening");
        let sessions = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicUsize::new(0));
        // Shard 0 holds the inbound queues' senders (it alone forwards); each stops with the `RtcEngine`.
        let mut inbound_tx = Some(inbound_tx);
        for (index, (rx, inbound)) in receivers.into_iter().zip(inbound_rx).enumerate() {
            let engine = Engine {
                index,
                others: if index == 0 {
                    inbound_tx.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                shard_count: workers,
                routes: shards.routes.clone(),
                admitted: admitted.clone(),
                udp: udp.clone(),
                udp_addr,
                tcp_addr,
                owned_ips: if cfg.public_ips.is_empty() {
                    ips.clone()
                } else {
                    Vec::new()
                },
                candidate_ips: ips.clone(),
                sessions: HashMap::new(),
                tcp_writers: HashMap::new(),
                timers: BTreeSet::new(),
                count: sessions.clone(),
                delay: ["video", "audio"]
                    .map(|kind| metrics::histogram!("roomgate_gateway_delay_seconds", "kind" => kind)),
                batch: Default::default(),
            };
            tasks.push(tokio::spawn(engine.run(rx, inbound)));
        }
        Ok((
            RtcEngine {
                shards,
                next_id: AtomicU64::new(1),
                addrs: EngineAddrs {
                    udp: udp_addr,
                    tcp: tcp_addr,
                },
                candidates,
                sessions,
                admitted,
            },
            tasks,
        ))
    }

    /// The host candidates every session announces (UDP and passive TCP for each candidate address).
    pub fn local_candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    pub async fn add(&self, session: NewSession) -> SessionId {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        self.send_add(session).await
    }

    /// Add a session unless `max` sessions are open (or admitted) already.
    pub async fn try_add(&self, session: NewSession, max: usize) -> Result<SessionId, EngineFull> {
        self.admitted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .map_err(|_| EngineFull(max))?;
        Ok(self.send_add(session).await)
    }

    /// Refuse early (before the SDP work) when `max` sessions are open.
    pub fn check_room(&self, max: usize) -> Result<(), EngineFull> {
        if self.admitted.load(Ordering::Relaxed) >= max {
            return Err(EngineFull(max));
        }
        Ok(())
    }

    async fn send_add(&self, session: NewSession) -> SessionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Routable before the answer goes out, so the peer's first STUN request finds its shard.
        let ufrag = session.ufrag.clone();
        self.shards.routes.add(&ufrag, id);
        if self
            .shards
            .of(id)
            .send(Command::Add(id, Box::new(session)))
            .await
            .is_err()
        {
            // The shard has stopped: the session never runs; take back its route and its admission.
            self.shards.routes.remove(&ufrag, id);
            self.admitted.fetch_sub(1, Ordering::Relaxed);
        }
        id
    }

    pub async fn remove(&self, id: SessionId) {
        let _ = self.shards.of(id).send(Command::Remove(id)).await;
    }

    /// Queue a frame for a session. Waits when the engine is saturated (the caller's track subscription then
    /// falls behind and skips to the next keyframe). False once the engine has stopped.
    pub async fn send_frame(&self, id: SessionId, frame: Frame, live: bool) -> bool {
        self.shards.of(id).send(Command::Frame(id, frame, live)).await.is_ok()
    }

    /// Hand a run of cached frames (a GOP replay) to one session; false when the engine has stopped.
    pub async fn send_frames(&self, id: SessionId, frames: Vec<Frame>) -> bool {
        self.shards.of(id).send(Command::Frames(id, frames)).await.is_ok()
    }

    /// Hand one live frame to every session in `ids`; false when the engine has stopped.
    pub async fn send_frame_to_many(&self, ids: Arc<[SessionId]>, frame: Frame) -> bool {
        let shards = &self.shards;
        if shards.senders.len() == 1 {
            return shards.senders[0].send(Command::FrameToMany(ids, frame)).await.is_ok();
        }
        let mut parts = vec![Vec::new(); shards.senders.len()];
        for &id in ids.iter() {
            parts[shards.index(id)].push(id);
        }
        // Every shard with room gets the frame first; only then wait for the full ones, so one saturated shard
        // does not hold up the frame for the others' viewers.
        let mut full = Vec::new();
        for (shard, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            match shards.senders[shard].try_send(Command::FrameToMany(part.into(), frame.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(cmd)) => full.push((shard, cmd)),
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        for (shard, cmd) in full {
            if shards.senders[shard].send(cmd).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Ask a publishing peer for a keyframe (PLI).
    pub async fn request_keyframe(&self, id: SessionId, mid: Mid) {
        let _ = self.shards.of(id).send(Command::RequestKeyframe(id, mid)).await;
    }

    /// Switch a session to new ICE credentials (both sides), as an ICE restart does.
    pub async fn ice_restart(&self, id: SessionId, local: IceCreds, remote: IceCreds) {
        // Routable before the PATCH is answered (an ICE-TCP connection routes its first STUN at once); the shard
        // retires the old ufrag when it applies the restart.
        self.shards.routes.add(&local.ufrag, id);
        let _ = self.shards.of(id).send(Command::IceRestart { id, local, remote }).await;
    }

    pub async fn add_remote_candidate(&self, id: SessionId, c: Candidate) {
        let _ = self.shards.of(id).send(Command::RemoteCandidate(id, c)).await;
    }

    /// Sessions alive now.
    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}

struct Session {
    rtc: Rtc,
    ufrag: String,
    video: Option<OutTrack>,
    audio: Option<OutTrack>,
    events: mpsc::UnboundedSender<SessionEvent>,
    deadline: Option<Instant>,
    connected: bool,
    /// Video packets were lost on the way out: send nothing until the next keyframe.
    video_needs_keyframe: bool,
}

/// The engine's side of one ICE-TCP connection.
struct TcpPeer {
    writer: mpsc::Sender<(Instant, Vec<u8>)>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

/// One shard: its sessions, their timers and the ICE-TCP peers that talk to them.
struct Engine {
    /// This shard's index; shard 0 reads the UDP socket.
    index: usize,
    shard_count: usize,
    /// Shard 0: every shard's inbound queue, for the packets it reads for them (empty on the others).
    others: Vec<mpsc::Sender<Inbound>>,
    routes: Arc<Routes>,
    /// Shared with `RtcEngine`: released here when a session closes.
    admitted: Arc<AtomicUsize>,
    udp: Arc<super::udp::UdpEndpoint>,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    /// The addresses announced in candidates. str0m accepts a packet only when its destination is one of them,
    /// so a socket bound to 0.0.0.0 (or behind NAT 1:1) reports the candidate address it stands for.
    candidate_ips: Vec<std::net::IpAddr>,
    /// Candidate addresses that belong to this host (NAT 1:1 addresses do not).
    owned_ips: Vec<std::net::IpAddr>,
    sessions: HashMap<SessionId, Session>,
    tcp_writers: HashMap<SocketAddr, TcpPeer>,
    timers: BTreeSet<(Instant, SessionId)>,
    /// Sessions alive on every shard.
    count: Arc<AtomicUsize>,
    /// `roomgate_gateway_delay_seconds` for video and audio, registered once (recorded per frame per viewer).
    delay: [metrics::Histogram; 2],
    /// A session's UDP packets from one `drain`, sent together (GSO) when it is done.
    batch: super::udp::SegmentBatch,
}

impl Engine {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut inbound: mpsc::Receiver<Inbound>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let next = self.timers.first().map(|(t, _)| *t);
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => break,
                },
                Some(p) = inbound.recv() => self.deliver(p.id, Protocol::Udp, p.source, p.destination, &p.packet),
                r = self.udp.recv(&mut buf), if self.index == 0 => match r {
                    Ok((n, source, to)) => {
                        let local = match to {
                            Some(ip) if self.candidate_ips.contains(&ip) => SocketAddr::new(ip, self.udp_addr.port()),
                            _ => self.local_for(source, self.udp_addr),
                        };
                        self.receive(Protocol::Udp, source, local, &buf[..n]);
                    }
                    Err(e) => tracing::debug!(error = %e, "UDP receive error"),
                },
                _ = sleep => self.timeouts(),
            }
        }
        for id in self.sessions.keys().copied().collect::<Vec<_>>() {
            self.close(id, "engine stopped".into());
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Add(id, s) => {
                let NewSession {
                    rtc,
                    ufrag,
                    video,
                    audio,
                    events,
                } = *s;
                self.sessions.insert(
                    id,
                    Session {
                        rtc,
                        ufrag,
                        video,
                        audio,
                        events,
                        deadline: None,
                        connected: false,
                        video_needs_keyframe: false,
                    },
                );
                // `roomgate_rtc_sessions` is read from this count when /metrics is scraped.
                self.count.fetch_add(1, Ordering::Relaxed);
                self.drain(id);
            }
            Command::Remove(id) => self.close(id, "removed".into()),
            Command::Frame(id, frame, live) => self.write_frame(id, frame, live),
            Command::Frames(id, frames) => {
                for frame in frames {
                    self.write_frame(id, frame, false);
                }
            }
            Command::FrameToMany(ids, frame) => {
                for &id in ids.iter() {
                    self.write_frame(id, frame.clone(), true);
                }
            }
            Command::RemoteCandidate(id, c) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    if catch_unwind(AssertUnwindSafe(|| s.rtc.add_remote_candidate(c))).is_err() {
                        self.close(id, "str0m panicked on a remote candidate".into());
                        return;
                    }
                    self.drain(id);
                }
            }
            Command::RequestKeyframe(id, mid) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    let asked = catch_unwind(AssertUnwindSafe(|| {
                        s.rtc
                            .writer(mid)
                            .map(|mut w| w.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli))
                    }));
                    if matches!(asked, Ok(Some(Ok(())))) {
                        self.drain(id);
                    }
                }
            }
            Command::IceRestart { id, local, remote } => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    self.routes.rename(&s.ufrag, &local.ufrag, id);
                    s.ufrag = local.ufrag.clone();
                    let restarted = catch_unwind(AssertUnwindSafe(|| {
                        let mut api = s.rtc.direct_api();
                        api.set_local_ice_credentials(local);
                        api.set_remote_ice_credentials(remote);
                    }));
                    if restarted.is_err() {
                        self.close(id, "str0m panicked on an ICE restart".into());
                        return;
                    }
                    self.drain(id);
                }
            }
            Command::TcpOpen { peer, writer, lost } => {
                self.tcp_writers.insert(peer, TcpPeer { writer, lost });
            }
            Command::TcpPacket { peer, packet } => {
                if let Some(bound) = self.tcp_addr {
                    let local = self.local_for(peer, bound);
                    self.receive(Protocol::Tcp, peer, local, &packet);
                }
            }
            Command::TcpClosed { peer } => {
                self.tcp_writers.remove(&peer);
                self.routes.forget((Protocol::Tcp, peer));
            }
        }
    }

    /// The candidate address a packet from `source` arrived on: the bound address when it is announced as is;
    /// otherwise (bound to 0.0.0.0, or NAT 1:1 addresses) the candidate equal to the sender's address (a client on
    /// this machine), else the first candidate of its family.
    fn local_for(&self, source: SocketAddr, bound: SocketAddr) -> SocketAddr {
        if self.candidate_ips.contains(&bound.ip()) {
            return bound;
        }
        let ip = self
            .candidate_ips
            .iter()
            .find(|ip| **ip == source.ip())
            .or_else(|| self.candidate_ips.iter().find(|ip| ip.is_ipv4() == source.is_ipv4()))
            .or(self.candidate_ips.first())
            .copied()
            .unwrap_or(bound.ip());
        SocketAddr::new(ip, bound.port())
    }

    /// Route a packet: known peer address first, else the ufrag of a STUN request; a session of another shard
    /// gets it through that shard's queue.
    fn receive(&mut self, proto: Protocol, source: SocketAddr, destination: SocketAddr, packet: &[u8]) {
        let Some(id) = self.routes.route((proto, source), packet) else {
            metrics::counter!("roomgate_rtc_unrouted_packets_total").increment(1);
            return;
        };
        let shard = (id % self.shard_count as u64) as usize;
        if shard == self.index {
            return self.deliver(id, proto, source, destination, packet);
        }
        // UDP read by shard 0 goes on; an ICE-TCP connection belongs to its shard, so a TCP packet naming a
        // session elsewhere (its own session closed, and it names another) is dropped.
        let forwarded = proto == Protocol::Udp
            && self.others.get(shard).is_some_and(|q| {
                q.try_send(Inbound {
                    id,
                    source,
                    destination,
                    packet: packet.to_vec(),
                })
                .is_ok()
            });
        if !forwarded {
            metrics::counter!("roomgate_rtc_receive_dropped_total").increment(1);
        }
    }

    /// Hand a packet to one of this shard's sessions.
    fn deliver(&mut self, id: SessionId, proto: Protocol, source: SocketAddr, destination: SocketAddr, packet: &[u8]) {
        let Ok(contents) = packet.try_into() else {
            return;
        };
        let input = Input::Receive(
            Instant::now(),
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        self.input(id, input);
    }

    fn timeouts(&mut self) {
        let now = Instant::now();
        while let Some(&(t, id)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if let Some(s) = self.sessions.get_mut(&id) {
                s.deadline = None;
            }
            self.input(id, Input::Timeout(now));
        }
    }

    fn input(&mut self, id: SessionId, input: Input) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        match catch_unwind(AssertUnwindSafe(|| s.rtc.handle_input(input))) {
            Ok(Ok(())) => self.drain(id),
            Ok(Err(e)) => self.close(id, format!("WebRTC error: {e}")),
            Err(_) => self.close(id, "internal error in the WebRTC stack (session ended)".into()),
        }
    }

    fn write_frame(&mut self, id: SessionId, frame: Frame, live: bool) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        if !s.connected {
            return;
        }
        let (track, freq) = match frame.codec {
            Codec::H264 => (s.video, Frequency::NINETY_KHZ),
            Codec::Opus => (s.audio, Frequency::FORTY_EIGHT_KHZ),
        };
        let Some(track) = track else { return };
        if frame.codec.is_video() {
            if s.video_needs_keyframe && !frame.keyframe {
                return;
            }
            s.video_needs_keyframe = false;
        }
        let received_at = frame.received_at;
        let written = catch_unwind(AssertUnwindSafe(|| {
            let Some(w) = s.rtc.writer(track.mid) else {
                return Ok(());
            };
            w.write(
                track.pt,
                received_at,
                MediaTime::new(frame.pts, freq),
                frame.data.clone(),
            )
        }));
        match written {
            Ok(Ok(())) => {
                self.drain(id);
                if live {
                    let kind = usize::from(!frame.codec.is_video());
                    self.delay[kind].record(received_at.elapsed().as_secs_f64());
                }
            }
            Ok(Err(e)) => tracing::debug!(session = id, error = %e, "frame not written"),
            Err(_) => self.close(id, "internal error in the WebRTC stack (session ended)".into()),
        }
    }

    /// Poll a session until it has nothing more to say; send what it transmits, act on its events.
    fn drain(&mut self, id: SessionId) {
        self.poll_session(id);
        self.flush_udp();
    }

    fn flush_udp(&mut self) {
        let lost = self.batch.flush(&self.udp);
        if lost > 0 {
            metrics::counter!("roomgate_rtc_send_dropped_total", "proto" => "udp").increment(lost as u64);
        }
    }

    fn poll_session(&mut self, id: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(&id) else {
                return;
            };
            if !s.rtc.is_alive() {
                self.close(id, "peer disconnected".into());
                return;
            }
            let out = match catch_unwind(AssertUnwindSafe(|| s.rtc.poll_output())) {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => {
                    self.close(id, format!("WebRTC error: {e}"));
                    return;
                }
                Err(_) => {
                    self.close(id, "internal error in the WebRTC stack (session ended)".into());
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    if s.deadline != Some(t) {
                        if let Some(old) = s.deadline.take() {
                            self.timers.remove(&(old, id));
                        }
                        s.deadline = Some(t);
                        self.timers.insert((t, id));
                    }
                    return;
                }
                Output::Transmit(t) => {
                    match t.proto {
                        Protocol::Udp => {
                            // From the address the session uses (a candidate we really own; not a NAT 1:1 address).
                            let from = Some(t.source.ip()).filter(|ip| self.owned_ips.contains(ip));
                            if !self.batch.push(&t.contents, t.destination, from) {
                                let lost = self.batch.flush(&self.udp);
                                if lost > 0 {
                                    metrics::counter!("roomgate_rtc_send_dropped_total", "proto" => "udp")
                                        .increment(lost as u64);
                                }
                                self.batch.push(&t.contents, t.destination, from);
                            }
                        }
                        _ => {
                            // A peer that is not reading fast enough loses packets (a full queue here, stale ones
                            // in its writer); its video restarts at the next keyframe.
                            let (queued, lost_before) = match self.tcp_writers.get(&t.destination) {
                                Some(p) => (
                                    p.writer.try_send((Instant::now(), t.contents.to_vec())).is_ok(),
                                    p.lost.swap(false, Ordering::Relaxed),
                                ),
                                None => (false, false),
                            };
                            if !queued {
                                metrics::counter!("roomgate_rtc_send_dropped_total", "proto" => "tcp").increment(1);
                            }
                            if !queued || lost_before {
                                s.video_needs_keyframe = true;
                            }
                        }
                    }
                }
                Output::Event(e) => match e {
                    Event::Connected => {
                        s.connected = true;
                        let _ = s.events.send(SessionEvent::Connected);
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        self.close(id, "ICE disconnected".into());
                        return;
                    }
                    Event::MediaData(d) => {
                        let _ = s.events.send(SessionEvent::Media(Box::new(d)));
                    }
                    Event::KeyframeRequest(_) => {
                        // Resume at the next keyframe rather than send pictures the peer cannot decode.
                        s.video_needs_keyframe = true;
                        let _ = s.events.send(SessionEvent::KeyframeRequest);
                    }
                    _ => {}
                },
            }
        }
    }

    fn close(&mut self, id: SessionId, reason: String) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        let _ = catch_unwind(AssertUnwindSafe(|| s.rtc.disconnect()));
        if let Some(t) = s.deadline {
            self.timers.remove(&(t, id));
        }
        self.routes.remove(&s.ufrag, id);
        self.admitted.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(session = id, %reason, "WebRTC session closed");
        let _ = s.events.send(SessionEvent::Closed(reason));
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}
