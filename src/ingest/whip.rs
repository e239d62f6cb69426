//! `WhipService`: WHIP publishing (`POST /v2/pub/<sdkappid>/<room>?SessionID=<userid>`, Bearer UserSig).
//!
//! The publisher's H.264 and Opus are forwarded without decoding: str0m depacketizes each RTP frame, and a
//! `WhipPublisher` task turns it into a room frame (Annex-B, parameter sets in front of keyframes, timestamps on
//! one clock for audio and video). Viewer keyframe requests become PLIs (at most one a second); the anchor
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
use crate::media::transcode::{TranscodeError, VideoInput, VideoTranscoder};
use crate::media::{Codec, Frame, AUDIO_CLOCK, VIDEO_CLOCK};
use crate::room::RoomRef;
use crate::room::{AnchorPublisher, LeaveReason, RoomHub, RoomKey, SourceKind, TrackInfo};
use crate::rtc::{
    random_token, NewSession, PatchResult, ResourceError, RtcEngine, SessionEvent, SessionId, SessionResources,
};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::SdpOffer;
use str0m::format::Codec as RtcCodec;
use str0m::media::{MediaData, MediaKind, Mid};
use str0m::{IceCreds, Rtc};
use tokio::sync::mpsc;

/// At most one PLI to a publisher in this interval.
const PLI_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("missing Authorization: Bearer <UserSig of SessionID>")]
    MissingToken,
    #[error("missing SessionID (the publisher's user id)")]
    MissingUserId,
    #[error("the offer is not valid SDP: {0}")]
    BadOffer(String),
    #[error("the offer has no {0}: roomgate takes H.264 (packetization-mode=1) or VP8 video and Opus audio")]
    MissingCodec(&'static str),
    #[error("VP8 transcoder: {0}")]
    Transcoder(#[from] TranscodeError),
    #[error("WHIP session: {0}")]
    Resource(#[from] ResourceError),
    #[error("WebRTC publishing is disabled on this gateway")]
    Disabled,
    #[error("{0}")]
    Full(#[from] crate::rtc::EngineFull),
}

pub struct PublishRequest<'a> {
    pub sdkappid: u64,
    pub room: String,
    pub userid: Option<&'a str>,
    pub bearer: Option<&'a str>,
    pub private_map_key: Option<&'a str>,
    pub offer: &'a str,
}

pub struct PublishAnswer {
    pub resource: String,
    pub etag: String,
    pub sdp: String,
}

pub struct WhipService {
    pub engine: Arc<RtcEngine>,
    hub: Arc<RoomHub>,
    config: Arc<Config>,
    resources: SessionResources,
}

impl WhipService {
    pub fn new(engine: Arc<RtcEngine>, hub: Arc<RoomHub>, config: Arc<Config>) -> Arc<Self> {
        Arc::new(WhipService {
            engine,
            hub,
            config,
            resources: SessionResources::default(),
        })
    }

    pub async fn publish(self: &Arc<Self>, req: PublishRequest<'_>) -> Result<PublishAnswer, WhipError> {
        let userid = req.userid.filter(|u| !u.is_empty()).ok_or(WhipError::MissingUserId)?;
        let token = req.bearer.filter(|t| !t.is_empty()).ok_or(WhipError::MissingToken)?;
        let room = RoomRef::Str(req.room.clone());
        authorize_publish(
            &self.config.apps,
            req.sdkappid,
            &room,
            userid,
            token,
            req.private_map_key,
            unix_now(),
        )
        .map_err(Refusal::from)
        .inspect_err(|r| r.count("whip"))?;
        self.engine.check_room(self.config.rtc.max_sessions)?;

        let offer = SdpOffer::from_sdp_string(req.offer).map_err(|e| WhipError::BadOffer(e.to_string()))?;
        let creds = IceCreds {
            ufrag: random_token(8),
            pass: random_token(24),
        };
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds.clone())
            .clear_codecs()
            .enable_opus(true, false);
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
        let mut rtc = cfg.build(Instant::now());
        for c in self.engine.local_candidates() {
            rtc.add_local_candidate(c.clone());
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WhipError::BadOffer(e.to_string()))?;
        let kinds = crate::rtc::offer_media_kinds(req.offer);
        let negotiated = |rtc: &mut Rtc, kind: MediaKind, codec: RtcCodec| {
            kinds.iter().filter(|(_, k)| *k == kind).find_map(|(mid, _)| {
                let w = rtc.writer(*mid)?;
                let found = w.payload_params().any(|p| p.spec().codec == codec);
                found.then_some(*mid)
            })
        };
        let h264_mid = negotiated(&mut rtc, MediaKind::Video, RtcCodec::H264);
        let vp8_mid = negotiated(&mut rtc, MediaKind::Video, RtcCodec::Vp8).filter(|_| h264_mid.is_none());
        let video_mid = h264_mid.or(vp8_mid);
        let audio_mid = negotiated(&mut rtc, MediaKind::Audio, RtcCodec::Opus);
        if kinds.iter().any(|(_, k)| *k == MediaKind::Video) && video_mid.is_none() {
            return Err(WhipError::MissingCodec("H.264 or VP8 video"));
        }
        if kinds.iter().any(|(_, k)| *k == MediaKind::Audio) && audio_mid.is_none() {
            return Err(WhipError::MissingCodec("Opus audio"));
        }
        if video_mid.is_none() && audio_mid.is_none() {
            return Err(WhipError::MissingCodec("H.264 video or Opus audio"));
        }
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
                    self.engine.remove(engine_id).await;
                    self.resources.remove(&resource);
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
        metrics::gauge!("roomgate_whip_sessions").increment(1.0);
        let mut publisher = WhipPublisher::new(anchor, video_mid, transcoder, label);
        publisher.max_pixels = self.config.video.max_pixels;
        let timeout = Duration::from_secs(self.config.rtc.session_timeout_secs.max(1));
        tokio::spawn(run(
            self.clone(),
            resource.clone(),
            engine_id,
            publisher,
            events_rx,
            timeout,
        ));
        Ok(PublishAnswer {
            resource,
            etag,
            sdp: answer.to_sdp_string(),
        })
    }

    /// DELETE: end the session; the anchor leaves the room.
    pub async fn stop(&self, resource: &str) -> Result<(), WhipError> {
        let id = self.resources.remove(resource).ok_or(ResourceError::NoSession)?;
        self.engine.remove(id).await;
        Ok(())
    }

    pub async fn patch(
        &self,
        resource: &str,
        if_match: Option<&str>,
        fragment: &str,
    ) -> Result<PatchResult, WhipError> {
        Ok(self.resources.patch(&self.engine, resource, if_match, fragment).await?)
    }

    pub fn session_count(&self) -> usize {
        self.resources.len()
    }
}

/// One publishing session: engine events in, room frames out.
async fn run(
    svc: Arc<WhipService>,
    resource: String,
    id: SessionId,
    mut publisher: WhipPublisher,
    mut events: mpsc::UnboundedReceiver<SessionEvent>,
    timeout: Duration,
) {
    let mut keyframe_requests = publisher.anchor.keyframe_requests();
    let mut kicked = publisher.anchor.kick_signal();
    let mut last_pli: Option<Instant> = None;
    let reason = loop {
        tokio::select! {
            ev = tokio::time::timeout(timeout, events.recv()) => match ev {
                Err(_) => break LeaveReason::Timeout,
                Ok(None) | Ok(Some(SessionEvent::Closed(_))) => break LeaveReason::Normal,
                Ok(Some(SessionEvent::Media(d))) => match publisher.on_media(&d) {
                    Err(r) => {
                        r.count("whip");
                        tracing::warn!(anchor = %publisher.label, reason = %r, "WHIP publish ended");
                        break LeaveReason::Ended(r.to_string());
                    }
                    // The VP8 decoder lost its references: ask the publisher for a keyframe (1/s at most).
                    Ok(MediaOutcome::NeedKeyframe) => {
                        if let Some(mid) = publisher.video_mid {
                            if last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL) {
                                last_pli = Some(Instant::now());
                                svc.engine.request_keyframe(id, mid).await;
                            }
                        }
                    }
                    Ok(MediaOutcome::Taken) => {}
                },
                Ok(Some(_)) => {}
            },
            Some(()) = keyframe_requests.recv() => {
                if let Some(t) = &publisher.transcoder {
                    t.request_keyframe();
                } else if let Some(mid) = publisher.video_mid {
                    if last_pli.is_none_or(|t| t.elapsed() >= PLI_INTERVAL) {
                        last_pli = Some(Instant::now());
                        svc.engine.request_keyframe(id, mid).await;
                    }
                }
            }
            _ = kicked.changed() => {
                if kicked.borrow().is_some() {
                    tracing::info!(anchor = %publisher.label, "WHIP publisher replaced by a new one");
                    break LeaveReason::Replaced;
                }
            }
        }
    };
    if reason == LeaveReason::Timeout {
        tracing::warn!(anchor = %publisher.label, "WHIP publisher sent no media in {timeout:?}; session ended");
    }
    svc.engine.remove(id).await;
    svc.resources.remove(&resource);
    metrics::gauge!("roomgate_whip_sessions").decrement(1.0);
    publisher.anchor.leave(reason);
}

