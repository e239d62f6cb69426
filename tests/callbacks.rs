//! Event callbacks as an app backend receives them: a real HTTP receiver (tests/callbacks/receiver.py) that checks
//! `Sign` with Python's hmac, records order and counts; real RTMP pushes (ffmpeg) and pull tasks (nginx).

mod support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::cloud::{error_code, CloudClient};
use support::nginx::Nginx;
use support::receiver::{received, types, wait_for, Receiver};
use support::*;

const CB_KEY: &str = "cbKey123";

use support::nginx::free_port;

/// Where a test's callbacks go: a free port for the receiver, and the file it records into in a temp dir.
struct Callbacks {
    dir: tempfile::TempDir,
    port: u16,
    out: PathBuf,
}

impl Callbacks {
    fn new() -> Callbacks {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cb.jsonl");
        Callbacks {
            dir,
            port: free_port(),
            out,
        }
    }

    /// The receiver, up, checking `Sign` with `key`.
    async fn receiver(&self, key: &str) -> Receiver {
        Receiver::start(self.port, key, &self.out).await
    }

    /// A gateway whose app sends its callbacks here, with `tweak` applied too.
    async fn gateway(&self, tweak: impl FnOnce(&mut roomgate::Config)) -> TestGateway {
        let port = self.port;
        start_gateway_with(move |c| {
            callbacks_to(port, CB_KEY)(c);
            tweak(c);
        })
        .await
    }

    /// What the receiver recorded, once `done` holds (up to `within`).
    async fn wait(&self, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait_for(&self.out, within, done).await
    }
}

/// The usual set-up: the receiver up, with the app's key, and a gateway sending to it.
async fn receiving() -> (Callbacks, Receiver, TestGateway) {
    let cb = Callbacks::new();
    let rx = cb.receiver(CB_KEY).await;
    let gw = cb.gateway(|_| {}).await;
    (cb, rx, gw)
}

/// The callbacks the gateway at `http` lists at `/v1/callbacks{query}`.
async fn listed(http: SocketAddr, query: &str) -> Vec<Value> {
    let (_, v) = get_json(http, &format!("/v1/callbacks{query}")).await;
    v["callbacks"].as_array().cloned().unwrap_or_default()
}

/// Poll `listed` until `done` holds, failing with `what` after `within`; the list.
async fn wait_listed(
    http: SocketAddr,
    query: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let list = listed(http, query).await;
        if done(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ask the gateway to re-send callback `id`; the status.
async fn retry(gw: &TestGateway, id: i64) -> u16 {
    post_json(&gw.http(&format!("/v1/callbacks/{id}/retry")), None, &json!({}))
        .await
        .0
}

/// The room/media events of one anchor's push and stop, as TRTC orders them.
fn assert_room_sequence(records: &[Value], room: &str, user: &str) {
    let t = types(records);
    assert_eq!(t.first(), Some(&101), "{t:?}");
    assert_eq!(t.get(1), Some(&103), "{t:?}");
    let mut media = t[2..4].to_vec();
    media.sort();
    assert_eq!(media, vec![201, 203], "video and audio start: {t:?}");
    assert_eq!(&t[4..], &[104, 102], "no 202/204 when a 104 covers them: {t:?}");
    for r in records {
        assert_eq!(r["sign_ok"], true, "Sign verifies with the app's key: {r}");
        assert_eq!(r["sdkappid"], SDKAPPID.to_string());
        assert_eq!(r["content_type"], "application/json");
        let info = &r["body"]["EventInfo"];
        assert_eq!(info["RoomId"], room, "string rooms give a string RoomId");
        assert!(r["body"]["CallbackTs"].as_i64().unwrap() > 1_600_000_000_000);
        assert_eq!(
            info["EventTs"].as_i64().unwrap(),
            info["EventMsTs"].as_i64().unwrap() / 1000
        );
        if r["body"]["EventType"] != 102 {
            assert_eq!(info["UserId"], user);
        }
    }
    let entered = &records[1]["body"]["EventInfo"];
    assert_eq!(
        (
            &entered["Role"],
            &entered["TerminalType"],
            &entered["UserType"],
            &entered["Reason"]
        ),
        (&json!(20), &json!(100), &json!(100), &json!(1))
    );
    let left = &records[4]["body"]["EventInfo"];
    assert_eq!((&left["Role"], &left["Reason"]), (&json!(20), &json!(1)));
    let ids = event_ids(records);
    assert!(
        records.iter().all(|r| r["event_id_ok"] == true),
        "every callback carries X-Roomgate-Event-Id: {ids:?}"
    );
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), records.len(), "one id per event: {ids:?}");
}

