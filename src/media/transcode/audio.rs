//! `AudioTranscoder`: AAC, MP3 or any audio libav decodes in, Opus out (48 kHz stereo, one frame of
//! `OpusSettings::frame_ms` per packet), on its own thread or inline on the pusher's task.
//!
//! Timestamps: the first output packet starts at the source timestamp of the first input; each packet then
//! advances by exactly its frame's samples (1920 for 40 ms), so the output is smooth. Where the source timeline
//! jumps (a gap or a discontinuity of more than 40 ms), the output follows it, so audio stays aligned with the
//! anchor's video, which uses the same clock origin.

use super::worker::Worker;
use super::Opening;
use crate::media::FrameSink;
use crate::media::{Codec, Frame, AUDIO_CLOCK};
use bytes::Bytes;
use ffmpeg_next as ff;
use std::time::Instant;

/// The Opus frame durations (ms) the encoder may use: one frame per packet, each a size every WebRTC player
/// decodes (RFC 7587 allows 2.5 to 120 ms; below 10 the packet headers outweigh the audio).
pub const OPUS_FRAME_MS: [u8; 4] = [10, 20, 40, 60];
const CHANNELS: usize = 2;
/// Input frames buffered before the transcoder is considered overloaded (about 5 s of AAC).
const INPUT_QUEUE: usize = 256;
/// The most samples (per channel) one input may decode into: a frame is 1024 (AAC), 1152 (MP3) or 2048 (HE-AAC);
/// an input holding many frames is cut here, which bounds what one push costs (an inline transcoder runs on its
/// publisher's task).
pub const MAX_SAMPLES_PER_INPUT: usize = 8192;
/// The most channels transcoded (7.1); more cost more per frame than any real stream needs.
pub const MAX_CHANNELS: usize = 8;
/// A source timeline jump larger than this re-aligns the output timestamps.
const RESYNC_SAMPLES: i64 = 40 * AUDIO_CLOCK as i64 / 1000;

/// Why a transcoder (audio or video) could not open or take an input.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// This libav build lacks a needed decoder or encoder; names it, e.g. `libopus encoder`.
    #[error("no {0} codec in this libav build")]
    MissingCodec(&'static str),
    /// libav failed to open a codec, decode, convert or encode.
    #[error("libav: {0}")]
    Libav(#[from] ff::Error),
    /// The thread has ended, or died before its codecs were open; it takes no more input.
    #[error("the transcoder thread has stopped")]
    Stopped,
    /// The input queue is full and the input was dropped (only from a non-blocking push).
    #[error("the transcoder is overloaded; audio frame dropped")]
    Overloaded,
    /// One input decoded into more than `MAX_SAMPLES_PER_INPUT` samples (a real frame has at most a few thousand);
    /// the rest of it was dropped.
    #[error("an audio input holds more than {MAX_SAMPLES_PER_INPUT} samples; the rest of it was dropped")]
    InputTooLong,
    /// The audio has more channels than are transcoded (`MAX_CHANNELS`).
    #[error("{0} audio channels; at most {MAX_CHANNELS} are transcoded")]
    TooManyChannels(usize),
}

/// The compressed audio formats a transcoder takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioInputCodec {
    /// AAC with its AudioSpecificConfig.
    Aac {
        /// The AudioSpecificConfig from the FLV AAC sequence header.
        config: Bytes,
    },
    /// MP3 (FLV sound format 2); needs no config.
    Mp3,
    /// Whatever a demuxer found (pull sources): the stream's own codec parameters.
    Stream(super::StreamParameters),
}

/// Live adjustments of a transcoder's output, shared with whoever controls the source (a pull task's Volume and
/// Tempo can change while it plays).
#[derive(Debug)]
pub struct AudioTuning {
    /// Gain in percent (100 = unchanged, 0 = mute).
    volume_pct: std::sync::atomic::AtomicU32,
    /// Playback speed in thousandths (1000 = real time). Implemented by resampling, so pitch follows speed.
    tempo_milli: std::sync::atomic::AtomicU32,
}

