//! `WhipService`: WHIP publishing (`POST /v2/pub/<sdkappid>/<room>?SessionID=<userid>`, Bearer UserSig).
//!
//! The publisher's H.264 and Opus are forwarded without decoding: str0m depacketizes each RTP frame, and the
//! session's `ToRoom`, on the engine shard that runs it, turns it into a room frame (Annex-B, parameter sets in
//! front of keyframes, timestamps on one clock for audio and video) with no hand-off to another task. The
//! publisher's own task only watches: viewer keyframe requests become PLIs (at most one a second); the anchor
//! leaves when DELETE, the peer, or a media timeout ends the session; B-frames end it as for RTMP.
//!
//! Publishers that can send only VP8 (some browsers) are accepted too: their video goes through a
//! `VideoTranscoder` (VP8 -> H.264 baseline on its own thread), so every viewer still gets H.264. Keyframe
//! requests are then answered by the encoder, and lost VP8 packets ask the publisher for a keyframe.

use super::Refusal;
use crate::access::authorize_publish;
use crate::auth::unix_now;
use crate::config::Config;
use crate::media::h264::{self, SpsInfo};
use crate::media::transcode::{KeyframeTrigger, TranscodeError, VideoInput, VideoTranscoder};
use crate::media::{Codec, Frame, FrameSink, AUDIO_CLOCK, VIDEO_CLOCK};
use crate::room::RoomRef;
use crate::room::{AnchorHandle, AnchorSink, LeaveReason, RoomHub, RoomKey, SourceKind, TrackInfo};
use crate::rtc::{
    negotiate, MediaSink, MediaVerdict, Negotiated, NewSession, PatchResult, ResourceError, RtcEngine, SessionAnswer,
    SessionEvent, SessionId, SessionResources,
};
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::format::Codec as RtcCodec;
use str0m::media::{MediaData, MediaKind, Mid};
use str0m::Rtc;
use tokio::sync::mpsc;

/// At most one PLI to a publisher in this interval.
const PLI_INTERVAL: Duration = Duration::from_secs(1);

