//! Sources: each one ends by publishing `media::Frame`s into a room as a virtual anchor.
//! What they share is here: who may publish (`authorize_publish`), who may watch (`authorize_play`), and why a
//! request is refused (`Refusal`). These two are the only places that check UserSigs and PrivateMapKeys for
//! media: RTMP, WHIP, the Cloud API's robots and WHEP all call them.

mod counters;
pub mod pull;
pub mod rtmp;
pub mod whip;

pub use counters::InputCounters;

use crate::auth::{self, PrivateMapKey, PrivateMapKeyError, Privileges, RoomRef, UserSig, UserSigError};
use crate::config::AppConfig;

/// Why a publish was refused or ended. The text is what the publisher is told (RTMP status description, HTTP
/// body) and what the log says; `label()` names it in metrics.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("missing {0} in the stream key: use <room>?sdkappid=..&userid=..&usersig=..")]
    MissingParameter(&'static str),
    #[error("sdkappid {0:?} is not a number")]
    BadSdkAppId(String),
    #[error("unknown sdkappid {0}: no such app is configured on this gateway")]
    UnknownApp(u64),
    #[error("invalid room id {0:?}: use 1-64 characters from letters, digits, '_' and '-'")]
    BadRoomId(String),
    #[error("invalid userid {0:?}: use 1-32 characters from letters, digits, '_' and '-'")]
    BadUserId(String),
    #[error("UserSig rejected: {0}")]
    UserSig(#[from] UserSigError),
    #[error("this app requires a privatemapkey granting {0} for the room")]
    PrivateMapKeyRequired(&'static str),
    #[error("missing Authorization: Bearer <UserSig of the SessionID user>")]
    MissingToken,
    #[error("{0}")]
    PrivateMapKey(#[from] PrivateMapKeyError),
    #[error("B-frames are not supported (the stream has a non-zero composition time): encode with profile baseline or without B-frames (x264: -profile:v baseline or -bf 0; OBS: Profile baseline / bframes=0)")]
    BFrames,
    #[error("video codec {0} is not supported: send H.264 (e.g. -c:v libx264 -profile:v baseline)")]
    VideoCodec(String),
    #[error("audio codec {0} is not supported: send AAC (or MP3)")]
    AudioCodec(String),
    #[error("malformed stream: {0}")]
    Malformed(String),
    #[error(
        "the picture is {width}x{height}, larger than the {max_pixels} pixels this gateway decodes (video.max_pixels)"
    )]
    PictureTooLarge { width: u32, height: u32, max_pixels: u64 },
    #[error("replaced by a new publisher with the same sdkappid, room and userid")]
    Replaced,
}

impl Refusal {
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::MissingParameter(_) | Refusal::BadSdkAppId(_) => "bad_parameter",
            Refusal::UnknownApp(_) => "unknown_app",
            Refusal::BadRoomId(_) => "bad_room_id",
            Refusal::BadUserId(_) => "bad_userid",
            Refusal::UserSig(UserSigError::Expired { .. }) => "usersig_expired",
            Refusal::UserSig(_) | Refusal::MissingToken => "usersig",
            Refusal::PrivateMapKeyRequired(_) | Refusal::PrivateMapKey(_) => "privatemapkey",
            Refusal::BFrames => "bframes",
            Refusal::VideoCodec(_) => "video_codec",
            Refusal::AudioCodec(_) => "audio_codec",
            Refusal::Malformed(_) => "malformed",
            Refusal::PictureTooLarge { .. } => "picture_size",
            Refusal::Replaced => "replaced",
        }
    }

    /// Count the refusal in `/metrics`.
    pub fn count(&self, source: &'static str) {
        metrics::counter!("roomgate_refusals_total", "source" => source, "reason" => self.label()).increment(1);
    }
}

/// Longest client-chosen text (ids, app names) echoed back in a refusal or a log line.
const ECHO_MAX: usize = 64;

/// At most `ECHO_MAX` characters of client-chosen text, marked when cut.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(ECHO_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Decide whether `userid` may publish into `room` of app `sdkappid`, at Unix time `now`.
pub fn authorize_publish<'a>(
    apps: &'a [AppConfig],
    sdkappid: u64,
    room: &RoomRef,
    userid: &str,
    usersig: &str,
    private_map_key: Option<&str>,
    now: u64,
) -> Result<&'a AppConfig, Refusal> {
    let app = app_and_ids(apps, sdkappid, room, userid)?;
    let ticket = UserSig::verify(usersig, sdkappid, userid, &app.secret_key, now)?;
    // A UserSig that carries a room grant is bound by it (the console's share links carry a play-only one).
    if ticket.userbuf().is_some() {
        PrivateMapKey::verify(usersig, sdkappid, userid, &app.secret_key, now)?.allows_publish(room)?;
    }
    if app.require_private_map_key {
        let token = private_map_key
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::PrivateMapKeyRequired("enter room + send audio/video"))?;
        PrivateMapKey::verify(token, sdkappid, userid, &app.secret_key, now)?.allows_publish(room)?;
    }
    Ok(app)
}

