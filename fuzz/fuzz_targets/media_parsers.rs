//! FLV tag, AVC configuration/NALU, SPS and AudioSpecificConfig parsers: any input is an error or a value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use roomgate::media::{aac::AudioSpecificConfig, flv, h264};

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
});
