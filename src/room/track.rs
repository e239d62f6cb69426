//! A `Track` fans one anchor's frames out to any number of subscribers.
//!
//! Frames are shared (`Bytes`), never copied. Each subscriber reads from a bounded broadcast ring at its own
//! pace; one that falls further behind than the ring loses frames and resumes at the next keyframe, so a slow
//! viewer never slows the publisher or the other viewers. The last GOP of a video track is kept so a new
//! subscriber starts on a keyframe at once; snapshot and subscription happen under one lock, so a subscriber
//! sees every frame after the snapshot exactly once.

use crate::media::{Codec, Frame};
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::broadcast;

/// Frames a subscriber may fall behind before it skips to the next keyframe (about 4 s of 30 fps video).
pub const SUBSCRIBER_QUEUE: usize = 128;
/// Bounds of the GOP cache: past either, the cache is dropped until the next keyframe.
const GOP_MAX_FRAMES: usize = 1200;
const GOP_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Live statistics of a track, as the HTTP API reports them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrackStats {
    /// Frames published since the track began.
    pub frames: u64,
    /// Payload bytes published since the track began.
    pub bytes: u64,
    /// Keyframes published since the track began (always 0 for audio).
    pub keyframes: u64,
    /// Frames per second over the last measuring window (about one second).
    pub fps: f64,
    /// Bitrate over the last measuring window, kbit/s.
    pub bitrate_kbps: f64,
    #[serde(skip)]
    window_start: Option<Instant>,
    #[serde(skip)]
    window_frames: u64,
    #[serde(skip)]
    window_bytes: u64,
}

impl TrackStats {
    fn add(&mut self, frame: &Frame) {
        self.frames += 1;
        self.bytes += frame.data.len() as u64;
        self.keyframes += frame.keyframe as u64;
        let now = frame.received_at;
        let start = *self.window_start.get_or_insert(now);
        self.window_frames += 1;
        self.window_bytes += frame.data.len() as u64;
        let elapsed = now.saturating_duration_since(start).as_secs_f64();
        if elapsed >= 1.0 {
            self.fps = self.window_frames as f64 / elapsed;
            self.bitrate_kbps = self.window_bytes as f64 * 8.0 / elapsed / 1000.0;
            self.window_start = Some(now);
            self.window_frames = 0;
            self.window_bytes = 0;
        }
    }
}

struct TrackState {
    /// `None` once the anchor has left: subscribers then see the end of the track.
    tx: Option<broadcast::Sender<Frame>>,
    gop: Vec<Frame>,
    gop_bytes: usize,
    stats: TrackStats,
    last_frame: Option<std::time::Instant>,
}

/// One media track of an anchor (its video or its audio).
pub struct Track {
    /// H.264 for the video track, Opus for the audio track.
    pub codec: Codec,
    state: Mutex<TrackState>,
}

impl Track {
    /// An open track of `codec`, with no frames and no subscribers.
    pub fn new(codec: Codec) -> Track {
        let (tx, _) = broadcast::channel(SUBSCRIBER_QUEUE);
        Track {
            codec,
            state: Mutex::new(TrackState {
                tx: Some(tx),
                gop: Vec::new(),
                gop_bytes: 0,
                stats: TrackStats::default(),
                last_frame: None,
            }),
        }
    }

    /// Send a frame to every subscriber. Returns false when the track is closed. Never blocks on subscribers.
    pub(crate) fn publish(&self, frame: Frame) -> bool {
        let mut st = self.state.lock().expect("track lock");
        if st.tx.is_none() {
            return false;
        }
        st.stats.add(&frame);
        st.last_frame = Some(std::time::Instant::now());
        if self.codec.is_video() {
            if frame.keyframe {
                st.gop.clear();
                st.gop_bytes = 0;
            }
            if (frame.keyframe || !st.gop.is_empty())
                && st.gop.len() < GOP_MAX_FRAMES
                && st.gop_bytes + frame.data.len() <= GOP_MAX_BYTES
            {
                st.gop_bytes += frame.data.len();
                st.gop.push(frame.clone());
            } else if !st.gop.is_empty() {
                // Too long a GOP to cache: a late joiner waits for the next keyframe instead.
                st.gop.clear();
                st.gop_bytes = 0;
            }
        }
        if let Some(tx) = &st.tx {
            let _ = tx.send(frame);
        }
        true
    }

    /// Start receiving: the cached GOP first, then live frames.
    pub fn subscribe(&self) -> TrackSubscriber {
        let st = self.state.lock().expect("track lock");
        let rx = st.tx.as_ref().map(|tx| tx.subscribe());
        TrackSubscriber {
            backlog: st.gop.clone().into_iter(),
            rx,
            waiting_for_keyframe: self.codec.is_video() && st.gop.is_empty(),
            video: self.codec.is_video(),
            dropped: 0,
        }
    }

