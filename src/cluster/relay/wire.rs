//! The relay link's bytes, sans-IO: a node that has an anchor (the owner) sends it to a node that has viewers for
//! it (the edge) as `media::Frame`s, not SRTP, so the edge fans it out like one of its own anchors.
//!
//! A link, after TCP connect:
//! 1. owner → edge: [`MAGIC`] and a 32-byte random challenge;
//! 2. edge → owner: a [`Kind::Request`] record: which anchor, and an HMAC-SHA256 under `cluster.secret` of the
//!    challenge and the request (so a captured request cannot be replayed on another link);
//! 3. owner → edge: a [`Kind::Accept`] record (the anchor's user id and track info) or a [`Kind::Refuse`] one
//!    (why), then [`Kind::Frame`] records from the anchor's cached GOP on, and [`Kind::Info`] when a track's info
//!    changes, and [`Kind::End`] when the anchor leaves. A link that closes without `End` broke (the owner node
//!    died or the network failed); the edge opens it again.
//!
//! Every record is `[kind: u8][length: u32 BE][payload]`; a payload over [`MAX_RECORD`] is an error, not an
//! allocation.

use crate::cluster::seal::{hex, unhex};
use crate::media::{Codec, Frame, TrackInfo};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Instant;

/// First bytes an owner sends: the protocol and its version.
pub const MAGIC: &[u8; 8] = b"RGRELAY1";
/// Length of the owner's challenge.
pub const CHALLENGE_LEN: usize = 32;
/// Largest record payload (a 4K keyframe fits many times over).
pub const MAX_RECORD: usize = 8 * 1024 * 1024;
/// Largest request/accept/refuse/info payload (JSON).
const MAX_JSON: usize = 16 * 1024;

/// Why bytes on a relay link are not a relay link.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The first bytes are not [`MAGIC`]: not a roomgate relay, or another version.
    #[error("not a roomgate relay link (bad magic)")]
    BadMagic,
    /// A record kind this version does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A record longer than its kind allows; holds the length announced.
    #[error("record of {0} bytes is over the limit")]
    TooLong(usize),
    /// A record whose payload does not parse; holds why.
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// The record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Edge → owner: which anchor, with the MAC.
    Request = 1,
    /// Owner → edge: the anchor is sent.
    Accept = 2,
    /// Owner → edge: refused (bad MAC, no such anchor); the link ends.
    Refuse = 3,
    /// Owner → edge: one frame.
    Frame = 4,
    /// Owner → edge: a track's info changed.
    Info = 5,
    /// Owner → edge: the anchor left; the link ends (a link that closes without it broke).
    End = 6,
}

impl Kind {
    fn from_u8(b: u8) -> Result<Kind, WireError> {
        Ok(match b {
            1 => Kind::Request,
            2 => Kind::Accept,
            3 => Kind::Refuse,
            4 => Kind::Frame,
            5 => Kind::Info,
            6 => Kind::End,
            other => return Err(WireError::UnknownKind(other)),
        })
    }
}

/// The anchor an edge asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// App of the room.
    pub sdkappid: u64,
    /// The room id as text.
    pub room_id: String,
    /// `string` or `number`.
    pub room_id_type: String,
    /// The anchor's user id.
    pub userid: String,
    /// Hex HMAC-SHA256 under `cluster.secret` of the challenge and the fields above (see [`Request::verify`]).
    pub mac: String,
}

impl Request {
    /// A request for `userid`'s anchor, signed for this link's `challenge`.
    pub fn signed(
        secret: &str,
        challenge: &[u8],
        sdkappid: u64,
        room_id: &str,
        room_id_type: &str,
        userid: &str,
    ) -> Self {
        let mut r = Request {
            sdkappid,
            room_id: room_id.into(),
            room_id_type: room_id_type.into(),
            userid: userid.into(),
            mac: String::new(),
        };
        r.mac = hex(&r.mac(secret, challenge).finalize().into_bytes());
        r
    }

