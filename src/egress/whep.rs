//! `WhepService`: a WHEP viewer of one anchor. The offer is answered with the anchor's real H.264
//! `profile-level-id` (packetization-mode 1) and Opus; once ICE and DTLS are up, a `ViewerFeed` subscribes to
//! the anchor's tracks (starting at the cached keyframe, so the picture appears at once) and hands frames
//! to the WebRTC engine.

use crate::auth::{unix_now, RoomRef};
use crate::config::Config;
use crate::ingest::{authorize_play, Refusal};
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

/// Why a WHEP request failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error("{0}")]
    Refused(#[from] Refusal),
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
}

impl WhepService {
    pub fn new(engine: Arc<RtcEngine>, hub: Arc<RoomHub>, config: Arc<Config>) -> Arc<Self> {
        Arc::new(WhepService {
            engine,
            hub,
            rate: crate::limits::PerIpRate::new(config.rtc.whep_per_ip_per_minute),
            config,
            resources: SessionResources::default(),
        })
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
        let plid = anchor
            .video_info()
            .profile_level_id
            .and_then(|s| u32::from_str_radix(&s, 16).ok())
            .unwrap_or(0x42e01f);
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds.clone())
            .clear_codecs()
            .enable_opus(true, false);
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

/// One viewer's feed: after DTLS is up, subscribe to the anchor's tracks (cached GOP first) and forward frames
/// until the anchor leaves or the session ends.
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
    if !connected {
        svc.engine.remove(id).await;
        svc.forget(&resource);
        return;
    }
    let mut video = anchor.video.subscribe();
    let mut audio = anchor.audio.subscribe();
    let (mut video_open, mut audio_open) = (true, true);
    let mut last_video_pts: Option<u64> = None;
    // Fast start: the cached GOP goes out first, at once; without one, ask the source (WebRTC publishers).
    let gop = video.take_backlog();
    if gop.is_empty() {
        anchor.request_keyframe();
    }
    for f in gop {
        last_video_pts = Some(f.pts);
        if !svc.engine.send_frame(id, f, false).await {
            break;
        }
    }
    let mut last_burst: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            f = video.recv(), if video_open => match f {
                Some(f) => {
                    last_video_pts = Some(f.pts);
                    if !svc.engine.send_frame(id, f, true).await { break }
                }
                None => video_open = false,
            },
            f = audio.recv(), if audio_open => match f {
                Some(f) => { if !svc.engine.send_frame(id, f, true).await { break } }
                None => audio_open = false,
            },
            ev = events.recv() => match ev {
                Some(SessionEvent::KeyframeRequest) => {
                    if last_burst.is_some_and(|t| t.elapsed() < PLI_BURST_INTERVAL) {
                        continue;
                    }
                    last_burst = Some(std::time::Instant::now());
                    // Answer from the cache: replay the last GOP (keyframe first) just after the last picture
                    // sent, then continue live from where the replay ends.
                    let mut fresh = anchor.video.subscribe();
                    let gop = fresh.take_backlog();
                    if gop.is_empty() {
                        // Nothing cached: a WebRTC source is asked; otherwise the next source keyframe comes.
                        anchor.request_keyframe();
                        continue;
                    }
                    video = fresh;
                    let base = last_video_pts.unwrap_or(0);
                    for (k, mut f) in gop.into_iter().enumerate() {
                        f.pts = base + 1 + k as u64;
                        last_video_pts = Some(f.pts);
                        if !svc.engine.send_frame(id, f, false).await { break }
                    }
                    metrics::counter!("roomgate_whep_pli_answered_total").increment(1);
                }
                Some(SessionEvent::Closed(_)) | None => break,
                Some(_) => {}
            },
        }
        if !video_open && !audio_open {
            // The anchor left: end the viewer session (a player reconnects when it comes back).
            svc.engine.remove(id).await;
            break;
        }
    }
    svc.forget(&resource);
}