    /// A copy of the track's statistics now.
    pub fn stats(&self) -> TrackStats {
        self.state.lock().expect("track lock").stats.clone()
    }

    /// How long since the last frame (`None`: never had one).
    pub fn idle_for(&self) -> Option<std::time::Duration> {
        self.state.lock().expect("track lock").last_frame.map(|t| t.elapsed())
    }

    /// Whether any frame was ever published on the track.
    pub fn has_media(&self) -> bool {
        self.state.lock().expect("track lock").stats.frames > 0
    }

    /// Whether a keyframe is cached (a new viewer can start at once).
    pub fn has_cached_keyframe(&self) -> bool {
        !self.state.lock().expect("track lock").gop.is_empty()
    }

    /// Live subscribers (viewers) of this track.
    pub fn subscribers(&self) -> usize {
        self.state
            .lock()
            .expect("track lock")
            .tx
            .as_ref()
            .map_or(0, |tx| tx.receiver_count())
    }

    /// Whether the track has ended (its anchor left).
    pub fn is_closed(&self) -> bool {
        self.state.lock().expect("track lock").tx.is_none()
    }

    /// End the track: subscribers drain what they have and then see `None`.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock().expect("track lock");
        st.tx = None;
        st.gop.clear();
        st.gop_bytes = 0;
    }
}

/// One subscriber's view of a track.
pub struct TrackSubscriber {
    backlog: std::vec::IntoIter<Frame>,
    rx: Option<broadcast::Receiver<Frame>>,
    waiting_for_keyframe: bool,
    video: bool,
    dropped: u64,
}

impl TrackSubscriber {
    /// The next frame, or `None` once the track has ended. Video resumes at a keyframe after any loss.
    pub async fn recv(&mut self) -> Option<Frame> {
        if let Some(f) = self.backlog.next() {
            return Some(f);
        }
        let rx = self.rx.as_mut()?;
        loop {
            match rx.recv().await {
                Ok(f) => {
                    if self.waiting_for_keyframe {
                        if !f.keyframe {
                            self.dropped += 1;
                            continue;
                        }
                        self.waiting_for_keyframe = false;
                    }
                    return Some(f);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.dropped += n;
                    self.waiting_for_keyframe = self.video;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Take the cached frames this subscription started with (the last GOP), leaving only live frames.
    pub fn take_backlog(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.backlog).collect()
    }

    /// Frames this subscriber lost by falling behind (or skipped while waiting for a keyframe).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pts: u64, key: bool) -> Frame {
        Frame {
            codec: Codec::H264,
            pts,
            keyframe: key,
            data: vec![0u8; 10].into(),
            received_at: Instant::now(),
        }
    }

    #[tokio::test]
    async fn late_subscriber_starts_at_cached_keyframe() {
        let t = Track::new(Codec::H264);
        t.publish(frame(0, false)); // before any keyframe: not cached
        t.publish(frame(1, true));
        t.publish(frame(2, false));
        let mut s = t.subscribe();
        t.publish(frame(3, false));
        let got: Vec<u64> = vec![
            s.recv().await.unwrap().pts,
            s.recv().await.unwrap().pts,
            s.recv().await.unwrap().pts,
        ];
        assert_eq!(got, vec![1, 2, 3]);
        t.close();
        assert!(s.recv().await.is_none());
    }

    #[tokio::test]
    async fn slow_subscriber_skips_to_next_keyframe_and_does_not_block() {
        let t = Track::new(Codec::H264);
        t.publish(frame(0, true));
        let mut slow = t.subscribe();
        let mut fast = t.subscribe();
        assert_eq!(fast.recv().await.unwrap().pts, 0);
        assert_eq!(slow.recv().await.unwrap().pts, 0);
        // The publisher never waits, however far behind `slow` is.
        for pts in 1..(SUBSCRIBER_QUEUE as u64 * 3) {
            assert!(t.publish(frame(pts, false)));
            assert_eq!(fast.recv().await.unwrap().pts, pts);
        }
        let key = SUBSCRIBER_QUEUE as u64 * 3;
        t.publish(frame(key, true));
        t.publish(frame(key + 1, false));
        assert_eq!(slow.recv().await.unwrap().pts, key, "resumes at the next keyframe");
        assert_eq!(slow.recv().await.unwrap().pts, key + 1);
        assert!(slow.dropped() > 0);
    }

    #[tokio::test]
    async fn subscriber_without_cache_waits_for_keyframe() {
        let t = Track::new(Codec::H264);
        let mut s = t.subscribe();
        t.publish(frame(0, false));
        t.publish(frame(1, true));
        assert_eq!(s.recv().await.unwrap().pts, 1);
    }
}
