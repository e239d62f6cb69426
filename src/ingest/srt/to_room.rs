//! `SrtPublish`: the room side of one SRT publish. MPEG-TS bytes in; the program's H.264 passes through (Annex-B
//! as sent, parameter sets put in front of keyframes that lack them), its AAC or MP3 goes to an Opus transcoder,
//! its Opus passes through. Timestamps are the TS's own PTS on one timeline for both tracks.

use crate::ingest::{AudioBridge, InputCounters, Refusal};
use crate::media::aac::adts_frames;
use crate::media::h264::{annex_b_nals, parse_sps};
use crate::media::transcode::{AudioInputCodec, OpusSettings};
use crate::media::ts::{self, Pes, StreamKind, TsDemuxer, TsEvent, Unwrap33};
use crate::media::{Codec, Frame, TrackInfo, AUDIO_CLOCK};
use crate::room::{AnchorHandle, LeaveReason};
use bytes::Bytes;
use std::time::Instant;

/// How far below the first timestamp a stream may start (audio a little ahead of video) and still be placed:
/// the timeline's origin is this much before the first timestamp seen.
const HEADROOM_90K: i64 = 90_000;
/// A timestamp this far from the previous one (10 s) is a discontinuity (an encoder restart, a spliced stream):
/// the timeline goes on from where it was instead of jumping.
const JUMP_90K: i64 = 10 * 90_000;

/// The room side of one accepted SRT publish.
pub struct SrtPublish {
    anchor: AnchorHandle,
    label: String,
    demux: TsDemuxer,
    events: Vec<TsEvent>,
    video: Option<u16>,
    audio: Option<(u16, StreamKind)>,
    clock: Unwrap33,
    origin: Option<i64>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    waiting_keyframe: bool,
    audio_bridge: AudioBridge,
    aac_config: Option<[u8; 2]>,
    last_ext: Option<i64>,
    opus_info_set: bool,
    warned: Warned,
    counters: InputCounters,
}

/// What was logged once already.
#[derive(Default)]
struct Warned {
    no_sps: bool,
    bad_audio: bool,
    losses: u64,
}

impl SrtPublish {
    /// Room side for `anchor`; `label` names it in logs, `opus` sets the audio transcoder.
    pub fn new(anchor: AnchorHandle, label: String, opus: OpusSettings) -> Self {
        SrtPublish {
            anchor,
            audio_bridge: AudioBridge::new(label.clone(), opus),
            label,
            demux: TsDemuxer::new(),
            events: Vec::new(),
            video: None,
            audio: None,
            clock: Unwrap33::default(),
            origin: None,
            sps: None,
            pps: None,
            waiting_keyframe: true,
            aac_config: None,
            last_ext: None,
            opus_info_set: false,
            warned: Warned::default(),
            counters: InputCounters::new("srt"),
        }
    }

    /// Demux what the connection received; true if it held media of the chosen streams (a PES of them, even one
    /// skipped while waiting for a keyframe): the publisher is alive.
    pub async fn on_data(&mut self, data: &[u8], received_at: Instant) -> Result<bool, Refusal> {
        self.demux.push(data, &mut self.events);
        let mut media = false;
        let events = std::mem::take(&mut self.events);
        for event in &events {
            match event {
                TsEvent::Program(streams) => self.choose_streams(streams)?,
                TsEvent::Pes(pes) if Some(pes.pid) == self.video => {
                    self.counters.video_bytes.increment(pes.data.len() as u64);
                    self.on_video(pes, received_at)?;
                    media = true;
                }
                TsEvent::Pes(pes) if self.audio.is_some_and(|(pid, _)| pid == pes.pid) => {
                    self.counters.audio_bytes.increment(pes.data.len() as u64);
                    self.on_audio(pes, received_at).await?;
                    media = true;
                }
                TsEvent::Pes(_) => {}
            }
        }
        self.events = events;
        self.events.clear();
        let losses = self.demux.losses();
        let lost = losses.cut_pes + losses.bad_pes;
        if lost > self.warned.losses {
            if self.warned.losses == 0 {
                tracing::warn!(anchor = %self.label, ?losses, "SRT stream lost data (late packets dropped by SRT, or a broken muxer)");
            }
            metrics::counter!("roomgate_srt_lost_frames_total").increment(lost - self.warned.losses);
            self.warned.losses = lost;
        }
        Ok(media)
    }

