//! `WhepService`: a WHEP viewer of one anchor. The offer is answered with the anchor's real H.264
//! `profile-level-id` (packetization-mode 1) and Opus; once ICE and DTLS are up, the viewer joins its anchor's
//! `fanout`: one task per anchor with viewers, subscribed once to each track, that sends a new viewer the cached
//! GOP (so the picture appears at once) and then hands each live frame to the WebRTC engine once for all the
//! anchor's viewers.

use crate::access::{authorize_play, Denied};
use crate::auth::unix_now;
use crate::config::Config;
use crate::media::Frame;
use crate::room::{Anchor, RemoteAnchors, RoomHub, RoomKey, RoomRef};
use crate::rtc::{
    negotiate, Negotiated, NewSession, PatchResult, ResourceError, RtcEngine, SessionAnswer, SessionEvent, SessionId,
    SessionResources,
};
use std::sync::Arc;
use std::time::Duration;
use str0m::format::Codec as RtcCodec;
use str0m::media::MediaKind;
use str0m::Rtc;
use tokio::sync::mpsc;

/// At most one GOP replay per viewer in this interval, however often it sends PLIs.
const PLI_BURST_INTERVAL: Duration = Duration::from_secs(1);

/// Why a WHEP request failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    /// The viewer may not watch: unknown app, bad viewer id, or a missing or bad UserSig or PrivateMapKey.
    #[error("{0}")]
    Refused(#[from] Denied),
    /// The room has no anchor, or not the one asked for with `?anchor=`.
    #[error("room {room:?} of app {sdkappid} has no anchor{which}")]
    NoAnchor {
        /// App of the room.
        sdkappid: u64,
        /// The room id as text (a numeric room in decimal).
        room: String,
        /// `format!(" {id:?}")` of the anchor asked for, for the message; empty when none was named.
        which: String,
    },
    /// The offer is not UTF-8 SDP str0m can answer, or the room is not numeric with `roomtype=number`.
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    /// The offer has no H.264 (packetization-mode 1) video or no Opus audio; names which.
    #[error("the offer has no {0}: roomgate sends H.264 (packetization-mode=1) video and Opus audio")]
    MissingCodec(&'static str),
    /// The offer's m-line of that kind does not receive (`sendonly` or `inactive`): nothing could be sent on it.
    #[error("the offer's {0} m-line does not receive: a WHEP player offers recvonly (or sendrecv) video and audio")]
    NotReceiving(&'static str),
    /// PATCH or DELETE on the session resource failed.
    #[error("WHEP session: {0}")]
    Resource(#[from] ResourceError),
    /// The WebRTC engine is off (`rtc.enabled = false`).
    #[error("WebRTC playback is disabled on this gateway")]
    Disabled,
    /// The engine already has `rtc.max_sessions` sessions.
    #[error("{0}")]
    Full(#[from] crate::rtc::EngineFull),
    /// Over `rtc.whep_per_ip_per_minute` for the client's address; the seconds until a retry may pass.
    #[error("{0}")]
    RateLimited(crate::limits::LimitError, u64),
}

/// A request to watch an anchor.
pub struct PlayRequest<'a> {
    /// App of the room (from the URL path).
    pub sdkappid: u64,
    /// Room to watch: `Num` with `?roomtype=number`, else `Str`.
    pub room: RoomRef,
    /// `?SessionID=`: the viewer's user id; only `public_playback` apps take a request without one.
    pub viewer: Option<&'a str>,
    /// `?anchor=`: the anchor's user id; `None`: the latest anchor with video, else any.
    pub anchor: Option<&'a str>,
    /// The `Authorization: Bearer` token: the viewer's UserSig.
    pub bearer: Option<&'a str>,
    /// `?privatemapkey=`: needed on apps that `require_private_map_key`.
    pub private_map_key: Option<&'a str>,
    /// The SDP offer (the POST body).
    pub offer: &'a str,
    /// The client's address, for the per-IP rate limit (`rtc.whep_per_ip_per_minute`).
    pub peer: Option<std::net::IpAddr>,
}

/// WHEP playback: authorizes viewers, answers their offers and feeds each anchor's viewers from one fan-out.
pub struct WhepService {
    /// The WebRTC engine the sessions run on (shared with WHIP).
    pub engine: Arc<RtcEngine>,
    hub: Arc<RoomHub>,
    config: Arc<Config>,
    resources: SessionResources,
    rate: crate::limits::PerIpRate,
    /// The running `Fanout` of each anchor with viewers, by the anchor's address: (serial, its control channel).
    fanouts: std::sync::Mutex<std::collections::HashMap<usize, (u64, mpsc::UnboundedSender<FanoutCmd>)>>,
    next_fanout: std::sync::atomic::AtomicU64,
    /// Where anchors of other nodes come from (cluster relay), when this node plays them.
    remote: std::sync::OnceLock<Arc<dyn RemoteAnchors>>,
}

impl WhepService {
    /// A service with no sessions yet, playing the anchors of `hub`.
    pub fn new(engine: Arc<RtcEngine>, hub: Arc<RoomHub>, config: Arc<Config>) -> Arc<Self> {
        Arc::new(WhepService {
            engine,
            hub,
            rate: crate::limits::PerIpRate::new(config.rtc.whep_per_ip_per_minute),
            config,
            resources: SessionResources::default(),
            fanouts: Default::default(),
            next_fanout: Default::default(),
            remote: Default::default(),
        })
    }

    /// Play anchors of other nodes too, as `remote` relays them (cluster mode with `cluster.whep = "relay"`).
    pub fn play_remote(&self, remote: Arc<dyn RemoteAnchors>) {
        let _ = self.remote.set(remote);
    }

    /// The control channel of `anchor`'s fan-out, started on its first viewer; `None` once the anchor left.
    fn fanout_of(self: &Arc<Self>, anchor: &Arc<Anchor>) -> Option<mpsc::UnboundedSender<FanoutCmd>> {
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

    /// Rate-limit and authorize the viewer, pick the anchor and answer the offer; the session runs on its own task.
    pub async fn play(self: &Arc<Self>, req: PlayRequest<'_>) -> Result<SessionAnswer, WhepError> {
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
        let mut anchor = self.pick_anchor(&key, req.anchor);
        if let (None, Some(remote)) = (&anchor, self.remote.get()) {
            anchor = remote.find(&key, req.anchor).await;
        }
        let anchor = anchor.ok_or_else(|| WhepError::NoAnchor {
            sdkappid: req.sdkappid,
            room: match &req.room {
                RoomRef::Str(s) => s.clone(),
                RoomRef::Num(n) => n.to_string(),
            },
            which: req.anchor.map(|a| format!(" {a:?}")).unwrap_or_default(),
        })?;

        let anchor_plid = anchor
            .video_info()
            .profile_level_id
            .and_then(|s| u32::from_str_radix(&s, 16).ok())
            .unwrap_or(0x42e01f);
        let plid = self.answer_profile(req.sdkappid, anchor_plid, req.offer);
        // RTP mode: the engine cuts each frame into payloads once for all viewers (`media::rtp`) and writes them to
        // each session's send stream, which numbers, encrypts and keeps them for resends.
        let mut cfg = Rtc::builder()
            .set_rtp_mode(true)
            .set_send_buffer_video(crate::rtc::VIDEO_SEND_PACKETS)
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
        let mut session = negotiate(&self.engine, req.offer, cfg).map_err(WhepError::BadOffer)?;
        let video = session
            .track(MediaKind::Video, RtcCodec::H264)
            .ok_or(WhepError::MissingCodec("H.264 video"))?;
        let audio = session
            .track(MediaKind::Audio, RtcCodec::Opus)
            .ok_or(WhepError::MissingCodec("Opus audio"))?;
        // str0m makes a send stream only for an m-line the player receives on.
        let mut api = session.rtc.direct_api();
        if api.stream_tx_by_mid(audio.mid, None).is_none() {
            return Err(WhepError::NotReceiving("audio"));
        }
        // (The shard sets the video send stream's resend window when it takes the session.)
        if api.stream_tx_by_mid(video.mid, None).is_none() {
            return Err(WhepError::NotReceiving("video"));
        }
        let Negotiated { rtc, creds, answer, .. } = session;

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
        Ok(SessionAnswer {
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
    fn pick_anchor(&self, key: &RoomKey, userid: Option<&str>) -> Option<Arc<Anchor>> {
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

    /// Viewer sessions whose resource still exists (not DELETEd, not ended).
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
    anchor: Arc<Anchor>,
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
                let now = std::time::Instant::now();
                if replay_due(last_burst, now) {
                    last_burst = Some(now);
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

/// Whether a viewer's PLI is answered with a GOP replay now: at most one per `PLI_BURST_INTERVAL`, however often.
fn replay_due(last: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= PLI_BURST_INTERVAL)
}

/// One viewer as the fan-out sees it: where it stands in the video, so it gets every picture once and decodable.
#[derive(Debug)]
struct Member {
    id: SessionId,
    /// Pictures up to this pts were already sent to it from the cache: live copies of them are not sent again.
    skip_until: Option<u64>,
    /// It joined with nothing cached (or fell behind): live video starts for it at the next keyframe.
    needs_keyframe: bool,
}

impl Member {
    /// A viewer joining after the cached GOP up to pts `cached_until` was sent to it (`None`: nothing cached).
    fn joined(id: SessionId, cached_until: Option<u64>) -> Member {
        Member {
            id,
            skip_until: cached_until,
            needs_keyframe: cached_until.is_none(),
        }
    }

    /// Whether it gets every live picture as it comes (the fan-out's fast path).
    fn in_step(&self) -> bool {
        !self.needs_keyframe && self.skip_until.is_none()
    }

    /// Whether the live picture `pts` goes to it, moving it along: a keyframe ends its wait, a picture past what
    /// the cache gave it ends the skipping.
    fn takes_live(&mut self, pts: u64, keyframe: bool) -> bool {
        if self.needs_keyframe && keyframe {
            self.needs_keyframe = false;
        }
        if self.skip_until.is_some_and(|end| pts > end) {
            self.skip_until = None;
        }
        self.in_step()
    }

    /// The cached `gop` restamped to follow the last picture it had (the live edge `last_live_pts` or the end of
    /// an earlier replay), so its decoder takes them as new pictures; the live copies of them are then skipped.
    fn replay(&mut self, gop: Vec<Frame>, last_live_pts: Option<u64>) -> Vec<Frame> {
        let base = last_live_pts.unwrap_or(0).max(self.skip_until.unwrap_or(0));
        let end = gop.last().map(|f| f.pts);
        let n = gop.len() as u64;
        let replay: Vec<Frame> = gop
            .into_iter()
            .enumerate()
            .map(|(k, mut f)| {
                f.pts = base + 1 + k as u64;
                f
            })
            .collect();
        self.skip_until = end.map(|e| e.max(base + n));
        self.needs_keyframe = false;
        replay
    }
}

/// The viewers of one anchor, fed by one subscription per track: each frame goes to the engine once, as one
/// message for all of them, instead of waking a task and sending a message per viewer per frame (the profile
/// at 100 viewers was mostly those hand-offs). Runs until the anchor leaves.
async fn fanout(
    svc: Arc<WhepService>,
    key: usize,
    serial: u64,
    anchor: Arc<Anchor>,
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
                    if !members.iter().all(Member::in_step) {
                        let ready: Vec<SessionId> = members
                            .iter_mut()
                            .filter_map(|m| m.takes_live(f.pts, f.keyframe).then_some(m.id))
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
                    members.push(Member::joined(id, end));
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
                    let replay = m.replay(gop, last_video_pts);
                    if !engine.send_frames(id, replay).await {
                        break;
                    }
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
            members.push(Member::joined(id, None));
        }
    }
    for m in &members {
        engine.remove(m.id).await;
    }
    anchor.set_viewers(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Codec;
    use std::time::Instant;

    fn picture(pts: u64, keyframe: bool) -> Frame {
        Frame {
            codec: Codec::H264,
            pts,
            keyframe,
            data: Arc::from(&[0u8][..]),
            received_at: Instant::now(),
        }
    }

    #[test]
    fn a_joiner_with_a_cached_gop_skips_the_live_copies_of_it() {
        let mut m = Member::joined(1, Some(3000));
        assert!(!m.in_step());
        assert!(!m.takes_live(3000, false), "already sent from the cache");
        assert!(m.takes_live(6000, false), "then every live picture");
        assert!(m.in_step());
    }

    #[test]
    fn a_joiner_without_a_cache_starts_at_the_next_keyframe() {
        let mut m = Member::joined(1, None);
        assert!(!m.takes_live(3000, false), "a delta picture it could not decode");
        assert!(m.takes_live(6000, true));
        assert!(m.takes_live(9000, false));
    }

    #[test]
    fn a_replay_follows_the_last_picture_and_is_not_sent_twice() {
        let mut m = Member::joined(1, None);
        m.takes_live(100, true);
        let gop = vec![picture(10, true), picture(20, false), picture(30, false)];
        let replay = m.replay(gop, Some(100));
        let pts: Vec<u64> = replay.iter().map(|f| f.pts).collect();
        assert_eq!(pts, [101, 102, 103], "after the live edge, in order, keyframe first");
        assert!(replay[0].keyframe);
        assert!(
            !m.takes_live(103, false),
            "live pictures up to the replay's end are skipped"
        );
        assert!(m.takes_live(104, false));
        // A second PLI while still skipping restamps after the end of the first replay.
        let mut m = Member::joined(2, Some(500));
        let again = m.replay(vec![picture(10, true)], Some(100));
        assert_eq!(again[0].pts, 501);
    }

    #[test]
    fn plis_are_answered_at_most_once_a_second() {
        let t0 = Instant::now();
        assert!(replay_due(None, t0));
        assert!(!replay_due(Some(t0), t0 + Duration::from_millis(999)));
        assert!(replay_due(Some(t0), t0 + PLI_BURST_INTERVAL));
    }
}