/// Decide whether `viewer` may watch `room` of app `sdkappid`: anyone on a `public_playback` app; otherwise a
/// UserSig of the viewer, and on apps that `require_private_map_key`, a PrivateMapKey granting enter room +
/// receive audio/video for the room (as TRTC asks of its own viewers).
pub fn authorize_play<'a>(
    apps: &'a [AppConfig],
    sdkappid: u64,
    room: &RoomRef,
    viewer: Option<&str>,
    usersig: Option<&str>,
    private_map_key: Option<&str>,
    now: u64,
) -> Result<&'a AppConfig, Refusal> {
    let app = apps
        .iter()
        .find(|a| a.sdkappid == sdkappid)
        .ok_or(Refusal::UnknownApp(sdkappid))?;
    if let Some(v) = viewer.filter(|v| !auth::is_valid_user_id(v)) {
        return Err(Refusal::BadUserId(clip(v)));
    }
    if app.public_playback {
        return Ok(app);
    }
    let viewer = viewer.ok_or_else(|| Refusal::BadUserId(String::new()))?;
    app_and_ids(apps, sdkappid, room, viewer)?;
    let usersig = usersig.filter(|t| !t.is_empty()).ok_or(Refusal::MissingToken)?;
    let ticket = UserSig::verify(usersig, sdkappid, viewer, &app.secret_key, now)?;
    if ticket.userbuf().is_some() {
        PrivateMapKey::verify(usersig, sdkappid, viewer, &app.secret_key, now)?.allows(room, Privileges::PLAY)?;
    }
    if app.require_private_map_key {
        let token = private_map_key
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::PrivateMapKeyRequired(
                "enter room + receive audio/video (?privatemapkey=)",
            ))?;
        PrivateMapKey::verify(token, sdkappid, viewer, &app.secret_key, now)?.allows(room, Privileges::PLAY)?;
    }
    Ok(app)
}

