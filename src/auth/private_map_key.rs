//! PrivateMapKey: a UserSig whose `TLS.userbuf` grants one user privileges in one room ("advanced permission
//! control"). The userbuf is big-endian binary:
//! `ver u8 | account_len u16 | account | sdkappid u32 | room_num u32 | expires_at u32 | privileges u32 |
//!  account_type u32 | [room_str_len u16 | room_str]` (the string room only when `ver == 1`).

use super::usersig::{UserSig, UserSigError};
use crate::room::RoomRef;

/// The privilege bits of `dwPrivilegeMap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges(pub u32);

impl Privileges {
    /// May create the room.
    pub const CREATE_ROOM: u32 = 1;
    /// May enter the room.
    pub const ENTER_ROOM: u32 = 2;
    /// May send audio.
    pub const SEND_AUDIO: u32 = 4;
    /// May receive audio.
    pub const RECV_AUDIO: u32 = 8;
    /// May send video.
    pub const SEND_VIDEO: u32 = 16;
    /// May receive video.
    pub const RECV_VIDEO: u32 = 32;
    /// May send the auxiliary (sub) stream.
    pub const SEND_SUB: u32 = 64;
    /// May receive the auxiliary (sub) stream.
    pub const RECV_SUB: u32 = 128;
    /// What a publishing anchor needs: enter the room, send audio and video.
    pub const PUBLISH: u32 = Self::ENTER_ROOM | Self::SEND_AUDIO | Self::SEND_VIDEO;
    /// What a viewer needs: enter the room, receive audio and video.
    pub const PLAY: u32 = Self::ENTER_ROOM | Self::RECV_AUDIO | Self::RECV_VIDEO;

    /// What a set of bits means, for error messages.
    pub fn describe(bits: u32) -> &'static str {
        match bits {
            Self::PUBLISH => "enter room + send audio + send video",
            Self::PLAY => "enter room + receive audio + receive video",
            _ => "more privileges",
        }
    }

    /// Whether every bit of `bits` is granted.
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
}

/// A decoded and verified PrivateMapKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateMapKey {
    /// The user the grant is for (the userbuf's account).
    pub userid: String,
    /// The app the grant is for.
    pub sdkappid: u32,
    /// The room granted: numeric when the userbuf is version 0, a string room when version 1.
    pub room: RoomRef,
    /// Absolute expiry of the grant, Unix seconds.
    pub expires_at: u32,
    /// The granted privilege bits (`dwPrivilegeMap`).
    pub privileges: Privileges,
}

