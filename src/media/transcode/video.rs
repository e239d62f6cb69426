//! `VideoTranscoder`: any video libav decodes in (VP8 from WebRTC publishers, and later whatever a pull source
//! carries), H.264 constrained baseline out (libx264, zerolatency, no B-frames, a keyframe every 2 s and on
//! request), on its own thread.
//!
//! Timestamps stay on the source's 90 kHz timeline: an output frame carries the pts of the input it was made from,
//! so video stays aligned with the anchor's audio. The encoder is (re)opened from the first decoded picture and
//! whenever the picture size changes; pictures in other pixel formats are converted to YUV 4:2:0 first.

use super::worker::Worker;
use super::TranscodeError;
use crate::media::h264;
use crate::media::{Codec, Frame, VIDEO_CLOCK};
use crate::media::{FrameSink, TrackInfo};
use bytes::Bytes;
use ffmpeg_next as ff;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Compressed pictures buffered before the transcoder counts as overloaded (about 2 s at 30 fps).
const INPUT_QUEUE: usize = 64;
/// Keyframe interval of the output, in seconds.
const KEYFRAME_SECONDS: u32 = 2;

/// What the decoder needs to know about the input.
#[derive(Debug, Clone)]
pub struct VideoInput {
    /// The input's codec (libav id), whose decoder must be in this build; with `parameters`, their codec.
    pub codec: ff::codec::Id,
    /// Codec configuration (e.g. avcC, hvcC) for formats that carry it out of band.
    pub extradata: Option<Bytes>,
    /// Expected frame rate, used for the keyframe interval and rate control (30 when unknown).
    pub fps: Option<u32>,
    /// Target bitrate in bit/s; chosen from the picture size when `None`.
    pub bitrate: Option<u32>,
    /// The demuxer's codec parameters (pull sources); preferred over `codec`/`extradata` when present.
    pub parameters: Option<super::StreamParameters>,
    /// Output picture size; the source's when `None`.
    pub size: Option<(u32, u32)>,
    /// Keyframe interval in seconds (2 when `None`).
    pub keyframe_secs: Option<u32>,
    /// Largest decoded picture (width x height); larger ones are refused by the decoder.
    pub max_pixels: u64,
}

/// The default of `max_pixels`: 3840x2160.
pub const MAX_PIXELS: u64 = 3840 * 2160;

impl VideoInput {
    /// A VP8 input (WHIP publishers without H.264), everything else at its default.
    pub fn vp8() -> Self {
        VideoInput {
            codec: ff::codec::Id::VP8,
            extradata: None,
            fps: None,
            bitrate: None,
            parameters: None,
            size: None,
            keyframe_secs: None,
            max_pixels: MAX_PIXELS,
        }
    }

    /// Decode what a demuxer found.
    pub fn from_stream(parameters: super::StreamParameters, fps: Option<u32>) -> Self {
        VideoInput {
            codec: parameters.0.id(),
            extradata: None,
            fps,
            bitrate: None,
            parameters: Some(parameters),
            size: None,
            keyframe_secs: None,
            max_pixels: MAX_PIXELS,
        }
    }
}

struct Input {
    data: Bytes,
    pts: u64,
    /// Decode timestamp (differs from `pts` for sources with B-frames).
    dts: u64,
    received_at: Instant,
}

/// Makes a transcoder's next output picture a keyframe; cheap to clone, and does nothing once the transcoder is gone.
#[derive(Clone)]
pub struct KeyframeTrigger(Arc<AtomicBool>);

