//! VP8 keyframe headers (RFC 6386 §9.1): the picture size a keyframe declares, read before any decoder sees it,
//! so a 10-byte header declaring 16383x16383 is refused instead of allocating a 400 MB picture.

/// The (width, height) a VP8 keyframe declares; `None` for inter frames and anything malformed.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let h = frame.get(..10)?;
    // Frame tag: bit 0 is 0 on a keyframe; then the start code 9d 01 2a.
    if h[0] & 1 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3FFF;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3FFF;
    Some((w as u32, ht as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_keyframes_only() {
        // 640x480 keyframe with a horizontal scale of 1 in the top bits (ignored).
        let key = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0xe0, 0x01, 0xff];
        assert_eq!(keyframe_size(&key), Some((640, 480)));
        let huge = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0xff, 0x3f, 0xff, 0x3f];
        assert_eq!(keyframe_size(&huge), Some((16383, 16383)));
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(keyframe_size(&inter), None);
        assert_eq!(keyframe_size(&key[..9]), None);
        let mut no_start = key;
        no_start[4] = 0;
        assert_eq!(keyframe_size(&no_start), None);
    }
}
