//! What the API wants of a running pull task, and the pure rule that turns it into "this opening ends now".
//!
//! The API writes one `Desired` snapshot (stop, pause, URL generation, volume, tempo); the runner reads it between
//! packets and sleeps on it, so every change wakes the runner at once. `verdict` is the one place that decides
//! whether an opening of the source must end; it is a pure function of the snapshot, the room's kick, the terms
//! the opening began under and the time.

use crate::media::transcode::AudioTuning;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the API wants of a task right now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Desired {
    /// StopStreamIngest or shutdown.
    pub stop: bool,
    /// Set with `stop` at process shutdown: the task ends here but stays active in the store, to resume.
    pub suspended: bool,
    pub paused: bool,
    /// Bumped when UpdateStreamIngest changes the source URL, so the runner reopens.
    pub url_generation: u64,
    /// Percent, 100 = as the source.
    pub volume: u32,
    pub tempo: f64,
}

impl Desired {
    /// Told to stop for good (a StopStreamIngest), not suspended to resume elsewhere or after a restart.
    pub fn stopped_by_api(&self) -> bool {
        self.stop && !self.suspended
    }

    /// Audio is changed on its way (volume or tempo), so it cannot pass through untouched.
    pub fn tunes_audio(&self) -> bool {
        self.volume != 100 || self.tempo != 1.0
    }
}

/// The one control state of a task: a `Desired` snapshot the API updates and the runner reads and waits on.
pub(crate) struct Control {
    desired: Mutex<Desired>,
    changed: Condvar,
    /// Volume and Tempo as the task's audio transcoder thread reads them per frame (kept equal to `desired`).
    tuning: Arc<AudioTuning>,
}

impl Control {
    pub fn new(paused: bool, volume: u32, tempo: f64) -> Control {
        Control {
            desired: Mutex::new(Desired {
                stop: false,
                suspended: false,
                paused,
                url_generation: 0,
                volume,
                tempo,
            }),
            changed: Condvar::new(),
            tuning: Arc::new(AudioTuning::new(volume, tempo)),
        }
    }

    /// The current wishes.
    pub fn snapshot(&self) -> Desired {
        self.desired.lock().expect("control lock").clone()
    }

    /// Change the wishes and wake the runner.
    pub fn update(&self, f: impl FnOnce(&mut Desired)) {
        let mut d = self.desired.lock().expect("control lock");
        f(&mut d);
        self.tuning.set_volume(d.volume);
        self.tuning.set_tempo(d.tempo);
        self.changed.notify_all();
    }

    /// Whether the task is told to stop (cheap: libav's interrupt callback asks it on every I/O call).
    pub fn stop_requested(&self) -> bool {
        self.desired.lock().expect("control lock").stop
    }

    /// The volume/tempo handle a transcoder follows.
    pub fn tuning(&self) -> Arc<AudioTuning> {
        self.tuning.clone()
    }

    /// Sleep up to `d`, returning early when the wishes change (stop, pause, update) or the task is stopped.
    pub fn sleep(&self, d: Duration) {
        let guard = self.desired.lock().expect("control lock");
        if d.is_zero() || guard.stop {
            return;
        }
        let _ = self.changed.wait_timeout(guard, d);
    }
}

/// The terms one opening of the source plays under; a change of them ends it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms {
    /// `Desired::url_generation` when the source was opened.
    pub url_generation: u64,
    /// MaxDuration (RepeatNum -1): when the task ends.
    pub max_end: Option<Instant>,
    /// The audio passes through untouched (so a volume or tempo change needs a reopening that transcodes).
    pub audio_passthrough: bool,
}

/// Why an opening of the source ends early, as `verdict` decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// StopStreamIngest or shutdown.
    Stop,
    /// Another publisher took over the identity.
    Replaced,
    /// MaxDuration elapsed.
    MaxDuration,
    /// UpdateStreamIngest changed the URL.
    UrlChanged,
    /// Volume or Tempo changed on audio that was passing through: reopen where we are, transcoding.
    Reconfigure,
    /// Paused: wait (the opening stays) until resumed.
    Pause,
}

