//! Real-time pacing of a pull source: source timestamps become wall-clock due times and output timestamps on the
//! task's own timeline (µs since the task began), through tempo changes, pauses and timestamp jumps. Pure: time
//! comes in as `Instant`s.

use ffmpeg_next as ff;
use std::time::{Duration, Instant};

/// A jump of source time larger than this (either way) is a discontinuity, not a wait.
const MAX_JUMP_US: u64 = 10_000_000;

/// Maps source timestamps to wall-clock due times and output timestamps (µs since the task's epoch).
pub(super) struct Pacer {
    pub first_media_us: i64,
    /// The last media time seen, to notice jumps.
    last_media_us: i64,
    /// The media time and instant the current tempo segment started at.
    anchor_media_us: i64,
    anchor_wall: Instant,
    epoch: Instant,
    tempo: f64,
}

impl Pacer {
    /// A pacer whose first packet, at media time `media_us`, is due `now`.
    pub fn new(media_us: i64, epoch: Instant, tempo: f64, now: Instant) -> Pacer {
        Pacer {
            first_media_us: media_us,
            last_media_us: media_us,
            anchor_media_us: media_us,
            anchor_wall: now,
            epoch,
            tempo,
        }
    }

    /// A source time jump of more than `MAX_JUMP_US` either way (a discontinuity, a wrapped or hostile
    /// timestamp) starts a new segment right after the last packet instead of sleeping for the gap (or
    /// bursting through it); the reported position moves on as if there had been no gap.
    pub fn follow(&mut self, media_us: i64) {
        let jump = media_us.saturating_sub(self.last_media_us);
        if jump.unsigned_abs() > MAX_JUMP_US {
            let (last_due, _) = self.due(self.last_media_us);
            self.anchor_media_us = media_us;
            self.anchor_wall = last_due;
            self.first_media_us = self.first_media_us.saturating_add(jump);
        }
        self.last_media_us = media_us;
    }

    /// Start a new segment when the tempo changed (so earlier media keeps its times).
    pub fn set_tempo(&mut self, media_us: i64, tempo: f64) {
        if (tempo - self.tempo).abs() > 1e-6 {
            let (due, _) = self.due(media_us);
            self.anchor_media_us = media_us;
            self.anchor_wall = due;
            self.tempo = tempo;
        }
    }

    /// Time spent paused moves everything after it.
    pub fn shift(&mut self, d: Duration) {
        self.anchor_wall += d;
    }

    /// When `media_us` is due, and its output timestamp (µs since the epoch).
    pub fn due(&self, media_us: i64) -> (Instant, i64) {
        let offset = (media_us.saturating_sub(self.anchor_media_us) as f64 / self.tempo) as i64;
        let due = if offset >= 0 {
            self.anchor_wall
                .checked_add(Duration::from_micros(offset as u64))
                .unwrap_or(self.anchor_wall + Duration::from_secs(86_400 * 365))
        } else {
            self.anchor_wall
                .checked_sub(Duration::from_micros(offset.unsigned_abs()))
                .unwrap_or(self.anchor_wall)
        };
        let out = due.saturating_duration_since(self.epoch).as_micros() as i64;
        (due, out)
    }
}

pub(super) fn rescale_us(ts: i64, tb: ff::Rational) -> i64 {
    if tb.denominator() == 0 {
        return ts;
    }
    let us = ts as i128 * tb.numerator() as i128 * 1_000_000 / tb.denominator() as i128;
    us.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_media_time_scaled_by_tempo() {
        let epoch = Instant::now();
        let mut p = Pacer::new(5_000_000, epoch, 1.0, epoch);
        let start = p.anchor_wall;
        let (due, out) = p.due(6_000_000);
        assert_eq!(
            due - start,
            Duration::from_secs(1),
            "one second of media is due one second later"
        );
        assert_eq!(
            out,
            (due - epoch).as_micros() as i64,
            "the output timeline is wall time since the epoch"
        );
        // Double speed from media time 6 s: the next second of media takes half a second.
        p.set_tempo(6_000_000, 2.0);
        let (due2, _) = p.due(7_000_000);
        assert_eq!(due2 - due, Duration::from_millis(500));
        // A pause moves everything after it.
        p.shift(Duration::from_secs(3));
        let (due3, out3) = p.due(7_000_000);
        assert_eq!(due3 - due2, Duration::from_secs(3));
        assert!(out3 > out, "timestamps stay monotonic across pauses");
        // Media from before the segment (reordered packets) is due no later than the segment start.
        let (early, _) = p.due(0);
        assert!(early <= due3);
    }

    #[test]
    fn a_timestamp_jump_re_anchors_pacing_instead_of_sleeping() {
        let epoch = Instant::now();
        let mut p = Pacer::new(0, epoch, 1.0, epoch);
        p.follow(0);
        let (d1, out1) = p.due(1_000_000);
        p.follow(1_000_000);
        // The source jumps 3 hours ahead: the next packet is due right after the last one, not in 3 hours.
        let far = 3 * 3600 * 1_000_000;
        p.follow(far);
        let (d2, out2) = p.due(far);
        assert_eq!(d2, d1, "due at once after the jump");
        assert_eq!(out2, out1, "the output timeline has no gap");
        let (d3, _) = p.due(far + 40_000);
        assert_eq!(d3 - d2, Duration::from_millis(40), "then paced as before");
        // And back by more than 10 s: the same.
        p.follow(far + 40_000);
        p.follow(5_000_000);
        assert_eq!(p.due(5_000_000).0, d3);
        // Within 10 s, reordering stays as it was.
        p.follow(4_000_000);
        assert!(p.due(4_000_000).0 < d3);
        // Extreme timestamps neither overflow nor panic.
        p.follow(i64::MAX);
        let _ = p.due(i64::MAX);
        p.follow(i64::MIN);
        let _ = p.due(i64::MIN);
        assert_eq!(rescale_us(i64::MAX, ff::Rational::new(1, 1)), i64::MAX);
    }

    #[test]
    fn timestamps_rescale_to_microseconds() {
        assert_eq!(rescale_us(90_000, ff::Rational::new(1, 90_000)), 1_000_000);
        assert_eq!(rescale_us(1_000, ff::Rational::new(1, 1000)), 1_000_000);
        assert_eq!(rescale_us(48_000, ff::Rational::new(1, 48_000)), 1_000_000);
        assert_eq!(rescale_us(7, ff::Rational::new(0, 0)), 7);
    }
}
