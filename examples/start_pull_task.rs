//! A pull task from Rust over the Cloud API 3.0 (TC3-HMAC-SHA256 signed): StartStreamIngest, then
//! DescribeStreamIngest until the task is InProgress and playing, hold it for a while, StopStreamIngest, and a
//! last Describe (NotExist). Each response is printed as `<Action>: <JSON>`.
//!
//! It uses `roomgate::client::CloudApiClient`, which signs exactly as Tencent's SDKs do (plus `X-TC-Action`).
//! The robot's UserSig is made here from the app's secret key, as a backend would.
//!
//! Run (against `make run`, whose demo SecretId/SecretKey are in ./roomgate-data/demo-api-key.toml):
//! ```sh
//! cargo run --example start_pull_task -- --endpoint http://127.0.0.1:8080 \
//!     --secret-id AKID... --secret-key ... --sdkappid 1400000001 --app-key <app secret key> \
//!     --room room1 --userid robot1 --url https://example.com/show.mp4 --hold-seconds 10
//! ```
//! Exits non-zero (with the API's error code and message) when a call fails or the task never plays.

mod common;

use clap::Parser;
use roomgate::auth::{unix_now, UserSig};
use roomgate::client::CloudApiClient;
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "StartStreamIngest -> DescribeStreamIngest -> StopStreamIngest against a roomgate gateway")]
struct Args {
    /// The gateway's Cloud API endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    endpoint: url::Url,
    /// An `[[api_keys]]` SecretId.
    #[arg(long, env = "SECRET_ID")]
    secret_id: String,
    /// Its SecretKey.
    #[arg(long, env = "SECRET_KEY")]
    secret_key: String,
    #[arg(long)]
    sdkappid: u64,
    /// The app's secret key, to make the robot's UserSig.
    #[arg(long, env = "APP_KEY")]
    app_key: String,
    /// String room the robot enters.
    #[arg(long)]
    room: String,
    /// The robot anchor's user id.
    #[arg(long, default_value = "robot1")]
    userid: String,
    /// The source: http(s) file or HLS, or rtmp.
    #[arg(long)]
    url: String,
    /// How long to let the robot play once it is playing, before stopping it.
    #[arg(long, default_value_t = 5.0)]
    hold_seconds: f64,
    /// Give up if the task is not playing within this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() {
    common::exit_on_error(run(Args::parse()).await);
}

/// Call `action` and print its response; a Cloud API error becomes "Code: Message".
async fn call(api: &CloudApiClient, action: &str, params: Value) -> Result<Map<String, Value>, String> {
    let r = call_quietly(api, action, &params).await?;
    println!("{action}: {}", Value::Object(r.clone()));
    Ok(r)
}

/// Call `action` without printing its response (the Describe polls print only some); a Cloud API error becomes
/// "Code: Message".
async fn call_quietly(api: &CloudApiClient, action: &str, params: &Value) -> Result<Map<String, Value>, String> {
    api.call(action, params)
        .await
        .map_err(|e| format!("{action} failed: {}: {}", e.code, e.message))
}

async fn run(args: Args) -> Result<(), String> {
    let api = CloudApiClient::new(args.endpoint.clone(), args.secret_id.clone(), args.secret_key.clone());

    // 1. Start: the robot's own UserSig proves it may enter the room (as with TRTC).
    let robot_sig = UserSig::generate(args.sdkappid, &args.app_key, &args.userid, unix_now(), 3600, None);
    let started = call(
        &api,
        "StartStreamIngest",
        json!({
            "SdkAppId": args.sdkappid,
            "RoomId": args.room,
            "RoomIdType": 0, // 0: string room, 1: numeric room
            "UserId": args.userid,
            "UserSig": robot_sig,
            "StreamUrl": args.url,
            "RepeatNum": -1, // loop until stopped
        }),
    )
    .await?;
    let task_id = started["TaskId"]
        .as_str()
        .ok_or("StartStreamIngest answered without a TaskId")?
        .to_string();
    let task = json!({"SdkAppId": args.sdkappid, "TaskId": task_id});

    // 2. Describe until InProgress and (roomgate's extension field) State "playing". Print each change only.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut last = String::new();
    loop {
        let r = call_quietly(&api, "DescribeStreamIngest", &task).await?;
        let status = (r["Status"].as_str().unwrap_or(""), r["State"].as_str().unwrap_or(""));
        let summary = format!("{status:?}");
        if summary != last {
            println!("DescribeStreamIngest: {}", Value::Object(r.clone()));
            last = summary;
        }
        match status {
            ("InProgress", "playing") => break,
            ("NotExist", _) | (_, "failed") | (_, "finished") => {
                return Err(format!(
                    "the task ended before playing: {}",
                    r.get("Reason").and_then(Value::as_str).unwrap_or("no reason given")
                ))
            }
            _ if Instant::now() > deadline => {
                return Err(format!("the task is not playing after {} s", args.timeout_seconds))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    eprintln!(
        "robot {} is playing {} in room {}; stopping in {} s",
        args.userid, args.url, args.room, args.hold_seconds
    );
    tokio::time::sleep(Duration::from_secs_f64(args.hold_seconds)).await;

    // 3. Stop: the answer means the stop is recorded; the robot leaves the room a moment later, and until it has
    //    Describe may still say InProgress. Poll until NotExist and print that last reply.
    call(&api, "StopStreamIngest", task.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = call_quietly(&api, "DescribeStreamIngest", &task).await?;
        if r["Status"] == "NotExist" {
            println!("DescribeStreamIngest: {}", Value::Object(r));
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the task still runs 10 s after Stop: {}", Value::Object(r)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