/// The `X-Roomgate-Event-Id` of each record ("" when missing).
fn event_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["event_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The value of an unlabelled counter in the Prometheus text (0 when absent).
async fn counter(gw: &TestGateway, name: &str) -> f64 {
    let (_, text) = http_get(gw.http_addr, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_push_gives_101_103_201_203_104_102() {
    let (cb, _rx, gw) = receiving().await;
    gw.push_briefly("cbroom", "anchor1", 3).await;
    let records = cb.wait(Duration::from_secs(10), |r| types(r).contains(&102)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records_again = received(&cb.out);
    assert_eq!(
        records.len(),
        records_again.len(),
        "nothing more arrives (each event once)"
    );
    assert_room_sequence(&records, "cbroom", "anchor1");
    let (status, v) = get_json(gw.http_addr, "/v1/callbacks?status=delivered").await;
    assert_eq!(status, 200);
    assert_eq!(v["callbacks"].as_array().unwrap().len(), 6, "{v}");
}

/// An SRT publisher (MPEG-TS from ffmpeg's libsrt) gives the same room and media events as an RTMP one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_push_gives_101_103_201_203_104_102() {
    let (cb, _rx, gw) = receiving().await;
    let url = format!(
        "srt://{}?streamid=#!::r=srtroom,u=anchor1,m=publish,sdkappid={SDKAPPID},usersig={}",
        gw.srt_addr.unwrap(),
        usersig("anchor1")
    );
    let (ok, err) = Ffmpeg::push_as(&lavfi("320x240", 3), QUICK_X264, "mpegts", &url)
        .finish(Duration::from_secs(30))
        .await;
    assert!(ok, "ffmpeg: {err}");
    let records = cb.wait(Duration::from_secs(15), |r| types(r).contains(&102)).await;
    assert_room_sequence(&records, "srtroom", "anchor1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_tasks_give_701_and_702_and_retries() {
    let (cb, _rx, gw) = receiving().await;
    let nginx = Nginx::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")).await;
    let api = CloudClient::new(gw.http_addr);
    let start = |room: &str, url: String| {
        json!({"SdkAppId": SDKAPPID, "RoomId": room, "RoomIdType": 0, "UserId": "robot",
               "UserSig": usersig("robot"), "StreamUrl": url})
    };
    let r = api
        .call("StartStreamIngest", start("cbpull", nginx.url("/sample-720p30.mp4")))
        .await;
    let task = r["TaskId"].as_str().unwrap().to_string();
    let task_events = |recs: &[Value], id: &str| -> Vec<(u64, u64)> {
        recs.iter()
            .filter(|r| r["body"]["EventInfo"]["TaskId"] == id)
            .map(|r| {
                (
                    r["body"]["EventType"].as_u64().unwrap(),
                    r["body"]["EventInfo"]["Status"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    cb.wait(Duration::from_secs(10), |r| task_events(r, &task).contains(&(701, 0)))
        .await;
    let r = api
        .call("StopStreamIngest", json!({"SdkAppId": SDKAPPID, "TaskId": task}))
        .await;
    assert!(error_code(&r).is_none());
    let recs = cb
        .wait(Duration::from_secs(10), |r| {
            task_events(r, &task).contains(&(702, 0)) && types(r).contains(&102)
        })
        .await;
    assert_eq!(task_events(&recs, &task), vec![(701, 0), (702, 0)]);
    for r in &recs {
        assert_eq!(r["sign_ok"], true);
        if r["body"]["EventGroupId"] == 7 {
            assert!(
                r["body"]["CallbackMsTs"].as_i64().is_some(),
                "group 7 uses CallbackMsTs: {r}"
            );
            assert!(r["body"].get("CallbackTs").is_none());
        }
    }
    // The robot is an anchor like any other: 101, 103, 201/203, 104 (Reason 1), 102.
    let room: Vec<Value> = recs.into_iter().filter(|r| r["body"]["EventGroupId"] != 7).collect();
    let t = types(&room);
    assert_eq!((t.first(), t.get(1)), (Some(&101), Some(&103)), "{t:?}");
    assert_eq!(&t[t.len() - 2..], &[104, 102], "{t:?}");

    // An unreachable source: 701(2) at each of the three retries, then 701(1).
    let refused = free_port();
    let r = api
        .call(
            "StartStreamIngest",
            start("cbfail", format!("http://127.0.0.1:{refused}/x.mp4")),
        )
        .await;
    let bad = r["TaskId"].as_str().unwrap().to_string();
    let recs = cb
        .wait(Duration::from_secs(15), |r| task_events(r, &bad).contains(&(701, 1)))
        .await;
    assert_eq!(task_events(&recs, &bad), vec![(701, 2), (701, 2), (701, 2), (701, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_30_s_gets_everything_once_it_is_up() {
    let cb = Callbacks::new();
    let gw = cb.gateway(|_| {}).await;
    gw.push_briefly("downroom", "anchor1", 2).await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let pending = listed(gw.http_addr, "?status=pending").await;
    assert_eq!(pending.len(), 6, "all six wait in the outbox");
    // Newest first: the oldest (101) is being retried (at once, then every 10 s); the later ones of the same
    // anchor wait behind it, untried, so they cannot overtake it.
    let attempts: Vec<u64> = pending.iter().rev().map(|c| c["attempts"].as_u64().unwrap()).collect();
    assert!(
        attempts[0] >= 3,
        "tried, retried at once, then every 10 s: {attempts:?}"
    );
    assert!(
        attempts[1..].iter().all(|a| *a == 0),
        "later events wait in order: {attempts:?}"
    );
    let _rx = cb.receiver(CB_KEY).await;
    let records = cb.wait(Duration::from_secs(20), |r| r.len() >= 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received(&cb.out).len(), 6, "each event once");
    assert_room_sequence(&records, "downroom", "anchor1");
    assert!(t0.elapsed() < Duration::from_secs(60), "within the retry window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_callback_key_is_detected_by_the_receiver() {
    let cb = Callbacks::new();
    let _rx = cb.receiver("notTheAppKey").await;
    let gw = cb.gateway(|_| {}).await;
    gw.push_briefly("keyroom", "anchor1", 2).await;
    let records = cb.wait(Duration::from_secs(10), |r| types(r).contains(&102)).await;
    assert!(
        records.iter().all(|r| r["sign_ok"] == false),
        "every Sign mismatches a different key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_callbacks_are_listed_and_can_be_resent() {
    let cb = Callbacks::new();
    let gw = cb
        .gateway(|c| {
            c.callbacks.retry_interval_secs = 1;
            c.callbacks.retry_window_secs = 2;
        })
        .await;
    gw.push_briefly("exproom", "anchor1", 2).await;
    let failed = wait_listed(
        gw.http_addr,
        "?status=failed",
        Duration::from_secs(30),
        "callbacks did not expire",
        |list| list.len() == 6,
    )
    .await;
    for c in &failed {
        let err = c["last_error"].as_str().unwrap();
        assert!(
            err.contains("onnection refused") || err.contains("error sending request"),
            "{err}"
        );
        assert!(c["body"]["EventType"].as_u64().is_some());
    }
    // The same list from the command line.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
        .args(["callbacks", "list", "--status", "failed", "--endpoint"])
        .arg(gw.http("/"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("failed") && l.contains("attempts"))
            .count(),
        6,
        "{text}"
    );
    let _rx = cb.receiver(CB_KEY).await;
    let mut ids: Vec<i64> = failed.iter().map(|c| c["id"].as_i64().unwrap()).collect();
    ids.sort();
    for id in &ids {
        assert_eq!(retry(&gw, *id).await, 200);
    }
    let records = cb.wait(Duration::from_secs(10), |r| r.len() >= 6).await;
    assert!(records.iter().all(|r| r["sign_ok"] == true));
    assert_eq!(retry(&gw, ids[0]).await, 409, "only failed callbacks are re-sent");
    assert_eq!(retry(&gw, 999999).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_that_stops_while_video_goes_on_gives_204_only() {
    let cb = Callbacks::new();
    // 8 s of video, 2 s of audio.
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30:d=8",
        ])
        .args(["-f", "lavfi", "-t", "2", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-profile:v",
            "baseline",
            "-g",
            "30",
            "-c:a",
            "aac",
        ])
        .arg(cb.dir.path().join("short-audio.mp4"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let nginx = Nginx::start(cb.dir.path()).await;
    let _rx = cb.receiver(CB_KEY).await;
    let gw = cb.gateway(|c| c.callbacks.media_idle_secs = 2).await;
    let api = CloudClient::new(gw.http_addr);
    let r = api
        .call(
            "StartStreamIngest",
            json!({"SdkAppId": SDKAPPID, "RoomId": "halfroom", "RoomIdType": 0, "UserId": "robot",
                   "UserSig": usersig("robot"), "StreamUrl": nginx.url("/short-audio.mp4")}),
        )
        .await;
    assert!(error_code(&r).is_none(), "{r}");
    let records = cb.wait(Duration::from_secs(20), |r| types(r).contains(&102)).await;
    let room: Vec<u64> = types(&records).into_iter().filter(|t| *t < 700).collect();
    let pos = |t: u64| {
        room.iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("{t} missing: {room:?}"))
    };
    assert!(
        pos(203) < pos(204) && pos(204) < pos(104),
        "audio stops before the anchor leaves: {room:?}"
    );
    assert!(!room.contains(&202), "video never stopped on its own: {room:?}");
    assert_eq!(room.iter().filter(|t| **t == 204).count(), 1, "{room:?}");
}

/// The real binary, killed with SIGKILL while callbacks are undelivered, delivers them after it restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_callbacks_survive_kill_9() {
    let cb = Callbacks::new();
    let (http_port, rtmp_port) = (free_port(), free_port());
    let config = cb.dir.path().join("roomgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
log = "warn"
[http]
listen = "127.0.0.1:{http_port}"
[rtmp]
listen = "127.0.0.1:{rtmp_port}"
[srt]
listen = "127.0.0.1:0"
[rtc]
bind = "127.0.0.1"
udp_port = 0
tcp_port = 0
[[apps]]
sdkappid = {SDKAPPID}
secret_key = "{KEY}"
callback_url = "http://127.0.0.1:{port}/cb"
callback_key = "{CB_KEY}"
"#,
            data = cb.dir.path().join("data").display(),
            port = cb.port
        ),
    )
    .unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let spawn = || {
        KillOnDrop(
            std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
                .args(["serve", "-c"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let up = |http| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(http).await.is_err() {
            assert!(Instant::now() < deadline, "roomgate did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut gw = spawn();
    up(http).await;
    let url = format!(
        "rtmp://127.0.0.1:{rtmp_port}/push/killroom?sdkappid={SDKAPPID}&userid=anchor1&usersig={}",
        usersig("anchor1")
    );
    let (ok, err) = Ffmpeg::push(&lavfi("320x240", 2), QUICK_X264, &url)
        .finish(Duration::from_secs(20))
        .await;
    assert!(ok, "{err}");
    // All six are stored (none delivered: the receiver is down).
    let mut stored = wait_listed(
        http,
        "?status=pending",
        Duration::from_secs(10),
        "events not stored",
        |list| list.len() == 6,
    )
    .await;
    stored.reverse();
    let stored_ids = event_ids(&stored);
    gw.0.kill().unwrap(); // SIGKILL
    gw.0.wait().unwrap();

    let _rx = cb.receiver(CB_KEY).await;
    let gw = spawn();
    up(http).await;
    let records = cb.wait(Duration::from_secs(15), |r| r.len() >= 6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received(&cb.out).len(), 6, "each once");
    assert_room_sequence(&records, "killroom", "anchor1");
    assert_eq!(
        event_ids(&records),
        stored_ids,
        "the event ids listed before the kill are the ones sent after the restart"
    );
    drop(gw);
}

/// A child process killed when dropped, also when the test panics (so it never outlives the test).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_never_slows_the_media() {
    let cb = Callbacks::new();
    // 4 s per answer: within the 5 s timeout, so every event is delivered, slowly.
    let _rx = Receiver::start_slow(cb.port, CB_KEY, &cb.out, 4.0).await;
    let gw = cb.gateway(|_| {}).await;
    let (ff, anchor) = gw.push_anchor("slowroom", "anchor1", "320x240", 4, QUICK_X264).await;
    let (ok, err) = ff.finish(Duration::from_secs(20)).await;
    assert!(ok, "{err}");
    let frames = anchor.video.stats().frames;
    assert!(
        frames >= 115,
        "all 120 frames reached the room while callbacks waited ({frames})"
    );
    assert!(
        received(&cb.out).len() <= 2,
        "the receiver is still working through the events"
    );
    let records = cb.wait(Duration::from_secs(40), |r| r.len() >= 6).await;
    assert_room_sequence(&records, "slowroom", "anchor1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_gives_the_same_events_with_user_type_webrtc() {
    let (cb, _rx, gw) = receiving().await;
    let url = gw.whip_url("whiproom", "web1");
    let publisher = support::whip_client::publish(&url, Some(&usersig("web1")), Default::default())
        .await
        .unwrap();
    cb.wait(Duration::from_secs(15), |r| {
        let t = types(r);
        t.contains(&201) && t.contains(&203)
    })
    .await;
    let location = if publisher.location.starts_with('/') {
        gw.http(&publisher.location)
    } else {
        publisher.location.clone()
    };
    let status = http_delete(&location).await;
    assert!((200..300).contains(&status), "{status}");
    let records = cb.wait(Duration::from_secs(10), |r| types(r).contains(&102)).await;
    let t = types(&records);
    assert_eq!((t[0], t[1]), (101, 103), "{t:?}");
    assert_eq!(&t[t.len() - 2..], &[104, 102], "{t:?}");
    let entered = &records[1]["body"]["EventInfo"];
    assert_eq!(entered["UserType"], 1, "WHIP publishers are WebRTC users");
    assert!(records.iter().all(|r| r["sign_ok"] == true));
    drop(publisher);
}

/// Every callback carries `X-Roomgate-Event-Id`; a retry of the same event carries the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_callback_carries_the_same_event_id() {
    let cb = Callbacks::new();
    let _rx = Receiver::start_failing_first(cb.port, CB_KEY, &cb.out).await;
    let gw = cb.gateway(|_| {}).await;
    gw.push_briefly("idroom", "anchor1", 2).await;
    // Each event: a first POST answered 500, then the immediate retry answered 200.
    let records = cb
        .wait(Duration::from_secs(20), |r| {
            r.iter().filter(|x| x["answered"] == 200).count() >= 6
        })
        .await;
    let ids = event_ids(&records);
    assert!(
        records.iter().all(|r| r["event_id_ok"] == true),
        "every attempt carries X-Roomgate-Event-Id: {ids:?}"
    );
    let mut by_body: std::collections::HashMap<String, Vec<(String, u64)>> = Default::default();
    for r in &records {
        by_body.entry(r["body"].to_string()).or_default().push((
            r["event_id"].as_str().unwrap().to_string(),
            r["answered"].as_u64().unwrap(),
        ));
    }
    assert_eq!(by_body.len(), 6, "six events: {ids:?}");
    for (body, attempts) in &by_body {
        assert_eq!(attempts.len(), 2, "refused once, then accepted: {body} {attempts:?}");
        assert_eq!((attempts[0].1, attempts[1].1), (500, 200), "{attempts:?}");
        assert_eq!(
            attempts[0].0, attempts[1].0,
            "the retry has the first attempt's id: {body}"
        );
    }
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 6, "different events have different ids: {ids:?}");
    let accepted: Vec<Value> = records.into_iter().filter(|r| r["answered"] == 200).collect();
    assert_room_sequence(&accepted, "idroom", "anchor1");
}

/// While SQLite refuses writes (another connection holds an exclusive lock), events are still delivered, once
/// each and in order, from memory; once the store takes writes again they are in it, and the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_survive_a_store_that_refuses_writes() {
    let (cb, _rx, gw) = receiving().await;
    let db = gw.dir.path().join("roomgate.db");
    // Another process-like writer takes the database's write lock and keeps it for 15 s: every INSERT of the
    // gateway fails with SQLITE_BUSY after its 5 s busy timeout (as root, chmod would not stop the writes).
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let locker = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_secs(15));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let errors_before = counter(&gw, "roomgate_callbacks_store_errors_total").await;
    gw.push_briefly("lockroom", "anchor1", 2).await;
    let records = cb.wait(Duration::from_secs(30), |r| types(r).contains(&102)).await;
    assert_room_sequence(&records, "lockroom", "anchor1");
    assert!(!locker.is_finished(), "delivered while the store still refused writes");
    assert!(
        counter(&gw, "roomgate_callbacks_store_errors_total").await > errors_before,
        "store errors are counted"
    );
    locker.join().unwrap();
    // Once writable again, all six are stored as delivered, in their order.
    let mut stored = wait_listed(
        gw.http_addr,
        "",
        Duration::from_secs(20),
        "not stored after the lock ended",
        |list| list.len() >= 6 && list.iter().all(|c| c["status"] == "delivered"),
    )
    .await;
    assert_eq!(stored.len(), 6, "each once");
    stored.reverse();
    assert_eq!(
        event_ids(&stored),
        event_ids(&records),
        "stored in delivery order, with the ids sent"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(received(&cb.out).len(), 6, "nothing sent twice");
}