/// Why a WHIP request failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    /// The app, the ids or the credentials (UserSig, PrivateMapKey) do not let this publisher in.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// No `Authorization: Bearer` UserSig, or an empty one.
    #[error("missing Authorization: Bearer <UserSig of SessionID>")]
    MissingToken,
    /// No `?SessionID=` (the publisher's user id), or an empty one.
    #[error("missing SessionID (the publisher's user id)")]
    MissingUserId,
    /// The offer is not UTF-8 SDP str0m can answer; holds why.
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    /// An offered kind of media has no codec roomgate takes (H.264 or VP8 video, Opus audio); names what.
    #[error("the offer has no {0}: roomgate takes H.264 (packetization-mode=1) or VP8 video and Opus audio")]
    MissingCodec(&'static str),
    /// The VP8 -> H.264 transcoder for a VP8-only publisher did not start.
    #[error("VP8 transcoder: {0}")]
    Transcoder(#[from] TranscodeError),
    /// PATCH or DELETE on the session resource failed.
    #[error("WHIP session: {0}")]
    Resource(#[from] ResourceError),
    /// The WebRTC engine is off (`rtc.enabled = false`).
    #[error("WebRTC publishing is disabled on this gateway")]
    Disabled,
    /// The engine already has `rtc.max_sessions` sessions.
    #[error("{0}")]
    Full(#[from] crate::rtc::EngineFull),
}

/// A request to publish into a room.
pub struct PublishRequest<'a> {
    /// App of the room (from the URL path).
    pub sdkappid: u64,
    /// String room id (from the URL path); WHIP rooms are never numeric.
    pub room: String,
    /// `?SessionID=`: the publisher's user id, which becomes the anchor's.
    pub userid: Option<&'a str>,
    /// The `Authorization: Bearer` token: the publisher's UserSig.
    pub bearer: Option<&'a str>,
    /// `?privatemapkey=`: needed on apps that `require_private_map_key`.
    pub private_map_key: Option<&'a str>,
    /// The SDP offer (the POST body).
    pub offer: &'a str,
}

/// WHIP publishing: authorizes publishers and turns each session into an anchor of its room.
pub struct WhipService {
    /// The WebRTC engine the sessions run on (shared with WHEP).
    pub engine: Arc<RtcEngine>,
    hub: Arc<RoomHub>,
    config: Arc<Config>,
    resources: SessionResources,
}

impl WhipService {
    /// A service with no sessions yet, publishing into the rooms of `hub`.
    pub fn new(engine: Arc<RtcEngine>, hub: Arc<RoomHub>, config: Arc<Config>) -> Arc<Self> {
        Arc::new(WhipService {
            engine,
            hub,
            config,
            resources: SessionResources::default(),
        })
    }

    /// Whether the request's UserSig (and PrivateMapKey) let its user publish in its room; its user id if so.
    pub fn authorize<'a>(&self, req: &PublishRequest<'a>) -> Result<&'a str, WhipError> {
        let userid = req.userid.filter(|u| !u.is_empty()).ok_or(WhipError::MissingUserId)?;
        let token = req.bearer.filter(|t| !t.is_empty()).ok_or(WhipError::MissingToken)?;
        let room = RoomRef::Str(req.room.clone());
        let now = unix_now();
        authorize_publish(
            &self.config.apps,
            req.sdkappid,
            &room,
            userid,
            token,
            req.private_map_key,
            now,
        )
        .map_err(Refusal::from)
        .inspect_err(|r| r.count("whip"))?;
        Ok(userid)
    }

    /// Authorize the publisher, answer the offer and join the room as an anchor; its frames go into the room
    /// on the engine shard that runs the session, and a task of its own watches it.
    pub async fn publish(self: &Arc<Self>, req: PublishRequest<'_>) -> Result<SessionAnswer, WhipError> {
        let userid = self.authorize(&req)?;
        let room = RoomRef::Str(req.room.clone());
        self.engine.check_room(self.config.rtc.max_sessions)?;

        let mut cfg = Rtc::builder().clear_codecs().enable_opus(true, false);
        // Constrained baseline with packetization-mode 1 first; other profiles the offer may list after it.
        for (pt, rtx, plid) in [
            (108u8, 109u8, 0x42e01f),
            (127, 121, 0x42001f),
            (123, 119, 0x4d001f),
            (112, 113, 0x64001f),
        ] {
            cfg.codec_config().add_h264(pt.into(), Some(rtx.into()), true, plid);
        }
        // VP8 last: chosen only when the offer has no H.264, and then transcoded.
        cfg = cfg.enable_vp8(true);
        let mut session = negotiate(&self.engine, req.offer, cfg).map_err(WhipError::BadOffer)?;
        let h264_mid = session.track(MediaKind::Video, RtcCodec::H264).map(|t| t.mid);
        let vp8_mid = session
            .track(MediaKind::Video, RtcCodec::Vp8)
            .map(|t| t.mid)
            .filter(|_| h264_mid.is_none());
        let video_mid = h264_mid.or(vp8_mid);
        let audio_mid = session.track(MediaKind::Audio, RtcCodec::Opus).map(|t| t.mid);
        if session.offers(MediaKind::Video) && video_mid.is_none() {
            return Err(WhipError::MissingCodec("H.264 or VP8 video"));
        }
        if session.offers(MediaKind::Audio) && audio_mid.is_none() {
            return Err(WhipError::MissingCodec("Opus audio"));
        }
        if video_mid.is_none() && audio_mid.is_none() {
            return Err(WhipError::MissingCodec("H.264 video or Opus audio"));
        }
        let Negotiated { rtc, creds, answer, .. } = session;
        let label = format!("{}/{}/{userid}", req.sdkappid, req.room);

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let engine_id = self
            .engine
            .try_add(
                NewSession {
                    rtc,
                    ufrag: creds.ufrag.clone(),
                    video: None,
                    audio: None,
                    events: events_tx,
                },
                self.config.rtc.max_sessions,
            )
            .await?;
        let (resource, etag) = self.resources.insert(engine_id, &creds.ufrag);
        // From here the session exists: if the request is dropped at an await (the client went away), undo it.
        let mut unwind = Unwind {
            svc: self,
            engine_id,
            resource: resource.clone(),
            armed: true,
        };
        let anchor = self.hub.join(
            RoomKey {
                sdkappid: req.sdkappid,
                room,
            },
            userid,
            SourceKind::Whip,
        );
        anchor.set_video_info(TrackInfo {
            source_codec: if vp8_mid.is_some() { "vp8" } else { "h264" }.into(),
            ..Default::default()
        });
        let transcoder = match vp8_mid {
            Some(_) => match VideoTranscoder::start(
                VideoInput {
                    max_pixels: self.config.video.max_pixels,
                    ..VideoInput::vp8()
                },
                anchor.sink(),
                label.clone(),
            )
            .opened()
            .await
            {
                Ok(t) => Some(t),
                Err(e) => {
                    anchor.leave(LeaveReason::Ended(e.to_string()));
                    return Err(e.into());
                }
            },
            None => None,
        };
        anchor.set_audio_info(TrackInfo {
            source_codec: "opus".into(),
            sample_rate: Some(AUDIO_CLOCK),
            source_sample_rate: Some(AUDIO_CLOCK),
            channels: Some(2),
            ..Default::default()
        });
        tracing::info!(sdkappid = req.sdkappid, room = %req.room, userid, session = engine_id, "WHIP publish started");
        let keyframes = transcoder.as_ref().map(VideoTranscoder::keyframe_trigger);
        let mut to_room = ToRoom::new(anchor.sink(), video_mid, transcoder, label.clone());
        to_room.max_pixels = self.config.video.max_pixels;
        let received = to_room.received.clone();
        // Before the answer goes out: the peer cannot send media before it has it.
        self.engine.set_media_sink(engine_id, Box::new(to_room)).await;
        let publisher = Publisher {
            anchor,
            id: engine_id,
            resource: resource.clone(),
            video_mid,
            keyframes,
            received,
            label,
        };
        let timeout = Duration::from_secs(self.config.rtc.session_timeout_secs.max(1));
        metrics::gauge!("roomgate_whip_sessions").increment(1.0);
        unwind.armed = false;
        tokio::spawn(run(self.clone(), publisher, events_rx, timeout));
        Ok(SessionAnswer {
            resource,
            etag,
            sdp: answer.to_sdp_string(),
        })
    }

    /// DELETE: end the session; the anchor leaves the room.
    pub async fn stop(&self, resource: &str) -> Result<(), WhipError> {
        Ok(self.resources.end(&self.engine, resource).await?)
    }

    /// PATCH: trickle ICE or ICE restart.
    pub async fn patch(
        &self,
        resource: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<PatchResult, WhipError> {
        Ok(self.resources.patch(&self.engine, resource, if_match, fragment).await?)
    }

    /// Publishing sessions whose resource still exists (not DELETEd, not ended).
    pub fn session_count(&self) -> usize {
        self.resources.len()
    }
}

/// A publishing session as its task sees it: the anchor it holds and what it needs to answer viewers' keyframe
/// requests and watch the media timeout. The frames themselves go from the engine's shard into the room through
/// [`ToRoom`], without this task.
struct Publisher {
    anchor: AnchorHandle,
    id: SessionId,
    resource: String,
    video_mid: Option<Mid>,
    /// VP8 publishers: viewers' keyframe requests go to the transcoder instead of the peer.
    keyframes: Option<KeyframeTrigger>,
    /// Frames the session received so far (counted by its `ToRoom`).
    received: Arc<AtomicU64>,
    label: String,
}

/// One publishing session: ends it on the engine's word, a media timeout, a replacement; turns viewers' keyframe
/// requests into PLIs (at most one a second).
async fn run(
    svc: Arc<WhipService>,
    publisher: Publisher,
    mut events: mpsc::UnboundedReceiver<SessionEvent>,
    timeout: Duration,
) {
    let Publisher {
        anchor,
        id,
        resource,
        video_mid,
        keyframes,
        received,
        label,
    } = publisher;
    let mut keyframe_requests = anchor.keyframe_requests();
    let mut kicked = anchor.kick_signal();
    let mut last_pli: Option<Instant> = None;
    // The media timeout is watched by the count of frames, a few times per timeout (not a wake-up per frame).
    let mut check = tokio::time::interval(timeout / 4);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, mut last_media) = (0, Instant::now());
    let reason = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                None | Some(SessionEvent::Closed(_)) => break LeaveReason::Normal,
                Some(SessionEvent::Ended(r)) => break LeaveReason::Ended(r),
                // The timeout counts from the connection too: ICE and DTLS get their own `timeout`, then media.
                Some(SessionEvent::Connected) => last_media = Instant::now(),
                Some(_) => {}
            },
            _ = check.tick() => {
                let now = Instant::now();
                let n = received.load(Ordering::Relaxed);
                if n != seen {
                    (seen, last_media) = (n, now);
                } else if now.saturating_duration_since(last_media) >= timeout {
                    break LeaveReason::Timeout;
                }
            }
            Some(()) = keyframe_requests.recv() => {
                if let Some(k) = &keyframes {
                    k.request();
                } else if let Some(mid) = video_mid {
                    if last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL) {
                        last_pli = Some(Instant::now());
                        svc.engine.request_keyframe(id, mid).await;
                    }
                }
            }
            _ = kicked.changed() => {
                if kicked.borrow().is_some() {
                    tracing::info!(anchor = %label, "WHIP publisher replaced by a new one");
                    break LeaveReason::Replaced;
                }
            }
        }
    };
    if reason == LeaveReason::Timeout {
        tracing::warn!(anchor = %label, "WHIP publisher sent no media in {timeout:?}; session ended");
    }
    svc.engine.remove(id).await;
    svc.resources.remove(&resource);
    metrics::gauge!("roomgate_whip_sessions").decrement(1.0);
    anchor.leave(reason);
}