/// Whether the opening must end (or wait) now; `None`: play on. Earlier rules win: a stop outranks everything.
pub(crate) fn verdict(d: &Desired, kicked: bool, terms: &Terms, now: Instant) -> Option<Verdict> {
    if d.stop {
        Some(Verdict::Stop)
    } else if kicked {
        Some(Verdict::Replaced)
    } else if terms.max_end.is_some_and(|end| now >= end) {
        Some(Verdict::MaxDuration)
    } else if d.url_generation != terms.url_generation {
        Some(Verdict::UrlChanged)
    } else if terms.audio_passthrough && d.tunes_audio() {
        Some(Verdict::Reconfigure)
    } else if d.paused {
        Some(Verdict::Pause)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Control::new(false, 100, 1.0).snapshot()
    }

    #[test]
    fn a_task_left_alone_plays_on() {
        let now = Instant::now();
        let terms = Terms {
            url_generation: 0,
            max_end: Some(now + Duration::from_secs(1)),
            audio_passthrough: true,
        };
        assert_eq!(verdict(&desired(), false, &terms, now), None);
    }

    #[test]
    fn each_wish_ends_the_opening_for_its_reason_and_stop_outranks_all() {
        let now = Instant::now();
        let terms = Terms {
            url_generation: 3,
            max_end: Some(now),
            audio_passthrough: true,
        };
        let all = Desired {
            stop: true,
            suspended: false,
            paused: true,
            url_generation: 4,
            volume: 50,
            tempo: 1.0,
        };
        assert_eq!(verdict(&all, true, &terms, now), Some(Verdict::Stop));
        let d = Desired {
            stop: false,
            ..all.clone()
        };
        assert_eq!(verdict(&d, true, &terms, now), Some(Verdict::Replaced));
        assert_eq!(verdict(&d, false, &terms, now), Some(Verdict::MaxDuration));
        let later = Terms {
            max_end: Some(now + Duration::from_millis(1)),
            ..terms
        };
        assert_eq!(verdict(&d, false, &later, now), Some(Verdict::UrlChanged));
        let same_url = Terms {
            url_generation: 4,
            ..later
        };
        assert_eq!(verdict(&d, false, &same_url, now), Some(Verdict::Reconfigure));
        let transcoding = Terms {
            audio_passthrough: false,
            ..same_url
        };
        assert_eq!(verdict(&d, false, &transcoding, now), Some(Verdict::Pause));
        let resumed = Desired { paused: false, ..d };
        assert_eq!(verdict(&resumed, false, &transcoding, now), None);
    }

    #[test]
    fn tempo_alone_also_reconfigures_passthrough_audio() {
        let terms = Terms {
            url_generation: 0,
            max_end: None,
            audio_passthrough: true,
        };
        let d = Desired {
            tempo: 1.5,
            ..desired()
        };
        assert_eq!(verdict(&d, false, &terms, Instant::now()), Some(Verdict::Reconfigure));
    }

    #[test]
    fn an_update_wakes_a_sleeper_and_reaches_the_transcoder() {
        let c = Arc::new(Control::new(false, 100, 1.0));
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.sleep(Duration::from_secs(60)));
        let start = Instant::now();
        // Updated until the sleeper is up (it may start sleeping after the first update on a busy machine).
        while !t.is_finished() && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
            c.update(|d| {
                d.volume = 40;
                d.tempo = 2.0;
            });
        }
        t.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(20), "woken by an update");
        assert_eq!(c.tuning().volume(), 40);
        assert_eq!(c.tuning().tempo(), 2.0);
        c.update(|d| d.stop = true);
        assert!(c.stop_requested());
        let start = Instant::now();
        c.sleep(Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(1), "a stopped task never sleeps");
    }
}
