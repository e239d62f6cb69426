//! `RtcEngine`: the shards (tasks) that run every str0m `Rtc` behind one UDP port and one ICE-TCP port.
//!
//! Sessions are spread over `rtc.workers` shards by id, so the media of many viewers is packetized and encrypted
//! on several cores and a storm of DTLS handshakes on one shard leaves the others' media alone. Shard 0 reads the
//! UDP socket and hands each packet to the shard that owns its session (`Routes`); every shard sends on the
//! socket itself. An ICE-TCP connection talks to its session's shard directly. A publishing session's frames are
//! taken on its shard by the `MediaSink` its owner set, so a packet becomes a room frame without another task.

use super::routes::Routes;
use super::shard::Shard;
use super::{candidate_ips, tcp, EngineAddrs};
use crate::config::RtcConfig;
use crate::media::Frame;
use bytes::BytesMut;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use str0m::media::{MediaData, Mid, Pt};
use str0m::net::TcpType;
use str0m::{Candidate, IceCreds, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A session's id in the engine: unique per engine, from 1; it picks the shard (`id % shards`).
pub type SessionId = u64;

/// Commands queued for the engine before a sender waits (frames, packets from TCP peers, control).
const ENGINE_QUEUE: usize = 16 * 1024;

/// Where one outgoing track is written: its m-line and payload type.
#[derive(Debug, Clone, Copy)]
pub struct OutTrack {
    /// The m-line (`a=mid`) the track is sent on.
    pub mid: Mid,
    /// The negotiated payload type its RTP packets carry.
    pub pt: Pt,
}

/// A negotiated session to run. `ufrag` is its local ICE ufrag (how its first STUN request finds it).
pub struct NewSession {
    /// The str0m session, with the offer accepted and the answer made.
    pub rtc: Rtc,
    /// Its local ICE ufrag: incoming STUN requests with it are routed to this session.
    pub ufrag: String,
    /// Where H.264 frames are written; `None` when nothing is sent (a WHIP publisher).
    pub video: Option<OutTrack>,
    /// Where Opus frames are written; `None` when nothing is sent (a WHIP publisher).
    pub audio: Option<OutTrack>,
    /// Where the session's owner hears its [`SessionEvent`]s.
    pub events: mpsc::UnboundedSender<SessionEvent>,
}

/// Takes a publishing session's depacketized frames where str0m hands them out, on the session's shard: a frame
/// goes from the peer's packets into the room without waking another task. It must not block (it runs among the
/// other sessions of the shard); what it cannot finish at once it hands to a thread or task of its own.
pub trait MediaSink: Send {
    /// One depacketized frame from the peer.
    fn media(&mut self, data: &MediaData) -> MediaVerdict;
}

/// What a [`MediaSink`] made of a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaVerdict {
    /// Taken (or dropped on purpose): go on.
    Taken,
    /// Ask the peer for a keyframe (PLI) on this m-line.
    RequestKeyframe(Mid),
    /// End the session: the peer sends what the gateway refuses (the reason goes to the owner as
    /// [`SessionEvent::Ended`]).
    End(String),
}

/// What a session's owner hears from the engine.
#[derive(Debug)]
pub enum SessionEvent {
    /// ICE and DTLS are up: media may flow.
    Connected,
    /// The peer asked for a keyframe (PLI/FIR).
    KeyframeRequest,
    /// The session's [`MediaSink`] refused the peer's media; `Closed` follows.
    Ended(String),
    /// The session is gone (peer left, timed out, failed, or was removed).
    Closed(String),
}

pub(crate) enum Command {
    Add(SessionId, Box<NewSession>),
    Remove(SessionId),
    /// Where a publishing session's frames go from now on.
    SetMediaSink(SessionId, Box<dyn MediaSink>),
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
    pub(super) id: SessionId,
    pub(super) source: SocketAddr,
    pub(super) destination: SocketAddr,
    pub(super) packet: Vec<u8>,
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
    /// Where the engine listens, as bound (the config may ask for port 0).
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
        CRYPTO.call_once(|| (*super::crypto_provider()).clone().install_process_default());

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
            let shard = Shard {
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
                replays: Default::default(),
                unsendable_logged: None,
            };
            tasks.push(tokio::spawn(shard.run(rx, inbound)));
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

    /// Add a session without the `max` check of `try_add` (it still counts toward it).
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

    /// End a session (its owner hears `Closed`); nothing happens when it is gone already.
    pub async fn remove(&self, id: SessionId) {
        let _ = self.shards.of(id).send(Command::Remove(id)).await;
    }

    /// Hand the frames a publishing session receives to `sink`, on the session's shard (until then they are dropped;
    /// set it before the answer goes out and none is lost: the peer cannot connect before it has the answer).
    pub async fn set_media_sink(&self, id: SessionId, sink: Box<dyn MediaSink>) {
        let _ = self.shards.of(id).send(Command::SetMediaSink(id, sink)).await;
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

    /// Give a session a remote ICE candidate (trickled in by PATCH).
    pub async fn add_remote_candidate(&self, id: SessionId, c: Candidate) {
        let _ = self.shards.of(id).send(Command::RemoteCandidate(id, c)).await;
    }

    /// Sessions alive now.
    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }
}
