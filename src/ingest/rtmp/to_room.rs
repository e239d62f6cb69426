//! `ToRoom`: the room side of one RTMP publish. `start` decides whether the stream key may publish and
//! joins the room; then FLV tag bodies become room frames: H.264 passes through (AVCC → Annex-B, parameter sets
//! on keyframes); AAC/MP3 goes to an Opus transcoder.

use super::RtmpContext;
use crate::access::authorize_publish;
use crate::auth::unix_now;
use crate::ingest::AudioBridge;
use crate::ingest::Refusal;
use crate::media::flv::{self, AudioTag, VideoCodecId, VideoTag};
use crate::media::h264::AvcConfig;
use crate::media::transcode::{AudioInputCodec, OpusSettings};
use crate::media::{aac::AudioSpecificConfig, Codec, Frame, VIDEO_CLOCK};
use crate::room::RoomRef;
use crate::room::{AnchorHandle, LeaveReason, TrackInfo};
use crate::room::{RoomKey, SourceKind};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The room side of one accepted RTMP publish: its anchor and what turns FLV tags into room frames.
pub struct ToRoom {
    anchor: AnchorHandle,
    label: String,
    avc: Option<AvcConfig>,
    audio: AudioBridge,
    warned_no_config: bool,
    counters: crate::ingest::InputCounters,
}

impl ToRoom {
    /// Room side for `anchor`; `label` names it in logs, `opus` sets the audio transcoder.
    pub fn new(anchor: AnchorHandle, label: String, opus: OpusSettings) -> Self {
        ToRoom {
            anchor,
            audio: AudioBridge::new(label.clone(), opus),
            label,
            avc: None,
            warned_no_config: false,
            counters: crate::ingest::InputCounters::new("rtmp"),
        }
    }

