//! `AudioBridge`: the audio side of a pushed stream (RTMP, SRT). Compressed audio in, Opus into the anchor,
//! through a transcoder that runs inline on the publish's task (a frame costs a fraction of a millisecond, less
//! than handing it to a thread and back), started on the first frame and started again when the codec or its
//! configuration changes mid-stream.

use crate::ingest::Refusal;
use crate::media::transcode::{AudioInputCodec, InlineTranscoder, OpusSettings};
use crate::room::AnchorHandle;
use bytes::Bytes;
use std::time::Instant;

/// Transcoder starts (the first, then one per configuration change) allowed per minute; more end the publish.
/// Each opens a decoder and an encoder on the publish's task.
const STARTS_PER_MINUTE: usize = 5;

/// The audio transcoder of one publish and what it was started for.
pub struct AudioBridge {
    label: String,
    opus: OpusSettings,
    current: Option<(AudioInputCodec, InlineTranscoder)>,
    /// When the transcoder was started, over the last minute.
    starts: Vec<Instant>,
}

impl AudioBridge {
    /// No transcoder yet; `label` names the publish in logs, `opus` sets the encoder.
    pub fn new(label: String, opus: OpusSettings) -> Self {
        AudioBridge {
            label,
            opus,
            current: None,
            starts: Vec::new(),
        }
    }

    /// What the running transcoder decodes, if one runs.
    pub fn codec(&self) -> Option<&AudioInputCodec> {
        self.current.as_ref().map(|(c, _)| c)
    }

    /// Make sure a transcoder for `codec` publishes into `anchor`: a new configuration (first one, or a change
    /// mid-stream) gets a fresh decoder (the old one transcoded each frame as it came; what it drops is the part
    /// of an Opus frame, under `audio.opus_frame_ms`, not yet filled).
    pub fn ensure(&mut self, codec: AudioInputCodec, anchor: &AnchorHandle) -> Result<(), Refusal> {
        if self.codec() == Some(&codec) {
            return Ok(());
        }
        self.current = None;
        let now = Instant::now();
        self.starts
            .retain(|t| now.duration_since(*t) < std::time::Duration::from_secs(60));
        self.starts.push(now);
        if self.starts.len() > STARTS_PER_MINUTE {
            return Err(Refusal::Malformed(format!(
                "the audio configuration changed more than {} times in a minute",
                STARTS_PER_MINUTE - 1
            )));
        }
        let t = InlineTranscoder::new(&codec, self.opus, anchor.sink(), self.label.clone())
            .map_err(|e| Refusal::AudioCodec(format!("cannot transcode ({e})")))?;
        self.current = Some((codec, t));
        Ok(())
    }

    /// Transcode one compressed frame (`ts_ms`: its time in ms) into the anchor now; nothing when no transcoder
    /// runs. A frame libav cannot decode is skipped (logged and counted by the transcoder).
    pub fn push(&mut self, data: Bytes, ts_ms: u64, received_at: Instant) {
        if let Some((_, t)) = &mut self.current {
            t.push(data, ts_ms, received_at);
        }
    }
}
