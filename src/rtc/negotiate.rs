//! What WHIP and WHEP share when they answer an offer: an ICE-lite str0m session with fresh credentials and the
//! engine's host candidates accepts the offer, then each endpoint looks up the tracks it needs by kind and codec.

use super::{offer_media_kinds, random_token, OutTrack, RtcEngine};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid};
use str0m::{IceCreds, Rtc, RtcConfig};

/// An offer accepted by a new session that is not running yet (hand `rtc` to the engine).
pub struct Negotiated {
    /// The ICE-lite str0m session that accepted the offer, with the engine's host candidates.
    pub rtc: Rtc,
    /// Our ICE credentials (the ufrag routes the session's first STUN request).
    pub creds: IceCreds,
    /// The SDP answer to send back (the 201 body).
    pub answer: SdpAnswer,
    /// The offer's m-lines: (mid, kind), in order.
    kinds: Vec<(Mid, MediaKind)>,
}

/// Accept `offer` with a session built from `config` (codecs and options of the endpoint); `Err`: why the offer
/// is unusable.
pub fn negotiate(engine: &RtcEngine, offer: &str, config: RtcConfig) -> Result<Negotiated, String> {
    let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| e.to_string())?;
    let creds = IceCreds {
        ufrag: random_token(8),
        pass: random_token(24),
    };
    let mut rtc = config
        .set_crypto_provider(super::crypto_provider())
        .set_ice_lite(true)
        .set_local_ice_credentials(creds.clone())
        .build(std::time::Instant::now());
    for c in engine.local_candidates() {
        rtc.add_local_candidate(c.clone());
    }
    let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| e.to_string())?;
    Ok(Negotiated {
        rtc,
        creds,
        answer,
        kinds: offer_media_kinds(offer),
    })
}

impl Negotiated {
    /// The first m-line of `kind` that negotiated `codec`, with that codec's payload type.
    pub fn track(&mut self, kind: MediaKind, codec: Codec) -> Option<OutTrack> {
        let rtc = &mut self.rtc;
        self.kinds.iter().filter(|(_, k)| *k == kind).find_map(|(mid, _)| {
            // From the m-line's negotiated payload types (not `Rtc::writer`, which an RTP-mode session refuses).
            let remote = rtc.media(*mid)?.remote_pts();
            let params = rtc.codec_config().params();
            let pt = params
                .iter()
                .find(|p| remote.contains(&p.pt()) && p.spec().codec == codec)?
                .pt();
            Some(OutTrack { mid: *mid, pt })
        })
    }

    /// Whether the offer has an m-line of `kind` at all.
    pub fn offers(&self, kind: MediaKind) -> bool {
        self.kinds.iter().any(|(_, k)| *k == kind)
    }
}
