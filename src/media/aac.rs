//! AAC AudioSpecificConfig (ISO 14496-3 §1.6.2.1): enough to name the stream and to hand libav its extradata.

/// Why an AudioSpecificConfig cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AacError {
    /// The config ends before the channel configuration.
    #[error("AudioSpecificConfig is truncated")]
    Truncated,
    /// The sampling frequency index is 13 or 14 (reserved); carries it.
    #[error("AudioSpecificConfig has an invalid sampling frequency index {0}")]
    BadFrequency(u8),
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
}
