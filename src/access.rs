//! Who may publish into a room and who may watch it: the one home of these decisions. RTMP, WHIP, the Cloud
//! API's robots and WHEP all call `authorize_publish` or `authorize_play`; nothing else checks UserSigs and
//! PrivateMapKeys for media. Pure functions of the configured apps, the credentials and the clock.

use crate::auth::{self, PrivateMapKey, PrivateMapKeyError, Privileges, UserSig, UserSigError};
use crate::config::AppConfig;
use crate::room::RoomRef;

/// Why a publisher or viewer is not let in: the app, the ids or the credentials. `ingest::Refusal` carries it for
/// publishers; WHEP answers it to viewers.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No app with this `sdkappid` is configured.
    #[error("unknown sdkappid {0}: no such app is configured on this gateway")]
    UnknownApp(u64),
    /// The room id is empty, too long or has characters outside letters, digits, `_` and `-`.
    #[error("invalid room id {0:?}: use 1-64 characters from letters, digits, '_' and '-'")]
    BadRoomId(String),
    /// The userid is empty, too long or has characters outside letters, digits, `_` and `-`.
    #[error("invalid userid {0:?}: use 1-32 characters from letters, digits, '_' and '-'")]
    BadUserId(String),
    /// The UserSig does not verify for this app and user.
    #[error("UserSig rejected: {0}")]
    UserSig(#[from] UserSigError),
    /// The app requires a PrivateMapKey and none was given; names the privileges it must grant.
    #[error("this app requires a privatemapkey granting {0} for the room")]
    PrivateMapKeyRequired(&'static str),
    /// A WHEP request came without its `Authorization: Bearer` UserSig.
    #[error("missing Authorization: Bearer <UserSig of the SessionID user>")]
    MissingToken,
    /// The PrivateMapKey (or the room grant in the UserSig) does not allow this room or action.
    #[error("{0}")]
    PrivateMapKey(#[from] PrivateMapKeyError),
}

impl Denied {
    /// The reason's name in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Denied::UnknownApp(_) => "unknown_app",
            Denied::BadRoomId(_) => "bad_room_id",
            Denied::BadUserId(_) => "bad_userid",
            Denied::UserSig(UserSigError::Expired { .. }) => "usersig_expired",
            Denied::UserSig(_) | Denied::MissingToken => "usersig",
            Denied::PrivateMapKeyRequired(_) | Denied::PrivateMapKey(_) => "privatemapkey",
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
) -> Result<&'a AppConfig, Denied> {
    let app = app_and_ids(apps, sdkappid, room, userid)?;
    let ticket = UserSig::verify(usersig, sdkappid, userid, &app.secret_key, now)?;
    // A UserSig that carries a room grant is bound by it (the console's share links carry a play-only one).
    if ticket.userbuf().is_some() {
        PrivateMapKey::verify(usersig, sdkappid, userid, &app.secret_key, now)?.allows_publish(room)?;
    }
    if app.require_private_map_key {
        let token = private_map_key
            .filter(|t| !t.is_empty())
            .ok_or(Denied::PrivateMapKeyRequired("enter room + send audio/video"))?;
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
) -> Result<&'a AppConfig, Denied> {
    let app = apps
        .iter()
        .find(|a| a.sdkappid == sdkappid)
        .ok_or(Denied::UnknownApp(sdkappid))?;
    if let Some(v) = viewer.filter(|v| !auth::is_valid_user_id(v)) {
        return Err(Denied::BadUserId(clip(v)));
    }
    if app.public_playback {
        return Ok(app);
    }
    let viewer = viewer.ok_or_else(|| Denied::BadUserId(String::new()))?;
    app_and_ids(apps, sdkappid, room, viewer)?;
    let usersig = usersig.filter(|t| !t.is_empty()).ok_or(Denied::MissingToken)?;
    let ticket = UserSig::verify(usersig, sdkappid, viewer, &app.secret_key, now)?;
    if ticket.userbuf().is_some() {
        PrivateMapKey::verify(usersig, sdkappid, viewer, &app.secret_key, now)?.allows(room, Privileges::PLAY)?;
    }
    if app.require_private_map_key {
        let token = private_map_key
            .filter(|t| !t.is_empty())
            .ok_or(Denied::PrivateMapKeyRequired(
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
) -> Result<&'a AppConfig, Denied> {
    let app = apps
        .iter()
        .find(|a| a.sdkappid == sdkappid)
        .ok_or(Denied::UnknownApp(sdkappid))?;
    if let RoomRef::Str(s) = room {
        if !auth::is_valid_str_room_id(s) {
            return Err(Denied::BadRoomId(clip(s)));
        }
    }
    if !auth::is_valid_user_id(userid) {
        return Err(Denied::BadUserId(clip(userid)));
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
            ..Default::default()
        }]
    }

    #[test]
    fn publish_rules() {
        let room = RoomRef::Str("r1".into());
        let sig = UserSig::generate(7, "key", "u1", 1000, 100, None);
        assert!(authorize_publish(&apps(false), 7, &room, "u1", &sig, None, 1050).is_ok());
        assert!(matches!(
            authorize_publish(&apps(false), 8, &room, "u1", &sig, None, 1050),
            Err(Denied::UnknownApp(8))
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
            Err(Denied::BadRoomId(_))
        ));
        assert!(matches!(
            authorize_publish(&apps(false), 7, &room, "u/1", &sig, None, 1050),
            Err(Denied::BadUserId(_))
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
            Err(Denied::PrivateMapKey(PrivateMapKeyError::Insufficient { .. }))
        ));
        let other = RoomRef::Str("r2".into());
        assert!(matches!(
            authorize_play(&apps(false), 7, &other, Some("v1"), Some(&play_only), None, 1050),
            Err(Denied::PrivateMapKey(PrivateMapKeyError::RoomMismatch { .. }))
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
            Err(Denied::BadUserId(_))
        ));
        assert!(authorize_play(&apps(false), 7, &room, Some("v1"), Some(&sig), None, 1050).is_ok());
        assert!(matches!(
            authorize_play(&apps(false), 7, &room, Some("v1"), None, None, 1050),
            Err(Denied::MissingToken)
        ));
        assert!(matches!(
            authorize_play(&apps(false), 7, &room, None, Some(&sig), None, 1050),
            Err(Denied::BadUserId(_))
        ));
        assert!(matches!(
            authorize_play(&apps(false), 7, &room, Some("v2"), Some(&sig), None, 1050),
            Err(Denied::UserSig(_))
        ));
        assert!(matches!(
            authorize_play(&apps(true), 7, &room, Some("v1"), Some(&sig), None, 1050),
            Err(Denied::PrivateMapKeyRequired(_))
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
            Err(Denied::PrivateMapKey(PrivateMapKeyError::Insufficient { .. }))
        ));
    }

    #[test]
    fn private_map_key_when_required() {
        let room = RoomRef::Str("r1".into());
        let sig = UserSig::generate(7, "key", "u1", 1000, 100, None);
        assert!(matches!(
            authorize_publish(&apps(true), 7, &room, "u1", &sig, None, 1050),
            Err(Denied::PrivateMapKeyRequired(_))
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
            Err(Denied::PrivateMapKey(PrivateMapKeyError::Insufficient { .. }))
        ));
        let other_room = grant(RoomRef::Str("r2".into()), 255);
        assert!(matches!(
            authorize_publish(&apps(true), 7, &room, "u1", &sig, Some(&other_room), 1050),
            Err(Denied::PrivateMapKey(PrivateMapKeyError::RoomMismatch { .. }))
        ));
    }
}
