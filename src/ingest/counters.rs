//! `InputCounters`: the per-frame metrics of one publisher, registered once.
//!
//! `metrics::counter!(name, labels)` looks the metric up by name and labels on every call (a hash and a lock);
//! a publisher counts every frame, so it keeps the handles instead.

use metrics::Counter;

/// `roomgate_frames_in_total` and `roomgate_bytes_in_total` of one source kind, per media kind.
#[derive(Clone)]
pub struct InputCounters {
    /// `roomgate_frames_in_total{kind="video"}`: video frames received.
    pub video_frames: Counter,
    /// `roomgate_frames_in_total{kind="audio"}`: audio frames received.
    pub audio_frames: Counter,
    /// `roomgate_bytes_in_total{kind="video"}`: video payload bytes received.
    pub video_bytes: Counter,
    /// `roomgate_bytes_in_total{kind="audio"}`: audio payload bytes received.
    pub audio_bytes: Counter,
}

impl InputCounters {
    /// The counters of `source` (`rtmp`, `whip`, `pull`).
    pub fn new(source: &'static str) -> Self {
        InputCounters {
            video_frames: metrics::counter!("roomgate_frames_in_total", "source" => source, "kind" => "video"),
            audio_frames: metrics::counter!("roomgate_frames_in_total", "source" => source, "kind" => "audio"),
            video_bytes: metrics::counter!("roomgate_bytes_in_total", "source" => source, "kind" => "video"),
            audio_bytes: metrics::counter!("roomgate_bytes_in_total", "source" => source, "kind" => "audio"),
        }
    }
}
