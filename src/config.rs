//! Configuration: embedded defaults, then an optional TOML file, then `ROOMGATE_*` environment variables, then
//! command-line flags (each layer overrides the one before).
//!
//! Every key can be set from the environment: the variable name is `ROOMGATE_` plus the key path in upper case
//! joined by `_` (array elements by index), e.g. `ROOMGATE_RTMP_LISTEN`, `ROOMGATE_AUDIO_OPUS_BITRATE`,
//! `ROOMGATE_APPS_0_SECRET_KEY`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("environment variable {var}: {why}")]
    Env { var: String, why: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where roomgate keeps its state (SQLite database, the demo app's key).
    pub data_dir: PathBuf,
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `roomgate=debug`.
    pub log: String,
    /// Host name or address put in the URLs roomgate prints (ffmpeg/OBS lines).
    pub public_host: String,
    pub http: HttpConfig,
    pub rtmp: RtmpConfig,
    pub rtc: RtcConfig,
    pub audio: AudioConfig,
    pub video: VideoConfig,
    pub apps: Vec<AppConfig>,
    /// Cloud API 3.0 credentials (TC3-HMAC-SHA256) for `POST /` actions such as StartStreamIngest.
    pub api_keys: Vec<ApiKeyConfig>,
    pub api: CloudApiConfig,
    pub pull: PullConfig,
    pub callbacks: CallbacksConfig,
    pub admin: AdminConfig,
    /// Media file served at `/demo/sample.mp4` for the demo pull task (`serve --demo-task`); not a config key.
    #[serde(skip)]
    pub demo_media: Option<PathBuf>,
}

/// Who may use the console's privileged actions (make tokens, start/stop tasks, re-send callbacks).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `Authorization: Bearer <token>` grants admin; empty: no token works.
    pub token: String,
    /// Requests from loopback addresses are admin (turn off behind a reverse proxy on the same host), when their
    /// `Host` is a loopback literal, `localhost` or one of `allowed_hosts`, their `Origin` (if any) is that host,
    /// and they carry no `Forwarded`/`X-Forwarded-For`/`Via` header (a browser cannot borrow it: DNS rebinding).
    pub loopback: bool,
    /// More `Host` names (without port) that count as this machine for loopback admin, e.g. `gw.local`.
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: String::new(),
            loopback: true,
            allowed_hosts: Vec::new(),
        }
    }
}

/// A SecretId/SecretKey pair a backend signs Cloud API requests with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub secret_id: String,
    pub secret_key: String,
    /// Apps this key may act on; empty means every app.
    #[serde(default)]
    pub sdkappids: Vec<u64>,
}

/// Limits of the Cloud API endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudApiConfig {
    /// Requests per second per SecretId (TRTC documents 20 for StartStreamIngest); 0 disables the limit.
    pub rate_limit: u32,
    /// Largest request body accepted (bytes); larger ones get RequestSizeLimitExceeded.
    pub max_body_bytes: usize,
}

