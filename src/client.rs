//! Clients of a running gateway, for the command line, the examples and the benchmark: the signed Cloud API
//! (`CloudApiClient`, TC3-HMAC-SHA256 as Tencent's SDKs sign) and the admin API's callback outbox (`AdminClient`).

use crate::api::cloud::{CloudError, SERVICE, VERSION};
use crate::auth::{self, tc3};
use crate::config::Config;
use serde_json::{Map, Value};

/// `endpoint` when given, else this config's HTTP listener (on 127.0.0.1 when it listens on every address).
pub fn endpoint_url(config: &Config, endpoint: Option<&str>) -> Result<url::Url, String> {
    let endpoint = match endpoint {
        Some(e) => e.to_string(),
        None => {
            let port = config.http.listen.port();
            let ip = config.http.listen.ip();
            let host = if ip.is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                ip.to_string()
            };
            format!("http://{host}:{port}/")
        }
    };
    url::Url::parse(&endpoint).map_err(|e| format!("--endpoint {endpoint:?}: {e}"))
}

/// A signed client of the Cloud API (what `roomgate ingest` uses): TC3-HMAC-SHA256 over `content-type;host`, as the
/// official SDKs sign.
pub struct CloudApiClient {
    /// The gateway's Cloud API URL; requests are POSTed to it as is.
    pub endpoint: url::Url,
    /// SecretId of the `[[api_keys]]` entry to sign with.
    pub secret_id: String,
    /// SecretKey of that entry.
    pub secret_key: String,
    http: reqwest::Client,
}

impl CloudApiClient {
    /// A client that signs with `secret_id`/`secret_key`; 30 s timeout per request.
    pub fn new(endpoint: url::Url, secret_id: String, secret_key: String) -> Self {
        CloudApiClient {
            endpoint,
            secret_id,
            secret_key,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("static client settings"),
        }
    }

    /// Call `action`; the `Response` object, or its error as `CloudError` (transport failures as `ClientError`).
    pub async fn call(&self, action: &str, params: &Value) -> Result<Map<String, Value>, CloudError> {
        let body = serde_json::to_vec(params).expect("JSON serializes");
        let host = match (self.endpoint.host_str(), self.endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(CloudError::new("ClientError", "the endpoint has no host")),
        };
        let now = auth::unix_now();
        let authorization =
            tc3::sign_post_action(&self.secret_id, &self.secret_key, SERVICE, &host, action, now, &body);
        let resp = self
            .http
            .post(self.endpoint.clone())
            .header("Content-Type", "application/json")
            .header("Host", &host)
            .header("X-TC-Action", action)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", now.to_string())
            .header("Authorization", authorization)
            .body(body)
            .send()
            .await
            .map_err(|e| CloudError::new("ClientError", format!("cannot reach {}: {e}", self.endpoint)))?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| CloudError::new("ClientError", format!("the reply is not JSON: {e}")))?;
        let response = match v.get("Response") {
            Some(Value::Object(m)) => m.clone(),
            _ => return Err(CloudError::new("ClientError", format!("unexpected reply: {v}"))),
        };
        if let Some(err) = response.get("Error") {
            return Err(CloudError::new(
                err["Code"].as_str().unwrap_or("Unknown"),
                err["Message"].as_str().unwrap_or(""),
            ));
        }
        Ok(response)
    }
}

/// One callback of the outbox, as `GET /v1/callbacks` lists it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CallbackRow {
    /// Row id in the outbox (what `retry` takes).
    pub id: i64,
    /// The app the callback is for.
    pub sdkappid: u64,
    /// TRTC event type, e.g. 103 (anchor entered) or 701 (pull task state).
    pub event_type: u32,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Error of the latest failed attempt; empty when none failed.
    pub last_error: String,
}

/// A client of the admin API's callback outbox. Admin requests come from loopback (or carry the admin token);
/// POSTs are JSON, as the admin rule asks.
pub struct AdminClient {
    base: url::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the gateway at `base`, with `token` when the gateway has one (`admin.token`).
    pub fn new(base: url::Url, token: Option<String>) -> AdminClient {
        AdminClient {
            base,
            token: token.filter(|t| !t.is_empty()),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("static client settings"),
        }
    }

    /// Callbacks, newest first (`status`: pending, delivered or failed).
    pub async fn callbacks(&self, status: Option<&str>, limit: usize) -> Result<Vec<CallbackRow>, String> {
        let mut url = self.base.join("/v1/callbacks").map_err(|e| e.to_string())?;
        url.query_pairs_mut().append_pair("limit", &limit.to_string());
        if let Some(s) = status {
            url.query_pairs_mut().append_pair("status", s);
        }
        let v = self.send(self.http.get(url.clone()), &url).await?;
        serde_json::from_value(v["callbacks"].clone()).map_err(|e| format!("unexpected reply: {e}"))
    }

    /// Queue a failed callback again.
    pub async fn retry_callback(&self, id: i64) -> Result<(), String> {
        let url = self
            .base
            .join(&format!("/v1/callbacks/{id}/retry"))
            .map_err(|e| e.to_string())?;
        let req = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}");
        self.send(req, &url).await.map(|_| ())
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, url: &url::Url) -> Result<Value, String> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("cannot reach {url}: {e}"))?;
        let ok = resp.status().is_success();
        let v: Value = resp.json().await.map_err(|e| format!("the reply is not JSON: {e}"))?;
        if !ok {
            return Err(format!(
                "{}: {}",
                v["error"]["code"].as_str().unwrap_or("error"),
                v["error"]["message"].as_str().unwrap_or("")
            ));
        }
        Ok(v)
    }
}