impl AudioTuning {
    /// Tuning that starts at `volume_pct` and `tempo` (as `set_volume` and `set_tempo` take them).
    pub fn new(volume_pct: u32, tempo: f64) -> Self {
        let t = AudioTuning {
            volume_pct: Default::default(),
            tempo_milli: Default::default(),
        };
        t.set_volume(volume_pct);
        t.set_tempo(tempo);
        t
    }
    /// Set the gain in percent (100 = unchanged, 0 = mute); frames decoded from now on use it.
    pub fn set_volume(&self, pct: u32) {
        self.volume_pct.store(pct, std::sync::atomic::Ordering::Relaxed);
    }
    /// Set the speed (1.0 = real time), rounded to thousandths and clamped to 0.25-4.0.
    pub fn set_tempo(&self, tempo: f64) {
        let milli = (tempo * 1000.0).round().clamp(250.0, 4000.0) as u32;
        self.tempo_milli.store(milli, std::sync::atomic::Ordering::Relaxed);
    }
    /// Gain in percent.
    pub fn volume(&self) -> u32 {
        self.volume_pct.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Playback speed (1.0 = real time).
    pub fn tempo(&self) -> f64 {
        self.tempo_milli() as f64 / 1000.0
    }
    fn gain(&self) -> f32 {
        self.volume() as f32 / 100.0
    }
    fn tempo_milli(&self) -> u32 {
        self.tempo_milli.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct Input {
    data: Bytes,
    ts_ms: u64,
    received_at: Instant,
}

/// How transcoded audio is encoded: the Opus bitrate, the encoder's complexity (0-10: CPU against quality at
/// that bitrate; libopus defaults to 10, SRS uses 1) and the frame duration (longer frames: fewer packets for
/// every viewer to encrypt and send, for that much more audio delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Bit/s.
    pub bitrate: u32,
    /// Encoder complexity, 0-10 (`audio.opus_complexity`, or the app's own).
    pub complexity: u8,
    /// Milliseconds of audio per packet, one of [`OPUS_FRAME_MS`] (`audio.opus_frame_ms`, or the app's own).
    pub frame_ms: u8,
}

/// The largest packet, in bytes at the configured bitrate, a frame longer than 20 ms may make. A packet must fit
/// one datagram (up to `rtp::OPUS_PACKET_MAX`, 1276 bytes; a larger one is not sent) and VBR packets run above the
/// nominal size (a third above it on average on `make bench BENCH=opus-quality`'s signals, more on transients), so
/// 40 and 60 ms frames are used only where they stay small: 40 ms up to 80 kb/s, 60 ms up to 53 kb/s. 10 and 20 ms
/// are used as configured, as before there was a choice.
const MAX_LONG_FRAME_BYTES: u64 = 400;

impl OpusSettings {
    /// The frame duration the encoder uses: `frame_ms` when it is one of [`OPUS_FRAME_MS`] and its packets stay
    /// small at this bitrate (see [`MAX_LONG_FRAME_BYTES`]), else the longest that does (20 ms for a value that
    /// is not allowed at all).
    pub fn effective_frame_ms(&self) -> u8 {
        let wanted = if OPUS_FRAME_MS.contains(&self.frame_ms) {
            self.frame_ms
        } else {
            20
        };
        let small = |ms: u8| ms <= 20 || u64::from(self.bitrate) * u64::from(ms) / 8000 <= MAX_LONG_FRAME_BYTES;
        OPUS_FRAME_MS
            .into_iter()
            .filter(|&ms| ms <= wanted && small(ms))
            .max()
            .unwrap_or(20)
    }

    /// Samples (per channel, 48 kHz) in one packet.
    pub fn frame_samples(&self) -> usize {
        usize::from(self.effective_frame_ms()) * AUDIO_CLOCK as usize / 1000
    }
}

/// Handle to a running transcoder thread (pull sources, which read and pace on threads of their own). Dropping it
/// lets the thread finish what is queued on its own.
pub struct AudioTranscoder {
    worker: Worker<Input>,
}

impl AudioTranscoder {
    /// Start the thread, which opens decoder and encoder (the `Opening` reports how that went) and publishes
    /// Opus frames into `sink`; `tuning`, when given, adjusts volume and tempo live.
    pub fn start(
        codec: AudioInputCodec,
        opus: OpusSettings,
        sink: impl FrameSink,
        label: String,
        tuning: Option<std::sync::Arc<AudioTuning>>,
    ) -> Opening<Self> {
        super::worker::spawn(
            format!("opus-{label}"),
            INPUT_QUEUE,
            "audio",
            label,
            move || Pipeline::new(&codec, opus, tuning),
            move |pipeline, input: Input| {
                pipeline.push(&input, &mut |f| {
                    sink.publish(f);
                })
            },
            |worker| AudioTranscoder { worker },
        )
    }

    /// Queue one compressed audio frame with its source timestamp (ms). Never blocks.
    pub fn push(&self, data: Bytes, ts_ms: u64, received_at: Instant) -> Result<(), TranscodeError> {
        self.worker.push(Input {
            data,
            ts_ms,
            received_at,
        })
    }

    /// Queue one frame, waiting while the queue is full (sources that can be slowed down, such as files).
    pub fn push_blocking(&self, data: Bytes, ts_ms: u64, received_at: Instant) -> Result<(), TranscodeError> {
        self.worker.push_blocking(Input {
            data,
            ts_ms,
            received_at,
        })
    }

    /// Let the thread transcode what is queued and wait until it has (blocks: threads of our own only).
    pub fn finish(mut self) {
        self.worker.finish();
    }
}

/// The same pipeline run by whoever pushes into it (pushed streams, on their connection's task): a frame's decode
/// and encode take well under a millisecond, less than the two thread hand-offs per frame a thread costs, and one
/// input is cut at `MAX_SAMPLES_PER_INPUT`, so no push runs long.
pub struct InlineTranscoder {
    pipeline: Pipeline,
    sink: Box<dyn FrameSink>,
    label: String,
    seconds: metrics::Histogram,
    /// The first frame that could not be transcoded was logged; the others are only counted.
    warned: bool,
}

impl InlineTranscoder {
    /// Open decoder and encoder here (they allocate, no I/O); Opus frames go into `sink`.
    pub fn new(
        codec: &AudioInputCodec,
        opus: OpusSettings,
        sink: impl FrameSink,
        label: String,
    ) -> Result<Self, TranscodeError> {
        super::init_libav();
        Ok(InlineTranscoder {
            pipeline: Pipeline::new(codec, opus, None)?,
            sink: Box::new(sink),
            label,
            seconds: metrics::histogram!("roomgate_transcode_seconds", "kind" => "audio"),
            warned: false,
        })
    }

    /// Transcode one compressed audio frame (`ts_ms`: its source time in ms) and publish what it completes before
    /// returning. A frame that cannot be transcoded is skipped: counted, and the first one logged.
    pub fn push(&mut self, data: Bytes, ts_ms: u64, received_at: Instant) {
        let started = Instant::now();
        let input = Input {
            data,
            ts_ms,
            received_at,
        };
        let sink = &self.sink;
        if let Err(e) = self.pipeline.push(&input, &mut |f| {
            sink.publish(f);
        }) {
            if !self.warned {
                self.warned = true;
                tracing::warn!(anchor = %self.label, kind = "audio", error = %e, "a frame could not be transcoded; skipped (further ones are only counted)");
            }
            metrics::counter!("roomgate_transcode_errors_total", "kind" => "audio").increment(1);
        }
        self.seconds.record(started.elapsed().as_secs_f64());
    }
}

/// Decoder → resampler → FIFO → encoder. Used by one thread at a time: the transcoder's, or its pusher's.
struct Pipeline {
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    encoder: ff::encoder::Audio,
    /// Interleaved stereo f32 samples waiting to fill an Opus frame.
    fifo: Vec<f32>,
    /// Samples (per channel) in one Opus frame.
    frame_samples: usize,
    /// Output timestamp (48 kHz) of the first sample in `fifo`; set by the first input.
    next_pts: Option<i64>,
    tuning: Option<std::sync::Arc<AudioTuning>>,
}

impl Pipeline {
    fn new(
        codec: &AudioInputCodec,
        opus: OpusSettings,
        tuning: Option<std::sync::Arc<AudioTuning>>,
    ) -> Result<Self, TranscodeError> {
        let mut ctx = match codec {
            AudioInputCodec::Aac { config } => {
                let dec = ff::decoder::find(ff::codec::Id::AAC).ok_or(TranscodeError::MissingCodec("AAC decoder"))?;
                let mut ctx = ff::codec::Context::new_with_codec(dec);
                super::set_extradata(&mut ctx, config);
                ctx
            }
            AudioInputCodec::Mp3 => {
                let dec = ff::decoder::find(ff::codec::Id::MP3).ok_or(TranscodeError::MissingCodec("MP3 decoder"))?;
                ff::codec::Context::new_with_codec(dec)
            }
            AudioInputCodec::Stream(params) => {
                if ff::decoder::find(params.0.id()).is_none() {
                    return Err(TranscodeError::MissingCodec("audio decoder for this codec"));
                }
                ff::codec::Context::from_parameters(params.0.clone())?
            }
        };
        ctx.set_time_base(ff::Rational::new(1, 1000));
        let decoder = ctx.decoder().audio()?;

        let enc_codec = ff::encoder::find_by_name("libopus").ok_or(TranscodeError::MissingCodec("libopus encoder"))?;
        let mut enc = ff::codec::Context::new_with_codec(enc_codec).encoder().audio()?;
        enc.set_rate(AUDIO_CLOCK as i32);
        enc.set_channel_layout(ff::ChannelLayout::STEREO);
        enc.set_channels(CHANNELS as i32);
        enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Packed));
        enc.set_bit_rate(opus.bitrate as usize);
        enc.set_time_base(ff::Rational::new(1, AUDIO_CLOCK as i32));
        let mut opts = ff::Dictionary::new();
        opts.set("application", "audio");
        let frame_ms = opus.effective_frame_ms();
        if frame_ms != opus.frame_ms {
            tracing::info!(
                configured = opus.frame_ms,
                used = frame_ms,
                bitrate = opus.bitrate,
                "Opus frame duration shortened: packets that long would not fit a datagram at this bitrate"
            );
        }
        opts.set("frame_duration", &frame_ms.to_string());
        opts.set("compression_level", &opus.complexity.min(10).to_string());
        let encoder = enc.open_as_with(enc_codec, opts)?;
        let frame_samples = opus.frame_samples();
        Ok(Pipeline {
            decoder,
            resampler: None,
            encoder,
            fifo: Vec::with_capacity(frame_samples * CHANNELS * 4),
            frame_samples,
            next_pts: None,
            tuning,
        })
    }