impl Default for CloudApiConfig {
    fn default() -> Self {
        CloudApiConfig {
            rate_limit: 20,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Pull tasks (StartStreamIngest).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// Allow sources on loopback, private, link-local and other non-public addresses (off: SSRF protection).
    /// All or nothing; `allow_private_cidrs` allows exact ranges instead.
    pub allow_private_sources: bool,
    /// Private ranges sources may use although `allow_private_sources` is off (an operator's own media
    /// servers), e.g. `["10.1.2.0/24"]`; every other non-public address stays refused. Checked by the pre-flight
    /// and at every connection libav makes. A value that is not a CIDR is a config error.
    pub allow_private_cidrs: Vec<crate::ingest::pull::policy::Cidr>,
    /// Tasks running at once; more get FailedOperation.RestrictedConcurrency.
    pub max_tasks: usize,
    /// Seconds to connect to and open a source before the attempt fails.
    pub open_timeout_secs: u64,
    /// Seconds without data from an open source before it counts as broken (when the task sets no IdleTimeout).
    pub read_timeout_secs: u64,
    /// Days a finished, failed or stopped task is kept in the store (Describe answers for it) before it is
    /// deleted; 0 keeps them forever.
    pub ended_task_retention_days: u64,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            allow_private_sources: false,
            allow_private_cidrs: Vec::new(),
            max_tasks: 100,
            open_timeout_secs: 10,
            read_timeout_secs: 10,
            ended_task_retention_days: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// HTTP connections open at once; more are closed at accept (kept below the open-file limit).
    pub max_connections: usize,
    /// Share of `max_connections` one client address may hold.
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's whole header (slowloris), counted from when the server starts
    /// waiting for it: this also bounds an idle keep-alive connection between requests.
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay open without a byte in either direction (e.g. a response the client stopped
    /// reading); then it is shut down gracefully.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to send a request body.
    pub body_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Largest RTMP message accepted (bytes); a larger one ends the connection.
    pub max_message_size: u32,
    /// Largest chunk size a client may announce.
    pub max_chunk_size: u32,
    /// Chunk size roomgate sends with.
    pub chunk_size: u32,
    /// Concurrent RTMP connections; more are refused at accept.
    pub max_connections: usize,
    /// Concurrent RTMP connections from one client address (an encoder needs one; NATs share addresses).
    pub max_connections_per_ip: usize,
    /// Seconds without any byte from a client before its connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a client has to complete the handshake and start publishing.
    pub handshake_timeout_secs: u64,
}

/// The WebRTC engine: every session on one UDP port and one ICE-TCP port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    pub enabled: bool,
    /// Address the UDP socket and the TCP listener bind to.
    pub bind: std::net::IpAddr,
    pub udp_port: u16,
    /// ICE-TCP (RFC 4571 framing) for clients whose UDP is blocked.
    pub tcp_enabled: bool,
    pub tcp_port: u16,
    /// Addresses put in ICE candidates (NAT 1:1). Empty: the bind address, or every local non-loopback
    /// address when bound to 0.0.0.0 / ::.
    pub public_ips: Vec<std::net::IpAddr>,
    /// STUN/TURN servers announced to WHIP/WHEP clients in `Link` headers.
    pub ice_servers: Vec<IceServer>,
    /// Secret shared with a TURN server (coturn `static-auth-secret` with `use-auth-secret`): `turn:`/`turns:`
    /// servers without a username get short-lived REST credentials per authenticated client. Empty: off.
    pub turn_secret: String,
    /// Lifetime of those credentials.
    pub turn_ttl_secs: u64,
    /// Seconds without ICE/DTLS traffic before a session is dropped.
    pub session_timeout_secs: u64,
    /// WebRTC sessions (WHIP publishers + WHEP viewers) at once; more get 503 with Retry-After.
    pub max_sessions: usize,
    /// WHEP sessions one client address may start per minute; more get 429 with Retry-After (0: no limit).
    pub whep_per_ip_per_minute: u32,
    /// ICE-TCP connections open at once; more are closed at accept.
    pub tcp_max_connections: usize,
    /// Share of `tcp_max_connections` one client address may hold.
    pub tcp_max_connections_per_ip: usize,
    /// Seconds an ICE-TCP connection has to send a STUN request before it is closed.
    pub tcp_stun_timeout_secs: u64,
    /// Engine shards: tasks that run the WebRTC sessions, spread by session (0: one per CPU core).
    pub workers: usize,
}

impl RtcConfig {
    /// How many engine shards to run: `workers`, or one per core.
    pub fn shard_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// A STUN or TURN server for clients (`urls` like `stun:host:3478`, `turn:host:3478?transport=udp`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            enabled: true,
            bind: std::net::IpAddr::from([0, 0, 0, 0]),
            udp_port: 8189,
            tcp_enabled: true,
            tcp_port: 8189,
            public_ips: Vec::new(),
            ice_servers: Vec::new(),
            turn_secret: String::new(),
            turn_ttl_secs: 86_400,
            session_timeout_secs: 10,
            max_sessions: 1000,
            whep_per_ip_per_minute: 60,
            tcp_max_connections: 1000,
            tcp_max_connections_per_ip: 20,
            tcp_stun_timeout_secs: 5,
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// Opus bitrate (bit/s) of transcoded audio.
    pub opus_bitrate: u32,
    /// Opus encoder complexity 0-10 (CPU against quality at `opus_bitrate`); an app may set its own.
    pub opus_complexity: u8,
}

/// The Opus complexity used when the configuration sets none, chosen by measurement (`make bench
/// BENCH=opus-quality`, table in the README's "Benchmark"): the lowest complexity within 0.5 dB SNR and 0.2 dB
/// log-spectral distance of complexity 10 on a tone, a speech-like and a music-like signal at 64 kb/s. It costs
/// 0.76 % of a core per stereo stream against 0.91 % at 10; 5 and below lose 5 dB of SNR on a pure tone.
pub const DEFAULT_OPUS_COMPLEXITY: u8 = 7;

/// Video that roomgate decodes (VP8 publishers, pull sources it transcodes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoConfig {
    /// Largest picture (width x height) a source may declare for decoding; larger ones are refused.
    pub max_pixels: u64,
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            max_pixels: crate::media::transcode::MAX_PIXELS,
        }
    }
}