/// What became of one depacketized frame.
enum MediaOutcome {
    Taken,
    /// The transcoder's input has a gap: the publisher should send a keyframe.
    NeedKeyframe,
}

/// Takes a half-made WHIP session out again (its resource, its engine session) unless disarmed: a POST whose
/// client goes away while it awaits must not leave a session that nothing runs.
struct Unwind<'a> {
    svc: &'a WhipService,
    engine_id: SessionId,
    resource: String,
    armed: bool,
}

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.svc.resources.remove(&self.resource);
            let (engine, id) = (self.svc.engine.clone(), self.engine_id);
            tokio::spawn(async move { engine.remove(id).await });
        }
    }
}

/// Maps one track's RTP media times onto the anchor's clock: its first frame lands at its arrival time since the
/// anchor's origin (shared by audio and video, so they line up), and later frames advance by their RTP delta (so
/// network jitter does not shake the timeline).
#[derive(Debug, Default)]
struct RtpClock {
    /// The first RTP time and the anchor time it maps to.
    base: Option<(u64, u64)>,
}

impl RtpClock {
    fn pts(&mut self, origin: Instant, rtp: u64, arrived: Instant, clock: u32) -> u64 {
        let (rtp0, pts0) = *self.base.get_or_insert_with(|| {
            let since_origin = arrived.saturating_duration_since(origin).as_micros() as u64;
            (rtp, since_origin * clock as u64 / 1_000_000)
        });
        pts0 + rtp.saturating_sub(rtp0)
    }
}