    /// Take the program's first video and first audio stream; refuse codecs the room cannot carry.
    fn choose_streams(&mut self, streams: &[ts::EsInfo]) -> Result<(), Refusal> {
        let video = streams.iter().find(|e| e.kind.is_video());
        let audio = streams.iter().find(|e| !e.kind.is_video());
        match video.map(|e| e.kind) {
            Some(StreamKind::H264) | None => {}
            Some(other) => return Err(Refusal::VideoCodec(other.name())),
        }
        match audio.map(|e| e.kind) {
            Some(StreamKind::Aac | StreamKind::Mp3) | None => {}
            Some(StreamKind::Opus { channels }) if channels.is_none_or(|c| c <= 2) => {}
            Some(StreamKind::Opus { channels }) => {
                return Err(Refusal::AudioCodec(format!(
                    "opus with channel configuration {}",
                    channels.unwrap_or(0)
                )))
            }
            Some(other) => return Err(Refusal::AudioCodec(other.name())),
        }
        tracing::info!(anchor = %self.label, video = ?video.map(|e| e.kind.name()), audio = ?audio.map(|e| e.kind.name()), "SRT program");
        if self.video != video.map(|e| e.pid) {
            self.waiting_keyframe = true;
        }
        self.video = video.map(|e| e.pid);
        self.audio = audio.map(|e| (e.pid, e.kind));
        Ok(())
    }

    /// The PES's time on the anchor's timeline (90 kHz), or None before the origin (or without a PTS). A jump of
    /// more than `JUMP_90K` either way moves the origin so the timeline goes on from the last time.
    fn time_90k(&mut self, pts: Option<u64>) -> Option<u64> {
        let ext = self.clock.unwrap(pts?);
        let origin = *self.origin.get_or_insert(ext - HEADROOM_90K);
        if let Some(last) = self.last_ext.filter(|last| (ext - last).abs() > JUMP_90K) {
            tracing::info!(anchor = %self.label, jump_ms = (ext - last) / 90, "SRT timestamps jumped; the timeline goes on");
            self.origin = Some(origin + (ext - last));
        }
        self.last_ext = Some(ext);
        u64::try_from(ext - self.origin.unwrap_or(origin)).ok()
    }

    fn on_video(&mut self, pes: &Pes, received_at: Instant) -> Result<(), Refusal> {
        if pes.dts.is_some_and(|dts| Some(dts) != pes.pts) {
            return Err(Refusal::BFrames);
        }
        let Some(pts) = self.time_90k(pes.pts) else {
            return Ok(());
        };
        let (mut has_sps, mut has_pps, mut idr) = (false, false, false);
        for nal in annex_b_nals(&pes.data) {
            match nal.first().map(|h| h & 0x1F) {
                Some(7) => {
                    has_sps = true;
                    if self.sps.as_deref() != Some(nal) {
                        let info = parse_sps(nal).map_err(|e| Refusal::Malformed(e.to_string()))?;
                        tracing::info!(anchor = %self.label, profile = info.profile_name(), width = info.width, height = info.height, "H.264 sequence parameters");
                        self.anchor.set_video_info(TrackInfo::from(&info));
                        self.sps = Some(pes.data.slice_ref(nal));
                    }
                }
                Some(8) => {
                    has_pps = true;
                    self.pps = Some(pes.data.slice_ref(nal));
                }
                Some(5) => idr = true,
                _ => {}
            }
        }
        if pes.after_loss {
            self.waiting_keyframe = true;
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            if !self.warned.no_sps {
                tracing::warn!(anchor = %self.label, "H.264 pictures before the first SPS and PPS are dropped");
                self.warned.no_sps = true;
            }
            return Ok(());
        };
        if self.waiting_keyframe && !idr {
            return Ok(());
        }
        self.waiting_keyframe = false;
        let data: std::sync::Arc<[u8]> = if idr && !(has_sps && has_pps) {
            let mut au = Vec::with_capacity(sps.len() + pps.len() + 8 + pes.data.len());
            for ps in [sps, pps] {
                au.extend_from_slice(&[0, 0, 0, 1]);
                au.extend_from_slice(ps);
            }
            au.extend_from_slice(&pes.data);
            au.into()
        } else {
            pes.data[..].into()
        };
        self.counters.video_frames.increment(1);
        self.anchor.publish(Frame {
            codec: Codec::H264,
            pts,
            keyframe: idr,
            data,
            received_at,
        });
        Ok(())
    }

