//! The WebRTC engine: every session (WHEP viewer, later WHIP publisher) on one UDP socket and one ICE-TCP
//! listener, driven by str0m.
//!
//! One task owns the sockets and all `Rtc` state machines (`engine.rs`); TCP connections are small tasks that
//! frame and unframe RFC 4571 packets (`tcp.rs`). A new peer is routed by the local ufrag in its first STUN
//! request, then by its address (a hash lookup, never a scan of the sessions). Each session is fed a
//! timeout only when its own deadline is due, and a panic inside str0m ends that session only.

pub mod demux;
mod engine;
pub mod resources;
mod tcp;
mod udp;

pub use engine::{EngineFull, NewSession, OutTrack, RtcEngine, SessionEvent, SessionId};
pub use resources::{random_token, PatchResult, ResourceError, SessionResources};

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
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
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