/// The app, and the id rules every participant follows.
fn app_and_ids<'a>(
    apps: &'a [AppConfig],
    sdkappid: u64,
    room: &RoomRef,
    userid: &str,
) -> Result<&'a AppConfig, Refusal> {
    let app = apps
        .iter()
        .find(|a| a.sdkappid == sdkappid)
        .ok_or(Refusal::UnknownApp(sdkappid))?;
    if let RoomRef::Str(s) = room {
        if !auth::is_valid_str_room_id(s) {
            return Err(Refusal::BadRoomId(clip(s)));
        }
    }
    if !auth::is_valid_user_id(userid) {
        return Err(Refusal::BadUserId(clip(userid)));
    }
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps(require: bool) -> Vec<AppConfig> {
        vec![AppConfig {
            sdkappid: 7,
            secret_key: "key".into(),
            require_private_map_key: require,
            public_playback: false,
            name: String::new(),
            callback_url: String::new(),
            callback_key: String::new(),
            opus_complexity: None,
            strict_h264_profile: false,
        }]
    }

    #[test]
    fn publish_rules() {
        let room = RoomRef::Str("r1".into());
        let sig = UserSig::generate(7, "key", "u1", 1000, 100, None);
        assert!(authorize_publish(&apps(false), 7, &room, "u1", &sig, None, 1050).is_ok());
        assert!(matches!(
            authorize_publish(&apps(false), 8, &room, "u1", &sig, None, 1050),
            Err(Refusal::UnknownApp(8))
        ));
        assert!(matches!(
            authorize_publish(
                &apps(false),
                7,
                &RoomRef::Str("bad room".into()),
                "u1",
                &sig,
                None,
                1050
            ),
            Err(Refusal::BadRoomId(_))
        ));
        assert!(matches!(
            authorize_publish(&apps(false), 7, &room, "u/1", &sig, None, 1050),
            Err(Refusal::BadUserId(_))
        ));
        let e = authorize_publish(&apps(false), 7, &room, "u1", &sig, None, 2000).unwrap_err();
        assert_eq!(e.label(), "usersig_expired");
        assert!(e.to_string().contains("expired"));
    }

    #[test]
    fn echoed_ids_are_clipped() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(1000);
        let c = clip(&long);
        assert_eq!(c.chars().count(), 65);
        assert!(c.ends_with('…'));
        let e = authorize_publish(&apps(false), 7, &RoomRef::Str("x".repeat(70_000)), "u", "s", None, 0).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn a_usersig_carrying_a_grant_is_bound_by_it() {
        let room = RoomRef::Str("r1".into());
        let play_only = {
            let buf = PrivateMapKey {
                userid: "v1".into(),
                sdkappid: 7,
                room: room.clone(),
                expires_at: 1100,
                privileges: Privileges(Privileges::PLAY),
            }
            .to_userbuf();
            UserSig::generate(7, "key", "v1", 1000, 100, Some(&buf))
        };
        // It plays in its room, on an app that requires no PrivateMapKey...
        assert!(authorize_play(&apps(false), 7, &room, Some("v1"), Some(&play_only), None, 1050).is_ok());
        // ...but publishes nowhere, and plays nowhere else.
        assert!(matches!(
            authorize_publish(&apps(false), 7, &room, "v1", &play_only, None, 1050),
            Err(Refusal::PrivateMapKey(PrivateMapKeyError::Insufficient { .. }))
        ));
        let other = RoomRef::Str("r2".into());
        assert!(matches!(
            authorize_play(&apps(false), 7, &other, Some("v1"), Some(&play_only), None, 1050),
            Err(Refusal::PrivateMapKey(PrivateMapKeyError::RoomMismatch { .. }))
        ));
    }

    #[test]
    fn play_rules() {
        let room = RoomRef::Str("r1".into());
        let sig = UserSig::generate(7, "key", "v1", 1000, 100, None);
        let mut public = apps(false);
        public[0].public_playback = true;
        assert!(authorize_play(&public, 7, &room, None, None, None, 1050).is_ok());
        assert!(matches!(
            authorize_play(&public, 7, &room, Some("bad id"), None, None, 1050),
            Err(Refusal::BadUserId(_))
        ));
        assert!(authorize_play(&apps(false), 7, &room, Some("v1"), Some(&sig), None, 1050).is_ok());
        assert!(matches!(
            authorize_play(&apps(false), 7, &room, Some("v1"), None, None, 1050),
            Err(Refusal::MissingToken)
        ));
        assert!(matches!(
            authorize_play(&apps(false), 7, &room, None, Some(&sig), None, 1050),
            Err(Refusal::BadUserId(_))
        ));
        assert!(matches!(
            authorize_play(&apps(false), 7, &room, Some("v2"), Some(&sig), None, 1050),
            Err(Refusal::UserSig(_))
        ));
        assert!(matches!(
            authorize_play(&apps(true), 7, &room, Some("v1"), Some(&sig), None, 1050),
            Err(Refusal::PrivateMapKeyRequired(_))
        ));
        let grant = |privileges: u32| {
            let buf = PrivateMapKey {
                userid: "v1".into(),
                sdkappid: 7,
                room: room.clone(),
                expires_at: 1100,
                privileges: Privileges(privileges),
            }
            .to_userbuf();
            UserSig::generate(7, "key", "v1", 1000, 100, Some(&buf))
        };
        let play = grant(Privileges::PLAY);
        assert!(authorize_play(&apps(true), 7, &room, Some("v1"), Some(&sig), Some(&play), 1050).is_ok());
        let publish = grant(Privileges::PUBLISH);
        assert!(matches!(
            authorize_play(&apps(true), 7, &room, Some("v1"), Some(&sig), Some(&publish), 1050),
            Err(Refusal::PrivateMapKey(PrivateMapKeyError::Insufficient { .. }))
        ));
    }

    #[test]
    fn private_map_key_when_required() {
        let room = RoomRef::Str("r1".into());
        let sig = UserSig::generate(7, "key", "u1", 1000, 100, None);
        assert!(matches!(
            authorize_publish(&apps(true), 7, &room, "u1", &sig, None, 1050),
            Err(Refusal::PrivateMapKeyRequired(_))
        ));
        let grant = |room: RoomRef, privileges: u32| {
            let buf = PrivateMapKey {
                userid: "u1".into(),
                sdkappid: 7,
                room,
                expires_at: 1100,
                privileges: Privileges(privileges),
            }
            .to_userbuf();
            UserSig::generate(7, "key", "u1", 1000, 100, Some(&buf))
        };
        let ok = grant(room.clone(), 255);
        assert!(authorize_publish(&apps(true), 7, &room, "u1", &sig, Some(&ok), 1050).is_ok());
        let view_only = grant(room.clone(), 42);
        assert!(matches!(
            authorize_publish(&apps(true), 7, &room, "u1", &sig, Some(&view_only), 1050),
            Err(Refusal::PrivateMapKey(PrivateMapKeyError::Insufficient { .. }))
        ));
        let other_room = grant(RoomRef::Str("r2".into()), 255);
        assert!(matches!(
            authorize_publish(&apps(true), 7, &room, "u1", &sig, Some(&other_room), 1050),
            Err(Refusal::PrivateMapKey(PrivateMapKeyError::RoomMismatch { .. }))
        ));
    }
}