    async fn on_audio(&mut self, pes: &Pes, received_at: Instant) -> Result<(), Refusal> {
        let Some(pts) = self.time_90k(pes.pts) else {
            return Ok(());
        };
        let Some((_, kind)) = self.audio else { return Ok(()) };
        match kind {
            StreamKind::Aac => {
                let mut samples = 0u64;
                for frame in adts_frames(&pes.data) {
                    let Ok(frame) = frame else {
                        self.bad_audio("a malformed ADTS frame");
                        break;
                    };
                    if frame.payload.is_empty() {
                        continue;
                    }
                    if self.aac_config != Some(frame.config) {
                        self.anchor.set_audio_info(TrackInfo {
                            source_codec: "aac".into(),
                            sample_rate: Some(AUDIO_CLOCK),
                            source_sample_rate: Some(frame.sample_rate),
                            channels: Some(frame.channels as u32),
                            ..Default::default()
                        });
                        let config = Bytes::copy_from_slice(&frame.config);
                        self.audio_bridge
                            .ensure(AudioInputCodec::Aac { config }, &self.anchor)?;
                        self.aac_config = Some(frame.config);
                    }
                    self.counters.audio_frames.increment(1);
                    // Each frame's time from the PES's on the 90 kHz clock: 1024 samples a frame, no drift.
                    let at_90k = pts + samples * 90_000 / frame.sample_rate.max(1) as u64;
                    self.audio_bridge
                        .push(pes.data.slice_ref(frame.payload), at_90k / 90, received_at);
                    samples += 1024;
                }
            }
            StreamKind::Mp3 => {
                if self.audio_bridge.codec().is_none() {
                    self.anchor.set_audio_info(TrackInfo {
                        source_codec: "mp3".into(),
                        ..Default::default()
                    });
                    self.audio_bridge.ensure(AudioInputCodec::Mp3, &self.anchor)?;
                }
                self.counters.audio_frames.increment(1);
                self.audio_bridge.push(pes.data.clone(), pts / 90, received_at);
            }
            StreamKind::Opus { channels } => {
                if !self.opus_info_set {
                    self.opus_info_set = true;
                    self.anchor.set_audio_info(TrackInfo {
                        source_codec: "opus".into(),
                        sample_rate: Some(AUDIO_CLOCK),
                        source_sample_rate: Some(AUDIO_CLOCK),
                        channels: channels.map(u32::from),
                        ..Default::default()
                    });
                }
                // 90 kHz to 48 kHz (8/15) without overflow for any u64.
                let mut at = pts / 15 * 8 + pts % 15 * 8 / 15;
                for packet in ts::opus_access_units(&pes.data) {
                    let Some(packet) = packet else {
                        self.bad_audio("a malformed Opus access unit");
                        break;
                    };
                    let Some(samples) = ts::opus_packet_samples(packet) else {
                        self.bad_audio("an Opus packet without a valid TOC");
                        break;
                    };
                    self.counters.audio_frames.increment(1);
                    self.anchor.publish(Frame {
                        codec: Codec::Opus,
                        pts: at,
                        keyframe: false,
                        data: packet.into(),
                        received_at,
                    });
                    at += samples as u64;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn bad_audio(&mut self, what: &str) {
        metrics::counter!("roomgate_srt_lost_frames_total").increment(1);
        if !self.warned.bad_audio {
            tracing::warn!(anchor = %self.label, "SRT audio: {what}; skipping to the next PES");
            self.warned.bad_audio = true;
        }
    }

    /// Leave the room (the audio transcoder has published all it made).
    pub async fn finish(self, reason: LeaveReason) {
        self.anchor.leave(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::{RoomHub, RoomKey, RoomRef, SourceKind};

    /// A publish into a fresh room, with the hub (which must outlive it) and its anchor.
    fn publish() -> (std::sync::Arc<RoomHub>, SrtPublish, std::sync::Arc<crate::room::Anchor>) {
        let hub = RoomHub::new();
        let key = RoomKey {
            sdkappid: 1,
            room: RoomRef::Str("r".into()),
        };
        let handle = hub.join(key, "a", SourceKind::Srt);
        let anchor = handle.participant().clone();
        let opus = OpusSettings {
            bitrate: 64_000,
            complexity: 1,
            frame_ms: 20,
        };
        (hub, SrtPublish::new(handle, "1/r/a".into(), opus), anchor)
    }

    /// Feed a test file to the publish in 1316-byte reads (what an SRT message carries).
    async fn feed(p: &mut SrtPublish, file: &str) {
        let data = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata")
                .join(file),
        )
        .unwrap();
        for chunk in data.chunks(1316) {
            p.on_data(chunk, Instant::now()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_timeline_goes_on_across_jumps_and_wraps() {
        let (_hub, mut p, _) = publish();
        let base = (1u64 << 33) - 3000; // one frame before the 33-bit wrap
        assert_eq!(p.time_90k(Some(base)), Some(90_000));
        assert_eq!(p.time_90k(Some(0)), Some(93_000), "across the wrap");
        // An encoder restarting at another time: an hour forward, then back to 0.
        assert_eq!(p.time_90k(Some(3000 + 90_000 * 3600)), Some(93_000));
        assert_eq!(p.time_90k(Some(6000 + 90_000 * 3600)), Some(96_000));
        assert_eq!(p.time_90k(Some(0)), Some(96_000));
        assert_eq!(p.time_90k(Some(3000)), Some(99_000));
        // A little back (audio before video) stays where it is.
        assert_eq!(p.time_90k(Some(1500)), Some(97_500));
        assert_eq!(p.time_90k(None), None);
    }

    #[tokio::test]
    async fn an_ffmpeg_stream_becomes_pictures_and_opus_in_the_room() {
        let (_hub, mut p, anchor) = publish();
        let mut video = anchor.video.subscribe();
        feed(&mut p, "x264_opus.ts").await;
        let mut pts = vec![];
        while let Ok(Some(f)) = tokio::time::timeout(std::time::Duration::from_millis(100), video.recv()).await {
            pts.push(f.pts);
        }
        assert_eq!(pts.len(), 15, "every picture of the file");
        assert!(pts.windows(2).all(|w| w[1] - w[0] == 3000));
        assert_eq!(anchor.audio_info().source_codec, "opus");
    }

    #[tokio::test]
    async fn aac_becomes_opus_in_the_room_960_samples_apart() {
        let (_hub, mut p, anchor) = publish();
        let mut audio = anchor.audio.subscribe();
        feed(&mut p, "x264_aac.ts").await;
        let mut pts = vec![];
        while let Ok(Some(f)) = tokio::time::timeout(std::time::Duration::from_millis(100), audio.recv()).await {
            assert_eq!(f.codec, crate::media::Codec::Opus);
            pts.push(f.pts);
        }
        // 48 AAC frames of 1024 samples at 48 kHz: 51 Opus packets of 960, less what the decoder and the last
        // partial packet hold back.
        assert!(pts.len() >= 45, "{} Opus packets", pts.len());
        assert!(pts.windows(2).all(|w| w[1] - w[0] == 960), "{pts:?}");
        assert_eq!(anchor.audio_info().source_codec, "aac");
    }
}
