//! Sources: each one ends by publishing `media::Frame`s into a room as a virtual anchor.
//! What they share is here: why a publish is refused or ended (`Refusal`) and the per-source input counters.
//! Who may publish is decided in `crate::access`.

mod counters;
pub mod pull;
pub mod rtmp;
pub mod whip;

pub use counters::InputCounters;

pub use crate::access::{clip, Denied};

/// Why a publish was refused or ended. The text is what the publisher is told (RTMP status description, HTTP
/// body) and what the log says; `label()` names it in metrics.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("missing {0} in the stream key: use <room>?sdkappid=..&userid=..&usersig=..")]
    MissingParameter(&'static str),
    #[error("sdkappid {0:?} is not a number")]
    BadSdkAppId(String),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("B-frames are not supported (the stream has a non-zero composition time): encode with profile baseline or without B-frames (x264: -profile:v baseline or -bf 0; OBS: Profile baseline / bframes=0)")]
    BFrames,
    #[error("video codec {0} is not supported: send H.264 (e.g. -c:v libx264 -profile:v baseline)")]
    VideoCodec(String),
    #[error("audio codec {0} is not supported: send AAC (or MP3)")]
    AudioCodec(String),
    #[error("malformed stream: {0}")]
    Malformed(String),
    #[error(
        "the picture is {width}x{height}, larger than the {max_pixels} pixels this gateway decodes (video.max_pixels)"
    )]
    PictureTooLarge { width: u32, height: u32, max_pixels: u64 },
    #[error("replaced by a new publisher with the same sdkappid, room and userid")]
    Replaced,
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::MissingParameter(_) | Refusal::BadSdkAppId(_) => "bad_parameter",
            Refusal::Denied(d) => d.label(),
            Refusal::BFrames => "bframes",
            Refusal::VideoCodec(_) => "video_codec",
            Refusal::AudioCodec(_) => "audio_codec",
            Refusal::Malformed(_) => "malformed",
            Refusal::PictureTooLarge { .. } => "picture_size",
            Refusal::Replaced => "replaced",
        }
    }

    /// Count the refusal in `/metrics`.
    pub fn count(&self, source: &'static str) {
        metrics::counter!("roomgate_refusals_total", "source" => source, "reason" => self.label()).increment(1);
    }
}
