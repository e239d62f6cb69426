//! libav transcoders for what WebRTC cannot carry. Every libav call blocks, so each transcoder owns a
//! dedicated OS thread and talks to the async world through bounded channels.

pub mod audio;

pub use audio::{AudioInputCodec, AudioTranscoder, TranscodeError};

use std::sync::Once;

/// Initialise libav once per process (quiet logging: our own log lines say what matters).
pub fn init_libav() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}
