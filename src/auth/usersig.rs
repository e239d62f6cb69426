//! UserSig v2 (TLSSigAPIv2): the ticket a TRTC client presents to prove it may act as a user id of an app.
//!
//! Format: `base64url*( zlib( JSON{TLS.ver, TLS.identifier, TLS.sdkappid, TLS.time, TLS.expire, [TLS.userbuf],
//! TLS.sig} ) )`, where `TLS.sig = base64(HMAC-SHA256(secret_key, "TLS.identifier:..\nTLS.sdkappid:..\n
//! TLS.time:..\nTLS.expire:..\n[TLS.userbuf:..\n]"))` and the base64 variant maps `+/=` to `*-_`.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;
use subtle::ConstantTimeEq;

/// Longest token accepted (a PrivateMapKey with a 64-byte room is about 400 characters).
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest inflated JSON accepted: guards against zlib bombs.
const MAX_JSON_LEN: u64 = 16 * 1024;

/// Standard alphabet, padding optional on input (some SDKs strip it).
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a UserSig was not accepted. Each variant says something different to the user, because the usual
/// mistakes (key of another app, token for another user, expired token) need different fixes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserSigError {
    /// The token is empty or only whitespace.
    #[error("UserSig is empty")]
    Empty,
    /// The token is longer than the limit; carries its length in bytes.
    #[error("UserSig is too long ({0} bytes)")]
    TooLong(usize),
    /// The token does not decode as TRTC's base64url variant.
    #[error("UserSig is not valid base64url: {0}")]
    Base64(String),
    /// The decoded bytes are not a single zlib stream, or inflate too large.
    #[error("UserSig does not inflate (not zlib data): {0}")]
    Inflate(String),
    /// The inflated content is not JSON.
    #[error("UserSig content is not valid JSON: {0}")]
    Json(String),
    /// A required `TLS.*` field is absent or not a string or number; names the field.
    #[error("UserSig lacks field {0}")]
    MissingField(&'static str),
    /// `TLS.ver` is not `2.0`.
    #[error("UserSig version {0:?} is not supported (need TLS.ver 2.0)")]
    Version(String),
    /// `TLS.sdkappid` is `found`, not the `expected` app.
    #[error("UserSig was issued for sdkappid {found}, not {expected}")]
    SdkAppIdMismatch {
        /// The app the request is for.
        expected: u64,
        /// `TLS.sdkappid` of the ticket.
        found: u64,
    },
    /// `TLS.identifier` is `found`, not the `expected` user id.
    #[error("UserSig was issued for user id {found:?}, not {expected:?}")]
    IdentifierMismatch {
        /// The user id the request presents.
        expected: String,
        /// `TLS.identifier` of the ticket.
        found: String,
    },
    /// `TLS.sig` does not match the HMAC under the app's secret key.
    #[error("UserSig signature does not match: it was generated with another secret key (is the key of another SDKAppID in use?)")]
    SignatureMismatch,
    /// The ticket expired at `expired_at` (Unix seconds), before `now`.
    #[error("UserSig expired at {expired_at} (now {now}); generate a new one")]
    Expired {
        /// `TLS.time + TLS.expire`, Unix seconds.
        expired_at: u64,
        /// The time of the check, Unix seconds.
        now: u64,
    },
}

/// The fields of a decoded UserSig, before or after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSig {
    /// `TLS.sdkappid`: the app the ticket was issued for.
    pub sdkappid: u64,
    /// `TLS.identifier`: the user id the ticket was issued for.
    pub identifier: String,
    /// Issue time, Unix seconds.
    pub time: u64,
    /// Validity in seconds, relative to `time`.
    pub expire: u64,
    /// `TLS.userbuf` exactly as found (standard base64), present in PrivateMapKeys.
    pub userbuf_b64: Option<String>,
    sig: String,
}