/// An application: its SDKAppID and the secret key UserSigs are made with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub sdkappid: u64,
    pub secret_key: String,
    /// Publishing needs a PrivateMapKey granting enter room + send audio/video for the room.
    #[serde(default)]
    pub require_private_map_key: bool,
    /// Anyone may watch this app's rooms over WHEP without a token.
    #[serde(default)]
    pub public_playback: bool,
    #[serde(default)]
    pub name: String,
    /// Where event callbacks (701/702, rooms, media) are POSTed; empty: no callbacks.
    #[serde(default)]
    pub callback_url: String,
    /// Key of the callbacks' `Sign` header (HMAC-SHA256 of the body).
    #[serde(default)]
    pub callback_key: String,
    /// Opus complexity for this app's transcoded audio; `audio.opus_complexity` when not set.
    #[serde(default)]
    pub opus_complexity: Option<u8>,
    /// WHEP players must offer the anchor's own H.264 profile (406 otherwise). Off: a player that offers H.264
    /// of another profile is answered with that format and gets the anchor's stream (decoders cope; SRS and
    /// MediaMTX do the same).
    #[serde(default)]
    pub strict_h264_profile: bool,
}

/// Delivery of event callbacks (TRTC's policy by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbacksConfig {
    /// A delivery that gets no HTTP 200 within this is a failure (seconds).
    pub timeout_secs: u64,
    /// After the immediate retry, retries come this often (seconds).
    pub retry_interval_secs: u64,
    /// Retries stop this long after the first try (seconds); the event is then kept as failed.
    pub retry_window_secs: u64,
    /// Seconds a track may go without frames before a 202/204 is sent (when the other track still flows).
    pub media_idle_secs: u64,
    /// Days a delivered callback is kept in the store before it is deleted; 0 keeps them forever. Pending and
    /// failed callbacks are never deleted.
    pub retention_days: u64,
    /// Callbacks kept in memory (and still delivered) while the store refuses writes; past this, new events wait
    /// until the store takes writes again (none is dropped).
    pub memory_queue_max: usize,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig {
            timeout_secs: 5,
            retry_interval_secs: 10,
            retry_window_secs: 60,
            media_idle_secs: 5,
            retention_days: 7,
            memory_queue_max: 10_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./roomgate-data"),
            log: "info".into(),
            public_host: "127.0.0.1".into(),
            http: HttpConfig::default(),
            rtmp: RtmpConfig::default(),
            rtc: RtcConfig::default(),
            audio: AudioConfig::default(),
            video: VideoConfig::default(),
            apps: Vec::new(),
            api_keys: Vec::new(),
            api: CloudApiConfig::default(),
            pull: PullConfig::default(),
            callbacks: CallbacksConfig::default(),
            admin: AdminConfig::default(),
            demo_media: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".parse().expect("valid address"),
            max_connections: 4096,
            max_connections_per_ip: 64,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
        }
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            enabled: true,
            listen: "0.0.0.0:1935".parse().expect("valid address"),
            max_message_size: 8 * 1024 * 1024,
            max_chunk_size: 1 << 20,
            chunk_size: 4096,
            max_connections: 1000,
            max_connections_per_ip: 20,
            idle_timeout_secs: 30,
            handshake_timeout_secs: 10,
        }
    }
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            opus_bitrate: 64_000,
            opus_complexity: DEFAULT_OPUS_COMPLEXITY,
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the given environment variables.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut value = toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.into(),
                source,
            })?;
            let file_value: toml::Value =
                toml::from_str(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            merge(&mut value, file_value);
        }
        // Round-trip through `Config` so every key exists (serde defaults included) before the environment
        // is resolved against the key tree; file errors are reported here, before any env error.
        let normalized: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        let mut normalized = normalized;
        let env: Vec<(String, String)> = env.into_iter().collect();
        // Apps named only in the environment (ROOMGATE_APPS_<n>_...) start from an empty template.
        let wanted_apps = env_array_len(&env, "ROOMGATE_APPS_");
        while normalized.apps.len() < wanted_apps {
            normalized.apps.push(AppConfig {
                sdkappid: 0,
                secret_key: String::new(),
                require_private_map_key: false,
                public_playback: false,
                name: String::new(),
                callback_url: String::new(),
                callback_key: String::new(),
                opus_complexity: None,
                strict_h264_profile: false,
            });
        }
        let wanted_keys = env_array_len(&env, "ROOMGATE_API_KEYS_");
        while normalized.api_keys.len() < wanted_keys {
            normalized.api_keys.push(ApiKeyConfig {
                secret_id: String::new(),
                secret_key: String::new(),
                sdkappids: Vec::new(),
            });
        }
        let mut value = toml::Value::try_from(normalized).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix("ROOMGATE_") else {
                continue;
            };
            if rest == "CONFIG" {
                continue;
            }
            // Containers set unrelated ROOMGATE_-prefixed variables: only names under our own keys are ours
            // (and then a typo in them is an error); anything else is ignored with a warning.
            let path = rest.to_ascii_lowercase();
            let ours = value
                .as_table()
                .is_some_and(|t| t.keys().any(|k| path == *k || path.starts_with(&format!("{k}_"))));
            if !ours {
                eprintln!("roomgate: ignoring environment variable {var}: it names no configuration key or table");
                continue;
            }
            if let Err(why) = set_by_env_path(&mut value, &path, &raw) {
                // Kubernetes injects <SERVICE>_PORT, <SERVICE>_SERVICE_HOST, ... for a Service named like us.
                if is_service_link(&path) {
                    eprintln!("roomgate: ignoring environment variable {var}: a Kubernetes service link, not a key");
                    continue;
                }
                return Err(ConfigError::Env { var: var.clone(), why });
            }
        }
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for app in &self.apps {
            if !seen.insert(app.sdkappid) {
                return Err(ConfigError::Invalid(format!(
                    "app {} is configured twice",
                    app.sdkappid
                )));
            }
            if app.sdkappid == 0 {
                return Err(ConfigError::Invalid("an app has no sdkappid".into()));
            }
            if app.secret_key.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "app {} has an empty secret_key",
                    app.sdkappid
                )));
            }
        }
        let mut ids = std::collections::HashSet::new();
        for key in &self.api_keys {
            if key.secret_id.is_empty() || key.secret_key.is_empty() {
                return Err(ConfigError::Invalid(
                    "an api_keys entry needs both secret_id and secret_key".into(),
                ));
            }
            if !ids.insert(&key.secret_id) {
                return Err(ConfigError::Invalid(format!(
                    "api key {} is configured twice",
                    key.secret_id
                )));
            }
        }
        for app in &self.apps {
            if !app.callback_url.is_empty() && url::Url::parse(&app.callback_url).is_err() {
                return Err(ConfigError::Invalid(format!(
                    "app {}: callback_url {:?} is not a URL",
                    app.sdkappid, app.callback_url
                )));
            }
            if !app.callback_url.is_empty() && app.callback_key.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "app {}: callback_url is set but callback_key is empty (receivers could not verify Sign)",
                    app.sdkappid
                )));
            }
        }
        if self.callbacks.timeout_secs == 0 || self.callbacks.retry_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "callbacks.timeout_secs and callbacks.retry_interval_secs must be at least 1".into(),
            ));
        }
        if self.callbacks.memory_queue_max == 0 {
            return Err(ConfigError::Invalid(
                "callbacks.memory_queue_max must be at least 1".into(),
            ));
        }
        if self.audio.opus_complexity > 10 || self.apps.iter().any(|a| a.opus_complexity.is_some_and(|c| c > 10)) {
            return Err(ConfigError::Invalid(
                "audio.opus_complexity (and an app's opus_complexity) must be within 0..=10".into(),
            ));
        }
        if !(6_000..=510_000).contains(&self.audio.opus_bitrate) {
            return Err(ConfigError::Invalid(
                "audio.opus_bitrate must be within 6000..=510000".into(),
            ));
        }
        if self.rtmp.handshake_timeout_secs > 3600 || self.rtmp.idle_timeout_secs > 86_400 {
            return Err(ConfigError::Invalid(
                "rtmp.handshake_timeout_secs is at most 3600 and rtmp.idle_timeout_secs at most 86400".into(),
            ));
        }
        if self.rtmp.max_message_size > 64 << 20 {
            return Err(ConfigError::Invalid("rtmp.max_message_size is at most 64 MiB".into()));
        }
        for app in self
            .apps
            .iter()
            .filter(|a| a.public_playback && a.require_private_map_key)
        {
            tracing::warn!(
                sdkappid = app.sdkappid,
                "public_playback lets anyone watch; require_private_map_key then applies to publishing only"
            );
        }
        if self.http.header_timeout_secs == 0
            || self.http.idle_timeout_secs == 0
            || self.http.body_timeout_secs == 0
            || self.http.max_connections == 0
            || self.http.max_connections_per_ip == 0
        {
            return Err(ConfigError::Invalid(
                "http.max_connections, http.max_connections_per_ip and the http.*_timeout_secs must be at least 1"
                    .into(),
            ));
        }
        if self.rtc.workers > 256 {
            return Err(ConfigError::Invalid(
                "rtc.workers is at most 256 (0: one per CPU core)".into(),
            ));
        }
        if self.rtc.max_sessions == 0
            || self.rtc.tcp_max_connections == 0
            || self.rtc.tcp_max_connections_per_ip == 0
            || self.rtc.tcp_stun_timeout_secs == 0
        {
            return Err(ConfigError::Invalid(
                "rtc.max_sessions, rtc.tcp_max_connections, rtc.tcp_max_connections_per_ip and rtc.tcp_stun_timeout_secs must be at least 1".into(),
            ));
        }
        if self.rtmp.chunk_size < 128 || self.rtmp.chunk_size > self.rtmp.max_chunk_size {
            return Err(ConfigError::Invalid(
                "rtmp.chunk_size must be within 128..=rtmp.max_chunk_size".into(),
            ));
        }
        Ok(())
    }

    pub fn app(&self, sdkappid: u64) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.sdkappid == sdkappid)
    }

    /// How audio of app `sdkappid` is encoded to Opus (`bitrate` overrides the configured one when set).
    pub fn opus_settings(&self, sdkappid: u64, bitrate: Option<u32>) -> crate::media::transcode::OpusSettings {
        crate::media::transcode::OpusSettings {
            bitrate: bitrate.unwrap_or(self.audio.opus_bitrate),
            complexity: self
                .app(sdkappid)
                .and_then(|a| a.opus_complexity)
                .unwrap_or(self.audio.opus_complexity)
                .min(10),
        }
    }

    /// When no app is configured, load (or create and store, mode 0600) the demo app in the data dir.
    /// Returns the demo app when one is in use.
    pub fn ensure_demo_app(&mut self) -> Result<Option<AppConfig>, ConfigError> {
        if !self.apps.is_empty() {
            return Ok(None);
        }
        let path = self.data_dir.join("demo-app.toml");
        let app = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<AppConfig>(&text)
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let app = AppConfig {
                    sdkappid: 1_400_000_000 + rand::random_range(0..100_000_000u64),
                    secret_key: (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect(),
                    require_private_map_key: false,
                    public_playback: false,
                    name: "demo".into(),
                    callback_url: String::new(),
                    callback_key: String::new(),
                    opus_complexity: None,
                    strict_h264_profile: false,
                };
                write_private(&path, &toml::to_string(&app).expect("app serializes"))?;
                app
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        self.apps.push(app.clone());
        Ok(Some(app))
    }
}

