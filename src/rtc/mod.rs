//! The WebRTC engine: every session (WHEP viewers, WHIP publishers) on one UDP socket and one ICE-TCP
//! listener, driven by str0m.
//!
//! `rtc.workers` shard tasks own the `Rtc` state machines, sessions spread over them by id (`engine.rs`); the first
//! reads the UDP socket and every shard sends on it; TCP connections are small tasks that frame and unframe RFC 4571
//! packets (`tcp.rs`). A new peer is routed by the local ufrag in its first STUN request, then by its address (a
//! hash lookup in the shared `Routes`, never a scan of the sessions). Each session is fed a timeout only when its
//! own deadline is due, at the shard's next wake-up or at most `TIMER_SLACK` after it; a publisher's frames go to its
//! `MediaSink` on the shard. A panic inside str0m or a media sink ends that session only.

pub mod demux;
mod dtls;
mod engine;
mod negotiate;
pub mod resources;
mod routes;
mod shard;
mod tcp;
mod udp;

pub use engine::{EngineFull, MediaSink, MediaVerdict, NewSession, OutTrack, RtcEngine, SessionEvent, SessionId};
pub use negotiate::{negotiate, Negotiated};
pub use resources::{random_token, PatchResult, ResourceError, SessionAnswer, SessionResources};
pub use shard::VIDEO_SEND_PACKETS;

/// The crypto provider WebRTC sessions are built with: str0m's, with one DTLS configuration shared by every
/// session (`dtls`).
pub fn crypto_provider() -> std::sync::Arc<str0m::crypto::CryptoProvider> {
    dtls::provider()
}

use std::net::{IpAddr, SocketAddr};

/// Candidate addresses for the configured bind address and NAT 1:1 list.
pub fn candidate_ips(bind: IpAddr, public_ips: &[IpAddr]) -> Vec<IpAddr> {
    if !public_ips.is_empty() {
        return public_ips.to_vec();
    }
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4() == bind.is_ipv4() && !is_link_local(ip))
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        // A machine with loopback only: still usable from itself.
        ips.push(if bind.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        });
    }
    ips
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Where the engine listens, as bound.
#[derive(Debug, Clone, Copy)]
pub struct EngineAddrs {
    /// The UDP socket all sessions share.
    pub udp: SocketAddr,
    /// The ICE-TCP listener; `None` when `rtc.tcp_enabled` is off.
    pub tcp: Option<SocketAddr>,
}

/// An H.264 profile as RFC 6184 table 5 groups `profile-level-id`s (profile_idc and the constraint flags that
/// matter): what str0m negotiates on, ignoring the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Profile {
    /// profile_idc `42` with constraint_set1, `4d` with constraint_set0, or `58` with both (e.g. `42e01f`).
    ConstrainedBaseline,
    /// `42` without constraint_set1, or `58` with constraint_set0 only.
    Baseline,
    /// `4d` without constraint_set0.
    Main,
    /// `58` without constraint_set0.
    Extended,
    /// `64`, whatever the constraint flags.
    High,
    /// Any other profile_idc (e.g. `6e`, High 10); carries it. Ranks below all the others.
    Other(u8),
}

impl H264Profile {
    /// How much a decoder of this profile takes (a wider profile decodes the narrower ones).
    pub fn rank(self) -> u8 {
        match self {
            H264Profile::ConstrainedBaseline => 1,
            H264Profile::Baseline | H264Profile::Extended => 2,
            H264Profile::Main => 3,
            H264Profile::High => 4,
            H264Profile::Other(_) => 0,
        }
    }
}

/// The profile of a `profile-level-id` (0xPPCCLL: profile_idc, constraint flags, level).
pub fn h264_profile(plid: u32) -> H264Profile {
    let (idc, iop) = ((plid >> 16) as u8, (plid >> 8) as u8);
    match idc {
        0x42 if iop & 0x40 != 0 => H264Profile::ConstrainedBaseline,
        0x42 => H264Profile::Baseline,
        0x4d if iop & 0x80 != 0 => H264Profile::ConstrainedBaseline,
        0x4d => H264Profile::Main,
        0x58 if iop & 0xC0 == 0xC0 => H264Profile::ConstrainedBaseline,
        0x58 if iop & 0x80 != 0 => H264Profile::Baseline,
        0x58 => H264Profile::Extended,
        0x64 => H264Profile::High,
        other => H264Profile::Other(other),
    }
}

/// The `profile-level-id`s of the H.264 formats with `packetization-mode=1` an offer lists, in its order.
pub fn offered_h264_profiles(sdp: &str) -> Vec<u32> {
    let h264_pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=rtpmap:"))
        .filter_map(|r| r.split_once(' '))
        .filter(|(_, codec)| codec.to_ascii_uppercase().starts_with("H264/"))
        .map(|(pt, _)| pt)
        .collect();
    let mut out = Vec::new();
    for fmtp in sdp.lines().filter_map(|l| l.trim().strip_prefix("a=fmtp:")) {
        let Some((pt, params)) = fmtp.split_once(' ') else {
            continue;
        };
        if !h264_pts.contains(&pt) {
            continue;
        }
        let param = |name: &str| {
            params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        if param("packetization-mode") != Some("1") {
            continue;
        }
        if let Some(plid) = param("profile-level-id").and_then(|v| u32::from_str_radix(v, 16).ok()) {
            if !out.contains(&plid) {
                out.push(plid);
            }
        }
    }
    out
}

/// The m-lines of an offer: (mid, kind), in order.
pub fn offer_media_kinds(sdp: &str) -> Vec<(str0m::media::Mid, str0m::media::MediaKind)> {
    let mut out = Vec::new();
    let mut kind = None;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            kind = match m.split_whitespace().next() {
                Some("video") => Some(str0m::media::MediaKind::Video),
                Some("audio") => Some(str0m::media::MediaKind::Audio),
                _ => None,
            };
        } else if let (Some(mid), Some(k)) = (line.trim().strip_prefix("a=mid:"), kind) {
            out.push((str0m::media::Mid::from(mid.trim()), k));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_profiles_of_an_offer() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\na=mid:0\r\n\
            a=rtpmap:96 VP8/90000\r\na=rtpmap:97 H264/90000\r\n\
            a=fmtp:97 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
            a=rtpmap:98 h264/90000\r\na=fmtp:98 profile-level-id=42e01f;packetization-mode=0\r\n\
            a=rtpmap:99 H264/90000\r\na=fmtp:99 packetization-mode=1;profile-level-id=640C1F\r\n\
            a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n";
        assert_eq!(offered_h264_profiles(sdp), vec![0x42e01f, 0x640c1f]);
        assert!(offered_h264_profiles("v=0\r\nm=video 9 UDP 96\r\na=rtpmap:96 VP8/90000\r\n").is_empty());
    }

    #[test]
    fn h264_profiles_group_as_rfc_6184_says() {
        // x264 baseline (42c0..) and browsers' constrained baseline (42e0..) are the same profile.
        assert_eq!(h264_profile(0x42c01e), h264_profile(0x42e01f));
        assert_eq!(h264_profile(0x42e01f), H264Profile::ConstrainedBaseline);
        assert_eq!(h264_profile(0x42001f), H264Profile::Baseline);
        assert_eq!(h264_profile(0x4d401f), H264Profile::Main);
        assert_eq!(h264_profile(0x4d001f), H264Profile::Main);
        assert_eq!(h264_profile(0x640028), H264Profile::High);
        assert!(H264Profile::High.rank() > H264Profile::Main.rank());
    }
}
