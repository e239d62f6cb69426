//! `AudioBridge`: the audio side of a pushed stream (RTMP, SRT). Compressed audio in, Opus into the anchor,
//! through a transcoder on its own thread that is started on the first frame and started again when the codec
//! or its configuration changes mid-stream.

use crate::ingest::Refusal;
use crate::media::transcode::{AudioInputCodec, AudioTranscoder, OpusSettings, TranscodeError};
use crate::room::AnchorHandle;
use bytes::Bytes;
use std::time::Instant;

/// The audio transcoder of one publish and what it was started for.
pub struct AudioBridge {
    label: String,
    opus: OpusSettings,
    current: Option<(AudioInputCodec, AudioTranscoder)>,
    overload_warned: bool,
}

impl AudioBridge {
    /// No transcoder yet; `label` names the publish in logs, `opus` sets the encoder.
    pub fn new(label: String, opus: OpusSettings) -> Self {
        AudioBridge {
            label,
            opus,
            current: None,
            overload_warned: false,
        }
    }

    /// What the running transcoder decodes, if one runs.
    pub fn codec(&self) -> Option<&AudioInputCodec> {
        self.current.as_ref().map(|(c, _)| c)
    }

    /// Make sure a transcoder for `codec` publishes into `anchor`: a new configuration (first one, or a change
    /// mid-stream) gets a fresh decoder once the old one has published what it had (waited for off the tokio
    /// workers).
    pub async fn ensure(&mut self, codec: AudioInputCodec, anchor: &AnchorHandle) -> Result<(), Refusal> {
        if self.codec() == Some(&codec) {
            return Ok(());
        }
        if let Some((_, old)) = self.current.take() {
            let _ = tokio::task::spawn_blocking(move || old.finish()).await;
        }
        let t = AudioTranscoder::start(codec.clone(), self.opus, anchor.sink(), self.label.clone())
            .opened()
            .await
            .map_err(|e| Refusal::AudioCodec(format!("cannot transcode ({e})")))?;
        self.current = Some((codec, t));
        Ok(())
    }

    /// Hand one compressed frame (`ts_ms`: its time in ms) to the transcoder; dropped (and counted, and logged
    /// once) when the transcoder is behind, or when none runs.
    pub fn push(&mut self, data: Bytes, ts_ms: u64, received_at: Instant) -> Result<(), Refusal> {
        let Some((_, t)) = &self.current else { return Ok(()) };
        match t.push(data, ts_ms, received_at) {
            Ok(()) => Ok(()),
            Err(TranscodeError::Overloaded) => {
                metrics::counter!("roomgate_transcode_dropped_total", "kind" => "audio").increment(1);
                if !self.overload_warned {
                    tracing::warn!(anchor = %self.label, "audio transcoder overloaded; dropping audio");
                    self.overload_warned = true;
                }
                Ok(())
            }
            Err(e) => Err(Refusal::Malformed(format!("audio transcoder: {e}"))),
        }
    }

    /// Let the transcoder publish what it still holds (waited for off the tokio workers), so the end of the
    /// stream is not cut.
    pub async fn finish(&mut self) {
        if let Some((_, t)) = self.current.take() {
            let _ = tokio::task::spawn_blocking(move || t.finish()).await;
        }
    }
}