/// Turns depacketized WebRTC frames into room frames for one anchor; runs on the engine shard of its session.
struct ToRoom {
    anchor: AnchorSink,
    video_mid: Option<Mid>,
    /// Frames taken so far: the session's task watches it for the media timeout.
    received: Arc<AtomicU64>,
    /// When the VP8 decoder last asked the publisher for a keyframe.
    last_pli: Option<Instant>,
    /// VP8 publishers only: their video is transcoded to H.264 here.
    transcoder: Option<VideoTranscoder>,
    /// The VP8 decoder needs a keyframe before its output is worth anything.
    vp8_needs_keyframe: bool,
    /// Largest VP8 picture a keyframe may declare (`video.max_pixels`).
    max_pixels: u64,
    label: String,
    /// First media arrival: the shared clock origin of audio and video.
    origin: Option<Instant>,
    video_clock: RtpClock,
    audio_clock: RtpClock,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    info: Option<SpsInfo>,
    counters: crate::ingest::InputCounters,
}

impl ToRoom {
    fn new(anchor: AnchorSink, video_mid: Option<Mid>, transcoder: Option<VideoTranscoder>, label: String) -> Self {
        ToRoom {
            anchor,
            video_mid,
            received: Arc::default(),
            last_pli: None,
            transcoder,
            vp8_needs_keyframe: true,
            max_pixels: crate::media::transcode::MAX_PIXELS,
            label,
            origin: None,
            video_clock: RtpClock::default(),
            audio_clock: RtpClock::default(),
            sps: None,
            pps: None,
            counters: crate::ingest::InputCounters::new("whip"),
            info: None,
        }
    }