    /// The MAC of this request for `challenge`, before it is finished: the fields joined by newlines (none may
    /// hold one: room and user ids are checked before they get here, and a newline would only make it fail).
    fn mac(&self, secret: &str, challenge: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(challenge);
        let fields = format!(
            "\n{}\n{}\n{}\n{}",
            self.sdkappid, self.room_id_type, self.room_id, self.userid
        );
        mac.update(fields.as_bytes());
        mac
    }

    /// Whether the MAC is right for `challenge` under `secret` (compared in constant time).
    pub fn verify(&self, secret: &str, challenge: &[u8]) -> bool {
        unhex(&self.mac).is_some_and(|given| self.mac(secret, challenge).verify_slice(&given).is_ok())
    }
}

/// The owner's yes: the anchor as it is now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accept {
    /// The anchor's user id.
    pub userid: String,
    /// Where its media comes from on the owner.
    pub source: crate::room::SourceKind,
    /// Its video track's info.
    pub video: TrackInfo,
    /// Its audio track's info.
    pub audio: TrackInfo,
}

/// One decoded record.
#[derive(Debug, Clone)]
pub enum Record {
    /// See [`Request`].
    Request(Request),
    /// See [`Accept`].
    Accept(Accept),
    /// Why the owner refused.
    Refuse(String),
    /// A frame of the anchor (its `received_at` is when the edge read it).
    Frame(Frame),
    /// A track's new info.
    Info(Codec, TrackInfo),
    /// The anchor left its node.
    End,
}

/// Append `record` to `out`: the payload is written in place (a frame's bytes are copied once, into `out`) and
/// its length filled in after.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let kind = match record {
        Record::Request(_) => Kind::Request,
        Record::Accept(_) => Kind::Accept,
        Record::Refuse(_) => Kind::Refuse,
        Record::End => Kind::End,
        Record::Frame(_) => Kind::Frame,
        Record::Info(..) => Kind::Info,
    };
    out.push(kind as u8);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    match record {
        Record::Request(r) => serde_json::to_writer(&mut *out, r).expect("request serializes"),
        Record::Accept(a) => serde_json::to_writer(&mut *out, a).expect("accept serializes"),
        Record::Refuse(why) => out.extend_from_slice(why.as_bytes()),
        Record::End => {}
        Record::Frame(f) => {
            out.extend_from_slice(&[codec_byte(f.codec), f.keyframe as u8]);
            out.extend_from_slice(&f.pts.to_be_bytes());
            out.extend_from_slice(&f.data);
        }
        Record::Info(codec, info) => {
            out.push(codec_byte(*codec));
            serde_json::to_writer(&mut *out, info).expect("info serializes");
        }
    }
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn codec_byte(c: Codec) -> u8 {
    match c {
        Codec::H264 => 0,
        Codec::Opus => 1,
    }
}

fn codec_of(b: u8) -> Result<Codec, WireError> {
    match b {
        0 => Ok(Codec::H264),
        1 => Ok(Codec::Opus),
        other => Err(WireError::Malformed(format!("codec {other}"))),
    }
}

/// Reads records out of the bytes of a link as they arrive (in any pieces).
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Only requests, and only small ones: an owner reading a peer that has not proven the secret yet.
    requests_only: bool,
}

impl Decoder {
    /// A decoder for the first record an owner reads: a [`Kind::Request`] of at most a few KiB, anything else an
    /// error, so a peer without the secret cannot make the owner buffer a frame's worth of bytes.
    pub fn for_request() -> Decoder {
        Decoder {
            requests_only: true,
            ..Decoder::default()
        }
    }