/// Why a PrivateMapKey was not accepted or does not grant what is asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivateMapKeyError {
    /// The ticket itself failed UserSig verification.
    #[error("PrivateMapKey: {0}")]
    Ticket(#[from] UserSigError),
    /// The ticket is a valid UserSig but carries no `TLS.userbuf` grant.
    #[error("PrivateMapKey carries no room grant (no TLS.userbuf)")]
    NoUserbuf,
    /// The userbuf is truncated, not UTF-8 or of an unknown version.
    #[error("PrivateMapKey grant is malformed: {0}")]
    Malformed(&'static str),
    /// The grant names user `found`, not the `expected` one presenting it.
    #[error("PrivateMapKey is for user {found:?}, not {expected:?}")]
    UserMismatch {
        /// User id of the request presenting the key.
        expected: String,
        /// User id the grant was made for.
        found: String,
    },
    /// The grant's own expiry (`expired_at`, Unix seconds) is before `now`.
    #[error("PrivateMapKey grant expired at {expired_at} (now {now})")]
    Expired {
        /// The grant's expiry, Unix seconds.
        expired_at: u32,
        /// The time of the check, Unix seconds.
        now: u64,
    },
    /// The grant is for room `found`, not the `expected` room.
    #[error("PrivateMapKey is for {found}, not {expected}")]
    RoomMismatch {
        /// The room the request is for.
        expected: RoomRef,
        /// The room the grant names.
        found: RoomRef,
    },
    /// The grant's privilege bits `granted` lack some of the `needed` ones.
    #[error("PrivateMapKey grants privileges {granted:#x}; this needs {needed:#x} ({})", Privileges::describe(*needed))]
    Insufficient {
        /// The grant's `dwPrivilegeMap` bits ([`Privileges`] constants).
        granted: u32,
        /// The bits the action needs, e.g. [`Privileges::PLAY`].
        needed: u32,
    },
}

impl PrivateMapKey {
    /// Parse the binary userbuf.
    pub fn parse_userbuf(b: &[u8]) -> Result<PrivateMapKey, PrivateMapKeyError> {
        let mut r = Reader(b);
        let ver = r.u8()?;
        let account_len = r.u16()? as usize;
        let userid = String::from_utf8(r.take(account_len)?.to_vec())
            .map_err(|_| PrivateMapKeyError::Malformed("user id is not UTF-8"))?;
        let sdkappid = r.u32()?;
        let room_num = r.u32()?;
        let expires_at = r.u32()?;
        let privileges = Privileges(r.u32()?);
        let _account_type = r.u32()?;
        let room = match ver {
            0 => RoomRef::Num(room_num),
            1 => {
                let len = r.u16()? as usize;
                let s = r.take(len)?;
                RoomRef::Str(
                    String::from_utf8(s.to_vec()).map_err(|_| PrivateMapKeyError::Malformed("room is not UTF-8"))?,
                )
            }
            _ => return Err(PrivateMapKeyError::Malformed("unknown userbuf version")),
        };
        Ok(PrivateMapKey {
            userid,
            sdkappid,
            room,
            expires_at,
            privileges,
        })
    }

    /// Build the binary userbuf (for generating keys in tests and tools).
    pub fn to_userbuf(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.push(matches!(self.room, RoomRef::Str(_)) as u8);
        b.extend_from_slice(&(self.userid.len() as u16).to_be_bytes());
        b.extend_from_slice(self.userid.as_bytes());
        b.extend_from_slice(&self.sdkappid.to_be_bytes());
        b.extend_from_slice(
            &match self.room {
                RoomRef::Num(n) => n,
                RoomRef::Str(_) => 0,
            }
            .to_be_bytes(),
        );
        b.extend_from_slice(&self.expires_at.to_be_bytes());
        b.extend_from_slice(&self.privileges.0.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        if let RoomRef::Str(s) = &self.room {
            b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b
    }

    /// Verify the ticket (signature, app, user, expiry) and decode its grant.
    pub fn verify(
        token: &str,
        sdkappid: u64,
        userid: &str,
        key: &str,
        now: u64,
    ) -> Result<PrivateMapKey, PrivateMapKeyError> {
        let ticket = UserSig::verify(token, sdkappid, userid, key, now)?;
        let buf = ticket.userbuf().ok_or(PrivateMapKeyError::NoUserbuf)?;
        let pmk = Self::parse_userbuf(&buf)?;
        if pmk.userid != userid {
            return Err(PrivateMapKeyError::UserMismatch {
                expected: userid.into(),
                found: pmk.userid,
            });
        }
        if (pmk.expires_at as u64) < now {
            return Err(PrivateMapKeyError::Expired {
                expired_at: pmk.expires_at,
                now,
            });
        }
        Ok(pmk)
    }

    /// Check that this grant lets its user publish into `room`.
    pub fn allows_publish(&self, room: &RoomRef) -> Result<(), PrivateMapKeyError> {
        self.allows(room, Privileges::PUBLISH)
    }

    /// Check that this grant gives its user the `needed` privilege bits in `room`.
    pub fn allows(&self, room: &RoomRef, needed: u32) -> Result<(), PrivateMapKeyError> {
        if &self.room != room {
            return Err(PrivateMapKeyError::RoomMismatch {
                expected: room.clone(),
                found: self.room.clone(),
            });
        }
        if !self.privileges.has(needed) {
            return Err(PrivateMapKeyError::Insufficient {
                granted: self.privileges.0,
                needed,
            });
        }
        Ok(())
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PrivateMapKeyError> {
        if self.0.len() < n {
            return Err(PrivateMapKeyError::Malformed("truncated"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, PrivateMapKeyError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PrivateMapKeyError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, PrivateMapKeyError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn reference_userbufs() {
        // trtc-api.md §2.3, made with Tencent's Python library.
        let num =
            PrivateMapKey::parse_userbuf(&hex("0000077869616f6a756e53724e000000271065554280000000ff00000000")).unwrap();
        assert_eq!(num.userid, "xiaojun");
        assert_eq!(num.sdkappid, 1400000000);
        assert_eq!(num.room, RoomRef::Num(10000));
        assert_eq!(num.expires_at, 1700000000 + 86400);
        assert_eq!(num.privileges, Privileges(255));
        let s = hex("0100077869616f6a756e53724e000000000065554280000000ff000000000006726f6f6d5f31");
        let st = PrivateMapKey::parse_userbuf(&s).unwrap();
        assert_eq!(st.room, RoomRef::Str("room_1".into()));
        assert_eq!(st.to_userbuf(), s);
        assert!(PrivateMapKey::parse_userbuf(&s[..s.len() - 1]).is_err());
    }

    #[test]
    fn official_vectors() {
        let v: serde_json::Value = serde_json::from_str(include_str!("../../testdata/usersig.json")).unwrap();
        let mut n = 0;
        for v in v["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["kind"].as_str().unwrap().starts_with("privatemapkey"))
        {
            let (app, user, key) = (
                v["sdkappid"].as_u64().unwrap(),
                v["userid"].as_str().unwrap(),
                v["key"].as_str().unwrap(),
            );
            let (time, expire) = (v["time"].as_u64().unwrap(), v["expire"].as_u64().unwrap());
            let token = v["privatemapkey"].as_str().unwrap();
            let pmk = PrivateMapKey::verify(token, app, user, key, time + 1).unwrap();
            let room = match &v["room"] {
                serde_json::Value::String(s) => RoomRef::Str(s.clone()),
                n => RoomRef::Num(n.as_u64().unwrap() as u32),
            };
            assert_eq!(pmk.room, room);
            assert_eq!(pmk.privileges.0 as u64, v["privilege_map"].as_u64().unwrap());
            assert_eq!(pmk.expires_at as u64, time + expire);
            // 255 may publish; 42 (enter + receive) may not.
            let publish = pmk.allows_publish(&room);
            assert_eq!(publish.is_ok(), pmk.privileges.has(Privileges::PUBLISH));
            // A grant for numeric room N never opens string room "N".
            if let RoomRef::Num(n) = room {
                assert!(matches!(
                    pmk.allows_publish(&RoomRef::Str(n.to_string())),
                    Err(PrivateMapKeyError::RoomMismatch { .. })
                ));
            }
            assert!(PrivateMapKey::verify(token, app, user, key, time + expire + 1).is_err());
            assert!(PrivateMapKey::verify(token, app, user, "wrong", time + 1).is_err());
            n += 1;
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn plain_usersig_is_not_a_grant() {
        let t = UserSig::generate(1, "k", "u", 100, 100, None);
        assert_eq!(
            PrivateMapKey::verify(&t, 1, "u", "k", 150),
            Err(PrivateMapKeyError::NoUserbuf)
        );
    }
}
