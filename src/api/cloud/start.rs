//! `StartStreamIngest`: a robot anchor, authorized exactly as an RTMP or WHIP publisher with the same credentials
//! would be, starts playing a source into a room.

use super::params::Params;
use super::{Caller, CloudError};
use crate::access::{authorize_publish, Denied};
use crate::config::Config;
use crate::ingest::pull::{AudioEncodeParams, TaskSpec, VideoEncodeParams};
use crate::room::RoomRef;
use serde_json::{json, Map, Value};

/// A parsed StartStreamIngest: the task to start.
#[derive(Debug)]
pub(super) struct Start {
    spec: TaskSpec,
}

impl Start {
    /// Validate the parameters into a task spec (robot identity and UserSig included) at Unix time `now`.
    pub fn parse(params: &Map<String, Value>, config: &Config, now: u64) -> Result<Start, CloudError> {
        let mut p = Params::new(params);
        let sdkappid = p.u64("SdkAppId")?;
        config.app(sdkappid).ok_or_else(|| {
            CloudError::invalid(
                "SdkAppId",
                format!("SdkAppId {sdkappid} is not configured on this gateway"),
            )
        })?;
        let room_id = match p.value("RoomId") {
            None => return Err(CloudError::missing("RoomId")),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(CloudError::body("RoomId must be a string")),
        };
        let room_id_type = p.int("RoomIdType", 0, 1)?.unwrap_or(1) as u8;
        let room = room_ref(&room_id, room_id_type)?;
        let user_id = p.required_str("UserId")?;
        let user_sig = p.required_str("UserSig")?;
        let pmk = p.str("PrivateMapKey")?.filter(|s| !s.is_empty());
        authorize_publish(&config.apps, sdkappid, &room, &user_id, &user_sig, pmk.as_deref(), now)
            .map_err(|d| denied(d, &user_id))?;
        let source_url = match p.value("SourceUrl") {
            None => None,
            Some(Value::Array(list)) => match list.as_slice() {
                [Value::String(u)] => Some(u.clone()),
                _ => {
                    return Err(CloudError::invalid(
                        "SourceUrl",
                        "SourceUrl must hold exactly one URL string (it is deprecated: use StreamUrl)",
                    ))
                }
            },
            Some(_) => return Err(CloudError::body("SourceUrl must be an array of strings")),
        };
        let stream_url = p
            .str("StreamUrl")?
            .or(source_url)
            .ok_or_else(|| CloudError::missing("StreamUrl"))?;
        crate::ingest::pull::source::parse_source_url(&stream_url)
            .map_err(|e| CloudError::invalid("StreamUrl", e.to_string()))?;
        let repeat_num = p.int("RepeatNum", -1, 1000)?.unwrap_or(1);
        if repeat_num == 0 {
            return Err(CloudError::invalid(
                "RepeatNum",
                "RepeatNum must be -1 (forever) or within [1, 1000] (got 0)",
            ));
        }
        let max_duration = p.int("MaxDuration", 1, 10080)?;
        let volume = p.int("Volume", 0, 200)?.map(|v| v as u32);
        let seek_second = p.int("SeekSecond", 0, i64::MAX / 1000)?.unwrap_or(0);
        let idle_timeout = p.int("IdleTimeout", 0, 600)?.map(|v| v as u64);
        let tempo = p.tempo()?.unwrap_or(1.0);
        let enable_progress = p.bool("EnableProgress")?.unwrap_or(false);
        p.bool("AutoPush")?;
        let video_encode_params = p.nested("VideoEncodeParams")?.map(video_params).transpose()?;
        let audio_encode_params = p.nested("AudioEncodeParams")?.map(audio_params).transpose()?;
        p.finish()?;
        let volume = volume.or(audio_encode_params.as_ref().and_then(|a| a.volume));
        Ok(Start {
            spec: TaskSpec {
                sdk_app_id: sdkappid,
                room_id,
                room_id_type,
                user_id,
                stream_url,
                seek_second,
                repeat_num,
                max_duration,
                volume: volume.unwrap_or(100),
                tempo,
                idle_timeout,
                is_pause: false,
                enable_progress,
                video_encode_params,
                audio_encode_params,
                trusted_source: false,
            },
        })
    }

    pub async fn apply(self, caller: &Caller<'_>) -> Result<Map<String, Value>, CloudError> {
        caller.may_act_on(self.spec.sdk_app_id)?;
        let task_id = crate::cluster::tasks::ClusterTasks::start(caller.cluster, caller.pull, self.spec).await?;
        Ok(super::obj(json!({ "TaskId": task_id })))
    }
}

/// The room `room_id` names under `RoomIdType` (1: numeric, 0: string).
fn room_ref(room_id: &str, room_id_type: u8) -> Result<RoomRef, CloudError> {
    if room_id_type == 0 {
        return Ok(RoomRef::Str(room_id.to_string()));
    }
    match room_id.parse::<u64>() {
        Ok(n) if (1..=u32::MAX as u64).contains(&n) && !room_id.starts_with('0') => Ok(RoomRef::Num(n as u32)),
        _ => Err(CloudError::invalid(
            "RoomId",
            format!("RoomIdType 1 needs a numeric RoomId in 1..4294967295 (got {room_id:?}); use RoomIdType 0 for string rooms"),
        )),
    }
}

