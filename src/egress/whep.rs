//! `WhepService`: a WHEP viewer of one anchor. The offer is answered with the anchor's real H.264
//! `profile-level-id` (packetization-mode 1) and Opus; once ICE and DTLS are up, the viewer joins its anchor's
//! `fanout`: one task per anchor with viewers, subscribed once to each track, that sends a new viewer the cached
//! GOP (so the picture appears at once) and then hands each live frame to the WebRTC engine once for all the
//! anchor's viewers.

use crate::access::{authorize_play, Denied};
use crate::auth::unix_now;
use crate::config::Config;
use crate::room::RoomRef;
use crate::room::{Participant, RoomHub, RoomKey};
use crate::rtc::{
    random_token, NewSession, OutTrack, PatchResult, ResourceError, RtcEngine, SessionEvent, SessionId,
    SessionResources,
};
use std::sync::Arc;
use std::time::Duration;
use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::MediaKind;
use str0m::{IceCreds, Rtc};
use tokio::sync::mpsc;

/// At most one GOP replay per viewer in this interval, however often it sends PLIs.
const PLI_BURST_INTERVAL: Duration = Duration::from_secs(1);
/// How long a viewer's video packets are kept for resending (NACK). A NACK arrives about one round trip after the
/// loss, and a retransmission later than ~1 s is behind the viewer's jitter buffer anyway; str0m's default keeps 3 s,
/// which per viewer is 3 s of the anchor's video in memory.
const VIDEO_RESEND_WINDOW: Duration = Duration::from_secs(1);
/// Most video packets a viewer's session holds (written and not yet sent, plus the resend window): one second of a
/// 6 Mb/s anchor.
const VIDEO_SEND_PACKETS: usize = 600;