impl KeyframeTrigger {
    /// Ask for a keyframe (a viewer joined or lost packets).
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a keyframe was asked for since the last call (the transcoder thread's side).
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Handle to a running video transcoder thread. Dropping it lets the thread finish what is queued on its own.
pub struct VideoTranscoder {
    worker: Worker<Input>,
    keyframes: KeyframeTrigger,
}

impl VideoTranscoder {
    /// Start the thread, which opens the decoder (the `Opening` reports how that went), publishes H.264 frames
    /// into `sink` and keeps the anchor's video info (size, profile) up to date.
    pub fn start(input: VideoInput, sink: impl FrameSink, label: String) -> super::Opening<Self> {
        let keyframes = KeyframeTrigger(Arc::new(AtomicBool::new(false)));
        let force = keyframes.clone();
        let source_codec = input.codec.name().to_string();
        let mut size = None;
        super::worker::spawn(
            format!("x264-{label}"),
            INPUT_QUEUE,
            "video",
            label,
            move || VideoPipeline::new(&input),
            move |pipeline, input: Input| {
                let keyframe = force.take();
                pipeline.push(&input, keyframe, &mut |f| {
                    if f.keyframe {
                        publish_info(&sink, &f, &source_codec, &mut size);
                    }
                    sink.publish(f);
                })
            },
            |worker| VideoTranscoder { worker, keyframes },
        )
    }

    /// Queue one compressed picture with its pts (90 kHz). Never blocks.
    pub fn push(&self, data: Bytes, pts: u64, received_at: Instant) -> Result<(), TranscodeError> {
        self.worker.push(Input {
            data,
            pts,
            dts: pts,
            received_at,
        })
    }

    /// Queue one picture in decode order (`dts`), waiting while the queue is full (sources that can be slowed
    /// down, such as files).
    pub fn push_blocking(&self, data: Bytes, pts: u64, dts: u64, received_at: Instant) -> Result<(), TranscodeError> {
        self.worker.push_blocking(Input {
            data,
            pts,
            dts,
            received_at,
        })
    }

    /// Make the next output picture a keyframe (a viewer joined or lost packets).
    pub fn request_keyframe(&self) {
        self.keyframes.request();
    }

    /// A handle that asks for keyframes, for code that hears viewers while another part owns the transcoder.
    pub fn keyframe_trigger(&self) -> KeyframeTrigger {
        self.keyframes.clone()
    }

    /// Let the thread transcode what is queued and wait until it has (blocks: threads of our own only).
    pub fn finish(mut self) {
        self.worker.finish();
    }
}

/// Tell the room what the output looks like, from the SPS of a keyframe (only when the size changed).
fn publish_info(sink: &dyn FrameSink, f: &Frame, source_codec: &str, size: &mut Option<(u32, u32)>) {
    let Some(info) = h264::annex_b_nals(&f.data)
        .find(|n| n.first().map(|b| b & 0x1F) == Some(h264::NAL_SPS))
        .and_then(|n| h264::parse_sps(n).ok())
    else {
        return;
    };
    if *size != Some((info.width, info.height)) {
        *size = Some((info.width, info.height));
        sink.set_video_info(TrackInfo {
            source_codec: source_codec.to_string(),
            ..TrackInfo::from(&info)
        });
    }
}

/// Decoder → (scaler) → libx264. Runs only on the transcoder thread.
struct VideoPipeline {
    decoder: ff::decoder::Video,
    fps: u32,
    bitrate: Option<u32>,
    size: Option<(u32, u32)>,
    keyframe_secs: u32,
    encoder: Option<Encoder>,
    /// Reused decoder output picture.
    decoded: ff::frame::Video,
}

/// An open encoder for one picture size.
struct Encoder {
    in_width: u32,
    in_height: u32,
    format: ff::format::Pixel,
    scaler: Option<ff::software::scaling::Context>,
    x264: ff::encoder::Video,
    /// received_at of the inputs whose pictures are inside the encoder, oldest first, by pts.
    pending: std::collections::VecDeque<(i64, Instant)>,
}

impl VideoPipeline {
    fn new(input: &VideoInput) -> Result<Self, TranscodeError> {
        let codec = ff::decoder::find(input.codec).ok_or(TranscodeError::MissingCodec("video decoder"))?;
        let mut ctx = match &input.parameters {
            Some(p) => ff::codec::Context::from_parameters(p.0.clone())?,
            None => ff::codec::Context::new_with_codec(codec),
        };
        if let (Some(extra), None) = (&input.extradata, &input.parameters) {
            super::set_extradata(&mut ctx, extra);
        }
        // Decode on two threads when the source is big (a 1080p pull source); WebRTC inputs are small.
        if input.parameters.is_some() {
            ctx.set_threading(ff::threading::Config {
                kind: ff::threading::Type::Frame,
                count: 2,
                safe: false,
            });
        }
        ctx.set_time_base(ff::Rational::new(1, VIDEO_CLOCK as i32));
        super::set_max_pixels(&mut ctx, input.max_pixels);
        let decoder = ctx.decoder().video()?;
        Ok(VideoPipeline {
            decoder,
            fps: input.fps.filter(|f| (1..=120).contains(f)).unwrap_or(30),
            bitrate: input.bitrate,
            size: input.size,
            keyframe_secs: input.keyframe_secs.unwrap_or(KEYFRAME_SECONDS).clamp(1, 10),
            encoder: None,
            decoded: ff::frame::Video::empty(),
        })
    }

    fn push(&mut self, input: &Input, keyframe: bool, out: &mut dyn FnMut(Frame)) -> Result<(), TranscodeError> {
        let mut packet = ff::Packet::copy(&input.data);
        packet.set_pts(Some(input.pts as i64));
        packet.set_dts(Some(input.dts as i64));
        self.decoder.send_packet(&packet)?;
        let mut force = keyframe;
        while self.decoder.receive_frame(&mut self.decoded).is_ok() {
            let pts = self
                .decoded
                .timestamp()
                .or(self.decoded.pts())
                .unwrap_or(input.pts as i64);
            let (w, h, fmt) = (self.decoded.width(), self.decoded.height(), self.decoded.format());
            if w == 0 || h == 0 {
                continue;
            }
            let fresh = self
                .encoder
                .as_ref()
                .is_none_or(|e| e.in_width != w || e.in_height != h || e.format != fmt);
            if fresh {
                let (ow, oh) = self.size.unwrap_or((w, h));
                let gop = self.fps * self.keyframe_secs;
                self.encoder = Some(Encoder::open(
                    (w, h),
                    (ow & !1, oh & !1),
                    fmt,
                    self.fps,
                    gop,
                    self.bitrate,
                )?);
            }
            let enc = self.encoder.as_mut().expect("opened above");
            let mut picture = match &mut enc.scaler {
                Some(s) => {
                    let mut p = ff::frame::Video::empty();
                    s.run(&self.decoded, &mut p)?;
                    p
                }
                None => self.decoded.clone(),
            };
            picture.set_pts(Some(pts));
            picture.set_kind(if force || fresh {
                ff::picture::Type::I
            } else {
                ff::picture::Type::None
            });
            force = false;
            enc.pending.push_back((pts, input.received_at));
            enc.x264.send_frame(&picture)?;
            enc.drain(out);
        }
        Ok(())
    }
}

impl Encoder {
    fn open(
        (in_width, in_height): (u32, u32),
        (width, height): (u32, u32),
        format: ff::format::Pixel,
        fps: u32,
        gop: u32,
        bitrate: Option<u32>,
    ) -> Result<Self, TranscodeError> {
        let codec = ff::encoder::find_by_name("libx264").ok_or(TranscodeError::MissingCodec("libx264 encoder"))?;
        let mut enc = ff::codec::Context::new_with_codec(codec).encoder().video()?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(ff::Rational::new(1, VIDEO_CLOCK as i32));
        enc.set_frame_rate(Some(ff::Rational::new(fps as i32, 1)));
        enc.set_gop(gop);
        enc.set_max_b_frames(0);
        // About 0.1 bit per pixel per frame (720p30: 2.8 Mbit/s), unless the task says otherwise.
        let bits = bitrate.map_or_else(
            || (width as u64 * height as u64 * fps as u64 / 10).clamp(200_000, 8_000_000),
            u64::from,
        );
        enc.set_bit_rate(bits as usize);
        enc.set_max_bit_rate((bits * 3 / 2) as usize);
        let mut opts = ff::Dictionary::new();
        opts.set("preset", "veryfast");
        opts.set("tune", "zerolatency");
        opts.set("profile", "baseline");
        opts.set("forced-idr", "1");
        opts.set("x264-params", &format!("vbv-bufsize={}", bits / 1000));
        let x264 = enc.open_as_with(codec, opts)?;
        let scaler = if format == ff::format::Pixel::YUV420P && (in_width, in_height) == (width, height) {
            None
        } else {
            Some(ff::software::scaling::Context::get(
                format,
                in_width,
                in_height,
                ff::format::Pixel::YUV420P,
                width,
                height,
                ff::software::scaling::Flags::BILINEAR,
            )?)
        };
        tracing::debug!(width, height, ?format, bits, "x264 encoder opened");
        Ok(Encoder {
            in_width,
            in_height,
            format,
            scaler,
            x264,
            pending: std::collections::VecDeque::new(),
        })
    }

    fn drain(&mut self, out: &mut dyn FnMut(Frame)) {
        let mut packet = ff::Packet::empty();
        while self.x264.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            let pts = packet.pts().unwrap_or(0);
            // No B-frames: packets come out in input order, so the oldest pending entry is this picture's.
            let received_at = loop {
                match self.pending.pop_front() {
                    Some((p, at)) if p >= pts => break at,
                    Some(_) => continue,
                    None => break Instant::now(),
                }
            };
            out(Frame {
                codec: Codec::H264,
                pts: pts.max(0) as u64,
                keyframe: packet.is_key(),
                data: data.into(),
                received_at,
            });
        }
    }
}
