//! AAC AudioSpecificConfig (ISO 14496-3 §1.6.2.1): enough to name the stream and to hand libav its extradata.

/// Why an AudioSpecificConfig cannot be read.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum AacError {
    /// The config ends before the channel configuration.
    #[error("AudioSpecificConfig is truncated")]
    Truncated,
    /// The sampling frequency index is 13 or 14 (reserved); carries it.
    #[error("AudioSpecificConfig has an invalid sampling frequency index {0}")]
    BadFrequency(u8),
    /// ADTS data does not start with the ADTS sync word.
    #[error("ADTS frame has no sync word")]
    AdtsSync,
    /// An ADTS frame's length is shorter than its header or runs past the data.
    #[error("ADTS frame is truncated")]
    AdtsTruncated,
}

/// One ADTS frame (ISO 14496-3 §1.A.2, how AAC travels in MPEG-TS): what its header says and its raw payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsFrame<'a> {
    /// The AudioSpecificConfig the header amounts to (object type, rate index, channels), for the decoder.
    pub config: [u8; 2],
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Channel configuration (0: in the stream).
    pub channels: u8,
    /// The raw AAC data after the header (and its CRC).
    pub payload: &'a [u8],
}

/// The ADTS frames of `data`, in order; an error ends the sequence (what follows cannot be framed).
pub fn adts_frames(data: &[u8]) -> impl Iterator<Item = Result<AdtsFrame<'_>, AacError>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let frame = adts_frame(rest);
        match &frame {
            Ok((_, len)) => rest = &rest[*len..],
            Err(_) => rest = &[],
        }
        Some(frame.map(|(f, _)| f))
    })
}

fn adts_frame(b: &[u8]) -> Result<(AdtsFrame<'_>, usize), AacError> {
    if b.len() < 7 {
        return Err(AacError::AdtsTruncated);
    }
    if b[0] != 0xFF || b[1] & 0xF6 != 0xF0 {
        return Err(AacError::AdtsSync);
    }
    let header = if b[1] & 0x01 == 0 { 9 } else { 7 };
    let object_type = ((b[2] >> 6) & 0x3) + 1;
    let index = (b[2] >> 2) & 0xF;
    let sample_rate = *RATES.get(index as usize).ok_or(AacError::BadFrequency(index))?;
    let channels = ((b[2] & 0x1) << 2) | (b[3] >> 6);
    let len = (((b[3] & 0x3) as usize) << 11) | ((b[4] as usize) << 3) | ((b[5] >> 5) as usize);
    if len < header || len > b.len() {
        return Err(AacError::AdtsTruncated);
    }
    let config = [(object_type << 3) | (index >> 1), ((index & 1) << 7) | (channels << 3)];
    Ok((
        AdtsFrame {
            config,
            sample_rate,
            channels,
            payload: &b[header..len],
        },
        len,
    ))
}

/// The fields of an AudioSpecificConfig that matter for transcoding and reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio object type (2: AAC-LC, 5: SBR/HE-AAC, 29: PS); escaped types are 32 and up.
    pub object_type: u8,
    /// Sampling rate in Hz, from the index table or the explicit 24-bit value.
    pub sample_rate: u32,
    /// Channel configuration (1-7; 0: the layout is in the stream, not here).
    pub channels: u8,
}

const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AudioSpecificConfig {
    /// Parse the first bytes of an AudioSpecificConfig (object type, rate, channels); the rest is ignored.
    pub fn parse(b: &[u8]) -> Result<Self, AacError> {
        let mut bits = 0u64;
        let n = b.len().min(8);
        for (i, byte) in b[..n].iter().enumerate() {
            bits |= (*byte as u64) << (56 - 8 * i);
        }
        let avail = n * 8;
        let mut pos = 0;
        let mut take = |k: usize| -> Result<u32, AacError> {
            if pos + k > avail {
                return Err(AacError::Truncated);
            }
            let v = ((bits << pos) >> (64 - k)) as u32;
            pos += k;
            Ok(v)
        };
        let mut object_type = take(5)? as u8;
        if object_type == 31 {
            object_type = 32 + take(6)? as u8;
        }
        let idx = take(4)? as u8;
        let sample_rate = if idx == 15 {
            take(24)?
        } else {
            *RATES.get(idx as usize).ok_or(AacError::BadFrequency(idx))?
        };
        let channels = take(4)? as u8;
        Ok(Self {
            object_type,
            sample_rate,
            channels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_44100_stereo() {
        assert_eq!(
            AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap(),
            AudioSpecificConfig {
                object_type: 2,
                sample_rate: 44100,
                channels: 2
            }
        );
        assert_eq!(AudioSpecificConfig::parse(&[0x11, 0x90]).unwrap().sample_rate, 48000);
        assert_eq!(AudioSpecificConfig::parse(&[0x12]), Err(AacError::Truncated));
        assert_eq!(
            AudioSpecificConfig::parse(&[0x17, 0x10]),
            Err(AacError::BadFrequency(14))
        );
    }

    #[test]
    fn adts_frames_give_their_config_and_payload() {
        // Two AAC-LC 48 kHz stereo frames without CRC (7-byte headers), lengths 10 and 9, then garbage.
        let frame = |len: usize| {
            let mut f = vec![
                0xFF,
                0xF1,
                0x4C,
                0x80 | (len >> 11) as u8,
                (len >> 3) as u8,
                ((len & 7) << 5) as u8 | 0x1F,
                0xFC,
            ];
            f.resize(len, 0xAA);
            f
        };
        let mut data = frame(10);
        data.extend(frame(9));
        let frames: Vec<_> = adts_frames(&data).collect();
        assert_eq!(frames.len(), 2);
        let f = frames[0].unwrap();
        assert_eq!((f.sample_rate, f.channels, f.payload.len()), (48000, 2, 3));
        assert_eq!(
            AudioSpecificConfig::parse(&f.config).unwrap(),
            AudioSpecificConfig {
                object_type: 2,
                sample_rate: 48000,
                channels: 2
            }
        );
        data.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        let frames: Vec<_> = adts_frames(&data).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2], Err(AacError::AdtsSync));
        let mut short = frame(10);
        short.truncate(8);
        assert_eq!(adts_frames(&short).next(), Some(Err(AacError::AdtsTruncated)));
    }
}