/// Why a WHEP request failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error("{0}")]
    Refused(#[from] Denied),
    #[error("room {room:?} of app {sdkappid} has no anchor{which}")]
    NoAnchor { sdkappid: u64, room: String, which: String },
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    #[error("the offer has no {0}: roomgate sends H.264 (packetization-mode=1) video and Opus audio")]
    MissingCodec(&'static str),
    #[error("WHEP session: {0}")]
    Resource(#[from] ResourceError),
    #[error("WebRTC playback is disabled on this gateway")]
    Disabled,
    #[error("{0}")]
    Full(#[from] crate::rtc::EngineFull),
    #[error("{0}")]
    RateLimited(crate::limits::LimitError, u64),
}

/// A request to watch an anchor.
pub struct PlayRequest<'a> {
    pub sdkappid: u64,
    pub room: RoomRef,
    pub viewer: Option<&'a str>,
    pub anchor: Option<&'a str>,
    pub bearer: Option<&'a str>,
    /// `?privatemapkey=`: needed on apps that `require_private_map_key`.
    pub private_map_key: Option<&'a str>,
    pub offer: &'a str,
    /// The client's address, for the per-IP rate limit (`rtc.whep_per_ip_per_minute`).
    pub peer: Option<std::net::IpAddr>,
}

/// What the HTTP layer answers with.
pub struct PlayAnswer {
    pub resource: String,
    pub etag: String,
    pub sdp: String,
}

pub struct WhepService {
    pub engine: Arc<RtcEngine>,
    hub: Arc<RoomHub>,
    config: Arc<Config>,
    resources: SessionResources,
    rate: crate::limits::PerIpRate,
    /// The running `Fanout` of each anchor with viewers, by the anchor's address: (serial, its control channel).
    fanouts: std::sync::Mutex<std::collections::HashMap<usize, (u64, mpsc::UnboundedSender<FanoutCmd>)>>,
    next_fanout: std::sync::atomic::AtomicU64,
}

impl WhepService {
    pub fn new(engine: Arc<RtcEngine>, hub: Arc<RoomHub>, config: Arc<Config>) -> Arc<Self> {
        Arc::new(WhepService {
            engine,
            hub,
            rate: crate::limits::PerIpRate::new(config.rtc.whep_per_ip_per_minute),
            config,
            resources: SessionResources::default(),
            fanouts: Default::default(),
            next_fanout: Default::default(),
        })
    }

    /// The control channel of `anchor`'s fan-out, started on its first viewer; `None` once the anchor left.
    fn fanout_of(self: &Arc<Self>, anchor: &Arc<Participant>) -> Option<mpsc::UnboundedSender<FanoutCmd>> {
        let key = Arc::as_ptr(anchor) as usize;
        let mut map = self.fanouts.lock().expect("fanouts lock");
        if let Some((_, tx)) = map.get(&key).filter(|(_, tx)| !tx.is_closed()) {
            return Some(tx.clone());
        }
        if anchor.video.is_closed() && anchor.audio.is_closed() {
            return None;
        }
        let serial = self.next_fanout.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        map.insert(key, (serial, tx.clone()));
        tokio::spawn(fanout(self.clone(), key, serial, anchor.clone(), rx));
        Some(tx)
    }

    pub async fn play(self: &Arc<Self>, req: PlayRequest<'_>) -> Result<PlayAnswer, WhepError> {
        if let Some(ip) = req.peer {
            self.rate
                .check(ip, std::time::Instant::now())
                .map_err(|(e, wait)| WhepError::RateLimited(e, wait))?;
        }
        self.engine.check_room(self.config.rtc.max_sessions)?;
        authorize_play(
            &self.config.apps,
            req.sdkappid,
            &req.room,
            req.viewer,
            req.bearer,
            req.private_map_key,
            unix_now(),
        )?;
        let key = RoomKey {
            sdkappid: req.sdkappid,
            room: req.room.clone(),
        };
        let anchor = self.pick_anchor(&key, req.anchor).ok_or_else(|| WhepError::NoAnchor {
            sdkappid: req.sdkappid,
            room: match &req.room {
                RoomRef::Str(s) => s.clone(),
                RoomRef::Num(n) => n.to_string(),
            },
            which: req.anchor.map(|a| format!(" {a:?}")).unwrap_or_default(),
        })?;

        let offer = SdpOffer::from_sdp_string(req.offer).map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let kinds = crate::rtc::offer_media_kinds(req.offer);
        let creds = IceCreds {
            ufrag: random_token(8),
            pass: random_token(24),
        };
        let anchor_plid = anchor
            .video_info()
            .profile_level_id
            .and_then(|s| u32::from_str_radix(&s, 16).ok())
            .unwrap_or(0x42e01f);
        let plid = self.answer_profile(req.sdkappid, anchor_plid, req.offer);
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_send_buffer_video(VIDEO_SEND_PACKETS)
            .set_local_ice_credentials(creds.clone())
            .clear_codecs()
            .enable_opus(true, false);
        // No transport-wide congestion control: the gateway forwards the anchor's one encoding and has no bitrate
        // to adapt, so TWCC feedback would only cost a send record per packet (1000 per viewer) and RTCP work.
        let mut extensions = str0m::rtp::ExtensionMap::empty();
        for (id, e) in str0m::rtp::ExtensionMap::standard().iter() {
            if *e != str0m::rtp::Extension::TransportSequenceNumber {
                extensions.set(id, e.clone());
            }
        }
        cfg = cfg.set_extension_map(extensions);
        cfg.codec_config().add_h264(102.into(), Some(103.into()), true, plid);
        let mut rtc = cfg.build(std::time::Instant::now());
        for c in self.engine.local_candidates() {
            rtc.add_local_candidate(c.clone());
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WhepError::BadOffer(e.to_string()))?;
        let find = |rtc: &mut Rtc, kind: MediaKind, codec: RtcCodec| -> Option<OutTrack> {
            kinds.iter().filter(|(_, k)| *k == kind).find_map(|(mid, _)| {
                let w = rtc.writer(*mid)?;
                let pt = w.payload_params().find(|p| p.spec().codec == codec)?.pt();
                Some(OutTrack { mid: *mid, pt })
            })
        };
        let video = find(&mut rtc, MediaKind::Video, RtcCodec::H264).ok_or(WhepError::MissingCodec("H.264 video"))?;
        if let Some(tx) = rtc.direct_api().stream_tx_by_mid(video.mid, None) {
            tx.set_rtx_cache(VIDEO_SEND_PACKETS, VIDEO_RESEND_WINDOW, Some(0.15));
        }
        let audio = find(&mut rtc, MediaKind::Audio, RtcCodec::Opus).ok_or(WhepError::MissingCodec("Opus audio"))?;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let engine_id = self
            .engine
            .try_add(
                NewSession {
                    rtc,
                    ufrag: creds.ufrag.clone(),
                    video: Some(video),
                    audio: Some(audio),
                    events: events_tx,
                },
                self.config.rtc.max_sessions,
            )
            .await?;
        let (resource, etag) = self.resources.insert(engine_id, &creds.ufrag);
        metrics::gauge!("roomgate_whep_sessions").increment(1.0);
        tracing::info!(sdkappid = req.sdkappid, room = %req.room, anchor = %anchor.userid, viewer = ?req.viewer, session = engine_id, "WHEP viewer");
        let timeout = Duration::from_secs(self.config.rtc.session_timeout_secs.max(1));
        tokio::spawn(feed(
            self.clone(),
            resource.clone(),
            engine_id,
            anchor,
            events_rx,
            timeout,
        ));
        Ok(PlayAnswer {
            resource,
            etag,
            sdp: answer.to_sdp_string(),
        })
    }

    /// The H.264 `profile-level-id` to answer with: the anchor's, unless the player offers no format of that
    /// profile (a browser or aiortc offering constrained baseline for an OBS anchor in High); then the first
    /// packetization-mode 1 format it does offer, and the anchor's stream goes out under it (decoders take any
    /// profile; SRS and MediaMTX forward the same way). An app with `strict_h264_profile` keeps the anchor's,
    /// so such a player gets 406.
    fn answer_profile(&self, sdkappid: u64, anchor_plid: u32, offer: &str) -> u32 {
        let offered = crate::rtc::offered_h264_profiles(offer);
        let profile = crate::rtc::h264_profile(anchor_plid);
        let same_profile = |p: &u32| crate::rtc::h264_profile(*p) == profile;
        let strict = self.config.app(sdkappid).is_some_and(|a| a.strict_h264_profile);
        // Of the others, the widest profile offered (High takes Main takes Constrained Baseline).
        let widest = offered
            .iter()
            .copied()
            .max_by_key(|p| crate::rtc::h264_profile(*p).rank());
        match widest {
            Some(first) if !strict && !offered.iter().any(same_profile) => {
                metrics::counter!("roomgate_whep_profile_mismatch_total").increment(1);
                tracing::info!(
                    anchor_profile = format!("{anchor_plid:06x}"),
                    answered = format!("{first:06x}"),
                    "WHEP player offers no H.264 of the anchor's profile; answering with its own"
                );
                first
            }
            _ => anchor_plid,
        }
    }

    /// The named anchor, or the most recently started anchor with video (else any anchor).
    fn pick_anchor(&self, key: &RoomKey, userid: Option<&str>) -> Option<Arc<Participant>> {
        let room = self.hub.room(key)?;
        if let Some(u) = userid {
            return room.participant(u);
        }
        let all = room.participants();
        all.iter()
            .rev()
            .find(|p| p.video.has_media() || !p.video_info().source_codec.is_empty())
            .or(all.last())
            .cloned()
    }

    /// End a session (DELETE).
    pub async fn stop(&self, resource: &str) -> Result<(), WhepError> {
        let id = self.resources.remove(resource).ok_or(ResourceError::NoSession)?;
        metrics::gauge!("roomgate_whep_sessions").decrement(1.0);
        self.engine.remove(id).await;
        Ok(())
    }

    /// PATCH: trickle ICE or ICE restart.
    pub async fn patch(
        &self,
        resource: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<PatchResult, WhepError> {
        Ok(self.resources.patch(&self.engine, resource, if_match, fragment).await?)
    }

    fn forget(&self, resource: &str) {
        if self.resources.remove(resource).is_some() {
            metrics::gauge!("roomgate_whep_sessions").decrement(1.0);
        }
    }

    pub fn session_count(&self) -> usize {
        self.resources.len()
    }
}

/// One viewer's session: once ICE and DTLS are up it joins its anchor's `Fanout`, asks it for a replay of the
/// cached GOP when the player sends a PLI (at most once per `PLI_BURST_INTERVAL`), and leaves when the session
/// ends. Media never passes through here.
async fn feed(
    svc: Arc<WhepService>,
    resource: String,
    id: SessionId,
    anchor: Arc<Participant>,
    mut events: mpsc::UnboundedReceiver<SessionEvent>,
    timeout: Duration,
) {
    let connected = tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Some(SessionEvent::Connected) => return true,
                Some(SessionEvent::Closed(_)) | None => return false,
                Some(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    let fanout = connected.then(|| svc.fanout_of(&anchor)).flatten();
    let Some(fanout) = fanout.filter(|f| f.send(FanoutCmd::Join(id)).is_ok()) else {
        svc.engine.remove(id).await;
        svc.forget(&resource);
        return;
    };
    let mut last_burst: Option<std::time::Instant> = None;
    loop {
        match events.recv().await {
            Some(SessionEvent::KeyframeRequest) => {
                if last_burst.is_none_or(|t| t.elapsed() >= PLI_BURST_INTERVAL) {
                    last_burst = Some(std::time::Instant::now());
                    let _ = fanout.send(FanoutCmd::Replay(id));
                }
            }
            Some(SessionEvent::Closed(_)) | None => break,
            Some(_) => {}
        }
    }
    let _ = fanout.send(FanoutCmd::Leave(id));
    svc.forget(&resource);
}

/// What a viewer session asks of its anchor's fan-out.
enum FanoutCmd {
    /// Start this session: the cached GOP at once, then live frames.
    Join(SessionId),
    /// The player lost pictures (PLI): replay the cached GOP to it, just after the last picture it had.
    Replay(SessionId),
    Leave(SessionId),
}

/// One viewer as the fan-out sees it.
struct Member {
    id: SessionId,
    /// Pictures up to this pts were already sent to it from the cache: live copies of them are not sent again.
    skip_until: Option<u64>,
    /// It joined with nothing cached (or fell behind): live video starts for it at the next keyframe.
    needs_keyframe: bool,
}

/// The viewers of one anchor, fed by one subscription per track: each frame goes to the engine once, as one
/// message for all of them, instead of waking a task and sending a message per viewer per frame (the profile
/// at 100 viewers was mostly those hand-offs). Runs until the anchor leaves.
async fn fanout(
    svc: Arc<WhepService>,
    key: usize,
    serial: u64,
    anchor: Arc<Participant>,
    mut ctl: mpsc::UnboundedReceiver<FanoutCmd>,
) {
    let mut video = anchor.video.subscribe();
    let mut audio = anchor.audio.subscribe();
    // Joiners get their own snapshot of the cache; this subscription only carries what comes after.
    video.take_backlog();
    audio.take_backlog();
    let (mut video_open, mut audio_open) = (true, true);
    let mut members: Vec<Member> = Vec::new();
    let mut everyone: Arc<[SessionId]> = Arc::from(Vec::new());
    let mut last_video_pts: Option<u64> = None;
    let engine = svc.engine.clone();
    loop {
        tokio::select! {
            f = video.recv(), if video_open => match f {
                Some(f) => {
                    last_video_pts = Some(f.pts);
                    let special = members.iter().any(|m| m.needs_keyframe || m.skip_until.is_some());
                    if special {
                        for m in members.iter_mut() {
                            if m.needs_keyframe && f.keyframe {
                                m.needs_keyframe = false;
                            }
                            if m.skip_until.is_some_and(|end| f.pts > end) {
                                m.skip_until = None;
                            }
                        }
                        let ready: Vec<SessionId> = members
                            .iter()
                            .filter(|m| !m.needs_keyframe && m.skip_until.is_none())
                            .map(|m| m.id)
                            .collect();
                        if !ready.is_empty() && !engine.send_frame_to_many(ready.into(), f).await {
                            break;
                        }
                    } else if !everyone.is_empty() && !engine.send_frame_to_many(everyone.clone(), f).await {
                        break;
                    }
                }
                None => video_open = false,
            },
            f = audio.recv(), if audio_open => match f {
                Some(f) => {
                    if !everyone.is_empty() && !engine.send_frame_to_many(everyone.clone(), f).await {
                        break;
                    }
                }
                None => audio_open = false,
            },
            cmd = ctl.recv() => match cmd {
                Some(FanoutCmd::Join(id)) => {
                    // Fast start: the cached GOP goes out first, at once; without one, ask the source (WebRTC
                    // publishers) and start at the next keyframe.
                    let gop = anchor.video.subscribe().take_backlog();
                    if gop.is_empty() {
                        anchor.request_keyframe();
                    }
                    let end = gop.last().map(|f| f.pts);
                    // One engine message for the whole GOP, so many joins at once do not hold up live frames.
                    if !gop.is_empty() && !engine.send_frames(id, gop).await {
                        break;
                    }
                    members.push(Member { id, skip_until: end, needs_keyframe: end.is_none() });
                    everyone = members.iter().map(|m| m.id).collect();
                    anchor.set_viewers(members.len());
                }
                Some(FanoutCmd::Replay(id)) => {
                    let Some(m) = members.iter_mut().find(|m| m.id == id) else { continue };
                    // Answer from the cache: the last GOP (keyframe first) just after the last picture this
                    // viewer had; live frames it then already has are not sent again.
                    let gop = anchor.video.subscribe().take_backlog();
                    if gop.is_empty() {
                        // Nothing cached: a WebRTC source is asked; otherwise the next source keyframe comes.
                        anchor.request_keyframe();
                        continue;
                    }
                    let base = last_video_pts.unwrap_or(0).max(m.skip_until.unwrap_or(0));
                    let end = gop.last().map(|f| f.pts);
                    let n = gop.len() as u64;
                    let replay: Vec<crate::media::Frame> = gop
                        .into_iter()
                        .enumerate()
                        .map(|(k, mut f)| {
                            f.pts = base + 1 + k as u64;
                            f
                        })
                        .collect();
                    if !engine.send_frames(id, replay).await {
                        break;
                    }
                    m.skip_until = end.map(|e| e.max(base + n));
                    m.needs_keyframe = false;
                    metrics::counter!("roomgate_whep_pli_answered_total").increment(1);
                }
                Some(FanoutCmd::Leave(id)) => {
                    members.retain(|m| m.id != id);
                    everyone = members.iter().map(|m| m.id).collect();
                    anchor.set_viewers(members.len());
                }
                None => break,
            },
        }
        if !video_open && !audio_open {
            break;
        }
    }
    // The anchor left: end its viewer sessions (a player reconnects when it comes back), and those that were
    // joining; nobody can join this fan-out from now on.
    svc.fanouts
        .lock()
        .expect("fanouts lock")
        .retain(|k, (s, _)| !(*k == key && *s == serial));
    ctl.close();
    while let Ok(cmd) = ctl.try_recv() {
        if let FanoutCmd::Join(id) = cmd {
            members.push(Member {
                id,
                skip_until: None,
                needs_keyframe: true,
            });
        }
    }
    for m in &members {
        engine.remove(m.id).await;
    }
    anchor.set_viewers(0);
}
