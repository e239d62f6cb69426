//! FLV tag bodies as RTMP carries them (message types 8 and 9), legacy and Enhanced RTMP (v1/v2 FourCC headers).
//!
//! Pure parsing over `Bytes`: payload slices share the RTMP message buffer, nothing is copied here.

use bytes::Bytes;

/// Why a tag body could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    /// The tag body is empty; names the tag kind.
    #[error("empty {0} tag")]
    Empty(&'static str),
    /// The tag body is shorter than its header; names the tag kind and gives the length.
    #[error("truncated {0} tag ({1} bytes)")]
    Truncated(&'static str, usize),
}

/// A video codec named by a tag, for clear refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodecId {
    /// H.264 (FLV codec id 7, FourCC `avc1`).
    Avc,
    /// H.265 (the unofficial FLV id 12, FourCC `hvc1`).
    Hevc,
    /// AV1 (the unofficial FLV id 13, FourCC `av01`).
    Av1,
    /// VP9 (FourCC `vp09`).
    Vp9,
    /// VP8 (FourCC `vp08`).
    Vp8,
    /// Any other FLV codec id, or a FourCC as a big-endian number.
    Other(u32),
}

impl VideoCodecId {
    /// A name for refusals and logs, e.g. `H.264` or `FourCC "hvc1"`.
    pub fn name(self) -> String {
        match self {
            VideoCodecId::Avc => "H.264".into(),
            VideoCodecId::Hevc => "H.265/HEVC".into(),
            VideoCodecId::Av1 => "AV1".into(),
            VideoCodecId::Vp9 => "VP9".into(),
            VideoCodecId::Vp8 => "VP8".into(),
            VideoCodecId::Other(id) if id > 0xFF => {
                let b = id.to_be_bytes();
                format!("FourCC {:?}", String::from_utf8_lossy(&b))
            }
            VideoCodecId::Other(1) => "JPEG".into(),
            VideoCodecId::Other(2) => "Sorenson H.263".into(),
            VideoCodecId::Other(3) => "Screen video".into(),
            VideoCodecId::Other(4) | VideoCodecId::Other(5) => "On2 VP6".into(),
            VideoCodecId::Other(id) => format!("FLV codec id {id}"),
        }
    }
}

/// What a video tag body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// AVCDecoderConfigurationRecord.
    AvcSequenceHeader(Bytes),
    /// One access unit of length-prefixed NAL units.
    AvcNalus {
        /// The tag's frame type is 1 (keyframe).
        keyframe: bool,
        /// Composition time offset (PTS - DTS) in ms; non-zero means B-frames.
        composition_time: i32,
        /// The AVCC access unit (length-prefixed NAL units), sharing the message buffer.
        data: Bytes,
    },
    /// End of sequence (AVC packet type 2): nothing to pass on.
    AvcEndOfSequence,
    /// Video info/command frames, metadata and other tags that carry no picture.
    Ignored,
    /// A codec roomgate does not take on this path.
    Unsupported(VideoCodecId),
}

/// What an audio tag body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AudioSpecificConfig.
    AacSequenceHeader(Bytes),
    /// One raw AAC frame.
    AacRaw(Bytes),
    /// One or more MP3 frames.
    Mp3(Bytes),
    /// A sound format roomgate does not take: its FLV id (or 9 for Enhanced RTMP audio).
    Unsupported(u8),
}

/// Parse a video tag body (the payload of an RTMP type-9 message).
pub fn parse_video(body: &Bytes) -> Result<VideoTag, FlvError> {
    let b0 = *body.first().ok_or(FlvError::Empty("video"))?;
    if b0 & 0x80 != 0 {
        return parse_enhanced_video(body, b0);
    }
    let frame_type = b0 >> 4;
    let codec = b0 & 0x0F;
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    match codec {
        7 => {
            if body.len() < 5 {
                return Err(FlvError::Truncated("AVC video", body.len()));
            }
            let cts = composition_time(&body[2..5]);
            match body[1] {
                0 => Ok(VideoTag::AvcSequenceHeader(body.slice(5..))),
                1 => Ok(VideoTag::AvcNalus {
                    keyframe: frame_type == 1,
                    composition_time: cts,
                    data: body.slice(5..),
                }),
                2 => Ok(VideoTag::AvcEndOfSequence),
                _ => Ok(VideoTag::Ignored),
            }
        }
        // 12 is the unofficial "HEVC in FLV" id used by several Chinese CDNs and forks.
        12 => Ok(VideoTag::Unsupported(VideoCodecId::Hevc)),
        13 => Ok(VideoTag::Unsupported(VideoCodecId::Av1)),
        other => Ok(VideoTag::Unsupported(VideoCodecId::Other(other as u32))),
    }
}

fn parse_enhanced_video(body: &Bytes, b0: u8) -> Result<VideoTag, FlvError> {
    let frame_type = (b0 >> 4) & 0x07;
    let packet_type = b0 & 0x0F;
    // ModEx (7) and Multitrack (6) wrap other packets; we do not take multitrack video.
    if body.len() < 5 {
        return Err(FlvError::Truncated("enhanced video", body.len()));
    }
    if packet_type == 6 {
        return Ok(VideoTag::Unsupported(VideoCodecId::Other(u32::from_be_bytes(*b"mtrk"))));
    }
    let fourcc = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes"));
    let codec = match &body[1..5] {
        b"avc1" => VideoCodecId::Avc,
        b"hvc1" => VideoCodecId::Hevc,
        b"av01" => VideoCodecId::Av1,
        b"vp09" => VideoCodecId::Vp9,
        b"vp08" => VideoCodecId::Vp8,
        _ => VideoCodecId::Other(fourcc),
    };
    if codec != VideoCodecId::Avc {
        return Ok(VideoTag::Unsupported(codec));
    }
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    match packet_type {
        0 => Ok(VideoTag::AvcSequenceHeader(body.slice(5..))),
        1 => {
            if body.len() < 8 {
                return Err(FlvError::Truncated("enhanced AVC video", body.len()));
            }
            let cts = composition_time(&body[5..8]);
            Ok(VideoTag::AvcNalus {
                keyframe: frame_type == 1,
                composition_time: cts,
                data: body.slice(8..),
            })
        }
        2 => Ok(VideoTag::AvcEndOfSequence),
        3 => Ok(VideoTag::AvcNalus {
            keyframe: frame_type == 1,
            composition_time: 0,
            data: body.slice(5..),
        }),
        _ => Ok(VideoTag::Ignored),
    }
}