    fn push(&mut self, input: &Input, out: &mut dyn FnMut(Frame)) -> Result<(), TranscodeError> {
        let mut packet = ff::Packet::copy(&input.data);
        packet.set_pts(Some(input.ts_ms as i64));
        self.decoder.send_packet(&packet)?;
        let mut decoded = ff::frame::Audio::empty();
        let mut samples = 0;
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            samples += decoded.samples();
            let channels = decoded.channels() as usize;
            if samples > MAX_SAMPLES_PER_INPUT || channels > MAX_CHANNELS {
                // Drops what the decoder still holds of this input, so the next one starts clean.
                self.decoder.flush();
                return Err(if channels > MAX_CHANNELS {
                    TranscodeError::TooManyChannels(channels)
                } else {
                    TranscodeError::InputTooLong
                });
            }
            let ts_ms = decoded.pts().unwrap_or(input.ts_ms as i64);
            self.resample_into_fifo(&decoded, ts_ms)?;
            // A frame is in hand when the input that completes it arrived.
            self.encode_ready(input.received_at, out)?;
        }
        Ok(())
    }

    fn resample_into_fifo(&mut self, decoded: &ff::frame::Audio, ts_ms: i64) -> Result<(), TranscodeError> {
        let layout = if decoded.channel_layout().bits() == 0 {
            ff::ChannelLayout::default(decoded.channels() as i32)
        } else {
            decoded.channel_layout()
        };
        let target = ff::format::Sample::F32(ff::format::sample::Type::Packed);
        // Tempo: claim the input runs faster (or slower) than it does, so the resampler makes fewer (more) samples.
        let tempo_milli = self.tuning.as_ref().map_or(1000, |t| t.tempo_milli());
        let in_rate = (decoded.rate() as u64 * tempo_milli as u64 / 1000) as u32;
        let stale = self.resampler.as_ref().is_none_or(|r| {
            r.input().format != decoded.format() || r.input().rate != in_rate || r.input().channel_layout != layout
        });
        if stale {
            self.resampler = Some(ff::software::resampling::Context::get(
                decoded.format(),
                layout,
                in_rate,
                target,
                ff::ChannelLayout::STEREO,
                AUDIO_CLOCK,
            )?);
        }
        let mut input = decoded.clone();
        input.set_channel_layout(layout);
        input.set_rate(in_rate);
        // Size the output for the rate ratio plus what swr holds back; ffmpeg-next would size it to the input's
        // sample count, which leaves ~8% of 44.1 -> 48 kHz audio stuck inside swr on every call (a growing lag).
        let capacity = decoded.samples() * AUDIO_CLOCK as usize / in_rate.max(1) as usize + 256;
        let mut resampled = ff::frame::Audio::new(target, capacity, ff::ChannelLayout::STEREO);
        resampled.set_rate(AUDIO_CLOCK);
        self.resampler
            .as_mut()
            .expect("resampler set above")
            .run(&input, &mut resampled)?;
        let n = resampled.samples() * CHANNELS;
        let bytes = &resampled.data(0)[..n * 4];

        // Keep the output timeline on the source timeline.
        let source_pts = ts_ms * AUDIO_CLOCK as i64 / 1000;
        let fifo_samples = (self.fifo.len() / CHANNELS) as i64;
        match self.next_pts {
            None => self.next_pts = Some(source_pts),
            Some(p) if (p + fifo_samples - source_pts).abs() > RESYNC_SAMPLES => {
                tracing::debug!(
                    expected = p + fifo_samples,
                    source = source_pts,
                    "audio timeline jump; re-aligning"
                );
                self.next_pts = Some(source_pts - fifo_samples);
            }
            _ => {}
        }
        let gain = self.tuning.as_ref().map_or(1.0, |t| t.gain());
        let samples = bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        if gain == 1.0 {
            self.fifo.extend(samples);
        } else {
            self.fifo.extend(samples.map(|x| (x * gain).clamp(-1.0, 1.0)));
        }
        Ok(())
    }

    fn encode_ready(&mut self, received_at: Instant, out: &mut dyn FnMut(Frame)) -> Result<(), TranscodeError> {
        let per_frame = self.frame_samples * CHANNELS;
        while self.fifo.len() >= per_frame {
            let pts = self.next_pts.unwrap_or(0).max(0);
            let mut frame = ff::frame::Audio::new(
                ff::format::Sample::F32(ff::format::sample::Type::Packed),
                self.frame_samples,
                ff::ChannelLayout::STEREO,
            );
            frame.set_rate(AUDIO_CLOCK);
            frame.set_pts(Some(pts));
            for (dst, src) in frame.data_mut(0).chunks_exact_mut(4).zip(self.fifo.drain(..per_frame)) {
                dst.copy_from_slice(&src.to_ne_bytes());
            }
            self.next_pts = Some(pts + self.frame_samples as i64);
            self.encoder.send_frame(&frame)?;
            let mut packet = ff::Packet::empty();
            while self.encoder.receive_packet(&mut packet).is_ok() {
                if let Some(data) = packet.data() {
                    // One Opus packet per frame; its time is that of the samples it was cut from.
                    out(Frame {
                        codec: Codec::Opus,
                        pts: pts as u64,
                        keyframe: false,
                        data: data.into(),
                        received_at,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::aac::adts_frames;
    use crate::media::ts::{StreamKind, TsDemuxer, TsEvent};
    use std::sync::{Arc, Mutex};

    /// Keeps what is published.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<Vec<Frame>>>);

    impl FrameSink for Kept {
        fn publish(&self, frame: Frame) -> bool {
            self.0.lock().unwrap().push(frame);
            true
        }
        fn set_video_info(&self, _: crate::media::TrackInfo) {}
    }

    /// The AudioSpecificConfig and the raw AAC frames of the ffmpeg-muxed test file.
    fn aac_frames() -> ([u8; 2], Vec<Vec<u8>>) {
        let data = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/x264_aac.ts")).unwrap();
        let mut events = Vec::new();
        TsDemuxer::new().push(&data, &mut events);
        let (mut config, mut frames) = ([0; 2], Vec::new());
        for e in events {
            if let TsEvent::Pes(p) = e {
                if p.kind == StreamKind::Aac {
                    for f in adts_frames(&p.data) {
                        let f = f.unwrap();
                        config = f.config;
                        frames.push(f.payload.to_vec());
                    }
                }
            }
        }
        (config, frames)
    }

    fn inline(config: [u8; 2], kept: &Kept) -> InlineTranscoder {
        inline_with_frames(config, kept, 20)
    }

    fn inline_with_frames(config: [u8; 2], kept: &Kept, frame_ms: u8) -> InlineTranscoder {
        let codec = AudioInputCodec::Aac {
            config: Bytes::copy_from_slice(&config),
        };
        // 48 kb/s: every duration is used as asked (see `MAX_LONG_FRAME_BYTES`).
        let opus = OpusSettings {
            bitrate: 48_000,
            complexity: 1,
            frame_ms,
        };
        InlineTranscoder::new(&codec, opus, kept.clone(), "test".into()).unwrap()
    }

    /// Push AAC `frames` (1024 samples each, 48 kHz) in order, stamped as they would come.
    fn feed(t: &mut InlineTranscoder, frames: &[Vec<u8>]) {
        for (i, f) in frames.iter().enumerate() {
            t.push(
                Bytes::copy_from_slice(f),
                i as u64 * 1024 * 1000 / 48_000,
                Instant::now(),
            );
        }
    }

    #[test]
    fn an_inline_transcoder_publishes_before_push_returns() {
        let (config, frames) = aac_frames();
        assert!(frames.len() >= 40);
        let kept = Kept::default();
        feed(&mut inline(config, &kept), &frames);
        let out = kept.0.lock().unwrap();
        assert!(out.len() >= frames.len() * 1024 / 960 - 3, "{} Opus packets", out.len());
        assert!(out.windows(2).all(|w| w[1].pts - w[0].pts == 960));
    }

    #[test]
    fn long_frames_only_where_their_packets_stay_small() {
        let at = |bitrate, frame_ms| {
            OpusSettings {
                bitrate,
                complexity: 7,
                frame_ms,
            }
            .effective_frame_ms()
        };
        assert_eq!(at(64_000, 40), 40);
        assert_eq!(at(48_000, 60), 60);
        assert_eq!(at(64_000, 60), 40, "60 ms at 64 kb/s: 480-byte packets");
        assert_eq!(at(128_000, 40), 20);
        assert_eq!(at(320_000, 20), 20, "10 and 20 ms as configured");
        assert_eq!(at(510_000, 10), 10);
        assert_eq!(at(64_000, 30), 20, "not an Opus frame duration");
        assert_eq!(at(64_000, 0), 20);
        let settings = OpusSettings {
            bitrate: 128_000,
            complexity: 7,
            frame_ms: 60,
        };
        assert_eq!(settings.frame_samples(), 960);
    }

    #[test]
    fn each_packet_holds_one_frame_of_the_configured_duration() {
        let (config, frames) = aac_frames();
        for frame_ms in OPUS_FRAME_MS {
            let kept = Kept::default();
            feed(&mut inline_with_frames(config, &kept, frame_ms), &frames);
            let out = kept.0.lock().unwrap();
            let step = u64::from(frame_ms) * 48;
            let expected = frames.len() * 1024 / step as usize;
            assert!(
                out.len() + 3 >= expected && out.len() <= expected + 1,
                "{frame_ms} ms: {} packets for {expected} frames' worth",
                out.len()
            );
            // The packet says so itself (its TOC byte), and the timestamps advance by as much, without gaps.
            for f in out.iter() {
                assert_eq!(
                    crate::media::ts::opus_packet_samples(&f.data),
                    Some(step as u32),
                    "{frame_ms} ms"
                );
            }
            assert!(out.windows(2).all(|w| w[1].pts - w[0].pts == step), "{frame_ms} ms");
        }
    }

    #[test]
    fn an_input_packed_with_frames_is_cut_and_the_next_one_transcodes() {
        let (config, frames) = aac_frames();
        let kept = Kept::default();
        let mut t = inline(config, &kept);
        // Twenty raw AAC frames in one input (20480 samples): libav would decode them all in one push.
        let packed: Vec<u8> = frames[..20].concat();
        t.push(Bytes::from(packed), 0, Instant::now());
        let after_packed = kept.0.lock().unwrap().len();
        // 8192 samples (the cap) at most: 9 Opus packets; all twenty frames would make 21.
        assert!(after_packed <= 9, "{after_packed} Opus packets from one input");
        // Ordinary frames afterwards are transcoded as usual.
        for (i, f) in frames[20..].iter().enumerate() {
            t.push(Bytes::copy_from_slice(f), 500 + i as u64 * 21, Instant::now());
        }
        assert!(kept.0.lock().unwrap().len() >= after_packed + (frames.len() - 20) * 1024 / 960 - 3);
    }
}