impl UserSig {
    /// Last second at which the ticket is still valid.
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }

    /// The raw bytes of `TLS.userbuf`, if any.
    pub fn userbuf(&self) -> Option<Vec<u8>> {
        self.userbuf_b64
            .as_deref()
            .and_then(|b| LENIENT_STANDARD.decode(b).ok())
    }

    /// Undo the base64 variant and zlib, parse the JSON. Checks nothing about validity.
    pub fn decode(token: &str) -> Result<UserSig, UserSigError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(UserSigError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(UserSigError::TooLong(token.len()));
        }
        let std_b64: String = token
            .chars()
            .map(|c| match c {
                '*' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect();
        let compressed = LENIENT_STANDARD
            .decode(std_b64.as_bytes())
            .map_err(|e| UserSigError::Base64(e.to_string()))?;
        let mut json = Vec::new();
        let mut inflater = flate2::bufread::ZlibDecoder::new(&compressed[..]);
        (&mut inflater)
            .take(MAX_JSON_LEN + 1)
            .read_to_end(&mut json)
            .map_err(|e| UserSigError::Inflate(e.to_string()))?;
        if json.len() as u64 > MAX_JSON_LEN {
            return Err(UserSigError::Inflate("inflated content too large".into()));
        }
        if !inflater.get_ref().is_empty() {
            return Err(UserSigError::Inflate("trailing bytes after the zlib stream".into()));
        }
        let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| UserSigError::Json(e.to_string()))?;
        let ver = str_field(&v, "TLS.ver")?;
        if ver != "2.0" {
            return Err(UserSigError::Version(ver));
        }
        Ok(UserSig {
            sdkappid: u64_field(&v, "TLS.sdkappid")?,
            identifier: str_field(&v, "TLS.identifier")?,
            time: u64_field(&v, "TLS.time")?,
            expire: u64_field(&v, "TLS.expire")?,
            userbuf_b64: match v.get("TLS.userbuf") {
                None | Some(serde_json::Value::Null) => None,
                Some(_) => Some(str_field(&v, "TLS.userbuf")?),
            },
            sig: str_field(&v, "TLS.sig")?,
        })
    }

    /// Decode and verify a ticket for `(sdkappid, userid)` with the app's secret key at time `now`.
    pub fn verify(token: &str, sdkappid: u64, userid: &str, key: &str, now: u64) -> Result<UserSig, UserSigError> {
        let sig = Self::decode(token)?;
        if sig.sdkappid != sdkappid {
            return Err(UserSigError::SdkAppIdMismatch {
                expected: sdkappid,
                found: sig.sdkappid,
            });
        }
        if sig.identifier != userid {
            return Err(UserSigError::IdentifierMismatch {
                expected: userid.to_string(),
                found: sig.identifier,
            });
        }
        let expected = hmac_sig(
            key,
            &sig.identifier,
            sig.sdkappid,
            sig.time,
            sig.expire,
            sig.userbuf_b64.as_deref(),
        );
        let presented = LENIENT_STANDARD
            .decode(sig.sig.as_bytes())
            .map_err(|_| UserSigError::SignatureMismatch)?;
        if presented.len() != expected.len() || !bool::from(presented.ct_eq(&expected)) {
            return Err(UserSigError::SignatureMismatch);
        }
        if now > sig.expires_at() {
            return Err(UserSigError::Expired {
                expired_at: sig.expires_at(),
                now,
            });
        }
        Ok(sig)
    }

    /// Generate a ticket the way Tencent's libraries do (zlib default level, standard JSON field names).
    pub fn generate(sdkappid: u64, key: &str, userid: &str, now: u64, expire: u64, userbuf: Option<&[u8]>) -> String {
        let userbuf_b64 = userbuf.map(|b| STANDARD.encode(b));
        let sig = STANDARD.encode(hmac_sig(key, userid, sdkappid, now, expire, userbuf_b64.as_deref()));
        let mut obj = serde_json::Map::new();
        obj.insert("TLS.ver".into(), "2.0".into());
        obj.insert("TLS.identifier".into(), userid.into());
        obj.insert("TLS.sdkappid".into(), sdkappid.into());
        obj.insert("TLS.expire".into(), expire.into());
        obj.insert("TLS.time".into(), now.into());
        if let Some(b) = userbuf_b64 {
            obj.insert("TLS.userbuf".into(), b.into());
        }
        obj.insert("TLS.sig".into(), sig.into());
        let json = serde_json::Value::Object(obj).to_string();
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, json.as_bytes()).expect("writing to a Vec cannot fail");
        sig_base64(&enc.finish().expect("writing to a Vec cannot fail"))
    }
}

/// TRTC's URL-safe base64 of a UserSig's compressed body: standard base64 with `+/=` written as `*-_`.
fn sig_base64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