/// Signed 24-bit big-endian composition time offset (milliseconds).
fn composition_time(b: &[u8]) -> i32 {
    let v = ((b[0] as i32) << 16) | ((b[1] as i32) << 8) | b[2] as i32;
    (v << 8) >> 8
}

/// Parse an audio tag body (the payload of an RTMP type-8 message).
pub fn parse_audio(body: &Bytes) -> Result<AudioTag, FlvError> {
    let b0 = *body.first().ok_or(FlvError::Empty("audio"))?;
    let format = b0 >> 4;
    match format {
        10 => {
            if body.len() < 2 {
                return Err(FlvError::Truncated("AAC audio", body.len()));
            }
            match body[1] {
                0 => Ok(AudioTag::AacSequenceHeader(body.slice(2..))),
                _ => Ok(AudioTag::AacRaw(body.slice(2..))),
            }
        }
        2 | 14 => Ok(AudioTag::Mp3(body.slice(1..))),
        other => Ok(AudioTag::Unsupported(other)),
    }
}

/// Human name of an FLV sound format id.
pub fn audio_format_name(id: u8) -> &'static str {
    match id {
        0 | 3 => "linear PCM",
        1 => "ADPCM",
        4..=6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        9 => "Enhanced RTMP audio (FourCC)",
        11 => "Speex",
        _ => "unknown audio format",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc() {
        let hdr = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            parse_video(&hdr).unwrap(),
            VideoTag::AvcSequenceHeader(Bytes::from_static(&[1, 2, 3]))
        );
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 0, 9, 9]);
        assert_eq!(
            parse_video(&key).unwrap(),
            VideoTag::AvcNalus {
                keyframe: true,
                composition_time: 0,
                data: Bytes::from_static(&[9, 9])
            }
        );
        let b = Bytes::from_static(&[0x27, 1, 0, 0, 0x50, 9]);
        assert!(matches!(
            parse_video(&b).unwrap(),
            VideoTag::AvcNalus {
                keyframe: false,
                composition_time: 80,
                ..
            }
        ));
        let neg = Bytes::from_static(&[0x27, 1, 0xFF, 0xFF, 0xF6, 9]);
        assert!(matches!(
            parse_video(&neg).unwrap(),
            VideoTag::AvcNalus {
                composition_time: -10,
                ..
            }
        ));
    }

    #[test]
    fn enhanced_rtmp() {
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 1, 2]);
        assert_eq!(parse_video(&hevc).unwrap(), VideoTag::Unsupported(VideoCodecId::Hevc));
        let av1 = Bytes::from_static(&[0x91, b'a', b'v', b'0', b'1']);
        assert_eq!(parse_video(&av1).unwrap(), VideoTag::Unsupported(VideoCodecId::Av1));
        let vp9 = Bytes::from_static(&[0x90, b'v', b'p', b'0', b'9']);
        assert_eq!(parse_video(&vp9).unwrap(), VideoTag::Unsupported(VideoCodecId::Vp9));
        let avc = Bytes::from_static(&[0x91, b'a', b'v', b'c', b'1', 0, 0, 0x21, 7]);
        assert!(matches!(
            parse_video(&avc).unwrap(),
            VideoTag::AvcNalus {
                keyframe: true,
                composition_time: 0x21,
                ..
            }
        ));
        let avcx = Bytes::from_static(&[0x93 | 0x20, b'a', b'v', b'c', b'1', 7]);
        assert!(matches!(
            parse_video(&avcx).unwrap(),
            VideoTag::AvcNalus {
                keyframe: false,
                composition_time: 0,
                ..
            }
        ));
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x12, 1])).unwrap(),
            VideoTag::Unsupported(VideoCodecId::Other(2))
        );
        assert_eq!(
            parse_video(&Bytes::from_static(&[0x1c, 1])).unwrap(),
            VideoTag::Unsupported(VideoCodecId::Hevc)
        );
    }

    #[test]
    fn truncated_and_empty() {
        assert!(parse_video(&Bytes::new()).is_err());
        assert!(parse_video(&Bytes::from_static(&[0x17, 1])).is_err());
        assert!(parse_video(&Bytes::from_static(&[0x91, b'a', b'v', b'c', b'1', 0])).is_err());
        assert!(parse_audio(&Bytes::new()).is_err());
        assert!(parse_audio(&Bytes::from_static(&[0xAF])).is_err());
    }

    #[test]
    fn audio() {
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xAF, 0, 0x12, 0x10])).unwrap(),
            AudioTag::AacSequenceHeader(Bytes::from_static(&[0x12, 0x10]))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xAF, 1, 5])).unwrap(),
            AudioTag::AacRaw(Bytes::from_static(&[5]))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0x2F, 0xFF])).unwrap(),
            AudioTag::Mp3(Bytes::from_static(&[0xFF]))
        );
        assert_eq!(
            parse_audio(&Bytes::from_static(&[0xB2, 0])).unwrap(),
            AudioTag::Unsupported(11)
        );
    }
}
