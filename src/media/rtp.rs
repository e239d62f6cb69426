//! A frame cut into RTP payloads once, for every viewer of its track: H.264 as RFC 6184 (single NAL units, STAP-A
//! for the parameter sets, FU-A for NAL units larger than the MTU), Opus as RFC 7587 (one packet per frame). A
//! viewer's session then only adds its own header and encryption, as SRS does, instead of cutting the same frame
//! again for each viewer.

use super::{h264, Codec, Frame};
use std::sync::Arc;

/// One RTP payload of a frame (no header), shared by every session that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPayload {
    /// The payload bytes.
    pub data: Arc<[u8]>,
    /// The last packet of a video frame: the RTP marker bit.
    pub marker: bool,
}

const NAL_TYPE: u8 = 0x1F;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Most payloads one frame is cut into: an 8 MiB picture (the largest a source may send) in ~1.1 kB fragments.
/// A frame of many tiny NAL units beyond that is dropped rather than sent as a flood of datagrams to every viewer.
pub const MAX_PAYLOADS_PER_FRAME: usize = 8192;

/// The largest Opus packet sent whole whatever the MTU: the TOC byte and the longest frame (1 275 bytes, RFC 6716
/// 3.2.1; libopus makes up to this at 510 kb/s and 20 ms). An Opus packet cannot be split, so one above the fragment
/// size goes in a datagram a little larger (~1 330 bytes with header and SRTP tag: within any Ethernet path, as it
/// was on the way in from its source), on its own (`rtc::udp`).
pub const OPUS_PACKET_MAX: usize = 1276;

/// The RTP payloads of `frame`: H.264 in payloads of at most `mtu` bytes, an Opus packet whole up to
/// `OPUS_PACKET_MAX` (or `mtu`, if larger). Empty (nothing is sent) for an empty frame, an `mtu` too small to carry
/// a fragment, a larger Opus packet (several frames in one, which no WebRTC source sends), or a picture that would
/// need more than `MAX_PAYLOADS_PER_FRAME`.
pub fn payloads(frame: &Frame, mtu: usize) -> Vec<RtpPayload> {
    match frame.codec {
        Codec::Opus if frame.data.is_empty() || frame.data.len() > mtu.max(OPUS_PACKET_MAX) => Vec::new(),
        Codec::Opus => vec![RtpPayload {
            data: frame.data.clone(),
            marker: false,
        }],
        Codec::H264 => h264_payloads(&frame.data, mtu),
    }
}

/// RFC 6184 packetization mode 1 of one Annex-B access unit. SPS and PPS travel together in a STAP-A in front of
/// the picture that follows them (what browsers send); access unit delimiters and types that are not byte-stream
/// units are dropped; parameter sets with no picture after them still go out, on their own.
pub fn h264_payloads(access_unit: &[u8], mtu: usize) -> Vec<RtpPayload> {
    let mut out = Vec::new();
    if mtu <= 2 {
        return out;
    }
    let mut sps: Option<&[u8]> = None;
    let mut pps: Option<&[u8]> = None;
    for nal in h264::annex_b_nals(access_unit) {
        if out.len() > MAX_PAYLOADS_PER_FRAME {
            return Vec::new();
        }
        let Some(&head) = nal.first() else { continue };
        match head & NAL_TYPE {
            // Delimiters mean nothing in RTP; 0 and 24-31 are not byte-stream units (24-29 are RTP's own
            // aggregation and fragmentation types: passed on, they would garble the viewer's depacketizer).
            NAL_AUD | 0 | 24..=31 => continue,
            // A second SPS or PPS: what is held goes first, in order (a PPS must not reach the decoder before
            // the SPS it refers to).
            NAL_SPS => {
                if sps.is_some() {
                    parameter_sets(sps.take(), pps.take(), mtu, &mut out);
                }
                sps = Some(nal);
                continue;
            }
            NAL_PPS => {
                if pps.is_some() {
                    parameter_sets(sps.take(), pps.take(), mtu, &mut out);
                }
                pps = Some(nal);
                continue;
            }
            _ => {}
        }
        parameter_sets(sps.take(), pps.take(), mtu, &mut out);
        nal_payloads(nal, mtu, &mut out);
    }
    parameter_sets(sps, pps, mtu, &mut out);
    if out.len() > MAX_PAYLOADS_PER_FRAME {
        return Vec::new();
    }
    if let Some(last) = out.last_mut() {
        last.marker = true;
    }
    out
}