impl Config {
    /// When no API key is configured, load (or create and store, mode 0600) a demo SecretId/SecretKey in the data
    /// dir so the Cloud API works out of the box. Returns the demo key when one is in use.
    pub fn ensure_demo_api_key(&mut self) -> Result<Option<ApiKeyConfig>, ConfigError> {
        if !self.api_keys.is_empty() {
            return Ok(None);
        }
        let path = self.data_dir.join("demo-api-key.toml");
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str::<ApiKeyConfig>(&text)
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let hex = |n: usize| -> String { (0..n).map(|_| format!("{:02x}", rand::random::<u8>())).collect() };
                let key = ApiKeyConfig {
                    secret_id: format!("AKID{}", hex(16)),
                    secret_key: hex(16),
                    sdkappids: Vec::new(),
                };
                write_private(&path, &toml::to_string(&key).expect("key serializes"))?;
                key
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        self.api_keys.push(key.clone());
        Ok(Some(key))
    }

    pub fn api_key(&self, secret_id: &str) -> Option<&ApiKeyConfig> {
        self.api_keys.iter().find(|k| k.secret_id == secret_id)
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    let err = |source| ConfigError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        crate::store::create_private_dir(dir).map_err(err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)
}

/// How many elements the environment names for the array whose variables start with `prefix` (`PREFIX<n>_...`).
fn env_array_len(env: &[(String, String)], prefix: &str) -> usize {
    env.iter()
        .filter_map(|(k, _)| k.strip_prefix(prefix)?.split('_').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Whether `path` (lower case) has the shape of a Kubernetes service-link variable: `..._port`,
/// `..._port_<n>_tcp[...]`, `..._service_host`, `..._service_port[...]`.
fn is_service_link(path: &str) -> bool {
    let parts: Vec<&str> = path.split('_').collect();
    let n = parts.len();
    parts.ends_with(&["port"])
        || parts.ends_with(&["service", "host"])
        || parts.windows(2).any(|w| w == ["service", "port"])
        || (n >= 3
            && parts.windows(3).any(|w| {
                w[0] == "port" && w[1].bytes().all(|b| b.is_ascii_digit()) && ["tcp", "udp", "sctp"].contains(&w[2])
            }))
}

/// Resolve `path` (lower case, `_`-joined) against the keys that exist and set the value there. Key names
/// contain `_` themselves, so each step tries the keys of the current table as prefixes.
fn set_by_env_path(node: &mut toml::Value, path: &str, raw: &str) -> Result<(), String> {
    match node {
        toml::Value::Table(t) => {
            let mut keys: Vec<String> = t.keys().cloned().collect();
            keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
            for k in keys {
                if path == k {
                    let typed = typed_like(t.get(&k), raw)?;
                    t.insert(k, typed);
                    return Ok(());
                }
                if let Some(rest) = path.strip_prefix(&format!("{k}_")) {
                    let child = t.get_mut(&k).expect("key listed");
                    if child.is_table() || child.is_array() {
                        return set_by_env_path(child, rest, raw);
                    }
                }
            }
            Err(format!("no configuration key matches {path:?}"))
        }
        toml::Value::Array(a) => {
            let (idx, rest) = path
                .split_once('_')
                .ok_or_else(|| format!("{path:?} needs an index and a key"))?;
            let idx: usize = idx.parse().map_err(|_| format!("{idx:?} is not an array index"))?;
            let len = a.len();
            let elem = a
                .get_mut(idx)
                .ok_or_else(|| format!("index {idx} is past the {len} elements"))?;
            set_by_env_path(elem, rest, raw)
        }
        _ => Err("not a table".into()),
    }
}

fn typed_like(existing: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    Ok(match existing {
        Some(toml::Value::String(_)) => toml::Value::String(raw.into()),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| format!("{raw:?} is not an integer"))?)
        }
        Some(toml::Value::Boolean(_)) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("{raw:?} is not a boolean")),
        }),
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| format!("{raw:?} is not a number"))?)
        }
        // A list: comma-separated elements (integers stay integers), e.g. `10.1.2.0/24,10.9.0.0/16`.
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| match e.parse::<i64>() {
                    Ok(i) => toml::Value::Integer(i),
                    Err(_) => toml::Value::String(e.into()),
                })
                .collect(),
        ),
        _ => toml::Value::String(raw.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Config::load(None, vec![]).unwrap();
        assert_eq!(c.rtmp.listen.port(), 1935);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.data_dir, PathBuf::from("./roomgate-data"));
        assert_eq!(c.audio.opus_bitrate, 64000);
    }

    #[test]
    fn allowed_private_cidrs_are_parsed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("roomgate.toml");
        std::fs::write(&f, "[pull]\nallow_private_cidrs = [\"10.1.2.0/24\"]\n").unwrap();
        let c = Config::load(Some(&f), vec![]).unwrap();
        assert_eq!(c.pull.allow_private_cidrs.len(), 1);
        assert!(c.pull.allow_private_cidrs[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!c.pull.allow_private_sources);

        std::fs::write(&f, "[pull]\nallow_private_cidrs = [\"10.1.2.0/33\"]\n").unwrap();
        let e = Config::load(Some(&f), vec![]).unwrap_err().to_string();
        assert!(e.contains("invalid config") && e.contains("10.1.2.0/33"), "{e}");
        std::fs::write(&f, "[pull]\nallow_private_cidrs = [\"intranet\"]\n").unwrap();
        let e = Config::load(Some(&f), vec![]).unwrap_err().to_string();
        assert!(e.contains("not a CIDR"), "{e}");

        let c = Config::load(
            None,
            env(&[("ROOMGATE_PULL_ALLOW_PRIVATE_CIDRS", "10.1.2.0/24, 192.168.7.0/24")]),
        )
        .unwrap();
        assert_eq!(c.pull.allow_private_cidrs.len(), 2);
        assert!(Config::load(None, env(&[("ROOMGATE_PULL_ALLOW_PRIVATE_CIDRS", "10.1.2.3/8")])).is_err());
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("roomgate.toml");
        std::fs::write(
            &f,
            "[rtmp]\nlisten = \"127.0.0.1:2935\"\n[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            env(&[
                ("ROOMGATE_HTTP_LISTEN", "127.0.0.1:9999"),
                ("ROOMGATE_AUDIO_OPUS_BITRATE", "96000"),
                ("ROOMGATE_APPS_0_SECRET_KEY", "123"),
                ("ROOMGATE_APPS_0_REQUIRE_PRIVATE_MAP_KEY", "true"),
                ("ROOMGATE_APPS_1_SDKAPPID", "8"),
                ("ROOMGATE_APPS_1_SECRET_KEY", "other"),
                ("ROOMGATE_RTMP_ENABLED", "false"),
                ("ROOMGATE_DATA_DIR", "/tmp/x"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rtmp.listen.port(), 2935);
        assert!(!c.rtmp.enabled);
        assert_eq!(c.http.listen.port(), 9999);
        assert_eq!(c.audio.opus_bitrate, 96000);
        assert_eq!(c.apps[0].secret_key, "123", "string keys stay strings");
        assert!(c.apps[0].require_private_map_key);
        assert_eq!((c.apps[1].sdkappid, c.apps[1].secret_key.as_str()), (8, "other"));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::load(None, env(&[("ROOMGATE_RTMP_NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ROOMGATE_RTMP_NOPE"), "{e}");
        // A name under no table of ours (a container's own variable) is ignored, not an error.
        assert!(Config::load(None, env(&[("ROOMGATE_SIDECAR_TOKEN", "x"), ("ROOMGATE_VERSION", "1")])).is_ok());
        // Nor are the variables Kubernetes injects for a Service named roomgate-rtmp, while real keys still work.
        let k8s = Config::load(
            None,
            env(&[
                ("ROOMGATE_RTMP_PORT", "tcp://10.0.0.1:1935"),
                ("ROOMGATE_RTMP_PORT_1935_TCP_ADDR", "10.0.0.1"),
                ("ROOMGATE_RTMP_SERVICE_HOST", "10.0.0.1"),
                ("ROOMGATE_RTMP_SERVICE_PORT", "1935"),
                ("ROOMGATE_RTC_UDP_PORT", "9000"),
            ]),
        )
        .unwrap();
        assert_eq!(k8s.rtc.udp_port, 9000);
        let e = Config::load(None, env(&[("ROOMGATE_AUDIO_OPUS_BITRATE", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an integer"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[rtmp]\nlisen = \"x\"\n").unwrap();
        assert!(Config::load(Some(&f), vec![])
            .unwrap_err()
            .to_string()
            .contains("lisen"));
    }

    #[test]
    fn opus_settings_follow_the_app_then_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[audio]\nopus_complexity = 3\n[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\nopus_complexity = 1\n\
             [[apps]]\nsdkappid = 8\nsecret_key = \"k\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), vec![]).unwrap();
        assert_eq!(c.opus_settings(7, None).complexity, 1);
        assert_eq!(c.opus_settings(8, None).complexity, 3);
        assert_eq!(c.opus_settings(8, Some(32_000)).bitrate, 32_000);
        assert_eq!(Config::default().audio.opus_complexity, DEFAULT_OPUS_COMPLEXITY);
        std::fs::write(&f, "[audio]\nopus_complexity = 11\n").unwrap();
        assert!(Config::load(Some(&f), vec![])
            .unwrap_err()
            .to_string()
            .contains("opus_complexity"));
    }

    #[test]
    fn a_callback_url_needs_a_callback_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\ncallback_url = \"http://127.0.0.1:9/cb\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&f), vec![]).unwrap_err().to_string();
        assert!(e.contains("callback_key is empty"), "{e}");
        std::fs::write(
            &f,
            "[[apps]]\nsdkappid = 7\nsecret_key = \"k\"\ncallback_url = \"http://127.0.0.1:9/cb\"\ncallback_key = \"s\"\n",
        )
        .unwrap();
        assert!(Config::load(Some(&f), vec![]).is_ok());
    }

    #[test]
    fn demo_app_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let app = c.ensure_demo_app().unwrap().unwrap();
        let mut c2 = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        assert_eq!(c2.ensure_demo_app().unwrap().unwrap(), app, "the stored key is reused");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("data/demo-app.toml"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(c.apps.len(), 1);
    }
}
