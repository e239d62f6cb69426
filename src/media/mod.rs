//! Media as roomgate carries it: one `Frame` shape for every source and every viewer, plus the pure codec helpers
//! (FLV tags, MPEG-TS, H.264, AAC, VP8 keyframe headers) the sources use to get there, the RTP payloads viewers get, and the libav transcoders for what WebRTC cannot carry.

pub mod aac;
pub mod flv;
pub mod h264;
pub mod rtp;
pub mod transcode;
pub mod ts;
pub mod vp8;

use std::sync::Arc;
use std::time::Instant;

/// RTP clock of H.264 video.
pub const VIDEO_CLOCK: u32 = 90_000;
/// RTP clock of Opus audio.
pub const AUDIO_CLOCK: u32 = 48_000;

/// The codecs a room carries. Anything else is transcoded (or refused) by the source before it reaches a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 without B-frames. Frame data is Annex-B (start codes); keyframes carry SPS and PPS in front.
    H264,
    /// One Opus packet (48 kHz, stereo; 20 ms from WebRTC publishers, `audio.opus_frame_ms` when transcoded).
    Opus,
}

impl Codec {
    /// The RTP clock rate of the codec: 90000 for H.264, 48000 for Opus.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::H264 => VIDEO_CLOCK,
            Codec::Opus => AUDIO_CLOCK,
        }
    }
    /// True for video (H.264).
    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264)
    }
}

/// One access unit (a whole H.264 picture) or one Opus packet, on its way from a source to viewers.
///
/// Cloning a frame never copies the payload (`Arc<[u8]>`), and the WebRTC stack takes that same `Arc` for every
/// viewer (str0m's writer accepts `Arc<[u8]>`), so a frame is allocated once whatever the number of viewers.
#[derive(Debug, Clone)]
pub struct Frame {
    /// H.264 or Opus; says how to read `data` and `pts`.
    pub codec: Codec,
    /// Presentation time in the codec's clock (`VIDEO_CLOCK` or `AUDIO_CLOCK`). Audio and video of one anchor share
    /// the same origin, so `pts / clock_rate` is comparable across them.
    pub pts: u64,
    /// A picture that decodes on its own (IDR). Always false for audio.
    pub keyframe: bool,
    /// The Annex-B access unit or the Opus packet, shared by every viewer.
    pub data: Arc<[u8]>,
    /// When the gateway had the source bytes of this frame in hand: the start of the gateway-added delay.
    pub received_at: Instant,
}

impl Frame {
    /// Presentation time in milliseconds.
    pub fn pts_ms(&self) -> u64 {
        self.pts * 1000 / self.codec.clock_rate() as u64
    }
}

/// Codec details of a track, for reporting (the room listing, the console) and for relay links to other nodes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrackInfo {
    /// The codec the source sent (e.g. "aac", "h264").
    pub source_codec: String,
    /// H.264 profile name as the SPS says it (e.g. `High`); `None` for audio.
    pub profile: Option<String>,
    /// H.264 `profile-level-id` (6 hex digits) for SDP; `None` for audio.
    pub profile_level_id: Option<String>,
    /// Picture width in pixels, when known.
    pub width: Option<u32>,
    /// Picture height in pixels, when known.
    pub height: Option<u32>,
    /// What viewers get: 48000 for Opus, whatever the source sent.
    pub sample_rate: Option<u32>,
    /// The source's own sample rate (e.g. 44100 for AAC that is transcoded to Opus).
    pub source_sample_rate: Option<u32>,
    /// Audio channels of the source, when known.
    pub channels: Option<u32>,
}

impl From<&h264::SpsInfo> for TrackInfo {
    /// An H.264 track as its SPS describes it.
    fn from(info: &h264::SpsInfo) -> TrackInfo {
        TrackInfo {
            source_codec: "h264".into(),
            profile: Some(info.profile_name().into()),
            profile_level_id: Some(info.profile_level_id()),
            width: Some(info.width),
            height: Some(info.height),
            ..Default::default()
        }
    }
}

/// Where a producer that runs apart from its source (a transcoder thread) puts what it makes. `media` defines it
/// and `room` implements it, so the codec layer never depends on rooms.
pub trait FrameSink: Send + 'static {
    /// Hand one frame on; false when nobody takes it any more (the anchor left).
    fn publish(&self, frame: Frame) -> bool;
    /// Report what the video track now carries (e.g. the size a transcoder found).
    fn set_video_info(&self, info: TrackInfo);
}