/// A refused robot, as the field to blame.
fn denied(d: Denied, user_id: &str) -> CloudError {
    let field = match &d {
        Denied::BadRoomId(_) => "StrRoomId",
        Denied::BadUserId(_) => "UserId",
        Denied::PrivateMapKeyRequired(_) | Denied::PrivateMapKey(_) => "PrivateMapKey",
        _ => "UserSig",
    };
    let why = match &d {
        Denied::UserSig(e) => format!("UserSig of {user_id} rejected: {e}"),
        d => d.to_string(),
    };
    CloudError::invalid(field, why)
}

/// Deprecated `VideoEncodeParams`: set any and the video is re-encoded with them.
fn video_params(mut v: Params<'_>) -> Result<VideoEncodeParams, CloudError> {
    let params = VideoEncodeParams {
        width: v.int("Width", 0, 1920)?.unwrap_or(0) as u32,
        height: v.int("Height", 0, 1080)?.unwrap_or(0) as u32,
        fps: v.int("Fps", 1, 60)?.unwrap_or(0) as u32,
        bit_rate: v.int("BitRate", 1, 10000)?.unwrap_or(0) as u32,
        gop: v.int("Gop", 1, 2)?.unwrap_or(0) as u32,
    };
    v.finish()?;
    Ok(params)
}

/// Deprecated `AudioEncodeParams` (output is always Opus at 48 kHz).
fn audio_params(mut a: Params<'_>) -> Result<AudioEncodeParams, CloudError> {
    let sample_rate = a.int("SampleRate", 0, 48000)?.unwrap_or(48000) as u32;
    if ![44100, 48000].contains(&sample_rate) {
        return Err(CloudError::invalid(
            "SampleRate",
            "AudioEncodeParams.SampleRate must be 48000 or 44100",
        ));
    }
    let params = AudioEncodeParams {
        sample_rate,
        channel: a.int("Channel", 1, 2)?.unwrap_or(2) as u32,
        bit_rate: a.int("BitRate", 8, 500)?.unwrap_or(0) as u32,
        volume: a.int("Volume", 0, 300)?.map(|v| v as u32),
    };
    a.finish()?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserSig;
    use crate::config::AppConfig;

    const NOW: u64 = 1_700_000_000;

    fn config() -> Config {
        Config {
            apps: vec![AppConfig {
                sdkappid: 7,
                secret_key: "key".into(),
                ..Default::default()
            }],
            ..Config::default()
        }
    }

    fn params(extra: Value) -> Map<String, Value> {
        let mut m = json!({
            "SdkAppId": 7, "RoomId": "r1", "RoomIdType": 0, "UserId": "robot",
            "UserSig": UserSig::generate(7, "key", "robot", NOW, 3600, None),
            "StreamUrl": "https://example.com/a.mp4",
        })
        .as_object()
        .cloned()
        .unwrap();
        m.extend(extra.as_object().cloned().unwrap());
        m
    }

    fn code(extra: Value) -> String {
        Start::parse(&params(extra), &config(), NOW).unwrap_err().code
    }

    #[test]
    fn defaults_follow_trtc() {
        let s = Start::parse(&params(json!({})), &config(), NOW).unwrap().spec;
        assert_eq!((s.repeat_num, s.volume, s.tempo, s.seek_second), (1, 100, 1.0, 0));
        assert!(!s.trusted_source, "a Cloud API source is never trusted");
        let s = Start::parse(&params(json!({"RoomId": 1234, "RoomIdType": 1})), &config(), NOW)
            .unwrap()
            .spec;
        assert_eq!((s.room_id.as_str(), s.room_id_type), ("1234", 1));
    }

    #[test]
    fn every_field_is_checked_and_named() {
        assert_eq!(code(json!({"SdkAppId": 8})), "InvalidParameter.SdkAppId");
        assert_eq!(code(json!({"RoomIdType": 1})), "InvalidParameter.RoomId");
        assert_eq!(
            code(json!({"RoomId": "0123", "RoomIdType": 1})),
            "InvalidParameter.RoomId"
        );
        assert_eq!(code(json!({"UserSig": "garbage"})), "InvalidParameter.UserSig");
        assert_eq!(code(json!({"UserId": "no spaces"})), "InvalidParameter.UserId");
        assert_eq!(code(json!({"RepeatNum": 0})), "InvalidParameter.RepeatNum");
        assert_eq!(code(json!({"Volume": 201})), "InvalidParameter.Volume");
        assert_eq!(code(json!({"VideoEncodeParams": {"Gop": 3}})), "InvalidParameter.Gop");
        assert_eq!(code(json!({"VideoEncodeParams": {"Crf": 3}})), "UnknownParameter");
        assert_eq!(
            code(json!({"AudioEncodeParams": {"SampleRate": 8000}})),
            "InvalidParameter.SampleRate"
        );
        assert_eq!(code(json!({"SourceUrl": ["a", "b"]})), "InvalidParameter.SourceUrl");
        assert_eq!(code(json!({"StreamName": "x"})), "UnknownParameter");
    }

    #[test]
    fn the_deprecated_forms_still_work() {
        let mut p = params(json!({"SourceUrl": ["https://example.com/b.mp4"], "AudioEncodeParams": {"Volume": 150}}));
        p.remove("StreamUrl");
        let s = Start::parse(&p, &config(), NOW).unwrap().spec;
        assert_eq!(s.stream_url, "https://example.com/b.mp4");
        assert_eq!(
            s.volume, 150,
            "AudioEncodeParams.Volume applies when Volume is not given"
        );
    }
}