    /// Authorize `stream_key` (`<room>?sdkappid=..&userid=..&usersig=..`, parameters on the app name count
    /// too) and join the room as its anchor.
    pub fn start(ctx: &Arc<RtmpContext>, peer: SocketAddr, stream_key: &str, app_query: &str) -> Result<Self, Refusal> {
        let started = Instant::now();
        let (room, params) = parse_stream_key(stream_key, app_query);
        let get = |k: &'static str| {
            params
                .get(k)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .ok_or(Refusal::MissingParameter(k))
        };
        let sdkappid_raw = get("sdkappid")?;
        let sdkappid: u64 = sdkappid_raw
            .parse()
            .map_err(|_| Refusal::BadSdkAppId(crate::ingest::clip(sdkappid_raw)))?;
        let userid = get("userid")?.to_string();
        let usersig = get("usersig")?;
        let label = format!("{sdkappid}/{room}/{userid}");
        let room = RoomRef::Str(room);
        authorize_publish(
            &ctx.config.apps,
            sdkappid,
            &room,
            &userid,
            usersig,
            params.get("privatemapkey").map(String::as_str),
            unix_now(),
        )?;
        let anchor = ctx.hub.join(RoomKey { sdkappid, room }, &userid, SourceKind::Rtmp);
        tracing::info!(%peer, anchor = %label, auth_us = started.elapsed().as_micros() as u64, "RTMP publish started");
        Ok(ToRoom::new(anchor, label, ctx.config.opus_settings(sdkappid, None)))
    }

    /// The anchor this publish feeds.
    pub fn anchor(&self) -> &AnchorHandle {
        &self.anchor
    }

    /// `sdkappid/room/userid`, for logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// One video message: `ts` is the RTMP timestamp (ms).
    pub fn on_video(&mut self, ts: u32, body: &Bytes, received_at: Instant) -> Result<(), Refusal> {
        self.counters.video_bytes.increment(body.len() as u64);
        match flv::parse_video(body).map_err(|e| Refusal::Malformed(e.to_string()))? {
            VideoTag::AvcSequenceHeader(rec) => {
                let cfg = AvcConfig::parse(&rec).map_err(|e| Refusal::Malformed(e.to_string()))?;
                let info = cfg.info;
                tracing::info!(anchor = %self.label, profile = info.profile_name(), width = info.width, height = info.height, "H.264 sequence header");
                self.anchor.set_video_info(TrackInfo::from(&info));
                self.avc = Some(cfg);
                Ok(())
            }
            VideoTag::AvcNalus {
                keyframe,
                composition_time,
                data,
            } => {
                if composition_time != 0 {
                    return Err(Refusal::BFrames);
                }
                let Some(cfg) = &self.avc else {
                    if !self.warned_no_config {
                        tracing::warn!(anchor = %self.label, "H.264 frames before the sequence header are dropped");
                        self.warned_no_config = true;
                    }
                    return Ok(());
                };
                let (annexb, idr) = cfg
                    .to_annex_b(&data, keyframe)
                    .map_err(|e| Refusal::Malformed(e.to_string()))?;
                self.counters.video_frames.increment(1);
                self.anchor.publish(Frame {
                    codec: Codec::H264,
                    pts: ts as u64 * (VIDEO_CLOCK as u64 / 1000),
                    keyframe: keyframe || idr,
                    data: annexb[..].into(),
                    received_at,
                });
                Ok(())
            }
            VideoTag::AvcEndOfSequence | VideoTag::Ignored => Ok(()),
            VideoTag::Unsupported(codec) => Err(Refusal::VideoCodec(codec_name(codec))),
        }
    }

    /// One audio message: `ts` is the RTMP timestamp (ms).
    pub async fn on_audio(&mut self, ts: u32, body: &Bytes, received_at: Instant) -> Result<(), Refusal> {
        self.counters.audio_bytes.increment(body.len() as u64);
        let (codec, data) = match flv::parse_audio(body).map_err(|e| Refusal::Malformed(e.to_string()))? {
            AudioTag::AacSequenceHeader(config) => {
                let asc = AudioSpecificConfig::parse(&config).map_err(|e| Refusal::Malformed(e.to_string()))?;
                self.anchor.set_audio_info(TrackInfo {
                    source_codec: "aac".into(),
                    sample_rate: Some(crate::media::AUDIO_CLOCK),
                    source_sample_rate: Some(asc.sample_rate),
                    channels: Some(asc.channels as u32),
                    ..Default::default()
                });
                self.audio.ensure(AudioInputCodec::Aac { config }, &self.anchor)?;
                return Ok(());
            }
            AudioTag::AacRaw(data) => {
                if !matches!(self.audio.codec(), Some(AudioInputCodec::Aac { .. })) {
                    return Ok(()); // raw AAC before its configuration: nothing to decode it with
                }
                (None, data)
            }
            AudioTag::Mp3(data) => {
                if self.audio.codec().is_none() {
                    self.anchor.set_audio_info(TrackInfo {
                        source_codec: "mp3".into(),
                        ..Default::default()
                    });
                }
                (Some(AudioInputCodec::Mp3), data)
            }
            AudioTag::Unsupported(id) => return Err(Refusal::AudioCodec(flv::audio_format_name(id).into())),
        };
        if let Some(c) = codec {
            self.audio.ensure(c, &self.anchor)?;
        }
        self.counters.audio_frames.increment(1);
        self.audio.push(data, ts as u64, received_at);
        Ok(())
    }

    /// Leave the room (the audio transcoder has published all it made).
    pub async fn finish(self, reason: LeaveReason) {
        self.anchor.leave(reason);
    }
}

fn codec_name(c: VideoCodecId) -> String {
    c.name()
}

/// Split `<room>?k=v&..` into the room and its parameters; parameters on the app name (`push?k=v`) count too.
pub fn parse_stream_key(stream_key: &str, app_query: &str) -> (String, HashMap<String, String>) {
    let (room, query) = stream_key.split_once('?').unwrap_or((stream_key, ""));
    let mut params = HashMap::new();
    for q in [app_query, query] {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            params.insert(k.to_ascii_lowercase(), v.into_owned());
        }
    }
    (room.trim_matches('/').to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys() {
        let (room, p) = parse_stream_key("room_1?sdkappid=1400000001&userid=u&usersig=eJx*a-b_", "");
        assert_eq!(room, "room_1");
        assert_eq!(p["sdkappid"], "1400000001");
        assert_eq!(p["usersig"], "eJx*a-b_");
        let (room, p) = parse_stream_key("r2", "sdkappid=5&UserId=x");
        assert_eq!(
            (room.as_str(), p["sdkappid"].as_str(), p["userid"].as_str()),
            ("r2", "5", "x")
        );
    }
}
