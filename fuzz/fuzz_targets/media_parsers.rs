//! FLV tag, AVC configuration/NALU, SPS and AudioSpecificConfig parsers and the H.264 RTP payloader: any input is an
//! error or a value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomgate::media::{aac::AudioSpecificConfig, flv, h264, Codec, Frame};

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    let _ = flv::parse_video(&b);
    let _ = flv::parse_audio(&b);
    let _ = h264::parse_sps(data);
    let _ = AudioSpecificConfig::parse(data);
    if let Ok(cfg) = h264::AvcConfig::parse(&b) {
        let _ = cfg.to_annex_b(data, true);
    }
    let _ = h264::annex_b_nals(data).count();
    // RTP payloads of an access unit: within the MTU (the first byte picks it), whatever the input.
    let mtu = usize::from(data.first().copied().unwrap_or(0)) * 8;
    for codec in [Codec::H264, Codec::Opus] {
        let frame = Frame {
            codec,
            pts: 0,
            keyframe: false,
            data: data.into(),
            received_at: std::time::Instant::now(),
        };
        let payloads = roomgate::media::rtp::payloads(&frame, mtu);
        assert!(payloads.len() <= roomgate::media::rtp::MAX_PAYLOADS_PER_FRAME);
        assert!(payloads.iter().all(|p| p.data.len() <= mtu));
    }
});
