//! One engine shard: a task that owns some of the sessions (str0m `Rtc`s), their timers and the ICE-TCP peers
//! that talk to them. It takes commands (new sessions, frames, packets), feeds str0m bytes and time, and sends
//! what str0m gives back: UDP batched per session (GSO), TCP through each peer's bounded queue. A publishing
//! session's frames go to its `MediaSink` here, as str0m completes them.

use super::engine::{Command, Inbound, MediaSink, MediaVerdict, NewSession, OutTrack, SessionEvent, SessionId};
use super::routes::Routes;
use crate::media::rtp::{self, RtpPayload};
use crate::media::{Frame, AUDIO_CLOCK};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::mpsc;

pub(super) struct RtcSession {
    rtc: Rtc,
    ufrag: String,
    video: Option<TrackTx>,
    audio: Option<TrackTx>,
    events: mpsc::UnboundedSender<SessionEvent>,
    /// A publishing peer's frames go here, on this shard (`None` for viewers).
    media: Option<Box<dyn MediaSink>>,
    deadline: Option<Instant>,
    connected: bool,
    /// Video packets were lost on the way out: send nothing until the next keyframe.
    video_needs_keyframe: bool,
    /// A GOP replay went into the video resend window since it was last made: the next live keyframe starts a new
    /// one (see [`VIDEO_RESEND_WINDOW`]).
    resend_window_inflated: bool,
}

/// How long a viewer's video packets are kept for resending (NACK), as libwebrtc's sender keeps them: a NACK arrives
/// about one round trip after the loss, and a retransmission later than ~1 s is behind the viewer's jitter buffer
/// anyway (str0m's default keeps 3 s).
///
/// str0m keeps the window in a ring of packet records (~430 bytes each; the payloads are shared) that grows, up to
/// [`VIDEO_SEND_PACKETS`] records, to the most packets it ever held at once and never shrinks. A GOP replay (a viewer
/// joining, or asking for a keyframe) puts up to a whole GOP into it at once, on top of the live second, which would
/// then stay allocated for the session's life. So after a replay the window is made anew just before the next live
/// keyframe is written: from there on the viewer needs nothing older (a keyframe starts a new GOP), and the new ring
/// grows only to one second of live video. What this gives up is a resend of a packet lost within a round trip
/// before that keyframe (once per replay), at worst a few frames the player skips while it waits for the keyframe,
/// which follows at once. (A source that never sends another keyframe keeps the grown ring, as before.)
const VIDEO_RESEND_WINDOW: Duration = Duration::from_secs(1);
/// Most video packets a viewer's resend ring holds (older ones are overwritten): one second of 6 Mb/s video.
pub const VIDEO_SEND_PACKETS: usize = 600;
/// The share of a session's video bytes that may be resends; above it, NACKs are not answered (a player cannot make
/// the gateway send its stream over again).
const RESEND_RATIO_CAP: f32 = 0.15;

/// Give a session's video send stream an empty resend window (see [`VIDEO_RESEND_WINDOW`]).
fn new_resend_window(rtc: &mut Rtc, mid: str0m::media::Mid) {
    if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
        tx.set_rtx_cache(VIDEO_SEND_PACKETS, VIDEO_RESEND_WINDOW, Some(RESEND_RATIO_CAP));
    }
}

/// An outgoing track of a session in str0m's RTP mode: where its packets go and the sequence number of the next.
/// The payloads are cut once per frame for every session of the shard (`media::rtp`); each session numbers them.
/// Not `Copy`: a copy would hand out the same sequence numbers twice (the viewer's SRTP replay check drops them).
#[derive(Debug)]
struct TrackTx {
    track: OutTrack,
    seq: SeqNo,
}

impl TrackTx {
    fn new(track: OutTrack) -> TrackTx {
        // A random first sequence number (RFC 3550 5.1), in the first roll-over period.
        TrackTx {
            track,
            seq: SeqNo::from(u64::from(rand::random::<u16>())),
        }
    }
}

/// The largest RTP payload: str0m's datagram target less the SRTP tag, rounded down to the cipher block, as its
/// own packetizer computes it (header and extensions fit in what its MTU leaves).
const PAYLOAD_MTU: usize = {
    let rtp = str0m::DATAGRAM_MTU_TARGET - 16;
    rtp - rtp % 16
};