    fn on_media(&mut self, d: &MediaData) -> Result<MediaOutcome, Refusal> {
        let arrived = d.network_time;
        let origin = *self.origin.get_or_insert(arrived);
        match d.params.spec().codec {
            RtcCodec::Opus => {
                let pts = self.audio_clock.pts(origin, d.time.numer(), arrived, AUDIO_CLOCK);
                self.counters.audio_frames.increment(1);
                self.anchor.publish(Frame {
                    codec: Codec::Opus,
                    pts,
                    keyframe: false,
                    data: d.data[..].into(),
                    received_at: arrived,
                });
            }
            RtcCodec::H264 => {
                if h264::has_b_slice(&d.data) {
                    return Err(Refusal::BFrames);
                }
                let mut has_sps = false;
                let mut idr = false;
                for nal in h264::annex_b_nals(&d.data) {
                    match nal.first().map(|b| b & 0x1F) {
                        Some(h264::NAL_SPS) => {
                            has_sps = true;
                            if self.sps.as_deref() != Some(nal) {
                                self.sps = Some(Bytes::copy_from_slice(nal));
                                if let Ok(info) = h264::parse_sps(nal) {
                                    self.set_info(info);
                                }
                            }
                        }
                        Some(h264::NAL_PPS) => self.pps = Some(Bytes::copy_from_slice(nal)),
                        Some(h264::NAL_IDR) => idr = true,
                        _ => {}
                    }
                }
                let data: std::sync::Arc<[u8]> = match (idr && !has_sps, &self.sps, &self.pps) {
                    (true, Some(sps), Some(pps)) => {
                        let mut b = Vec::with_capacity(d.data.len() + sps.len() + pps.len() + 8);
                        for ps in [sps, pps] {
                            b.extend_from_slice(&[0, 0, 0, 1]);
                            b.extend_from_slice(ps);
                        }
                        b.extend_from_slice(&d.data);
                        b.into()
                    }
                    _ => d.data[..].into(),
                };
                let pts = self.video_clock.pts(origin, d.time.numer(), arrived, VIDEO_CLOCK);
                self.counters.video_frames.increment(1);
                self.anchor.publish(Frame {
                    codec: Codec::H264,
                    pts,
                    keyframe: idr,
                    data,
                    received_at: arrived,
                });
            }
            RtcCodec::Vp8 => return self.on_vp8(d, origin),
            _ => {}
        }
        Ok(MediaOutcome::Taken)
    }