/// SPS and PPS as one STAP-A when both are there and it fits; otherwise each on its own.
fn parameter_sets(sps: Option<&[u8]>, pps: Option<&[u8]>, mtu: usize, out: &mut Vec<RtpPayload>) {
    match (sps, pps) {
        (Some(s), Some(p)) if 1 + 2 + s.len() + 2 + p.len() <= mtu => {
            // The STAP-A header takes the highest NRI of the units it aggregates, and F if any has it (RFC 6184
            // 5.7.1).
            let nri = (s[0] & 0x60).max(p[0] & 0x60);
            let forbidden = (s[0] | p[0]) & 0x80;
            let mut stap = Vec::with_capacity(5 + s.len() + p.len());
            stap.push(forbidden | nri | STAP_A);
            for unit in [s, p] {
                stap.extend_from_slice(&(unit.len() as u16).to_be_bytes());
                stap.extend_from_slice(unit);
            }
            out.push(RtpPayload {
                data: stap.into(),
                marker: false,
            });
        }
        (s, p) => {
            for unit in [s, p].into_iter().flatten() {
                nal_payloads(unit, mtu, out);
            }
        }
    }
}

/// One NAL unit as a single-NAL-unit packet, or as FU-A fragments when it is larger than `mtu`.
fn nal_payloads(nal: &[u8], mtu: usize, out: &mut Vec<RtpPayload>) {
    if nal.len() <= mtu {
        out.push(RtpPayload {
            data: nal.into(),
            marker: false,
        });
        return;
    }
    let indicator = (nal[0] & 0xE0) | FU_A;
    let kind = nal[0] & NAL_TYPE;
    let body = &nal[1..];
    let fragments = body.chunks(mtu - 2);
    let count = fragments.len();
    for (i, fragment) in fragments.enumerate() {
        let mut header = kind;
        if i == 0 {
            header |= 0x80;
        }
        if i + 1 == count {
            header |= 0x40;
        }
        let data: Arc<[u8]> = [indicator, header].iter().chain(fragment).copied().collect();
        out.push(RtpPayload { data, marker: false });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    /// What a receiver rebuilds from the payloads (RFC 6184 depacketization), as Annex-B NAL units.
    fn depacketize(payloads: &[RtpPayload]) -> Vec<Vec<u8>> {
        let mut nals = Vec::new();
        let mut partial: Option<Vec<u8>> = None;
        for p in payloads {
            let d = &p.data[..];
            match d[0] & NAL_TYPE {
                STAP_A => {
                    let mut i = 1;
                    while i + 2 <= d.len() {
                        let n = u16::from_be_bytes([d[i], d[i + 1]]) as usize;
                        nals.push(d[i + 2..i + 2 + n].to_vec());
                        i += 2 + n;
                    }
                }
                FU_A => {
                    if d[1] & 0x80 != 0 {
                        partial = Some(vec![(d[0] & 0xE0) | (d[1] & NAL_TYPE)]);
                    }
                    let nal = partial.as_mut().expect("a fragment after a start");
                    nal.extend_from_slice(&d[2..]);
                    if d[1] & 0x40 != 0 {
                        nals.push(partial.take().unwrap());
                    }
                }
                _ => nals.push(d.to_vec()),
            }
        }
        nals
    }

    #[test]
    fn a_keyframe_is_parameter_sets_in_a_stap_a_then_fragments_with_the_marker_on_the_last() {
        let sps = [0x67, 0x42, 0xe0, 0x1f];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut idr = vec![0x65];
        idr.extend((0..3000u32).map(|i| (i % 251) as u8 + 1));
        let au = annex_b(&[&[0x09, 0xf0], &sps, &pps, &idr]);
        let p = h264_payloads(&au, 1200);
        assert_eq!(
            p[0].data[0],
            0x60 | STAP_A,
            "SPS and PPS aggregated, NRI of the highest"
        );
        assert!(p[1..]
            .iter()
            .all(|x| x.data[0] & NAL_TYPE == FU_A && x.data.len() <= 1200));
        assert_eq!(p.len(), 1 + 3000usize.div_ceil(1198));
        assert_eq!(p.iter().filter(|x| x.marker).count(), 1);
        assert!(p.last().unwrap().marker);
        assert_eq!(
            depacketize(&p),
            vec![sps.to_vec(), pps.to_vec(), idr],
            "the AUD is dropped"
        );
    }

    #[test]
    fn small_units_go_whole_and_lone_parameter_sets_are_not_lost() {
        let slice = [0x41, 1, 2, 3];
        let p = h264_payloads(&annex_b(&[&slice]), 1200);
        assert_eq!(p.len(), 1);
        assert_eq!(&p[0].data[..], &slice);
        assert!(p[0].marker);

        // Parameter sets at the end of an access unit, or only one of them, still go out.
        let sps = [0x67, 0x42];
        let pps = [0x68, 0xce];
        assert_eq!(
            depacketize(&h264_payloads(&annex_b(&[&sps, &pps]), 1200)),
            vec![sps.to_vec(), pps.to_vec()]
        );
        assert_eq!(
            depacketize(&h264_payloads(&annex_b(&[&sps, &slice]), 1200)),
            vec![sps.to_vec(), slice.to_vec()]
        );
        // Too large for one STAP-A: each on its own.
        let big_sps: Vec<u8> = [0x67].into_iter().chain(vec![7; 40]).collect();
        let p = h264_payloads(&annex_b(&[&big_sps, &pps, &slice]), 30);
        assert_eq!(depacketize(&p), vec![big_sps, pps.to_vec(), slice.to_vec()]);
        assert!(p.iter().all(|x| x.data.len() <= 30));
    }

    #[test]
    fn repeated_parameter_sets_keep_their_order_and_floods_of_tiny_units_are_dropped() {
        let sps = [0x67, 0x42];
        let pps0 = [0x68, 0xce];
        let pps1 = [0x68, 0xcf];
        let idr = [0x65, 1, 2];
        let p = h264_payloads(&annex_b(&[&sps, &pps0, &pps1, &idr]), 1200);
        assert_eq!(
            depacketize(&p),
            vec![sps.to_vec(), pps0.to_vec(), pps1.to_vec(), idr.to_vec()],
            "no PPS before its SPS"
        );
        let tiny = [0x41, 1];
        let flood = vec![&tiny[..]; MAX_PAYLOADS_PER_FRAME + 1];
        assert!(h264_payloads(&annex_b(&flood), 1200).is_empty());
        let most = vec![&tiny[..]; MAX_PAYLOADS_PER_FRAME];
        assert_eq!(h264_payloads(&annex_b(&most), 1200).len(), MAX_PAYLOADS_PER_FRAME);
    }

    #[test]
    fn nothing_to_send_gives_no_payloads() {
        assert!(h264_payloads(&[], 1200).is_empty());
        assert!(h264_payloads(&[0, 0, 1], 1200).is_empty());
        assert!(
            h264_payloads(&annex_b(&[&[0x65, 1, 2]]), 2).is_empty(),
            "no room for a fragment"
        );
        let opus = |data: &[u8]| Frame {
            codec: Codec::Opus,
            pts: 0,
            keyframe: false,
            data: data.into(),
            received_at: Instant::now(),
        };
        assert!(payloads(&opus(&[]), 1200).is_empty());
        assert_eq!(
            payloads(&opus(&[1; OPUS_PACKET_MAX]), 1100)[0].data.len(),
            OPUS_PACKET_MAX,
            "an Opus packet cannot be split: the largest one frame makes goes whole"
        );
        assert!(payloads(&opus(&[1; OPUS_PACKET_MAX + 1]), 1100).is_empty());
        assert_eq!(payloads(&opus(&[1; 1400]), 1400).len(), 1);
        let p = payloads(&opus(&[0xfc, 1, 2]), 1200);
        assert_eq!((&p[0].data[..], p[0].marker), (&[0xfc, 1, 2][..], false));
    }

    #[test]
    fn any_access_unit_comes_back_whole_from_payloads_within_the_mtu() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..2000 {
            let nals: Vec<Vec<u8>> = (0..rng.random_range(1..6))
                .map(|_| {
                    let len = rng.random_range(1..2500);
                    // No zero bytes: a body cannot hold a start code.
                    (0..len).map(|_| rng.random_range(1..=255u8)).collect()
                })
                .collect();
            // From 4 bytes up: fragments then carry 2 bytes or more, so even 5 NAL units of 2499 bytes stay under
            // `MAX_PAYLOADS_PER_FRAME` (at 3 bytes they may not, and the frame is refused: tested above).
            let mtu = rng.random_range(4..1500);
            let refs: Vec<&[u8]> = nals.iter().map(|n| &n[..]).collect();
            let p = h264_payloads(&annex_b(&refs), mtu);
            let mut want: Vec<Vec<u8>> = nals
                .into_iter()
                .filter(|n| !matches!(n[0] & NAL_TYPE, NAL_AUD | 0 | 24..=31))
                .collect();
            assert!(p.iter().all(|x| x.data.len() <= mtu));
            assert_eq!(p.iter().filter(|x| x.marker).count(), usize::from(!want.is_empty()));
            assert!(p.last().is_none_or(|x| x.marker));
            let mut got = depacketize(&p);
            // Parameter sets may move in front of the picture that follows them; the rest keeps its order.
            let is_ps = |n: &Vec<u8>| matches!(n[0] & NAL_TYPE, NAL_SPS | NAL_PPS);
            let (a, b): (Vec<_>, Vec<_>) = want.drain(..).partition(is_ps);
            let (c, d): (Vec<_>, Vec<_>) = got.drain(..).partition(is_ps);
            assert_eq!(d, b);
            let (mut a, mut c) = (a, c);
            a.sort();
            c.sort();
            assert_eq!(c, a);
        }
    }

    #[test]
    fn an_opus_packet_is_shared_not_copied() {
        let f = Frame {
            codec: Codec::Opus,
            pts: 960,
            keyframe: false,
            data: Arc::from(&[1u8, 2, 3][..]),
            received_at: Instant::now(),
        };
        assert!(Arc::ptr_eq(&payloads(&f, 1200)[0].data, &f.data));
    }
}
