//! The SRT stream id of a publisher: who it is and where it publishes, in one of two forms.
//!
//! - SRT's access-control form (`#!::` then `key=value` pairs separated by commas):
//!   `#!::r=<room>,u=<userid>,m=publish,sdkappid=<id>,usersig=<sig>[,privatemapkey=<key>]`. `r` is the room,
//!   `u` the userid, `m` must be `publish` (SRT's default mode is `request`, i.e. playing, which roomgate does not
//!   serve over SRT); `t`, if given, must be `stream`. Keys are case-insensitive; other keys are ignored.
//! - The RTMP stream-key form: `<room>?sdkappid=<id>&userid=<userid>&usersig=<sig>[&privatemapkey=<key>]`, the
//!   same text as after `rtmp://HOST/push/`.
//!
//! A stream id may arrive percent-encoded (ffmpeg 5.1 passes `srt://...?streamid=%23%21%3A%3A...` on as written;
//! later versions decode it): none of the ids, UserSigs or keys contain `%`, so an id with `%` is decoded first.

use std::collections::HashMap;

/// What a stream id asks for: the room and the identity parameters (`sdkappid`, `userid`, `usersig`,
/// `privatemapkey`), as the RTMP stream key gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamId {
    /// The room id as written.
    pub room: String,
    /// The identity parameters, keys lowercased.
    pub params: HashMap<String, String>,
}

/// Why a stream id cannot be used; each maps to an SRT reject code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// No stream id at all.
    #[error("no stream id: set streamid to #!::r=<room>,u=<userid>,m=publish,sdkappid=<id>,usersig=<sig> or <room>?sdkappid=<id>&userid=<userid>&usersig=<sig>")]
    Empty,
    /// The access-control form has a part that is not `key=value`; carries it (clipped).
    #[error("stream id part {0:?} is not key=value")]
    BadPair(String),
    /// `m` is not `publish` (or missing: SRT's default, `request`, asks to play); carries it.
    #[error("stream id mode {0:?}: SRT here is for publishing, set m=publish")]
    Mode(String),
    /// `t` is not `stream`; carries it.
    #[error("stream id type {0:?}: only t=stream is served")]
    Type(String),
}

/// Longest stream id SRT carries.
pub const MAX_LEN: usize = 512;

/// Read a stream id in either form.
pub fn parse(id: &str) -> Result<StreamId, StreamIdError> {
    let decoded = id.contains('%').then(|| {
        percent_encoding::percent_decode_str(id)
            .decode_utf8_lossy()
            .into_owned()
    });
    let id = decoded.as_deref().unwrap_or(id).trim();
    if id.is_empty() {
        return Err(StreamIdError::Empty);
    }
    let Some(pairs) = id.strip_prefix("#!::") else {
        let (room, params) = crate::ingest::rtmp::to_room::parse_stream_key(id, "");
        return Ok(StreamId { room, params });
    };
    let mut room = String::new();
    let mut params = HashMap::new();
    let mut mode = None;
    for part in pairs.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| StreamIdError::BadPair(crate::ingest::clip(part)))?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim();
        match k.as_str() {
            "r" => room = v.to_string(),
            "u" => {
                params.insert("userid".to_string(), v.to_string());
            }
            "m" => mode = Some(v.to_string()),
            "t" if v != "stream" => return Err(StreamIdError::Type(crate::ingest::clip(v))),
            "sdkappid" | "usersig" | "privatemapkey" | "userid" => {
                params.insert(k, v.to_string());
            }
            _ => {}
        }
    }
    match mode.as_deref() {
        Some("publish") => Ok(StreamId { room, params }),
        other => Err(StreamIdError::Mode(crate::ingest::clip(other.unwrap_or("request")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_give_the_same_identity() {
        let a = parse("#!::r=room_1,u=alice,m=publish,sdkappid=1400000001,usersig=eJx*a-b_").unwrap();
        let b = parse("room_1?sdkappid=1400000001&userid=alice&usersig=eJx*a-b_").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.room, "room_1");
        assert_eq!(a.params["userid"], "alice");
        assert_eq!(a.params["usersig"], "eJx*a-b_");
        let c = parse("#!::M=publish,R=room_1,U=alice,t=stream,SdkAppId=1400000001,usersig=eJx*a-b_,x=y").unwrap();
        assert_eq!(a, c);
        let encoded: String =
            url::form_urlencoded::byte_serialize(b"room_1?sdkappid=1400000001&userid=alice&usersig=eJx*a-b_").collect();
        assert_eq!(parse(&encoded).unwrap(), a);
        assert_eq!(
            parse("%23%21%3A%3Ar%3Droom_1%2Cu%3Dalice%2Cm%3Dpublish%2Csdkappid%3D1400000001%2Cusersig%3DeJx%2Aa-b_")
                .unwrap(),
            a
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(""), Err(StreamIdError::Empty));
        assert_eq!(parse("#!::r=a,u=b"), Err(StreamIdError::Mode("request".into())));
        assert_eq!(parse("#!::r=a,m=request"), Err(StreamIdError::Mode("request".into())));
        assert_eq!(
            parse("#!::r=a,m=publish,t=file"),
            Err(StreamIdError::Type("file".into()))
        );
        assert!(matches!(
            parse("#!::r=a,junk,m=publish"),
            Err(StreamIdError::BadPair(_))
        ));
        // The RTMP form never fails here: what is missing is found when the identity is checked.
        assert_eq!(parse("room").unwrap().params.len(), 0);
    }
}