    fn on_vp8(&mut self, d: &MediaData, origin: Instant) -> Result<MediaOutcome, Refusal> {
        let Some(t) = &self.transcoder else {
            return Ok(MediaOutcome::Taken);
        };
        // VP8 payload header (RFC 7741 §4.3): bit 0 of the first byte is 0 on a key frame.
        let key = d.data.first().is_some_and(|b| b & 1 == 0);
        if let Some((width, height)) = crate::media::vp8::keyframe_size(&d.data) {
            if width as u64 * height as u64 > self.max_pixels {
                return Err(Refusal::PictureTooLarge {
                    width,
                    height,
                    max_pixels: self.max_pixels,
                });
            }
        }
        if !d.contiguous && !key {
            self.vp8_needs_keyframe = true;
        }
        if self.vp8_needs_keyframe && !key {
            return Ok(MediaOutcome::NeedKeyframe);
        }
        self.vp8_needs_keyframe = false;
        let pts = self
            .video_clock
            .pts(origin, d.time.numer(), d.network_time, VIDEO_CLOCK);
        self.counters.video_frames.increment(1);
        Ok(match t.push(Bytes::copy_from_slice(&d.data), pts, d.network_time) {
            Ok(()) => MediaOutcome::Taken,
            Err(e) => {
                tracing::warn!(anchor = %self.label, error = %e, "VP8 frame dropped; waiting for a keyframe");
                metrics::counter!("roomgate_transcode_dropped_total").increment(1);
                self.vp8_needs_keyframe = true;
                MediaOutcome::NeedKeyframe
            }
        })
    }

    fn set_info(&mut self, info: SpsInfo) {
        self.info = Some(info);
        self.anchor.set_video_info(TrackInfo::from(&info));
    }
}

impl MediaSink for ToRoom {
    fn media(&mut self, d: &MediaData) -> MediaVerdict {
        self.received.fetch_add(1, Ordering::Relaxed);
        match self.on_media(d) {
            Ok(MediaOutcome::Taken) => MediaVerdict::Taken,
            // The VP8 decoder lost its references: ask the publisher for a keyframe (1/s at most).
            Ok(MediaOutcome::NeedKeyframe) => match self.video_mid {
                Some(mid) if self.last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL) => {
                    self.last_pli = Some(Instant::now());
                    MediaVerdict::RequestKeyframe(mid)
                }
                _ => MediaVerdict::Taken,
            },
            Err(r) => {
                r.count("whip");
                tracing::warn!(anchor = %self.label, reason = %r, "WHIP publish ended");
                MediaVerdict::End(r.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rtp_times_map_onto_the_shared_anchor_clock() {
        let origin = Instant::now();
        let mut video = RtpClock::default();
        let mut audio = RtpClock::default();
        // Audio arrives first (the origin), video 100 ms later with an unrelated RTP base.
        assert_eq!(audio.pts(origin, 5_000, origin, AUDIO_CLOCK), 0);
        let v0 = video.pts(origin, 1_000_000, origin + Duration::from_millis(100), VIDEO_CLOCK);
        assert_eq!(v0, 9_000, "100 ms after the origin at 90 kHz");
        // Later frames advance by their RTP delta, whenever they arrive (jitter does not move them).
        assert_eq!(
            video.pts(origin, 1_003_000, origin + Duration::from_millis(500), VIDEO_CLOCK),
            12_000
        );
        assert_eq!(audio.pts(origin, 5_960, origin, AUDIO_CLOCK), 960);
        // An RTP time before the first one (reordering) does not go below the track's start.
        assert_eq!(video.pts(origin, 999_000, origin, VIDEO_CLOCK), 9_000);
    }
}
