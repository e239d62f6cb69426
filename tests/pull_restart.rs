//! Pull tasks survive the process: the real `roomgate` binary is killed with SIGKILL mid-task and started again on
//! the same data dir; the running task resumes (position kept) and a stopped one stays ended.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::cloud::{error_code, CloudClient, SECRET_ID, SECRET_KEY};
use support::nginx::Nginx;
use support::{usersig, KEY, SDKAPPID};

use support::nginx::free_port;

struct Roomgate(std::process::Child);

impl Roomgate {
    async fn start(config: &Path, http: std::net::SocketAddr) -> Roomgate {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
            .args(["serve", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(http).await.is_err() {
            assert!(Instant::now() < deadline, "roomgate did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Roomgate(child)
    }

    fn kill9(mut self) {
        self.0.kill().unwrap(); // SIGKILL: no shutdown code runs
        self.0.wait().unwrap();
    }
}

impl Drop for Roomgate {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn describe(api: &CloudClient, task: &str) -> Value {
    api.call("DescribeStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": task}))
        .await
}

async fn anchors(http: std::net::SocketAddr) -> Vec<String> {
    let (_, body) = support::http_get(http, "/v1/rooms").await;
    let rooms: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    rooms["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["anchors"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["userid"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_resume_after_kill_9() {
    let nginx = Nginx::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")).await;
    let dir = tempfile::tempdir().unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("roomgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
log = "warn"
[http]
listen = "{http}"
[rtmp]
listen = "127.0.0.1:0"
[rtc]
bind = "127.0.0.1"
udp_port = 0
tcp_port = 0
[pull]
allow_private_sources = true
[[apps]]
sdkappid = {SDKAPPID}
secret_key = "{KEY}"
[[api_keys]]
secret_id = "{SECRET_ID}"
secret_key = "{SECRET_KEY}"
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let api = CloudClient::new(http);
    let gw = Roomgate::start(&config, http).await;
    let start = |room: &str, user: &str| {
        json!({"SdkAppId": SDKAPPID, "RoomId": room, "RoomIdType": 0, "UserId": user, "UserSig": usersig(user),
               "StreamUrl": nginx.url("/sample-720p30.mp4"), "RepeatNum": -1})
    };
    let r = api.call("StartStreamIngest", start("resume", "robot")).await;
    let task = r["TaskId"].as_str().expect("TaskId").to_string();
    let r = api.call("StartStreamIngest", start("ended", "robot")).await;
    let stopped = r["TaskId"].as_str().expect("TaskId").to_string();
    let r = api
        .call("StopStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": stopped}))
        .await;
    assert!(error_code(&r).is_none(), "{r}");

    // Let it play past a progress save (every 2 s), then kill -9.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = describe(&api, &task).await;
        if r["PositionMs"].as_i64().unwrap_or(0) >= 4500 {
            break;
        }
        assert!(Instant::now() < deadline, "the task does not play: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(anchors(http).await, vec!["robot"]);
    gw.kill9();

    let _gw = Roomgate::start(&config, http).await;
    let r = describe(&api, &task).await;
    assert_eq!(r["Status"], "InProgress", "the task is back: {r}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while anchors(http).await != vec!["robot".to_string()] {
        assert!(Instant::now() < deadline, "the robot re-enters its room");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = describe(&api, &task).await;
    let (loops, pos) = (r["LoopsDone"].as_i64().unwrap(), r["PositionMs"].as_i64().unwrap());
    assert!(loops >= 1 || pos >= 2000, "position kept across the restart: {r}");
    let r = describe(&api, &stopped).await;
    assert_eq!(
        (r["Status"].as_str(), r["State"].as_str()),
        (Some("NotExist"), Some("stopped")),
        "{r}"
    );
    let r = api
        .call("StopStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": task}))
        .await;
    assert!(error_code(&r).is_none(), "{r}");
}