/// What became of one depacketized frame.
enum MediaOutcome {
    Taken,
    /// The transcoder's input has a gap: the publisher should send a keyframe.
    NeedKeyframe,
}

/// Turns depacketized WebRTC frames into room frames for one anchor.
struct WhipPublisher {
    anchor: AnchorPublisher,
    video_mid: Option<Mid>,
    /// VP8 publishers only: their video is transcoded to H.264 here.
    transcoder: Option<VideoTranscoder>,
    /// The VP8 decoder needs a keyframe before its output is worth anything.
    vp8_needs_keyframe: bool,
    /// Largest VP8 picture a keyframe may declare (`video.max_pixels`).
    max_pixels: u64,
    label: String,
    /// First media arrival: the shared clock origin of audio and video.
    origin: Option<Instant>,
    video_base: Option<(u64, u64)>,
    audio_base: Option<(u64, u64)>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    info: Option<SpsInfo>,
    counters: crate::ingest::InputCounters,
}

impl WhipPublisher {
    fn new(
        anchor: AnchorPublisher,
        video_mid: Option<Mid>,
        transcoder: Option<VideoTranscoder>,
        label: String,
    ) -> Self {
        WhipPublisher {
            anchor,
            video_mid,
            transcoder,
            vp8_needs_keyframe: true,
            max_pixels: crate::media::transcode::MAX_PIXELS,
            label,
            origin: None,
            video_base: None,
            audio_base: None,
            sps: None,
            pps: None,
            counters: crate::ingest::InputCounters::new("whip"),
            info: None,
        }
    }

    /// Map an RTP media time onto the anchor clock: (first RTP time, its anchor time) + RTP delta.
    fn pts(origin: Instant, base: &mut Option<(u64, u64)>, rtp: u64, arrived: Instant, clock: u32) -> u64 {
        let (rtp0, pts0) = *base.get_or_insert_with(|| {
            (
                rtp,
                arrived.saturating_duration_since(origin).as_micros() as u64 * clock as u64 / 1_000_000,
            )
        });
        pts0 + rtp.saturating_sub(rtp0)
    }

    fn on_media(&mut self, d: &MediaData) -> Result<MediaOutcome, Refusal> {
        let arrived = d.network_time;
        let origin = *self.origin.get_or_insert(arrived);
        match d.params.spec().codec {
            RtcCodec::Opus => {
                let pts = Self::pts(origin, &mut self.audio_base, d.time.numer(), arrived, AUDIO_CLOCK);
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
                let pts = Self::pts(origin, &mut self.video_base, d.time.numer(), arrived, VIDEO_CLOCK);
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
        let pts = Self::pts(
            origin,
            &mut self.video_base,
            d.time.numer(),
            d.network_time,
            VIDEO_CLOCK,
        );
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
