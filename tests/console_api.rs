//! The console's JSON API and OpenAPI document, the admin rule, and `serve --demo-task` (what `make run` starts).

mod support;

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_route() {
    let gw = start_gateway().await;
    let (status, body) = http_get(gw.http_addr, "/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let served = [
        ("post", "/"),
        ("get", "/healthz"),
        ("get", "/metrics"),
        ("get", "/v1/rooms"),
        ("get", "/v1/rooms/{sdkappid}/{room}"),
        ("get", "/v1/apps"),
        ("get", "/v1/tasks"),
        ("post", "/v1/tasks"),
        ("delete", "/v1/tasks/{id}"),
        ("post", "/v1/tokens"),
        ("get", "/v1/callbacks"),
        ("get", "/v1/callbacks/{id}"),
        ("post", "/v1/callbacks/{id}/retry"),
        ("post", "/v2/pub/{sdkappid}/{room}"),
        ("patch", "/v2/pub/session/{id}"),
        ("delete", "/v2/pub/session/{id}"),
        ("post", "/v2/sub/{sdkappid}/{room}"),
        ("patch", "/v2/sub/session/{id}"),
        ("delete", "/v2/sub/session/{id}"),
    ];
    for (method, path) in served {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is documented");
    }
    assert!(doc["components"]["schemas"]["Tokens"].is_object());
    // Every documented /v1 GET without parameters answers as documented.
    for path in ["/v1/rooms", "/v1/apps", "/v1/tasks", "/v1/callbacks", "/healthz"] {
        assert_eq!(http_get(gw.http_addr, path).await.0, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_need_the_admin_credential_and_verify() {
    let gw = start_gateway().await;
    let req = json!({"sdkappid": SDKAPPID, "userid": "obs1", "room": "r1", "expire": 600});
    let (status, t) = post_json(&gw.http("/v1/tokens"), None, &req).await;
    assert_eq!(status, 200, "loopback is admin by default");
    let sig = t["usersig"].as_str().unwrap();
    roomgate::auth::UserSig::verify(sig, SDKAPPID, "obs1", KEY, roomgate::auth::unix_now()).unwrap();
    let port = gw.rtmp_addr.unwrap().port();
    assert_eq!(t["rtmp_server"], format!("rtmp://127.0.0.1:{port}/push/"));
    assert_eq!(
        t["stream_key"],
        format!("r1?sdkappid={SDKAPPID}&userid=obs1&usersig={sig}")
    );
    assert_eq!(
        t["whip_url"],
        format!("http://{}/v2/pub/{SDKAPPID}/r1?SessionID=obs1", gw.http_addr)
    );
    let (_, apps) = http_get(gw.http_addr, "/v1/apps").await;
    assert!(!apps.contains(KEY), "app keys never leave the server");

    for (bad, code) in [
        (json!({"sdkappid": 5, "userid": "u", "room": "r"}), 404),
        (json!({"sdkappid": SDKAPPID, "userid": "a b", "room": "r"}), 400),
        (
            json!({"sdkappid": SDKAPPID, "userid": "u", "room": "r", "expire": 1}),
            400,
        ),
    ] {
        let (status, e) = post_json(&gw.http("/v1/tokens"), None, &bad).await;
        assert_eq!(status, code, "{bad}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    let locked = start_gateway_with(|c| {
        c.admin.loopback = false;
        c.admin.token = "s3cret-admin".into();
    })
    .await;
    let tokens = locked.http("/v1/tokens");
    let (status, e) = post_json(&tokens, None, &req).await;
    assert_eq!(status, 403);
    assert_eq!(e["error"]["code"], "admin_required");
    assert_eq!(post_json(&tokens, Some("wrong"), &req).await.0, 403);
    assert_eq!(post_json(&tokens, Some("s3cret-admin"), &req).await.0, 200);
    let task = json!({"sdkappid": SDKAPPID, "stream_url": "http://x/a.mp4", "room": "r", "userid": "u"});
    let (status, _) = post_json(&locked.http("/v1/tasks"), None, &task).await;
    assert_eq!(status, 403, "starting tasks is admin-only");
    let r = reqwest::Client::new()
        .post(locked.http("/v1/callbacks/1/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "re-sending callbacks is admin-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_form_api_starts_lists_and_stops() {
    let nginx = support::nginx::Nginx::start(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")).await;
    let gw = start_gateway().await;
    let tasks = gw.http("/v1/tasks");
    let form =
        |url: &str, userid: &str| json!({"sdkappid": SDKAPPID, "stream_url": url, "room": "form", "userid": userid});
    let mut looped = form(&nginx.url("/sample.mp3"), "r1");
    looped["repeat"] = json!(-1);
    let (status, r) = post_json(&tasks, None, &looped).await;
    assert_eq!(status, 200);
    let id = r["task_id"].as_str().unwrap().to_string();
    let (_, v) = get_json(gw.http_addr, "/v1/tasks").await;
    assert_eq!(v["tasks"][0]["TaskId"], id.as_str());
    let (status, _) = post_json(&tasks, None, &form(&nginx.url("/sample.mp3"), "r1")).await;
    assert_eq!(status, 409, "the same robot twice");
    let (status, _) = post_json(&tasks, None, &form("ftp://x/y", "r2")).await;
    assert_eq!(status, 400);
    assert_eq!(delete_task(&gw, &id).await, 200);
    wait_until("stopped", Duration::from_secs(5), || gw.pull.list().is_empty()).await;
    assert_eq!(delete_task(&gw, &id).await, 409, "already ended");
}

/// DELETE task `id` as the console's form does; the status.
async fn delete_task(gw: &TestGateway, id: &str) -> u16 {
    reqwest::Client::new()
        .delete(gw.http(&format!("/v1/tasks/{id}")))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `make run` = `serve --demo-task`: a demo robot plays the testdata sample in demo_room at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_demo_task_shows_moving_video_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spawn = || {
        let http: std::net::SocketAddr = format!("127.0.0.1:{}", support::nginx::free_port()).parse().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_roomgate"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "serve",
                "--demo-task",
                "--http-listen",
                &http.to_string(),
                "--rtmp-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .env("ROOMGATE_RTC_BIND", "127.0.0.1")
            .env("ROOMGATE_SRT_LISTEN", "127.0.0.1:0")
            .env("ROOMGATE_RTC_UDP_PORT", "0")
            .env("ROOMGATE_RTC_TCP_PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        (http, child)
    };
    let (mut http, mut child) = spawn();
    let mut respawns = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let anchor = loop {
        // The free port may be taken by another test before the gateway binds it: then it exits; start again.
        if let Ok(Some(status)) = child.try_wait() {
            respawns += 1;
            assert!(respawns <= 3, "roomgate keeps exiting: {status}");
            (http, child) = spawn();
        }
        if let Ok(s) = tokio::net::TcpStream::connect(http).await {
            drop(s);
            let (_, v) = get_json(http, "/v1/rooms").await;
            let a = &v["rooms"][0]["anchors"][0];
            if a["video"]["fps"].as_f64().unwrap_or(0.0) > 10.0 {
                break a.clone();
            }
        }
        assert!(Instant::now() < deadline, "the demo robot plays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(anchor["userid"], "demo_robot");
    assert_eq!(anchor["source"], "pull");
    assert_eq!(anchor["video"]["width"], 1280);
    let (_, body) = http_get(http, "/").await;
    assert!(body.contains("<title>roomgate dashboard</title>"));
    // The demo media is streamed with Range support, not read whole per request.
    let r = reqwest::Client::new()
        .get(format!("http://{http}/demo/sample.mp4"))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.headers()["content-range"]
        .to_str()
        .unwrap()
        .starts_with("bytes 100-199/"));
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    let _ = child.kill();
    let _ = child.wait();
}
