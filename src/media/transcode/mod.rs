//! libav transcoders for what WebRTC cannot carry. Every libav call blocks, so each transcoder owns a
//! dedicated OS thread and talks to the async world through bounded channels.

pub mod audio;
pub mod video;

pub use audio::{AudioInputCodec, AudioTranscoder, AudioTuning, OpusSettings, TranscodeError};
pub use video::{VideoInput, VideoTranscoder, MAX_PIXELS};

use ffmpeg_next as ff;

/// A demuxer's codec parameters, handed to a transcoder thread (pull sources).
#[derive(Clone)]
pub struct StreamParameters(pub ff::codec::Parameters);

impl std::fmt::Debug for StreamParameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamParameters({:?})", self.0.id())
    }
}

impl PartialEq for StreamParameters {
    /// Two parameter sets are the same input when they describe the same codec with the same configuration.
    fn eq(&self, other: &Self) -> bool {
        unsafe {
            let (a, b) = (&*self.0.as_ptr(), &*other.0.as_ptr());
            let extra = |p: &ff::ffi::AVCodecParameters| {
                if p.extradata.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(p.extradata, p.extradata_size as usize)
                }
            };
            a.codec_id == b.codec_id && a.sample_rate == b.sample_rate && extra(a) == extra(b)
        }
    }
}
impl Eq for StreamParameters {}
use std::sync::Once;

/// Initialise libav once per process (quiet logging: our own log lines say what matters).
pub fn init_libav() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg_next::init();
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}

/// Hand the decoder its codec configuration (AudioSpecificConfig for AAC, avcC for H.264...).
/// Largest picture (width x height) a decoder may allocate; libav refuses larger ones with an error.
pub(crate) fn set_max_pixels(ctx: &mut ff::codec::Context, max_pixels: u64) {
    unsafe {
        (*ctx.as_mut_ptr()).max_pixels = max_pixels.min(i64::MAX as u64) as i64;
    }
}

pub(crate) fn set_extradata(ctx: &mut ff::codec::Context, data: &[u8]) {
    unsafe {
        let raw = ctx.as_mut_ptr();
        let buf = ff::ffi::av_mallocz(data.len() + ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
        if buf.is_null() {
            return;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        (*raw).extradata = buf;
        (*raw).extradata_size = data.len() as i32;
    }
}
