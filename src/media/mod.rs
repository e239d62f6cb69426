//! Media as roomgate carries it: one `Frame` shape for every source and every viewer, plus the pure codec helpers
//! (FLV tags, H.264, AAC, VP8 keyframe headers) the sources use to get there and the libav transcoders for what WebRTC cannot carry.

pub mod aac;
pub mod flv;
pub mod h264;
pub mod transcode;
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
    /// One Opus packet (20 ms at 48 kHz, stereo).
    Opus,
}

impl Codec {
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::H264 => VIDEO_CLOCK,
            Codec::Opus => AUDIO_CLOCK,
        }
    }
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
    pub codec: Codec,
    /// Presentation time in the codec's clock (`VIDEO_CLOCK` or `AUDIO_CLOCK`). Audio and video of one anchor share
    /// the same origin, so `pts / clock_rate` is comparable across them.
    pub pts: u64,
    /// A picture that decodes on its own (IDR). Always false for audio.
    pub keyframe: bool,
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
