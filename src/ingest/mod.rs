//! Sources: each one ends by publishing `media::Frame`s into a room as a virtual anchor.
//! What they share is here: why a publish is refused or ended (`Refusal`) and the per-source input counters.
//! Who may publish is decided in `crate::access`.

mod audio;
mod counters;
pub mod pull;
pub mod rtmp;
pub mod srt;
pub mod whip;

pub use audio::AudioBridge;
pub use counters::InputCounters;

pub use crate::access::{clip, Denied};

/// Why a publish was refused or ended. The text is what the publisher is told (RTMP status description, HTTP
/// body) and what the log says; `label()` names it in metrics.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// An RTMP stream key lacks a required parameter (`sdkappid`, `userid` or `usersig`).
    #[error("missing {0} in the stream key: use <room>?sdkappid=..&userid=..&usersig=..")]
    MissingParameter(&'static str),
    /// The stream key's `sdkappid` is not a number; carries the (clipped) text.
    #[error("sdkappid {0:?} is not a number")]
    BadSdkAppId(String),
    /// The app, the ids or the credentials do not let this publisher in.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The video has B-frames (non-zero composition time), which roomgate does not pass on.
    #[error("B-frames are not supported (the stream's pictures are reordered: non-zero composition time, or DTS before PTS): encode with profile baseline or without B-frames (x264: -profile:v baseline or -bf 0; OBS: Profile baseline / bframes=0)")]
    BFrames,
    /// The video codec is not H.264; carries its name.
    #[error("video codec {0} is not supported: send H.264 (e.g. -c:v libx264 -profile:v baseline)")]
    VideoCodec(String),
    /// The audio codec is neither AAC nor MP3, or cannot be transcoded; carries its name or the error.
    #[error("audio codec {0} is not supported: send AAC (or MP3)")]
    AudioCodec(String),
    /// The stream cannot be parsed (FLV tag, AVC or AAC config) or the audio transcoder failed.
    #[error("malformed stream: {0}")]
    Malformed(String),
    /// The picture is `width` x `height`, more than the `max_pixels` (`video.max_pixels`) roomgate decodes.
    #[error(
        "the picture is {width}x{height}, larger than the {max_pixels} pixels this gateway decodes (video.max_pixels)"
    )]
    PictureTooLarge {
        /// Width of the source picture, pixels.
        width: u32,
        /// Height of the source picture, pixels.
        height: u32,
        /// The limit on width x height (`video.max_pixels`).
        max_pixels: u64,
    },
    /// A new publisher with the same sdkappid, room and userid took over.
    #[error("replaced by a new publisher with the same sdkappid, room and userid")]
    Replaced,
}

impl Refusal {
    /// The reason's name in metrics.
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

/// Resolves once another publisher took over the identity `kick` watches (never without a `kick`).
pub(crate) async fn replaced(kick: &mut Option<tokio::sync::watch::Receiver<Option<crate::room::LeaveReason>>>) {
    match kick {
        Some(rx) => loop {
            if rx.borrow_and_update().is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        },
        None => std::future::pending().await,
    }
}