    /// Bytes read from the link.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole record, `None` until one has arrived; an error ends the link.
    pub fn next_record(&mut self) -> Result<Option<Record>, WireError> {
        if self.buf.len() < 5 {
            if let Some(&k) = self.buf.first() {
                let kind = Kind::from_u8(k)?;
                if self.requests_only && kind != Kind::Request {
                    return Err(WireError::Malformed(format!("{kind:?} before the request")));
                }
            }
            return Ok(None);
        }
        let kind = Kind::from_u8(self.buf[0])?;
        if self.requests_only && kind != Kind::Request {
            return Err(WireError::Malformed(format!("{kind:?} before the request")));
        }
        let len = u32::from_be_bytes(self.buf[1..5].try_into().expect("4 bytes")) as usize;
        let max = if kind == Kind::Frame { MAX_RECORD } else { MAX_JSON };
        if len > max {
            return Err(WireError::TooLong(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let record = Self::record(kind, &self.buf[5..5 + len]);
        // What follows moves to the front (the frame's bytes were copied once, into its `Arc`).
        self.buf.drain(..5 + len);
        record.map(Some)
    }

    /// The record of `kind` whose payload is `payload`.
    fn record(kind: Kind, payload: &[u8]) -> Result<Record, WireError> {
        Ok(match kind {
            Kind::Request => Record::Request(json(payload)?),
            Kind::Accept => Record::Accept(json(payload)?),
            Kind::Refuse => Record::Refuse(String::from_utf8_lossy(payload).into_owned()),
            Kind::End => Record::End,
            Kind::Frame => {
                if payload.len() < 10 {
                    return Err(WireError::Malformed("short frame".into()));
                }
                let codec = codec_of(payload[0])?;
                Record::Frame(Frame {
                    codec,
                    keyframe: payload[1] != 0 && codec == Codec::H264,
                    pts: u64::from_be_bytes(payload[2..10].try_into().expect("8 bytes")),
                    data: Arc::from(&payload[10..]),
                    received_at: Instant::now(),
                })
            }
            Kind::Info => {
                let codec = codec_of(*payload.first().ok_or(WireError::Malformed("empty info".into()))?)?;
                Record::Info(codec, json(&payload[1..])?)
            }
        })
    }
}

/// A JSON payload as `T`, or why not.
fn json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Whether `hello` (the first `MAGIC.len() + CHALLENGE_LEN` bytes) opens a relay link; its challenge if so.
pub fn challenge_of(hello: &[u8]) -> Result<&[u8], WireError> {
    match hello.strip_prefix(MAGIC.as_slice()) {
        Some(c) if c.len() == CHALLENGE_LEN => Ok(c),
        _ => Err(WireError::BadMagic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(codec: Codec, pts: u64, keyframe: bool, data: &[u8]) -> Frame {
        Frame {
            codec,
            pts,
            keyframe,
            data: Arc::from(data),
            received_at: Instant::now(),
        }
    }

    #[test]
    fn records_round_trip_in_any_pieces() {
        let mut bytes = Vec::new();
        let req = Request::signed("s3cret", &[7; 32], 7, "r1", "string", "cam");
        encode(&Record::Request(req.clone()), &mut bytes);
        encode(
            &Record::Frame(frame(Codec::H264, 90_000, true, &[0, 0, 0, 1, 0x65, 1, 2])),
            &mut bytes,
        );
        encode(&Record::Frame(frame(Codec::Opus, 48_000, false, &[9; 80])), &mut bytes);
        let info = TrackInfo {
            source_codec: "aac".into(),
            sample_rate: Some(48_000),
            ..Default::default()
        };
        encode(&Record::Info(Codec::Opus, info), &mut bytes);
        encode(&Record::Refuse("gone".into()), &mut bytes);
        encode(&Record::End, &mut bytes);
        // One byte at a time: records come out whole and in order.
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &bytes {
            d.feed(std::slice::from_ref(b));
            while let Some(r) = d.next_record().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got.len(), 6);
        assert!(matches!(got[5], Record::End));
        assert!(matches!(&got[0], Record::Request(r) if *r == req));
        assert!(
            matches!(&got[1], Record::Frame(f) if f.codec == Codec::H264 && f.keyframe && f.pts == 90_000 && f.data[4] == 0x65)
        );
        assert!(matches!(&got[2], Record::Frame(f) if f.codec == Codec::Opus && !f.keyframe && f.data.len() == 80));
        assert!(matches!(&got[3], Record::Info(Codec::Opus, i) if i.sample_rate == Some(48_000)));
        assert!(matches!(&got[4], Record::Refuse(w) if w == "gone"));
    }

    #[test]
    fn the_mac_binds_the_challenge_the_secret_and_every_field() {
        let challenge = [1u8; 32];
        let req = Request::signed("s3cret", &challenge, 7, "r1", "string", "cam");
        assert!(req.verify("s3cret", &challenge));
        assert!(!req.verify("other", &challenge), "another secret");
        assert!(!req.verify("s3cret", &[2u8; 32]), "replayed on another link");
        for tampered in [
            Request {
                sdkappid: 8,
                ..req.clone()
            },
            Request {
                room_id: "r2".into(),
                ..req.clone()
            },
            Request {
                room_id_type: "number".into(),
                ..req.clone()
            },
            Request {
                userid: "cam2".into(),
                ..req.clone()
            },
            Request {
                mac: "zz".into(),
                ..req.clone()
            },
            Request {
                mac: String::new(),
                ..req.clone()
            },
        ] {
            assert!(!tampered.verify("s3cret", &challenge), "{tampered:?}");
        }
    }

    #[test]
    fn hostile_bytes_are_errors_not_allocations_or_panics() {
        let mut d = Decoder::default();
        d.feed(&[9]);
        assert_eq!(d.next_record().unwrap_err(), WireError::UnknownKind(9));
        let mut d = Decoder::default();
        d.feed(&[Kind::End as u8, 0, 0, 0, 0]);
        assert!(matches!(d.next_record(), Ok(Some(Record::End))));
        let mut d = Decoder::default();
        d.feed(&[Kind::Frame as u8, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_record().unwrap_err(), WireError::TooLong(u32::MAX as usize));
        let mut d = Decoder::default();
        d.feed(&[Kind::Request as u8, 0, 1, 0, 0]);
        assert!(
            matches!(d.next_record(), Err(WireError::TooLong(_))),
            "JSON records are small"
        );
        let mut d = Decoder::default();
        d.feed(&[Kind::Frame as u8, 0, 0, 0, 3, 0, 1, 2]);
        assert!(matches!(d.next_record(), Err(WireError::Malformed(_))));
        let mut d = Decoder::default();
        d.feed(&[Kind::Accept as u8, 0, 0, 0, 2, b'{', b'x']);
        assert!(matches!(d.next_record(), Err(WireError::Malformed(_))));
        let mut d = Decoder::for_request();
        d.feed(&[Kind::Frame as u8]);
        assert!(
            matches!(d.next_record(), Err(WireError::Malformed(_))),
            "no frame before the request"
        );
        assert_eq!(challenge_of(b"RGRELAY0aaaa").unwrap_err(), WireError::BadMagic);
        let mut hello = MAGIC.to_vec();
        hello.extend([5u8; CHALLENGE_LEN]);
        assert_eq!(challenge_of(&hello).unwrap(), &[5u8; CHALLENGE_LEN]);
        // Noise never panics.
        let mut seed = 0x5EED_u64;
        for _ in 0..2000 {
            let mut d = Decoder::default();
            let len = (seed % 64) as usize;
            // Bytes 0..7: mostly known kinds, so the decoder gets past the first byte.
            let bytes: Vec<u8> = crate::ingest::rtmp::noise(&mut seed, len)
                .iter()
                .map(|b| b % 7)
                .collect();
            d.feed(&bytes);
            while let Ok(Some(_)) = d.next_record() {}
        }
    }
}
