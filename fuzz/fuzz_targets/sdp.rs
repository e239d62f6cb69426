//! What WHIP/WHEP take from a client before any session exists: the SDP offer (str0m's parser and our
//! `offer_media_kinds`), trickle-ICE fragment lines (candidates) and the first bytes of UDP/ICE-TCP traffic
//! (STUN ufrag, RFC 4571 framing). Any input is an error or a value, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomgate::rtc::{demux, offer_media_kinds};

fuzz_target!(|data: &[u8]| {
    let _ = demux::stun_local_ufrag(data);
    let mut framer = demux::FrameReader::default();
    framer.feed(data);
    while framer.next_packet().is_some() {}
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = str0m::change::SdpOffer::from_sdp_string(text);
    let _ = offer_media_kinds(text);
    for line in text.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("a=candidate:").or_else(|| line.strip_prefix("candidate:")) {
            let _ = str0m::Candidate::from_sdp_string(&format!("candidate:{c}"));
        }
    }
});