fn hmac_sig(key: &str, identifier: &str, sdkappid: u64, time: u64, expire: u64, userbuf_b64: Option<&str>) -> Vec<u8> {
    let mut content =
        format!("TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n");
    if let Some(b) = userbuf_b64 {
        content.push_str("TLS.userbuf:");
        content.push_str(b);
        content.push('\n');
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(content.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn str_field(v: &serde_json::Value, name: &'static str) -> Result<String, UserSigError> {
    match v.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        _ => Err(UserSigError::MissingField(name)),
    }
}

/// Numbers may come as JSON numbers or numeric strings depending on the generating library.
fn u64_field(v: &serde_json::Value, name: &'static str) -> Result<u64, UserSigError> {
    match v.get(name) {
        Some(serde_json::Value::Number(n)) => n.as_u64().ok_or(UserSigError::MissingField(name)),
        Some(serde_json::Value::String(s)) => s.parse().map_err(|_| UserSigError::MissingField(name)),
        _ => Err(UserSigError::MissingField(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }
    #[derive(serde::Deserialize)]
    struct Vector {
        kind: String,
        sdkappid: u64,
        key: String,
        userid: String,
        time: u64,
        expire: u64,
        usersig: Option<String>,
        valid_at: Option<u64>,
        expired_at: Option<u64>,
    }

    fn vectors() -> Vec<Vector> {
        let text = include_str!("../../testdata/usersig.json");
        serde_json::from_str::<Vectors>(text).unwrap().vectors
    }

    #[test]
    fn official_vectors_verify_and_expire() {
        let mut n = 0;
        for v in vectors().into_iter().filter(|v| v.kind == "usersig") {
            let token = v.usersig.as_deref().unwrap();
            let valid_at = v.valid_at.unwrap();
            let expired_at = v.expired_at.unwrap();
            let sig = UserSig::verify(token, v.sdkappid, &v.userid, &v.key, valid_at).unwrap();
            assert_eq!((sig.time, sig.expire), (v.time, v.expire));
            // Valid up to and including time + expire.
            UserSig::verify(token, v.sdkappid, &v.userid, &v.key, v.time + v.expire).unwrap();
            assert_eq!(
                UserSig::verify(token, v.sdkappid, &v.userid, &v.key, expired_at),
                Err(UserSigError::Expired {
                    expired_at: v.time + v.expire,
                    now: expired_at
                })
            );
            n += 1;
        }
        assert!(n >= 3, "expected the official usersig vectors");
    }

    #[test]
    fn rejects_wrong_key_appid_user_and_flipped_bytes() {
        for v in vectors().into_iter().filter(|v| v.kind == "usersig") {
            let token = v.usersig.as_deref().unwrap();
            let now = v.valid_at.unwrap();
            assert_eq!(
                UserSig::verify(token, v.sdkappid, &v.userid, "another-key", now),
                Err(UserSigError::SignatureMismatch)
            );
            assert!(matches!(
                UserSig::verify(token, v.sdkappid + 1, &v.userid, &v.key, now),
                Err(UserSigError::SdkAppIdMismatch { .. })
            ));
            assert!(matches!(
                UserSig::verify(token, v.sdkappid, "someone_else", &v.key, now),
                Err(UserSigError::IdentifierMismatch { .. })
            ));
            // Flip each position in turn: none may verify.
            let bytes = token.as_bytes();
            for i in 0..bytes.len() {
                let mut t = bytes.to_vec();
                t[i] = if t[i] == b'A' { b'B' } else { b'A' };
                let t = String::from_utf8(t).unwrap();
                assert!(
                    UserSig::verify(&t, v.sdkappid, &v.userid, &v.key, now).is_err(),
                    "flip at {i} verified"
                );
            }
        }
    }

    #[test]
    fn reference_python_vector() {
        // trtc-api.md §2.2: made with Tencent's Python library at time 1700000000.
        let key = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
        let t = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__";
        UserSig::verify(t, 1400000000, "xiaojun", key, 1715552000).unwrap();
        assert!(UserSig::verify(t, 1400000000, "xiaojun", key, 1715552001).is_err());
    }

    #[test]
    fn generated_tokens_round_trip_and_match_vectors() {
        for v in vectors().into_iter().filter(|v| v.kind == "usersig") {
            let ours = UserSig::generate(v.sdkappid, &v.key, &v.userid, v.time, v.expire, None);
            UserSig::verify(&ours, v.sdkappid, &v.userid, &v.key, v.time).unwrap();
            let theirs = UserSig::decode(v.usersig.as_deref().unwrap()).unwrap();
            assert_eq!(
                UserSig::decode(&ours).unwrap(),
                theirs,
                "same fields and signature as the official library"
            );
        }
    }

    #[test]
    fn accepts_uncompressed_zlib_and_compact_json() {
        // Go's library uses zlib.NoCompression and compact JSON with a trailing newline.
        let key = "k";
        let sig = STANDARD.encode(hmac_sig(key, "u1", 7, 100, 50, None));
        let json = format!(
            "{{\"TLS.ver\":\"2.0\",\"TLS.identifier\":\"u1\",\"TLS.sdkappid\":7,\"TLS.expire\":50,\"TLS.time\":100,\"TLS.sig\":\"{sig}\"}}\n"
        );
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::none());
        std::io::Write::write_all(&mut enc, json.as_bytes()).unwrap();
        let token = sig_base64(&enc.finish().unwrap());
        assert!(token.starts_with("eAE"));
        UserSig::verify(&token, 7, "u1", key, 120).unwrap();
    }

    #[test]
    fn garbage_is_a_clean_error() {
        assert_eq!(UserSig::decode(""), Err(UserSigError::Empty));
        assert!(matches!(UserSig::decode("!!!"), Err(UserSigError::Base64(_))));
        assert!(matches!(UserSig::decode("AAAA"), Err(UserSigError::Inflate(_))));
        assert!(matches!(
            UserSig::decode(&"A".repeat(9000)),
            Err(UserSigError::TooLong(_))
        ));
    }
}
