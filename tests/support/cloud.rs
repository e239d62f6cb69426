//! A Cloud API 3.0 client for tests: signs `POST /` with TC3-HMAC-SHA256 exactly as Tencent's SDKs do.

use roomgate::auth::tc3;
use serde_json::Value;

pub const SECRET_ID: &str = "AKIDtestroomgate0000000000000000";
pub const SECRET_KEY: &str = "testsecretkey0000000000000000000";

pub struct CloudClient {
    pub addr: std::net::SocketAddr,
    pub secret_id: String,
    pub secret_key: String,
    http: reqwest::Client,
}

impl CloudClient {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self::with_key(addr, SECRET_ID, SECRET_KEY)
    }

    pub fn with_key(addr: std::net::SocketAddr, id: &str, key: &str) -> Self {
        CloudClient {
            addr,
            secret_id: id.into(),
            secret_key: key.into(),
            http: reqwest::Client::new(),
        }
    }

    /// Call `action` with `body`; returns (HTTP status, the `Response` object).
    pub async fn call_raw(&self, action: &str, body: Vec<u8>, timestamp: u64) -> (u16, Value) {
        self.send(action, "2019-07-22", &body, body.clone(), timestamp).await
    }

    /// POST `sent` as a call of `action` in API `version`, signed as if the body were `signed` (so a test can
    /// tamper with it); returns (HTTP status, the `Response` object).
    pub async fn send(
        &self,
        action: &str,
        version: &str,
        signed: &[u8],
        sent: Vec<u8>,
        timestamp: u64,
    ) -> (u16, Value) {
        let host = self.addr.to_string();
        let auth = tc3::sign_post(&self.secret_id, &self.secret_key, "trtc", &host, timestamp, signed);
        let resp = self
            .http
            .post(format!("http://{host}/"))
            .header("Content-Type", "application/json")
            .header("Host", &host)
            .header("X-TC-Action", action)
            .header("X-TC-Version", version)
            .header("X-TC-Region", "ap-guangzhou")
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("Authorization", auth)
            .body(sent)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        (status, v["Response"].clone())
    }

    /// Call `action`; returns the `Response` object (asserting HTTP 200 and a RequestId, as every reply has).
    pub async fn call(&self, action: &str, params: Value) -> Value {
        let (status, r) = self
            .call_raw(action, serde_json::to_vec(&params).unwrap(), roomgate::auth::unix_now())
            .await;
        assert_eq!(status, 200, "Cloud API replies are always HTTP 200");
        assert!(r["RequestId"].as_str().is_some_and(|s| s.len() == 36), "{r}");
        r
    }
}

/// The error code of a reply, if it is an error.
pub fn error_code(r: &Value) -> Option<&str> {
    r["Error"]["Code"].as_str()
}

/// StartStreamIngest parameters of the test app: robot `userid` plays `url` into string room `room`.
pub fn start_params(room: &str, userid: &str, url: &str) -> Value {
    serde_json::json!({
        "SdkAppId": super::SDKAPPID,
        "RoomId": room,
        "RoomIdType": 0,
        "UserId": userid,
        "UserSig": super::usersig(userid),
        "StreamUrl": url,
    })
}

/// Start a task that must be accepted; its TaskId.
pub async fn start_task(api: &CloudClient, params: Value) -> String {
    let r = api.call("StartStreamIngest", params).await;
    assert!(error_code(&r).is_none(), "StartStreamIngest failed: {r}");
    r["TaskId"].as_str().unwrap().to_string()
}

/// `params` with the members of the object `extra` added (or replaced).
pub fn merge(mut params: Value, extra: Value) -> Value {
    if let (Some(p), Value::Object(extra)) = (params.as_object_mut(), extra) {
        p.extend(extra);
    }
    params
}

/// The parameters naming `task` of the test app.
pub fn task_params(task: &str) -> Value {
    serde_json::json!({"SdkAppId": super::SDKAPPID, "TaskId": task})
}

/// DescribeStreamIngest of `task`.
pub async fn describe(api: &CloudClient, task: &str) -> Value {
    api.call("DescribeStreamIngest", task_params(task)).await
}

/// UpdateStreamIngest of `task` with the `extra` parameters; the reply.
pub async fn update(api: &CloudClient, task: &str, extra: Value) -> Value {
    api.call("UpdateStreamIngest", merge(task_params(task), extra)).await
}

/// StopStreamIngest of `task`, which must succeed; the reply.
pub async fn stop(api: &CloudClient, task: &str) -> Value {
    let r = api.call("StopStreamIngest", task_params(task)).await;
    assert!(error_code(&r).is_none(), "StopStreamIngest failed: {r}");
    r
}

/// Describe until `cond` holds (up to `within`); the last reply.
pub async fn describe_until(
    api: &CloudClient,
    task: &str,
    within: std::time::Duration,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let r = describe(api, task).await;
        if cond(&r) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "timed out; last Describe: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
