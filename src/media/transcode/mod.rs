//! libav transcoders for what WebRTC cannot carry. A video transcoder, and the audio one of a pull task, owns a
//! dedicated OS thread and talks to the async world through bounded channels: their work per frame is long or
//! their source blocks. The audio of a pushed stream is transcoded inline on its connection's task
//! (`InlineTranscoder`): decoding and encoding a frame takes a fraction of a millisecond, less than the
//! two thread hand-offs per frame a thread costs.

pub mod audio;
pub mod video;
mod worker;

pub use audio::{
    AudioInputCodec, AudioTranscoder, AudioTuning, InlineTranscoder, OpusSettings, TranscodeError, OPUS_FRAME_MS,
};
pub use video::{KeyframeTrigger, VideoInput, VideoTranscoder, MAX_PIXELS};

use ffmpeg_next as ff;

/// A transcoder whose thread is still opening its codecs. `start` returns one at once (libav's open blocks, so it
/// runs on the transcoder's own thread); the caller learns whether the open worked from async code with
/// `opened().await`, or from a thread of its own with `wait()`, never by blocking a tokio worker.
pub struct Opening<T> {
    transcoder: T,
    ready: tokio::sync::oneshot::Receiver<Result<(), TranscodeError>>,
}

impl<T> Opening<T> {
    pub(crate) fn new(transcoder: T, ready: tokio::sync::oneshot::Receiver<Result<(), TranscodeError>>) -> Self {
        Opening { transcoder, ready }
    }

    /// The transcoder once its codecs are open (async callers).
    pub async fn opened(self) -> Result<T, TranscodeError> {
        match self.ready.await {
            Ok(Ok(())) => Ok(self.transcoder),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TranscodeError::Stopped),
        }
    }

    /// The transcoder once its codecs are open, waiting on this thread (threads of our own, never a tokio
    /// worker: this blocks).
    pub fn wait(self) -> Result<T, TranscodeError> {
        match self.ready.blocking_recv() {
            Ok(Ok(())) => Ok(self.transcoder),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TranscodeError::Stopped),
        }
    }
}

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
        let (a, b) = (self.fields(), other.fields());
        a.codec_id == b.codec_id && a.sample_rate == b.sample_rate && self.extradata() == other.extradata()
    }
}

impl StreamParameters {
    fn fields(&self) -> &ff::ffi::AVCodecParameters {
        // SAFETY: `Parameters` owns a valid AVCodecParameters for as long as it lives.
        unsafe { &*self.0.as_ptr() }
    }
    /// Picture width (0 for audio or when unknown).
    pub fn width(&self) -> u32 {
        self.fields().width.max(0) as u32
    }
    /// Picture height (0 for audio or when unknown).
    pub fn height(&self) -> u32 {
        self.fields().height.max(0) as u32
    }
    /// The stream reorders pictures (B-frames): frames leave the decoder later than they enter.
    pub fn reorders(&self) -> bool {
        self.fields().video_delay > 0
    }
    /// Audio sample rate (0 for video).
    pub fn sample_rate(&self) -> u32 {
        self.fields().sample_rate.max(0) as u32
    }
    /// Audio channels (0 for video).
    pub fn channels(&self) -> u32 {
        self.fields().ch_layout.nb_channels.max(0) as u32
    }
    /// The codec configuration the container carries (avcC, AudioSpecificConfig...), empty when none.
    pub fn extradata(&self) -> &[u8] {
        let p = self.fields();
        if p.extradata.is_null() || p.extradata_size <= 0 {
            &[]
        } else {
            // SAFETY: libav keeps `extradata_size` bytes at `extradata` for the parameters' lifetime.
            unsafe { std::slice::from_raw_parts(p.extradata, p.extradata_size as usize) }
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