/// The payloads of frames replayed from a GOP cache, by the frame's bytes. Viewers that join at once (or ask for
/// a keyframe) each get the same cached frames: they are cut once for all of them, and the sessions' resend windows
/// share the payloads, instead of a copy of the GOP per joiner. Only replayed video is kept (live frames are cut
/// once anyway; Opus payloads are the frame's own bytes), and an entry unused for `REPLAY_PAYLOADS_TTL` goes at the
/// next replay or live keyframe, so what it holds is bounded by the GOPs being replayed now.
#[derive(Default)]
pub(super) struct ReplayPayloads {
    entries: HashMap<usize, ReplayEntry>,
}

struct ReplayEntry {
    /// Held so that the address the entry is keyed by cannot be reused by another frame while it exists.
    data: Arc<[u8]>,
    payloads: Arc<[RtpPayload]>,
    used: Instant,
}

/// How long the payloads of a replayed frame are kept for the next joiner.
const REPLAY_PAYLOADS_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl ReplayPayloads {
    /// The payloads of `frame`, cut now or by an earlier replay of the same bytes.
    fn get(&mut self, frame: &Frame, now: Instant) -> Arc<[RtpPayload]> {
        if !frame.codec.is_video() || frame.data.is_empty() {
            return rtp::payloads(frame, PAYLOAD_MTU).into();
        }
        let key = Arc::as_ptr(&frame.data) as *const u8 as usize;
        if let Some(e) = self.entries.get_mut(&key) {
            if Arc::ptr_eq(&e.data, &frame.data) {
                e.used = now;
                return e.payloads.clone();
            }
        }
        let payloads: Arc<[RtpPayload]> = rtp::payloads(frame, PAYLOAD_MTU).into();
        let entry = ReplayEntry {
            data: frame.data.clone(),
            payloads: payloads.clone(),
            used: now,
        };
        self.entries.insert(key, entry);
        payloads
    }

    /// Drop the entries no replay used for `REPLAY_PAYLOADS_TTL`.
    fn expire(&mut self, now: Instant) {
        if !self.entries.is_empty() {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.used) < REPLAY_PAYLOADS_TTL);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// How late a session's timeout may run. str0m asks for one about every 50 ms per session (RTCP reports, NACK
/// checks, DTLS retransmits, the wait for reordered packets after a loss), none of which minds a few ms more; a
/// shard with media flowing wakes for packets and frames every few milliseconds anyway, and runs every timeout due
/// by then (`Shard::run`). So it wakes for a timer only when nothing else woke it within this slack after the deadline.
/// Packets str0m queues do not wait for it: a written frame's packets leave at once (`write_frame` runs the
/// timeout they need), a NACK's resends within the receive that brought it, and anything else due now within the
/// same poll (`DUE_NOW_PER_POLL` timeouts) or at the top of the next turn of the loop.
const TIMER_SLACK: Duration = Duration::from_millis(10);

/// The instant a frame's RTP time stands for, which str0m's sender reports pair with that time (players line
/// audio up with video by them): when the frame was in hand, less, for Opus, the packet's own duration, since a
/// packet's time is that of its first sample and it is complete only with its last (40 ms later for transcoded
/// audio by default). Without it, audio would play that much behind the picture.
fn capture_instant(frame: &Frame) -> Instant {
    match frame.codec {
        crate::media::Codec::Opus => crate::media::ts::opus_packet_samples(&frame.data)
            .and_then(|n| {
                frame
                    .received_at
                    .checked_sub(Duration::from_micros(u64::from(n) * 1_000_000 / u64::from(AUDIO_CLOCK)))
            })
            .unwrap_or(frame.received_at),
        crate::media::Codec::H264 => frame.received_at,
    }
}

/// Ask the peer for a keyframe (PLI) on the m-line `mid`: whether it was asked; `Err` if str0m panicked.
fn request_pli(rtc: &mut Rtc, mid: str0m::media::Mid) -> Result<bool, ()> {
    catch_unwind(AssertUnwindSafe(|| {
        rtc.writer(mid)
            .is_some_and(|mut w| w.request_keyframe(None, str0m::media::KeyframeRequestKind::Pli).is_ok())
    }))
    .map_err(|_| ())
}

/// Timeouts already due that one poll of a session handles at once; any more go through the timer set, so a
/// session that keeps asking cannot hold the shard.
const DUE_NOW_PER_POLL: u32 = 4;

/// The engine's side of one ICE-TCP connection.
pub(super) struct TcpPeer {
    writer: mpsc::Sender<(Instant, Vec<u8>)>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

/// One shard: its sessions, their timers and the ICE-TCP peers that talk to them.
pub(super) struct Shard {
    /// This shard's index; shard 0 reads the UDP socket.
    pub(super) index: usize,
    pub(super) shard_count: usize,
    /// Shard 0: every shard's inbound queue, for the packets it reads for them (empty on the others).
    pub(super) others: Vec<mpsc::Sender<Inbound>>,
    pub(super) routes: Arc<Routes>,
    /// Shared with `RtcEngine`: released here when a session closes.
    pub(super) admitted: Arc<AtomicUsize>,
    pub(super) udp: Arc<super::udp::UdpEndpoint>,
    pub(super) udp_addr: SocketAddr,
    pub(super) tcp_addr: Option<SocketAddr>,
    /// The addresses announced in candidates. str0m accepts a packet only when its destination is one of them,
    /// so a socket bound to 0.0.0.0 (or behind NAT 1:1) reports the candidate address it stands for.
    pub(super) candidate_ips: Vec<std::net::IpAddr>,
    /// Candidate addresses that belong to this host (NAT 1:1 addresses do not).
    pub(super) owned_ips: Vec<std::net::IpAddr>,
    /// Boxed: an `Rtc` is several kilobytes, and the table keeps spare slots and moves its entries when it grows.
    pub(super) sessions: HashMap<SessionId, Box<RtcSession>>,
    pub(super) tcp_writers: HashMap<SocketAddr, TcpPeer>,
    pub(super) timers: BTreeSet<(Instant, SessionId)>,
    /// Sessions alive on every shard.
    pub(super) count: Arc<AtomicUsize>,
    /// `roomgate_gateway_delay_seconds` for video and audio, registered once (recorded per frame per viewer).
    pub(super) delay: [metrics::Histogram; 2],
    /// A session's UDP packets from one `drain`, sent together (GSO) when it is done.
    pub(super) batch: super::udp::SegmentBatch,
    /// Payloads of the GOP frames being replayed to joiners, shared by all of them.
    pub(super) replays: ReplayPayloads,
    /// When `unsendable` last logged.
    pub(super) unsendable_logged: Option<Instant>,
}

impl Shard {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut inbound: mpsc::Receiver<Inbound>) {
        let mut buf = vec![0u8; 2048];
        loop {
            // Timeouts due by now run first, whatever woke the shard: most need no wake-up of their own.
            self.timeouts();
            let next = self.timers.first().map(|(t, _)| *t + TIMER_SLACK);
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
                // Only a wake-up: the timeouts now due run at the top of the loop.
                _ = sleep => {}
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
                let video_mid = video.as_ref().map(|v| v.mid);
                self.sessions.insert(
                    id,
                    Box::new(RtcSession {
                        rtc,
                        ufrag,
                        video: video.map(TrackTx::new),
                        audio: audio.map(TrackTx::new),
                        events,
                        media: None,
                        deadline: None,
                        connected: false,
                        video_needs_keyframe: false,
                        resend_window_inflated: false,
                    }),
                );
                // `roomgate_rtc_sessions` is read from this count when /metrics is scraped.
                self.count.fetch_add(1, Ordering::Relaxed);
                if let (Some(mid), Some(s)) = (video_mid, self.sessions.get_mut(&id)) {
                    let rtc = &mut s.rtc;
                    if catch_unwind(AssertUnwindSafe(|| new_resend_window(rtc, mid))).is_err() {
                        self.close(id, "internal error in the WebRTC stack (session ended)".into());
                        return;
                    }
                }
                self.drain(id);
            }
            Command::Remove(id) => self.close(id, "removed".into()),
            Command::SetMediaSink(id, sink) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.media = Some(sink);
                }
            }
            Command::Frame(id, frame, live) => {
                let payloads = rtp::payloads(&frame, PAYLOAD_MTU);
                self.write_frame(id, &frame, &payloads, live);
            }
            Command::Frames(id, frames) => {
                let now = Instant::now();
                self.replays.expire(now);
                let mut video_written = false;
                for frame in frames {
                    let payloads = self.replays.get(&frame, now);
                    video_written |= self.write_frame(id, &frame, &payloads, false) && frame.codec.is_video();
                }
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.resend_window_inflated |= video_written;
                }
            }
            Command::FrameToMany(ids, frame) => {
                if frame.keyframe {
                    self.replays.expire(Instant::now());
                }
                // Cut once; every session sends the same payloads under its own header.
                let payloads = rtp::payloads(&frame, PAYLOAD_MTU);
                if payloads.is_empty() && !frame.data.is_empty() {
                    self.unsendable(&frame);
                }
                for &id in ids.iter() {
                    self.write_frame(id, &frame, &payloads, true);
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
                    if matches!(request_pli(&mut s.rtc, mid), Ok(true)) {
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

    /// A live frame no viewer can be sent (`rtp::payloads`): counted (by each shard with viewers of it), and logged
    /// at most once a minute per shard.
    fn unsendable(&mut self, frame: &Frame) {
        let kind = if frame.codec.is_video() { "video" } else { "audio" };
        metrics::counter!("roomgate_rtc_unsendable_frames_total", "kind" => kind).increment(1);
        let now = Instant::now();
        if self
            .unsendable_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.unsendable_logged = Some(now);
            tracing::warn!(
                kind,
                bytes = frame.data.len(),
                "a frame cannot be sent to viewers (an Opus packet over {} bytes, or a picture with no NAL unit to send \
                 or too many): dropped",
                rtp::OPUS_PACKET_MAX
            );
        }
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

    /// Send one frame's payloads on a session: numbered in its sequence, stamped with the frame's time. Whether
    /// they went into its send stream.
    fn write_frame(&mut self, id: SessionId, frame: &Frame, payloads: &[RtpPayload], live: bool) -> bool {
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        if !s.connected {
            return false;
        }
        let video = frame.codec.is_video();
        if payloads.is_empty() {
            // A frame that cannot be sent (see `rtp::payloads`): the pictures after it would not decode.
            s.video_needs_keyframe |= video;
            return false;
        }
        let Some(tx) = (if video { s.video.as_mut() } else { s.audio.as_mut() }) else {
            return false;
        };
        if video {
            if s.video_needs_keyframe && !frame.keyframe {
                return false;
            }
            s.video_needs_keyframe = false;
        }
        let received_at = frame.received_at;
        let wallclock = capture_instant(frame);
        // The RTP time is the frame's time in the codec's clock (90 kHz, 48 kHz), as the frame API stamps it.
        let time = frame.pts as u32;
        let renew_window = live && video && frame.keyframe && std::mem::take(&mut s.resend_window_inflated);
        let rtc = &mut s.rtc;
        let written = catch_unwind(AssertUnwindSafe(|| {
            if renew_window {
                new_resend_window(rtc, tx.track.mid);
            }
            let mut api = rtc.direct_api();
            let Some(stream) = api.stream_tx_by_mid(tx.track.mid, None) else {
                return false;
            };
            for p in payloads {
                let write = RtpWrite::new(tx.track.pt, tx.seq.inc(), time, wallclock, p.data.clone())
                    .marker(p.marker)
                    .nackable(video);
                stream.write_rtp(write);
            }
            true
        }));
        match written {
            Ok(true) => {
                // str0m sends queued packets on a timeout: run it now rather than poll first only to be told so.
                self.input(id, Input::Timeout(Instant::now()));
                if live {
                    self.delay[usize::from(!video)].record(received_at.elapsed().as_secs_f64());
                }
                true
            }
            // No send stream for the track (WHEP refuses such offers; kept so a session never writes to nothing).
            Ok(false) => {
                self.close(id, "the player does not receive this track".into());
                false
            }
            Err(_) => {
                self.close(id, "internal error in the WebRTC stack (session ended)".into());
                false
            }
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
        // Timeouts already due are handled here rather than through the timer set and another turn of the loop:
        // str0m asks for one when it has something queued outside a receive or a timeout (a PLI we request, its
        // pacer's retry after a poll that sent nothing). A written frame's timeout `write_frame` runs itself.
        let mut due_now = DUE_NOW_PER_POLL;
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
                    let now = Instant::now();
                    if t <= now && due_now > 0 {
                        due_now -= 1;
                        match catch_unwind(AssertUnwindSafe(|| s.rtc.handle_input(Input::Timeout(now)))) {
                            Ok(Ok(())) => continue,
                            Ok(Err(e)) => self.close(id, format!("WebRTC error: {e}")),
                            Err(_) => self.close(id, "internal error in the WebRTC stack (session ended)".into()),
                        }
                        return;
                    }
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
                        let Some(sink) = s.media.as_mut() else { continue };
                        let verdict = catch_unwind(AssertUnwindSafe(|| sink.media(&d))).unwrap_or_else(|_| {
                            tracing::error!(session = id, "the publisher's media sink panicked; session ended");
                            MediaVerdict::End("internal error in the publisher's media (session ended)".into())
                        });
                        match verdict {
                            MediaVerdict::Taken => {}
                            // The PLI leaves with the session's next output, in this same poll.
                            MediaVerdict::RequestKeyframe(mid) => {
                                if request_pli(&mut s.rtc, mid).is_err() {
                                    self.close(id, "internal error in the WebRTC stack (session ended)".into());
                                    return;
                                }
                            }
                            MediaVerdict::End(reason) => {
                                let _ = s.events.send(SessionEvent::Ended(reason.clone()));
                                self.close(id, reason);
                                return;
                            }
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use std::time::Duration;

    fn frame(codec: Codec, pts: u64, data: &Arc<[u8]>) -> Frame {
        Frame {
            codec,
            pts,
            keyframe: pts == 0,
            data: data.clone(),
            received_at: Instant::now(),
        }
    }

    #[test]
    fn an_opus_packet_stands_for_the_instant_of_its_first_sample() {
        // TOC 0xFC: CELT fullband 20 ms, code 0 (one frame); 0xFD: code 1 (two frames, 40 ms).
        let one = frame(Codec::Opus, 960, &Arc::from(&[0xFC, 1, 2][..]));
        assert_eq!(one.received_at - capture_instant(&one), Duration::from_millis(20));
        let two = frame(Codec::Opus, 960, &Arc::from(&[0xFD, 1, 2][..]));
        assert_eq!(two.received_at - capture_instant(&two), Duration::from_millis(40));
        let malformed = frame(Codec::Opus, 960, &Arc::from(&[][..]));
        assert_eq!(capture_instant(&malformed), malformed.received_at);
        let picture = frame(Codec::H264, 0, &Arc::from(&[0, 0, 0, 1, 0x65][..]));
        assert_eq!(capture_instant(&picture), picture.received_at);
    }

    #[test]
    fn a_gop_replayed_to_many_joiners_is_cut_once_and_expires_when_unused() {
        let mut replays = ReplayPayloads::default();
        let t0 = Instant::now();
        let mut big = vec![0, 0, 0, 1, 0x65];
        big.extend(std::iter::repeat_n(7u8, 3000));
        let idr: Arc<[u8]> = big.into();
        let delta: Arc<[u8]> = Arc::from(&[0, 0, 0, 1, 0x41, 1, 2][..]);
        let first = replays.get(&frame(Codec::H264, 0, &idr), t0);
        assert!(first.len() > 1, "fragmented");
        // Another joiner, and a PLI replay restamped after the live edge: the same bytes, the same payloads.
        let again = replays.get(&frame(Codec::H264, 0, &idr), t0 + Duration::from_millis(300));
        let restamped = replays.get(&frame(Codec::H264, 9000, &idr), t0 + Duration::from_millis(600));
        assert!(Arc::ptr_eq(&first, &again) && Arc::ptr_eq(&first, &restamped));
        // Other bytes (even equal ones) are other frames.
        let copy: Arc<[u8]> = Arc::from(&idr[..]);
        assert!(!Arc::ptr_eq(&first, &replays.get(&frame(Codec::H264, 0, &copy), t0)));
        replays.get(&frame(Codec::H264, 3000, &delta), t0);
        // Opus payloads are the frame's own bytes: nothing to keep.
        let opus: Arc<[u8]> = Arc::from(&[0xfc, 1][..]);
        replays.get(&frame(Codec::Opus, 960, &opus), t0);
        assert_eq!(replays.len(), 3);
        // Unused for the TTL: gone; the one used 600 ms in stays a little longer.
        replays.expire(t0 + REPLAY_PAYLOADS_TTL);
        assert_eq!(replays.len(), 1);
        replays.expire(t0 + Duration::from_millis(600) + REPLAY_PAYLOADS_TTL);
        assert_eq!(replays.len(), 0);
    }
}
